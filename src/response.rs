//! What handlers return: tokens as cookies (browsers) or as an RFC 6749 token
//! response (header clients), and logout responses that only clear cookies.

use std::time::Duration;

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Serialize;

use crate::{config::JwtAuth, session::Tokens};

/// `Cache-Control` of every response that sets or clears auth cookies: no
/// shared cache may store one user's `Set-Cookie` for another.
pub(crate) const NO_STORE: HeaderValue = HeaderValue::from_static("private, no-store");

/// Marks a response whose handler ended the session: the layer then adds no
/// refreshed cookies to it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SessionEnded;

impl Tokens {
    /// Sets the access and refresh cookies and answers
    /// `{"sub": …, "expires_in": N}`, with `Cache-Control: private, no-store`.
    ///
    /// ```
    /// use axum::response::IntoResponse;
    /// use http::header::SET_COOKIE;
    /// use tower_jwt_auth::{ClientInfo, JwtAuth, SigningKey};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
    /// let auth = JwtAuth::new(SigningKey::hs256("k", &[7; 32])?);
    /// let tokens = auth.login("alice", &serde_json::json!({}), ClientInfo::default()).await?;
    /// let response = tokens.into_cookies().into_response();
    /// let cookies: Vec<_> = response.headers().get_all(SET_COOKIE).iter().collect();
    /// assert_eq!(cookies.len(), 2); // __Host-access and __Host-refresh
    /// # Ok::<(), Box<dyn std::error::Error>>(()) })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// A whole login handler is on [`JwtAuth::login`](crate::JwtAuth::login).
    pub fn into_cookies(self) -> CookieTokens {
        CookieTokens(self)
    }

    /// Answers `{"token_type":"Bearer","access_token","expires_in","refresh_token"}`
    /// (RFC 6749 §5.1) with `Cache-Control: no-store`; sets no cookie.
    pub fn into_token_response(self) -> TokenResponse {
        TokenResponse(self)
    }

    /// Appends the `Set-Cookie` headers of these tokens to `headers`.
    pub(crate) fn append_cookies(&self, headers: &mut HeaderMap) {
        let cookies = &self.auth.inner.cookies;
        let refreshed = &self.refreshed;
        let access_ttl = Duration::from_secs(refreshed.access.expires_in);
        headers.append(header::SET_COOKIE, cookies.set(&cookies.access_name, &refreshed.access.token, access_ttl));
        headers.append(
            header::SET_COOKIE,
            cookies.set(&cookies.refresh_name, &refreshed.refresh_token, refreshed.refresh_max_age),
        );
        if let Some(double_submit) = &self.auth.inner.csrf.double_submit {
            let token = double_submit.token(self.session_id());
            headers.append(
                header::SET_COOKIE,
                cookies.set_readable(&double_submit.cookie_name, &token, refreshed.refresh_max_age),
            );
        }
        headers.insert(header::CACHE_CONTROL, NO_STORE);
    }
}

impl JwtAuth {
    /// Clears the auth cookies on `response`, with `Cache-Control: private,
    /// no-store` whatever the response said (a custom rejection renderer
    /// included).
    pub(crate) fn clear_cookies(&self, response: &mut Response) {
        self.inner.cookies.clear_both(response.headers_mut());
        response.headers_mut().insert(header::CACHE_CONTROL, NO_STORE);
    }
}

/// Tokens delivered as cookies; see [`Tokens::into_cookies`].
#[derive(Debug)]
pub struct CookieTokens(Tokens);

#[derive(Serialize)]
struct CookieBody<'a> {
    sub: &'a str,
    expires_in: u64,
}

impl IntoResponse for CookieTokens {
    fn into_response(self) -> Response {
        let body = CookieBody { sub: self.0.user_id(), expires_in: self.0.expires_in() };
        let mut response = Json(body).into_response();
        self.0.append_cookies(response.headers_mut());
        response
    }
}

/// Tokens delivered in the body; see [`Tokens::into_token_response`].
#[derive(Debug)]
pub struct TokenResponse(Tokens);

#[derive(Serialize)]
struct TokenBody<'a> {
    token_type: &'static str,
    access_token: &'a str,
    expires_in: u64,
    refresh_token: &'a str,
}

impl IntoResponse for TokenResponse {
    fn into_response(self) -> Response {
        let body = TokenBody {
            token_type: "Bearer",
            access_token: self.0.access_token(),
            expires_in: self.0.expires_in(),
            refresh_token: self.0.refresh_token(),
        };
        let mut response = Json(body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        response
    }
}

/// `204 No Content` that clears both auth cookies and sets none, whatever
/// the layer refreshed on the way in.
#[derive(Clone, Debug)]
pub struct LoggedOut {
    pub(crate) auth: JwtAuth,
}

impl IntoResponse for LoggedOut {
    fn into_response(self) -> Response {
        let mut response = StatusCode::NO_CONTENT.into_response();
        self.auth.clear_cookies(&mut response);
        response.extensions_mut().insert(SessionEnded);
        response
    }
}
