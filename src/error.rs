//! One error type for everything the layer, its guards and its handlers
//! refuse, and its mapping to RFC 6750 / RFC 9470 (resource requests) and
//! RFC 6749 §5.2 (token endpoint) responses.

use std::sync::Arc;

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

use crate::{challenge::Challenge, store::StoreError};

/// Why a request was refused.
///
/// Every variant knows its status, its error code and a human description;
/// none carries a token value. Rendered by [`IntoResponse`] as that status,
/// a `WWW-Authenticate: Bearer …` challenge on 401/403 (RFC 6750 §3, RFC 9470)
/// and a JSON body `{"error", "error_description"}`. Replace the rendering
/// with [`JwtAuthBuilder::on_rejection`](crate::JwtAuthBuilder::on_rejection).
///
/// | variant | status | `error` (body) | in the challenge |
/// |---|---|---|---|
/// | `MissingCredentials` | 401 | `login_required` | none (RFC 6750 §3.1) |
/// | `InvalidCredentials` | 401 | `invalid_grant` | none |
/// | `InvalidRequest` | 400 | `invalid_request` | `invalid_request` |
/// | `InvalidToken` | 401 | `invalid_token` | `invalid_token` |
/// | `InsufficientScope` | 403 | `insufficient_scope` | `insufficient_scope`, `scope` |
/// | `InsufficientUserAuthentication` | 401 | `insufficient_user_authentication` | the same, `max_age`, `acr_values` |
/// | `CrossSiteRequest` | 403 | `access_denied` | none (not a token problem) |
/// | `InvalidGrant` | 400 | `invalid_grant` | — |
/// | `NotFound` | 404 | `not_found` | — |
/// | `Unavailable` | 503 + `Retry-After` | `temporarily_unavailable` | — |
/// | `Misconfigured` | 500 | `server_error` | — |
///
/// No credentials at all is `login_required` in the body: the header must
/// carry no error code (RFC 6750 §3.1), the body needs one, and OpenID
/// Connect's `login_required` (registered in IANA's OAuth extensions error
/// registry) says exactly "the user has to authenticate"; clients tell it
/// from `invalid_token` (refresh) and `insufficient_scope` (not allowed).
/// A cross-site refusal is `access_denied` (RFC 6749 §4.1.2.1): the request
/// is refused whatever its token, which a 400-family code would misstate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No credentials at all: 401 with a bare `WWW-Authenticate: Bearer`.
    #[error("No access token was provided")]
    MissingCredentials,
    /// Wrong user name or password at login: 401 with a bare
    /// `WWW-Authenticate: Bearer` and `invalid_grant` in the body.
    ///
    /// `invalid_grant` is the RFC 6749 §5.2 code for resource-owner
    /// credentials that are wrong, so OAuth clients understand it, and it is
    /// the code every failed refresh answers too: one code means "what you
    /// sent cannot log you in". A login form that wants its own body can
    /// answer its own error instead of this variant, or render every
    /// rejection with
    /// [`JwtAuthBuilder::on_rejection`](crate::JwtAuthBuilder::on_rejection).
    #[error("Wrong user name or password")]
    InvalidCredentials,
    /// A malformed request, such as a broken `Authorization` header: 400 `invalid_request`.
    #[error("{0}")]
    InvalidRequest(&'static str),
    /// A bad, expired, not-yet-valid, revoked, wrong-issuer or wrong-audience
    /// access token: 401 `invalid_token`.
    #[error("{0}")]
    InvalidToken(&'static str),
    /// A valid token without the privileges the route needs (RFC 6750
    /// §3.1): 403 `insufficient_scope`, naming the required scopes when
    /// there are any.
    #[error("{description}")]
    InsufficientScope {
        /// The scopes that would do (space-separated), if the route requires scopes.
        scope: Option<Arc<str>>,
        /// Why.
        description: &'static str,
    },
    /// The user authenticated too long ago, or not strongly enough (RFC
    /// 9470): 401 `insufficient_user_authentication` with `max_age` and/or
    /// `acr_values`, so the client sends the user to log in again.
    #[error("{description}")]
    InsufficientUserAuthentication {
        /// Seconds within which the user must have authenticated.
        max_age: Option<u64>,
        /// Acceptable authentication context classes (space-separated).
        acr_values: Option<Arc<str>>,
        /// Why.
        description: &'static str,
    },
    /// A cookie-authenticated unsafe request from another site: 403 `access_denied`.
    #[error("{0}")]
    CrossSiteRequest(&'static str),
    /// A refresh token that is unknown, malformed, expired, revoked or reused
    /// (RFC 6749 §5.2): 400 `invalid_grant`.
    #[error("{0}")]
    InvalidGrant(&'static str),
    /// The thing asked for does not exist for this user: 404.
    #[error("{0}")]
    NotFound(&'static str),
    /// The session store could not be reached, or revocations are not
    /// loaded yet: 503 with `Retry-After`; no session data and no cookie was
    /// changed.
    #[error("the session store is unavailable, retry shortly")]
    Unavailable,
    /// The server is misconfigured (for example a handler that needs claims
    /// on a route without the layer): 500. Never caused by client input.
    #[error("{0}")]
    Misconfigured(&'static str),
}

/// The JSON body of every rejection.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_description: &'a str,
}

impl AuthError {
    /// The access token expired (the description bearer clients look for).
    pub const EXPIRED: Self = Self::InvalidToken("The access token expired");

    /// The access token's session was revoked.
    pub(crate) const REVOKED: Self = Self::InvalidToken("The session was revoked");

    /// The HTTP status of this rejection.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingCredentials
            | Self::InvalidCredentials
            | Self::InvalidToken(_)
            | Self::InsufficientUserAuthentication { .. } => StatusCode::UNAUTHORIZED,
            Self::InvalidRequest(_) | Self::InvalidGrant(_) => StatusCode::BAD_REQUEST,
            Self::InsufficientScope { .. } | Self::CrossSiteRequest(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Misconfigured(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The error code of the JSON body (see the table above).
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingCredentials => "login_required",
            Self::InvalidRequest(_) => "invalid_request",
            Self::InvalidToken(_) => "invalid_token",
            Self::InsufficientScope { .. } => "insufficient_scope",
            Self::InsufficientUserAuthentication { .. } => "insufficient_user_authentication",
            Self::CrossSiteRequest(_) => "access_denied",
            Self::InvalidGrant(_) | Self::InvalidCredentials => "invalid_grant",
            Self::NotFound(_) => "not_found",
            Self::Unavailable => "temporarily_unavailable",
            Self::Misconfigured(_) => "server_error",
        }
    }

    /// Renders the rejection, naming `realm` in `WWW-Authenticate` when set.
    pub fn into_response_with_realm(self, realm: Option<&str>) -> Response {
        let status = self.status();
        let description = self.to_string();
        let body = ErrorBody { error: self.code(), error_description: &description };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(challenge) = self.challenge(realm) {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    /// The `WWW-Authenticate` challenge: on every 401 and 403 and on a
    /// malformed bearer request (RFC 6750 §3); the token endpoint's errors
    /// (RFC 6749 §5.2) and 404/503/500 have none.
    pub fn challenge(&self, realm: Option<&str>) -> Option<HeaderValue> {
        let mut challenge = Challenge::bearer(realm);
        match self {
            // No token presented (or a login form): no error code (RFC 6750 §3.1).
            Self::MissingCredentials | Self::InvalidCredentials | Self::CrossSiteRequest(_) => {}
            Self::InvalidRequest(_) | Self::InvalidToken(_) => {
                challenge.param("error", self.code()).param("error_description", &self.to_string());
            }
            Self::InsufficientScope { scope, description } => {
                challenge.param("error", self.code());
                if let Some(scope) = scope {
                    challenge.param("scope", scope);
                }
                challenge.param("error_description", description);
            }
            Self::InsufficientUserAuthentication { max_age, acr_values, description } => {
                challenge.param("error", self.code()).param("error_description", description);
                if let Some(acr_values) = acr_values {
                    challenge.param("acr_values", acr_values);
                }
                if let Some(max_age) = max_age {
                    challenge.token_param("max_age", *max_age);
                }
            }
            Self::InvalidGrant(_) | Self::NotFound(_) | Self::Unavailable | Self::Misconfigured(_) => return None,
        }
        Some(challenge.finish())
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        self.into_response_with_realm(None)
    }
}

impl From<StoreError> for AuthError {
    fn from(_: StoreError) -> Self {
        // Logged once per outage by the session layer, not per request.
        Self::Unavailable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn challenge(error: &AuthError, realm: Option<&str>) -> String {
        error.challenge(realm).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
    }

    #[test]
    fn challenges_follow_rfc6750_and_rfc9470() {
        assert_eq!(
            challenge(&AuthError::EXPIRED, Some("api")),
            r#"Bearer realm="api", error="invalid_token", error_description="The access token expired""#
        );
        assert_eq!(challenge(&AuthError::MissingCredentials, None), "Bearer");
        assert_eq!(challenge(&AuthError::MissingCredentials, Some(r#"a"b"#)), r#"Bearer realm="a\"b""#);
        let scope = AuthError::InsufficientScope { scope: Some("admin write".into()), description: "Not allowed" };
        assert_eq!(
            challenge(&scope, None),
            r#"Bearer error="insufficient_scope", scope="admin write", error_description="Not allowed""#
        );
        let stale = AuthError::InsufficientUserAuthentication {
            max_age: Some(300),
            acr_values: Some("mfa phr".into()),
            description: "Log in again",
        };
        assert_eq!(
            challenge(&stale, None),
            r#"Bearer error="insufficient_user_authentication", error_description="Log in again", acr_values="mfa phr", max_age=300"#
        );
        assert_eq!(scope.status(), StatusCode::FORBIDDEN);
        assert_eq!(stale.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(challenge(&AuthError::InvalidGrant("x"), None), "");
    }
}
