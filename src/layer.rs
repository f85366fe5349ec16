//! The middleware: [`JwtAuth`] as a `Layer`, its `Service`, and the response
//! future that refreshes expired cookie sessions before calling the handler
//! and writes the rotated cookies onto its response.
//!
//! Hot path (a valid token): parse the header or cookie, a cache lookup, a
//! revocation lookup, one extension insert, one counter increment. No lock,
//! no I/O, no boxing; the request span only exists when `debug` is enabled.

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
use tracing::{Instrument, Span, field::Empty};

use crate::{
    config::JwtAuth,
    cookies,
    error::AuthError,
    extract::{AuthContext, Refusal},
    metrics::{Reason, RequestResult},
    refresh_token,
    response::SessionEnded,
    revocation::Check,
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
    /// Refused outright, whatever the mode (malformed request, cross-site).
    Rejected(AuthError),
    /// Not authenticated: rejected on required routes, handed to handlers on optional ones.
    Refused(Refusal),
}

impl JwtAuth {
    /// Reads and checks the request's credentials. Synchronous: anything
    /// needing the store is returned as [`Found::Refresh`].
    fn authenticate<B>(&self, request: &Request<B>) -> Found {
        let headers = request.headers();
        match bearer_header(headers) {
            Ok(Some(token)) => {
                return match self.verify_bearer(token) {
                    Ok(token) => Found::Token(token),
                    Err(AuthError::Unavailable) => Found::Refused(Refusal::Unavailable),
                    Err(error @ AuthError::InvalidRequest(_)) => Found::Rejected(error),
                    Err(error) => Found::Refused(Refusal::Refused(error)),
                };
            }
            Ok(None) => {}
            Err(error) => return Found::Rejected(error),
        }
        let cookie_names = &self.inner.cookies;
        let access =
            if self.inner.read_access_cookie { cookies::find(headers, &cookie_names.access_name) } else { None };
        let refresh = match self.inner.sessions {
            Some(_) => cookies::find(headers, &cookie_names.refresh_name),
            None => None,
        };
        if access.is_none() && refresh.is_none() {
            return Found::Refused(Refusal::NoCredentials);
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
            Some(Err(AuthError::Unavailable)) => return Found::Refused(Refusal::Unavailable),
            Some(Err(error)) => error,
            None => AuthError::MissingCredentials,
        };
        let Some(refresh) = refresh else {
            // A stale access cookie and no way to refresh it: the session is over.
            return Found::Refused(match self.inner.sessions {
                Some(_) => Refusal::SessionEnded(access_error),
                None => Refusal::Refused(access_error),
            });
        };
        if refresh.len() > refresh_token::MAX_LEN {
            return Found::Refused(Refusal::SessionEnded(AuthError::InvalidToken("The refresh token is invalid")));
        }
        // A refresh cookie that names no session fails the refresh itself.
        if csrf.double_submit.is_some()
            && let Some(sid) = self.inner.sessions.as_ref().and_then(|s| s.session_id_of(refresh))
            && let Err(error) = csrf.check_token(method, headers, &sid)
        {
            return Found::Rejected(error);
        }
        Found::Refresh(refresh.to_owned())
    }

    /// Verifies a bearer token. A cache hit needs no syntax check (only
    /// tokens that passed it got in), so the per-byte check runs on misses.
    #[inline]
    fn verify_bearer(&self, token: &[u8]) -> Result<Arc<VerifiedToken>, AuthError> {
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

    #[inline]
    fn check_revocation(&self, verified: Arc<VerifiedToken>) -> Result<Arc<VerifiedToken>, AuthError> {
        match verified.check(&self.inner.revocations) {
            Check::Clean => Ok(verified),
            Check::Revoked => Err(AuthError::REVOKED),
            // Claims changed since it was issued: refresh to get the new ones.
            Check::Stale => Err(AuthError::EXPIRED),
            Check::NotLoaded => Err(AuthError::Unavailable),
        }
    }

    #[inline]
    fn context(&self, outcome: Result<Arc<VerifiedToken>, Refusal>) -> AuthContext {
        AuthContext::new(self.clone(), outcome)
    }
}

/// The token of the request's one `Authorization: Bearer` header, if any,
/// its syntax not checked yet (see [`b64token`]). Headers of other schemes
/// (a proxy's `Basic`, `Negotiate`) are not bearer credentials and are
/// ignored; two bearer headers are a malformed request.
#[inline]
fn bearer_header(headers: &http::HeaderMap) -> Result<Option<&[u8]>, AuthError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let mut first = None;
    for value in values.by_ref() {
        // The common case, `Bearer <token>`, in one comparison.
        if let Some(token) = simple_bearer(value.as_bytes()) {
            first = Some(token);
            break;
        }
        if is_bearer(value) {
            first = Some(bearer_token(value)?);
            break;
        }
    }
    if first.is_some() && values.any(is_bearer) {
        return Err(AuthError::InvalidRequest("Only one Authorization: Bearer header is allowed"));
    }
    Ok(first)
}

/// `<token>` of `Bearer <token>` (the scheme in any case, one space), else
/// `None` (then the general rules decide). Compares the seven bytes as one
/// word: OR-ing 0x20 lowercases exactly the ASCII letters' capitals, and
/// maps to a space only a space or a NUL, which header values cannot hold.
#[inline]
fn simple_bearer(bytes: &[u8]) -> Option<&[u8]> {
    let head = bytes.first_chunk::<7>()?;
    let word = u64::from_le_bytes([head[0], head[1], head[2], head[3], head[4], head[5], head[6], 0]);
    const BEARER: u64 = u64::from_le_bytes(*b"bearer \0");
    (word | 0x0020_2020_2020_2020 == BEARER && bytes.len() > 7).then(|| &bytes[7..])
}

/// Whether the header's scheme is `Bearer` (case-insensitive, RFC 7235):
/// `Bearer` followed by nothing or by a byte that cannot continue a scheme
/// name (so `Bearer,x` is a malformed bearer header, `Bearerx y` another scheme).
fn is_bearer(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    bytes.len() >= 6 && bytes[..6].eq_ignore_ascii_case(b"bearer") && bytes.get(6).is_none_or(|&b| !tchar(b))
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
        let refusal = match auth.authenticate(&request) {
            Found::Token(token) => {
                auth.inner.metrics.request(RequestResult::Authenticated);
                // Nothing else to do after the handler: no box unless the span is wanted.
                let extra = request_span(RequestResult::Authenticated, Some(&token))
                    .map(|span| Extra::new(After::Nothing, span));
                auth.context(Ok(token)).insert_into(request.extensions_mut());
                return ResponseFuture::inner(self.inner.call(request), extra.flatten());
            }
            Found::Refresh(refresh_token) => {
                // Only the service that reported ready may be called: keep it
                // for after the refresh and leave a clone in its place.
                let clone = self.inner.clone();
                let service = std::mem::replace(&mut self.inner, clone);
                let span = tracing::debug_span!(
                    "tower_jwt_auth.request",
                    outcome = Empty,
                    reason = Empty,
                    user_id = Empty,
                    sid = Empty
                );
                let auth = auth.clone();
                let refresh = async move { auth.refresh(&refresh_token).await }.instrument(span.clone());
                return ResponseFuture {
                    state: State::Refreshing {
                        refresh: Box::pin(refresh),
                        waiting: Some(Box::new(Waiting { request, service, auth: self.auth.clone(), span })),
                    },
                };
            }
            Found::Rejected(error) => {
                let result = RequestResult::Rejected(Reason::of(&error));
                auth.inner.metrics.request(result);
                request_span(result, None).unwrap_or_else(Span::none).in_scope(|| {
                    tracing::debug!(reason = %error, "request refused");
                });
                return ResponseFuture::reject(auth.clone(), error, After::Nothing);
            }
            Found::Refused(refusal) => refusal,
        };
        let after = match refusal {
            Refusal::SessionEnded(_) => After::ClearCookies(auth.clone()),
            _ => After::Nothing,
        };
        let reason = refusal.reason();
        if auth.optional {
            let result = RequestResult::Guest(reason);
            auth.inner.metrics.request(result);
            let span = request_span(result, None).unwrap_or_else(Span::none);
            auth.context(Err(refusal)).insert_into(request.extensions_mut());
            ResponseFuture::inner(self.inner.call(request), Extra::new(after, span))
        } else {
            let result = RequestResult::Rejected(reason);
            auth.inner.metrics.request(result);
            let error = refusal.error();
            request_span(result, None).unwrap_or_else(Span::none).in_scope(|| {
                tracing::debug!(reason = %error, "request not authenticated");
            });
            ResponseFuture::reject(auth.clone(), error, after)
        }
    }
}

/// The `tower_jwt_auth.request` span (`debug`): what the layer decided, and
/// for an authenticated request its user and session. `None` unless `debug`
/// is enabled for this crate, so the hot path builds no span at all, not
/// even for `tracing`'s `log` fallback (on whenever axum's default
/// `tower-log` feature is).
fn request_span(result: RequestResult, token: Option<&VerifiedToken>) -> Option<Span> {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return None;
    }
    let span =
        tracing::debug_span!("tower_jwt_auth.request", outcome = Empty, reason = Empty, user_id = Empty, sid = Empty);
    if !span.is_disabled() {
        record_result(&span, result, token);
    }
    Some(span)
}

fn record_result(span: &Span, result: RequestResult, token: Option<&VerifiedToken>) {
    span.record("outcome", result.result());
    if let Some(reason) = result.reason() {
        span.record("reason", reason.as_str());
    }
    if let Some(token) = token {
        span.record("user_id", token.claims.sub.as_str()).record("sid", token.claims.sid.as_str());
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

/// What the inner future needs besides itself, rarely anything: boxed, so
/// the future of a plain authenticated request stays small (it is moved
/// several times on the way to the handler).
struct Extra {
    after: After,
    /// Entered while the handler runs.
    span: Span,
}

impl Extra {
    fn new(after: After, span: Span) -> Option<Box<Self>> {
        (!matches!(after, After::Nothing) || !span.is_disabled()).then(|| Box::new(Self { after, span }))
    }
}

/// A rejection answered by the layer itself.
struct Rejection {
    auth: JwtAuth,
    error: AuthError,
    after: After,
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
            extra: Option<Box<Extra>>,
        },
        // The error, not its response, boxed: this future stays small.
        Reject {
            rejection: Option<Box<Rejection>>,
        },
    }
}

/// The request held back while its session is refreshed.
struct Waiting<S, B> {
    request: Request<B>,
    /// The inner service that reported ready.
    service: S,
    auth: JwtAuth,
    span: Span,
}

impl<S: Service<Request<B>>, B> ResponseFuture<S, B> {
    fn inner(future: S::Future, extra: Option<Box<Extra>>) -> Self {
        Self { state: State::Inner { future, extra } }
    }

    fn reject(auth: JwtAuth, error: AuthError, after: After) -> Self {
        Self { state: State::Reject { rejection: Some(Box::new(Rejection { auth, error, after })) } }
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
                    let Waiting { mut request, mut service, auth, span } =
                        *waiting.take().expect("ResponseFuture polled after completion");
                    let auth = &auth;
                    let (outcome, after) = match outcome {
                        Ok(tokens) => {
                            let token = tokens.refreshed.access.verified.0.clone();
                            (Ok(token), After::SetCookies(tokens))
                        }
                        Err(AuthError::Unavailable) => (Err(Refusal::Unavailable), After::Nothing),
                        Err(error) => {
                            span.in_scope(|| {
                                tracing::debug!(reason = %error, "transparent refresh refused: the session is over");
                            });
                            (Err(Refusal::SessionEnded(as_resource_error(error))), After::ClearCookies(auth.clone()))
                        }
                    };
                    let result = match &outcome {
                        Ok(_) => RequestResult::Authenticated,
                        Err(refusal) if auth.optional => RequestResult::Guest(refusal.reason()),
                        Err(refusal) => RequestResult::Rejected(refusal.reason()),
                    };
                    auth.inner.metrics.request(result);
                    record_result(&span, result, outcome.as_ref().ok().map(|token| &**token));
                    match outcome {
                        Err(refusal) if !auth.optional => {
                            let mut response = auth.reject(refusal.error());
                            apply(&mut response, after);
                            return Poll::Ready(Ok(response));
                        }
                        outcome => {
                            auth.context(outcome).insert_into(request.extensions_mut());
                            let future = span.in_scope(|| service.call(request));
                            this.state.set(State::Inner { future, extra: Extra::new(after, span) });
                        }
                    }
                }
                StateProj::Inner { future, extra } => {
                    let response = match extra.as_deref() {
                        None => ready!(future.poll(cx))?.into_response(),
                        Some(extra) => {
                            let _entered = extra.span.enter();
                            ready!(future.poll(cx))?.into_response()
                        }
                    };
                    let mut response = response;
                    if let Some(extra) = extra.take() {
                        apply(&mut response, extra.after);
                    }
                    return Poll::Ready(Ok(response));
                }
                StateProj::Reject { rejection } => {
                    let Rejection { auth, error, after } =
                        *rejection.take().expect("ResponseFuture polled after completion");
                    let mut response = auth.reject(error);
                    apply(&mut response, after);
                    return Poll::Ready(Ok(response));
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
        After::ClearCookies(auth) => auth.clear_cookies(response),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bearer_headers_are_credentials() {
        let mut headers = http::HeaderMap::new();
        headers.append(header::AUTHORIZATION, HeaderValue::from_static("Basic dXNlcjpwdw=="));
        assert_eq!(bearer_header(&headers).unwrap(), None, "another scheme is no credential");
        headers.append(header::AUTHORIZATION, HeaderValue::from_static("bearer abc"));
        assert_eq!(bearer_header(&headers).unwrap().unwrap(), b"abc");
        headers.append(header::AUTHORIZATION, HeaderValue::from_static("Bearer def"));
        assert!(bearer_header(&headers).is_err(), "two bearer headers");
        for not_bearer in ["Bearerx abc", "Negotiate abc", "", "Token abc"] {
            assert!(!is_bearer(&HeaderValue::from_static(not_bearer)), "{not_bearer:?}");
        }
    }

    #[test]
    fn the_fast_path_agrees_with_the_general_rules() {
        for value in [
            "Bearer abc",
            "bearer abc",
            "BEARER abc",
            "bEaReR a",
            "Bearer  abc",
            "Bearer",
            "Bearer ",
            "Bearerx abc",
            "Bearer,abc",
            "Bearer\tabc",
            "Beare abc",
            "Basic abc",
            "Cearer abc",
            "Bearer=abc",
            "@EARER abc",
        ] {
            let value = HeaderValue::from_str(value).unwrap();
            if let Some(token) = simple_bearer(value.as_bytes()) {
                assert!(is_bearer(&value), "{value:?}");
                assert_eq!(bearer_token(&value), Ok(token), "{value:?}");
            } else {
                assert!(
                    value.as_bytes().len() <= 7 || !value.as_bytes()[..7].eq_ignore_ascii_case(b"bearer "),
                    "{value:?}"
                );
            }
        }
        let mut headers = http::HeaderMap::new();
        headers.append(header::AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        headers.append(header::AUTHORIZATION, HeaderValue::from_static("Basic xyz"));
        assert_eq!(bearer_header(&headers).unwrap(), Some(&b"abc"[..]));
        headers.append(header::AUTHORIZATION, HeaderValue::from_static("bearer,x"));
        assert!(bearer_header(&headers).is_err(), "a second (malformed) bearer header");
    }

    #[test]
    fn bearer_parsing_is_strict() {
        let ok = |v: &'static str| bearer_token(&HeaderValue::from_static(v)).and_then(b64token).map(str::to_owned);
        assert_eq!(ok("Bearer abc.def-_~+/=="), Ok("abc.def-_~+/==".to_owned()));
        assert_eq!(ok("bearer abc"), Ok("abc".to_owned()));
        for bad in ["Bearer", "Bearer ", "Bearer  abc", "Bearer abc def", "Bearer abc ", "Bearer a=b", "Bearer ===="] {
            assert_eq!(ok(bad), Err(AuthError::InvalidRequest("The Authorization header is malformed")), "{bad:?}");
        }
    }
}
