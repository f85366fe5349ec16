//! A concurrent map of bounded size that evicts in insertion order, for the
//! caches whose entries share one lifetime (so the oldest are also the first
//! to expire) and whose inserts are rare next to reads: verified access
//! tokens, and the gateway's upstream tokens. Reads are lock-free (papaya);
//! an insert queues its key behind a mutex and evicts past the capacity.

use std::{
    borrow::Borrow,
    collections::VecDeque,
    hash::{BuildHasher, Hash, RandomState},
    sync::{Mutex, PoisonError},
};

pub(crate) struct BoundedMap<K, V, S = RandomState> {
    entries: papaya::HashMap<K, V, S>,
    /// Keys in insertion order, the oldest evicted first. Touched by
    /// inserts only, never by reads.
    order: Mutex<VecDeque<K>>,
    capacity: usize,
}

impl<K: Hash + Eq + Clone, V: Clone, S: BuildHasher> BoundedMap<K, V, S> {
    /// Holds at most `capacity` entries (0: none, every insert is dropped).
    pub(crate) fn with_hasher(capacity: usize, hasher: S) -> Self {
        Self { entries: papaya::HashMap::with_hasher(hasher), order: Mutex::default(), capacity }
    }

    #[inline]
    pub(crate) fn get<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        self.entries.pin().get(key).cloned()
    }

    /// Inserts or replaces, evicting the oldest entries beyond capacity.
    pub(crate) fn insert(&self, key: K, value: V) {
        if self.capacity == 0 {
            return;
        }
        let map = self.entries.pin();
        if map.insert(key.clone(), value).is_some() {
            return; // a replacement, or a racing insert: the key is queued already
        }
        // Removal one key at a time: papaya's `retain` under this kind of
        // churn was seen to spin forever.
        let mut order = self.order.lock().unwrap_or_else(PoisonError::into_inner);
        order.push_back(key);
        while order.len() > self.capacity {
            if let Some(oldest) = order.pop_front() {
                map.remove(&oldest);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}
