//! Cross-site request forgery protection for cookie-authenticated requests.
//!
//! The check itself is tower-http's `csrf` module (Go 1.25's
//! `CrossOriginProtection`: `Sec-Fetch-Site`, then `Origin` against `Host`
//! and trusted origins; requests with neither header pass). Its layer cannot
//! be used as is: its bypass predicate sees only the method and URI, while
//! we must exempt bearer-authenticated requests (not exposed to CSRF) and
//! must refuse *before* any refresh or rotation. So the layer runs tower-http's
//! service as a probe, on cookie-authenticated unsafe requests only.
//!
//! For browsers that send neither `Sec-Fetch-Site` nor `Origin`, an optional
//! double-submit mode also requires an `X-CSRF-Token` header equal to
//! `HMAC(key, sid)`, which the page reads from a non-HttpOnly `__Host-csrf`
//! cookie: a cross-site page can neither read that cookie nor set a
//! `__Host-` one, and the token is bound to the session.

use std::{
    convert::Infallible,
    future::{Future, Ready, ready},
    pin::pin,
    task::{Context, Poll, Waker},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, Method, Request, Response, Uri, header};
use sha2::Sha256;
use tower_http::csrf::{Csrf, CsrfLayer};
use tower_layer::Layer;
use tower_service::Service;

use crate::error::AuthError;

/// The configured check, built once.
#[derive(Clone)]
pub(crate) struct CsrfCheck {
    probe: Csrf<Pass, fn(tower_http::csrf::ProtectionError) -> Response<()>>,
    pub(crate) double_submit: Option<DoubleSubmit>,
}

const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// The header carrying the double-submit token.
pub(crate) const TOKEN_HEADER: HeaderName = HeaderName::from_static("x-csrf-token");

/// Session-bound double-submit tokens: `HMAC(key, sid)`.
#[derive(Clone)]
pub(crate) struct DoubleSubmit {
    key: Hmac<Sha256>,
    /// The readable cookie the page takes the token from.
    pub(crate) cookie_name: String,
}

impl DoubleSubmit {
    pub(crate) fn new(secret: &[u8], cookie_name: String) -> Self {
        let mut derive = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
        derive.update(b"tower-jwt-auth csrf token key");
        let key = Hmac::new_from_slice(&derive.finalize().into_bytes()).expect("HMAC accepts keys of any length");
        Self { key, cookie_name }
    }

    fn mac(&self, sid: &str) -> Hmac<Sha256> {
        let mut mac = self.key.clone();
        mac.update(sid.as_bytes());
        mac
    }

    /// The token of session `sid`.
    pub(crate) fn token(&self, sid: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(sid).finalize().into_bytes())
    }

    /// Whether `presented` is the token of `sid` (constant-time).
    fn verify(&self, sid: &str, presented: &[u8]) -> bool {
        URL_SAFE_NO_PAD.decode(presented).is_ok_and(|tag| self.mac(sid).verify_slice(&tag).is_ok())
    }
}

/// The probe's inner service: reaching it means the request passed.
#[derive(Clone, Copy)]
pub(crate) struct Pass;

impl Service<Request<()>> for Pass {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<()>) -> Self::Future {
        ready(Ok(Response::new(())))
    }
}

fn refused(_: tower_http::csrf::ProtectionError) -> Response<()> {
    let mut response = Response::new(());
    *response.status_mut() = http::StatusCode::FORBIDDEN;
    response
}

impl CsrfCheck {
    pub(crate) fn new(trusted_origins: &[String], double_submit: Option<DoubleSubmit>) -> Result<Self, &'static str> {
        let mut layer = CsrfLayer::new();
        for origin in trusted_origins {
            // Browsers send `Origin` in lowercase; the check compares bytes.
            let origin = origin.to_ascii_lowercase();
            layer =
                layer.add_trusted_origin(origin).map_err(|_| "a trusted origin must look like https://host[:port]")?;
        }
        let layer = layer.with_rejection_response(refused as fn(_) -> _);
        Ok(Self { probe: layer.layer(Pass), double_submit })
    }

    /// In double-submit mode, refuses an unsafe cookie-authenticated request
    /// of session `sid` without its token.
    pub(crate) fn check_token(&self, method: &Method, headers: &HeaderMap, sid: &str) -> Result<(), AuthError> {
        let Some(double_submit) = &self.double_submit else { return Ok(()) };
        if is_safe(method) {
            return Ok(());
        }
        match headers.get(TOKEN_HEADER) {
            Some(token) if double_submit.verify(sid, token.as_bytes()) => Ok(()),
            Some(_) => Err(AuthError::CrossSiteRequest("The X-CSRF-Token header does not match the session")),
            None => Err(AuthError::CrossSiteRequest("The X-CSRF-Token header is required")),
        }
    }

    /// Refuses an unsafe cookie-authenticated request from another origin.
    pub(crate) fn check(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<(), AuthError> {
        if is_safe(method) {
            return Ok(());
        }
        // Only what the check reads: method, URI (authority) and three headers.
        let mut probe_request = Request::new(());
        *probe_request.method_mut() = method.clone();
        *probe_request.uri_mut() = uri.clone();
        for name in [header::HOST, header::ORIGIN, SEC_FETCH_SITE] {
            for value in headers.get_all(&name) {
                probe_request.headers_mut().append(name.clone(), value.clone());
            }
        }
        let mut probe = self.probe.clone();
        let mut future = pin!(probe.call(probe_request));
        // Both the check and `Pass` answer synchronously.
        match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Ok(response)) if response.status().is_success() => Ok(()),
            _ => Err(AuthError::CrossSiteRequest("Cross-site request refused for a cookie-authenticated session")),
        }
    }
}

/// The methods CSRF protection lets through (as Go's and tower-http's do).
fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}
