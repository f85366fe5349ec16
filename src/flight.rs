//! Single-flight refreshes: the requests of this process presenting the same
//! refresh token share one store call and its result, and arrivals shortly
//! after a success reuse it without asking the store again.
//!
//! Flights are keyed by session, not by token: once a newer token of the
//! session is presented, the older one's flight is gone, so a stale token
//! reaches the store (which calls it theft) instead of a reused success.

use std::{
    collections::{HashMap, VecDeque},
    future::Future,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use tokio::sync::OnceCell;

use crate::{error::AuthError, refresh_token::RefreshToken, session::Refreshed};

type Outcome = Result<Arc<Refreshed>, AuthError>;

/// The longest a success is reused; never longer than the grace window, in
/// which the store itself would answer a repeat with the same successor.
const MAX_REUSE: Duration = Duration::from_millis(500);

/// Refreshes in progress or just done, by session.
pub(crate) struct Flights {
    state: Mutex<State>,
    /// How long a success is reused.
    reuse: Duration,
}

/// `(user_id, sid)`.
type SessionKey = (String, String);

#[derive(Default)]
struct State {
    by_session: HashMap<SessionKey, Arc<Flight>>,
    /// The same flights, oldest first, so expired ones leave in O(1) each.
    by_age: VecDeque<(SessionKey, Arc<Flight>)>,
}

/// One store call for one presented token.
struct Flight {
    /// The presented counter.
    counter: u64,
    /// Taken before the store call, so reuse ends no later than the store's window.
    started: Instant,
    outcome: OnceCell<Outcome>,
}

impl Flights {
    pub(crate) fn new(grace: Duration) -> Self {
        Self { state: Mutex::default(), reuse: grace.min(MAX_REUSE) }
    }

    /// The outcome of `rotate` for `token`, shared with every concurrent
    /// caller presenting the same token (only one of them runs it).
    pub(crate) async fn run<F, Fut>(&self, token: &RefreshToken, rotate: F) -> Outcome
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Outcome>,
    {
        let flight = self.join(token);
        let _leave = Leave { flights: self, token, flight: &flight };
        flight.outcome.get_or_init(rotate).await.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The live flight for `token`, or a new one.
    fn join(&self, token: &RefreshToken) -> Arc<Flight> {
        let now = Instant::now();
        let mut state = self.lock();
        while state.by_age.front().is_some_and(|(_, flight)| flight.started + self.reuse <= now) {
            let Some((old, flight)) = state.by_age.pop_front() else { break };
            if state.by_session.get(&old).is_some_and(|current| Arc::ptr_eq(current, &flight)) {
                state.by_session.remove(&old);
            }
        }
        let key = (token.user_id.clone(), token.sid.clone());
        if let Some(flight) = state.by_session.get(&key).filter(|f| f.counter == token.counter && self.is_live(f, now))
        {
            return flight.clone();
        }
        let flight = Arc::new(Flight { counter: token.counter, started: now, outcome: OnceCell::new() });
        state.by_session.insert(key.clone(), flight.clone());
        state.by_age.push_back((key, flight.clone()));
        flight
    }

    /// Whether a request arriving `now` may join `flight`.
    fn is_live(&self, flight: &Flight, now: Instant) -> bool {
        match flight.outcome.get() {
            None => true,
            Some(Ok(_)) => now < flight.started + self.reuse,
            Some(Err(_)) => false,
        }
    }
}

/// Drops a failed or abandoned flight once its caller is done, so the next
/// presentation asks the store again (successes stay for their reuse window).
struct Leave<'a> {
    flights: &'a Flights,
    token: &'a RefreshToken,
    flight: &'a Arc<Flight>,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        if matches!(self.flight.outcome.get(), Some(Ok(_))) {
            return;
        }
        let mut state = self.flights.lock();
        let key = (self.token.user_id.clone(), self.token.sid.clone());
        if state.by_session.get(&key).is_some_and(|current| Arc::ptr_eq(current, self.flight)) {
            state.by_session.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(counter: u64) -> RefreshToken {
        RefreshToken { user_id: "u".into(), sid: format!("s{counter}"), counter }
    }

    #[tokio::test]
    async fn failures_are_not_reused_and_the_map_stays_small() {
        let flights = Flights::new(Duration::from_secs(10));
        let failed = flights.run(&token(0), || async { Err(AuthError::Unavailable) }).await;
        assert!(matches!(failed, Err(AuthError::Unavailable)));
        assert!(flights.lock().by_session.is_empty(), "a failure leaves at once");

        // Many different tokens: each join drops the flights past the window.
        let flights = Flights::new(Duration::ZERO);
        for counter in 0..10_000 {
            let _ = flights.run(&token(counter), || async { Err(AuthError::Unavailable) }).await;
        }
        assert!(flights.lock().by_age.len() <= 1);
    }

    #[tokio::test]
    async fn a_newer_token_of_the_session_ends_the_older_ones_flight() {
        let flights = Flights::new(Duration::from_secs(10));
        let t0 = RefreshToken { user_id: "u".into(), sid: "s".into(), counter: 0 };
        let t1 = RefreshToken { counter: 1, ..t0.clone() };
        let first = flights.join(&t0);
        assert!(Arc::ptr_eq(&first, &flights.join(&t0)), "racers share a flight");
        let newer = flights.join(&t1);
        assert!(!Arc::ptr_eq(&first, &newer));
        assert!(!Arc::ptr_eq(&first, &flights.join(&t0)), "the stale token goes to the store");
    }
}
