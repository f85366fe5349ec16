//! Authorization on verified claims: per-route guards for scopes, roles,
//! recent login (RFC 9470 step-up) or any predicate, each a tower layer for
//! `route_layer` behind [`JwtAuth`](crate::JwtAuth).
//!
//! A guard runs after the layer authenticated the request, so an anonymous
//! or badly authenticated request still gets the layer's 401 and never a
//! 403: clients can tell "log in" from "not allowed". A failing guard answers
//! `403 insufficient_scope` (with the required `scope` when there is one,
//! RFC 6750 §3.1) or `401 insufficient_user_authentication` (with `max_age`
//! and `acr_values`, RFC 9470), rendered like every other rejection.
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::{get, post}};
//! use tower_jwt_auth::{JwtAuth, SigningKey, guard::{RequireRecentLogin, RequireRole, RequireScope}};
//!
//! async fn handler() {}
//!
//! let auth = JwtAuth::new(SigningKey::hs256("k", &[7; 32])?);
//! let app: Router = Router::new()
//!     .route("/admin", get(handler).route_layer(RequireScope::all(["admin"])))
//!     .route("/reports", get(handler).route_layer(RequireRole::any(["auditor", "admin"]).at("realm_access.roles")))
//!     .route("/password", post(handler).route_layer(RequireRecentLogin::within(Duration::from_secs(300))))
//!     .route_layer(auth);
//! # Ok::<(), tower_jwt_auth::KeyError>(())
//! ```
//!
//! The cheapest form is an extractor: name the guard with
//! [`define_guard!`](crate::define_guard) and take [`Guarded`] in the
//! handler. No layer runs, only the check: about 200 instructions per
//! request, against about 1,000 for a guard wrapping the handler
//! (`get(handler.layer(guard))`) and 1,700 under `route_layer`
//! (BENCHMARKS.md, "Guards, the verify-only layer and placement"):
//!
//! ```
//! use axum::{Router, routing::get};
//! use tower_jwt_auth::{JwtAuth, SigningKey, define_guard, guard::{Guarded, RequireScope}};
//!
//! define_guard!(Admin = RequireScope::all(["admin"]));
//!
//! async fn handler(_: Guarded<Admin>) {}
//!
//! let auth = JwtAuth::new(SigningKey::hs256("k", &[7; 32])?);
//! let app: Router = Router::new().route("/admin", get(handler)).route_layer(auth);
//! # Ok::<(), tower_jwt_auth::KeyError>(())
//! ```

use std::{sync::Arc, time::Duration};

use serde_json::Value;

use crate::{clock::now_ms, error::AuthError, extract::AuthContext, token::VerifiedToken};

mod extract;
mod layer;

pub use extract::{Guarded, NamedGuard};
pub use layer::{GuardFuture, GuardService};

/// The verified claims a guard looks at.
#[derive(Clone, Copy)]
pub struct ClaimsRef<'a> {
    token: &'a VerifiedToken,
    leeway_secs: u64,
}

impl<'a> ClaimsRef<'a> {
    /// Subject: the user id.
    pub fn sub(&self) -> &'a str {
        &self.token.claims.sub
    }

    /// When the user last authenticated, Unix seconds.
    pub fn auth_time(&self) -> Option<u64> {
        self.token.claims.auth_time
    }

    /// The whole payload.
    pub fn json(&self) -> &'a Value {
        self.token.json()
    }

    /// The claim at a dotted path (`"role"`, `"realm_access.roles"`).
    pub fn claim(&self, path: &str) -> Option<&'a Value> {
        path.split('.').try_fold(self.json(), |value, name| value.get(name))
    }

    /// Whether the token grants scope `scope`: a whole word of the `scope`
    /// claim (space-separated, RFC 9068) or an element of `scp` (an array,
    /// or a space-separated string), never a substring.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.token.scopes().iter().any(|granted| &**granted == scope)
    }
}

/// The words of a space-separated string claim or the strings of an array
/// claim (no allocation: guards run on every request).
pub(crate) fn words(value: Option<&Value>) -> impl Iterator<Item = &str> {
    let (string, array) = match value {
        Some(Value::String(s)) => (Some(s.split(' ').filter(|w| !w.is_empty())), None),
        Some(Value::Array(items)) => (None, Some(items.iter().filter_map(Value::as_str))),
        _ => (None, None),
    };
    string.into_iter().flatten().chain(array.into_iter().flatten())
}

/// Runs a guard's `check` on the request's authentication: the layer's own
/// refusal when the request is not authenticated (so 401, never 403), else
/// the guard's answer.
pub(crate) fn check_request(
    context: &AuthContext,
    check: impl FnOnce(ClaimsRef<'_>) -> Result<(), AuthError>,
) -> Result<(), AuthError> {
    let token = context.outcome().map_err(|refusal| refusal.error())?;
    let claims = ClaimsRef { token, leeway_secs: context.auth.inner.leeway_secs };
    check(claims).inspect_err(|error| {
        tracing::debug!(reason = %error, user_id = claims.sub(), "guard refused the request");
    })
}

/// A condition on the verified claims; refusing answers with the error given.
pub trait Guard: Clone + Send + Sync + 'static {
    /// `Ok(())` lets the request through.
    fn check(&self, claims: ClaimsRef<'_>) -> Result<(), AuthError>;
}

/// Requires scopes: all of them ([`RequireScope::all`]) or one of them
/// ([`RequireScope::any`]). Refuses with `403 insufficient_scope` and
/// `scope="…"` naming the scopes required.
#[derive(Clone, Debug)]
pub struct RequireScope {
    scopes: Arc<[String]>,
    all: bool,
    /// The `scope` auth-param: the required scopes, space-separated.
    challenge: Arc<str>,
}

impl RequireScope {
    /// Every one of `scopes`.
    pub fn all<I: IntoIterator<Item = S>, S: Into<String>>(scopes: I) -> Self {
        Self::new(scopes, true)
    }

    /// At least one of `scopes`.
    pub fn any<I: IntoIterator<Item = S>, S: Into<String>>(scopes: I) -> Self {
        Self::new(scopes, false)
    }

    fn new<I: IntoIterator<Item = S>, S: Into<String>>(scopes: I, all: bool) -> Self {
        let scopes: Arc<[String]> = scopes.into_iter().map(Into::into).collect();
        let challenge = scopes.join(" ").into();
        Self { scopes, all, challenge }
    }
}

impl Guard for RequireScope {
    fn check(&self, claims: ClaimsRef<'_>) -> Result<(), AuthError> {
        let mut required = self.scopes.iter();
        let granted =
            if self.all { required.all(|s| claims.has_scope(s)) } else { required.any(|s| claims.has_scope(s)) };
        if granted {
            return Ok(());
        }
        Err(AuthError::InsufficientScope {
            scope: Some(self.challenge.clone()),
            description: "The access token does not grant the scope this resource requires",
        })
    }
}

/// Requires one of some roles, read from a claim (by default `role`; any
/// dotted path, such as Keycloak's `realm_access.roles`) holding a string,
/// a space-separated string or an array of strings; matched as whole words.
/// Refuses with `403 insufficient_scope`.
#[derive(Clone, Debug)]
pub struct RequireRole {
    roles: Arc<[String]>,
    path: Arc<str>,
}

impl RequireRole {
    /// At least one of `roles`, from the claim `role`.
    pub fn any<I: IntoIterator<Item = S>, S: Into<String>>(roles: I) -> Self {
        Self { roles: roles.into_iter().map(Into::into).collect(), path: "role".into() }
    }

    /// Reads the roles at this dotted claim path instead.
    #[must_use]
    pub fn at(mut self, path: &str) -> Self {
        self.path = path.into();
        self
    }
}

impl Guard for RequireRole {
    fn check(&self, claims: ClaimsRef<'_>) -> Result<(), AuthError> {
        if words(claims.claim(&self.path)).any(|held| self.roles.iter().any(|role| role == held)) {
            return Ok(());
        }
        Err(AuthError::InsufficientScope {
            scope: None,
            description: "The user does not have a role this resource requires",
        })
    }
}

/// Requires that the user authenticated (logged in, or re-authenticated
/// through [`Session::reauthenticate`](crate::Session::reauthenticate)) at
/// most `max_age` ago, and optionally with one of some authentication
/// context classes (`acr`). Refuses with `401
/// insufficient_user_authentication` carrying `max_age` and `acr_values`
/// (RFC 9470), so the client sends the user to log in again.
///
/// The age is judged with the layer's clock leeway: a token issued by a
/// server whose clock is ahead is not refused for it.
#[derive(Clone, Debug)]
pub struct RequireRecentLogin {
    max_age: Option<Duration>,
    acr_values: Option<Arc<[String]>>,
}

impl RequireRecentLogin {
    /// Authenticated at most `max_age` ago.
    pub fn within(max_age: Duration) -> Self {
        Self { max_age: Some(max_age), acr_values: None }
    }

    /// Authenticated with one of these `acr` values (whenever).
    pub fn with_acr<I: IntoIterator<Item = S>, S: Into<String>>(values: I) -> Self {
        Self { max_age: None, acr_values: None }.acr(values)
    }

    /// Also requires one of these `acr` values.
    #[must_use]
    pub fn acr<I: IntoIterator<Item = S>, S: Into<String>>(mut self, values: I) -> Self {
        self.acr_values = Some(values.into_iter().map(Into::into).collect());
        self
    }

    fn refuse(&self, description: &'static str) -> AuthError {
        AuthError::InsufficientUserAuthentication {
            max_age: self.max_age.map(|age| age.as_secs()),
            acr_values: self.acr_values.as_ref().map(|values| values.join(" ").into()),
            description,
        }
    }
}

impl Guard for RequireRecentLogin {
    fn check(&self, claims: ClaimsRef<'_>) -> Result<(), AuthError> {
        if let Some(max_age) = self.max_age {
            let Some(auth_time) = claims.auth_time() else {
                return Err(self.refuse("The access token does not say when the user authenticated"));
            };
            if !recent_enough(auth_time, now_ms() / 1000, max_age.as_secs(), claims.leeway_secs) {
                return Err(self.refuse("The user must authenticate again: the last login is too old"));
            }
        }
        if let Some(values) = &self.acr_values {
            let acr = claims.json().get("acr").and_then(Value::as_str);
            if !acr.is_some_and(|acr| values.iter().any(|value| value == acr)) {
                return Err(self.refuse("The user must authenticate with a stronger method"));
            }
        }
        Ok(())
    }
}

/// Fresh while the time elapsed since `auth_time` is at most `max_age`
/// (OpenID Connect: re-authenticate when it is greater), leeway included.
fn recent_enough(auth_time: u64, now: u64, max_age: u64, leeway: u64) -> bool {
    now.saturating_sub(auth_time) <= max_age.saturating_add(leeway)
}

/// Any predicate on the claims; refuses with `403 insufficient_scope` and
/// `description`.
///
/// ```
/// use tower_jwt_auth::guard::Require;
/// let same_tenant = Require::new("Only members of tenant 42", |claims| {
///     claims.claim("tenant").and_then(|t| t.as_u64()) == Some(42)
/// });
/// # drop(same_tenant);
/// ```
#[derive(Clone)]
pub struct Require {
    description: &'static str,
    predicate: Arc<dyn Fn(ClaimsRef<'_>) -> bool + Send + Sync>,
}

impl Require {
    /// Lets requests through whose claims satisfy `predicate`.
    pub fn new(description: &'static str, predicate: impl Fn(ClaimsRef<'_>) -> bool + Send + Sync + 'static) -> Self {
        Self { description, predicate: Arc::new(predicate) }
    }
}

impl std::fmt::Debug for Require {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Require").field("description", &self.description).finish_non_exhaustive()
    }
}

impl Guard for Require {
    fn check(&self, claims: ClaimsRef<'_>) -> Result<(), AuthError> {
        if (self.predicate)(claims) {
            Ok(())
        } else {
            Err(AuthError::InsufficientScope { scope: None, description: self.description })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_login_edges() {
        let (now, max_age, leeway) = (10_000, 300, 5);
        assert!(recent_enough(now - 300, now, max_age, 0), "exactly max_age: fresh");
        assert!(!recent_enough(now - 301, now, max_age, 0), "a second more: stale");
        assert!(recent_enough(now - 305, now, max_age, leeway), "max_age plus the whole leeway: fresh");
        assert!(!recent_enough(now - 306, now, max_age, leeway), "past the leeway: stale");
        assert!(recent_enough(now + 30, now, max_age, leeway), "a clock ahead is no reason to refuse");
    }
}
