//! Ready-made endpoints: `POST /auth/refresh` (RFC 6749 §6 refresh for
//! header clients, cookie rotation for browsers; the path is configurable)
//! and the public JWKS document.

use axum::{
    Json, Router,
    body::to_bytes,
    extract::{Request, State},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use http::{HeaderValue, header};
use serde::Deserialize;

use crate::{config::JwtAuth, cookies, error::AuthError, refresh_token};

/// Largest refresh request body read.
const MAX_BODY: usize = 4 * 1024;

#[derive(Deserialize)]
struct RefreshRequest {
    refresh_token: String,
}

impl JwtAuth {
    /// A router with `POST /auth/refresh` (or the path set with
    /// [`JwtAuthBuilder::refresh_path`](crate::JwtAuthBuilder::refresh_path)):
    /// a JSON body `{"refresh_token"}`
    /// (or an RFC 6749 form body `grant_type=refresh_token&refresh_token=…`)
    /// answers a new token response; without one, the refresh cookie is
    /// rotated and new cookies are set. Failures answer RFC 6749 §5.2
    /// `400 invalid_grant`. Merge it next to (not behind) the layer.
    ///
    /// ```
    /// use axum::Router;
    /// use tower_jwt_auth::{JwtAuth, SigningKey};
    /// let auth = JwtAuth::new(SigningKey::hs256("k", &[7; 32])?);
    /// let app: Router = Router::new().merge(auth.refresh_router());
    /// # Ok::<(), tower_jwt_auth::KeyError>(())
    /// ```
    pub fn refresh_router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        Router::new().route(&self.inner.refresh_path, post(refresh)).with_state(self.clone())
    }

    /// A router serving the public keys at `GET /.well-known/jwks.json`.
    pub fn jwks_router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        Router::new().route("/.well-known/jwks.json", get(jwks)).with_state(self.clone())
    }
}

async fn refresh(State(auth): State<JwtAuth>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(_) => return auth.reject(AuthError::InvalidRequest("The request body is too large")),
    };
    if !body.iter().all(u8::is_ascii_whitespace) {
        let Some(token) = token_from_body(&parts.headers, &body) else {
            return auth.reject(AuthError::InvalidRequest("Expected a refresh_token"));
        };
        return match auth.refresh(&token).await {
            Ok(tokens) => tokens.into_token_response().into_response(),
            Err(error) => auth.reject(error),
        };
    }
    let Some(token) = cookies::find(&parts.headers, &auth.inner.cookies.refresh_name) else {
        // RFC 6749 §5.2: a missing parameter is `invalid_request`.
        return auth.reject(AuthError::InvalidRequest("No refresh token was provided"));
    };
    let csrf = &auth.inner.csrf;
    let sid = auth.inner.sessions.as_ref().and_then(|s| s.session_id_of(token)).unwrap_or_default();
    let checked = csrf.check(&parts.method, &parts.uri, &parts.headers);
    if let Err(error) = checked.and_then(|()| csrf.check_token(&parts.method, &parts.headers, &sid)) {
        return auth.reject(error);
    }
    match auth.refresh(token).await {
        Ok(tokens) => tokens.into_cookies().into_response(),
        Err(error) => {
            let unavailable = error == AuthError::Unavailable;
            let mut response = auth.reject(error);
            if !unavailable {
                auth.clear_cookies(&mut response);
            }
            response
        }
    }
}

/// The refresh token of a JSON or form-encoded body.
fn token_from_body(headers: &http::HeaderMap, body: &[u8]) -> Option<String> {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let token = if form {
        let mut pairs = form_urlencoded::parse(body);
        if pairs.clone().any(|(k, v)| k == "grant_type" && v != "refresh_token") {
            return None;
        }
        pairs.find(|(k, _)| k == "refresh_token")?.1.into_owned()
    } else {
        serde_json::from_slice::<RefreshRequest>(body).ok()?.refresh_token
    };
    (token.len() <= refresh_token::MAX_LEN).then_some(token)
}

async fn jwks(State(auth): State<JwtAuth>) -> Response {
    let mut response = Json(auth.jwks()).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    response
}
