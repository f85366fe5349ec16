//! The crate's metrics: one closed set of names and label values, a stable
//! interface like an error enum, recorded through the `metrics` facade.
//!
//! With the `metrics` feature (on by default) the crate records through the
//! [`metrics`](https://docs.rs/metrics) facade; the application installs the
//! exporter it wants (Prometheus, OpenTelemetry, statsd, …). Without the
//! feature every call below compiles to nothing.
//!
//! **Install the recorder before building the layer**: each
//! [`JwtAuth`](crate::JwtAuth) registers its series once, when it is built,
//! and keeps the handles, so a request only bumps an atomic counter (no
//! label formatting, no map lookup). Every series of the table is
//! registered at build time, so each is exported from the start, at zero.
//!
//! No label ever carries a user id, a session id or a token: the label
//! values are the closed sets below, so 10 000 users make exactly as many
//! series as one. Names follow Prometheus conventions (`_total` for
//! counters, seconds for durations); `metrics-exporter-prometheus` keeps them
//! as they are, with or without its recommended naming.
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `tower_jwt_auth_requests_total` | counter | `result`, `reason` | every request through the layer, once: `result="authenticated"` (claims handed to the handler; no `reason`), `"rejected"` (the layer answered the error itself) or `"guest"` (optional route: passed through without claims). `reason` on `rejected` and `guest`: `missing` (no credentials), `malformed` (a broken `Authorization` header), `invalid` (bad signature, issuer, audience, shape…), `expired` (also tokens made stale by a role change), `revoked`, `cross_site` (CSRF check; `rejected` only), `session_ended` (a cookie session whose refresh was refused), `unavailable` (store down during a refresh, revocations not loaded). |
//! | `tower_jwt_auth_refresh_total` | counter | `outcome` | every refresh (transparent or through the refresh endpoint), once: `rotated` (a new refresh token; also a catch-up after a failover), `replayed` (a just-rotated token presented again within the grace window, or joining a rotation in flight: the same successor), `reuse_revoked` (an older token reused: theft, the session is revoked), `not_found` (unknown, expired or revoked session), `invalid` (the token's tag does not verify), `denied` (`reload_claims` answered that the user may no longer sign in), `unavailable` (the store, the claims reload or signing failed; nothing changed). |
//! | `tower_jwt_auth_sessions_revoked_total` | counter | `cause` | sessions revoked, one per session: `logout`, `logout_all` (each session of a logout everywhere), `logout_others`, `revoke` (one session by id, or by `reload_claims`), `cap` (the oldest beyond the per-user cap, at login), `theft` (refresh-token reuse); and `bump`, once per [`invalidate_access_tokens`](crate::JwtAuth::invalidate_access_tokens) call (the user's older access tokens made stale; sessions stay). |
//! | `tower_jwt_auth_store_calls_total` | counter | `operation`, `result` | session store calls: `operation` = `create`, `rotate`, `list`, `revoke`, `revoke_all`, `reauthenticate`, `invalidate_tokens`; `result` = `ok` or `error`. |
//! | `tower_jwt_auth_store_call_duration_seconds` | histogram | `operation` | how long each store call took, failures included. |
//! | `tower_jwt_auth_revocation_list_entries` | gauge | `kind` | this instance's revocation list: `kind="session"` (revoked sessions), `"user"` (users whose older tokens are stale); expired entries count until swept. |
//! | `tower_jwt_auth_revocation_propagation_seconds` | histogram | — | from the instant a revocation was published (by any instance) to the instant this one applied it from pub/sub: the window in which another instance still accepts a revoked token. Clocks of different hosts add their skew; negative lags count as 0. |
//! | `tower_jwt_auth_jwks_fetches_total` | counter | `result` | fetches of remote keys ([`remote_keys`](crate::remote_keys)), `ok` or `error`. |
//! | `tower_jwt_auth_jwks_last_success_timestamp_seconds` | gauge | — | Unix time of the last successful fetch of remote keys (0 once they are dropped): the keys' age is `time() - tower_jwt_auth_jwks_last_success_timestamp_seconds`, computed at scrape time as Prometheus recommends, since a gauge holding the age would only be as fresh as its last update. |
//! | `tower_jwt_auth_events_dropped_total` | counter | `reason` | security events not delivered to the [`on_event`](crate::JwtAuthBuilder::on_event) hook: `queue_full` (the hook is slower than events arrive) or `hook_panicked`. |
//!
//! With Prometheus, name your buckets for the two histograms (they are
//! summaries otherwise); [`STORE_CALL_BUCKETS`] and [`PROPAGATION_BUCKETS`]
//! are sensible ones:
//!
//! ```
//! use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
//! use tower_jwt_auth::metrics::{PROPAGATION_BUCKETS, REVOCATION_PROPAGATION, STORE_CALL_BUCKETS, STORE_CALL_DURATION};
//!
//! let recorder = PrometheusBuilder::new()
//!     .set_buckets_for_metric(Matcher::Full(STORE_CALL_DURATION.into()), STORE_CALL_BUCKETS)?
//!     .set_buckets_for_metric(Matcher::Full(REVOCATION_PROPAGATION.into()), PROPAGATION_BUCKETS)?
//!     .build_recorder();
//! let handle = recorder.handle(); // `handle.render()` answers GET /metrics
//! metrics::set_global_recorder(recorder)?;
//! // Now build the JwtAuth.
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// Without the feature the label sets are only read by the no-op recorder.
#![cfg_attr(not(feature = "metrics"), allow(dead_code))]

/// Requests through the layer, by `result` (and `reason`).
pub const REQUESTS: &str = "tower_jwt_auth_requests_total";
/// Refreshes, by `outcome`.
pub const REFRESHES: &str = "tower_jwt_auth_refresh_total";
/// Sessions revoked, by `cause`.
pub const SESSIONS_REVOKED: &str = "tower_jwt_auth_sessions_revoked_total";
/// Session store calls, by `operation` and `result`.
pub const STORE_CALLS: &str = "tower_jwt_auth_store_calls_total";
/// Session store call durations in seconds, by `operation`.
pub const STORE_CALL_DURATION: &str = "tower_jwt_auth_store_call_duration_seconds";
/// Entries of the local revocation list, by `kind`.
pub const REVOCATION_ENTRIES: &str = "tower_jwt_auth_revocation_list_entries";
/// Revocation propagation lag in seconds (publish → applied here).
pub const REVOCATION_PROPAGATION: &str = "tower_jwt_auth_revocation_propagation_seconds";
/// Remote-key fetches, by `result`.
pub const JWKS_FETCHES: &str = "tower_jwt_auth_jwks_fetches_total";
/// Unix time of the last successful remote-key fetch.
pub const JWKS_LAST_SUCCESS: &str = "tower_jwt_auth_jwks_last_success_timestamp_seconds";
/// Security events the hook did not get, by `reason`.
pub const EVENTS_DROPPED: &str = "tower_jwt_auth_events_dropped_total";

/// Buckets (seconds) for [`STORE_CALL_DURATION`]: 100 µs to 2.5 s.
pub const STORE_CALL_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5];
/// Buckets (seconds) for [`REVOCATION_PROPAGATION`]: 100 µs to 5 s.
pub const PROPAGATION_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

/// Why a request was not authenticated (the `reason` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    Missing,
    Malformed,
    Invalid,
    Expired,
    Revoked,
    CrossSite,
    SessionEnded,
    Unavailable,
}

impl Reason {
    const ALL: [Self; 8] = [
        Self::Missing,
        Self::Malformed,
        Self::Invalid,
        Self::Expired,
        Self::Revoked,
        Self::CrossSite,
        Self::SessionEnded,
        Self::Unavailable,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Invalid => "invalid",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
            Self::CrossSite => "cross_site",
            Self::SessionEnded => "session_ended",
            Self::Unavailable => "unavailable",
        }
    }

    /// The reason of an error the layer refuses a credential with.
    pub(crate) fn of(error: &crate::AuthError) -> Self {
        use crate::AuthError;
        match error {
            AuthError::MissingCredentials => Self::Missing,
            AuthError::InvalidRequest(_) => Self::Malformed,
            AuthError::CrossSiteRequest(_) => Self::CrossSite,
            AuthError::Unavailable => Self::Unavailable,
            error if *error == AuthError::EXPIRED => Self::Expired,
            error if *error == AuthError::REVOKED => Self::Revoked,
            _ => Self::Invalid,
        }
    }

    /// Whether a request can pass through an optional route for this reason
    /// (malformed and cross-site requests are refused on every route).
    fn can_be_guest(self) -> bool {
        !matches!(self, Self::Malformed | Self::CrossSite)
    }
}

/// What the layer did with a request (the `result` label, with its reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RequestResult {
    Authenticated,
    Rejected(Reason),
    Guest(Reason),
}

impl RequestResult {
    const COUNT: usize = 1 + 2 * Reason::ALL.len();

    fn index(self) -> usize {
        match self {
            Self::Authenticated => 0,
            Self::Rejected(reason) => 1 + reason as usize,
            Self::Guest(reason) => 1 + Reason::ALL.len() + reason as usize,
        }
    }

    pub(crate) fn result(self) -> &'static str {
        match self {
            Self::Authenticated => "authenticated",
            Self::Rejected(_) => "rejected",
            Self::Guest(_) => "guest",
        }
    }

    pub(crate) fn reason(self) -> Option<Reason> {
        match self {
            Self::Authenticated => None,
            Self::Rejected(reason) | Self::Guest(reason) => Some(reason),
        }
    }
}

/// How a refresh ended (the `outcome` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RefreshOutcome {
    Rotated,
    Replayed,
    ReuseRevoked,
    NotFound,
    Invalid,
    Denied,
    Unavailable,
}

impl RefreshOutcome {
    const ALL: [Self; 7] = [
        Self::Rotated,
        Self::Replayed,
        Self::ReuseRevoked,
        Self::NotFound,
        Self::Invalid,
        Self::Denied,
        Self::Unavailable,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Rotated => "rotated",
            Self::Replayed => "replayed",
            Self::ReuseRevoked => "reuse_revoked",
            Self::NotFound => "not_found",
            Self::Invalid => "invalid",
            Self::Denied => "denied",
            Self::Unavailable => "unavailable",
        }
    }
}

/// Why sessions were revoked (the `cause` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cause {
    Logout,
    LogoutAll,
    LogoutOthers,
    Revoke,
    Cap,
    Theft,
    Bump,
}

impl Cause {
    const ALL: [Self; 7] =
        [Self::Logout, Self::LogoutAll, Self::LogoutOthers, Self::Revoke, Self::Cap, Self::Theft, Self::Bump];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::LogoutAll => "logout_all",
            Self::LogoutOthers => "logout_others",
            Self::Revoke => "revoke",
            Self::Cap => "cap",
            Self::Theft => "theft",
            Self::Bump => "bump",
        }
    }
}

/// A session store operation (the `operation` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Operation {
    Create,
    Rotate,
    List,
    Revoke,
    RevokeAll,
    Reauthenticate,
    InvalidateTokens,
}

impl Operation {
    const ALL: [Self; 7] = [
        Self::Create,
        Self::Rotate,
        Self::List,
        Self::Revoke,
        Self::RevokeAll,
        Self::Reauthenticate,
        Self::InvalidateTokens,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Rotate => "rotate",
            Self::List => "list",
            Self::Revoke => "revoke",
            Self::RevokeAll => "revoke_all",
            Self::Reauthenticate => "reauthenticate",
            Self::InvalidateTokens => "invalidate_tokens",
        }
    }
}

/// Why a security event did not reach the hook (the `reason` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dropped {
    QueueFull,
    HookPanicked,
}

impl Dropped {
    const ALL: [Self; 2] = [Self::QueueFull, Self::HookPanicked];

    fn as_str(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::HookPanicked => "hook_panicked",
        }
    }
}

#[cfg(feature = "metrics")]
mod enabled {
    use std::time::Duration;

    use metrics::{
        Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge,
        histogram,
    };

    use super::*;

    /// The handles of one layer, registered once at build time.
    pub(crate) struct Metrics {
        requests: [Counter; RequestResult::COUNT],
        refreshes: [Counter; RefreshOutcome::ALL.len()],
        revoked: [Counter; Cause::ALL.len()],
        dropped: [Counter; Dropped::ALL.len()],
    }

    /// The session store's handles.
    pub(crate) struct StoreMetrics {
        ok: [Counter; Operation::ALL.len()],
        failed: [Counter; Operation::ALL.len()],
        duration: [Histogram; Operation::ALL.len()],
    }

    /// The revocation list's handles.
    pub(crate) struct ListMetrics {
        sessions: Gauge,
        users: Gauge,
    }

    /// Descriptions and units, for exporters that print them.
    fn describe() {
        describe_counter!(REQUESTS, Unit::Count, "Requests through the JwtAuth layer, by result and reason.");
        describe_counter!(REFRESHES, Unit::Count, "Refresh-token presentations, by outcome.");
        describe_counter!(
            SESSIONS_REVOKED,
            Unit::Count,
            "Sessions revoked, by cause (bump: a user's tokens made stale)."
        );
        describe_counter!(STORE_CALLS, Unit::Count, "Session store calls, by operation and result.");
        describe_histogram!(STORE_CALL_DURATION, Unit::Seconds, "Session store call durations, by operation.");
        describe_gauge!(REVOCATION_ENTRIES, Unit::Count, "Entries of this instance's revocation list, by kind.");
        describe_histogram!(
            REVOCATION_PROPAGATION,
            Unit::Seconds,
            "Time from a revocation's publication to its application on this instance."
        );
        describe_counter!(JWKS_FETCHES, Unit::Count, "Remote key (JWKS) fetches, by result.");
        describe_gauge!(JWKS_LAST_SUCCESS, Unit::Seconds, "Unix time of the last successful remote key fetch.");
        describe_counter!(EVENTS_DROPPED, Unit::Count, "Security events not delivered to the hook, by reason.");
    }

    impl Metrics {
        pub(crate) fn new() -> Self {
            describe();
            let requests = std::array::from_fn(|i| {
                let result = [RequestResult::Authenticated]
                    .into_iter()
                    .chain(Reason::ALL.map(RequestResult::Rejected))
                    .chain(Reason::ALL.map(RequestResult::Guest))
                    .nth(i)
                    .expect("COUNT results");
                match result.reason() {
                    None => counter!(REQUESTS, "result" => result.result()),
                    Some(reason) if matches!(result, RequestResult::Guest(_)) && !reason.can_be_guest() => {
                        Counter::noop()
                    }
                    Some(reason) => counter!(REQUESTS, "result" => result.result(), "reason" => reason.as_str()),
                }
            });
            Self {
                requests,
                refreshes: RefreshOutcome::ALL.map(|outcome| counter!(REFRESHES, "outcome" => outcome.as_str())),
                revoked: Cause::ALL.map(|cause| counter!(SESSIONS_REVOKED, "cause" => cause.as_str())),
                dropped: Dropped::ALL.map(|reason| counter!(EVENTS_DROPPED, "reason" => reason.as_str())),
            }
        }

        #[inline]
        pub(crate) fn request(&self, result: RequestResult) {
            self.requests[result.index()].increment(1);
        }

        pub(crate) fn refresh(&self, outcome: RefreshOutcome) {
            self.refreshes[outcome as usize].increment(1);
        }

        pub(crate) fn revoked(&self, cause: Cause, sessions: usize) {
            self.revoked[cause as usize].increment(sessions as u64);
        }

        pub(crate) fn dropped_handle(&self, reason: Dropped) -> Counter {
            self.dropped[reason as usize].clone()
        }
    }

    impl StoreMetrics {
        pub(crate) fn new() -> Self {
            let calls = |result: &'static str| {
                Operation::ALL.map(|op| counter!(STORE_CALLS, "operation" => op.as_str(), "result" => result))
            };
            Self {
                ok: calls("ok"),
                failed: calls("error"),
                duration: Operation::ALL.map(|op| histogram!(STORE_CALL_DURATION, "operation" => op.as_str())),
            }
        }

        pub(crate) fn call(&self, operation: Operation, ok: bool, took: Duration) {
            let counters = if ok { &self.ok } else { &self.failed };
            counters[operation as usize].increment(1);
            self.duration[operation as usize].record(took);
        }
    }

    impl ListMetrics {
        pub(crate) fn new() -> Self {
            Self {
                sessions: gauge!(REVOCATION_ENTRIES, "kind" => "session"),
                users: gauge!(REVOCATION_ENTRIES, "kind" => "user"),
            }
        }

        pub(crate) fn entries(&self, sessions: usize, users: usize) {
            self.sessions.set(sessions as f64);
            self.users.set(users as f64);
        }
    }

    /// A revocation heard from pub/sub `lag` after it was published.
    #[cfg(feature = "redis")]
    pub(crate) fn propagated(lag: Duration) {
        histogram!(REVOCATION_PROPAGATION).record(lag);
    }

    /// A remote-key fetch; `at_unix_secs` of a success.
    #[cfg(feature = "remote-keys")]
    pub(crate) fn jwks_fetched(success_at_unix_secs: Option<f64>) {
        counter!(JWKS_FETCHES, "result" => if success_at_unix_secs.is_some() { "ok" } else { "error" }).increment(1);
        if let Some(at) = success_at_unix_secs {
            gauge!(JWKS_LAST_SUCCESS).set(at);
        }
    }

    /// The remote keys were dropped.
    #[cfg(feature = "remote-keys")]
    pub(crate) fn jwks_dropped() {
        gauge!(JWKS_LAST_SUCCESS).set(0.0);
    }

    /// A security event not delivered.
    pub(crate) type DroppedCounter = Counter;

    pub(crate) fn count_drop(counter: &DroppedCounter) {
        counter.increment(1);
    }
}

#[cfg(not(feature = "metrics"))]
mod disabled {
    use std::time::Duration;

    use super::*;

    /// Without the feature: nothing is recorded.
    pub(crate) struct Metrics;

    pub(crate) struct StoreMetrics;

    pub(crate) struct ListMetrics;

    impl Metrics {
        pub(crate) fn new() -> Self {
            Self
        }

        #[inline(always)]
        pub(crate) fn request(&self, _: RequestResult) {}

        #[inline(always)]
        pub(crate) fn refresh(&self, _: RefreshOutcome) {}

        #[inline(always)]
        pub(crate) fn revoked(&self, _: Cause, _: usize) {}

        pub(crate) fn dropped_handle(&self, _: Dropped) -> DroppedCounter {}
    }

    impl StoreMetrics {
        pub(crate) fn new() -> Self {
            Self
        }

        #[inline(always)]
        pub(crate) fn call(&self, _: Operation, _: bool, _: Duration) {}
    }

    impl ListMetrics {
        pub(crate) fn new() -> Self {
            Self
        }

        #[inline(always)]
        pub(crate) fn entries(&self, _: usize, _: usize) {}
    }

    #[inline(always)]
    pub(crate) fn propagated(_: Duration) {}

    #[inline(always)]
    pub(crate) fn jwks_fetched(_: Option<f64>) {}

    #[inline(always)]
    pub(crate) fn jwks_dropped() {}

    pub(crate) type DroppedCounter = ();

    #[inline(always)]
    pub(crate) fn count_drop(_: &DroppedCounter) {}
}

#[cfg(not(feature = "metrics"))]
pub(crate) use disabled::*;
#[cfg(feature = "metrics")]
pub(crate) use enabled::*;
