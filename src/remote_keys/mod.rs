//! Verification keys fetched from another issuer: a JWKS URL or OpenID
//! Connect discovery, refreshed in the background; looking a key up never waits.
//!
//! ```no_run
//! use std::time::Duration;
//! use tower_jwt_auth::remote_keys::{KeyLookup, RemoteKeys};
//!
//! # async fn run() -> Result<(), tower_jwt_auth::remote_keys::RemoteKeysError> {
//! let keys = RemoteKeys::discovery("https://login.example.com/realms/main")
//!     .cooldown(Duration::from_secs(30))
//!     .build()?;
//! // Either serve at once (lookups answer `NotReady` until keys arrive) or wait:
//! keys.wait_ready(Duration::from_secs(10)).await?;
//! match keys.lookup(Some("2026-11")) {
//!     KeyLookup::Found(key) => println!("verify with {:?}", key.algorithm()),
//!     KeyLookup::Unknown => println!("refuse: 401"),
//!     KeyLookup::NotReady => println!("503, Retry-After: {}", keys.retry_after().as_secs()),
//! }
//! # Ok(()) }
//! ```
//!
//! How it behaves:
//! - Keys are fetched by one background task: at start, again when the
//!   document's `Cache-Control: max-age` (kept within bounds) runs out, and
//!   when a token names an unknown `kid`. Two fetches are always at least
//!   the cooldown apart, whatever their cause, so a flood of random `kid`s
//!   costs at most one fetch per cooldown; a `kid` that a fetch proved
//!   absent causes no fetch for a while (negative cache).
//! - A failed fetch (refused, timeout, 5xx, too large, not a JWKS, no usable
//!   key) changes nothing: the keys held keep working until the last
//!   document's freshness plus `max_stale` has passed without a success.
//!   Only a successful fetch replaces them. Failures are retried once per
//!   cooldown.
//! - Keys that cannot be used are skipped, not fatal: symmetric (`oct`),
//!   `use: enc`, no `kid`, an algorithm not allowed, or no `alg` where the
//!   key type does not name one (RSA). Without `alg`, P-256 is ES256, P-384
//!   ES384 and Ed25519 EdDSA.
//! - The task stops when the last clone of [`RemoteKeys`] is dropped.

mod document;
mod error;
mod http;
mod refresh;
mod unknown;

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use arc_swap::ArcSwap;
use tokio::{
    sync::{Notify, watch},
    time::Instant,
};

pub use self::{
    error::{FetchError, RemoteKeysError},
    http::{BoxError, BoxFuture, JwksHttpClient, JwksRequest},
};
use self::{http::HyperClient, unknown::UnknownKids};
use crate::keys::{Algorithm, VerifyingKey};

/// Verification keys published by another issuer, fetched and refreshed in
/// the background (see the [module docs](self)). Cheap to clone; the
/// background task stops when the last clone is dropped.
#[derive(Clone)]
pub struct RemoteKeys {
    handle: Arc<Handle>,
}

/// What [`RemoteKeys::lookup`] found for a token's `kid`.
#[derive(Debug, Clone)]
pub enum KeyLookup {
    /// The key to verify the token with (its algorithm is the key's).
    Found(VerifyingKey),
    /// No key with this `kid`: refuse the token (401). A fetch was requested
    /// if the `kid` is new, and happens within one cooldown.
    Unknown,
    /// No keys yet (or none left after a long outage): answer 503 with
    /// `Retry-After` ([`RemoteKeys::retry_after`]).
    NotReady,
}

/// What an operator may want to know about remote keys.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RemoteKeysStatus {
    /// Keys are held: lookups can find them.
    pub ready: bool,
    /// The `kid`s held.
    pub kids: Vec<String>,
    /// Since when the keys held were fetched.
    pub keys_age: Option<Duration>,
    /// How long the keys held keep working if no fetch succeeds.
    pub usable_for: Option<Duration>,
    /// Why the latest failed fetch failed (kept after a later success).
    pub last_error: Option<FetchError>,
    /// Failed fetches since the last successful one.
    pub consecutive_failures: u32,
    /// Fetches attempted (each a JWKS, preceded by the discovery document when needed).
    pub fetches: u64,
    /// Fetches that failed.
    pub failed_fetches: u64,
    /// The JWKS URL (for discovery: once learned).
    pub jwks_uri: Option<String>,
}

/// Builds [`RemoteKeys`]; from [`RemoteKeys::jwks_url`] or [`RemoteKeys::discovery`].
///
/// | setting | default |
/// |---|---|
/// | [`cooldown`](Self::cooldown) | 30 s |
/// | [`max_stale`](Self::max_stale) | 24 h |
/// | [`refresh_bounds`](Self::refresh_bounds) | 60 s ..= 1 h, 5 min without `Cache-Control` |
/// | [`fetch_timeout`](Self::fetch_timeout) | 5 s |
/// | [`max_body_bytes`](Self::max_body_bytes) | 256 KiB |
/// | [`unknown_kid_ttl`](Self::unknown_kid_ttl) | 5 min |
/// | [`algorithms`](Self::algorithms) | every asymmetric one (RS*, PS*, ES256, ES384, EdDSA) |
/// | [`allow_http`](Self::allow_http) | false (plain `http://` only to loopback) |
/// | [`http_client`](Self::http_client) | hyper + rustls, system roots |
#[must_use]
pub struct RemoteKeysBuilder {
    source: SourceSpec,
    settings: Settings,
    client: Option<Arc<dyn JwksHttpClient>>,
}

enum SourceSpec {
    Jwks(String),
    Discovery(String),
}

/// Where the keys come from, checked.
pub(crate) enum Source {
    Jwks(::http::Uri),
    Discovery { issuer: String, url: ::http::Uri },
}

/// The settings, defaults in [`Settings::default`] (the table on the builder).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) cooldown: Duration,
    pub(crate) max_stale: Duration,
    pub(crate) min_refresh: Duration,
    pub(crate) max_refresh: Duration,
    pub(crate) default_refresh: Duration,
    pub(crate) fetch_timeout: Duration,
    pub(crate) max_body_bytes: usize,
    pub(crate) unknown_kid_ttl: Duration,
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) allow_http: bool,
}

impl Default for Settings {
    fn default() -> Self {
        use Algorithm::*;
        Self {
            cooldown: Duration::from_secs(30),
            max_stale: Duration::from_secs(24 * 3600),
            min_refresh: Duration::from_secs(60),
            max_refresh: Duration::from_secs(3600),
            default_refresh: Duration::from_secs(300),
            fetch_timeout: Duration::from_secs(5),
            max_body_bytes: 256 * 1024,
            unknown_kid_ttl: Duration::from_secs(300),
            algorithms: vec![RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA],
            allow_http: false,
        }
    }
}

/// The least cooldown accepted (a lower one would let a failing provider
/// be retried in a tight loop).
const MIN_COOLDOWN: Duration = Duration::from_millis(100);

impl RemoteKeys {
    /// Keys from a JWKS document at `url` (`https://`, or `http://` to a
    /// loopback host or with [`allow_http`](RemoteKeysBuilder::allow_http)).
    pub fn jwks_url(url: impl Into<String>) -> RemoteKeysBuilder {
        RemoteKeysBuilder::new(SourceSpec::Jwks(url.into()))
    }

    /// Keys from the `jwks_uri` of the OpenID Connect discovery document at
    /// `{issuer}/.well-known/openid-configuration`; the document's `issuer`
    /// must be exactly `issuer`, or the fetch fails.
    pub fn discovery(issuer: impl Into<String>) -> RemoteKeysBuilder {
        RemoteKeysBuilder::new(SourceSpec::Discovery(issuer.into()))
    }

    /// The key for a token's `kid`. Never waits: one atomic load of the keys
    /// held and a map lookup; a miss only records the `kid` and wakes the
    /// background task. A token without `kid` gets the only key held, if
    /// exactly one is.
    pub fn lookup(&self, kid: Option<&str>) -> KeyLookup {
        let shared = &self.handle.shared;
        let held = shared.keys.load();
        if held.by_kid.is_empty() {
            return KeyLookup::NotReady;
        }
        let Some(kid) = kid else {
            return held.sole().map_or(KeyLookup::Unknown, |key| KeyLookup::Found(key.clone()));
        };
        if let Some(key) = held.by_kid.get(kid) {
            return KeyLookup::Found(key.clone());
        }
        drop(held);
        if shared.unknown.miss(kid, Instant::now()) {
            shared.wake.notify_one();
        }
        KeyLookup::Unknown
    }

    /// The issuer given to [`discovery`](Self::discovery) (the discovery
    /// document must name exactly it); `None` for a plain JWKS URL.
    pub fn issuer(&self) -> Option<String> {
        match &self.handle.shared.source {
            Source::Discovery { issuer, .. } => Some(issuer.clone()),
            Source::Jwks(_) => None,
        }
    }

    /// Whether keys are held.
    pub fn is_ready(&self) -> bool {
        !self.handle.shared.keys.load().by_kid.is_empty()
    }

    /// Waits until keys are held, at most `deadline` (for a service that
    /// should not start serving without them).
    pub async fn wait_ready(&self, deadline: Duration) -> Result<(), RemoteKeysError> {
        let mut ready = self.handle.shared.ready.subscribe();
        match tokio::time::timeout(deadline, ready.wait_for(|ready| *ready)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(RemoteKeysError::NotReady { waited: deadline, last_error: self.status().last_error }),
        }
    }

    /// What `Retry-After` to send while [`KeyLookup::NotReady`]: the
    /// cooldown in whole seconds (at least 1), as a fetch is retried at
    /// least that often.
    pub fn retry_after(&self) -> Duration {
        let cooldown = self.handle.shared.settings.cooldown;
        Duration::from_secs(cooldown.as_secs() + u64::from(cooldown.subsec_nanos() > 0)).max(Duration::from_secs(1))
    }

    /// The state of the keys and of the fetches, for health checks and logs.
    pub fn status(&self) -> RemoteKeysStatus {
        let shared = &self.handle.shared;
        let held = shared.keys.load();
        let mut kids: Vec<String> = held.by_kid.keys().map(|kid| kid.to_string()).collect();
        kids.sort_unstable();
        let fetches = shared.fetches.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        let now = Instant::now();
        RemoteKeysStatus {
            ready: !kids.is_empty(),
            kids,
            keys_age: fetches.fetched_at.map(|at| now.saturating_duration_since(at)),
            usable_for: fetches.usable_until.map(|until| until.saturating_duration_since(now)),
            last_error: fetches.last_error,
            consecutive_failures: fetches.consecutive_failures,
            fetches: fetches.attempts,
            failed_fetches: fetches.failures,
            jwks_uri: fetches.jwks_uri,
        }
    }
}

impl fmt::Debug for RemoteKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.handle.shared.source {
            Source::Jwks(url) | Source::Discovery { url, .. } => url,
        };
        f.debug_struct("RemoteKeys").field("source", source).field("ready", &self.is_ready()).finish_non_exhaustive()
    }
}

/// The clones' common part: dropping it stops the background task.
struct Handle {
    shared: Arc<Shared>,
    task: tokio::task::AbortHandle,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What lookups and the background task share.
pub(crate) struct Shared {
    /// The keys held, swapped whole by a successful fetch.
    keys: ArcSwap<HeldKeys>,
    unknown: UnknownKids,
    /// Wakes the background task (a miss asked for a fetch).
    wake: Notify,
    /// Whether keys are held, for `wait_ready`.
    ready: watch::Sender<bool>,
    /// Fetch bookkeeping for `status` (never locked by lookups).
    fetches: Mutex<FetchRecord>,
    settings: Settings,
    source: Source,
    client: Arc<dyn JwksHttpClient>,
}

/// One successful document's keys, by `kid`; empty: none held.
#[derive(Default)]
struct HeldKeys {
    by_kid: HashMap<Box<str>, VerifyingKey, foldhash::fast::RandomState>,
}

impl HeldKeys {
    fn new(keys: Vec<VerifyingKey>) -> Self {
        Self { by_kid: keys.into_iter().map(|key| (key.kid().into(), key)).collect() }
    }

    fn sole(&self) -> Option<&VerifyingKey> {
        let mut keys = self.by_kid.values();
        keys.next().filter(|_| keys.next().is_none())
    }
}

/// Fetch history, for [`RemoteKeysStatus`].
#[derive(Debug, Clone, Default)]
struct FetchRecord {
    fetched_at: Option<Instant>,
    usable_until: Option<Instant>,
    last_error: Option<FetchError>,
    consecutive_failures: u32,
    attempts: u64,
    failures: u64,
    jwks_uri: Option<String>,
}

impl RemoteKeysBuilder {
    fn new(source: SourceSpec) -> Self {
        Self { source, settings: Settings::default(), client: None }
    }

    /// The least time between two fetches, whatever their cause (start,
    /// refresh, unknown `kid`, retry after a failure); at least 100 ms.
    /// Default 30 s.
    pub fn cooldown(mut self, cooldown: Duration) -> Self {
        self.settings.cooldown = cooldown.max(MIN_COOLDOWN);
        self
    }

    /// How long keys keep working after their document's freshness ran out
    /// while no fetch succeeds (the provider is down or answers errors);
    /// then lookups answer `NotReady` until a fetch succeeds. Default 24 h.
    pub fn max_stale(mut self, max_stale: Duration) -> Self {
        self.settings.max_stale = max_stale;
        self
    }

    /// Bounds on how long a document is fresh: its `Cache-Control: max-age`
    /// (less `Age`) is kept within `min..=max` (`no-cache`/`no-store`: `min`);
    /// a document without either is fresh for `default` (also kept within
    /// them). The keys are refetched in the background when it runs out.
    /// Default 60 s ..= 1 h, 5 min.
    pub fn refresh_bounds(mut self, min: Duration, max: Duration, default: Duration) -> Self {
        self.settings.min_refresh = min;
        self.settings.max_refresh = max.max(min);
        self.settings.default_refresh = default;
        self
    }

    /// The most one fetch may take, connection and whole body included.
    /// Default 5 s.
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.settings.fetch_timeout = timeout;
        self
    }

    /// A longer document is refused (the fetch fails). Default 256 KiB.
    pub fn max_body_bytes(mut self, max: usize) -> Self {
        self.settings.max_body_bytes = max;
        self
    }

    /// How long a `kid` that a fetch proved absent causes no further fetch.
    /// Default 5 min.
    pub fn unknown_kid_ttl(mut self, ttl: Duration) -> Self {
        self.settings.unknown_kid_ttl = ttl;
        self
    }

    /// Only keys of these algorithms are used (others are skipped); HMAC
    /// algorithms are ignored (a published secret is no secret).
    /// Default: every asymmetric algorithm.
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.settings.algorithms =
            algorithms.into_iter().filter(|alg| alg.family() != jsonwebtoken::AlgorithmFamily::Hmac).collect();
        self
    }

    /// Accepts plain `http://` URLs to any host, not only loopback ones (for
    /// a provider reached over a private network). Anyone on the path could
    /// then substitute their own keys. Default false.
    pub fn allow_http(mut self, allow: bool) -> Self {
        self.settings.allow_http = allow;
        self
    }

    /// Fetches with this client instead of the default one (hyper + rustls
    /// with the system's root certificates, no proxy, no redirects).
    pub fn http_client(mut self, client: impl JwksHttpClient) -> Self {
        self.client = Some(Arc::new(client));
        self
    }

    /// Checks the URL and starts the background task on the current tokio
    /// runtime, which fetches at once. It does not wait for keys: see
    /// [`RemoteKeys::wait_ready`].
    pub fn build(self) -> Result<RemoteKeys, RemoteKeysError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| RemoteKeysError::NoRuntime)?;
        let allow_http = self.settings.allow_http;
        let invalid = |url: &str, why| RemoteKeysError::InvalidUrl { url: url.to_owned(), why };
        let source = match self.source {
            SourceSpec::Jwks(url) => Source::Jwks(checked_url(&url, allow_http).map_err(|why| invalid(&url, why))?),
            SourceSpec::Discovery(issuer) => {
                let at = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
                let url = checked_url(&at, allow_http).map_err(|why| invalid(&issuer, why))?;
                Source::Discovery { issuer, url }
            }
        };
        let client = match self.client {
            Some(client) => client,
            None => {
                let needs_roots = match &source {
                    Source::Jwks(url) | Source::Discovery { url, .. } => url.scheme_str() == Some("https"),
                };
                let client = HyperClient::new(self.settings.fetch_timeout, needs_roots)
                    .map_err(|e| RemoteKeysError::TlsRoots(e.to_string()))?;
                Arc::new(client)
            }
        };
        let shared = Arc::new(Shared {
            keys: ArcSwap::from_pointee(HeldKeys::default()),
            unknown: UnknownKids::new(),
            wake: Notify::new(),
            ready: watch::Sender::new(false),
            fetches: Mutex::new(FetchRecord::default()),
            settings: self.settings,
            source,
            client,
        });
        let task = runtime.spawn(refresh::run(shared.clone())).abort_handle();
        Ok(RemoteKeys { handle: Arc::new(Handle { shared, task }) })
    }
}

/// An absolute `https://` URL, or `http://` to a loopback host (or any host
/// when allowed).
pub(crate) fn checked_url(url: &str, allow_http: bool) -> Result<::http::Uri, &'static str> {
    let uri: ::http::Uri = url.parse().map_err(|_| "not a URL")?;
    let Some(host) = uri.host() else { return Err("not an absolute URL") };
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if allow_http || is_loopback(host) => Ok(uri),
        Some("http") => Err("plain http:// is accepted only to a loopback host (or with allow_http)"),
        _ => Err("not an http(s) URL"),
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests;
