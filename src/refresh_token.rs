//! The refresh-token format: `user . sid . counter . tag`, where `tag` is an
//! HMAC-SHA256 over the rest under a server-side key that never reaches the
//! store. The store keeps only `(user, sid, counter)`, so its contents cannot
//! be turned into tokens, and the successor of a token is a pure function of
//! `counter + 1`: every racer within the grace window gets the same one.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Longest refresh token accepted; ours are about 110 bytes plus the user id.
pub(crate) const MAX_LEN: usize = 1024;

/// The key that signs refresh tokens.
#[derive(Clone)]
pub(crate) struct RefreshKey(Hmac<Sha256>);

/// A refresh token whose tag verified.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RefreshToken {
    pub(crate) user_id: String,
    pub(crate) sid: String,
    pub(crate) counter: u64,
}

impl RefreshKey {
    pub(crate) fn new(secret: &[u8]) -> Self {
        Self(Hmac::new_from_slice(secret).expect("HMAC accepts keys of any length"))
    }

    fn mac(&self, user_b64: &str, sid: &str, counter: &str) -> Hmac<Sha256> {
        let mut mac = self.0.clone();
        for part in [user_b64, sid, counter] {
            mac.update(part.as_bytes());
            mac.update(b".");
        }
        mac
    }

    /// The token for `counter` of session `sid` of `user_id`.
    pub(crate) fn encode(&self, user_id: &str, sid: &str, counter: u64) -> String {
        let user = URL_SAFE_NO_PAD.encode(user_id);
        let counter = counter.to_string();
        let tag = URL_SAFE_NO_PAD.encode(self.mac(&user, sid, &counter).finalize().into_bytes());
        format!("{user}.{sid}.{counter}.{tag}")
    }

    /// Parses and authenticates a presented token (constant-time tag check).
    /// `None` for anything malformed, oversized or forged.
    pub(crate) fn decode(&self, token: &str) -> Option<RefreshToken> {
        if token.len() > MAX_LEN {
            return None;
        }
        let mut parts = token.split('.');
        let (user, sid, counter, tag) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || sid.is_empty() || !counter.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        self.mac(user, sid, counter).verify_slice(&tag).ok()?;
        let user_id = String::from_utf8(URL_SAFE_NO_PAD.decode(user).ok()?).ok()?;
        Some(RefreshToken { user_id, sid: sid.to_owned(), counter: counter.parse().ok()? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_forgeries() {
        let key = RefreshKey::new(b"k");
        let token = key.encode("alice|{x}.é", "sid123", 7);
        let parsed = key.decode(&token).expect("genuine token");
        assert_eq!(parsed, RefreshToken { user_id: "alice|{x}.é".into(), sid: "sid123".into(), counter: 7 });
        assert_eq!(key.encode("alice|{x}.é", "sid123", 7), token, "deterministic: racers get the same successor");

        let forged = token.replacen(".7.", ".8.", 1);
        assert_eq!(key.decode(&forged), None);
        assert_eq!(RefreshKey::new(b"other").decode(&token), None);
        for junk in ["", ".", "...", "a.b.c.d", "a.b.-1.d", "a.b.c.d.e", &"x".repeat(MAX_LEN + 1)] {
            assert_eq!(key.decode(junk), None, "{junk:?}");
        }
    }
}
