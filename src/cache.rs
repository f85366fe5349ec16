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

use crate::{bounded_map::BoundedMap, token::VerifiedToken};

/// Inserts are cache misses, which verify a signature anyway.
pub(crate) struct VerifiedCache(BoundedMap<Arc<[u8]>, Arc<VerifiedToken>, TailHash>);

/// Hashes a token's length and last 16 bytes (the end of its signature,
/// 96 random bits in base64url) with foldhash: SipHash over a whole 300–700
/// byte token would cost more than the rest of a hit. Only tokens whose
/// signature verified get in and nobody chooses signature bytes, so entries
/// cannot be steered into one bucket; lookups still compare whole tokens.
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
        let mut tail = [0; 16];
        let n = bytes.len().min(16);
        tail[16 - n..].copy_from_slice(&bytes[bytes.len() - n..]);
        let [a, b] = [&tail[..8], &tail[8..]].map(|half| u64::from_le_bytes(half.try_into().expect("8 bytes")));
        self.0.write_u64(a ^ bytes.len() as u64);
        self.0.write_u64(b);
    }

    // The length prefix `[u8]` hashes first: `write` hashes the length itself.
    fn write_usize(&mut self, _: usize) {}

    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

impl VerifiedCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self(BoundedMap::with_hasher(capacity, TailHash::default()))
    }

    #[inline]
    pub(crate) fn get(&self, token: &[u8]) -> Option<Arc<VerifiedToken>> {
        self.0.get(token)
    }

    /// Inserts unless disabled, evicting the oldest entries beyond capacity.
    /// Entries only ever leave by eviction: tokens share one lifetime, so the
    /// oldest are also the first to expire (and a hit re-checks `exp`).
    pub(crate) fn insert(&self, token: &str, verified: Arc<VerifiedToken>) {
        self.0.insert(token.as_bytes().into(), verified);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::RegisteredClaims;

    fn verified(exp: u64) -> Arc<VerifiedToken> {
        let claims = RegisteredClaims {
            sub: "u".into(),
            sid: "s".into(),
            iat: 0,
            exp,
            jti: "j".into(),
            nbf: None,
            iss: None,
            auth_time: None,
        };
        Arc::new(VerifiedToken::for_tests(claims))
    }

    #[test]
    fn evicts_the_oldest_beyond_capacity() {
        let cache = VerifiedCache::new(64);
        for i in 0..1000 {
            cache.insert(&format!("token-{i}"), verified(u64::MAX));
            assert!(cache.len() <= 64, "len {} after {i}", cache.len());
        }
        assert!(cache.get(b"token-999").is_some() && cache.get(b"token-936").is_some(), "the newest are kept");
        assert!(cache.get(b"token-935").is_none(), "the oldest are gone");
        cache.insert("token-999", verified(u64::MAX));
        assert!(cache.get(b"token-936").is_some(), "a repeated insert evicts nothing");
    }

    /// Sustained churn, as on a server rotating sessions: papaya's `retain`
    /// once spun forever here (30–40k inserts at capacity 10k).
    #[test]
    fn sustains_churn() {
        let cache = VerifiedCache::new(10_000);
        let pad = "x".repeat(230);
        let started = std::time::Instant::now();
        for i in 0..100_000 {
            cache.insert(&format!("{pad}{i:020}"), verified(u64::MAX));
        }
        assert_eq!(cache.len(), 10_000);
        eprintln!("100k inserts in {:?}", started.elapsed());
    }

    #[test]
    fn zero_capacity_disables_it() {
        let cache = VerifiedCache::new(0);
        cache.insert("t", verified(u64::MAX));
        assert!(cache.get(b"t").is_none());
    }
}
