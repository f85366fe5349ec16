#![doc = include_str!("../README.md")]
//!
//! ## Features
#![doc = document_features::document_features!()]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
// docs.rs: a badge on every item that needs a feature.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "bff")]
#[cfg_attr(docsrs, doc(cfg(feature = "bff")))]
pub mod bff;
mod bounded_map;
mod cache;
mod challenge;
mod client_info;
mod clock;
mod config;
mod cookies;
mod csrf;
mod error;
mod events;
mod extract;
mod flight;
pub mod guard;
mod keys;
mod layer;
pub mod metrics;
mod random;
mod refresh_token;
#[cfg(feature = "remote-keys")]
#[cfg_attr(docsrs, doc(cfg(feature = "remote-keys")))]
pub mod remote_keys;
mod resource_server;
mod response;
pub mod revocation;
mod routes;
mod session;
pub mod store;
pub mod testing;
#[doc = include_str!("docs/threat_model.md")]
pub mod threat_model {}
mod token;

pub use client_info::{ClientInfo, ProxyHeader};
pub use config::{ConfigError, JwtAuth, JwtAuthBuilder};
pub use cookie::SameSite;
pub use error::AuthError;
pub use events::{RevocationCause, SecurityEvent};
pub use extract::{AuthRejection, Authentication, Claims, NoClaims, Session};
/// JSON Web Keys (RFC 7517), from jsonwebtoken: a [`jwk::Jwk`] builds a
/// [`VerifyingKey::from_jwk`], and [`JwtAuth::jwks`] answers a [`jwk::JwkSet`].
pub mod jwk {
    pub use jsonwebtoken::jwk::*;
}
pub use keys::{Algorithm, KeyError, SigningKey, VerifyingKey};
pub use layer::{JwtAuthService, ResponseFuture};
pub use resource_server::ResourceServerBuilder;
pub use response::{CookieTokens, LoggedOut, TokenResponse};
pub use session::{SessionInfo, Tokens};
pub use token::{AccessToken, RegisteredClaims};
