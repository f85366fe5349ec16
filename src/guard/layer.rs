//! Guards as tower layers, for `route_layer` or `Handler::layer`.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use axum::response::{IntoResponse, Response};
use http::Request;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::{Guard, Require, RequireRecentLogin, RequireRole, RequireScope, check_request};
use crate::{error::AuthError, extract::AuthContext};

macro_rules! guard_layers {
    ($($guard:ty),*) => {$(
        impl<S> Layer<S> for $guard {
            type Service = GuardService<S, $guard>;

            fn layer(&self, inner: S) -> Self::Service {
                GuardService { inner, guard: self.clone() }
            }
        }
    )*};
}
guard_layers!(RequireScope, RequireRole, RequireRecentLogin, Require);

/// The service a guard wraps around a route.
#[derive(Clone, Debug)]
pub struct GuardService<S, G> {
    inner: S,
    guard: G,
}

impl<S, G, B> Service<Request<B>> for GuardService<S, G>
where
    S: Service<Request<B>>,
    S::Response: IntoResponse,
    G: Guard,
{
    type Response = Response;
    type Error = S::Error;
    type Future = GuardFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let refused = match request.extensions().get::<AuthContext>() {
            None => Some(AuthError::Misconfigured("A guard needs the JwtAuth layer in front of it").into_response()),
            Some(context) => {
                check_request(context, |claims| self.guard.check(claims)).err().map(|error| context.auth.reject(error))
            }
        };
        match refused {
            Some(response) => GuardFuture { state: GuardState::Refused { response: Some(response) } },
            None => GuardFuture { state: GuardState::Inner { future: self.inner.call(request) } },
        }
    }
}

pin_project! {
    /// The response future of [`GuardService`].
    pub struct GuardFuture<F> {
        #[pin]
        state: GuardState<F>,
    }
}

pin_project! {
    #[project = GuardStateProj]
    enum GuardState<F> {
        // The route's own.
        Inner { #[pin] future: F },
        // The guard said no.
        Refused { response: Option<Response> },
    }
}

impl<F, R, E> Future for GuardFuture<F>
where
    F: Future<Output = Result<R, E>>,
    R: IntoResponse,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            GuardStateProj::Inner { future } => future.poll(cx).map_ok(IntoResponse::into_response),
            GuardStateProj::Refused { response } => {
                Poll::Ready(Ok(response.take().expect("GuardFuture polled after completion")))
            }
        }
    }
}
