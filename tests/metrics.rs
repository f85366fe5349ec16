//! The metrics of `tower_jwt_auth::metrics`, read back from a recording
//! recorder: every outcome path moves exactly one series by exactly one (per
//! session for revocations), the series are fixed at build time whatever the
//! number of users, and a revocation's trip through Redis is timed.

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    Json, Router,
    body::Body,
    extract::Path,
    http::StatusCode,
    routing::{delete, get, post},
};
use http::{Request, header};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tower_jwt_auth::{AuthError, Claims, ClientInfo, JwtAuth, LoggedOut, Session, SigningKey, store::MemoryStore};

mod support;

use support::in_process::{bearer, send};

const SECRET: &[u8; 32] = b"metrics-test-refresh-secret-0123";

#[derive(Clone, Serialize, Deserialize)]
struct Profile {
    name: String,
}

/// The series of a recorder: `name{label=value,…}` for counters and
/// `name{…}#samples` for histograms.
struct Recorded(Snapshotter);

impl Recorded {
    /// Every series registered so far, and what moved since the last call
    /// (counters by their increase, histograms by their number of samples).
    fn take(&self) -> (BTreeSet<String>, BTreeMap<String, u64>) {
        let (keys, moved, _) = self.take_with_gauges();
        (keys, moved)
    }

    /// [`take`](Self::take), and the gauges' values (which a snapshot resets).
    fn take_with_gauges(&self) -> (BTreeSet<String>, BTreeMap<String, u64>, BTreeMap<String, f64>) {
        let mut keys = BTreeSet::new();
        let mut moved = BTreeMap::new();
        let mut gauges = BTreeMap::new();
        for (key, _, _, value) in self.0.snapshot().into_vec() {
            let key = key.key();
            let mut labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
            labels.sort();
            let name = if labels.is_empty() {
                key.name().to_owned()
            } else {
                format!("{}{{{}}}", key.name(), labels.join(","))
            };
            match value {
                DebugValue::Counter(n) => {
                    if n > 0 {
                        moved.insert(name.clone(), n);
                    }
                    keys.insert(name);
                }
                DebugValue::Histogram(samples) => {
                    if !samples.is_empty() {
                        moved.insert(format!("{name}#samples"), samples.len() as u64);
                    }
                    keys.insert(name);
                }
                DebugValue::Gauge(value) => {
                    gauges.insert(name.clone(), value.into_inner());
                    keys.insert(name);
                }
            }
        }
        (keys, moved, gauges)
    }

    /// What moved since the last call.
    fn delta(&self) -> BTreeMap<String, u64> {
        self.take().1
    }
}

/// `expected` as a map; store calls bring their duration sample along.
fn expect(expected: &[(&str, u64)]) -> BTreeMap<String, u64> {
    let mut map = BTreeMap::new();
    for (key, n) in expected {
        map.insert((*key).to_owned(), *n);
        if let Some(operation) = key.strip_prefix("tower_jwt_auth_store_calls_total{operation=") {
            let operation = operation.split(',').next().unwrap();
            *map.entry(format!("tower_jwt_auth_store_call_duration_seconds{{operation={operation}}}#samples"))
                .or_default() += n;
        }
    }
    map
}

/// Runs `test` on a current-thread runtime with a recorder of its own:
/// layers built inside register their series there.
fn recorded<F, Fut>(test: F)
where
    F: FnOnce(Recorded) -> Fut,
    Fut: Future<Output = ()>,
{
    let recorder = DebuggingRecorder::new();
    let recorded = Recorded(recorder.snapshotter());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    metrics::with_local_recorder(&recorder, || runtime.block_on(test(recorded)));
}

async fn me(claims: Claims<Profile>) -> Json<Value> {
    Json(json!({ "sub": claims.sub(), "sid": claims.sid() }))
}

async fn hello(claims: Option<Claims>) -> Json<Value> {
    Json(json!({ "user": claims.as_ref().map(Claims::sub) }))
}

async fn logout(session: Session) -> Result<LoggedOut, AuthError> {
    session.logout().await
}

async fn logout_all(session: Session) -> Result<LoggedOut, AuthError> {
    session.logout_all().await
}

async fn logout_others(session: Session) -> Result<StatusCode, AuthError> {
    session.logout_others().await.map(|_| StatusCode::NO_CONTENT)
}

async fn revoke(session: Session, Path(id): Path<String>) -> Result<StatusCode, AuthError> {
    session.revoke(&id).await.map(|()| StatusCode::NO_CONTENT)
}

fn app(auth: &JwtAuth) -> Router {
    let protected = Router::new()
        .route("/me", get(me))
        .route("/logout", post(logout))
        .route("/logout-all", post(logout_all))
        .route("/logout-others", post(logout_others))
        .route("/sessions/{id}", delete(revoke))
        .route_layer(auth.clone());
    let optional = Router::new().route("/hello", get(hello)).route_layer(auth.optional());
    Router::new().merge(protected).merge(optional).merge(auth.refresh_router())
}

fn builder(store: &MemoryStore) -> tower_jwt_auth::JwtAuthBuilder {
    JwtAuth::builder()
        .signing_key(SigningKey::hs256("k", &[3; 32]).unwrap())
        .refresh_token_secret(SECRET.to_vec())
        .store(store.clone())
        .max_sessions_per_user(2)
}

fn plain(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

async fn login(auth: &JwtAuth, user: &str) -> tower_jwt_auth::Tokens {
    auth.login(user, &Profile { name: user.into() }, ClientInfo::default()).await.unwrap()
}

fn now_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()
}

/// Until the wall clock has moved to a later millisecond than `since`, so a
/// grace window of zero is over (a bounded wait on the clock, not a sleep).
fn clock_past(since: u128) {
    let ceiling = std::time::Instant::now() + Duration::from_secs(5);
    while now_ms() <= since && std::time::Instant::now() < ceiling {
        std::hint::spin_loop();
    }
    assert!(now_ms() > since, "the clock did not move");
}

const AUTHENTICATED: &str = "tower_jwt_auth_requests_total{result=authenticated}";

#[test]
fn every_outcome_moves_exactly_one_series_once() {
    recorded(|recorded| async move {
        let store = MemoryStore::new();
        // A: the instance under test; B: another instance sharing the
        // store (no single flight with A, so its replay reaches the store);
        // C: one whose grace window is zero (a reuse there is theft).
        let a = builder(&store).build().unwrap();
        let b = builder(&store).build().unwrap();
        let c = builder(&store).grace(Duration::ZERO).build().unwrap();
        let reloading = builder(&store)
            .reload_claims(|user: String| async move {
                match user.as_str() {
                    "deleted" => Ok(None),
                    "flaky" => Err("the user directory is down"),
                    _ => Ok(Some(Profile { name: user })),
                }
            })
            .build()
            .unwrap();
        let app = app(&a);
        let (series, moved) = recorded.take();
        assert!(moved.is_empty(), "nothing counted at build time: {moved:?}");
        assert!(series.contains("tower_jwt_auth_refresh_total{outcome=reuse_revoked}"), "{series:?}");
        assert!(series.contains("tower_jwt_auth_sessions_revoked_total{cause=theft}"), "{series:?}");

        // A login: one store call.
        let first = login(&a, "alice").await;
        assert_eq!(recorded.delta(), expect(&[("tower_jwt_auth_store_calls_total{operation=create,result=ok}", 1)]));

        // An authenticated request.
        let (status, _) = send(&app, bearer("GET", "/me", first.access_token())).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(recorded.delta(), expect(&[(AUTHENTICATED, 1)]));

        // One rotation.
        let second = a.refresh(first.refresh_token()).await.unwrap();
        assert_eq!(
            recorded.delta(),
            expect(&[
                ("tower_jwt_auth_refresh_total{outcome=rotated}", 1),
                ("tower_jwt_auth_store_calls_total{operation=rotate,result=ok}", 1),
            ])
        );

        // One replay, within the grace window, on another instance.
        let replayed = b.refresh(first.refresh_token()).await.unwrap();
        assert_eq!(replayed.refresh_token(), second.refresh_token(), "the same successor");
        assert_eq!(
            recorded.delta(),
            expect(&[
                ("tower_jwt_auth_refresh_total{outcome=replayed}", 1),
                ("tower_jwt_auth_store_calls_total{operation=rotate,result=ok}", 1),
            ])
        );

        // One theft: the old token again, outside C's (empty) grace window.
        let rotated_at = now_ms();
        clock_past(rotated_at);
        let theft = c.refresh(first.refresh_token()).await.unwrap_err();
        assert!(matches!(theft, AuthError::InvalidGrant(_)), "{theft:?}");
        assert_eq!(
            recorded.delta(),
            expect(&[
                ("tower_jwt_auth_refresh_total{outcome=reuse_revoked}", 1),
                ("tower_jwt_auth_sessions_revoked_total{cause=theft}", 1),
                ("tower_jwt_auth_store_calls_total{operation=rotate,result=ok}", 1),
            ])
        );

        // The revoked session's access token, and its newest refresh token.
        let (status, _) = send(&app, bearer("GET", "/me", second.access_token())).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(recorded.delta(), expect(&[("tower_jwt_auth_requests_total{reason=revoked,result=rejected}", 1)]));
        assert!(a.refresh(second.refresh_token()).await.is_err());
        assert_eq!(recorded.delta(), expect(&[("tower_jwt_auth_refresh_total{outcome=not_found}", 1)]));

        // One not found, from the store: an instance whose store never had
        // this session (its revocation list cannot know it either).
        let elsewhere = builder(&MemoryStore::new()).build().unwrap();
        let unknown = elsewhere.refresh(second.refresh_token()).await.unwrap_err();
        assert!(matches!(unknown, AuthError::InvalidGrant(_)), "{unknown:?}");
        assert_eq!(
            recorded.delta(),
            expect(&[
                ("tower_jwt_auth_refresh_total{outcome=not_found}", 1),
                ("tower_jwt_auth_store_calls_total{operation=rotate,result=ok}", 1),
            ])
        );

        // A refresh token whose tag does not verify.
        assert!(a.refresh("bob.x.0.not-a-tag").await.is_err());
        assert_eq!(recorded.delta(), expect(&[("tower_jwt_auth_refresh_total{outcome=invalid}", 1)]));

        // One logout.
        let third = login(&a, "alice").await;
        recorded.delta();
        let (status, _) = send(&app, bearer("POST", "/logout", third.access_token())).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(
            recorded.delta(),
            expect(&[
                (AUTHENTICATED, 1),
                ("tower_jwt_auth_sessions_revoked_total{cause=logout}", 1),
                ("tower_jwt_auth_store_calls_total{operation=revoke,result=ok}", 1),
            ])
        );

        // One logout-all, of two live sessions: one count per session.
        let fourth = login(&a, "alice").await;
        login(&a, "alice").await;
        recorded.delta();
        let (status, _) = send(&app, bearer("POST", "/logout-all", fourth.access_token())).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(
            recorded.delta(),
            expect(&[
                (AUTHENTICATED, 1),
                ("tower_jwt_auth_sessions_revoked_total{cause=logout_all}", 2),
                ("tower_jwt_auth_store_calls_total{operation=revoke_all,result=ok}", 1),
            ])
        );

        // One cap eviction: a third session of carol's with a cap of two.
        login(&a, "carol").await;
        let kept = login(&a, "carol").await;
        recorded.delta();
        let newest = login(&a, "carol").await;
        assert_eq!(
            recorded.delta(),
            expect(&[
                ("tower_jwt_auth_sessions_revoked_total{cause=cap}", 1),
                ("tower_jwt_auth_store_calls_total{operation=create,result=ok}", 1),
            ])
        );

        // Logout of the other sessions, and revoking one by id.
        let (status, _) = send(&app, bearer("POST", "/logout-others", newest.access_token())).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(
            recorded.delta(),
            expect(&[
                (AUTHENTICATED, 1),
                ("tower_jwt_auth_sessions_revoked_total{cause=logout_others}", 1),
                ("tower_jwt_auth_store_calls_total{operation=revoke_all,result=ok}", 1),
            ])
        );
        let other = login(&a, "carol").await;
        recorded.delta();
        let uri = format!("/sessions/{}", other.session_id());
        let (status, _) = send(&app, bearer("DELETE", &uri, newest.access_token())).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(
            recorded.delta(),
            expect(&[
                (AUTHENTICATED, 1),
                ("tower_jwt_auth_sessions_revoked_total{cause=revoke}", 1),
                ("tower_jwt_auth_store_calls_total{operation=revoke,result=ok}", 1),
            ])
        );
        drop(kept);

        // The per-user bump; the user's older token is then refused as expired.
        a.invalidate_access_tokens("carol").await.unwrap();
        assert_eq!(
            recorded.delta(),
            expect(&[
                ("tower_jwt_auth_sessions_revoked_total{cause=bump}", 1),
                ("tower_jwt_auth_store_calls_total{operation=invalidate_tokens,result=ok}", 1),
            ])
        );
        let (status, _) = send(&app, bearer("GET", "/me", newest.access_token())).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(recorded.delta(), expect(&[("tower_jwt_auth_requests_total{reason=expired,result=rejected}", 1)]));

        // A transparent refresh of a cookie session: one request, one rotation.
        let dave = login(&a, "dave").await;
        recorded.delta();
        let request = Request::get("/me").header(header::COOKIE, format!("__Host-refresh={}", dave.refresh_token()));
        let (status, body) = send(&app, request.body(Body::empty()).unwrap()).await;
        assert_eq!((status, &body["sub"]), (StatusCode::OK, &json!("dave")));
        assert_eq!(
            recorded.delta(),
            expect(&[
                (AUTHENTICATED, 1),
                ("tower_jwt_auth_refresh_total{outcome=rotated}", 1),
                ("tower_jwt_auth_store_calls_total{operation=rotate,result=ok}", 1),
            ])
        );
        // Dead cookie sessions: the stolen-and-revoked one on a protected
        // route, a forged one on an optional route.
        let dead = Request::get("/me").header(header::COOKIE, format!("__Host-refresh={}", second.refresh_token()));
        let (status, _) = send(&app, dead.body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let forged = Request::get("/hello").header(header::COOKIE, "__Host-refresh=eve.x.0.not-a-tag");
        let (status, body) = send(&app, forged.body(Body::empty()).unwrap()).await;
        assert_eq!((status, body), (StatusCode::OK, json!({ "user": null })));
        assert_eq!(
            recorded.delta(),
            expect(&[
                ("tower_jwt_auth_requests_total{reason=session_ended,result=rejected}", 1),
                ("tower_jwt_auth_requests_total{reason=session_ended,result=guest}", 1),
                ("tower_jwt_auth_refresh_total{outcome=not_found}", 1),
                ("tower_jwt_auth_refresh_total{outcome=invalid}", 1),
            ])
        );

        // Requests without credentials, with a malformed header, with a bad token.
        send(&app, plain("/me")).await;
        send(&app, plain("/hello")).await;
        let malformed = Request::get("/me").header(header::AUTHORIZATION, "Bearer a b").body(Body::empty()).unwrap();
        send(&app, malformed).await;
        send(&app, bearer("GET", "/me", "not.a.token")).await;
        let expired = a.test_token("alice").expires_in(-60).sign();
        send(&app, bearer("GET", "/hello", &expired)).await;
        assert_eq!(
            recorded.delta(),
            expect(&[
                ("tower_jwt_auth_requests_total{reason=missing,result=rejected}", 1),
                ("tower_jwt_auth_requests_total{reason=missing,result=guest}", 1),
                ("tower_jwt_auth_requests_total{reason=malformed,result=rejected}", 1),
                ("tower_jwt_auth_requests_total{reason=invalid,result=rejected}", 1),
                ("tower_jwt_auth_requests_total{reason=expired,result=guest}", 1),
            ])
        );

        // reload_claims: a deleted user (the session is revoked) and a
        // directory that fails (nothing changes).
        let deleted = login(&reloading, "deleted").await;
        let flaky = login(&reloading, "flaky").await;
        recorded.delta();
        assert!(reloading.refresh(deleted.refresh_token()).await.is_err());
        assert_eq!(
            recorded.delta(),
            expect(&[
                ("tower_jwt_auth_refresh_total{outcome=denied}", 1),
                ("tower_jwt_auth_sessions_revoked_total{cause=revoke}", 1),
                ("tower_jwt_auth_store_calls_total{operation=revoke,result=ok}", 1),
            ])
        );
        assert_eq!(reloading.refresh(flaky.refresh_token()).await.unwrap_err(), AuthError::Unavailable);
        assert_eq!(recorded.delta(), expect(&[("tower_jwt_auth_refresh_total{outcome=unavailable}", 1)]));

        let (after, _) = recorded.take();
        assert_eq!(after, series, "no series appeared after build");
    });
}

#[test]
fn ten_thousand_users_add_no_series() {
    recorded(|recorded| async move {
        let store = MemoryStore::new();
        let auth = builder(&store).build().unwrap();
        let app = app(&auth);
        let (before, _) = recorded.take();
        let mut sids = Vec::new();
        for i in 0..10_000 {
            let user = format!("user-{i}");
            let tokens = login(&auth, &user).await;
            if i % 10 == 0 {
                let (status, _) = send(&app, bearer("GET", "/me", tokens.access_token())).await;
                assert_eq!(status, StatusCode::OK);
                let refreshed = auth.refresh(tokens.refresh_token()).await.unwrap();
                auth.revoke_session(&user, refreshed.session_id()).await.unwrap();
            }
            sids.push(tokens.session_id().to_owned());
        }
        let (after, moved) = recorded.take();
        assert_eq!(after, before, "the same series after 10 000 users");
        assert_eq!(moved["tower_jwt_auth_store_calls_total{operation=create,result=ok}"], 10_000);
        assert_eq!(moved[AUTHENTICATED], 1000);
        assert_eq!(moved["tower_jwt_auth_refresh_total{outcome=rotated}"], 1000);
        assert_eq!(moved["tower_jwt_auth_sessions_revoked_total{cause=revoke}"], 1000);
        let labels = after.iter().map(String::as_str).collect::<Vec<_>>().join("\n");
        assert!(!labels.contains("user-"), "no user id in a label:\n{labels}");
        assert!(sids.iter().all(|sid| !labels.contains(sid.as_str())), "no session id in a label");
    });
}

#[test]
fn the_revocation_list_size_is_a_gauge() {
    recorded(|recorded| async move {
        let auth = builder(&MemoryStore::new()).build().unwrap();
        for i in 0..5 {
            let tokens = login(&auth, &format!("user-{i}")).await;
            auth.revoke_session(tokens.user_id(), tokens.session_id()).await.unwrap();
        }
        auth.invalidate_access_tokens("user-0").await.unwrap();
        let (_, _, gauges) = recorded.take_with_gauges();
        assert_eq!(gauges["tower_jwt_auth_revocation_list_entries{kind=session}"], 5.0, "{gauges:?}");
        assert_eq!(gauges["tower_jwt_auth_revocation_list_entries{kind=user}"], 1.0, "{gauges:?}");
    });
}

/// A revocation made on one instance reaches another through Redis pub/sub,
/// and the trip is recorded there (publish → applied).
#[test]
fn revocation_propagation_lag_is_recorded() {
    use support::redis_server::RedisServer;
    use tower_jwt_auth::store::RedisStore;

    let redis = RedisServer::start();
    recorded(|recorded| async move {
        let build = |store: RedisStore| {
            JwtAuth::builder()
                .signing_key(SigningKey::hs256("k", &[3; 32]).unwrap())
                .refresh_token_secret(SECRET.to_vec())
                .store(store)
                .build()
                .unwrap()
        };
        let a = build(RedisStore::connect(&redis.url()).await.unwrap());
        let b = build(RedisStore::connect(&redis.url()).await.unwrap());
        for auth in [&a, &b] {
            assert!(auth.revocations_loaded(Duration::from_secs(10)).await);
        }
        recorded.delta();
        let tokens = login(&a, "alice").await;
        a.revoke_session("alice", tokens.session_id()).await.unwrap();
        // The revocation is published twice (by the script that revokes,
        // then when it is recorded for instances that start later), and both
        // instances hear both messages (A its own): four lag samples.
        let key = "tower_jwt_auth_revocation_propagation_seconds#samples";
        let ceiling = std::time::Instant::now() + Duration::from_secs(10);
        let mut samples = 0;
        while samples < 4 && std::time::Instant::now() < ceiling {
            tokio::time::sleep(Duration::from_millis(10)).await;
            samples += recorded.delta().get(key).copied().unwrap_or(0);
        }
        assert_eq!(samples, 4, "one lag sample per message heard, on each instance");
        let (status, _) = send(&app(&b), bearer("GET", "/me", tokens.access_token())).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "B refuses the revoked session's token");
    });
}

/// A hook that blocks: the events beyond the queue are dropped and counted;
/// one that panics: each lost event is counted.
#[test]
fn events_the_hook_does_not_get_are_counted() {
    const LOGINS: u64 = 1100;
    const QUEUE: u64 = 1024;
    recorded(|recorded| async move {
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        let blocked = std::sync::Mutex::new(blocked);
        let auth = JwtAuth::builder()
            .signing_key(SigningKey::hs256("k", &[3; 32]).unwrap())
            .max_sessions_per_user(u32::MAX)
            .on_event(move |_: &tower_jwt_auth::SecurityEvent| {
                let _ = blocked.lock().unwrap().recv();
            })
            .build()
            .unwrap();
        recorded.delta();
        for _ in 0..LOGINS {
            login(&auth, "alice").await;
        }
        let dropped = recorded.delta()["tower_jwt_auth_events_dropped_total{reason=queue_full}"];
        // The queue holds 1024; the hook may already hold one more.
        assert!((LOGINS - QUEUE - 1..=LOGINS - QUEUE).contains(&dropped), "{dropped} dropped");
        drop(release);
    });
}

/// A store that fails while `down` is set (a Redis outage), and is the
/// memory store otherwise.
#[derive(Clone, Default)]
struct FlakyStore {
    inner: MemoryStore,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

mod flaky {
    use std::sync::{Arc, atomic::Ordering};

    use tower_jwt_auth::{
        revocation::RevocationList,
        store::{NewSession, RotateOutcome, SessionPolicy, SessionRecord, SessionStore, StoreError, StoreFuture},
    };

    use super::FlakyStore;

    impl FlakyStore {
        fn check<'a, T: Send + 'a>(&'a self, call: StoreFuture<'a, T>) -> StoreFuture<'a, T> {
            if self.down.load(Ordering::SeqCst) {
                Box::pin(async { Err(StoreError::Unavailable("the test took it down".into())) })
            } else {
                call
            }
        }
    }

    impl SessionStore for FlakyStore {
        fn create<'a>(&'a self, session: NewSession, policy: &'a SessionPolicy) -> StoreFuture<'a, Vec<String>> {
            self.check(self.inner.create(session, policy))
        }

        fn rotate<'a>(
            &'a self,
            user_id: &'a str,
            sid: &'a str,
            presented: u64,
            now_ms: u64,
            policy: &'a SessionPolicy,
        ) -> StoreFuture<'a, RotateOutcome> {
            self.check(self.inner.rotate(user_id, sid, presented, now_ms, policy))
        }

        fn list<'a>(&'a self, user_id: &'a str, now_ms: u64) -> StoreFuture<'a, Vec<SessionRecord>> {
            self.check(self.inner.list(user_id, now_ms))
        }

        fn revoke<'a>(
            &'a self,
            user_id: &'a str,
            sid: &'a str,
            now_ms: u64,
            policy: &'a SessionPolicy,
        ) -> StoreFuture<'a, bool> {
            self.check(self.inner.revoke(user_id, sid, now_ms, policy))
        }

        fn revoke_all<'a>(
            &'a self,
            user_id: &'a str,
            except: Option<&'a str>,
            now_ms: u64,
            policy: &'a SessionPolicy,
        ) -> StoreFuture<'a, Vec<String>> {
            self.check(self.inner.revoke_all(user_id, except, now_ms, policy))
        }

        fn reauthenticate<'a>(
            &'a self,
            user_id: &'a str,
            sid: &'a str,
            now_ms: u64,
            policy: &'a SessionPolicy,
        ) -> StoreFuture<'a, Option<SessionRecord>> {
            self.check(self.inner.reauthenticate(user_id, sid, now_ms, policy))
        }

        fn invalidate_tokens<'a>(
            &'a self,
            user_id: &'a str,
            now_ms: u64,
            policy: &'a SessionPolicy,
        ) -> StoreFuture<'a, ()> {
            self.check(self.inner.invalidate_tokens(user_id, now_ms, policy))
        }

        fn attach(&self, list: Arc<RevocationList>) {
            self.inner.attach(list)
        }

        fn outlives_process(&self) -> bool {
            false
        }
    }
}

/// The store down: each failed call is counted as an error of its
/// operation, the refresh as `unavailable`, the request through the layer
/// as rejected (`unavailable`) or a guest; nothing else moves.
#[test]
fn a_store_outage_is_counted_per_call() {
    use std::sync::atomic::Ordering;

    recorded(|recorded| async move {
        let store = FlakyStore::default();
        let auth = JwtAuth::builder()
            .signing_key(SigningKey::hs256("k", &[3; 32]).unwrap())
            .store(store.clone())
            .build()
            .unwrap();
        let app = app(&auth);
        let tokens = login(&auth, "alice").await;
        recorded.delta();
        store.down.store(true, Ordering::SeqCst);

        assert_eq!(auth.refresh(tokens.refresh_token()).await.unwrap_err(), AuthError::Unavailable);
        assert_eq!(
            recorded.delta(),
            expect(&[
                ("tower_jwt_auth_refresh_total{outcome=unavailable}", 1),
                ("tower_jwt_auth_store_calls_total{operation=rotate,result=error}", 1),
            ])
        );
        let cookie = format!("__Host-refresh={}", tokens.refresh_token());
        let (status, _) =
            send(&app, Request::get("/me").header(header::COOKIE, &cookie).body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let (status, body) =
            send(&app, Request::get("/hello").header(header::COOKIE, &cookie).body(Body::empty()).unwrap()).await;
        assert_eq!((status, body), (StatusCode::OK, json!({ "user": null })));
        assert_eq!(
            recorded.delta(),
            expect(&[
                ("tower_jwt_auth_requests_total{reason=unavailable,result=rejected}", 1),
                ("tower_jwt_auth_requests_total{reason=unavailable,result=guest}", 1),
                ("tower_jwt_auth_refresh_total{outcome=unavailable}", 2),
                ("tower_jwt_auth_store_calls_total{operation=rotate,result=error}", 2),
            ])
        );
        assert_eq!(
            auth.login("bob", &Profile { name: "bob".into() }, ClientInfo::default()).await.unwrap_err(),
            AuthError::Unavailable
        );
        assert_eq!(auth.revoke_session("alice", tokens.session_id()).await.unwrap_err(), AuthError::Unavailable);
        assert_eq!(
            recorded.delta(),
            expect(&[
                ("tower_jwt_auth_store_calls_total{operation=create,result=error}", 1),
                ("tower_jwt_auth_store_calls_total{operation=revoke,result=error}", 1),
            ])
        );

        store.down.store(false, Ordering::SeqCst);
        let refreshed = auth.refresh(tokens.refresh_token()).await.unwrap();
        assert_eq!(refreshed.session_id(), tokens.session_id(), "nothing changed during the outage");
        assert_eq!(
            recorded.delta(),
            expect(&[
                ("tower_jwt_auth_refresh_total{outcome=rotated}", 1),
                ("tower_jwt_auth_store_calls_total{operation=rotate,result=ok}", 1),
            ])
        );
    });
}

#[path = "support/jwks_server.rs"]
mod jwks_server;

/// Remote keys: each fetch counted by result, and the last success's time
/// as a gauge (the keys' age at scrape time).
#[test]
fn remote_key_fetches_are_counted() {
    use jwks_server::{Behaviour, JwksServer};
    use tower_jwt_auth::{Algorithm, remote_keys::RemoteKeys};

    recorded(|recorded| async move {
        let pem = std::fs::read(format!("{}/tests/keys/ed25519.pem", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let signer = SigningKey::from_pem(Algorithm::EdDSA, "remote", &pem).unwrap();
        let jwks = serde_json::to_string(&JwtAuth::new(signer).jwks()).unwrap();
        let server = JwksServer::start(jwks).await;
        server.set_behaviour(Behaviour::Status(503));
        recorded.delta();
        let keys = RemoteKeys::jwks_url(server.url()).cooldown(Duration::from_millis(100)).build().unwrap();
        let ceiling = std::time::Instant::now() + Duration::from_secs(15);
        while server.jwks_requests() < 1 && std::time::Instant::now() < ceiling {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        server.set_behaviour(Behaviour::Serve);
        while !keys.is_ready() && std::time::Instant::now() < ceiling {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(keys.is_ready());
        let failures = server.jwks_requests() as u64 - 1;
        let (_, moved, gauges) = recorded.take_with_gauges();
        assert_eq!(
            moved,
            expect(&[
                ("tower_jwt_auth_jwks_fetches_total{result=error}", failures),
                ("tower_jwt_auth_jwks_fetches_total{result=ok}", 1),
            ])
        );
        let fetched_at = gauges["tower_jwt_auth_jwks_last_success_timestamp_seconds"];
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
        assert!((now - 60.0..=now).contains(&fetched_at), "{fetched_at} is the fetch's time, not {now}");
    });
}
