//! Verifying access tokens: the `kid`'s key with its pinned algorithm, the
//! `typ` header, then `exp`, `nbf`, `iss`, `aud` with leeway; a bounded cache
//! of verified tokens makes every algorithm cost about a hash-map hit.

use std::{sync::Arc, time::Duration};

use jsonwebtoken::{Algorithm, AlgorithmFamily, Validation, errors::ErrorKind};
use serde_json::value::RawValue;

use super::{AccessToken, RegisteredClaims, VerifiedToken};
use crate::{
    cache::VerifiedCache,
    clock::{coarse_now_secs, now_ms},
    error::AuthError,
    keys::{KeyLookup, KeySet, VerifyingKey},
};

/// Verifies tokens against a key set, with the validation rules built once.
pub(crate) struct Verifier {
    keys: KeySet,
    /// One set of rules per algorithm (a token's key decides which).
    validations: Vec<(Algorithm, Validation)>,
    cache: VerifiedCache,
    leeway_secs: u64,
    max_token_bytes: usize,
    /// Refuse tokens that name an audience (a session layer without one:
    /// tokens this service minted for another audience, such as the BFF's
    /// upstream tokens, must not pass as its own).
    refuse_audiences: bool,
}

impl Verifier {
    pub(crate) fn new(
        keys: KeySet,
        issuer: Option<&str>,
        audience: Option<&str>,
        leeway: Duration,
        cache_capacity: usize,
        max_token_bytes: usize,
    ) -> Self {
        let families = [AlgorithmFamily::Hmac, AlgorithmFamily::Rsa, AlgorithmFamily::Ec, AlgorithmFamily::Ed];
        let validations = families
            .iter()
            .flat_map(|family| family.algorithms().iter().copied())
            .map(|alg| {
                let mut validation = Validation::new(alg);
                validation.leeway = leeway.as_secs();
                validation.validate_nbf = true;
                validation.set_required_spec_claims(&["exp", "iat", "sub"]);
                if let Some(iss) = issuer {
                    validation.set_issuer(&[iss]);
                    validation.required_spec_claims.insert("iss".into());
                }
                match audience {
                    Some(aud) => {
                        validation.set_audience(&[aud]);
                        validation.required_spec_claims.insert("aud".into());
                    }
                    None => validation.validate_aud = false,
                }
                (alg, validation)
            })
            .collect();
        Self {
            keys,
            validations,
            cache: VerifiedCache::new(cache_capacity),
            leeway_secs: leeway.as_secs(),
            max_token_bytes,
            refuse_audiences: false,
        }
    }

    /// Refuses tokens carrying `aud` unless an audience is required (then
    /// jsonwebtoken checks it).
    pub(crate) fn refusing_audiences_unless(mut self, audience_required: bool) -> Self {
        self.refuse_audiences = !audience_required;
        self
    }

    /// Verifies `token`, from the cache when it was verified before.
    pub(crate) fn verify(&self, token: &str) -> Result<Arc<VerifiedToken>, AuthError> {
        match self.cached(token.as_bytes()) {
            Some(hit) => hit,
            None => self.verify_uncached(token),
        }
    }

    /// A token verified before, its times checked again; `None` on a miss.
    #[inline]
    pub(crate) fn cached(&self, token: &[u8]) -> Option<Result<Arc<VerifiedToken>, AuthError>> {
        let hit = self.cache.get(token)?;
        // The coarse clock can lag a few milliseconds: near the expiry
        // second, ask the exact one.
        let mut now = coarse_now_secs();
        if now.abs_diff(hit.claims.exp.saturating_add(self.leeway_secs)) <= 1 {
            now = now_ms() / 1000;
        }
        Some(self.check_times(&hit.claims, now).map(|()| hit))
    }

    /// Checks the signature and claims of a token not in the cache, and caches it.
    pub(crate) fn verify_uncached(&self, token: &str) -> Result<Arc<VerifiedToken>, AuthError> {
        if token.len() > self.max_token_bytes {
            return Err(AuthError::InvalidToken("The access token is too large"));
        }
        let verified = Arc::new(self.decode(token)?);
        self.cache.insert(token, verified.clone());
        Ok(verified)
    }

    /// Puts a token this instance just issued into the cache.
    pub(crate) fn remember(&self, token: &AccessToken) {
        self.cache.insert(&token.token, token.verified.0.clone());
    }

    /// `exp` and `nbf` (RFC 7519: refused *on or after* `exp`, before `nbf`),
    /// each with the leeway.
    #[inline]
    fn check_times(&self, claims: &RegisteredClaims, now: u64) -> Result<(), AuthError> {
        if now >= claims.exp.saturating_add(self.leeway_secs) {
            return Err(AuthError::EXPIRED);
        }
        if claims.nbf.is_some_and(|nbf| nbf > now.saturating_add(self.leeway_secs)) {
            return Err(AuthError::InvalidToken("The access token is not valid yet"));
        }
        Ok(())
    }

    fn decode(&self, token: &str) -> Result<VerifiedToken, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| describe(e.kind()))?;
        let kid = header.kid.as_deref().ok_or(AuthError::InvalidToken("The access token names no key"))?;
        let key = match self.keys.lookup(kid) {
            KeyLookup::Found(key) => key,
            KeyLookup::Unknown => return Err(AuthError::InvalidToken("The access token was signed by an unknown key")),
            KeyLookup::NotReady => return Err(AuthError::Unavailable),
        };
        if !key.accepts_typ(header.typ.as_deref()) {
            return Err(AuthError::InvalidToken("The token is not an access token"));
        }
        let validation = self
            .validation(key.algorithm())
            .ok_or(AuthError::InvalidToken("The access token algorithm is not supported"))?;
        let data = jsonwebtoken::decode::<Box<RawValue>>(token, key.decoding_key(), validation)
            .map_err(|e| describe(e.kind()))?;
        let claims: RegisteredClaims = serde_json::from_str(data.claims.get())
            .map_err(|_| AuthError::InvalidToken("The access token lacks a required claim"))?;
        if self.refuse_audiences && names_an_audience(data.claims.get()) {
            return Err(AuthError::InvalidToken("The access token is meant for another audience"));
        }
        self.check_times(&claims, now_ms() / 1000)?;
        Ok(VerifiedToken::new(claims, data.claims))
    }

    fn validation(&self, alg: Algorithm) -> Option<&Validation> {
        self.validations.iter().find(|(a, _)| *a == alg).map(|(_, validation)| validation)
    }

    /// The clock leeway on `exp` and `nbf`, in seconds.
    #[cfg(feature = "bff")]
    pub(crate) fn leeway_secs(&self) -> u64 {
        self.leeway_secs
    }

    /// The keys this verifier holds locally (for the JWKS document).
    pub(crate) fn keys(&self) -> impl Iterator<Item = &VerifyingKey> {
        self.keys.local()
    }
}

/// Whether a payload has an `aud` claim.
fn names_an_audience(payload: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Audience {
        aud: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_str::<Audience>(payload).is_ok_and(|a| a.aud.is_some())
}

/// A human description of a verification failure; never includes the token.
fn describe(kind: &ErrorKind) -> AuthError {
    AuthError::InvalidToken(match kind {
        ErrorKind::ExpiredSignature => return AuthError::EXPIRED,
        ErrorKind::ImmatureSignature => "The access token is not valid yet",
        ErrorKind::InvalidIssuer => "The access token was issued by another issuer",
        ErrorKind::InvalidAudience => "The access token is meant for another audience",
        ErrorKind::InvalidSignature => "The access token signature is invalid",
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "The access token algorithm does not match its key"
        }
        ErrorKind::MissingRequiredClaim(_) => "The access token lacks a required claim",
        _ => "The access token is malformed",
    })
}
