//! The session lifecycle: login, refresh-token rotation (single-flight within
//! the process, grace window and theft detection in the store), logout,
//! logout everywhere, listing and revoking devices.

use std::{fmt, future::Future, net::IpAddr, pin::Pin, sync::Arc, time::Duration};

use serde::Serialize;

use crate::{
    config::JwtAuth,
    error::AuthError,
    flight::Flights,
    refresh_token::{RefreshKey, RefreshToken},
    revocation::{RevocationList, now_ms},
    store::{NewSession, RotateOutcome, SessionPolicy, SessionRecord, SessionStore},
    token::{AccessToken, custom_claims_json},
};

/// Longest user id a session can have.
const MAX_USER_ID: usize = 512;

/// Longest user agent kept with a session.
const MAX_USER_AGENT: usize = 256;

type ReloadFuture = Pin<Box<dyn Future<Output = Result<Option<String>, String>> + Send>>;

/// The user's claims-reloading callback, type-erased to JSON.
#[derive(Clone)]
pub(crate) struct ClaimsReloader(Arc<dyn Fn(String) -> ReloadFuture + Send + Sync>);

impl ClaimsReloader {
    pub(crate) fn new<T, E, F, Fut>(reload: F) -> Self
    where
        T: Serialize + 'static,
        E: fmt::Display + 'static,
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<T>, E>> + Send + 'static,
    {
        Self(Arc::new(move |user_id| {
            let future = reload(user_id);
            Box::pin(async move {
                match future.await {
                    Ok(Some(claims)) => custom_claims_json(&claims).map(Some).map_err(|e| e.to_string()),
                    Ok(None) => Ok(None),
                    Err(error) => Err(error.to_string()),
                }
            })
        }))
    }
}

/// What a successful refresh produced; shared by every racer of one token.
pub(crate) struct Refreshed {
    pub(crate) access: AccessToken,
    pub(crate) refresh_token: String,
    pub(crate) refresh_max_age: Duration,
}

/// Session state shared by the clones of one [`JwtAuth`].
pub(crate) struct Sessions {
    store: Arc<dyn SessionStore>,
    pub(crate) policy: SessionPolicy,
    key: RefreshKey,
    revocations: Arc<RevocationList>,
    reload_claims: Option<ClaimsReloader>,
    /// Rotations in progress or just done, by presented token.
    flights: Flights,
}

impl Sessions {
    pub(crate) fn new(
        store: Arc<dyn SessionStore>,
        policy: SessionPolicy,
        key: RefreshKey,
        revocations: Arc<RevocationList>,
        reload_claims: Option<ClaimsReloader>,
    ) -> Self {
        Self { flights: Flights::new(policy.grace), store, policy, key, revocations, reload_claims }
    }

    /// The session a refresh token names, if its tag verifies.
    pub(crate) fn session_id_of(&self, refresh_token: &str) -> Option<String> {
        self.key.decode(refresh_token).map(|token| token.sid)
    }

    /// Marks sessions revoked on this instance at once (the store tells the others).
    pub(crate) fn forget(&self, sids: &[String]) {
        let until = now_ms() + self.policy.revocation_ttl.as_millis() as u64;
        for sid in sids {
            self.revocations.insert(sid, until);
        }
    }
}

/// Who is logging in from where: the device information kept with a session.
///
/// An extractor: take it in the login handler (see [`JwtAuth::login`]), or
/// build it yourself.
///
/// ```
/// use tower_jwt_auth::ClientInfo;
///
/// let client = ClientInfo { user_agent: Some("curl/8.5".into()), ip: Some([192, 0, 2, 7].into()) };
/// assert_eq!(client.ip.map(|ip| ip.to_string()).as_deref(), Some("192.0.2.7"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// The `User-Agent` header (truncated to 256 bytes).
    pub user_agent: Option<String>,
    /// The client's address, from axum's `ConnectInfo` when the server provides it.
    pub ip: Option<IpAddr>,
}

impl ClientInfo {
    /// Reads the user agent and, when present, axum's `ConnectInfo<SocketAddr>`.
    pub fn from_parts(parts: &http::request::Parts) -> Self {
        let user_agent = parts.headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()).map(|ua| {
            let mut end = ua.len().min(MAX_USER_AGENT);
            while !ua.is_char_boundary(end) {
                end -= 1;
            }
            ua[..end].to_owned()
        });
        let ip = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|info| info.0.ip());
        Self { user_agent, ip }
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientInfo {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::from_parts(parts))
    }
}

/// The tokens of a session just created or refreshed. Render it as cookies
/// ([`Tokens::into_cookies`]) for browsers or as an RFC 6749 token response
/// ([`Tokens::into_token_response`]) for header clients.
#[derive(Clone)]
pub struct Tokens {
    pub(crate) auth: JwtAuth,
    pub(crate) refreshed: Arc<Refreshed>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens").field("claims", self.refreshed.access.claims()).finish_non_exhaustive()
    }
}

impl Tokens {
    /// The access token (a JWT).
    pub fn access_token(&self) -> &str {
        &self.refreshed.access.token
    }

    /// The refresh token (opaque).
    pub fn refresh_token(&self) -> &str {
        &self.refreshed.refresh_token
    }

    /// Seconds until the access token expires.
    pub fn expires_in(&self) -> u64 {
        self.refreshed.access.expires_in
    }

    /// The user id (`sub`).
    pub fn user_id(&self) -> &str {
        &self.refreshed.access.claims().sub
    }

    /// The session id (`sid`).
    pub fn session_id(&self) -> &str {
        &self.refreshed.access.claims().sid
    }
}

impl JwtAuth {
    /// Creates a session for `user_id` whose access tokens carry `claims`
    /// (a serde type serializing to a JSON object, without registered claim
    /// names), and issues its first tokens.
    ///
    /// A login handler checks the credentials, then answers the tokens as
    /// cookies (browsers) or as a token response (mobile and API clients):
    ///
    /// ```
    /// use axum::{
    ///     Json, Router,
    ///     extract::State,
    ///     response::{IntoResponse, Response},
    ///     routing::post,
    /// };
    /// use serde::{Deserialize, Serialize};
    /// use tower_jwt_auth::{AuthError, ClientInfo, JwtAuth, SigningKey};
    ///
    /// #[derive(Deserialize)]
    /// struct Credentials {
    ///     username: String,
    ///     password: String,
    ///     #[serde(default)]
    ///     bearer: bool,
    /// }
    ///
    /// /// What every access token of the session carries besides `sub` and `sid`.
    /// #[derive(Serialize)]
    /// struct MyClaims {
    ///     role: String,
    /// }
    ///
    /// /// Your user store; a real one compares password hashes (argon2, …).
    /// async fn check_password(username: &str, password: &str) -> Option<String> {
    ///     (username == "alice" && password == "alice-pw").then(|| "admin".to_owned())
    /// }
    ///
    /// async fn login(
    ///     State(auth): State<JwtAuth>,
    ///     client: ClientInfo,
    ///     Json(form): Json<Credentials>,
    /// ) -> Result<Response, AuthError> {
    ///     let role = check_password(&form.username, &form.password).await.ok_or(AuthError::InvalidCredentials)?;
    ///     let tokens = auth.login(&form.username, &MyClaims { role }, client).await?;
    ///     Ok(if form.bearer {
    ///         tokens.into_token_response().into_response()
    ///     } else {
    ///         tokens.into_cookies().into_response()
    ///     })
    /// }
    ///
    /// let auth = JwtAuth::new(SigningKey::hs256("k", &[7; 32])?);
    /// let app: Router = Router::new()
    ///     .route("/login", post(login))
    ///     .merge(auth.refresh_router())
    ///     .with_state(auth);
    /// # Ok::<(), tower_jwt_auth::KeyError>(())
    /// ```
    ///
    /// ```
    /// # use serde::Serialize;
    /// # #[derive(Serialize)] struct MyClaims { role: &'static str }
    /// use tower_jwt_auth::{ClientInfo, JwtAuth, SigningKey};
    /// # tokio_test_block(async {
    /// let auth = JwtAuth::new(SigningKey::hs256("k", &[7; 32])?);
    /// let tokens = auth.login("alice", &MyClaims { role: "admin" }, ClientInfo::default()).await?;
    /// assert_eq!(tokens.user_id(), "alice");
    /// # Ok::<(), Box<dyn std::error::Error>>(()) });
    /// # fn tokio_test_block<F: std::future::Future>(f: F) -> F::Output {
    /// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
    /// # }
    /// ```
    pub async fn login<T: Serialize + ?Sized>(
        &self,
        user_id: &str,
        claims: &T,
        client: ClientInfo,
    ) -> Result<Tokens, AuthError> {
        // Refresh tokens carry the user id and are capped at 1 KiB.
        if user_id.len() > MAX_USER_ID {
            return Err(AuthError::Misconfigured("user ids longer than 512 bytes are not supported"));
        }
        let custom = custom_claims_json(claims)?;
        let sessions = &self.inner.sessions;
        let sid = crate::random::session_id();
        let now = now_ms();
        let new = NewSession {
            user_id: user_id.to_owned(),
            sid: sid.clone(),
            claims: custom.clone(),
            user_agent: client.user_agent,
            ip: client.ip.map(|ip| ip.to_string()),
            now_ms: now,
        };
        let evicted = sessions.store.create(new, &sessions.policy).await?;
        if !evicted.is_empty() {
            tracing::info!(user = user_id, sessions = evicted.len(), "session cap reached: oldest sessions revoked");
            sessions.forget(&evicted);
        }
        let idle = sessions.policy.idle_ttl.min(sessions.policy.absolute_ttl);
        self.issue(user_id, &sid, &custom, sessions.key.encode(user_id, &sid, 0), idle)
    }

    /// Signs an access token and bundles it with a refresh token.
    fn issue(
        &self,
        user_id: &str,
        sid: &str,
        custom: &str,
        refresh_token: String,
        refresh_max_age: Duration,
    ) -> Result<Tokens, AuthError> {
        let access = self.inner.issuer.issue(user_id, sid, custom, refresh_max_age)?;
        self.inner.verifier.remember(&access);
        Ok(Tokens { auth: self.clone(), refreshed: Arc::new(Refreshed { access, refresh_token, refresh_max_age }) })
    }

    /// Rotates a refresh token: a new access token and the successor refresh
    /// token. Concurrent calls with the same token share one store call and
    /// one result; within the grace window a just-rotated token yields the
    /// same successor; any other reuse revokes the session.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens, AuthError> {
        let sessions = &self.inner.sessions;
        let presented =
            sessions.key.decode(refresh_token).ok_or(AuthError::InvalidGrant("The refresh token is invalid"))?;
        if sessions.revocations.is_revoked(&presented.sid) {
            return Err(AuthError::InvalidGrant("The session was revoked"));
        }
        let result = sessions.flights.run(&presented, || self.rotate(&presented)).await;
        result.map(|refreshed| Tokens { auth: self.clone(), refreshed })
    }

    /// One store call for a presented refresh token, then the new tokens.
    async fn rotate(&self, presented: &RefreshToken) -> Result<Arc<Refreshed>, AuthError> {
        let sessions = &self.inner.sessions;
        let now = now_ms();
        let outcome =
            sessions.store.rotate(&presented.user_id, &presented.sid, presented.counter, now, &sessions.policy).await?;
        let mut record = match outcome {
            RotateOutcome::Rotated(record) | RotateOutcome::Replayed(record) => record,
            RotateOutcome::Theft { user_id, sid } => {
                tracing::warn!(
                    sid = %sid,
                    user = %user_id,
                    reason = "refresh token reused outside the grace window",
                    "security: session revoked"
                );
                sessions.forget(std::slice::from_ref(&sid));
                return Err(AuthError::InvalidGrant("The refresh token was already used; the session is revoked"));
            }
            RotateOutcome::NotFound => {
                return Err(AuthError::InvalidGrant("The refresh token is expired or revoked"));
            }
        };
        let claims = match &sessions.reload_claims {
            None => std::mem::take(&mut record.claims),
            Some(reload) => match (reload.0)(record.user_id.clone()).await {
                Ok(Some(claims)) => claims,
                Ok(None) => {
                    let _ = self.revoke_session(&record.user_id, &record.sid).await;
                    return Err(AuthError::InvalidGrant("The user can no longer sign in"));
                }
                Err(error) => {
                    tracing::warn!(%error, user = %record.user_id, "reloading claims failed");
                    return Err(AuthError::Unavailable);
                }
            },
        };
        let refresh_token = sessions.key.encode(&record.user_id, &record.sid, record.counter);
        let max_age = Duration::from_millis(record.idle_expires_at_ms.saturating_sub(now));
        self.issue(&record.user_id, &record.sid, &claims, refresh_token, max_age).map(|tokens| tokens.refreshed)
    }

    /// Revokes one session of `user_id`: its refresh token at once and its
    /// access tokens on every instance. `NotFound` when the user has no such
    /// live session (another user's id included).
    pub async fn revoke_session(&self, user_id: &str, sid: &str) -> Result<(), AuthError> {
        let sessions = &self.inner.sessions;
        if sessions.store.revoke(user_id, sid, now_ms(), &sessions.policy).await? {
            sessions.forget(&[sid.to_owned()]);
            tracing::info!(sid, user = user_id, "session revoked");
            Ok(())
        } else {
            Err(AuthError::NotFound("No such session"))
        }
    }

    /// Revokes every session of `user_id` (logout everywhere); returns how many.
    pub async fn revoke_all_sessions(&self, user_id: &str) -> Result<usize, AuthError> {
        let sessions = &self.inner.sessions;
        let revoked = sessions.store.revoke_all(user_id, now_ms(), &sessions.policy).await?;
        sessions.forget(&revoked);
        tracing::info!(user = user_id, sessions = revoked.len(), "all sessions revoked");
        Ok(revoked.len())
    }

    /// The live sessions (devices) of `user_id`, oldest first; `current_sid`
    /// marks the caller's own.
    pub async fn list_sessions(&self, user_id: &str, current_sid: Option<&str>) -> Result<Vec<SessionInfo>, AuthError> {
        let sessions = &self.inner.sessions;
        let records = sessions.store.list(user_id, now_ms()).await?;
        Ok(records.into_iter().map(|record| SessionInfo::new(record, current_sid)).collect())
    }
}

/// One live session, as shown to its user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SessionInfo {
    /// The session id (`sid`).
    pub id: String,
    /// Login time, Unix seconds.
    pub created_at: u64,
    /// Last refresh, Unix seconds.
    pub last_used_at: u64,
    /// When it expires unless used again, Unix seconds.
    pub expires_at: u64,
    /// The `User-Agent` at login.
    pub user_agent: Option<String>,
    /// The IP address at login.
    pub ip: Option<String>,
    /// Whether this is the session of the request that asked.
    pub current: bool,
}

impl SessionInfo {
    fn new(record: SessionRecord, current_sid: Option<&str>) -> Self {
        Self {
            current: current_sid == Some(record.sid.as_str()),
            id: record.sid,
            created_at: record.created_at_ms / 1000,
            last_used_at: record.last_used_at_ms / 1000,
            expires_at: record.idle_expires_at_ms / 1000,
            user_agent: record.user_agent,
            ip: record.ip,
        }
    }
}
