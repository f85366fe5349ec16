//! What can go wrong with remote keys: setting them up or waiting for them
//! ([`RemoteKeysError`]), and one fetch of a document ([`FetchError`]).

use std::time::Duration;

/// Remote keys could not be set up, or were not ready in time.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteKeysError {
    /// A URL that cannot be used (not absolute, not http(s), plain `http://`
    /// to a host other than loopback without `allow_http`).
    #[error("cannot fetch keys from {url:?}: {why}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// Why not.
        why: &'static str,
    },
    /// `build` was called outside a tokio runtime (the keys are fetched by a
    /// background task).
    #[error("remote keys must be built inside a tokio runtime")]
    NoRuntime,
    /// The default HTTPS client found no usable root certificate on this system.
    #[error("no TLS root certificates: {0}")]
    TlsRoots(String),
    /// [`RemoteKeys::wait_ready`](super::RemoteKeys::wait_ready) ran out of time.
    #[error("no usable keys after {waited:?}{}", last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    NotReady {
        /// How long it waited.
        waited: Duration,
        /// Why the last fetch failed, if one did.
        last_error: Option<FetchError>,
    },
}

/// Why one fetch of the JWKS (or of the discovery document) failed. The keys
/// already held are kept; the fetch is retried after the cooldown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The connection or the exchange failed (refused, DNS, TLS, reset).
    #[error("HTTP request to {url} failed: {message}")]
    Transport {
        /// The URL fetched.
        url: String,
        /// What the client said.
        message: String,
    },
    /// No complete answer within the fetch timeout.
    #[error("no answer from {url} within {timeout:?}")]
    Timeout {
        /// The URL fetched.
        url: String,
        /// The fetch timeout.
        timeout: Duration,
    },
    /// An answer other than 200 (redirects are not followed).
    #[error("{url} answered {status}")]
    Status {
        /// The URL fetched.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// A body longer than the configured maximum.
    #[error("{url} answered more than {max_bytes} bytes")]
    TooLarge {
        /// The URL fetched.
        url: String,
        /// The configured maximum.
        max_bytes: usize,
    },
    /// The body is not a JWKS (`{"keys": [...]}`) or not a discovery document.
    #[error("{url} answered no valid {expected}: {why}")]
    Malformed {
        /// The URL fetched.
        url: String,
        /// What was expected ("JWKS", "OpenID discovery document").
        expected: &'static str,
        /// What is wrong.
        why: String,
    },
    /// A JWKS in which no key can be used (all skipped: symmetric, encryption,
    /// no `kid`, an algorithm not allowed or not inferable).
    #[error("{url} holds no usable signature key ({skipped} skipped)")]
    NoUsableKey {
        /// The URL fetched.
        url: String,
        /// How many keys were skipped.
        skipped: usize,
    },
    /// The discovery document names another issuer than the one configured
    /// (OpenID Connect Discovery §4.3: they must be identical).
    #[error("the discovery document names issuer {found:?}, expected {expected:?}")]
    IssuerMismatch {
        /// The issuer configured.
        expected: String,
        /// The issuer the document names.
        found: String,
    },
    /// The discovery document's `jwks_uri` is not a URL we fetch from.
    #[error("the discovery document's jwks_uri {url:?} cannot be used: {why}")]
    BadJwksUri {
        /// The `jwks_uri`.
        url: String,
        /// Why not.
        why: &'static str,
    },
}
