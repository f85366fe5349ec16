//! A bounded cache of verified access tokens, so a signature is checked once
//! per token rather than once per request.
//!
//! Keyed by the whole token string (only tokens whose signature verified get
//! in, so an attacker cannot fill it), each entry kept until the token's own
//! `exp`. Lock-free reads (papaya); revocation is checked after every hit, so
//! a cached token never outlives its session.

use std::sync::Arc;

use crate::{revocation::now_ms, token::VerifiedToken};

pub(crate) struct VerifiedCache {
    entries: papaya::HashMap<Box<str>, Entry>,
    capacity: usize,
}

struct Entry {
    token: Arc<VerifiedToken>,
    /// Unix seconds after which the entry is useless.
    until: u64,
}

impl VerifiedCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { entries: papaya::HashMap::new(), capacity }
    }

    pub(crate) fn get(&self, token: &str) -> Option<Arc<VerifiedToken>> {
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
        map.insert(token.into(), Entry { token: verified, until });
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
        assert!(cache.get("token-999").is_some(), "the newest entry is kept");
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
        assert!(cache.get("live").is_some() && cache.get("new").is_some());
        assert!(cache.get("old-0").is_none());
    }

    #[test]
    fn zero_capacity_disables_it() {
        let cache = VerifiedCache::new(0);
        cache.insert("t", verified(u64::MAX), u64::MAX);
        assert!(cache.get("t").is_none());
    }
}
