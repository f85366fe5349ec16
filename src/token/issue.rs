//! Issuing access tokens: the payload (registered claims with the custom
//! ones spliced in), the `at+jwt` header, and signing (HMAC keys with their
//! pre-keyed state, others through jsonwebtoken).

use std::{sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::Header;
use serde::Serialize;
use serde_json::value::RawValue;

use super::{AccessToken, REGISTERED_NAMES, RegisteredClaims, VerifiedToken, VerifiedTokenHandle};
use crate::{error::AuthError, keys::SigningKey};

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
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_time: Option<u64>,
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
    pub auth_time: Option<u64>,
}

impl Issuer {
    pub(crate) fn new(key: SigningKey, issuer: Option<String>, audience: Option<String>, ttl: Duration) -> Self {
        let header = access_token_header(&key);
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

    /// Issues an access token for `sub` in session `sid` issued at `iat`
    /// (Unix seconds), valid for the TTL but never past `session_end_ms`:
    /// the token must not outlive its session, or a logout after the
    /// session expired would leave it valid. Fails when the session ends
    /// within the second.
    pub(crate) fn issue(&self, token: IssueSpec<'_>) -> Result<AccessToken, AuthError> {
        let exp = token.iat.saturating_add(self.ttl.as_secs()).min(token.session_end_ms / 1000);
        if exp <= token.iat {
            return Err(AuthError::InvalidGrant("The session has ended"));
        }
        let jti = crate::random::token_id();
        let spec = TokenSpec {
            sub: token.sub,
            sid: token.sid,
            custom_json: token.custom_json,
            iat: token.iat,
            exp,
            nbf: None,
            iss: self.issuer.as_deref(),
            aud: self.audience.as_deref(),
            jti: &jti,
            auth_time: Some(token.auth_time),
        };
        sign_encoded(&self.key, &self.header, Some(&self.encoded_header), &spec)
    }
}

/// What differs between the access tokens an [`Issuer`] issues.
pub(crate) struct IssueSpec<'a> {
    pub sub: &'a str,
    pub sid: &'a str,
    /// The custom claims as a JSON object, already checked by [`custom_claims_json`].
    pub custom_json: &'a str,
    /// Unix seconds (see `RevocationList::issue_at`).
    pub iat: u64,
    /// Unix seconds.
    pub auth_time: u64,
    /// When the session ends whatever happens, Unix ms.
    pub session_end_ms: u64,
}

/// The JWS header of an access token signed by `key`: its algorithm and
/// `kid`, and `typ: at+jwt` (RFC 9068), so an ID token or any other JWT the
/// key signs is never taken for an access token.
pub(crate) fn access_token_header(key: &SigningKey) -> Header {
    let mut header = Header::new(key.algorithm());
    header.kid = Some(key.kid().to_owned());
    header.typ = Some(super::ACCESS_TOKEN_TYP.to_owned());
    header
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
        auth_time: spec.auth_time,
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
        auth_time: spec.auth_time,
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

#[cfg(test)]
mod tests {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};

    use super::*;

    /// What jsonwebtoken itself makes of the same header and payload.
    fn reference(key: &SigningKey, header: &Header, token: &AccessToken) -> String {
        jsonwebtoken::encode(header, &token.verified.0.payload, key.encoding_key()).unwrap()
    }

    fn issue_spec<'a>(sub: &'a str, custom_json: &'a str) -> IssueSpec<'a> {
        let iat = crate::clock::now_ms() / 1000;
        IssueSpec { sub, sid: "sid", custom_json, iat, auth_time: iat, session_end_ms: u64::MAX }
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
            auth_time: Some(1_899_999_000),
        }
    }

    #[test]
    fn hmac_fast_path_equals_jsonwebtoken_and_verifies() {
        for (alg, len) in [(Algorithm::HS256, 32), (Algorithm::HS384, 48), (Algorithm::HS512, 64)] {
            let secret: Vec<u8> = (0..len as u8 + 7).collect();
            let key = SigningKey::hmac(alg, "kid-1", &secret).unwrap();
            assert!(key.hmac_signer().is_some(), "{alg:?}: no fast path");
            let header = access_token_header(&key);
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
            let token = issuer.issue(issue_spec("bob", r#"{"role":"user"}"#)).unwrap();
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
        let token = issuer.issue(issue_spec("carol", "{}")).unwrap();
        // Ed25519 signatures are deterministic.
        assert_eq!(token.token, reference(&key, &issuer.header, &token));
        let verifier = crate::token::Verifier::new(
            crate::keys::KeySet::new(vec![key.verifying_key().clone()]),
            None,
            None,
            Duration::ZERO,
            0,
            8192,
        );
        assert_eq!(verifier.verify(&token.token).unwrap().claims.sub, "carol");
    }
}
