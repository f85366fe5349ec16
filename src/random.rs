//! Random identifiers and secrets.
//!
//! Secrets come straight from the operating system's generator. Identifiers
//! (`jti`, `sid`), drawn on every login and rotation, come from the
//! thread-local CSPRNG of `rand` (ChaCha12, seeded and periodically reseeded
//! from the OS): as unpredictable, without a system call per id.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::Rng as _;

/// `N` random bytes from the OS. The OS generator failing is not recoverable.
pub(crate) fn bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0; N];
    getrandom::fill(&mut buf).expect("the operating system's random number generator failed");
    buf
}

/// `N` random bytes for an identifier, from the thread's CSPRNG.
fn id_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0; N];
    rand::rng().fill_bytes(&mut buf);
    buf
}

/// A token id (`jti`): 128 random bits, 22 characters.
pub(crate) fn token_id() -> String {
    URL_SAFE_NO_PAD.encode(id_bytes::<16>())
}

/// A session id (`sid`): 96 random bits, 16 characters. Not a secret (refresh
/// tokens carry an HMAC tag); it only has to be unique.
pub(crate) fn session_id() -> String {
    URL_SAFE_NO_PAD.encode(id_bytes::<12>())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    #[test]
    fn ids_have_their_length_and_do_not_repeat() {
        let jtis: HashSet<String> = (0..10_000).map(|_| super::token_id()).collect();
        let sids: HashSet<String> = (0..10_000).map(|_| super::session_id()).collect();
        assert_eq!((jtis.len(), sids.len()), (10_000, 10_000));
        assert!(jtis.iter().all(|id| id.len() == 22) && sids.iter().all(|id| id.len() == 16));
    }
}
