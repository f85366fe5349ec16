//! The embedded, single-process [`SessionStore`]: sessions in a mutex-guarded
//! map, revocations pushed straight into every attached [`RevocationList`].
//!
//! It is the default store: fine for one process, lost on restart. The mutex
//! is never held across an `.await` and is not on the request hot path (only
//! logins, refreshes and logouts reach a store).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError, Weak},
};

use super::{NewSession, RotateOutcome, SessionPolicy, SessionRecord, SessionStore, StoreFuture};
use crate::revocation::{Revocation, RevocationList};

/// Sessions kept in process memory.
///
/// Cheap to clone: clones share the same sessions, and a revocation made
/// through any clone reaches every [`RevocationList`] attached through any
/// clone. Expired sessions are dropped when touched and by a sweep that runs
/// every so often (amortised over operations), so memory stays bounded by the
/// live sessions.
///
/// ```
/// use tower_jwt_auth::store::MemoryStore;
///
/// let store = MemoryStore::new();
/// let same_sessions = store.clone();
/// # drop((store, same_sessions));
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    state: Mutex<State>,
    lists: Mutex<Vec<Weak<RevocationList>>>,
}

#[derive(Debug, Default)]
struct State {
    /// user id → session id → session.
    users: HashMap<String, HashMap<String, SessionRecord>>,
    /// Revocations still relevant, for lists attached later: by session id
    /// or user id, with the Unix ms until which each matters.
    revoked: HashMap<String, Revocation>,
    /// Live entries in `users`, to pace the sweep.
    sessions: usize,
    /// Operations since the last sweep.
    ops: usize,
}

/// Never sweep more often than this many operations.
const MIN_SWEEP_INTERVAL: usize = 1024;

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied
        // transition (each one is a few map operations), so keep serving.
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Pushes revocations into every attached list (outside the state lock).
    fn publish(&self, revoked: &[Revocation]) {
        if revoked.is_empty() {
            return;
        }
        let mut lists = self.inner.lists.lock().unwrap_or_else(PoisonError::into_inner);
        lists.retain(|weak| match weak.upgrade() {
            Some(list) => {
                for revocation in revoked {
                    list.apply(revocation);
                }
                true
            }
            None => false,
        });
    }

    /// The session ids among `revoked`.
    fn sids(revoked: Vec<Revocation>) -> Vec<String> {
        revoked
            .into_iter()
            .filter_map(|r| match r {
                Revocation::Session { sid, .. } => Some(sid),
                Revocation::User { .. } => None,
            })
            .collect()
    }
}

fn is_live(record: &SessionRecord, now_ms: u64) -> bool {
    now_ms < record.idle_expires_at_ms && now_ms < record.absolute_expires_at_ms
}

fn ms(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl State {
    /// Counts an operation and sweeps expired sessions and revocations once
    /// enough operations have passed (at least as many as live sessions, so
    /// the sweep costs O(1) amortised).
    fn tick(&mut self, now_ms: u64) {
        self.ops += 1;
        if self.ops < self.sessions.max(MIN_SWEEP_INTERVAL) {
            return;
        }
        self.ops = 0;
        let mut removed = 0;
        self.users.retain(|_, sessions| {
            let before = sessions.len();
            sessions.retain(|_, record| is_live(record, now_ms));
            removed += before - sessions.len();
            !sessions.is_empty()
        });
        self.sessions -= removed;
        self.revoked.retain(|_, revocation| revocation.until_ms() > now_ms);
    }

    /// Removes one session; returns it.
    fn remove(&mut self, user_id: &str, sid: &str) -> Option<SessionRecord> {
        let sessions = self.users.get_mut(user_id)?;
        let record = sessions.remove(sid)?;
        if sessions.is_empty() {
            self.users.remove(user_id);
        }
        self.sessions -= 1;
        Some(record)
    }

    /// Remembers revoked sessions for lists attached later; returns them for publishing.
    fn remember(&mut self, sids: &[String], now_ms: u64, policy: &SessionPolicy) -> Vec<Revocation> {
        let until_ms = now_ms.saturating_add(ms(policy.revocation_ttl));
        sids.iter()
            .map(|sid| {
                let revocation = Revocation::Session { sid: sid.clone(), until_ms };
                self.revoked.insert(format!("s:{sid}"), revocation.clone());
                revocation
            })
            .collect()
    }
}

impl SessionStore for MemoryStore {
    fn create<'a>(&'a self, session: NewSession, policy: &'a SessionPolicy) -> StoreFuture<'a, Vec<String>> {
        Box::pin(async move {
            let now = session.now_ms;
            let absolute = now.saturating_add(ms(policy.absolute_ttl));
            let record = SessionRecord {
                sid: session.sid,
                user_id: session.user_id,
                claims: session.claims,
                user_agent: session.user_agent,
                ip: session.ip,
                created_at_ms: now,
                auth_time_ms: now,
                last_used_at_ms: now,
                counter: 0,
                rotated_at_ms: 0,
                idle_expires_at_ms: now.saturating_add(ms(policy.idle_ttl)).min(absolute),
                absolute_expires_at_ms: absolute,
            };
            let (user_id, sid) = (record.user_id.clone(), record.sid.clone());
            let published = {
                let mut guard = self.state();
                let state = &mut *guard;
                state.tick(now);
                let sessions = state.users.entry(user_id.clone()).or_default();
                let before = sessions.len();
                sessions.retain(|_, r| is_live(r, now));
                let expired = before - sessions.len();
                // Creation times are unique per user, so "the oldest" is the
                // first created even within one millisecond.
                let mut record = record;
                let newest = sessions.values().filter(|r| r.sid != sid).map(|r| r.created_at_ms).max();
                if let Some(newest) = newest.filter(|&newest| newest >= record.created_at_ms) {
                    record.created_at_ms = newest + 1;
                }
                let replaced = sessions.insert(sid.clone(), record).is_some();
                // The new session always survives, so a cap of 0 acts as 1.
                let cap = policy.max_sessions.map_or(usize::MAX, |m| (m as usize).max(1));
                let mut evicted = Vec::new();
                if sessions.len() > cap {
                    // The oldest by (created_at_ms, sid).
                    let mut others: Vec<(u64, &String)> =
                        sessions.iter().filter(|(s, _)| **s != sid).map(|(s, r)| (r.created_at_ms, s)).collect();
                    others.sort_unstable();
                    evicted = others[..sessions.len() - cap].iter().map(|(_, s)| (*s).clone()).collect();
                    for s in &evicted {
                        sessions.remove(s);
                    }
                }
                state.sessions = state.sessions + usize::from(!replaced) - expired - evicted.len();
                state.remember(&evicted, now, policy)
            };
            self.publish(&published);
            Ok(Self::sids(published))
        })
    }

    fn rotate<'a>(
        &'a self,
        user_id: &'a str,
        sid: &'a str,
        presented: u64,
        now_ms: u64,
        policy: &'a SessionPolicy,
    ) -> StoreFuture<'a, RotateOutcome> {
        Box::pin(async move {
            let mut state = self.state();
            state.tick(now_ms);
            let Some(record) = state.users.get_mut(user_id).and_then(|s| s.get_mut(sid)) else {
                return Ok(RotateOutcome::NotFound);
            };
            if !is_live(record, now_ms) {
                state.remove(user_id, sid);
                return Ok(RotateOutcome::NotFound);
            }
            // The current counter, or one ahead: a successor minted here whose
            // rotation the store never recorded (see `RotateOutcome`).
            if presented == record.counter || presented == record.counter.saturating_add(1) {
                let fast_forward = presented != record.counter;
                record.counter = presented + 1;
                record.rotated_at_ms = now_ms;
                record.last_used_at_ms = now_ms;
                record.idle_expires_at_ms =
                    now_ms.saturating_add(ms(policy.idle_ttl)).min(record.absolute_expires_at_ms);
                let record = record.clone();
                return Ok(if fast_forward {
                    RotateOutcome::FastForwarded(record)
                } else {
                    RotateOutcome::Rotated(record)
                });
            }
            if record.counter > 0
                && presented == record.counter - 1
                && now_ms.saturating_sub(record.rotated_at_ms) <= ms(policy.grace)
            {
                return Ok(RotateOutcome::Replayed(record.clone()));
            }
            state.remove(user_id, sid);
            let published = state.remember(&[sid.to_owned()], now_ms, policy);
            drop(state);
            self.publish(&published);
            Ok(RotateOutcome::Theft { user_id: user_id.to_owned(), sid: sid.to_owned() })
        })
    }

    fn list<'a>(&'a self, user_id: &'a str, now_ms: u64) -> StoreFuture<'a, Vec<SessionRecord>> {
        Box::pin(async move {
            let mut guard = self.state();
            let state = &mut *guard;
            state.tick(now_ms);
            let Some(sessions) = state.users.get_mut(user_id) else {
                return Ok(Vec::new());
            };
            let before = sessions.len();
            sessions.retain(|_, r| is_live(r, now_ms));
            state.sessions -= before - sessions.len();
            let mut live: Vec<SessionRecord> = sessions.values().cloned().collect();
            if live.is_empty() {
                state.users.remove(user_id);
            }
            drop(guard);
            live.sort_unstable_by(|a, b| (a.created_at_ms, &a.sid).cmp(&(b.created_at_ms, &b.sid)));
            Ok(live)
        })
    }

    fn revoke<'a>(
        &'a self,
        user_id: &'a str,
        sid: &'a str,
        now_ms: u64,
        policy: &'a SessionPolicy,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut state = self.state();
            state.tick(now_ms);
            match state.remove(user_id, sid) {
                Some(record) if is_live(&record, now_ms) => {
                    let published = state.remember(&[record.sid], now_ms, policy);
                    drop(state);
                    self.publish(&published);
                    Ok(true)
                }
                _ => Ok(false),
            }
        })
    }

    fn revoke_all<'a>(
        &'a self,
        user_id: &'a str,
        except: Option<&'a str>,
        now_ms: u64,
        policy: &'a SessionPolicy,
    ) -> StoreFuture<'a, Vec<String>> {
        Box::pin(async move {
            let mut state = self.state();
            state.tick(now_ms);
            let Some(mut sessions) = state.users.remove(user_id) else {
                return Ok(Vec::new());
            };
            let kept = except.and_then(|sid| sessions.remove_entry(sid));
            state.sessions -= sessions.len();
            let mut live: Vec<(u64, String)> =
                sessions.into_values().filter(|r| is_live(r, now_ms)).map(|r| (r.created_at_ms, r.sid)).collect();
            live.sort_unstable();
            let sids: Vec<String> = live.into_iter().map(|(_, sid)| sid).collect();
            match kept {
                Some((sid, record)) if is_live(&record, now_ms) => {
                    state.users.entry(user_id.to_owned()).or_default().insert(sid, record);
                }
                Some(_) => state.sessions -= 1,
                None => {}
            }
            let published = state.remember(&sids, now_ms, policy);
            drop(state);
            self.publish(&published);
            Ok(sids)
        })
    }

    fn reauthenticate<'a>(
        &'a self,
        user_id: &'a str,
        sid: &'a str,
        now_ms: u64,
        _policy: &'a SessionPolicy,
    ) -> StoreFuture<'a, Option<SessionRecord>> {
        Box::pin(async move {
            let mut state = self.state();
            state.tick(now_ms);
            let Some(record) = state.users.get_mut(user_id).and_then(|s| s.get_mut(sid)) else {
                return Ok(None);
            };
            if !is_live(record, now_ms) {
                state.remove(user_id, sid);
                return Ok(None);
            }
            record.auth_time_ms = now_ms;
            Ok(Some(record.clone()))
        })
    }

    fn invalidate_tokens<'a>(
        &'a self,
        user_id: &'a str,
        now_ms: u64,
        policy: &'a SessionPolicy,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let until_ms = now_ms.saturating_add(ms(policy.revocation_ttl));
            let revocation = Revocation::User { user_id: user_id.to_owned(), before_ms: now_ms, until_ms };
            {
                let mut state = self.state();
                state.tick(now_ms);
                let key = format!("u:{user_id}");
                let merged = match state.revoked.get(&key) {
                    Some(Revocation::User { before_ms, until_ms: old_until, .. }) => Revocation::User {
                        user_id: user_id.to_owned(),
                        before_ms: (*before_ms).max(now_ms),
                        until_ms: (*old_until).max(until_ms),
                    },
                    _ => revocation.clone(),
                };
                state.revoked.insert(key, merged);
            }
            self.publish(&[revocation]);
            Ok(())
        })
    }

    fn outlives_process(&self) -> bool {
        false
    }

    fn attach(&self, list: Arc<RevocationList>) {
        // Register first, then load what is remembered: a revocation racing
        // with this call lands in the list either way.
        {
            let mut lists = self.inner.lists.lock().unwrap_or_else(PoisonError::into_inner);
            lists.retain(|weak| weak.strong_count() > 0);
            lists.push(Arc::downgrade(&list));
        }
        let remembered: Vec<Revocation> = self.state().revoked.values().cloned().collect();
        for revocation in &remembered {
            list.apply(revocation);
        }
        list.mark_loaded();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn policy() -> SessionPolicy {
        SessionPolicy {
            idle_ttl: Duration::from_secs(60),
            absolute_ttl: Duration::from_secs(600),
            grace: Duration::from_secs(5),
            max_sessions: None,
            revocation_ttl: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn untouched_expired_sessions_and_revocations_are_swept() {
        let store = MemoryStore::new();
        let t = 1_000_000;
        for i in 0..3000 {
            let session = NewSession {
                user_id: format!("user-{i}"),
                sid: format!("sid-{i}"),
                claims: String::new(),
                user_agent: None,
                ip: None,
                now_ms: t,
            };
            store.create(session, &policy()).await.unwrap();
        }
        assert!(store.revoke("user-0", "sid-0", t, &policy()).await.unwrap());
        assert_eq!(store.state().sessions, 2999);
        // Later operations on other users only: the sweep still drops the
        // expired sessions and the outdated revocation.
        for _ in 0..3000 {
            store.list("nobody", t + 120_000).await.unwrap();
        }
        let state = store.state();
        assert_eq!((state.sessions, state.users.len(), state.revoked.len()), (0, 0, 0));
    }
}
