//! Access tokens: their claims, how they are issued, and how they are
//! verified (signature with the `kid`'s pinned algorithm, then `exp`, `nbf`,
//! `iss`, `aud` with leeway), with a bounded cache of verified tokens so every
//! algorithm costs about what a hash-map hit costs.

use std::{
    any::Any,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::value::RawValue;

use crate::{
    cache::VerifiedCache,
    error::AuthError,
    keys::{SigningKey, VerifyingKey},
    revocation::{RevocationList, coarse_now_secs, now_ms},
};

/// Claim names this crate writes itself; custom claims may not reuse them.
pub(crate) const REGISTERED_NAMES: &[&str] = &["sub", "sid", "iat", "exp", "nbf", "jti", "iss", "aud"];

/// The registered claims of an access token issued by this crate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredClaims {
    /// Subject: the user id.
    pub sub: String,
    /// Session id: what refresh, logout and revocation act on.
    pub sid: String,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expires at, Unix seconds.
    pub exp: u64,
    /// Unique token id.
    pub jti: String,
    /// Not before, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

/// A token whose signature and registered claims have been checked.
pub(crate) struct VerifiedToken {
    pub(crate) claims: RegisteredClaims,
    /// The whole payload, from which custom claims are read.
    pub(crate) payload: Box<RawValue>,
    /// The custom claims of the first type asked for, decoded once.
    custom: OnceLock<Box<dyn Any + Send + Sync>>,
    /// The revocation-list generation at which the session was last found
    /// not revoked (`u64::MAX`: never checked).
    clean_at: AtomicU64,
}

impl VerifiedToken {
    fn new(claims: RegisteredClaims, payload: Box<RawValue>) -> Self {
        Self { claims, payload, custom: OnceLock::new(), clean_at: AtomicU64::new(u64::MAX) }
    }

    /// Whether the session is revoked, looking it up only when a revocation
    /// happened since the last look.
    pub(crate) fn is_revoked(&self, revocations: &RevocationList) -> bool {
        let generation = revocations.generation();
        if self.clean_at.load(Ordering::Relaxed) == generation {
            return false;
        }
        if revocations.is_revoked(&self.claims.sid) {
            return true;
        }
        self.clean_at.store(generation, Ordering::Relaxed);
        false
    }

    #[cfg(test)]
    pub(crate) fn for_tests(claims: RegisteredClaims) -> Self {
        Self::new(claims, RawValue::from_string("{}".into()).expect("valid JSON"))
    }

    /// The custom claims as `T`, decoded at most once per token for the first
    /// `T` asked for (applications use one claims type).
    pub(crate) fn custom<T>(&self) -> Result<Arc<T>, serde_json::Error>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        if let Some(cached) = self.custom.get().and_then(|c| c.downcast_ref::<Arc<T>>()) {
            return Ok(cached.clone());
        }
        let value: Arc<T> = Arc::new(serde_json::from_str(self.payload.get())?);
        let _ = self.custom.set(Box::new(value.clone()));
        Ok(value)
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

/// Everything needed to issue access tokens.
pub(crate) struct Issuer {
    key: SigningKey,
    header: Header,
    /// `header` as it starts every token (base64url of its JSON).
    encoded_header: String,
    issuer: Option<String>,
    audience: Option<String>,
    pub(crate) ttl: Duration,
}

/// The payload written into tokens, custom claims spliced in after it.
#[derive(Serialize)]
struct Payload<'a> {
    sub: &'a str,
    sid: &'a str,
    iat: u64,
    exp: u64,
    jti: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// What a token to issue says, beyond the issuer's fixed settings.
pub(crate) struct TokenSpec<'a> {
    pub sub: &'a str,
    pub sid: &'a str,
    /// The custom claims as a JSON object, already checked by [`custom_claims_json`].
    pub custom_json: &'a str,
    pub iat: u64,
    pub exp: u64,
    pub nbf: Option<u64>,
    pub iss: Option<&'a str>,
    pub aud: Option<&'a str>,
    pub jti: &'a str,
}

impl Issuer {
    pub(crate) fn new(key: SigningKey, issuer: Option<String>, audience: Option<String>, ttl: Duration) -> Self {
        let mut header = Header::new(key.algorithm());
        header.kid = Some(key.kid().to_owned());
        let encoded_header = encode_header(&header);
        Self { key, header, encoded_header, issuer, audience, ttl }
    }

    pub(crate) fn key(&self) -> &SigningKey {
        &self.key
    }

    pub(crate) fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    pub(crate) fn audience(&self) -> Option<&str> {
        self.audience.as_deref()
    }

    /// Issues an access token for `sub` in session `sid`, valid from now for
    /// the TTL but never longer than `session_left` (the token must not
    /// outlive its session, or a logout after the session expired would
    /// leave it valid).
    pub(crate) fn issue(
        &self,
        sub: &str,
        sid: &str,
        custom_json: &str,
        session_left: Duration,
    ) -> Result<AccessToken, AuthError> {
        let ttl = self.ttl.min(session_left).as_secs().max(1);
        let iat = now_ms() / 1000;
        let jti = crate::random::token_id();
        let spec = TokenSpec {
            sub,
            sid,
            custom_json,
            iat,
            exp: iat.saturating_add(ttl),
            nbf: None,
            iss: self.issuer.as_deref(),
            aud: self.audience.as_deref(),
            jti: &jti,
        };
        let mut token = sign_encoded(&self.key, &self.header, Some(&self.encoded_header), &spec)?;
        token.expires_in = ttl;
        Ok(token)
    }
}

/// A JWS header as jsonwebtoken writes it: base64url of its JSON.
fn encode_header(header: &Header) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(header).expect("a JWS header serializes"))
}

/// Signs `spec` with `key`; also returns the verified form so the caller can
/// serve the request with it at once.
pub(crate) fn sign(key: &SigningKey, header: &Header, spec: &TokenSpec<'_>) -> Result<AccessToken, AuthError> {
    sign_encoded(key, header, None, spec)
}

/// [`sign`], given `header` already encoded when the caller keeps it.
///
/// HMAC keys sign here with their pre-keyed state (the same bytes as
/// `jsonwebtoken::encode`: `base64url(header) . base64url(payload) .
/// base64url(signature)`); other keys through jsonwebtoken.
fn sign_encoded(
    key: &SigningKey,
    header: &Header,
    encoded_header: Option<&str>,
    spec: &TokenSpec<'_>,
) -> Result<AccessToken, AuthError> {
    let registered = Payload {
        sub: spec.sub,
        sid: spec.sid,
        iat: spec.iat,
        exp: spec.exp,
        jti: spec.jti,
        nbf: spec.nbf,
        iss: spec.iss,
        aud: spec.aud,
    };
    // `custom_json` is a JSON object without registered names (checked when
    // the session was created), so splicing its members in keeps valid JSON.
    let object = spec.custom_json.trim();
    let members = object.strip_prefix('{').and_then(|o| o.strip_suffix('}')).unwrap_or(object).trim();
    // Room for the registered claims (names, numbers, a 22-byte jti) and the custom ones.
    let strings = spec.sub.len() + spec.sid.len() + spec.jti.len() + spec.iss.map_or(0, str::len);
    let mut payload = Vec::with_capacity(96 + strings + spec.aud.map_or(0, str::len) + members.len());
    serde_json::to_writer(&mut payload, &registered).map_err(|_| AuthError::Misconfigured("claims"))?;
    if !members.is_empty() {
        payload.pop();
        payload.push(b',');
        payload.extend_from_slice(members.as_bytes());
        payload.push(b'}');
    }
    let payload = String::from_utf8(payload).map_err(|_| AuthError::Misconfigured("claims"))?;
    let payload =
        RawValue::from_string(payload).map_err(|_| AuthError::Misconfigured("custom claims are not a JSON object"))?;
    let token = match key.hmac_signer() {
        Some(signer) => {
            let header = match encoded_header {
                Some(encoded) => std::borrow::Cow::Borrowed(encoded),
                None => std::borrow::Cow::Owned(encode_header(header)),
            };
            let json = payload.get();
            let mut token =
                String::with_capacity(header.len() + 2 + json.len().div_ceil(3) * 4 + signer.signature_len());
            token.push_str(&header);
            token.push('.');
            URL_SAFE_NO_PAD.encode_string(json, &mut token);
            signer.sign_into(&mut token);
            token
        }
        None => jsonwebtoken::encode(header, &payload, key.encoding_key()).map_err(|error| {
            tracing::error!(%error, "signing an access token failed");
            AuthError::Misconfigured("the signing key cannot sign")
        })?,
    };
    let claims = RegisteredClaims {
        sub: spec.sub.to_owned(),
        sid: spec.sid.to_owned(),
        iat: spec.iat,
        exp: spec.exp,
        jti: spec.jti.to_owned(),
        nbf: spec.nbf,
        iss: spec.iss.map(str::to_owned),
    };
    let verified = Arc::new(VerifiedToken::new(claims, payload));
    Ok(AccessToken { token, expires_in: spec.exp.saturating_sub(spec.iat), verified: VerifiedTokenHandle(verified) })
}

/// Serializes custom claims to a JSON object that may be spliced into a token.
pub(crate) fn custom_claims_json<T: Serialize + ?Sized>(claims: &T) -> Result<String, AuthError> {
    let value =
        serde_json::to_value(claims).map_err(|_| AuthError::Misconfigured("custom claims cannot be serialized"))?;
    match &value {
        serde_json::Value::Object(map) => {
            if map.keys().any(|k| REGISTERED_NAMES.contains(&k.as_str())) {
                return Err(AuthError::Misconfigured("custom claims may not use registered claim names"));
            }
        }
        serde_json::Value::Null => return Ok("{}".to_owned()),
        _ => return Err(AuthError::Misconfigured("custom claims must serialize to a JSON object")),
    }
    Ok(value.to_string())
}

/// Verifies tokens against a key set, with the validation rules built once.
pub(crate) struct Verifier {
    keys: Vec<(VerifyingKey, Validation)>,
    cache: VerifiedCache,
    leeway_secs: u64,
    max_token_bytes: usize,
}

impl Verifier {
    pub(crate) fn new(
        keys: Vec<VerifyingKey>,
        issuer: Option<&str>,
        audience: Option<&str>,
        leeway: Duration,
        cache_capacity: usize,
        max_token_bytes: usize,
    ) -> Self {
        let keys = keys
            .into_iter()
            .map(|key| {
                let mut validation = Validation::new(key.algorithm());
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
                (key, validation)
            })
            .collect();
        Self { keys, cache: VerifiedCache::new(cache_capacity), leeway_secs: leeway.as_secs(), max_token_bytes }
    }

    /// Verifies `token`, from the cache when it was verified before.
    pub(crate) fn verify(&self, token: &str) -> Result<Arc<VerifiedToken>, AuthError> {
        match self.cached(token.as_bytes()) {
            Some(hit) => hit,
            None => self.verify_uncached(token),
        }
    }

    /// A token verified before, its times checked again; `None` on a miss.
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

    /// `exp` and `nbf` again for a cached token (the signature was checked).
    fn check_times(&self, claims: &RegisteredClaims, now: u64) -> Result<(), AuthError> {
        if claims.exp.saturating_add(self.leeway_secs) < now {
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
        let (key, validation) = self
            .keys
            .iter()
            .find(|(key, _)| key.kid() == kid)
            .ok_or(AuthError::InvalidToken("The access token was signed by an unknown key"))?;
        let data = jsonwebtoken::decode::<Box<RawValue>>(token, key.decoding_key(), validation)
            .map_err(|e| describe(e.kind()))?;
        let claims: RegisteredClaims = serde_json::from_str(data.claims.get())
            .map_err(|_| AuthError::InvalidToken("The access token lacks a required claim"))?;
        Ok(VerifiedToken::new(claims, data.claims))
    }

    /// The clock leeway on `exp` and `nbf`, in seconds.
    #[cfg(feature = "bff")]
    pub(crate) fn leeway_secs(&self) -> u64 {
        self.leeway_secs
    }

    /// Every verification key (for the JWKS document).
    pub(crate) fn keys(&self) -> impl Iterator<Item = &VerifyingKey> {
        self.keys.iter().map(|(key, _)| key)
    }
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

#[cfg(test)]
mod tests {
    use jsonwebtoken::{Algorithm, DecodingKey};

    use super::*;

    /// What jsonwebtoken itself makes of the same header and payload.
    fn reference(key: &SigningKey, header: &Header, token: &AccessToken) -> String {
        jsonwebtoken::encode(header, &token.verified.0.payload, key.encoding_key()).unwrap()
    }

    fn spec<'a>(jti: &'a str, custom_json: &'a str) -> TokenSpec<'a> {
        TokenSpec {
            sub: "alice \"ü\" <x>",
            sid: "sid-1",
            custom_json,
            iat: 1_900_000_000,
            exp: 4_000_000_000,
            nbf: Some(1_900_000_000),
            iss: Some("https://issuer.example"),
            aud: Some("app"),
            jti,
        }
    }

    #[test]
    fn hmac_fast_path_equals_jsonwebtoken_and_verifies() {
        for (alg, len) in [(Algorithm::HS256, 32), (Algorithm::HS384, 48), (Algorithm::HS512, 64)] {
            let secret: Vec<u8> = (0..len as u8 + 7).collect();
            let key = SigningKey::hmac(alg, "kid-1", &secret).unwrap();
            assert!(key.hmac_signer().is_some(), "{alg:?}: no fast path");
            let mut header = Header::new(alg);
            header.kid = Some("kid-1".into());
            for custom in ["{}", r#"{"role":"admin","n":{"deep":[1,2,{}]}}"#, r#"{"e":"é\n\u0000"}"#] {
                let jti = crate::random::token_id();
                let token = sign(&key, &header, &spec(&jti, custom)).unwrap();
                assert_eq!(token.token, reference(&key, &header, &token), "{alg:?} {custom}");

                let mut validation = Validation::new(alg);
                validation.set_issuer(&["https://issuer.example"]);
                validation.set_audience(&["app"]);
                let data = jsonwebtoken::decode::<serde_json::Value>(
                    &token.token,
                    &DecodingKey::from_secret(&secret),
                    &validation,
                )
                .unwrap();
                assert_eq!(data.header.kid.as_deref(), Some("kid-1"));
                assert_eq!(data.claims["jti"], jti.as_str());
                assert_eq!(data.claims["sub"], "alice \"ü\" <x>");
            }

            // The issuer's path, with its header encoded once.
            let issuer = Issuer::new(key.clone(), Some("iss".into()), Some("aud".into()), Duration::from_secs(900));
            let token = issuer.issue("bob", "sid-2", r#"{"role":"user"}"#, Duration::MAX).unwrap();
            assert_eq!(token.token, reference(&key, &issuer.header, &token), "{alg:?} issuer");
            assert_eq!(token.expires_in, 900);
        }
    }

    #[test]
    fn asymmetric_keys_sign_through_jsonwebtoken() {
        let pem = b"-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIEds1CKkL04kJaQ+pzquKWpdoMly+LttVvhifkihDnKw
-----END PRIVATE KEY-----";
        let key = SigningKey::from_pem(Algorithm::EdDSA, "ed-1", pem).unwrap();
        assert!(key.hmac_signer().is_none());
        let issuer = Issuer::new(key.clone(), None, None, Duration::from_secs(60));
        let token = issuer.issue("carol", "sid-3", "{}", Duration::MAX).unwrap();
        // Ed25519 signatures are deterministic.
        assert_eq!(token.token, reference(&key, &issuer.header, &token));
        let verifier = Verifier::new(vec![key.verifying_key().clone()], None, None, Duration::ZERO, 0, 8192);
        assert_eq!(verifier.verify(&token.token).unwrap().claims.sub, "carol");
    }
}
