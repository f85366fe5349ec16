//! [`JwtAuth`] and its builder: every setting a user may change, with the
//! secure defaults defined in one place ([`JwtAuthBuilder::new`]).

use std::{fmt, sync::Arc, time::Duration};

use axum::response::Response;
use cookie::SameSite;
use serde::Serialize;

use crate::{
    client_info::{ProxyHeader, TrustedProxies},
    cookies::{self, CookieConfig},
    csrf::{CsrfCheck, DoubleSubmit},
    error::AuthError,
    events::{Events, Hook, SecurityEvent},
    keys::{KeyError, KeySet, SigningKey, VerifyingKey},
    metrics::{Metrics, StoreMetrics},
    random,
    refresh_token::RefreshKey,
    revocation::RevocationList,
    session::{ClaimsReloader, Sessions},
    store::{MemoryStore, SessionPolicy, SessionStore},
    token::{Issuer, Verifier},
};

/// The configuration could not be turned into a [`JwtAuth`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No signing key was given.
    #[error("a signing key is required")]
    MissingSigningKey,
    /// Two verification keys share a `kid`.
    #[error("two keys share the kid {0:?}")]
    DuplicateKid(String),
    /// A key could not be built.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    Invalid(&'static str),
    /// A setting could not be read.
    #[error("invalid setting: {0}")]
    InvalidValue(String),
    /// A store that outlives the process (Redis) without an explicit
    /// refresh-token secret: every restart would log every user out.
    #[error(
        "a session store shared between processes needs `refresh_token_secret` (at least 32 bytes, the same on every \
         instance and across restarts): with a random one, every restart or second instance would silently log \
         every user out"
    )]
    MissingRefreshSecret,
}

pub(crate) type RejectionRenderer = Arc<dyn Fn(AuthError) -> Response + Send + Sync>;

/// Builds a [`JwtAuth`]. Start from [`JwtAuth::builder`]; every method has a
/// secure default (see [`JwtAuthBuilder::new`]).
///
/// A production setup: several instances sharing Redis, so they share the
/// refresh-token secret too (both from the environment, never from code).
///
/// ```no_run
/// use std::{env, time::Duration};
///
/// use tower_jwt_auth::{JwtAuth, SameSite, SigningKey, store::RedisStore};
///
/// # async fn build() -> Result<JwtAuth, Box<dyn std::error::Error>> {
/// let auth = JwtAuth::builder()
///     .signing_key(SigningKey::hs256("2026-11", env::var("JWT_SECRET")?.as_bytes())?)
///     .refresh_token_secret(env::var("REFRESH_SECRET")?)
///     .issuer("https://app.example")
///     .audience("app")
///     .access_ttl(Duration::from_secs(10 * 60))
///     .refresh_ttl(Duration::from_secs(7 * 24 * 3600))
///     .same_site(SameSite::Strict)
///     .store(RedisStore::connect("redis://127.0.0.1:6379").await?)
///     .build()?;
/// # Ok(auth) }
/// ```
#[must_use]
pub struct JwtAuthBuilder {
    signing_key: Option<SigningKey>,
    verifying_keys: Vec<VerifyingKey>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: Duration,
    access_ttl: Duration,
    idle_ttl: Duration,
    absolute_ttl: Duration,
    grace: Duration,
    max_sessions: Option<u32>,
    access_cookie: String,
    refresh_cookie: String,
    same_site: SameSite,
    secure_cookies: bool,
    realm: Option<String>,
    cache_capacity: usize,
    max_token_bytes: usize,
    refresh_secret: Option<Vec<u8>>,
    store: Option<Arc<dyn SessionStore>>,
    trusted_origins: Vec<String>,
    trusted_proxies: Vec<String>,
    proxy_header: ProxyHeader,
    csrf_cookie: Option<String>,
    on_rejection: Option<RejectionRenderer>,
    reload_claims: Option<ClaimsReloader>,
    unavailable_as_guest: bool,
    refresh_path: String,
    hooks: Vec<Hook>,
}

impl Default for JwtAuthBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl JwtAuthBuilder {
    /// The defaults, all in one place:
    ///
    /// | setting | default |
    /// |---|---|
    /// | access-token lifetime | 15 minutes |
    /// | refresh idle lifetime (sliding) | 14 days |
    /// | refresh absolute lifetime | 30 days |
    /// | grace window for a just-rotated refresh token | 10 seconds |
    /// | clock leeway for `exp`/`nbf` | 5 seconds |
    /// | sessions per user | 50 (the oldest is revoked beyond it) |
    /// | cookies | `__Host-access`, `__Host-refresh`; `HttpOnly; Secure; Path=/; SameSite=Lax` |
    /// | CSRF | `Sec-Fetch-Site`/`Origin` check for cookie-authenticated unsafe requests; no double-submit token |
    /// | verified-token cache | 10 000 tokens |
    /// | longest access token accepted | 8 KiB |
    /// | session store | [`MemoryStore`] (one process) |
    /// | refresh-token HMAC key | random with the memory store; required with a shared store |
    /// | trusted proxies | none (the TCP peer is the client) |
    /// | refresh endpoint of [`JwtAuth::refresh_router`] | `POST /auth/refresh` |
    pub fn new() -> Self {
        Self {
            signing_key: None,
            verifying_keys: Vec::new(),
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(5),
            access_ttl: Duration::from_secs(15 * 60),
            idle_ttl: Duration::from_secs(14 * 24 * 3600),
            absolute_ttl: Duration::from_secs(30 * 24 * 3600),
            grace: Duration::from_secs(10),
            max_sessions: Some(50),
            access_cookie: "__Host-access".into(),
            refresh_cookie: "__Host-refresh".into(),
            same_site: SameSite::Lax,
            secure_cookies: true,
            realm: None,
            cache_capacity: 10_000,
            max_token_bytes: 8 * 1024,
            refresh_secret: None,
            store: None,
            trusted_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            proxy_header: ProxyHeader::XForwardedFor,
            csrf_cookie: None,
            on_rejection: None,
            reload_claims: None,
            unavailable_as_guest: true,
            refresh_path: "/auth/refresh".into(),
            hooks: Vec::new(),
        }
    }

    /// The key new access tokens are signed with (it also verifies them).
    pub fn signing_key(mut self, key: SigningKey) -> Self {
        self.signing_key = Some(key);
        self
    }

    /// An extra verification key, such as the previous signing key during a
    /// rotation: tokens it signed keep verifying until they expire.
    ///
    /// ```
    /// use tower_jwt_auth::{JwtAuth, SigningKey};
    /// let old = SigningKey::hs256("2026-10", &[1; 32])?;
    /// let new = SigningKey::hs256("2026-11", &[2; 32])?;
    /// let auth = JwtAuth::builder()
    ///     .signing_key(new)
    ///     .verifying_key(old.verifying_key().clone())
    ///     .build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn verifying_key(mut self, key: VerifyingKey) -> Self {
        self.verifying_keys.push(key);
        self
    }

    /// Writes `iss` into issued tokens and requires it of verified ones.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Writes `aud` into issued tokens and requires it of verified ones.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Clock skew tolerated on `exp` and `nbf`, at most 60 seconds.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Access-token lifetime.
    pub fn access_ttl(mut self, ttl: Duration) -> Self {
        self.access_ttl = ttl;
        self
    }

    /// Idle (sliding) session lifetime: each refresh extends it, never past
    /// the absolute lifetime.
    pub fn refresh_ttl(mut self, ttl: Duration) -> Self {
        self.idle_ttl = ttl;
        self
    }

    /// Absolute session lifetime from login. An idle lifetime longer than
    /// it is cut to it.
    pub fn refresh_absolute_ttl(mut self, ttl: Duration) -> Self {
        self.absolute_ttl = ttl;
        self
    }

    /// How long a just-rotated refresh token still answers with the same
    /// successor (parallel tabs, retried requests) instead of counting as theft.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Caps the sessions of one user (default 50); a new login beyond it
    /// revokes the oldest. The cap also bounds the work of every login,
    /// which reads all of the user's sessions.
    pub fn max_sessions_per_user(mut self, max: u32) -> Self {
        self.max_sessions = Some(max);
        self
    }

    /// Names of the access and refresh cookies. Keep the `__Host-` prefix
    /// unless cookies must be shared with subdomains.
    pub fn cookie_names(mut self, access: impl Into<String>, refresh: impl Into<String>) -> Self {
        self.access_cookie = access.into();
        self.refresh_cookie = refresh.into();
        self
    }

    /// `SameSite` of both cookies (`Lax` by default; `Strict` also works with
    /// transparent refresh; `None` is refused).
    pub fn same_site(mut self, same_site: SameSite) -> Self {
        self.same_site = same_site;
        self
    }

    /// Drops `Secure` from the cookies, for plain-HTTP development on a host
    /// other than `localhost` only (browsers keep `Secure` cookies on
    /// `http://localhost`). Browsers refuse `__Host-` and `__Secure-` cookies
    /// without `Secure`, so rename them too:
    ///
    /// ```
    /// use tower_jwt_auth::{JwtAuth, SigningKey};
    /// let auth = JwtAuth::builder()
    ///     .signing_key(SigningKey::hs256("k", &[7; 32])?)
    ///     .insecure_cookies()
    ///     .cookie_names("access", "refresh")
    ///     .build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn insecure_cookies(mut self) -> Self {
        self.secure_cookies = false;
        self
    }

    /// The path of the refresh endpoint that [`JwtAuth::refresh_router`]
    /// serves (default `/auth/refresh`), e.g. `/api/v1/token`. A literal
    /// path: it starts with `/` and holds no route parameter.
    ///
    /// ```
    /// use axum::Router;
    /// use tower_jwt_auth::{JwtAuth, SigningKey};
    /// let auth = JwtAuth::builder()
    ///     .signing_key(SigningKey::hs256("k", &[7; 32])?)
    ///     .refresh_path("/api/v1/token")
    ///     .build()?;
    /// let app: Router = Router::new().merge(auth.refresh_router()); // POST /api/v1/token
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn refresh_path(mut self, path: impl Into<String>) -> Self {
        self.refresh_path = path.into();
        self
    }

    /// The `realm` named in `WWW-Authenticate`.
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = Some(realm.into());
        self
    }

    /// How many verified tokens to remember (0 disables the cache).
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// The longest access token accepted; longer ones are refused unread.
    pub fn max_token_bytes(mut self, max: usize) -> Self {
        self.max_token_bytes = max;
        self
    }

    /// The secret refresh tokens are authenticated with (HMAC-SHA256), at
    /// least 32 bytes. Required with a store that outlives the process
    /// (Redis): every instance must use the same one, and keep it across
    /// restarts, or their users' sessions silently end. Keep it apart from
    /// the signing key; rotating it logs everyone out.
    pub fn refresh_token_secret(mut self, secret: impl Into<Vec<u8>>) -> Self {
        self.refresh_secret = Some(secret.into());
        self
    }

    /// Where sessions live (default: an in-process [`MemoryStore`]).
    pub fn store(mut self, store: impl SessionStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// An origin (`https://app.example`) allowed to send cookie-authenticated
    /// unsafe requests besides the server's own (cross-site request forgery
    /// protection).
    pub fn trusted_origin(mut self, origin: impl Into<String>) -> Self {
        self.trusted_origins.push(origin.into());
        self
    }

    /// The origin browsers use to reach this server (`https://app.example`)
    /// when it runs behind a TLS-terminating proxy that changes `Host`: a
    /// cookie-authenticated unsafe request whose `Origin` is this one passes
    /// the cross-origin check although `Host` differs.
    pub fn public_origin(self, origin: impl Into<String>) -> Self {
        self.trusted_origin(origin)
    }

    /// Reverse proxies (IPs or CIDR blocks, e.g. `"10.0.0.0/8"`) whose
    /// `X-Forwarded-For` header (or the one [`proxy_header`](Self::proxy_header)
    /// names) is believed when they are the TCP peer:
    /// [`ClientInfo`](crate::ClientInfo) then takes the right-most address
    /// that is not a trusted proxy as the client's. Invalid entries fail
    /// [`build`](Self::build).
    pub fn trusted_proxies<'a>(mut self, proxies: impl IntoIterator<Item = &'a str>) -> Self {
        self.trusted_proxies.extend(proxies.into_iter().map(str::to_owned));
        self
    }

    /// The header the [`trusted_proxies`](Self::trusted_proxies) write the
    /// client's address into: `X-Forwarded-For` (the default) or
    /// `Forwarded` (RFC 7239). Only that one is read: proxies pass the
    /// other through as the client sent it.
    pub fn proxy_header(mut self, header: ProxyHeader) -> Self {
        self.proxy_header = header;
        self
    }

    /// Double-submit CSRF tokens, for deployments whose users' browsers send
    /// neither `Sec-Fetch-Site` nor `Origin`: cookie logins and refreshes
    /// also set a script-readable `__Host-csrf` cookie, and every unsafe
    /// cookie-authenticated request must echo it in an `X-CSRF-Token` header.
    /// The token is an HMAC of the session id, so it is bound to the session.
    ///
    /// ```
    /// use tower_jwt_auth::{JwtAuth, SigningKey};
    /// let auth = JwtAuth::builder()
    ///     .signing_key(SigningKey::hs256("k", &[7; 32])?)
    ///     .csrf_double_submit()
    ///     .build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn csrf_double_submit(mut self) -> Self {
        self.csrf_cookie = Some("__Host-csrf".into());
        self
    }

    /// Replaces the response of every rejection (status, headers and body are
    /// then yours).
    ///
    /// ```
    /// use axum::response::IntoResponse;
    /// use tower_jwt_auth::{AuthError, JwtAuth, SigningKey};
    /// let auth = JwtAuth::builder()
    ///     .signing_key(SigningKey::hs256("k", &[7; 32])?)
    ///     .on_rejection(|error: AuthError| (error.status(), "please log in").into_response())
    ///     .build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_rejection<F>(mut self, render: F) -> Self
    where
        F: Fn(AuthError) -> Response + Send + Sync + 'static,
    {
        self.on_rejection = Some(Arc::new(render));
        self
    }

    /// Reloads a user's custom claims at each refresh (roles change): the
    /// callback gets the user id and answers the claims to issue, or `None`
    /// to end the session (user deleted or disabled). Without it, the claims
    /// given at login are re-issued.
    ///
    /// ```
    /// # use serde::Serialize;
    /// # #[derive(Serialize)] struct MyClaims { role: String }
    /// use tower_jwt_auth::{JwtAuth, SigningKey};
    /// let auth = JwtAuth::builder()
    ///     .signing_key(SigningKey::hs256("k", &[7; 32])?)
    ///     .reload_claims(|user_id: String| async move {
    ///         // look the user up...
    ///         Ok::<_, std::io::Error>(Some(MyClaims { role: format!("role-of-{user_id}") }))
    ///     })
    ///     .build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reload_claims<T, E, F, Fut>(mut self, reload: F) -> Self
    where
        T: Serialize + 'static,
        E: fmt::Display + 'static,
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<T>, E>> + Send + 'static,
    {
        self.reload_claims = Some(ClaimsReloader::new(reload));
        self
    }

    /// On optional routes, whether a request whose session cannot be checked
    /// right now (the store is down during a transparent refresh, or this
    /// instance is still loading revocations) is served as a guest with its
    /// cookies kept (`true`, the default) or answered `503` with
    /// `Retry-After` (`false`). Protected routes always answer `503`.
    pub fn unavailable_as_guest(mut self, as_guest: bool) -> Self {
        self.unavailable_as_guest = as_guest;
        self
    }

    /// Calls `hook` with every [`SecurityEvent`]: logins, rotations, refresh
    /// token reuse (theft), revocations with their cause, cap evictions,
    /// tokens made stale. To e-mail the user, lock the account or feed a SIEM.
    ///
    /// The hook never slows or fails a request: requests only put the event
    /// in a bounded queue (1024 events) without waiting, and a thread of the
    /// layer's own calls the hook, one event at a time, in order. If the hook
    /// falls behind (it blocks, or events come faster than it handles them),
    /// the events that do not fit are dropped, counted
    /// (`tower_jwt_auth_events_dropped_total{reason="queue_full"}`) and said
    /// once in the log; a hook that panics loses that event
    /// (`reason="hook_panicked"`) and keeps receiving the next ones. The hook
    /// runs outside any Tokio runtime: for async work, send the event to a
    /// task of yours (a `tokio::sync::mpsc` channel's `try_send`, or
    /// `Handle::spawn` with a runtime handle captured when building). Several
    /// hooks may be registered; each gets every event.
    ///
    /// ```
    /// use tower_jwt_auth::{JwtAuth, RevocationCause, SecurityEvent, SigningKey};
    ///
    /// let auth = JwtAuth::builder()
    ///     .signing_key(SigningKey::hs256("k", &[7; 32])?)
    ///     .on_event(|event: &SecurityEvent| match event {
    ///         SecurityEvent::ReuseDetected { user_id, session_id } => {
    ///             // e-mail the user: "someone used an old sign-in of yours; that device was signed out"
    ///             eprintln!("theft on session {session_id} of {user_id}");
    ///         }
    ///         other if other.revocation_cause() == Some(RevocationCause::Cap) => {}
    ///         _ => {}
    ///     })
    ///     .build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_event<F>(mut self, hook: F) -> Self
    where
        F: Fn(&SecurityEvent) + Send + Sync + 'static,
    {
        self.hooks.push(Arc::new(hook));
        self
    }

    /// Checks the settings and builds the layer. Must run inside a Tokio
    /// runtime when the store needs one (Redis). Register the `metrics`
    /// recorder before (see [`metrics`](crate::metrics)).
    pub fn build(self) -> Result<JwtAuth, ConfigError> {
        select_crypto_provider();
        let signing_key = self.signing_key.ok_or(ConfigError::MissingSigningKey)?;
        let mut keys = vec![signing_key.verifying_key().clone()];
        for key in self.verifying_keys {
            if keys.iter().any(|k| k.kid() == key.kid()) {
                return Err(ConfigError::DuplicateKid(key.kid().to_owned()));
            }
            keys.push(key);
        }
        if self.leeway > Duration::from_secs(60) {
            return Err(ConfigError::Invalid("leeway must be at most 60 seconds"));
        }
        if self.access_ttl.is_zero() || self.idle_ttl.is_zero() || self.absolute_ttl.is_zero() {
            return Err(ConfigError::Invalid("lifetimes must be positive"));
        }
        let idle_ttl = self.idle_ttl.min(self.absolute_ttl);
        // Keeps every `now + lifetime` far from overflowing.
        const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
        if [self.access_ttl, self.absolute_ttl, self.grace].iter().any(|d| *d > CENTURY) {
            return Err(ConfigError::Invalid("lifetimes must be under a century"));
        }
        if self.same_site == SameSite::None {
            return Err(ConfigError::Invalid("SameSite=None exposes the cookies to cross-site requests"));
        }
        for name in [&self.access_cookie, &self.refresh_cookie].into_iter().chain(&self.csrf_cookie) {
            if !cookies::valid_name(name) {
                return Err(ConfigError::Invalid("cookie names must be RFC 6265 tokens"));
            }
            if !self.secure_cookies && (name.starts_with("__Host-") || name.starts_with("__Secure-")) {
                return Err(ConfigError::Invalid(
                    "insecure_cookies() drops Secure, which browsers require of __Host- and __Secure- cookies: \
                     also rename them, e.g. .cookie_names(\"access\", \"refresh\")",
                ));
            }
        }
        let literal = |c: char| c.is_ascii_graphic() && !matches!(c, '{' | '}' | '*' | '?' | '#');
        if !self.refresh_path.starts_with('/') || !self.refresh_path.chars().all(literal) {
            return Err(ConfigError::Invalid("the refresh path must start with / and hold no route parameter"));
        }
        if self.access_cookie == self.refresh_cookie {
            return Err(ConfigError::Invalid("the access and refresh cookies need different names"));
        }
        let refresh_secret = match self.refresh_secret {
            Some(secret) if secret.len() < 32 => {
                return Err(ConfigError::Invalid("the refresh-token secret must be at least 32 bytes"));
            }
            Some(secret) => secret,
            None if self.store.as_ref().is_some_and(|store| store.outlives_process()) => {
                return Err(ConfigError::MissingRefreshSecret);
            }
            None => random::bytes::<32>().to_vec(),
        };
        let trusted_proxies = TrustedProxies::parse(self.trusted_proxies.iter().map(String::as_str), self.proxy_header)
            .map_err(ConfigError::InvalidValue)?;
        let double_submit = self.csrf_cookie.clone().map(|name| DoubleSubmit::new(&refresh_secret, name));
        let csrf = CsrfCheck::new(&self.trusted_origins, double_submit).map_err(ConfigError::Invalid)?;

        let metrics = Metrics::new();
        let events = Events::start(self.hooks, &metrics).map_err(|error| {
            ConfigError::InvalidValue(format!("could not start the security-event thread: {error}"))
        })?;
        let revocations = Arc::new(RevocationList::new());
        let store: Arc<dyn SessionStore> = self.store.unwrap_or_else(|| Arc::new(MemoryStore::new()));
        store.attach(revocations.clone());
        let policy = SessionPolicy {
            idle_ttl,
            absolute_ttl: self.absolute_ttl,
            grace: self.grace,
            max_sessions: self.max_sessions,
            // Plus a second: `iat` has whole seconds (see `RevocationList::issue_at`).
            revocation_ttl: self.access_ttl + self.leeway + Duration::from_secs(1),
        };
        let inner = Inner {
            verifier: Verifier::new(
                KeySet::new(keys),
                self.issuer.as_deref(),
                self.audience.as_deref(),
                self.leeway,
                self.cache_capacity,
                self.max_token_bytes,
            )
            .refusing_audiences_unless(self.audience.is_some()),
            issuer: Some(Issuer::new(signing_key, self.issuer, self.audience, self.access_ttl)),
            sessions: Some(Sessions::new(
                store,
                policy,
                RefreshKey::new(&refresh_secret),
                revocations.clone(),
                self.reload_claims,
                StoreMetrics::new(),
            )),
            revocations,
            cookies: CookieConfig {
                access_name: self.access_cookie,
                refresh_name: self.refresh_cookie,
                same_site: self.same_site,
                secure: self.secure_cookies,
                csrf_name: self.csrf_cookie,
            },
            csrf,
            realm: self.realm,
            on_rejection: self.on_rejection,
            trusted_proxies,
            read_access_cookie: true,
            leeway_secs: self.leeway.as_secs(),
            unavailable_as_guest: self.unavailable_as_guest,
            _revocation_source: None,
            refresh_path: self.refresh_path,
            metrics,
            events,
        };
        Ok(JwtAuth { inner: Arc::new(inner), optional: false })
    }
}

/// With both crypto backends compiled in, jsonwebtoken cannot pick one by
/// itself; prefer AWS-LC, the default.
pub(crate) fn select_crypto_provider() {
    #[cfg(all(feature = "aws-lc-rs", feature = "rust-crypto"))]
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}

/// JWT login sessions as a tower [`Layer`](tower_layer::Layer): verifies the
/// access token of every request, refreshes expired cookie sessions
/// transparently, and gives handlers [`Claims`](crate::Claims).
///
/// Cheap to clone (an `Arc` inside): use the same value as the layer, as
/// axum state for login handlers, and for [`JwtAuth::refresh_router`].
///
/// `Router::layer(auth)` runs the layer inside routing, around each route.
/// Wrapped around the whole router instead, it runs once before routing and
/// costs about half as much per request (BENCHMARKS.md, "Guards, the
/// verify-only layer and placement"); every path is then authenticated, so
/// an unknown one answers 401 rather than 404 to a stranger:
///
/// ```no_run
/// use axum::{Router, ServiceExt, routing::get};
/// use tower::Layer;
/// use tower_jwt_auth::{Claims, JwtAuth, SigningKey};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let auth = JwtAuth::new(SigningKey::hs256("k", &[7; 32])?);
/// let routes = Router::new().route("/me", get(|claims: Claims| async move { claims.sub().to_owned() }));
/// let app = auth.layer(routes);
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// axum::serve(listener, ServiceExt::<axum::extract::Request>::into_make_service(app)).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct JwtAuth {
    pub(crate) inner: Arc<Inner>,
    /// Whether unauthenticated requests pass through (without claims).
    pub(crate) optional: bool,
}

impl fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuth").field("optional", &self.optional).finish_non_exhaustive()
    }
}

/// Everything a [`JwtAuth`] shares between its clones, built once.
pub(crate) struct Inner {
    pub(crate) verifier: Verifier,
    /// `None` in a layer that only verifies.
    pub(crate) issuer: Option<Issuer>,
    /// `None` in a layer that only verifies.
    pub(crate) sessions: Option<Sessions>,
    pub(crate) revocations: Arc<RevocationList>,
    pub(crate) cookies: CookieConfig,
    pub(crate) csrf: CsrfCheck,
    pub(crate) realm: Option<String>,
    pub(crate) on_rejection: Option<RejectionRenderer>,
    pub(crate) trusted_proxies: TrustedProxies,
    /// Whether the access cookie is a credential (a verify-only layer reads
    /// bearer tokens only, unless asked).
    pub(crate) read_access_cookie: bool,
    /// See [`JwtAuthBuilder::unavailable_as_guest`].
    pub(crate) unavailable_as_guest: bool,
    /// Clock leeway, for guards judging `auth_time`.
    pub(crate) leeway_secs: u64,
    /// Where a verify-only layer hears about revocations: kept alive with
    /// the layer (its subscription stops when the store is dropped).
    pub(crate) _revocation_source: Option<Arc<dyn SessionStore>>,
    pub(crate) refresh_path: String,
    pub(crate) metrics: Metrics,
    /// Where security events go (nowhere without a hook).
    pub(crate) events: Events,
}

impl JwtAuth {
    /// A builder with the secure defaults.
    pub fn builder() -> JwtAuthBuilder {
        JwtAuthBuilder::new()
    }

    /// A layer with every default and this signing key.
    ///
    /// ```
    /// use axum::{Router, routing::get};
    /// use tower_jwt_auth::{Claims, JwtAuth, SigningKey};
    ///
    /// async fn me(claims: Claims) -> String {
    ///     format!("hello {}", claims.sub())
    /// }
    ///
    /// let key = SigningKey::hs256("2026-11", b"a secret of at least thirty-two bytes!")?;
    /// let app: Router = Router::new().route("/me", get(me)).layer(JwtAuth::new(key));
    /// # Ok::<(), tower_jwt_auth::KeyError>(())
    /// ```
    pub fn new(signing_key: SigningKey) -> Self {
        Self::builder().signing_key(signing_key).build().expect("the defaults with a valid key always build")
    }

    /// The same layer in optional mode: requests without valid credentials
    /// pass through without claims (handlers take `Option<Claims<T>>`); a
    /// handler that takes `Claims<T>` still answers the original rejection.
    /// Expired cookie sessions are still refreshed transparently.
    ///
    /// Give each group of routes its layer with `route_layer`, then merge:
    ///
    /// ```
    /// use axum::{Router, routing::get};
    /// use tower_jwt_auth::{Claims, JwtAuth, SigningKey};
    ///
    /// async fn home(claims: Option<Claims>) -> String {
    ///     match claims {
    ///         Some(claims) => format!("welcome back, {}", claims.sub()),
    ///         None => "hello, guest".to_owned(),
    ///     }
    /// }
    ///
    /// async fn me(claims: Claims) -> String {
    ///     claims.sub().to_owned()
    /// }
    ///
    /// let auth = JwtAuth::new(SigningKey::hs256("k", &[7; 32])?);
    /// let public = Router::new().route("/", get(home)).route_layer(auth.optional());
    /// let protected = Router::new().route("/me", get(me)).route_layer(auth.clone());
    /// let app: Router = public.merge(protected).merge(auth.refresh_router());
    /// # Ok::<(), tower_jwt_auth::KeyError>(())
    /// ```
    pub fn optional(&self) -> Self {
        Self { inner: self.inner.clone(), optional: true }
    }

    /// Renders a rejection with the configured realm or custom renderer.
    pub(crate) fn reject(&self, error: AuthError) -> Response {
        match &self.inner.on_rejection {
            Some(render) => render(error),
            None => error.into_response_with_realm(self.inner.realm.as_deref()),
        }
    }

    /// Waits until this instance holds every revocation made before it
    /// started (see [`RevocationList::mark_loaded`]), at most `deadline`;
    /// `true` when they are loaded. Until then the layer answers `503` to
    /// token-bearing requests rather than accept a token it cannot check:
    /// await this before accepting connections to serve correct answers from
    /// the first request (and to start serving anyway after `deadline` when
    /// the store is down).
    ///
    /// ```
    /// # async fn f(auth: tower_jwt_auth::JwtAuth) {
    /// if !auth.revocations_loaded(std::time::Duration::from_secs(10)).await {
    ///     tracing::warn!("serving before revocations are loaded: token-bearing requests answer 503 meanwhile");
    /// }
    /// # }
    /// ```
    pub async fn revocations_loaded(&self, deadline: Duration) -> bool {
        let revocations = &self.inner.revocations;
        let started = tokio::time::Instant::now();
        // Loading marks the list once, after paging through the store: a
        // short poll, never on the request path.
        while !revocations.is_loaded() {
            if started.elapsed() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// The public keys as a JWKS document (RFC 7517), for other services to
    /// verify this one's tokens. HMAC secrets are never included.
    pub fn jwks(&self) -> jsonwebtoken::jwk::JwkSet {
        crate::keys::jwks(self.inner.verifier.keys())
    }
}
