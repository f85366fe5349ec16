//! What this instance knows about revoked sessions and about users whose
//! older access tokens went stale, checked on the hot path with a local lookup.
//!
//! Stores feed it: locally at once, from other instances through pub/sub, and
//! loaded in pages at start-up. Until that first load is done the list says
//! so ([`RevocationList::is_loaded`]) and the layer fails closed (503), because a token
//! it cannot check must not be accepted.
//!
//! Memory: an entry is a 96-bit keyed fingerprint of the session id and the
//! second until which it matters, 16 bytes in a `hashbrown` table (about
//! 36 bytes per entry resident at a million, table slack included), so a
//! million revocations fit in tens of megabytes, not hundreds. Fingerprints
//! come from SipHash under random per-process keys: nobody can aim a
//! collision at a victim's session, and an accidental one (2⁻⁹⁶ per pair) is
//! out of reach.

pub(crate) mod wire;

use std::{
    collections::HashMap,
    hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState},
    sync::{
        PoisonError, RwLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

pub(crate) use wire::Revocation;

use crate::{clock::now_ms, metrics::ListMetrics};

/// Shards of each table: writers (revocations, sweeps) lock one shard, so a
/// reader on another never waits.
const SHARDS: usize = 16;

/// A shard is swept of expired entries after this many inserts, or as many
/// as it holds if more (amortised O(1) per insert).
const MIN_SWEEP_INTERVAL: usize = 1024;

/// 96 bits of a keyed hash: 12 bytes, so an entry with its `u32` expiry is 16.
type Fingerprint = [u8; 12];

/// The table's hash of a fingerprint: its first 8 bytes, already uniform.
#[derive(Default)]
struct FirstBytes(u64);

impl Hasher for FirstBytes {
    fn write(&mut self, bytes: &[u8]) {
        if let Some(first) = bytes.first_chunk::<8>() {
            self.0 = u64::from_le_bytes(*first);
        }
    }

    // The length prefix `[u8; 12]` hashes first carries nothing.
    fn write_usize(&mut self, _: usize) {}

    fn finish(&self) -> u64 {
        self.0
    }
}

type Table<V> = HashMap<Fingerprint, V, BuildHasherDefault<FirstBytes>>;

struct Shard<V> {
    entries: Table<V>,
    inserts_since_sweep: usize,
}

impl<V> Default for Shard<V> {
    fn default() -> Self {
        Self { entries: Table::default(), inserts_since_sweep: 0 }
    }
}

/// One sharded table of fingerprints.
struct Shards<V> {
    shards: [RwLock<Shard<V>>; SHARDS],
    /// Entries in all shards, for the gauge of [`metrics`](crate::metrics)
    /// without taking every shard's lock at each insert.
    entries: AtomicUsize,
}

impl<V: Copy> Shards<V> {
    fn new() -> Self {
        Self { shards: std::array::from_fn(|_| RwLock::default()), entries: AtomicUsize::new(0) }
    }

    fn shard(&self, key: &Fingerprint) -> &RwLock<Shard<V>> {
        // The table hashes with the first 8 bytes; shard on the last 4.
        &self.shards[key[8] as usize % SHARDS]
    }

    fn get(&self, key: &Fingerprint) -> Option<V> {
        self.shard(key).read().unwrap_or_else(PoisonError::into_inner).entries.get(key).copied()
    }

    /// Inserts or merges, then sweeps the shard when it is due.
    /// Inserts or merges; whether the entry changed (a repeat of what the
    /// list already holds changes nothing, and must not make every cached
    /// token be checked again).
    fn upsert(&self, key: Fingerprint, value: V, merge: impl Fn(V, V) -> V, live: impl Fn(&V) -> bool) -> bool
    where
        V: PartialEq,
    {
        let mut shard = self.shard(&key).write().unwrap_or_else(PoisonError::into_inner);
        let before = shard.entries.len();
        let mut changed = true;
        shard
            .entries
            .entry(key)
            .and_modify(|old| {
                let merged = merge(*old, value);
                changed = merged != *old;
                *old = merged;
            })
            .or_insert(value);
        shard.inserts_since_sweep += 1;
        if shard.inserts_since_sweep >= shard.entries.len().max(MIN_SWEEP_INTERVAL) {
            shard.inserts_since_sweep = 0;
            shard.entries.retain(|_, value| live(value));
        }
        let after = shard.entries.len();
        // Under the shard's lock, so the sum never goes below zero.
        if after >= before {
            self.entries.fetch_add(after - before, Ordering::Relaxed);
        } else {
            self.entries.fetch_sub(before - after, Ordering::Relaxed);
        }
        changed
    }

    fn len(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }

    fn reserve(&self, additional: usize) {
        for shard in &self.shards {
            shard.write().unwrap_or_else(PoisonError::into_inner).entries.reserve(additional / SHARDS + 1);
        }
    }
}

/// A user's stale-before entry: tokens issued before `before_ms` are stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stale {
    before_ms: u64,
    until_s: u32,
}

/// What the list says about one access token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Check {
    /// Neither its session is revoked nor its user's older tokens stale.
    Clean,
    /// Its session was revoked.
    Revoked,
    /// It was issued before its user's tokens were made stale (roles changed).
    Stale,
    /// The list is still loading: nothing can be vouched for.
    NotLoaded,
}

/// Revoked session ids, and users whose access tokens issued before some
/// instant are stale, each kept only as long as such a token could still be
/// valid.
///
/// A [`SessionStore`](crate::store::SessionStore) feeds it from
/// [`attach`](crate::store::SessionStore::attach) and must call
/// [`RevocationList::mark_loaded`] once it holds everything revoked before
/// (at once for a store with nothing to load): until then the layer refuses
/// to vouch for any token and answers `503`.
pub struct RevocationList {
    sessions: Shards<u32>,
    users: Shards<Stale>,
    /// SipHash keys for the fingerprints.
    keys: [RandomState; 2],
    /// Bumped after every insert, so a token found clean at generation `g`
    /// is still clean while it is `g`. 0 until [`mark_loaded`](Self::mark_loaded).
    generation: AtomicU64,
    metrics: ListMetrics,
}

impl std::fmt::Debug for RevocationList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationList")
            .field("sessions", &self.sessions.len())
            .field("users", &self.users.len())
            .field("loaded", &self.is_loaded())
            .finish()
    }
}

impl Default for RevocationList {
    fn default() -> Self {
        Self::new()
    }
}

/// Seconds (rounded up) from Unix milliseconds, saturating at `u32::MAX`
/// (the year 2106).
fn until_secs(until_ms: u64) -> u32 {
    u32::try_from(until_ms.div_ceil(1000)).unwrap_or(u32::MAX)
}

impl RevocationList {
    /// An empty list, not loaded yet. Its gauges (see
    /// [`metrics`](crate::metrics)) go to the recorder installed now.
    pub fn new() -> Self {
        Self {
            sessions: Shards::new(),
            users: Shards::new(),
            keys: [RandomState::new(), RandomState::new()],
            generation: AtomicU64::new(0),
            metrics: ListMetrics::new(),
        }
    }

    fn fingerprint(&self, id: &str) -> Fingerprint {
        let [a, b] = self.keys.each_ref().map(|keys| keys.hash_one(id));
        let mut out = [0; 12];
        out[..8].copy_from_slice(&a.to_le_bytes());
        out[8..].copy_from_slice(&b.to_le_bytes()[..4]);
        out
    }

    /// Records that session `sid` is revoked until `until_ms` (Unix
    /// milliseconds): its access tokens are refused until then.
    pub fn revoke_session(&self, sid: &str, until_ms: u64) {
        let now_s = now_ms() / 1000;
        let live = move |until: &u32| u64::from(*until) > now_s;
        let changed = self.sessions.upsert(self.fingerprint(sid), until_secs(until_ms), u32::max, live);
        self.bump(changed);
    }

    /// Records that `user_id`'s access tokens issued before `before_ms` are
    /// stale until `until_ms`.
    pub fn stale_before(&self, user_id: &str, before_ms: u64, until_ms: u64) {
        let now_s = now_ms() / 1000;
        let entry = Stale { before_ms, until_s: until_secs(until_ms) };
        let merge =
            |a: Stale, b: Stale| Stale { before_ms: a.before_ms.max(b.before_ms), until_s: a.until_s.max(b.until_s) };
        let changed = self.users.upsert(self.fingerprint(user_id), entry, merge, move |e| u64::from(e.until_s) > now_s);
        self.bump(changed);
    }

    /// Applies one revocation heard from a store.
    pub(crate) fn apply(&self, revocation: &Revocation) {
        match revocation {
            Revocation::Session { sid, until_ms } => self.revoke_session(sid, *until_ms),
            Revocation::User { user_id, before_ms, until_ms } => self.stale_before(user_id, *before_ms, *until_ms),
        }
    }

    /// After the insert, so a reader that sees the new generation also sees
    /// the entry; moves the generation only when an entry `changed` (a
    /// revocation heard again, from pub/sub and from the store that made
    /// it, invalidates no cached check); updates the gauges.
    fn bump(&self, changed: bool) {
        self.metrics.entries(self.sessions.len(), self.users.len());
        if changed {
            // Stays 0 (not loaded) until marked loaded.
            let _ = self.generation.fetch_update(Ordering::Release, Ordering::Acquire, |g| (g != 0).then(|| g + 1));
        }
    }

    /// Says that everything revoked before is in the list: from now on the
    /// layer trusts its answers.
    pub fn mark_loaded(&self) {
        let _ = self.generation.fetch_update(Ordering::Release, Ordering::Acquire, |g| (g == 0).then_some(1));
    }

    /// Whether [`mark_loaded`](Self::mark_loaded) was called.
    pub fn is_loaded(&self) -> bool {
        self.generation() != 0
    }

    /// Makes room for `additional` session entries (before a bulk load).
    pub fn reserve(&self, additional: usize) {
        self.sessions.reserve(additional);
    }

    /// Whether `sid` has been revoked (and its tokens may still be around).
    pub fn is_revoked(&self, sid: &str) -> bool {
        self.sessions.get(&self.fingerprint(sid)).is_some_and(|until| u64::from(until) * 1000 > now_ms())
    }

    /// The instant (Unix ms) before which `user_id`'s tokens are stale, if any.
    pub fn stale_before_ms(&self, user_id: &str) -> Option<u64> {
        let entry = self.users.get(&self.fingerprint(user_id))?;
        (u64::from(entry.until_s) * 1000 > now_ms()).then_some(entry.before_ms)
    }

    /// Checks a token of session `sid`, user `user_id`, issued at `iat`
    /// (Unix seconds).
    ///
    /// `iat` has whole seconds: a token is stale when it was issued in a
    /// second that began before the stale instant (`iat * 1000 <
    /// before_ms`, rounded so every token issued before the instant is
    /// caught); tokens issued after it carry at least that second (see
    /// [`RevocationList::issue_at`]), so they are never stale.
    pub(crate) fn check(&self, sid: &str, user_id: &str, iat: u64) -> Check {
        if !self.is_loaded() {
            return Check::NotLoaded;
        }
        if self.is_revoked(sid) {
            return Check::Revoked;
        }
        match self.stale_before_ms(user_id) {
            Some(before_ms) if iat.saturating_mul(1000) < before_ms.div_ceil(1000) * 1000 => Check::Stale,
            _ => Check::Clean,
        }
    }

    /// The `iat` (Unix seconds) for a token of `user_id` issued at `now_ms`:
    /// the current second, or the first whole second at or after the user's
    /// stale instant when that is later, so a token issued just after the
    /// stale instant is not itself stale. That is at most a second ahead,
    /// or as far as another instance's clock is ahead of this one's (capped
    /// at a minute, the largest leeway), which would otherwise make this
    /// instance issue stale tokens until its clock caught up.
    pub(crate) fn issue_at(&self, user_id: &str, now_ms: u64) -> u64 {
        let now_s = now_ms / 1000;
        match self.stale_before_ms(user_id) {
            Some(before_ms) => now_s.max(before_ms.div_ceil(1000).min(now_s + 60)),
            None => now_s,
        }
    }

    /// Changes whenever something is inserted; 0 while not loaded.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Number of session entries (expired ones included until swept).
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether the list holds no session entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of users with a stale-before entry (expired ones included until swept).
    pub fn users_len(&self) -> usize {
        self.users.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded() -> RevocationList {
        let list = RevocationList::new();
        list.mark_loaded();
        list
    }

    #[test]
    fn nothing_is_vouched_for_until_loaded() {
        let list = RevocationList::new();
        assert_eq!(list.check("s", "u", 0), Check::NotLoaded);
        list.revoke_session("s", now_ms() + 60_000);
        assert_eq!(list.generation(), 0, "inserts before the load keep it unloaded");
        list.mark_loaded();
        assert_eq!(list.check("s", "u", 0), Check::Revoked);
        assert_eq!(list.check("t", "u", 0), Check::Clean);
    }

    #[test]
    fn entries_matter_until_they_expire_and_then_go() {
        let list = loaded();
        let now = now_ms();
        let generation = list.generation();
        list.revoke_session("live", now + 60_000);
        assert!(list.is_revoked("live") && !list.is_revoked("other"));
        assert_ne!(list.generation(), generation, "readers learn that something changed");
        for i in 0..20_000 {
            list.revoke_session(&format!("old-{i}"), now.saturating_sub(2000));
        }
        assert!(!list.is_revoked("old-0"), "expired");
        assert!(list.len() <= 2 * SHARDS * MIN_SWEEP_INTERVAL, "expired entries are swept: {}", list.len());
        assert!(list.is_revoked("live"));
    }

    #[test]
    fn a_later_revocation_extends_an_entry() {
        let list = loaded();
        let now = now_ms();
        list.revoke_session("s", now.saturating_sub(5000));
        list.revoke_session("s", now + 60_000);
        assert!(list.is_revoked("s"));
        list.revoke_session("s", now.saturating_sub(5000));
        assert!(list.is_revoked("s"), "never shortened");
    }

    /// Cached tokens are checked again only when an entry changed: hearing
    /// a revocation again (pub/sub and the store that made it) does not
    /// move the generation; a new or extended one does.
    #[test]
    fn only_a_change_moves_the_generation() {
        let list = loaded();
        let until = now_ms() + 60_000;
        list.revoke_session("s1", until);
        let after_first = list.generation();
        list.revoke_session("s1", until);
        list.revoke_session("s1", until - 5_000);
        list.stale_before("u1", 1_000, until);
        let after_user = list.generation();
        assert_eq!(after_user, after_first + 1);
        list.stale_before("u1", 1_000, until);
        list.stale_before("u1", 500, until - 5_000);
        assert_eq!(list.generation(), after_user);
        list.revoke_session("s1", until + 5_000);
        list.stale_before("u1", 2_000, until);
        assert_eq!(list.generation(), after_user + 2);
    }

    #[test]
    fn stale_before_has_second_resolution_without_loops() {
        let list = loaded();
        // A role change at 1000.5 s: tokens of second 1000 (issued before or
        // after it) are stale; tokens issued after it get iat 1001.
        let before = now_ms() / 1000 * 1000 - 10_000 + 500;
        list.stale_before("u", before, now_ms() + 60_000);
        let second = before / 1000;
        assert_eq!(list.check("s", "u", second), Check::Stale);
        assert_eq!(list.check("s", "u", second - 1), Check::Stale);
        assert_eq!(list.issue_at("u", before + 1), second + 1, "issued just after: the next second");
        assert_eq!(list.check("s", "u", list.issue_at("u", before + 1)), Check::Clean);
        assert_eq!(list.check("s", "other", second), Check::Clean);
        // On an exact second, tokens of that second were issued at or after it.
        list.stale_before("v", 2_000_000, now_ms() + 60_000);
        assert_eq!(list.check("s", "v", 2000), Check::Clean);
        assert_eq!(list.check("s", "v", 1999), Check::Stale);
        assert_eq!(list.issue_at("v", 2_000_000), 2000);
        // A later change moves the instant forward, never back.
        list.stale_before("u", before - 5000, now_ms() + 60_000);
        assert_eq!(list.stale_before_ms("u"), Some(before));
    }

    #[test]
    fn entries_are_sixteen_bytes() {
        assert_eq!(size_of::<(Fingerprint, u32)>(), 16);
    }
}
