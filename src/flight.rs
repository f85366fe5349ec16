//! Single-flight refreshes: the requests of this process presenting the same
//! refresh token share one store call and its result, and arrivals shortly
//! after a success reuse it without asking the store again.

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
const MAX_REUSE: Duration = Duration::from_secs(1);

/// Refreshes in progress or just done, by presented token.
pub(crate) struct Flights {
    state: Mutex<State>,
    /// How long a success is reused.
    reuse: Duration,
}

#[derive(Default)]
struct State {
    by_token: HashMap<RefreshToken, Arc<Flight>>,
    /// The same flights, oldest first, so expired ones leave in O(1) each.
    by_age: VecDeque<(RefreshToken, Arc<Flight>)>,
}

/// One store call for one presented token.
struct Flight {
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
            if state.by_token.get(&old).is_some_and(|current| Arc::ptr_eq(current, &flight)) {
                state.by_token.remove(&old);
            }
        }
        if let Some(flight) = state.by_token.get(token).filter(|flight| self.is_live(flight, now)) {
            return flight.clone();
        }
        let flight = Arc::new(Flight { started: now, outcome: OnceCell::new() });
        state.by_token.insert(token.clone(), flight.clone());
        state.by_age.push_back((token.clone(), flight.clone()));
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
        if state.by_token.get(self.token).is_some_and(|current| Arc::ptr_eq(current, self.flight)) {
            state.by_token.remove(self.token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(counter: u64) -> RefreshToken {
        RefreshToken { user_id: "u".into(), sid: "s".into(), counter }
    }

    #[tokio::test]
    async fn failures_are_not_reused_and_the_map_stays_small() {
        let flights = Flights::new(Duration::from_secs(10));
        let failed = flights.run(&token(0), || async { Err(AuthError::Unavailable) }).await;
        assert!(matches!(failed, Err(AuthError::Unavailable)));
        assert!(flights.lock().by_token.is_empty(), "a failure leaves at once");

        // Many different tokens: each join drops the flights past the window.
        let flights = Flights::new(Duration::ZERO);
        for counter in 0..10_000 {
            let _ = flights.run(&token(counter), || async { Err(AuthError::Unavailable) }).await;
        }
        assert!(flights.lock().by_age.len() <= 1);
    }
}
