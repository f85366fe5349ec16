//! The backend-for-frontend gateway: the browser holds only the layer's
//! HttpOnly cookies, API servers only ever see short-lived JWTs.
//!
//! [`Gateway`] is a tower `Service` mounted behind the
//! [`JwtAuth`](crate::JwtAuth) layer. The layer authenticates each request
//! as for any protected route (cookie or bearer, transparent refresh, CSRF
//! refusal of cookie-authenticated unsafe methods before anything else);
//! the gateway then forwards its method, path, query and streamed body to
//! the upstream and streams the answer back:
//!
//! - **Credentials stay behind.** The browser's `Cookie`, `Authorization`,
//!   `Proxy-Authorization` and `X-CSRF-Token` are never forwarded, nor any
//!   hop-by-hop header (`Connection` and every header it names,
//!   `Proxy-Connection`, `Keep-Alive`, `TE`, `Trailer`, `Transfer-Encoding`,
//!   `Upgrade`), nor `Host` (set to the upstream's) and `Expect`.
//! - **`X-Forwarded-For` gets the browser's address appended**, as any
//!   reverse proxy does: an upstream that trusts the gateway reads the
//!   right-most entry, which the gateway wrote (the others, like any
//!   `Forwarded` or other `X-Forwarded-*` header, came from the browser).
//!   Every other request header is forwarded.
//! - **The upstream gets `Authorization: Bearer <jwt>`**, signed with the
//!   layer's key (verifiable through [`JwtAuth::jwks`](crate::JwtAuth::jwks);
//!   with an HMAC key the upstream needs the shared secret), header `typ: at+jwt` (RFC 9068),
//!   claims `sub`, `sid`, `scope` (the session token's `scope`, or its `scp`
//!   array joined), `iss` (the layer's), `aud` = [`GatewayBuilder::audience`],
//!   a fresh `jti`, and any claims named by [`GatewayBuilder::forward_claims`].
//!   It lives [`GatewayBuilder::token_ttl`] (at most 60 s), never beyond the
//!   moment the layer stops accepting the session's access token (its `exp`
//!   plus the leeway). It is minted once per access token and reused until a
//!   quarter of its lifetime is left, so the gateway does not sign on every
//!   request; a refreshed session gets a new one. A revoked session's
//!   requests never reach the gateway (the layer refuses them), but a token
//!   already sent stays valid upstream until it expires, unless the upstream
//!   follows the revocations itself.
//! - **The upstream's answer comes back** (status, headers, body) without
//!   its hop-by-hop headers and without `Set-Cookie`, except cookies named
//!   by [`GatewayBuilder::allow_set_cookie`] (never the layer's own cookies).
//!   A response without `Cache-Control` gets `Cache-Control: private`.
//!   Cookies of a transparent refresh are added by the layer afterwards.
//! - **Failures answer JSON** `{"error", "error_description"}`:
//!   `502 bad_gateway` when the connection fails (refused, reset, connect
//!   timeout) or closes without an answer; `504 gateway_timeout` when no
//!   response headers arrive within [`GatewayBuilder::timeout`] (connecting
//!   and sending the request body count too); `400 invalid_request` for a
//!   path with dot segments, however encoded (`..`, `%2e%2e`, `..%2f`,
//!   `..;x`), or a request body that fails midway; `500 server_error` when
//!   no [`JwtAuth`](crate::JwtAuth) layer runs in front (logged once at
//!   `error`). Rejections of the layer in optional mode are answered as the
//!   layer would.
//!
//! The path the gateway receives is appended to the upstream URL's path:
//! mount it with `nest_service`, which strips the mount prefix, so
//! `/api/items?x=1` goes to `UPSTREAM/items?x=1`.
//!
//! ```
//! use std::time::Duration;
//! use axum::Router;
//! use tower_jwt_auth::{JwtAuth, SigningKey, bff::Gateway};
//!
//! let auth = JwtAuth::new(SigningKey::hs256("k", &[7; 32])?);
//! let gateway = Gateway::builder("http://127.0.0.1:8081/v1")
//!     .audience("orders-api")
//!     .timeout(Duration::from_secs(10))
//!     .allow_set_cookie(["theme"])
//!     .build()?;
//! let app: Router = Router::new()
//!     .nest_service("/api", gateway)
//!     .route_layer(auth.clone())
//!     .merge(auth.refresh_router());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Not supported: `https://` upstreams (no TLS client is built in; put the
//! upstream on a private network or behind a local TLS-originating sidecar),
//! protocol upgrades (WebSocket), and HTTP/2 to the upstream. Request bodies
//! are not size-limited here: add `tower_http::limit::RequestBodyLimitLayer`
//! in front if the upstream does not limit them itself. Response bodies
//! stream without a deadline once their headers have arrived.

mod headers;
mod path;
mod proxy;
mod upstream_token;

use std::{fmt, sync::Arc, time::Duration};

use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};

pub use self::proxy::GatewayFuture;
use self::{path::Upstream, proxy::Shared, upstream_token::UpstreamTokens};
use crate::{ConfigError, cookies, token::REGISTERED_NAMES};

/// The longest upstream-token lifetime accepted.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(60);

/// The BFF gateway: a tower `Service` forwarding authenticated requests to
/// one upstream with a short-lived JWT in place of the browser's cookies.
/// See the [module documentation](self). Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

impl fmt::Debug for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gateway")
            .field("upstream", &self.shared.upstream)
            .field("audience", &self.shared.tokens.audience())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A builder for a gateway to `upstream` (`http://host[:port][/path]`),
    /// with these defaults:
    ///
    /// | setting | default |
    /// |---|---|
    /// | upstream-token lifetime | 60 seconds (the most accepted) |
    /// | time to the upstream's response headers | 30 seconds |
    /// | time to connect | 5 seconds |
    /// | idle pooled connections kept | 90 seconds |
    /// | upstream cookies passed to the browser | none |
    /// | claims forwarded besides `sub`, `sid`, `scope` | none |
    /// | cached upstream tokens | 10 000 |
    pub fn builder(upstream: impl Into<String>) -> GatewayBuilder {
        GatewayBuilder::new(upstream.into())
    }
}

/// Builds a [`Gateway`]; only the audience has no default.
#[must_use]
#[derive(Debug)]
pub struct GatewayBuilder {
    upstream: String,
    audience: Option<String>,
    token_ttl: Duration,
    timeout: Duration,
    connect_timeout: Duration,
    pool_idle_timeout: Duration,
    allow_set_cookie: Vec<String>,
    forward_claims: Vec<String>,
    token_cache_capacity: usize,
}

impl GatewayBuilder {
    fn new(upstream: String) -> Self {
        Self {
            upstream,
            audience: None,
            token_ttl: MAX_TOKEN_TTL,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            pool_idle_timeout: Duration::from_secs(90),
            allow_set_cookie: Vec::new(),
            forward_claims: Vec::new(),
            token_cache_capacity: 10_000,
        }
    }

    /// The `aud` of the upstream tokens: the upstream's own identifier,
    /// which it requires. Required. Choose one the [`JwtAuth`](crate::JwtAuth) layer does not
    /// accept (set its own [`audience`](crate::JwtAuthBuilder::audience)), so
    /// an upstream token is not also a session credential for the gateway.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Lifetime of the upstream tokens: at least 1 second, at most 60.
    pub fn token_ttl(mut self, ttl: Duration) -> Self {
        self.token_ttl = ttl;
        self
    }

    /// How long the upstream may take to answer with its response headers,
    /// connecting and sending the request body included: `504` after it.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long connecting to the upstream may take: `502` after it.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long an idle pooled connection to the upstream is kept.
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// Cookie names whose upstream `Set-Cookie` reaches the browser (every
    /// other is dropped). The layer's own cookies are never passed on.
    ///
    /// ```
    /// use tower_jwt_auth::bff::Gateway;
    /// let gateway = Gateway::builder("http://127.0.0.1:8081")
    ///     .audience("api")
    ///     .allow_set_cookie(["theme", "locale"])
    ///     .build()?;
    /// # Ok::<(), tower_jwt_auth::ConfigError>(())
    /// ```
    pub fn allow_set_cookie<I>(mut self, names: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.allow_set_cookie.extend(names.into_iter().map(Into::into));
        self
    }

    /// Custom claims copied as they are from the session's access token into
    /// the upstream token, besides `sub`, `sid` and `scope` (registered claim
    /// names are refused).
    ///
    /// ```
    /// use tower_jwt_auth::bff::Gateway;
    /// let gateway = Gateway::builder("http://127.0.0.1:8081")
    ///     .audience("api")
    ///     .forward_claims(["tenant", "roles"])
    ///     .build()?;
    /// # Ok::<(), tower_jwt_auth::ConfigError>(())
    /// ```
    pub fn forward_claims<I>(mut self, names: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.forward_claims.extend(names.into_iter().map(Into::into));
        self
    }

    /// How many upstream tokens to keep (one per live access token; the
    /// oldest go first). 0 mints a token for every request.
    pub fn token_cache_capacity(mut self, capacity: usize) -> Self {
        self.token_cache_capacity = capacity;
        self
    }

    /// Checks the settings and builds the gateway.
    pub fn build(self) -> Result<Gateway, ConfigError> {
        let upstream = Upstream::parse(&self.upstream)?;
        let audience = match self.audience {
            Some(audience) if !audience.is_empty() => audience,
            _ => return Err(ConfigError::Invalid("the gateway needs the upstream's audience")),
        };
        if self.token_ttl < Duration::from_secs(1) || self.token_ttl > MAX_TOKEN_TTL {
            return Err(ConfigError::Invalid("the upstream-token lifetime must be between 1 and 60 seconds"));
        }
        if [self.timeout, self.connect_timeout].iter().any(Duration::is_zero) {
            return Err(ConfigError::Invalid("the gateway's timeouts must be positive"));
        }
        if !self.allow_set_cookie.iter().all(|name| cookies::valid_name(name)) {
            return Err(ConfigError::Invalid("allowed cookie names must be RFC 6265 tokens"));
        }
        if self.forward_claims.iter().any(|name| REGISTERED_NAMES.contains(&name.as_str()) || name == "scope") {
            return Err(ConfigError::Invalid("forwarded claims may not be registered claims or scope"));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(self.connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(self.pool_idle_timeout)
            .build(connector);
        let tokens = UpstreamTokens::new(audience, self.token_ttl, self.forward_claims, self.token_cache_capacity);
        Ok(Gateway {
            shared: Arc::new(Shared {
                client,
                upstream,
                tokens,
                timeout: self.timeout,
                allow_set_cookie: self.allow_set_cookie,
                reported_unlayered: Default::default(),
            }),
        })
    }
}
