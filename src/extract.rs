//! The extractors handlers use: [`Claims<T>`] (and `Option<Claims<T>>`) for
//! the verified claims, [`Session`] to act on the caller's session.

use std::{fmt, ops::Deref, sync::Arc};

use axum::{
    extract::{FromRequestParts, OptionalFromRequestParts},
    response::{IntoResponse, Response},
};
use http::request::Parts;
use serde::{Deserialize, Deserializer, Serialize, de::DeserializeOwned};

use crate::{
    config::JwtAuth,
    error::AuthError,
    response::LoggedOut,
    session::SessionInfo,
    token::{RegisteredClaims, VerifiedToken},
};

/// What the layer found, left in the request's extensions for extractors.
#[derive(Clone)]
pub(crate) struct AuthContext {
    pub(crate) auth: JwtAuth,
    pub(crate) outcome: Result<Arc<VerifiedToken>, AuthError>,
}

impl AuthContext {
    fn from_parts(parts: &Parts) -> Result<(&JwtAuth, &Arc<VerifiedToken>), AuthRejection> {
        let Some(context) = parts.extensions.get::<Self>() else {
            tracing::debug!("no JwtAuth layer in front of a handler that needs claims");
            return Err(AuthRejection { auth: None, error: AuthError::MissingCredentials });
        };
        match &context.outcome {
            Ok(token) => Ok((&context.auth, token)),
            Err(error) => Err(AuthRejection { auth: Some(context.auth.clone()), error: error.clone() }),
        }
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
/// Serializes as the token's whole payload.
///
/// ```
/// use serde::Deserialize;
/// use tower_jwt_auth::Claims;
///
/// #[derive(Deserialize)]
/// struct MyClaims { role: String }
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

impl<S, T> OptionalFromRequestParts<S> for Claims<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send + Sync + 'static,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, AuthRejection> {
        match parts.extensions.get::<AuthContext>() {
            Some(AuthContext { auth, outcome: Ok(token) }) => Self::decode(auth, token).map(Some),
            _ => Ok(None),
        }
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

/// The caller's session: log it out, log out everywhere, list and revoke the
/// user's devices. Extracting it needs the [`JwtAuth`] layer in front of the
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
        match self.auth.revoke_session(self.user_id(), self.id()).await {
            Ok(()) => Ok(LoggedOut { auth: self.auth.clone() }),
            // Already gone (revoked elsewhere, expired): its access tokens
            // still go at once here, and the cookies go too.
            Err(AuthError::NotFound(_)) => {
                self.auth.inner.sessions.forget(&[self.id().to_owned()]);
                Ok(LoggedOut { auth: self.auth.clone() })
            }
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
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AuthRejection> {
        let (auth, token) = AuthContext::from_parts(parts)?;
        Ok(Self { auth: auth.clone(), token: token.clone() })
    }
}
