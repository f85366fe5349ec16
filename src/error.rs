//! One error type for everything the layer and its handlers refuse, and its
//! mapping to RFC 6750 (bearer) and RFC 6749 §5.2 (token endpoint) responses.

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

use crate::store::StoreError;

/// Why a request was refused.
///
/// Every variant knows its status, its RFC 6750 / RFC 6749 error code and a
/// human description; none carries a token value. Rendered by [`IntoResponse`]
/// as that status, a `WWW-Authenticate: Bearer …` header on 401/403, and a JSON
/// body `{"error", "error_description"}`. Replace the rendering with
/// [`JwtAuthBuilder::on_rejection`](crate::JwtAuthBuilder::on_rejection).
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
    /// A cookie-authenticated unsafe request from another site: 403.
    #[error("{0}")]
    CrossSiteRequest(&'static str),
    /// A refresh token that is unknown, malformed, expired, revoked or reused
    /// (RFC 6749 §5.2): 400 `invalid_grant`.
    #[error("{0}")]
    InvalidGrant(&'static str),
    /// The thing asked for does not exist for this user: 404.
    #[error("{0}")]
    NotFound(&'static str),
    /// The session store could not be reached: 503 with `Retry-After`; no
    /// session data and no cookie was changed.
    #[error("the session store is unavailable, retry shortly")]
    Unavailable,
    /// The server is misconfigured (for example no session store for login):
    /// 500. Never caused by client input.
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

    /// The HTTP status of this rejection.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingCredentials | Self::InvalidCredentials | Self::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            Self::InvalidRequest(_) | Self::InvalidGrant(_) => StatusCode::BAD_REQUEST,
            Self::CrossSiteRequest(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Misconfigured(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The RFC 6750 / RFC 6749 error code, `None` when there is none to give
    /// (no credentials at all, RFC 6750 §3.1).
    pub fn code(&self) -> Option<&'static str> {
        match self {
            Self::MissingCredentials => None,
            Self::InvalidRequest(_) | Self::CrossSiteRequest(_) => Some("invalid_request"),
            Self::InvalidToken(_) => Some("invalid_token"),
            Self::InvalidGrant(_) | Self::InvalidCredentials => Some("invalid_grant"),
            Self::NotFound(_) => Some("not_found"),
            Self::Unavailable => Some("temporarily_unavailable"),
            Self::Misconfigured(_) => Some("server_error"),
        }
    }

    /// Renders the rejection, naming `realm` in `WWW-Authenticate` when set.
    pub fn into_response_with_realm(self, realm: Option<&str>) -> Response {
        let status = self.status();
        let description = self.to_string();
        let body = ErrorBody { error: self.code().unwrap_or("unauthorized"), error_description: &description };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        // RFC 6750 §3: every bearer-request rejection names the scheme; the
        // token endpoint's errors (RFC 6749 §5.2) and 404/503 do not.
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) || matches!(self, Self::InvalidRequest(_))
        {
            headers.insert(header::WWW_AUTHENTICATE, self.www_authenticate(realm));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    /// `Bearer realm="…", error="…", error_description="…"` (RFC 6750 §3).
    fn www_authenticate(&self, realm: Option<&str>) -> HeaderValue {
        let mut value = String::from("Bearer");
        let mut sep = " ";
        if let Some(realm) = realm {
            value.push_str(sep);
            push_param(&mut value, "realm", realm);
            sep = ", ";
        }
        // No token was presented: no error code (RFC 6750 §3.1).
        let code = match self {
            Self::MissingCredentials | Self::InvalidCredentials => None,
            _ => self.code(),
        };
        if let Some(code) = code {
            value.push_str(sep);
            push_param(&mut value, "error", code);
            value.push_str(", ");
            push_param(&mut value, "error_description", &self.to_string());
        }
        // Realm and descriptions are ASCII (configured or static), so this
        // only falls back on a misconfigured non-ASCII realm.
        HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
    }
}

/// Appends `name="value"`, escaping per RFC 7230 quoted-string.
fn push_param(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str("=\"");
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        self.into_response_with_realm(None)
    }
}

impl From<StoreError> for AuthError {
    fn from(error: StoreError) -> Self {
        tracing::warn!(%error, "session store failure");
        Self::Unavailable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn www_authenticate_follows_rfc6750() {
        let header = AuthError::EXPIRED.www_authenticate(Some("api"));
        assert_eq!(
            header,
            r#"Bearer realm="api", error="invalid_token", error_description="The access token expired""#
        );
        assert_eq!(AuthError::MissingCredentials.www_authenticate(None), "Bearer");
        assert_eq!(AuthError::MissingCredentials.www_authenticate(Some(r#"a"b"#)), r#"Bearer realm="a\"b""#);
    }
}
