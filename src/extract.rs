//! The extractors handlers use: [`Claims<T>`] (and `Option<Claims<T>>`) for
//! the verified claims, [`Authentication`] to tell the guest cases apart on
//! optional routes, [`Session`] to act on the caller's session.

use std::{
    fmt,
    ops::Deref,
    sync::{
        Arc, LazyLock,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{
    extract::{FromRequestParts, OptionalFromRequestParts},
    response::{IntoResponse, Response},
};
use http::{Extensions, request::Parts};
use serde::{Deserialize, Deserializer, Serialize, de::DeserializeOwned};

use crate::{
    config::JwtAuth,
    error::AuthError,
    response::LoggedOut,
    session::{SessionInfo, Tokens},
    token::{RegisteredClaims, VerifiedToken},
};

/// Why a request has no verified token.
#[derive(Clone, Debug)]
pub(crate) enum Refusal {
    /// No credentials at all.
    NoCredentials,
    /// A bearer token (or another credential the client chose to present)
    /// that is invalid, expired or revoked: the client must act.
    Refused(AuthError),
    /// A cookie session that is over (its refresh was refused): its cookies
    /// are being cleared.
    SessionEnded(AuthError),
    /// The store or the revocation list could not vouch for the session.
    Unavailable,
}

impl Refusal {
    /// The `reason` label of [`metrics`](crate::metrics).
    pub(crate) fn reason(&self) -> crate::metrics::Reason {
        use crate::metrics::Reason;
        match self {
            Self::NoCredentials => Reason::Missing,
            Self::Refused(error) => Reason::of(error),
            Self::SessionEnded(_) => Reason::SessionEnded,
            Self::Unavailable => Reason::Unavailable,
        }
    }

    pub(crate) fn error(&self) -> AuthError {
        match self {
            Self::NoCredentials => AuthError::MissingCredentials,
            Self::Refused(error) | Self::SessionEnded(error) => error.clone(),
            Self::Unavailable => AuthError::Unavailable,
        }
    }
}

/// What the layer found, left in the request's extensions for extractors.
/// Small (32 bytes): the rare refusal is boxed, since every authenticated
/// request copies this into the extensions.
#[derive(Clone)]
pub(crate) struct AuthContext {
    pub(crate) auth: JwtAuth,
    outcome: Result<Arc<VerifiedToken>, Box<Refusal>>,
}

/// Logged once per process: a handler needing claims behind no layer is a
/// wiring mistake, not a client's.
static MISSING_LAYER_LOGGED: AtomicBool = AtomicBool::new(false);

const MISSING_LAYER: &str = "No JwtAuth layer in front of this handler: add `.layer(auth)` or `.route_layer(auth)` \
                             to the router holding this route";

impl AuthContext {
    #[inline]
    pub(crate) fn new(auth: JwtAuth, outcome: Result<Arc<VerifiedToken>, Refusal>) -> Self {
        Self { auth, outcome: outcome.map_err(Box::new) }
    }

    /// Puts the context into the request's extensions. Wrapped around a
    /// whole `Router` (before routing), the layer sees a request with none
    /// (hyper adds none); the map one insert creates holds three entries and
    /// axum's routing adds three after us (`OriginalUri`, `MatchedPath`, the
    /// URL parameters), so the fourth would grow it again on every request.
    /// A map with room for seven is cloned in instead. (Under
    /// `Router::layer` axum's entries come first and ours is the fourth
    /// whatever we do.)
    #[inline]
    pub(crate) fn insert_into(self, extensions: &mut Extensions) {
        static ROOMY: LazyLock<Extensions> = LazyLock::new(|| {
            #[derive(Clone)]
            struct Filler<const N: u8>;
            let mut roomy = Extensions::new();
            roomy.insert(Filler::<0>);
            roomy.insert(Filler::<1>);
            roomy.insert(Filler::<2>);
            roomy.insert(Filler::<3>);
            roomy.clear(); // keeps the capacity
            roomy
        });
        if extensions.is_empty() {
            extensions.extend(ROOMY.clone());
        }
        extensions.insert(self);
    }

    /// The verified token, or why there is none.
    pub(crate) fn outcome(&self) -> Result<&Arc<VerifiedToken>, &Refusal> {
        self.outcome.as_ref().map_err(|refusal| &**refusal)
    }

    pub(crate) fn get(parts: &Parts) -> Result<&Self, AuthRejection> {
        parts.extensions.get::<Self>().ok_or_else(|| {
            if !MISSING_LAYER_LOGGED.swap(true, Ordering::Relaxed) {
                tracing::error!("{MISSING_LAYER}");
            }
            AuthRejection { auth: None, error: AuthError::Misconfigured(MISSING_LAYER) }
        })
    }

    fn from_parts(parts: &Parts) -> Result<(&JwtAuth, &Arc<VerifiedToken>), AuthRejection> {
        let context = Self::get(parts)?;
        match context.outcome() {
            Ok(token) => Ok((&context.auth, token)),
            Err(refusal) => Err(context.rejection(refusal.error())),
        }
    }

    pub(crate) fn rejection(&self, error: AuthError) -> AuthRejection {
        AuthRejection { auth: Some(self.auth.clone()), error }
    }
}

/// Why [`Claims`] or [`Session`] could not be extracted; answers like the
/// layer would (realm, custom renderer).
#[derive(Debug)]
pub struct AuthRejection {
    auth: Option<JwtAuth>,
    error: AuthError,
}

impl AuthRejection {
    /// The reason.
    pub fn error(&self) -> &AuthError {
        &self.error
    }
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        match self.auth {
            Some(auth) => auth.reject(self.error),
            None => self.error.into_response(),
        }
    }
}

/// The verified claims of the request's access token: the registered ones
/// through methods ([`Claims::sub`], [`Claims::sid`], …) and your custom
/// claims `T` through `Deref`.
///
/// `T` is deserialized from the custom claims only (the payload without the
/// registered ones), so `#[serde(deny_unknown_fields)]` works. Tokens issued
/// before a field was added to `T` lack it: give new fields
/// `#[serde(default)]`, or use
/// [`reload_claims`](crate::JwtAuthBuilder::reload_claims) so the next
/// refresh writes them (until then such a token is refused as
/// `invalid_token`, which makes clients refresh).
///
/// Serializes as the token's whole payload.
///
/// ```
/// use serde::Deserialize;
/// use tower_jwt_auth::Claims;
///
/// #[derive(Clone, Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct MyClaims {
///     role: String,
///     #[serde(default)] // added later: older tokens lack it
///     team: Option<String>,
/// }
///
/// async fn admin_only(claims: Claims<MyClaims>) -> String {
///     format!("{} is {}", claims.sub(), claims.role)
/// }
/// ```
pub struct Claims<T = NoClaims> {
    token: Arc<VerifiedToken>,
    /// Shared with every request carrying the same token: decoded once.
    custom: Arc<T>,
}

impl<T> Clone for Claims<T> {
    fn clone(&self) -> Self {
        Self { token: self.token.clone(), custom: self.custom.clone() }
    }
}

impl<T> Claims<T> {
    /// Subject: the user id.
    pub fn sub(&self) -> &str {
        &self.token.claims.sub
    }

    /// Session id.
    pub fn sid(&self) -> &str {
        &self.token.claims.sid
    }

    /// Expiry, Unix seconds.
    pub fn exp(&self) -> u64 {
        self.token.claims.exp
    }

    /// Issue time, Unix seconds.
    pub fn iat(&self) -> u64 {
        self.token.claims.iat
    }

    /// Token id.
    pub fn jti(&self) -> &str {
        &self.token.claims.jti
    }

    /// When the user last proved who they are, Unix seconds.
    pub fn auth_time(&self) -> Option<u64> {
        self.token.claims.auth_time
    }

    /// All registered claims.
    pub fn registered(&self) -> &RegisteredClaims {
        &self.token.claims
    }

    /// The custom claims.
    pub fn custom(&self) -> &T {
        &self.custom
    }

    /// The custom claims, by value (cloned unless this was the last user).
    pub fn into_inner(self) -> T
    where
        T: Clone,
    {
        Arc::unwrap_or_clone(self.custom)
    }
}

impl<T> Deref for Claims<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.custom
    }
}

impl<T: fmt::Debug> fmt::Debug for Claims<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claims").field("registered", &self.token.claims).field("custom", &self.custom).finish()
    }
}

impl<T> Serialize for Claims<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.token.payload.serialize(serializer)
    }
}

impl<T> Claims<T>
where
    T: DeserializeOwned + Send + Sync + 'static,
{
    fn decode(auth: &JwtAuth, token: &Arc<VerifiedToken>) -> Result<Self, AuthRejection> {
        match token.custom::<T>() {
            Ok(custom) => Ok(Self { token: token.clone(), custom }),
            Err(error) => {
                tracing::debug!(%error, "access token claims do not fit the handler's claims type");
                let error = AuthError::InvalidToken("The access token claims do not have the expected shape");
                Err(AuthRejection { auth: Some(auth.clone()), error })
            }
        }
    }
}

impl<S, T> FromRequestParts<S> for Claims<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send + Sync + 'static,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AuthRejection> {
        let (auth, token) = AuthContext::from_parts(parts)?;
        Self::decode(auth, token)
    }
}

/// On optional routes ([`JwtAuth::optional`]): `None` for a visitor without
/// credentials, for a cookie session that is over (its cookies are cleared)
/// and, by default, while the store is unavailable (cookies kept); the
/// rejection (401 `invalid_token`) for a bearer token that is invalid,
/// expired or revoked, so API clients learn to refresh. Use
/// [`Authentication`] to tell these cases apart.
impl<S, T> OptionalFromRequestParts<S> for Claims<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send + Sync + 'static,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, AuthRejection> {
        let context = AuthContext::get(parts)?;
        match context.outcome() {
            Ok(token) => Claims::decode(&context.auth, token).map(Some),
            Err(Refusal::Refused(error)) => Err(context.rejection(error.clone())),
            Err(Refusal::Unavailable) if !context.auth.inner.unavailable_as_guest => {
                Err(context.rejection(AuthError::Unavailable))
            }
            Err(_) => Ok(None),
        }
    }
}

/// Everything an optional route may want to know about the caller.
///
/// ```
/// use tower_jwt_auth::Authentication;
///
/// async fn hello(auth: Authentication) -> String {
///     match auth {
///         Authentication::Authenticated(claims) => format!("hello {}", claims.sub()),
///         Authentication::SessionEnded => "your session ended, please log in again".into(),
///         Authentication::Unavailable => "hello (we could not check your session right now)".into(),
///         _ => "hello visitor".into(),
///     }
/// }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Authentication<T = NoClaims> {
    /// A valid token.
    Authenticated(Claims<T>),
    /// No credentials at all.
    Guest,
    /// A cookie session that is over (revoked elsewhere, expired): the layer
    /// clears its cookies on this response.
    SessionEnded,
    /// The session could not be checked (store down during a refresh, or
    /// revocations still loading); cookies are kept.
    Unavailable,
    /// A presented credential was refused (an invalid, expired or revoked
    /// bearer token).
    Refused(AuthError),
}

impl<S, T> FromRequestParts<S> for Authentication<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send + Sync + 'static,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AuthRejection> {
        let context = AuthContext::get(parts)?;
        Ok(match context.outcome() {
            Ok(token) => Self::Authenticated(Claims::decode(&context.auth, token)?),
            Err(Refusal::NoCredentials) => Self::Guest,
            Err(Refusal::SessionEnded(_)) => Self::SessionEnded,
            Err(Refusal::Unavailable) => Self::Unavailable,
            Err(Refusal::Refused(error)) => Self::Refused(error.clone()),
        })
    }
}

/// Custom claims for handlers that need only the registered ones: accepts
/// any payload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoClaims;

impl<'de> Deserialize<'de> for NoClaims {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer).map(|_| Self)
    }
}

/// The caller's session: log it out, log out everywhere (or everywhere
/// else), list and revoke the user's devices, re-authenticate. Extracting it needs the [`JwtAuth`] layer in front of the
/// handler (a protected route).
///
/// ```
/// use axum::{
///     Json, Router,
///     extract::Path,
///     http::StatusCode,
///     routing::{delete, get, post},
/// };
/// use tower_jwt_auth::{AuthError, JwtAuth, LoggedOut, Session, SessionInfo, SigningKey};
///
/// async fn logout(session: Session) -> Result<LoggedOut, AuthError> {
///     session.logout().await // 204, both cookies cleared
/// }
///
/// async fn logout_everywhere(session: Session) -> Result<LoggedOut, AuthError> {
///     session.logout_all().await
/// }
///
/// /// The user's devices, this one marked `"current": true`.
/// async fn devices(session: Session) -> Result<Json<Vec<SessionInfo>>, AuthError> {
///     Ok(Json(session.list().await?))
/// }
///
/// /// Signs one device out; another user's session id answers 404.
/// async fn revoke(session: Session, Path(id): Path<String>) -> Result<StatusCode, AuthError> {
///     session.revoke(&id).await?;
///     Ok(StatusCode::NO_CONTENT)
/// }
///
/// let auth = JwtAuth::new(SigningKey::hs256("k", &[7; 32])?);
/// let app: Router = Router::new()
///     .route("/logout", post(logout))
///     .route("/logout-all", post(logout_everywhere))
///     .route("/sessions", get(devices))
///     .route("/sessions/{id}", delete(revoke))
///     .route_layer(auth);
/// # Ok::<(), tower_jwt_auth::KeyError>(())
/// ```
///
/// `tower_sessions::Session` has the same name: with both crates in one
/// file, import this one under another name,
/// `use tower_jwt_auth::Session as AuthSession;`.
#[derive(Clone)]
pub struct Session {
    auth: JwtAuth,
    token: Arc<VerifiedToken>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").field("id", &self.id()).field("user_id", &self.user_id()).finish()
    }
}

impl Session {
    /// The session id (`sid`).
    pub fn id(&self) -> &str {
        &self.token.claims.sid
    }

    /// The user id (`sub`).
    pub fn user_id(&self) -> &str {
        &self.token.claims.sub
    }

    /// Revokes this session (its refresh token, and its access tokens on
    /// every instance) and answers `204` clearing both cookies.
    pub async fn logout(&self) -> Result<LoggedOut, AuthError> {
        match self.auth.revoke_session_because(self.user_id(), self.id(), crate::RevocationCause::Logout).await {
            // Not a live session of this user (ended, revoked elsewhere,
            // or a token naming another user's session): nothing to revoke,
            // and nothing may be revoked in its name. The cookies still go.
            Ok(()) | Err(AuthError::NotFound(_)) => Ok(LoggedOut { auth: self.auth.clone() }),
            Err(error) => Err(error),
        }
    }

    /// Revokes every session of the user and answers `204` clearing both cookies.
    ///
    /// ```
    /// use tower_jwt_auth::{AuthError, LoggedOut, Session};
    ///
    /// async fn logout_everywhere(session: Session) -> Result<LoggedOut, AuthError> {
    ///     session.logout_all().await
    /// }
    /// ```
    pub async fn logout_all(&self) -> Result<LoggedOut, AuthError> {
        self.auth.revoke_all_sessions(self.user_id()).await?;
        Ok(LoggedOut { auth: self.auth.clone() })
    }

    /// Revokes every other session of the user, keeping this one ("sign out
    /// everywhere else"); returns how many were revoked.
    pub async fn logout_others(&self) -> Result<usize, AuthError> {
        self.auth.revoke_other_sessions(self.user_id(), self.id()).await
    }

    /// The user's live sessions, this one marked `current`.
    ///
    /// ```
    /// use axum::Json;
    /// use tower_jwt_auth::{AuthError, Session, SessionInfo};
    ///
    /// async fn devices(session: Session) -> Result<Json<Vec<SessionInfo>>, AuthError> {
    ///     Ok(Json(session.list().await?))
    /// }
    /// ```
    pub async fn list(&self) -> Result<Vec<SessionInfo>, AuthError> {
        self.auth.list_sessions(self.user_id(), Some(self.id())).await
    }

    /// Revokes one of the user's sessions; `NotFound` (404) for any id that
    /// is not a live session of this user.
    ///
    /// ```
    /// use axum::{extract::Path, http::StatusCode};
    /// use tower_jwt_auth::{AuthError, Session};
    ///
    /// async fn revoke(session: Session, Path(id): Path<String>) -> Result<StatusCode, AuthError> {
    ///     session.revoke(&id).await?;
    ///     Ok(StatusCode::NO_CONTENT)
    /// }
    /// ```
    pub async fn revoke(&self, sid: &str) -> Result<(), AuthError> {
        self.auth.revoke_session(self.user_id(), sid).await
    }

    /// Marks this session freshly authenticated after the application
    /// checked the password again: same `sid`, `auth_time` now, new tokens
    /// (see [`JwtAuth::reauthenticate`]).
    pub async fn reauthenticate(&self) -> Result<Tokens, AuthError> {
        self.auth.reauthenticate(self.user_id(), self.id()).await
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AuthRejection> {
        let (auth, token) = AuthContext::from_parts(parts)?;
        if auth.inner.sessions.is_none() {
            return Err(AuthRejection {
                auth: Some(auth.clone()),
                error: AuthError::Misconfigured("this layer only verifies tokens: it has no sessions"),
            });
        }
        Ok(Self { auth: auth.clone(), token: token.clone() })
    }
}
