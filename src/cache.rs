//! A bounded cache of verified access tokens, so a signature is checked once
//! per token rather than once per request.
//!
//! Keyed by the whole token (only tokens whose signature verified get in, so
//! an attacker cannot fill it), each entry kept until the token's own `exp`.
//! Lock-free reads (papaya); revocation is checked after every hit, so a
//! cached token never outlives its session.

use std::{
    hash::{BuildHasher, Hasher},
    sync::Arc,
};

use foldhash::fast::{FoldHasher, RandomState};

use crate::{revocation::now_ms, token::VerifiedToken};

pub(crate) struct VerifiedCache {
    entries: papaya::HashMap<Box<[u8]>, Entry, TailHash>,
    capacity: usize,
}

/// Hashes a token's length and last 32 bytes (the end of its signature)
/// with foldhash: SipHash over a whole 300–700 byte token would cost more
/// than the rest of a hit. Only tokens whose signature verified get in and nobody chooses
/// signature bytes, so entries cannot be steered into one bucket; lookups
/// still compare whole tokens.
#[derive(Default)]
struct TailHash(RandomState);

impl BuildHasher for TailHash {
    type Hasher = TailHasher;

    fn build_hasher(&self) -> TailHasher {
        TailHasher(self.0.build_hasher())
    }
}

struct TailHasher(FoldHasher<'static>);

impl Hasher for TailHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.write_usize(bytes.len());
        self.0.write(&bytes[bytes.len().saturating_sub(32)..]);
    }

    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

struct Entry {
    token: Arc<VerifiedToken>,
    /// Unix seconds after which the entry is useless.
    until: u64,
}

impl VerifiedCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { entries: papaya::HashMap::with_hasher(TailHash::default()), capacity }
    }

    pub(crate) fn get(&self, token: &[u8]) -> Option<Arc<VerifiedToken>> {
        self.entries.pin().get(token).map(|entry| entry.token.clone())
    }

    /// Inserts unless disabled; when full, first drops expired entries, then,
    /// if still full, an arbitrary eighth of the entries.
    pub(crate) fn insert(&self, token: &str, verified: Arc<VerifiedToken>, until: u64) {
        if self.capacity == 0 {
            return;
        }
        let map = self.entries.pin();
        if map.len() >= self.capacity {
            let now = now_ms() / 1000;
            map.retain(|_, entry| entry.until >= now);
            if map.len() >= self.capacity {
                let mut budget = self.capacity.div_ceil(8);
                map.retain(|_, _| {
                    budget = budget.saturating_sub(1);
                    budget == 0
                });
            }
        }
        map.insert(token.as_bytes().into(), Entry { token: verified, until });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::RegisteredClaims;

    fn verified(exp: u64) -> Arc<VerifiedToken> {
        let claims =
            RegisteredClaims { sub: "u".into(), sid: "s".into(), iat: 0, exp, jti: "j".into(), nbf: None, iss: None };
        Arc::new(VerifiedToken::for_tests(claims))
    }

    #[test]
    fn stays_within_capacity() {
        let cache = VerifiedCache::new(64);
        let far = now_ms() / 1000 + 3600;
        for i in 0..1000 {
            cache.insert(&format!("token-{i}"), verified(far), far);
            assert!(cache.len() <= 64, "len {} after {i}", cache.len());
        }
        assert!(cache.get(b"token-999").is_some(), "the newest entry is kept");
    }

    #[test]
    fn expired_entries_go_first() {
        let cache = VerifiedCache::new(4);
        let far = now_ms() / 1000 + 3600;
        for i in 0..3 {
            cache.insert(&format!("old-{i}"), verified(1), 1);
        }
        cache.insert("live", verified(far), far);
        cache.insert("new", verified(far), far);
        assert!(cache.get(b"live").is_some() && cache.get(b"new").is_some());
        assert!(cache.get(b"old-0").is_none());
    }

    #[test]
    fn zero_capacity_disables_it() {
        let cache = VerifiedCache::new(0);
        cache.insert("t", verified(u64::MAX), u64::MAX);
        assert!(cache.get(b"t").is_none());
    }
}
