//! The gateway as a tower `Service`: takes what the layer decided about a
//! request, forwards it upstream and streams the answer back.
//!
//! The HTTP client is hyper-util's pooled `legacy::Client` over plain TCP;
//! bodies stream through in both directions (`axum::body::Body`), never
//! buffered.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::atomic::{AtomicBool, Ordering},
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    BoxError, Json,
    body::{Body, Bytes, HttpBody},
    extract::ConnectInfo,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, Request, StatusCode, Version, header};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use serde::Serialize;
use tower_service::Service;

use super::{
    headers::{append_forwarded_for, strip_request, strip_response},
    path::Upstream,
    upstream_token::UpstreamTokens,
};
use crate::{config::JwtAuth, extract::AuthContext};

/// Added to upstream responses that say nothing about caching: they answer
/// one user's credentials, which a shared cache must not replay to another.
const PRIVATE: HeaderValue = HeaderValue::from_static("private");

/// Everything the gateway's clones share.
pub(crate) struct Shared {
    pub(crate) client: Client<HttpConnector, Body>,
    pub(crate) upstream: Upstream,
    pub(crate) tokens: UpstreamTokens,
    pub(crate) timeout: Duration,
    pub(crate) allow_set_cookie: Vec<String>,
    /// Whether the missing-layer mistake was logged already.
    pub(crate) reported_unlayered: AtomicBool,
}

/// The response future of [`Gateway`](super::Gateway). Boxed: it awaits a
/// network round trip, next to which one allocation is noise.
pub type GatewayFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl<B> Service<Request<B>> for super::Gateway
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = GatewayFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The pooled client takes requests at any time.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> GatewayFuture {
        let shared = self.shared.clone();
        Box::pin(async move { Ok(shared.forward(request.map(Body::new)).await) })
    }
}

impl Shared {
    async fn forward(&self, request: Request<Body>) -> Response {
        let (mut parts, body) = request.into_parts();
        let Some(context) = parts.extensions.remove::<AuthContext>() else {
            return self.unlayered();
        };
        // Optional mode lets unauthenticated requests through: not here.
        let session = match context.outcome() {
            Ok(session) => session.clone(),
            Err(refusal) => return context.auth.reject(refusal.error()),
        };
        let auth = context.auth;
        let uri = match self.upstream.target(&parts.uri) {
            Ok(uri) => uri,
            Err(bad) => {
                tracing::debug!(reason = bad.0, "request path not forwarded");
                return Failure::BadPath(bad.0).into_response();
            }
        };
        let bearer = match self.tokens.bearer(&auth, &session) {
            Ok(bearer) => bearer,
            Err(error) => {
                tracing::error!(%error, "the gateway could not sign an upstream token");
                return Failure::Misconfigured("The gateway could not sign an upstream token").into_response();
            }
        };
        strip_request(&mut parts.headers);
        if let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<std::net::SocketAddr>>() {
            append_forwarded_for(&mut parts.headers, peer.ip());
        }
        parts.headers.insert(header::AUTHORIZATION, bearer);
        parts.headers.insert(header::HOST, self.upstream.host.clone());
        let mut upstream_request = Request::new(body);
        *upstream_request.method_mut() = parts.method;
        *upstream_request.uri_mut() = uri;
        // The client speaks HTTP/1.1 upstream whatever the browser spoke.
        *upstream_request.version_mut() = Version::HTTP_11;
        *upstream_request.headers_mut() = parts.headers;

        let response = match tokio::time::timeout(self.timeout, self.client.request(upstream_request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) if request_body_failed(&error) => {
                // The client's fault (an aborted upload, a body limit in front).
                tracing::debug!(%error, "the request body could not be read");
                return Failure::BadBody.into_response();
            }
            Ok(Err(error)) => {
                let connect = error.is_connect();
                tracing::warn!(%error, connect, "the upstream did not answer");
                return Failure::Unavailable(if connect {
                    "The upstream is unreachable"
                } else {
                    "The upstream closed the connection without answering"
                })
                .into_response();
            }
            Err(_) => {
                tracing::warn!(timeout = ?self.timeout, "the upstream did not answer in time");
                return Failure::Timeout.into_response();
            }
        };
        let (mut parts, body) = response.into_parts();
        strip_response(&mut parts.headers, |name| self.keeps_cookie(&auth, name));
        if !parts.headers.contains_key(header::CACHE_CONTROL) {
            parts.headers.insert(header::CACHE_CONTROL, PRIVATE);
        }
        Response::from_parts(parts, Body::new(body))
    }

    /// Whether an upstream's cookie called `name` may reach the browser:
    /// allow-listed and not one of the session's own cookies.
    fn keeps_cookie(&self, auth: &JwtAuth, name: &str) -> bool {
        let cookies = &auth.inner.cookies;
        self.allow_set_cookie.iter().any(|allowed| allowed == name)
            && name != cookies.access_name
            && name != cookies.refresh_name
            && cookies.csrf_name.as_deref() != Some(name)
    }

    fn unlayered(&self) -> Response {
        if !self.reported_unlayered.swap(true, Ordering::Relaxed) {
            tracing::error!(
                "the BFF gateway received a request that did not pass through the JwtAuth layer: \
                 put the layer in front of it (see tower_jwt_auth::bff)"
            );
        }
        Failure::Misconfigured("The gateway is mounted without the JwtAuth layer in front of it").into_response()
    }
}

/// Whether the client failed because the request body did: its errors are
/// `axum::Error`s (every body is turned into an `axum::body::Body`).
fn request_body_failed(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        if error.is::<axum::Error>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// What the gateway itself answers when it cannot forward.
enum Failure {
    /// 400: the path would leave the upstream's base path.
    BadPath(&'static str),
    /// 400: the request body failed while it was being forwarded.
    BadBody,
    /// 502: refused, reset or closed connection.
    Unavailable(&'static str),
    /// 504: no response headers within the timeout.
    Timeout,
    /// 500: a deployment mistake, never client input.
    Misconfigured(&'static str),
}

#[derive(Serialize)]
struct FailureBody {
    error: &'static str,
    error_description: &'static str,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let (status, error, error_description) = match self {
            Self::BadPath(description) => (StatusCode::BAD_REQUEST, "invalid_request", description),
            Self::BadBody => (StatusCode::BAD_REQUEST, "invalid_request", "The request body could not be read"),
            Self::Unavailable(description) => (StatusCode::BAD_GATEWAY, "bad_gateway", description),
            Self::Timeout => (StatusCode::GATEWAY_TIMEOUT, "gateway_timeout", "The upstream did not answer in time"),
            Self::Misconfigured(description) => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", description),
        };
        let mut response = (status, Json(FailureBody { error, error_description })).into_response();
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}
