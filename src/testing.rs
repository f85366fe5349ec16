//! Minting access tokens in tests: any claims, any times, any key, so both
//! your handlers and your rejection paths can be exercised without a login.

use serde::Serialize;

use crate::{
    clock::now_ms,
    config::JwtAuth,
    keys::SigningKey,
    token::{TokenSpec, access_token_header, custom_claims_json, sign},
};

/// A token being minted; from [`JwtAuth::test_token`].
///
/// ```
/// use tower_jwt_auth::{JwtAuth, SigningKey};
/// let auth = JwtAuth::new(SigningKey::hs256("k", &[7; 32])?);
/// let valid = auth.test_token("alice").sign();
/// let expired = auth.test_token("alice").expires_in(-3600).sign();
/// assert_ne!(valid, expired);
/// # Ok::<(), tower_jwt_auth::KeyError>(())
/// ```
#[must_use]
pub struct TestToken<'a> {
    auth: &'a JwtAuth,
    sub: String,
    sid: String,
    custom_json: String,
    expires_in: i64,
    not_before_in: Option<i64>,
    issuer: Option<String>,
    audience: Option<String>,
    key: Option<SigningKey>,
    auth_time_in: Option<i64>,
    typ: Option<String>,
}

impl JwtAuth {
    /// Starts minting a token for `sub` with this layer's key, issuer,
    /// audience and access lifetime, in a made-up session. The session is not
    /// in the store: use [`JwtAuth::login`] to test refresh and logout.
    pub fn test_token(&self, sub: &str) -> TestToken<'_> {
        TestToken {
            auth: self,
            sub: sub.to_owned(),
            sid: crate::random::session_id(),
            custom_json: "{}".to_owned(),
            expires_in: self.inner.issuer.as_ref().map_or(900, |i| i.ttl.as_secs() as i64),
            not_before_in: None,
            issuer: self.inner.issuer.as_ref().and_then(|i| i.issuer()).map(str::to_owned),
            audience: self.inner.issuer.as_ref().and_then(|i| i.audience()).map(str::to_owned),
            key: None,
            auth_time_in: Some(0),
            typ: Some(crate::token::ACCESS_TOKEN_TYP.to_owned()),
        }
    }
}

impl TestToken<'_> {
    /// The session id (`sid`).
    pub fn session(mut self, sid: &str) -> Self {
        self.sid = sid.to_owned();
        self
    }

    /// Custom claims; panics if they do not serialize to a JSON object
    /// without registered claim names.
    pub fn claims<T: Serialize>(mut self, claims: &T) -> Self {
        self.custom_json = custom_claims_json(claims).expect("custom claims must be a JSON object");
        self
    }

    /// Seconds from now until `exp` (negative: already expired).
    pub fn expires_in(mut self, seconds: i64) -> Self {
        self.expires_in = seconds;
        self
    }

    /// Seconds from now until `nbf`.
    pub fn not_before_in(mut self, seconds: i64) -> Self {
        self.not_before_in = Some(seconds);
        self
    }

    /// The `iss` claim (`None` leaves it out).
    pub fn issuer(mut self, issuer: Option<&str>) -> Self {
        self.issuer = issuer.map(str::to_owned);
        self
    }

    /// The `aud` claim (`None` leaves it out).
    pub fn audience(mut self, audience: Option<&str>) -> Self {
        self.audience = audience.map(str::to_owned);
        self
    }

    /// Seconds from now of `auth_time` (negative: in the past; `None` leaves it out).
    pub fn auth_time_in(mut self, seconds: Option<i64>) -> Self {
        self.auth_time_in = seconds;
        self
    }

    /// The `typ` header (`at+jwt` by default; `None` leaves it out).
    pub fn typ(mut self, typ: Option<&str>) -> Self {
        self.typ = typ.map(str::to_owned);
        self
    }

    /// Signs with another key (for unknown-key and rotation tests).
    pub fn signed_with(mut self, key: &SigningKey) -> Self {
        self.key = Some(key.clone());
        self
    }

    /// The compact JWT.
    pub fn sign(self) -> String {
        let now = (now_ms() / 1000) as i64;
        let at = |offset: i64| (now + offset).max(0) as u64;
        let key = match (&self.key, &self.auth.inner.issuer) {
            (Some(key), _) => key,
            (None, Some(issuer)) => issuer.key(),
            (None, None) => panic!("a verify-only layer has no signing key: use `signed_with`"),
        };
        let mut header = access_token_header(key);
        header.typ = self.typ.clone();
        let jti = crate::random::token_id();
        let spec = TokenSpec {
            sub: &self.sub,
            sid: &self.sid,
            custom_json: &self.custom_json,
            iat: at(0).min(at(self.expires_in)),
            exp: at(self.expires_in),
            nbf: self.not_before_in.map(at),
            iss: self.issuer.as_deref(),
            aud: self.audience.as_deref(),
            jti: &jti,
            auth_time: self.auth_time_in.map(at),
        };
        sign(key, &header, &spec).expect("the test key signs").token
    }
}
