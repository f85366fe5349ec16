//! What this instance knows about revoked sessions: a lock-free set of session
//! ids, each kept only as long as one of its access tokens could still be valid.
//!
//! The hot path only reads it; stores feed it (locally at once, from other
//! instances through pub/sub, and reloaded in full after a reconnect).

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

/// Revoked session ids with the Unix millisecond until which each matters.
#[derive(Debug, Default)]
pub struct RevocationList {
    until_ms: papaya::HashMap<Box<str>, u64>,
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

    /// Records that `sid` is revoked until `until_ms` (Unix milliseconds).
    /// Also drops expired entries now and then, so the set stays small.
    pub fn insert(&self, sid: &str, until_ms: u64) {
        let map = self.until_ms.pin();
        map.update_or_insert(sid.into(), |old| (*old).max(until_ms), until_ms);
        // After the insert, so a reader that sees the new generation also
        // sees the entry.
        self.generation.fetch_add(1, Ordering::Release);
        if map.len().is_multiple_of(1024) {
            let now = now_ms();
            map.retain(|_, &until| until > now);
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
