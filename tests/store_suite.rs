//! One test suite for every `SessionStore`: written once (generic over a
//! [`Backend`]) and run against the memory store, a single Redis node and a
//! three-node Redis Cluster, plus Redis-only checks (key layout, TTLs, faults).
//!
//! Times are the caller's: each test starts from the real clock (so revocation
//! lists, which read the real clock, see entries as current) and moves time
//! forward by passing later `now_ms` values, never by sleeping.

mod support;

use std::{
    collections::BTreeSet,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tower_jwt_auth::{
    revocation::RevocationList,
    store::{MemoryStore, NewSession, RotateOutcome, SessionPolicy, SessionRecord, SessionStore},
};

const HOUR: u64 = 3_600_000;
const MINUTE: u64 = 60_000;
/// A 40-byte user agent with bytes that break naive encodings.
const AGENT: &str = "Mozilla/5.0 ü|:{}\n\"x\" (X11; Linux) ;,";
const CLAIMS: &str = r#"{"role":"admin"}"#;

/// A way to open handles on one shared backend.
trait Backend: Send + Sync + 'static {
    type Store: SessionStore + Clone;
    /// A new handle on the same data, as another application instance would open it.
    fn open(&self) -> impl Future<Output = Self::Store> + Send;
}

fn policy() -> SessionPolicy {
    SessionPolicy {
        idle_ttl: Duration::from_millis(HOUR),
        absolute_ttl: Duration::from_millis(24 * HOUR),
        grace: Duration::from_secs(10),
        max_sessions: None,
        revocation_ttl: Duration::from_millis(HOUR),
    }
}

fn real_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A user id unique to this run, with bytes that could confuse key building.
fn user(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("u:{tag}|{{ü}}\n{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

fn sid(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("sid-{tag}-{}-{}", real_now(), N.fetch_add(1, Ordering::Relaxed))
}

fn new_session(user_id: &str, sid: &str, now_ms: u64) -> NewSession {
    NewSession {
        user_id: user_id.into(),
        sid: sid.into(),
        claims: CLAIMS.into(),
        user_agent: Some(AGENT.into()),
        ip: Some("203.0.113.7".into()),
        now_ms,
    }
}

fn rotated(outcome: RotateOutcome) -> SessionRecord {
    match outcome {
        RotateOutcome::Rotated(record) => record,
        other => panic!("expected Rotated, got {other:?}"),
    }
}

fn replayed(outcome: RotateOutcome) -> SessionRecord {
    match outcome {
        RotateOutcome::Replayed(record) => record,
        other => panic!("expected Replayed, got {other:?}"),
    }
}

fn assert_theft(outcome: RotateOutcome, user_id: &str, sid: &str) {
    assert_eq!(outcome, RotateOutcome::Theft { user_id: user_id.into(), sid: sid.into() });
}

/// Polls `check` every 5 ms until it holds or `ceiling` passes.
async fn eventually(ceiling: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + ceiling;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {ceiling:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The cases, each generic over the backend.
mod cases {
    use super::*;

    pub async fn create_list_round_trip<B: Backend>(backend: &B) {
        let store = backend.open().await;
        let (u, t) = (user("list"), real_now());
        let (a, b, c) = (sid("a"), sid("b"), sid("c"));
        assert_eq!(store.create(new_session(&u, &a, t), &policy()).await.unwrap(), Vec::<String>::new());
        let bare = NewSession { user_agent: None, ip: None, claims: String::new(), ..new_session(&u, &b, t + 1) };
        store.create(bare, &policy()).await.unwrap();
        // Long values leave the compact encoding but must never be cut.
        let long_agent: String = "Agent ü|:{}\n".repeat(25);
        let long_claims = format!(r#"{{"blob":"{}"}}"#, "é{x}|".repeat(1000));
        let long = NewSession {
            user_agent: Some(long_agent.clone()),
            claims: long_claims.clone(),
            ip: Some("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff".into()),
            ..new_session(&u, &c, t + 2)
        };
        store.create(long, &policy()).await.unwrap();

        let listed = store.list(&u, t + 3).await.unwrap();
        let expected_a = SessionRecord {
            sid: a.clone(),
            user_id: u.clone(),
            claims: CLAIMS.into(),
            user_agent: Some(AGENT.into()),
            ip: Some("203.0.113.7".into()),
            created_at_ms: t,
            auth_time_ms: t,
            last_used_at_ms: t,
            counter: 0,
            rotated_at_ms: 0,
            idle_expires_at_ms: t + HOUR,
            absolute_expires_at_ms: t + 24 * HOUR,
        };
        assert_eq!(listed.len(), 3);
        assert_eq!(listed[0], expected_a);
        assert_eq!(listed[1].sid, b);
        assert_eq!(
            (listed[1].user_agent.as_deref(), listed[1].ip.as_deref(), listed[1].claims.as_str()),
            (None, None, "")
        );
        assert_eq!(listed[2].user_agent.as_deref(), Some(long_agent.as_str()));
        assert_eq!(listed[2].claims, long_claims);
        assert_eq!(listed[2].ip.as_deref(), Some("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"));
        assert_eq!(rotated(store.rotate(&u, &c, 0, t + 4, &policy()).await.unwrap()).claims, long_claims);
        assert!(store.list(&user("nobody"), t).await.unwrap().is_empty());
    }

    pub async fn rotate_current<B: Backend>(backend: &B) {
        let store = backend.open().await;
        let (u, s, t) = (user("rot"), sid("rot"), real_now());
        store.create(new_session(&u, &s, t), &policy()).await.unwrap();
        let one = rotated(store.rotate(&u, &s, 0, t + MINUTE, &policy()).await.unwrap());
        assert_eq!(
            one,
            SessionRecord {
                sid: s.clone(),
                user_id: u.clone(),
                claims: CLAIMS.into(),
                user_agent: Some(AGENT.into()),
                ip: Some("203.0.113.7".into()),
                created_at_ms: t,
                auth_time_ms: t,
                last_used_at_ms: t + MINUTE,
                counter: 1,
                rotated_at_ms: t + MINUTE,
                idle_expires_at_ms: t + MINUTE + HOUR,
                absolute_expires_at_ms: t + 24 * HOUR,
            }
        );
        let two = rotated(store.rotate(&u, &s, 1, t + 2 * MINUTE, &policy()).await.unwrap());
        assert_eq!((two.counter, two.rotated_at_ms), (2, t + 2 * MINUTE));
        assert_eq!(store.list(&u, t + 2 * MINUTE).await.unwrap(), vec![two]);
    }

    pub async fn replay_within_grace<B: Backend>(backend: &B) {
        let store = backend.open().await;
        let (u, s, t) = (user("grace"), sid("grace"), real_now());
        store.create(new_session(&u, &s, t), &policy()).await.unwrap();
        let first = rotated(store.rotate(&u, &s, 0, t + 1000, &policy()).await.unwrap());
        let again = replayed(store.rotate(&u, &s, 0, t + 6000, &policy()).await.unwrap());
        assert_eq!(again, first, "a replay changes nothing and returns the same successor");
        // The window is inclusive: exactly `grace` after the rotation still replays.
        let last = replayed(store.rotate(&u, &s, 0, t + 11_000, &policy()).await.unwrap());
        assert_eq!(last.counter, 1);
        assert_eq!(rotated(store.rotate(&u, &s, 1, t + 12_000, &policy()).await.unwrap()).counter, 2);
    }

    pub async fn previous_after_grace_is_theft<B: Backend>(backend: &B) {
        let store = backend.open().await;
        let (u, s, t) = (user("late"), sid("late"), real_now());
        store.create(new_session(&u, &s, t), &policy()).await.unwrap();
        rotated(store.rotate(&u, &s, 0, t, &policy()).await.unwrap());
        assert_theft(store.rotate(&u, &s, 0, t + 10_001, &policy()).await.unwrap(), &u, &s);
        for counter in [0, 1, 2, 3] {
            assert_eq!(store.rotate(&u, &s, counter, t + 10_002, &policy()).await.unwrap(), RotateOutcome::NotFound);
        }
        assert!(store.list(&u, t + 10_002).await.unwrap().is_empty());
    }

    pub async fn two_behind_is_theft<B: Backend>(backend: &B) {
        let store = backend.open().await;
        let (u, s, t) = (user("old"), sid("old"), real_now());
        store.create(new_session(&u, &s, t), &policy()).await.unwrap();
        rotated(store.rotate(&u, &s, 0, t, &policy()).await.unwrap());
        rotated(store.rotate(&u, &s, 1, t, &policy()).await.unwrap());
        // Within the grace window, but two generations old.
        assert_theft(store.rotate(&u, &s, 0, t, &policy()).await.unwrap(), &u, &s);
        assert_eq!(store.rotate(&u, &s, 2, t, &policy()).await.unwrap(), RotateOutcome::NotFound);
    }

    pub async fn far_future_counter_is_theft<B: Backend>(backend: &B) {
        let store = backend.open().await;
        let (u, t) = (user("future"), real_now());
        for presented in [2, 5, u64::MAX] {
            let s = sid("future");
            store.create(new_session(&u, &s, t), &policy()).await.unwrap();
            assert_theft(store.rotate(&u, &s, presented, t, &policy()).await.unwrap(), &u, &s);
            assert_eq!(store.rotate(&u, &s, 0, t, &policy()).await.unwrap(), RotateOutcome::NotFound);
        }
    }

    /// The client holds successor `n + 1` of the stored counter `n`: a
    /// rotation the store lost (failover). It catches up instead of calling
    /// it theft; older tokens stay theft.
    pub async fn one_ahead_fast_forwards<B: Backend>(backend: &B) {
        let store = backend.open().await;
        let (u, s, t) = (user("ahead"), sid("ahead"), real_now());
        store.create(new_session(&u, &s, t), &policy()).await.unwrap();
        let caught_up = match store.rotate(&u, &s, 1, t + 1000, &policy()).await.unwrap() {
            RotateOutcome::FastForwarded(record) => record,
            other => panic!("expected FastForwarded, got {other:?}"),
        };
        assert_eq!((caught_up.counter, caught_up.rotated_at_ms, caught_up.auth_time_ms), (2, t + 1000, t));
        // Parallel tabs with the same token converge on the same successor.
        assert_eq!(replayed(store.rotate(&u, &s, 1, t + 2000, &policy()).await.unwrap()), caught_up);
        assert_eq!(rotated(store.rotate(&u, &s, 2, t + 3000, &policy()).await.unwrap()).counter, 3);
        // The token the store had (0) is now three generations old: theft.
        assert_theft(store.rotate(&u, &s, 0, t + 4000, &policy()).await.unwrap(), &u, &s);
    }

    /// Re-authentication moves `auth_time` and nothing else; 100 rotations
    /// never move it.
    pub async fn auth_time_survives_rotations_and_moves_on_reauthentication<B: Backend>(backend: &B) {
        let store = backend.open().await;
        let (u, s, t) = (user("auth"), sid("auth"), real_now());
        store.create(new_session(&u, &s, t), &policy()).await.unwrap();
        let mut record = None;
        for counter in 0..100 {
            record = Some(rotated(store.rotate(&u, &s, counter, t + 1 + counter, &policy()).await.unwrap()));
        }
        let record = record.unwrap();
        assert_eq!((record.counter, record.auth_time_ms), (100, t));
        let fresh = store.reauthenticate(&u, &s, t + 500, &policy()).await.unwrap().expect("live");
        assert_eq!(fresh, SessionRecord { auth_time_ms: t + 500, ..record });
        assert_eq!(rotated(store.rotate(&u, &s, 100, t + 600, &policy()).await.unwrap()).auth_time_ms, t + 500);
        assert_eq!(store.reauthenticate(&u, &sid("unknown"), t, &policy()).await.unwrap(), None);
        assert_eq!(store.reauthenticate(&user("other"), &s, t, &policy()).await.unwrap(), None);
        assert_eq!(store.reauthenticate(&u, &s, t + 600 + 2 * HOUR, &policy()).await.unwrap(), None, "expired");
    }

    pub async fn idle_expiry<B: Backend>(backend: &B) {
        let store = backend.open().await;
        let (u, t) = (user("idle"), real_now());
        let (early, late) = (sid("early"), sid("late"));
        store.create(new_session(&u, &early, t), &policy()).await.unwrap();
        store.create(new_session(&u, &late, t), &policy()).await.unwrap();
        assert_eq!(rotated(store.rotate(&u, &early, 0, t + HOUR - 1, &policy()).await.unwrap()).counter, 1);
        assert_eq!(store.rotate(&u, &late, 0, t + HOUR, &policy()).await.unwrap(), RotateOutcome::NotFound);
        let listed: Vec<String> = store.list(&u, t + HOUR).await.unwrap().into_iter().map(|r| r.sid).collect();
        assert_eq!(listed, vec![early.clone()]);
        assert!(store.list(&u, t + 2 * HOUR).await.unwrap().is_empty(), "expired sessions are not listed");
        // Revoking an expired session revokes nothing.
        assert!(!store.revoke(&u, &early, t + 2 * HOUR, &policy()).await.unwrap());
    }

    pub async fn sliding_but_capped_by_absolute<B: Backend>(backend: &B) {
        let store = backend.open().await;
        let policy = SessionPolicy { absolute_ttl: Duration::from_millis(3 * HOUR), ..policy() };
        let (u, s, t) = (user("slide"), sid("slide"), real_now());
        store.create(new_session(&u, &s, t), &policy).await.unwrap();
        let mut record = None;
        // Every 50 minutes: well past the first idle window, alive all along.
        for (counter, minutes) in [(0, 50), (1, 100), (2, 150)] {
            let r = rotated(store.rotate(&u, &s, counter, t + minutes * MINUTE, &policy).await.unwrap());
            assert_eq!(r.idle_expires_at_ms, (t + minutes * MINUTE + HOUR).min(t + 3 * HOUR));
            record = Some(r);
        }
        assert_eq!(record.unwrap().idle_expires_at_ms, t + 3 * HOUR, "idle expiry capped by the absolute one");
        assert_eq!(
            rotated(store.rotate(&u, &s, 3, t + 3 * HOUR - 1, &policy).await.unwrap()).idle_expires_at_ms,
            t + 3 * HOUR
        );
        assert_eq!(store.rotate(&u, &s, 4, t + 3 * HOUR, &policy).await.unwrap(), RotateOutcome::NotFound);
    }

    pub async fn max_sessions_evicts_oldest<B: Backend>(backend: &B) {
        let store = backend.open().await;
        let list = Arc::new(RevocationList::new());
        store.attach(list.clone());
        let policy = SessionPolicy { max_sessions: Some(2), ..policy() };
        let (u, t) = (user("cap"), real_now());
        let sids: Vec<String> = (0..4).map(|i| sid(&format!("cap{i}"))).collect();
        // All in the same millisecond: creation times are bumped to stay
        // unique, so the first created is the oldest.
        assert!(store.create(new_session(&u, &sids[0], t), &policy).await.unwrap().is_empty());
        assert!(store.create(new_session(&u, &sids[1], t), &policy).await.unwrap().is_empty());
        assert_eq!(store.create(new_session(&u, &sids[2], t), &policy).await.unwrap(), vec![sids[0].clone()]);
        let listed = store.list(&u, t + 20).await.unwrap();
        assert_eq!(listed.iter().map(|r| r.sid.clone()).collect::<Vec<_>>(), vec![sids[1].clone(), sids[2].clone()]);
        assert_eq!((listed[0].created_at_ms, listed[1].created_at_ms), (t + 1, t + 2));
        assert_eq!(store.rotate(&u, &sids[0], 0, t + 20, &policy).await.unwrap(), RotateOutcome::NotFound);
        eventually(Duration::from_secs(2), "evicted session published", || list.is_revoked(&sids[0])).await;
        // Expired sessions do not count against the cap.
        let later = t + 20 + HOUR;
        assert!(store.create(new_session(&u, &sids[3], later), &policy).await.unwrap().is_empty());
        assert!(!list.is_revoked(&sids[1]));
    }

    pub async fn revoke_owner_only<B: Backend>(backend: &B) {
        let store = backend.open().await;
        let (u, other, s, t) = (user("owner"), user("other"), sid("owner"), real_now());
        store.create(new_session(&u, &s, t), &policy()).await.unwrap();
        assert!(!store.revoke(&other, &s, t, &policy()).await.unwrap());
        assert_eq!(store.list(&u, t).await.unwrap().len(), 1);
        assert!(store.revoke(&u, &s, t, &policy()).await.unwrap());
        assert!(!store.revoke(&u, &s, t, &policy()).await.unwrap());
        assert_eq!(store.rotate(&u, &s, 0, t, &policy()).await.unwrap(), RotateOutcome::NotFound);
        assert!(store.list(&u, t).await.unwrap().is_empty());
    }

    pub async fn revoke_all<B: Backend>(backend: &B) {
        let store = backend.open().await;
        let (u, bystander, t) = (user("all"), user("bystander"), real_now());
        let sids: BTreeSet<String> = (0..3).map(|i| sid(&format!("all{i}"))).collect();
        for (i, s) in sids.iter().enumerate() {
            store.create(new_session(&u, s, t + i as u64), &policy()).await.unwrap();
        }
        let kept = sid("kept");
        store.create(new_session(&bystander, &kept, t), &policy()).await.unwrap();
        let revoked: BTreeSet<String> =
            store.revoke_all(&u, None, t + 5, &policy()).await.unwrap().into_iter().collect();
        assert_eq!(revoked, sids);
        assert!(store.list(&u, t + 5).await.unwrap().is_empty());
        for s in &sids {
            assert_eq!(store.rotate(&u, s, 0, t + 5, &policy()).await.unwrap(), RotateOutcome::NotFound);
        }
        assert!(store.revoke_all(&u, None, t + 5, &policy()).await.unwrap().is_empty());
        assert_eq!(store.list(&bystander, t + 5).await.unwrap().len(), 1);
    }

    pub async fn revoke_all_but_one<B: Backend>(backend: &B) {
        let store = backend.open().await;
        let list = Arc::new(RevocationList::new());
        store.attach(list.clone());
        let (u, t) = (user("others"), real_now());
        let sids: Vec<String> = (0..3).map(|i| sid(&format!("others{i}"))).collect();
        for s in &sids {
            store.create(new_session(&u, s, t), &policy()).await.unwrap();
        }
        let revoked: BTreeSet<String> =
            store.revoke_all(&u, Some(&sids[1]), t + 5, &policy()).await.unwrap().into_iter().collect();
        assert_eq!(revoked, BTreeSet::from([sids[0].clone(), sids[2].clone()]));
        let left: Vec<String> = store.list(&u, t + 5).await.unwrap().into_iter().map(|r| r.sid).collect();
        assert_eq!(left, vec![sids[1].clone()]);
        assert_eq!(rotated(store.rotate(&u, &sids[1], 0, t + 6, &policy()).await.unwrap()).counter, 1);
        eventually(Duration::from_secs(2), "others revoked everywhere", || {
            list.is_revoked(&sids[0]) && list.is_revoked(&sids[2])
        })
        .await;
        assert!(!list.is_revoked(&sids[1]));
        // Keeping a session that is not there keeps nothing.
        assert_eq!(store.revoke_all(&u, Some("nope"), t + 7, &policy()).await.unwrap(), vec![sids[1].clone()]);
    }

    pub async fn stale_tokens_reach_every_instance<B: Backend>(backend: &B) {
        let (here, there) = (backend.open().await, backend.open().await);
        let list = Arc::new(RevocationList::new());
        here.attach(list.clone());
        eventually(Duration::from_secs(2), "list loaded", || list.is_loaded()).await;
        let (u, t) = (user("stale"), real_now());
        there.invalidate_tokens(&u, t, &policy()).await.unwrap();
        eventually(Duration::from_secs(2), "stale-before reaches another instance", || {
            list.stale_before_ms(&u) == Some(t)
        })
        .await;
        // A later instance loads it.
        let late = backend.open().await;
        let loaded = Arc::new(RevocationList::new());
        late.attach(loaded.clone());
        eventually(Duration::from_secs(2), "stale-before loaded", || loaded.stale_before_ms(&u) == Some(t)).await;
        assert_eq!(loaded.stale_before_ms(&user("bystander")), None);
    }

    pub async fn attach_sees_other_instances<B: Backend>(backend: &B) {
        let (here, there) = (backend.open().await, backend.open().await);
        let list = Arc::new(RevocationList::new());
        here.attach(list.clone());
        let (u, t) = (user("attach"), real_now());
        let (logout, stolen, evicted, survivor) = (sid("logout"), sid("stolen"), sid("evicted"), sid("survivor"));
        for s in [&logout, &stolen, &evicted] {
            there.create(new_session(&u, s, t), &policy()).await.unwrap();
        }
        let ceiling = Duration::from_secs(2);
        assert!(there.revoke(&u, &logout, t, &policy()).await.unwrap());
        eventually(ceiling, "revoke reaches another instance", || list.is_revoked(&logout)).await;
        assert_theft(there.rotate(&u, &stolen, 7, t, &policy()).await.unwrap(), &u, &stolen);
        eventually(ceiling, "theft reaches another instance", || list.is_revoked(&stolen)).await;
        let capped = SessionPolicy { max_sessions: Some(1), ..policy() };
        assert_eq!(there.create(new_session(&u, &survivor, t + 1), &capped).await.unwrap(), vec![evicted.clone()]);
        eventually(ceiling, "eviction reaches another instance", || list.is_revoked(&evicted)).await;
        assert!(!list.is_revoked(&survivor));
        assert_eq!(there.revoke_all(&u, None, t + 1, &policy()).await.unwrap(), vec![survivor.clone()]);
        eventually(ceiling, "revoke_all reaches another instance", || list.is_revoked(&survivor)).await;
    }

    pub async fn attach_loads_earlier_revocations<B: Backend>(backend: &B) {
        let first = backend.open().await;
        let (u, s, t) = (user("early"), sid("early"), real_now());
        first.create(new_session(&u, &s, t), &policy()).await.unwrap();
        assert!(first.revoke(&u, &s, t, &policy()).await.unwrap());
        let late = backend.open().await;
        let list = Arc::new(RevocationList::new());
        late.attach(list.clone());
        eventually(Duration::from_secs(2), "the list is marked loaded", || list.is_loaded()).await;
        assert!(list.is_revoked(&s), "revocations made before attach are loaded before the list says so");
    }

    pub async fn concurrent_rotation_rotates_once<B: Backend>(backend: &B) {
        let store = Arc::new(backend.open().await);
        let (u, s, t) = (user("race"), sid("race"), real_now());
        store.create(new_session(&u, &s, t), &policy()).await.unwrap();
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (store, u, s) = (store.clone(), u.clone(), s.clone());
                tokio::spawn(async move { store.rotate(&u, &s, 0, t + 1, &policy()).await.unwrap() })
            })
            .collect();
        let (mut rotations, mut replays) = (0, 0);
        for task in tasks {
            match task.await.unwrap() {
                RotateOutcome::Rotated(r) => {
                    rotations += 1;
                    assert_eq!(r.counter, 1);
                }
                RotateOutcome::Replayed(r) => {
                    replays += 1;
                    assert_eq!(r.counter, 1);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!((rotations, replays), (1, 49));
    }
}

macro_rules! suite {
    ($backend:ident = $setup:expr) => {
        suite!(@cases $backend = $setup;
            create_list_round_trip, rotate_current, replay_within_grace, previous_after_grace_is_theft,
            two_behind_is_theft, far_future_counter_is_theft, one_ahead_fast_forwards,
            auth_time_survives_rotations_and_moves_on_reauthentication, idle_expiry,
            sliding_but_capped_by_absolute, max_sessions_evicts_oldest, revoke_owner_only, revoke_all,
            revoke_all_but_one, stale_tokens_reach_every_instance, attach_sees_other_instances,
            attach_loads_earlier_revocations, concurrent_rotation_rotates_once);
    };
    (@cases $backend:ident = $setup:expr; $($case:ident),* $(,)?) => {
        mod $backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let backend = $setup;
                    cases::$case(&backend).await;
                }
            )*
        }
    };
}

struct Memory(MemoryStore);

impl Backend for Memory {
    type Store = MemoryStore;
    async fn open(&self) -> MemoryStore {
        self.0.clone()
    }
}

suite!(memory = Memory(MemoryStore::new()));

#[cfg(feature = "redis")]
mod redis_backends {
    use tower_jwt_auth::store::{RedisStore, StoreError};

    use super::{
        support::redis_server::{RedisCluster, RedisServer},
        *,
    };

    fn prefix() -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        format!("t{}", N.fetch_add(1, Ordering::Relaxed))
    }

    /// A shared server or cluster (see `shared()` in the harness), with a key
    /// prefix of the test's own, so tests never see each other's keys.
    pub struct Redis<T: 'static> {
        server: &'static T,
        url: String,
        prefix: String,
    }

    impl<T: Send + Sync + 'static> Backend for Redis<T> {
        type Store = RedisStore;
        async fn open(&self) -> RedisStore {
            RedisStore::connect(&self.url).await.expect("connecting to the test Redis").key_prefix(&self.prefix)
        }
    }

    pub fn single() -> Redis<RedisServer> {
        let server = RedisServer::shared();
        Redis { url: server.url(), server, prefix: prefix() }
    }

    pub fn cluster() -> Redis<RedisCluster> {
        let server = RedisCluster::shared();
        Redis { url: server.url(), server, prefix: prefix() }
    }

    suite!(redis_single = single());
    suite!(redis_cluster = cluster());

    /// Every key in every node's keyspace (lossy UTF-8), with its TTL in ms.
    async fn keyspace(nodes: &[&RedisServer]) -> Vec<(String, i64)> {
        let mut keys = Vec::new();
        for node in nodes {
            let client = redis::Client::open(node.url()).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let mut cursor = 0u64;
            loop {
                let (next, batch): (u64, Vec<Vec<u8>>) =
                    redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(1000).query_async(&mut conn).await.unwrap();
                for key in batch {
                    let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut conn).await.unwrap();
                    // A concurrent test may have deleted it since the SCAN.
                    if ttl != -2 {
                        keys.push((String::from_utf8_lossy(&key).into_owned(), ttl));
                    }
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        keys
    }

    async fn fill_keyspace(store: &RedisStore, users: &[String]) {
        let t = real_now();
        for (i, u) in users.iter().enumerate() {
            for j in 0..3 {
                let s = format!("sid-{i}-{j}");
                store.create(new_session(u, &s, t), &policy()).await.unwrap();
                rotated(store.rotate(u, &s, 0, t + 1, &policy()).await.unwrap());
            }
        }
        assert!(store.revoke(&users[0], "sid-0-0", t + 2, &policy()).await.unwrap());
        assert_theft(store.rotate(&users[1], "sid-1-0", 9, t + 2, &policy()).await.unwrap(), &users[1], "sid-1-0");
    }

    fn assert_documented_keys(keys: &[(String, i64)], users: &[String]) {
        let mut expected: BTreeSet<String> = users.iter().map(|u| format!("tjwt:{{{u}}}")).collect();
        expected.insert("tjwt:revoked".into());
        let found: BTreeSet<String> = keys.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(found, expected, "only the documented keys exist");
        for (key, ttl) in keys {
            assert!(*ttl > 0, "key {key:?} has no TTL ({ttl})");
        }
    }

    fn plain_users() -> Vec<String> {
        // No newline (`RedisServer::cmd` replies are read as lines), but tag-breaking bytes.
        (0..5).map(|i| format!("user:{{{i}}}|ü-{i}")).collect()
    }

    #[tokio::test]
    async fn single_node_keys_are_documented_compact_and_expiring() {
        let server = RedisServer::start();
        let store = RedisStore::connect(&server.url()).await.unwrap();
        let users = plain_users();
        fill_keyspace(&store, &users).await;
        let keys = keyspace(&[&server]).await;
        assert_documented_keys(&keys, &users);
        // Three small sessions: the hash stays in the compact encoding.
        let key = format!("tjwt:{{{}}}", users[2]);
        assert_eq!(server.cmd(&["OBJECT", "ENCODING", &key]).unwrap(), "listpack");
        for value in server.cmd(&["HVALS", &key]).unwrap().split('\n') {
            assert!(!value.contains(CLAIMS) || value.len() <= 64);
        }
        // The store never sees a token: nothing stored contains one (nor any
        // tag-like material: values are sids, counters, times and device data).
        let token = format!("sid-2-0.1.{}", "A".repeat(43));
        for (key, _) in &keys {
            if key.starts_with("tjwt:{") {
                let dump = server.cmd(&["HGETALL", key]).unwrap();
                assert!(!dump.contains(&token) && !dump.contains("refresh"));
            }
        }
    }

    #[tokio::test]
    async fn cluster_keys_are_documented_and_expiring() {
        let backend = cluster();
        let store = RedisStore::connect(&backend.url).await.unwrap();
        // The default prefix: start from an empty keyspace of our own.
        let users: Vec<String> = plain_users().into_iter().map(|u| format!("{u}-{}", prefix())).collect();
        fill_keyspace(&store, &users).await;
        let nodes: Vec<&RedisServer> = backend.server.nodes().iter().collect();
        let keys: Vec<(String, i64)> =
            keyspace(&nodes).await.into_iter().filter(|(k, _)| k.starts_with("tjwt:")).collect();
        let mut mine: Vec<(String, i64)> =
            keys.iter().filter(|(k, _)| users.iter().any(|u| k == &format!("tjwt:{{{u}}}"))).cloned().collect();
        mine.extend(keys.iter().filter(|(k, _)| k == "tjwt:revoked").cloned());
        assert_documented_keys(&mine, &users);
        for (key, ttl) in &keys {
            assert!(*ttl > 0, "key {key:?} has no TTL ({ttl})");
        }
    }

    /// Connections subscribed to a channel, as the server sees them.
    fn subscribers(server: &RedisServer) -> usize {
        server.cmd(&["CLIENT", "LIST"]).unwrap().lines().filter(|l| l.contains(" sub=1 ")).count()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn outage_is_unavailable_then_recovers_and_reloads() {
        let mut server = RedisServer::start();
        let store = RedisStore::connect(&server.url()).await.unwrap();
        let list = Arc::new(RevocationList::new());
        store.attach(list.clone());
        let (u, s, t) = (user("outage"), sid("outage"), real_now());
        store.create(new_session(&u, &s, t), &policy()).await.unwrap();
        eventually(Duration::from_secs(2), "subscriber connected", || subscribers(&server) == 1).await;

        // A 1.9 s outage during which clients keep calling: each call fails
        // fast. (Meanwhile the subscriber's reconnection backoff grows to
        // 1 s, so it is still disconnected just after the restart below.)
        server.stop();
        let outage = Instant::now();
        let mut calls = 0;
        while outage.elapsed() < Duration::from_millis(1900) {
            let started = Instant::now();
            let result = if calls % 2 == 0 {
                store.rotate(&u, &s, 0, t, &policy()).await.map(|_| ())
            } else {
                store.create(new_session(&u, &s, t), &policy()).await.map(|_| ())
            };
            assert!(matches!(result, Err(StoreError::Unavailable(_))), "got {result:?}");
            assert!(started.elapsed() < Duration::from_secs(2), "a call took {:?}", started.elapsed());
            calls += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        server.restart();
        // The same store works again at once (the data is gone: no persistence).
        assert!(store.list(&u, t).await.unwrap().is_empty());
        store.create(new_session(&u, &s, t), &policy()).await.unwrap();
        assert_eq!(rotated(store.rotate(&u, &s, 0, t, &policy()).await.unwrap()).counter, 1);

        // A revocation made through another instance while our subscriber is
        // still disconnected reaches our list through the reload on reconnect.
        let other = RedisStore::connect(&server.url()).await.unwrap();
        let (v, w) = (user("elsewhere"), sid("elsewhere"));
        other.create(new_session(&v, &w, real_now()), &policy()).await.unwrap();
        assert_eq!(subscribers(&server), 0, "the subscriber reconnected too early for this test");
        assert!(other.revoke(&v, &w, real_now(), &policy()).await.unwrap());
        eventually(Duration::from_secs(3), "revocation made while disconnected is reloaded", || list.is_revoked(&w))
            .await;
        eventually(Duration::from_secs(2), "subscriber reconnected", || subscribers(&server) == 1).await;
        // And live messages flow again.
        let x = sid("after");
        other.create(new_session(&v, &x, real_now()), &policy()).await.unwrap();
        assert!(other.revoke(&v, &x, real_now(), &policy()).await.unwrap());
        eventually(Duration::from_secs(2), "revocation after reconnect", || list.is_revoked(&x)).await;
    }

    /// Calls whose replies were lost (the server was busy for longer than
    /// the call ceiling): whether or not Redis ran them in the end, the store
    /// reconciles. A login nobody received is never left live (it would
    /// count against the session cap), and a session that is gone is
    /// recorded as revoked for instances that start later (the journal is
    /// read back). (redis-rs drops a timed-out connection, so Redis usually
    /// never runs such a call; when it does, the same checks hold.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replies_lost_to_a_busy_server_are_reconciled() {
        let server = Arc::new(RedisServer::start());
        let store = RedisStore::connect(&server.url()).await.unwrap();
        let (u, kept, gone, t) = (user("busy"), sid("kept"), sid("gone"), real_now());
        store.create(new_session(&u, &kept, t), &policy()).await.unwrap();
        store.create(new_session(&u, &sid("other"), t), &policy()).await.unwrap();
        // Another client keeps the server busy for 2.5 s; our calls are read
        // and run afterwards, after their one-second ceiling.
        let busy = server.clone();
        const BUSY: &str = "local s = redis.call('TIME') \
            while true do local n = redis.call('TIME') \
            if (n[1] - s[1]) * 1000000 + (n[2] - s[2]) > 2500000 then return 1 end end";
        let sleeper = std::thread::spawn(move || busy.cmd(&["EVAL", BUSY, "0"]));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let revoke = store.revoke(&u, &kept, real_now(), &policy()).await;
        assert!(matches!(revoke, Err(StoreError::Unavailable(_))), "{revoke:?}");
        let login = store.create(new_session(&u, &gone, real_now()), &policy()).await;
        assert!(matches!(login, Err(StoreError::Unavailable(_))), "{login:?}");
        sleeper.join().unwrap().unwrap();

        let late = RedisStore::connect(&server.url()).await.unwrap();
        let list = Arc::new(RevocationList::new());
        late.attach(list.clone());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let live: Vec<String> = late.list(&u, real_now()).await.unwrap().into_iter().map(|r| r.sid).collect();
            let consistent = !live.contains(&gone) && (live.contains(&kept) || list.is_revoked(&kept));
            if consistent && list.is_loaded() {
                eprintln!("after the busy server: logout {}", if live.contains(&kept) { "never ran" } else { "ran" });
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not reconciled: live {live:?}, kept revoked: {}",
                list.is_revoked(&kept)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// How often Redis ran `command` (scripts' calls included).
    fn calls(server: &RedisServer, command: &str) -> u64 {
        let stats = server.cmd(&["INFO", "commandstats"]).unwrap();
        stats
            .lines()
            .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|rest| rest.split(',').next()?.parse().ok())
            .unwrap_or(0)
    }

    /// A login below the session cap does not read the user's sessions: its
    /// cost does not grow with them. At the cap it reads them to evict.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn logins_below_the_cap_do_not_read_the_users_sessions() {
        let server = RedisServer::start();
        let store = RedisStore::connect(&server.url()).await.unwrap();
        let (u, t) = (user("cost"), real_now());
        let capped = SessionPolicy { max_sessions: Some(50), ..policy() };
        let before = calls(&server, "hgetall");
        for i in 0..20 {
            store.create(new_session(&u, &sid(&format!("cost{i}")), t + i), &capped).await.unwrap();
        }
        assert_eq!(calls(&server, "hgetall"), before, "no HGETALL below the cap");
        let tight = SessionPolicy { max_sessions: Some(20), ..policy() };
        let evicted = store.create(new_session(&u, &sid("over"), t + 100), &tight).await.unwrap();
        assert_eq!(evicted.len(), 1);
        assert_eq!(calls(&server, "hgetall"), before + 1, "at the cap: one read to evict the oldest");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn subscriber_stops_when_store_and_list_are_dropped() {
        let server = RedisServer::start();
        let store = RedisStore::connect(&server.url()).await.unwrap();
        let list = Arc::new(RevocationList::new());
        store.attach(list.clone());
        eventually(Duration::from_secs(2), "subscriber connected", || subscribers(&server) == 1).await;
        drop(store);
        drop(list);
        eventually(Duration::from_secs(5), "subscriber gone", || subscribers(&server) == 0).await;
    }
}
