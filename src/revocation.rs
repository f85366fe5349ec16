//! What this instance knows about revoked sessions: a lock-free set of session
//! ids, each kept only as long as one of its access tokens could still be valid.
//!
//! The hot path only reads it; stores feed it (locally at once, from other
//! instances through pub/sub, and reloaded in full after a reconnect).

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

/// `(until, sid)`, ordered soonest first in a max-heap.
type Expiry = Reverse<(u64, Box<str>)>;

/// Revoked session ids with the Unix millisecond until which each matters.
#[derive(Debug, Default)]
pub struct RevocationList {
    until_ms: papaya::HashMap<Box<str>, u64>,
    /// `(until, sid)`, soonest first, to drop expired entries one by one
    /// (never `retain`, which papaya was seen to spin in under churn).
    expiries: Mutex<BinaryHeap<Expiry>>,
    /// Bumped after every insert: a token found clean at generation `g` is
    /// still clean while the generation is `g`, without a lookup.
    generation: AtomicU64,
}

impl RevocationList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `sid` has been revoked (and its tokens may still be around).
    pub fn is_revoked(&self, sid: &str) -> bool {
        self.until_ms.pin().get(sid).is_some_and(|&until| until > now_ms())
    }

    /// Records that `sid` is revoked until `until_ms` (Unix milliseconds),
    /// and drops the entries that have expired, so the set stays small.
    pub fn insert(&self, sid: &str, until_ms: u64) {
        let map = self.until_ms.pin();
        let previous = map.get(sid).copied();
        map.update_or_insert(sid.into(), |old| (*old).max(until_ms), until_ms);
        // After the insert, so a reader that sees the new generation also
        // sees the entry.
        self.generation.fetch_add(1, Ordering::Release);
        let now = now_ms();
        let mut expiries = self.expiries.lock().unwrap_or_else(PoisonError::into_inner);
        // One heap entry per extension, not per repeat (a reload after each
        // reconnect re-inserts every known revocation).
        if previous.is_none_or(|previous| previous < until_ms) {
            expiries.push(Reverse((until_ms, sid.into())));
        }
        while expiries.peek().is_some_and(|Reverse((until, _))| *until <= now) {
            let Some(Reverse((_, expired))) = expiries.pop() else { break };
            // Unless a later revocation of the same session extended it.
            map.remove_if(&*expired, |_, &until| until <= now).ok();
        }
    }

    /// Changes whenever a session is revoked (see [`RevocationList::insert`]).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Number of entries (expired ones included until purged).
    pub fn len(&self) -> usize {
        self.until_ms.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The current time in Unix milliseconds.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The current time in Unix seconds from the kernel's coarse clock (a few
/// milliseconds stale, about 2 ns instead of 30 here): for `exp` checks on
/// cache hits, which have one-second resolution anyway.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn coarse_now_secs() -> u64 {
    rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse).tv_sec.max(0) as u64
}

/// The current time in Unix seconds.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn coarse_now_secs() -> u64 {
    now_ms() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_matter_until_they_expire_and_then_go() {
        let list = RevocationList::new();
        let now = now_ms();
        let generation = list.generation();
        list.insert("live", now + 60_000);
        assert!(list.is_revoked("live") && !list.is_revoked("other"));
        assert_ne!(list.generation(), generation, "readers learn that something changed");
        for i in 0..10_000 {
            list.insert(&format!("old-{i}"), now.saturating_sub(1));
        }
        assert!(!list.is_revoked("old-0"), "expired");
        assert!(list.len() <= 2, "expired entries are dropped as new ones arrive: {}", list.len());
        assert!(list.is_revoked("live"));
    }

    #[test]
    fn repeats_add_no_heap_entries() {
        let list = RevocationList::new();
        let until = now_ms() + 60_000;
        for _ in 0..100 {
            list.insert("s", until);
        }
        assert_eq!(list.expiries.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_later_revocation_extends_an_entry() {
        let list = RevocationList::new();
        let now = now_ms();
        list.insert("s", now.saturating_sub(1));
        list.insert("s", now + 60_000);
        list.insert("next", now + 60_000);
        assert!(list.is_revoked("s"), "the expired first insert does not remove the extended entry");
    }
}
