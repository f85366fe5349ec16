//! Cross-site request forgery protection for cookie-authenticated requests.
//!
//! The check itself is tower-http's `csrf` module (Go 1.25's
//! `CrossOriginProtection`: `Sec-Fetch-Site`, then `Origin` against `Host`
//! and trusted origins; requests with neither header pass). Its layer cannot
//! be used as is: its bypass predicate sees only the method and URI, while
//! we must exempt bearer-authenticated requests (not exposed to CSRF) and
//! must refuse *before* any refresh or rotation. So the layer runs tower-http's
//! service as a probe, on cookie-authenticated unsafe requests only.

use std::{
    convert::Infallible,
    future::{Future, Ready, ready},
    pin::pin,
    task::{Context, Poll, Waker},
};

use http::{Method, Request, Response};
use tower_http::csrf::{Csrf, CsrfLayer};
use tower_layer::Layer;
use tower_service::Service;

use crate::error::AuthError;

/// The configured check, built once.
#[derive(Clone)]
pub(crate) struct CsrfCheck {
    probe: Csrf<Pass, fn(tower_http::csrf::ProtectionError) -> Response<()>>,
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
    pub(crate) fn new(trusted_origins: &[String]) -> Result<Self, &'static str> {
        let mut layer = CsrfLayer::new();
        for origin in trusted_origins {
            layer =
                layer.add_trusted_origin(origin).map_err(|_| "a trusted origin must look like https://host[:port]")?;
        }
        let layer = layer.with_rejection_response(refused as fn(_) -> _);
        Ok(Self { probe: layer.layer(Pass) })
    }

    /// Refuses an unsafe cookie-authenticated request from another origin.
    pub(crate) fn check<B>(&self, request: &Request<B>) -> Result<(), AuthError> {
        if matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
            return Ok(());
        }
        // Only what the check reads: method, URI (authority) and headers.
        let mut probe_request = Request::new(());
        *probe_request.method_mut() = request.method().clone();
        *probe_request.uri_mut() = request.uri().clone();
        *probe_request.headers_mut() = request.headers().clone();
        let mut probe = self.probe.clone();
        let mut future = pin!(probe.call(probe_request));
        // Both the check and `Pass` answer synchronously.
        match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Ok(response)) if response.status().is_success() => Ok(()),
            _ => Err(AuthError::CrossSiteRequest("Cross-site request refused for a cookie-authenticated session")),
        }
    }
}
