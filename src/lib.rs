#![doc = include_str!("../README.md")]
//!
//! ## Features
#![doc = document_features::document_features!()]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
// docs.rs: a badge on every item that needs a feature.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod cache;
mod config;
mod cookies;
mod csrf;
mod error;
mod extract;
mod flight;
mod keys;
mod layer;
mod random;
mod refresh_token;
mod response;
pub mod revocation;
mod routes;
mod session;
pub mod store;
pub mod testing;
#[doc = include_str!("docs/threat_model.md")]
pub mod threat_model {}
mod token;

pub use config::{ConfigError, JwtAuth, JwtAuthBuilder};
pub use cookie::SameSite;
pub use error::AuthError;
pub use extract::{AuthRejection, Claims, NoClaims, Session};
/// JSON Web Keys (RFC 7517), from jsonwebtoken: a [`jwk::Jwk`] builds a
/// [`VerifyingKey::from_jwk`], and [`JwtAuth::jwks`] answers a [`jwk::JwkSet`].
pub mod jwk {
    pub use jsonwebtoken::jwk::*;
}
pub use keys::{Algorithm, KeyError, SigningKey, VerifyingKey};
pub use layer::{JwtAuthService, ResponseFuture};
pub use response::{CookieTokens, LoggedOut, TokenResponse};
pub use session::{ClientInfo, SessionInfo, Tokens};
pub use token::{AccessToken, RegisteredClaims};
