//! Guards as extractors: no layer, so the cheapest way to guard a handler.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use http::request::Parts;

use super::{ClaimsRef, check_request};
use crate::{
    error::AuthError,
    extract::{AuthContext, AuthRejection},
};

/// A guard with a name, for the [`Guarded`] extractor. Declare one with
/// [`define_guard!`](crate::define_guard), which builds the guard once.
pub trait NamedGuard: Send + Sync + 'static {
    /// Runs the guard on the verified claims.
    fn check(claims: ClaimsRef<'_>) -> Result<(), AuthError>;
}

/// Extracting it runs the guard named `G` on the request's verified claims.
/// It answers like the guard layers do: the layer's `401` when the request
/// is not authenticated, the guard's `403 insufficient_scope` or `401
/// insufficient_user_authentication` when it refuses, rendered like every
/// other rejection.
///
/// It costs a fraction of a guard layer: no layer machinery runs, only the
/// check (BENCHMARKS.md, "Guards, the verify-only layer and placement").
///
/// ```
/// use std::time::Duration;
///
/// use axum::{Router, routing::{get, put}};
/// use tower_jwt_auth::{
///     Claims, JwtAuth, SigningKey, define_guard,
///     guard::{Guarded, RequireRecentLogin, RequireScope},
/// };
///
/// define_guard!(Admin = RequireScope::all(["admin"]));
/// define_guard!(FreshLogin = RequireRecentLogin::within(Duration::from_secs(300)));
///
/// async fn admin(_: Guarded<Admin>, claims: Claims) -> String {
///     format!("hello, administrator {}", claims.sub())
/// }
///
/// async fn change_password(_: Guarded<FreshLogin>) {}
///
/// let auth = JwtAuth::new(SigningKey::hs256("k", &[7; 32])?);
/// let app: Router = Router::new()
///     .route("/admin", get(admin))
///     .route("/password", put(change_password))
///     .layer(auth);
/// # Ok::<(), tower_jwt_auth::KeyError>(())
/// ```
pub struct Guarded<G>(PhantomData<G>);

impl<G> std::fmt::Debug for Guarded<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Guarded")
    }
}

impl<S: Send + Sync, G: NamedGuard> FromRequestParts<S> for Guarded<G> {
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AuthRejection> {
        let context = AuthContext::get(parts)?;
        check_request(context, G::check).map_err(|error| context.rejection(error))?;
        Ok(Guarded(PhantomData))
    }
}

/// Declares a [`NamedGuard`]: a unit struct whose guard is built on first
/// use and kept for the process, for the [`Guarded`](crate::guard::Guarded)
/// extractor.
///
/// ```
/// use tower_jwt_auth::{define_guard, guard::{RequireRole, RequireScope}};
///
/// define_guard!(pub Admin = RequireScope::all(["admin"]));
/// define_guard!(
///     /// Auditors, from Keycloak's roles.
///     Auditor = RequireRole::any(["auditor"]).at("realm_access.roles")
/// );
/// ```
#[macro_export]
macro_rules! define_guard {
    ($(#[$meta:meta])* $vis:vis $name:ident = $guard:expr) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug)]
        $vis struct $name;

        impl $crate::guard::NamedGuard for $name {
            fn check(
                claims: $crate::guard::ClaimsRef<'_>,
            ) -> ::core::result::Result<(), $crate::AuthError> {
                type Check = ::std::boxed::Box<
                    dyn Fn($crate::guard::ClaimsRef<'_>) -> ::core::result::Result<(), $crate::AuthError>
                        + Send
                        + Sync,
                >;
                static GUARD: ::std::sync::LazyLock<Check> = ::std::sync::LazyLock::new(|| {
                    let guard = $guard;
                    ::std::boxed::Box::new(move |claims| $crate::guard::Guard::check(&guard, claims))
                });
                GUARD(claims)
            }
        }
    };
}
