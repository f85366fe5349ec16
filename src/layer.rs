//! The middleware: [`JwtAuth`] as a `Layer`, its `Service`, and the response
//! future that refreshes expired cookie sessions before calling the handler
//! and writes the rotated cookies onto its response.
//!
//! Hot path (a valid token): parse the header or cookie, a cache lookup, a
//! revocation lookup, one extension insert. No lock, no I/O, no boxing.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Request, header};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::{
    config::JwtAuth,
    cookies,
    error::AuthError,
    extract::AuthContext,
    refresh_token,
    response::{NO_STORE, SessionEnded},
    session::Tokens,
    token::VerifiedToken,
};

impl<S> Layer<S> for JwtAuth {
    type Service = JwtAuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        JwtAuthService { inner, auth: self.clone() }
    }
}

/// The service [`JwtAuth`] wraps around the routes it protects.
#[derive(Clone, Debug)]
pub struct JwtAuthService<S> {
    inner: S,
    auth: JwtAuth,
}

/// What the request's credentials amount to.
enum Found {
    Token(Arc<VerifiedToken>),
    /// Cookie session whose access token is missing or stale: rotate this refresh token.
    Refresh(String),
    Rejected(AuthError),
}

impl JwtAuth {
    /// Reads and checks the request's credentials. Synchronous: anything
    /// needing the store is returned as [`Found::Refresh`].
    fn authenticate<B>(&self, request: &Request<B>) -> Found {
        let headers = request.headers();
        let mut authorization = headers.get_all(header::AUTHORIZATION).iter();
        if let Some(value) = authorization.next() {
            if authorization.next().is_some() {
                return Found::Rejected(AuthError::InvalidRequest("Only one Authorization header is allowed"));
            }
            return match self.verify_bearer(value) {
                Ok(token) => Found::Token(token),
                Err(error) => Found::Rejected(error),
            };
        }
        let cookie_names = &self.inner.cookies;
        let access = cookies::find(headers, &cookie_names.access_name);
        let refresh = cookies::find(headers, &cookie_names.refresh_name);
        if access.is_none() && refresh.is_none() {
            return Found::Rejected(AuthError::MissingCredentials);
        }
        // Cookies ride along with cross-site requests: refuse those before
        // anything else happens (no refresh, no rotation).
        let (method, csrf) = (request.method(), &self.inner.csrf);
        if let Err(error) = csrf.check(method, request.uri(), headers) {
            return Found::Rejected(error);
        }
        let access_error = match access.map(|token| self.verify(token)) {
            Some(Ok(token)) => {
                return match csrf.check_token(method, headers, &token.claims.sid) {
                    Ok(()) => Found::Token(token),
                    Err(error) => Found::Rejected(error),
                };
            }
            Some(Err(error)) => error,
            None => AuthError::MissingCredentials,
        };
        let Some(refresh) = refresh else { return Found::Rejected(access_error) };
        if refresh.len() > refresh_token::MAX_LEN {
            return Found::Rejected(AuthError::InvalidToken("The refresh token is invalid"));
        }
        // A refresh cookie that names no session fails the refresh itself.
        if csrf.double_submit.is_some()
            && let Some(sid) = self.inner.sessions.session_id_of(refresh)
            && let Err(error) = csrf.check_token(method, headers, &sid)
        {
            return Found::Rejected(error);
        }
        Found::Refresh(refresh.to_owned())
    }

    /// Verifies a bearer token. A cache hit needs no syntax check (only
    /// tokens that passed it got in), so the per-byte check runs on misses.
    fn verify_bearer(&self, value: &HeaderValue) -> Result<Arc<VerifiedToken>, AuthError> {
        let token = bearer_token(value)?;
        let verifier = &self.inner.verifier;
        let verified = match verifier.cached(token) {
            Some(hit) => hit?,
            None => verifier.verify_uncached(b64token(token)?)?,
        };
        self.check_revocation(verified)
    }

    /// Verifies an access token and checks that its session is not revoked.
    pub(crate) fn verify(&self, token: &str) -> Result<Arc<VerifiedToken>, AuthError> {
        self.check_revocation(self.inner.verifier.verify(token)?)
    }

    fn check_revocation(&self, verified: Arc<VerifiedToken>) -> Result<Arc<VerifiedToken>, AuthError> {
        if verified.is_revoked(&self.inner.revocations) {
            return Err(AuthError::InvalidToken("The session was revoked"));
        }
        Ok(verified)
    }

    fn context(&self, outcome: Result<Arc<VerifiedToken>, AuthError>) -> AuthContext {
        AuthContext { auth: self.clone(), outcome }
    }
}

const MALFORMED: AuthError = AuthError::InvalidRequest("The Authorization header is malformed");

/// The token of `Bearer <token>`, its syntax not checked yet (see [`b64token`]).
fn bearer_token(value: &HeaderValue) -> Result<&[u8], AuthError> {
    let bytes = value.as_bytes();
    let (scheme, token) = match bytes.iter().position(|&b| b == b' ') {
        Some(space) => (&bytes[..space], &bytes[space + 1..]),
        None => (bytes, &[][..]),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(AuthError::InvalidRequest("The Authorization header must use the Bearer scheme"));
    }
    Ok(token)
}

/// `b64token` (RFC 6750 §2.1): one token, nothing else, not even a space.
fn b64token(token: &[u8]) -> Result<&str, AuthError> {
    let body = &token[..token.len() - token.iter().rev().take_while(|&&b| b == b'=').count()];
    let allowed = |b: &u8| b.is_ascii_alphanumeric() || b"-._~+/".contains(b);
    if body.is_empty() || !body.iter().all(allowed) {
        return Err(MALFORMED);
    }
    // Only ASCII passed the check above.
    std::str::from_utf8(token).map_err(|_| MALFORMED)
}

impl<S, B> Service<Request<B>> for JwtAuthService<S>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Response: IntoResponse,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let auth = &self.auth;
        let error = match auth.authenticate(&request) {
            Found::Token(token) => {
                request.extensions_mut().insert(auth.context(Ok(token)));
                return ResponseFuture::inner(self.inner.call(request), After::Nothing);
            }
            Found::Refresh(refresh_token) => {
                // Only the service that reported ready may be called: keep it
                // for after the refresh and leave a clone in its place.
                let clone = self.inner.clone();
                let service = std::mem::replace(&mut self.inner, clone);
                let auth = auth.clone();
                return ResponseFuture {
                    state: State::Refreshing {
                        refresh: Box::pin(async move { auth.refresh(&refresh_token).await }),
                        waiting: Some(Box::new(Waiting { request, service, auth: self.auth.clone() })),
                    },
                };
            }
            Found::Rejected(error) => error,
        };
        tracing::debug!(reason = %error, "request not authenticated");
        if auth.optional && !matches!(error, AuthError::InvalidRequest(_)) {
            request.extensions_mut().insert(auth.context(Err(error)));
            ResponseFuture::inner(self.inner.call(request), After::Nothing)
        } else {
            ResponseFuture { state: State::Reject { auth: auth.clone(), error: Some(error) } }
        }
    }
}

type RefreshFuture = Pin<Box<dyn Future<Output = Result<Tokens, AuthError>> + Send>>;

/// What to do to the handler's response.
enum After {
    Nothing,
    /// The layer refreshed the session: set the new cookies.
    SetCookies(Tokens),
    /// The refresh cookie is dead: remove both cookies.
    ClearCookies(JwtAuth),
}

pin_project! {
    /// The response future of [`JwtAuthService`].
    pub struct ResponseFuture<S: Service<Request<B>>, B> {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S: Service<Request<B>>, B> {
        Refreshing {
            refresh: RefreshFuture,
            // Boxed: the request is large, and this future is moved around
            // on the hot path too.
            waiting: Option<Box<Waiting<S, B>>>,
        },
        Inner {
            #[pin]
            future: S::Future,
            after: After,
        },
        // The error, not its response: this future stays small.
        Reject {
            auth: JwtAuth,
            error: Option<AuthError>,
        },
    }
}

/// The request held back while its session is refreshed.
struct Waiting<S, B> {
    request: Request<B>,
    /// The inner service that reported ready.
    service: S,
    auth: JwtAuth,
}

impl<S: Service<Request<B>>, B> ResponseFuture<S, B> {
    fn inner(future: S::Future, after: After) -> Self {
        Self { state: State::Inner { future, after } }
    }
}

impl<S, B> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
    S::Response: IntoResponse,
{
    type Output = Result<Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Refreshing { refresh, waiting } => {
                    let outcome = ready!(refresh.as_mut().poll(cx));
                    let Waiting { mut request, mut service, auth } =
                        *waiting.take().expect("ResponseFuture polled after completion");
                    let auth = &auth;
                    let (outcome, after) = match outcome {
                        Ok(tokens) => {
                            let token = tokens.refreshed.access.verified.0.clone();
                            (Ok(token), After::SetCookies(tokens))
                        }
                        Err(error) => {
                            tracing::debug!(reason = %error, "transparent refresh failed");
                            let after = match error {
                                AuthError::Unavailable => After::Nothing,
                                _ => After::ClearCookies(auth.clone()),
                            };
                            (Err(as_resource_error(error)), after)
                        }
                    };
                    match outcome {
                        Err(error) if !auth.optional => {
                            let mut response = auth.reject(error);
                            apply(&mut response, after);
                            return Poll::Ready(Ok(response));
                        }
                        outcome => {
                            request.extensions_mut().insert(auth.context(outcome));
                            let future = service.call(request);
                            this.state.set(State::Inner { future, after });
                        }
                    }
                }
                StateProj::Inner { future, after } => {
                    let mut response = ready!(future.poll(cx))?.into_response();
                    apply(&mut response, std::mem::replace(after, After::Nothing));
                    return Poll::Ready(Ok(response));
                }
                StateProj::Reject { auth, error } => {
                    let error = error.take().expect("ResponseFuture polled after completion");
                    return Poll::Ready(Ok(auth.reject(error)));
                }
            }
        }
    }
}

/// A refresh failure as seen by a resource request (RFC 6750, not RFC 6749).
fn as_resource_error(error: AuthError) -> AuthError {
    match error {
        AuthError::InvalidGrant(description) => AuthError::InvalidToken(description),
        other => other,
    }
}

/// Adds the cookies decided on the way in, unless the handler ended the session.
fn apply(response: &mut Response, after: After) {
    if matches!(after, After::Nothing) || response.extensions().get::<SessionEnded>().is_some() {
        return;
    }
    match after {
        After::Nothing => {}
        After::SetCookies(tokens) => tokens.append_cookies(response.headers_mut()),
        After::ClearCookies(auth) => {
            auth.inner.cookies.clear_both(response.headers_mut());
            response.headers_mut().insert(header::CACHE_CONTROL, NO_STORE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing_is_strict() {
        let ok = |v: &'static str| bearer_token(&HeaderValue::from_static(v)).and_then(b64token).map(str::to_owned);
        assert_eq!(ok("Bearer abc.def-_~+/=="), Ok("abc.def-_~+/==".to_owned()));
        assert_eq!(ok("bearer abc"), Ok("abc".to_owned()));
        for bad in ["Bearer", "Bearer ", "Bearer  abc", "Bearer abc def", "Bearer abc ", "Bearer a=b", "Bearer ===="] {
            assert_eq!(ok(bad), Err(AuthError::InvalidRequest("The Authorization header is malformed")), "{bad:?}");
        }
        for bad in ["Basic abc", "Token abc", "abc"] {
            assert!(matches!(ok(bad), Err(AuthError::InvalidRequest(d)) if d.contains("Bearer scheme")), "{bad:?}");
        }
    }
}
