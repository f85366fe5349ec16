//! The `kid`s asked for but not held: which ones wait for a fetch, and the
//! negative cache of those a later fetch proved absent (bounded in size).

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

// The runtime's clock, so that paused time in a user's tests applies.
use tokio::time::Instant;

/// At most this many `kid`s are remembered; past it a miss still requests a
/// fetch (the cooldown bounds those), it is just not negatively cached.
const MAX_REMEMBERED: usize = 1024;
/// Longer `kid`s are never remembered (no memory for an attacker's megabyte).
const MAX_KID_LEN: usize = 256;

enum State {
    /// Asked for since `since`; no fetch has started since then.
    Wanted { since: Instant },
    /// A fetch that started after it was asked for did not hold it: misses
    /// request no fetch until `until`.
    Absent { until: Instant },
}

/// The unknown `kid`s and the flag the background task reads.
pub(super) struct UnknownKids {
    kids: papaya::HashMap<Box<str>, State>,
    /// A miss asked for a fetch that has not started yet.
    refetch: AtomicBool,
}

impl UnknownKids {
    pub(super) fn new() -> Self {
        Self { kids: papaya::HashMap::new(), refetch: AtomicBool::new(false) }
    }

    /// Records a miss; true when it asks for a fetch (the caller then wakes
    /// the task). No fetch for a `kid` already waiting or proved absent.
    pub(super) fn miss(&self, kid: &str, now: Instant) -> bool {
        let kids = self.kids.pin();
        match kids.get(kid) {
            Some(State::Wanted { .. }) => return false,
            Some(State::Absent { until }) if *until > now => return false,
            _ => {}
        }
        if kid.len() <= MAX_KID_LEN && kids.len() < MAX_REMEMBERED {
            kids.insert(kid.into(), State::Wanted { since: now });
        }
        self.refetch.store(true, Ordering::Release);
        true
    }

    /// Whether a miss asked for a fetch not yet started.
    pub(super) fn refetch_wanted(&self) -> bool {
        self.refetch.load(Ordering::Acquire)
    }

    /// A fetch starts: it answers every request made so far.
    pub(super) fn fetch_started(&self) {
        self.refetch.store(false, Ordering::Release);
    }

    /// A fetch that started at `started` succeeded with the keys `held`:
    /// the `kid`s asked for before it and still missing become absent for
    /// `ttl`; found and expired ones are forgotten.
    pub(super) fn fetched(&self, started: Instant, held: impl Fn(&str) -> bool, ttl: Duration) {
        let now = Instant::now();
        let kids = self.kids.pin();
        // Removed one key at a time: papaya's `retain` was seen to spin
        // forever under concurrent inserts (see `bounded_map`), and
        // requests insert here while this runs.
        let forgotten: Vec<Box<str>> = kids
            .iter()
            .filter(|(kid, state)| held(kid) || matches!(state, State::Absent { until } if *until <= now))
            .map(|(kid, _)| kid.clone())
            .collect();
        for kid in forgotten {
            kids.remove(&kid);
        }
        let proved_absent: Vec<Box<str>> = kids
            .iter()
            .filter(|(_, state)| matches!(state, State::Wanted { since } if *since <= started))
            .map(|(kid, _)| kid.clone())
            .collect();
        for kid in proved_absent {
            kids.insert(kid, State::Absent { until: now + ttl });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn a_kid_asks_once_then_is_negatively_cached() {
        let unknown = UnknownKids::new();
        let t0 = Instant::now();
        assert!(unknown.miss("a", t0));
        assert!(!unknown.miss("a", t0), "already waiting for a fetch");
        assert!(unknown.refetch_wanted());
        unknown.fetch_started();
        let started = Instant::now();
        assert!(!unknown.refetch_wanted());
        let later = started + Duration::from_millis(1);
        assert!(unknown.miss("b", later), "asked after the fetch started");
        unknown.fetched(started, |_| false, TTL);
        assert!(!unknown.miss("a", later), "proved absent");
        assert!(!unknown.miss("b", later), "still waiting for the next fetch");
        assert!(unknown.miss("a", later + TTL * 2), "the negative entry expired");
    }

    #[test]
    fn found_kids_are_forgotten() {
        let unknown = UnknownKids::new();
        let t0 = Instant::now();
        assert!(unknown.miss("a", t0));
        unknown.fetched(Instant::now(), |kid| kid == "a", TTL);
        assert!(unknown.miss("a", Instant::now()), "forgotten: a miss asks again (e.g. after a rotation away)");
    }

    #[test]
    fn memory_is_bounded() {
        let unknown = UnknownKids::new();
        let now = Instant::now();
        for i in 0..MAX_REMEMBERED * 3 {
            unknown.miss(&format!("kid-{i}"), now);
        }
        assert!(unknown.miss(&"x".repeat(MAX_KID_LEN + 1), now));
        assert_eq!(unknown.kids.len(), MAX_REMEMBERED);
    }
}
