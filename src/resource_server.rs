//! The verify-only layer, for services that accept another service's access
//! tokens (resource servers): no signing key, no session store, bearer
//! tokens only unless asked, never a cookie set or cleared; the same hot
//! path, errors and guards as the session layer.
//!
//! ```
//! # #[cfg(feature = "remote-keys")]
//! # async fn api() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{Router, routing::get};
//! use tower_jwt_auth::{Claims, JwtAuth, guard::RequireScope, remote_keys::RemoteKeys};
//!
//! async fn whoami(claims: Claims) -> String {
//!     claims.sub().to_owned()
//! }
//!
//! let keys = RemoteKeys::jwks_url("https://auth.example/.well-known/jwks.json").build()?;
//! let verifier = JwtAuth::resource_server()
//!     .remote_keys(keys)
//!     .issuer("https://auth.example")
//!     .audience("api")
//!     .build()?;
//! let app: Router = Router::new()
//!     .route("/admin", get(whoami).route_layer(RequireScope::all(["admin"])))
//!     .route("/whoami", get(whoami))
//!     .layer(verifier);
//! # Ok(()) }
//! ```

use std::{sync::Arc, time::Duration};

use axum::response::Response;
use cookie::SameSite;

use crate::{
    client_info::TrustedProxies,
    config::{ConfigError, Inner, JwtAuth, RejectionRenderer},
    cookies::CookieConfig,
    csrf::CsrfCheck,
    error::AuthError,
    keys::{KeySet, VerifyingKey},
    revocation::RevocationList,
    store::SessionStore,
    token::Verifier,
};

/// Builds a verify-only [`JwtAuth`]; start from [`JwtAuth::resource_server`].
///
/// | setting | default |
/// |---|---|
/// | keys | none: give [`verifying_key`](Self::verifying_key)s and/or [`remote_keys`](Self::remote_keys) |
/// | issuer / audience | none (set both in production) |
/// | leeway | 5 s |
/// | credentials | `Authorization: Bearer` only |
/// | revocations | none: tokens are valid until they expire |
/// | verified-token cache | 10 000 tokens |
/// | longest token | 8 KiB |
#[must_use]
pub struct ResourceServerBuilder {
    keys: Vec<VerifyingKey>,
    #[cfg(feature = "remote-keys")]
    remote: Option<crate::remote_keys::RemoteKeys>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: Duration,
    realm: Option<String>,
    cache_capacity: usize,
    max_token_bytes: usize,
    on_rejection: Option<RejectionRenderer>,
    access_cookie: Option<String>,
    revocations: Option<Arc<dyn SessionStore>>,
    unavailable_as_guest: bool,
}

impl JwtAuth {
    /// A builder for a layer that only verifies tokens issued elsewhere.
    pub fn resource_server() -> ResourceServerBuilder {
        ResourceServerBuilder {
            keys: Vec::new(),
            #[cfg(feature = "remote-keys")]
            remote: None,
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(5),
            realm: None,
            cache_capacity: 10_000,
            max_token_bytes: 8 * 1024,
            on_rejection: None,
            access_cookie: None,
            revocations: None,
            unavailable_as_guest: true,
        }
    }
}

impl ResourceServerBuilder {
    /// A key tokens may be signed with (public PEM or JWK of the issuer).
    pub fn verifying_key(mut self, key: VerifyingKey) -> Self {
        self.keys.push(key);
        self
    }

    /// Keys fetched from the issuer's JWKS (or OIDC discovery) in the
    /// background: no request waits on them. Until the first fetch
    /// succeeds, token-bearing requests answer `503` with `Retry-After`.
    /// With discovery, the issuer also becomes the required `iss` unless
    /// [`issuer`](Self::issuer) says otherwise.
    #[cfg(feature = "remote-keys")]
    #[cfg_attr(docsrs, doc(cfg(feature = "remote-keys")))]
    pub fn remote_keys(mut self, keys: crate::remote_keys::RemoteKeys) -> Self {
        self.remote = Some(keys);
        self
    }

    /// Requires `iss`.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Requires `aud` (a string equal to it, or an array containing it).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Clock skew tolerated on `exp`, `nbf` and `auth_time`, at most 60 seconds.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
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

    /// The longest access token accepted.
    pub fn max_token_bytes(mut self, max: usize) -> Self {
        self.max_token_bytes = max;
        self
    }

    /// Also reads the access token from this cookie (for a service on the
    /// same site as the issuer). Never sets, refreshes or clears it; unsafe
    /// requests authenticated by it get the cross-site check.
    pub fn accept_cookie(mut self, name: impl Into<String>) -> Self {
        self.access_cookie = Some(name.into());
        self
    }

    /// Refuses the access tokens of sessions the issuer revoked, and of
    /// users whose tokens it made stale, as soon as it publishes them: give
    /// a store on the issuer's Redis (same key prefix). Nothing is written
    /// to it. Until the revocations issued before are loaded, token-bearing
    /// requests answer `503`.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use tower_jwt_auth::{JwtAuth, VerifyingKey, store::RedisStore};
    /// # let key: VerifyingKey = todo!();
    /// let verifier = JwtAuth::resource_server()
    ///     .verifying_key(key)
    ///     .revocations_from(RedisStore::connect("redis://sessions.internal:6379").await?)
    ///     .build()?;
    /// # drop(verifier); Ok(()) }
    /// ```
    pub fn revocations_from(mut self, store: impl SessionStore) -> Self {
        self.revocations = Some(Arc::new(store));
        self
    }

    /// See [`JwtAuthBuilder::unavailable_as_guest`](crate::JwtAuthBuilder::unavailable_as_guest).
    pub fn unavailable_as_guest(mut self, as_guest: bool) -> Self {
        self.unavailable_as_guest = as_guest;
        self
    }

    /// Replaces the response of every rejection.
    pub fn on_rejection<F>(mut self, render: F) -> Self
    where
        F: Fn(AuthError) -> Response + Send + Sync + 'static,
    {
        self.on_rejection = Some(Arc::new(render));
        self
    }

    /// Checks the settings and builds the layer. Must run inside a Tokio
    /// runtime when revocations come from a store.
    pub fn build(self) -> Result<JwtAuth, ConfigError> {
        crate::config::select_crypto_provider();
        if self.leeway > Duration::from_secs(60) {
            return Err(ConfigError::Invalid("leeway must be at most 60 seconds"));
        }
        let keys = KeySet::new(self.keys);
        #[cfg(feature = "remote-keys")]
        let discovered_issuer = self.remote.as_ref().and_then(crate::remote_keys::RemoteKeys::issuer);
        #[cfg(not(feature = "remote-keys"))]
        let discovered_issuer: Option<String> = None;
        #[cfg(feature = "remote-keys")]
        let keys = match self.remote {
            Some(remote) => keys.with_remote(remote),
            None => keys,
        };
        if keys.is_empty() {
            return Err(ConfigError::Invalid("a resource server needs verifying keys or remote keys"));
        }
        let issuer = self.issuer.or(discovered_issuer);
        let revocations = Arc::new(RevocationList::new());
        match &self.revocations {
            Some(store) => store.attach(revocations.clone()),
            None => revocations.mark_loaded(),
        }
        let cookies = CookieConfig {
            access_name: self.access_cookie.clone().unwrap_or_else(|| "__Host-access".into()),
            refresh_name: String::new(),
            same_site: SameSite::Lax,
            secure: true,
            csrf_name: None,
        };
        let inner = Inner {
            verifier: Verifier::new(
                keys,
                issuer.as_deref(),
                self.audience.as_deref(),
                self.leeway,
                self.cache_capacity,
                self.max_token_bytes,
            ),
            issuer: None,
            sessions: None,
            revocations,
            cookies,
            csrf: CsrfCheck::new(&[], None).map_err(ConfigError::Invalid)?,
            realm: self.realm,
            on_rejection: self.on_rejection,
            trusted_proxies: TrustedProxies::default(),
            read_access_cookie: self.access_cookie.is_some(),
            unavailable_as_guest: self.unavailable_as_guest,
            leeway_secs: self.leeway.as_secs(),
            _revocation_source: self.revocations,
            refresh_path: String::new(),
            metrics: crate::metrics::Metrics::new(),
            events: crate::events::Events::default(),
        };
        Ok(JwtAuth { inner: Arc::new(inner), optional: false })
    }
}
