//! Random identifiers from the operating system's generator.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

/// `N` random bytes. The OS generator failing is not recoverable.
pub(crate) fn bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0; N];
    getrandom::fill(&mut buf).expect("the operating system's random number generator failed");
    buf
}

/// A token id (`jti`): 128 random bits, 22 characters.
pub(crate) fn token_id() -> String {
    URL_SAFE_NO_PAD.encode(bytes::<16>())
}

/// A session id (`sid`): 96 random bits, 16 characters. Not a secret (refresh
/// tokens carry an HMAC tag); it only has to be unique.
pub(crate) fn session_id() -> String {
    URL_SAFE_NO_PAD.encode(bytes::<12>())
}
