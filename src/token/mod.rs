//! Access tokens: their claims and the verified form handlers see. Issuing
//! is in `issue`, verifying (with the cache of verified tokens) in `verify`.

mod issue;
mod verify;

use std::{
    any::Any,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::value::RawValue;

pub(crate) use self::{
    issue::{IssueSpec, Issuer, TokenSpec, access_token_header, custom_claims_json, sign},
    verify::Verifier,
};
use crate::revocation::{Check, RevocationList};

/// Claim names this crate writes itself; custom claims may not reuse them.
pub(crate) const REGISTERED_NAMES: &[&str] = &["sub", "sid", "iat", "exp", "nbf", "jti", "iss", "aud", "auth_time"];

/// The `typ` header of access tokens (RFC 9068 §2.1).
pub(crate) const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// The registered claims of an access token issued by this crate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredClaims {
    /// Subject: the user id.
    pub sub: String,
    /// Session id: what refresh, logout and revocation act on.
    pub sid: String,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expires at, Unix seconds: the token is refused from this second on
    /// (plus the configured leeway).
    pub exp: u64,
    /// Unique token id.
    pub jti: String,
    /// Not before, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// When the user last proved who they are (login or re-authentication),
    /// Unix seconds; refreshes carry it over unchanged (OpenID Connect's
    /// `auth_time`, used by RFC 9470 step-up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<u64>,
}

/// A token whose signature and registered claims have been checked.
pub(crate) struct VerifiedToken {
    pub(crate) claims: RegisteredClaims,
    /// The whole payload, from which custom claims are read.
    pub(crate) payload: Box<RawValue>,
    /// The custom claims of the first type asked for, decoded once.
    custom: OnceLock<Box<dyn Any + Send + Sync>>,
    /// The payload as a JSON value, for guards, parsed once.
    json: OnceLock<serde_json::Value>,
    /// The granted scopes (`scope` words, then `scp` entries), collected
    /// once: scope guards run on every request and a map lookup per claim
    /// per request costs more than the rest of the guard.
    scopes: OnceLock<Box<[Box<str>]>>,
    /// The revocation-list generation at which the token was last found
    /// clean (`u64::MAX`: never checked).
    clean_at: AtomicU64,
}

impl VerifiedToken {
    pub(crate) fn new(claims: RegisteredClaims, payload: Box<RawValue>) -> Self {
        Self {
            claims,
            payload,
            custom: OnceLock::new(),
            json: OnceLock::new(),
            scopes: OnceLock::new(),
            clean_at: AtomicU64::new(u64::MAX),
        }
    }

    /// Checks the token against the revocation list, looking it up only
    /// when something was revoked since the last look.
    #[inline]
    pub(crate) fn check(&self, revocations: &RevocationList) -> Check {
        let generation = revocations.generation();
        if generation != 0 && self.clean_at.load(Ordering::Relaxed) == generation {
            return Check::Clean;
        }
        let check = revocations.check(&self.claims.sid, &self.claims.sub, self.claims.iat);
        if check == Check::Clean {
            self.clean_at.store(generation, Ordering::Relaxed);
        }
        check
    }

    #[cfg(test)]
    pub(crate) fn for_tests(claims: RegisteredClaims) -> Self {
        Self::new(claims, RawValue::from_string("{}".into()).expect("valid JSON"))
    }

    /// The custom claims as `T`, decoded at most once per token for the first
    /// `T` asked for (applications use one claims type). `T` sees the
    /// payload without the registered claims (read those through
    /// [`Claims`](crate::Claims)' methods), so `#[serde(deny_unknown_fields)]`
    /// works.
    pub(crate) fn custom<T>(&self) -> Result<Arc<T>, serde_json::Error>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        if let Some(cached) = self.custom.get().and_then(|c| c.downcast_ref::<Arc<T>>()) {
            return Ok(cached.clone());
        }
        // `Claims` without a type accepts any payload: nothing to decode, and
        // it must not take the one slot from the application's claims type
        // (which would then be decoded on every request).
        if let Ok(none) = no_claims().downcast::<T>() {
            return Ok(none);
        }
        let mut object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(self.payload.get())?;
        object.retain(|name, _| !REGISTERED_NAMES.contains(&name.as_str()));
        let value: Arc<T> = Arc::new(serde_json::from_value(serde_json::Value::Object(object))?);
        let _ = self.custom.set(Box::new(value.clone()));
        Ok(value)
    }

    /// The whole payload as JSON, parsed once.
    pub(crate) fn json(&self) -> &serde_json::Value {
        self.json.get_or_init(|| serde_json::from_str(self.payload.get()).unwrap_or(serde_json::Value::Null))
    }

    /// The scopes granted, from `scope` and `scp`; kept for the token's
    /// life in the cache.
    pub(crate) fn scopes(&self) -> &[Box<str>] {
        self.scopes.get_or_init(|| {
            let json = self.json();
            ["scope", "scp"].iter().flat_map(|name| crate::guard::words(json.get(name))).map(Box::from).collect()
        })
    }
}

/// A freshly issued access token. Its `Debug` shows the claims, never the token.
#[derive(Clone)]
pub struct AccessToken {
    /// The compact JWT.
    pub token: String,
    /// Its lifetime in seconds (the RFC 6749 `expires_in`).
    pub expires_in: u64,
    pub(crate) verified: VerifiedTokenHandle,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken").field("expires_in", &self.expires_in).field("claims", &self.verified).finish()
    }
}

/// Wrapper so [`AccessToken`] can be `Debug` without printing claims twice.
#[derive(Clone)]
pub(crate) struct VerifiedTokenHandle(pub(crate) Arc<VerifiedToken>);

impl std::fmt::Debug for VerifiedTokenHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.claims.fmt(f)
    }
}

impl AccessToken {
    /// The registered claims written into the token.
    pub fn claims(&self) -> &RegisteredClaims {
        &self.verified.0.claims
    }
}

/// The one `NoClaims` value, shared.
fn no_claims() -> Arc<dyn Any + Send + Sync> {
    static NO_CLAIMS: std::sync::LazyLock<Arc<crate::extract::NoClaims>> =
        std::sync::LazyLock::new(|| Arc::new(crate::extract::NoClaims));
    NO_CLAIMS.clone()
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::extract::NoClaims;

    #[derive(Deserialize)]
    struct Profile {
        #[serde(default)]
        _name: String,
    }

    /// `Claims` without a type next to the application's `Claims<Profile>`:
    /// the profile is still decoded once, whichever handler runs first.
    #[test]
    fn untyped_claims_leave_the_slot_to_the_application_type() {
        let claims = RegisteredClaims {
            sub: "u".into(),
            sid: "s".into(),
            iat: 0,
            exp: 0,
            jti: "j".into(),
            nbf: None,
            iss: None,
            auth_time: None,
        };
        let token = VerifiedToken::for_tests(claims);
        token.custom::<NoClaims>().unwrap();
        let first = token.custom::<Profile>().unwrap();
        token.custom::<NoClaims>().unwrap();
        assert!(Arc::ptr_eq(&first, &token.custom::<Profile>().unwrap()), "decoded again");
    }
}
