//! Reading what a provider publishes: the JWKS (each key judged on its own,
//! unusable ones skipped), the OIDC discovery document, `Cache-Control`.

use std::time::Duration;

use http::{HeaderMap, header};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::error::FetchError;
use crate::keys::{Algorithm, VerifyingKey};

/// The usable keys of a JWKS document, first of each `kid` kept; a document
/// that is not a JWKS or has no usable key is an error.
pub(crate) fn parse_jwks(url: &str, body: &[u8], allowed: &[Algorithm]) -> Result<Vec<VerifyingKey>, FetchError> {
    #[derive(Deserialize)]
    struct Document<'a> {
        #[serde(borrow)]
        keys: Vec<&'a RawValue>,
    }
    let document: Document<'_> = serde_json::from_slice(body).map_err(|e| FetchError::Malformed {
        url: url.to_owned(),
        expected: "JWKS",
        why: e.to_string(),
    })?;
    let mut keys: Vec<VerifyingKey> = Vec::with_capacity(document.keys.len());
    let mut skipped = 0;
    for raw in document.keys {
        match usable_key(raw.get(), allowed) {
            Ok(key) if keys.iter().any(|k| k.kid() == key.kid()) => {
                tracing::debug!(url, kid = key.kid(), "JWKS: a second key with the same kid is skipped");
                skipped += 1;
            }
            Ok(key) => keys.push(key),
            Err(why) => {
                tracing::debug!(url, why, "JWKS: key skipped");
                skipped += 1;
            }
        }
    }
    if keys.is_empty() {
        return Err(FetchError::NoUsableKey { url: url.to_owned(), skipped });
    }
    Ok(keys)
}

/// One JWK as a verification key, or why it is skipped.
fn usable_key(json: &str, allowed: &[Algorithm]) -> Result<VerifyingKey, &'static str> {
    let mut jwk: Jwk = serde_json::from_str(json).map_err(|_| "not a JWK")?;
    match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(_) => return Err("not a signature key (`use`)"),
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops.contains(&KeyOperations::Verify)
    {
        return Err("not a verification key (`key_ops`)");
    }
    if jwk.common.key_id.is_none() {
        return Err("no `kid`");
    }
    let alg = match jwk.common.key_algorithm {
        Some(alg) => Algorithm::try_from(alg).map_err(|_| "an `alg` that is not a JWS algorithm")?,
        None => infer_algorithm(&jwk.algorithm)?,
    };
    if !allowed.contains(&alg) {
        return Err("an algorithm not allowed");
    }
    jwk.common.key_algorithm = Some(alg.into());
    // Refuses symmetric keys and keys of another family or curve than `alg`.
    VerifyingKey::from_jwk(&jwk).map_err(|_| "a key that does not fit its algorithm")
}

/// The algorithm of a key without `alg`, where its type and curve leave
/// only one; RSA (RS* or PS*, three hashes each) never does.
fn infer_algorithm(params: &AlgorithmParameters) -> Result<Algorithm, &'static str> {
    match params {
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Ok(Algorithm::ES256),
            EllipticCurve::P384 => Ok(Algorithm::ES384),
            _ => Err("no `alg` and an unsupported curve"),
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => Ok(Algorithm::EdDSA),
        AlgorithmParameters::RSA(_) => Err("an RSA key without `alg` (RS* or PS*: ambiguous)"),
        AlgorithmParameters::OctetKey(_) => Err("a symmetric key"),
        _ => Err("no `alg` and an unsupported key type"),
    }
}

/// The JWKS URL and issuer named by an OpenID Connect discovery document.
pub(crate) struct Discovery {
    pub(crate) issuer: String,
    pub(crate) jwks_uri: String,
}

/// Reads a discovery document (OpenID Connect Discovery 1.0 §3).
pub(crate) fn parse_discovery(url: &str, body: &[u8]) -> Result<Discovery, FetchError> {
    #[derive(Deserialize)]
    struct Document {
        issuer: String,
        jwks_uri: String,
    }
    let document: Document = serde_json::from_slice(body).map_err(|e| FetchError::Malformed {
        url: url.to_owned(),
        expected: "OpenID discovery document",
        why: e.to_string(),
    })?;
    Ok(Discovery { issuer: document.issuer, jwks_uri: document.jwks_uri })
}

/// How long the answer stays fresh by `Cache-Control` (less its `Age`):
/// `max-age`, zero for `no-cache`/`no-store`, `None` without either.
pub(crate) fn freshness(headers: &HeaderMap) -> Option<Duration> {
    let mut max_age: Option<u64> = None;
    for value in headers.get_all(header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',') {
            let (name, argument) = match directive.split_once('=') {
                Some((name, argument)) => (name.trim(), Some(argument.trim().trim_matches('"'))),
                None => (directive.trim(), None),
            };
            if name.eq_ignore_ascii_case("no-cache") || name.eq_ignore_ascii_case("no-store") {
                return Some(Duration::ZERO);
            }
            if name.eq_ignore_ascii_case("max-age")
                && let Some(seconds) = argument.and_then(|a| a.parse::<u64>().ok())
            {
                max_age = Some(max_age.map_or(seconds, |m| m.min(seconds)));
            }
        }
    }
    let age = headers.get(header::AGE).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok()).unwrap_or(0);
    max_age.map(|m| Duration::from_secs(m.saturating_sub(age)))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use serde_json::{Value, json};

    use super::*;
    use crate::keys::{SigningKey, jwks, pick_test_crypto_backend};

    const ALL: &[Algorithm] = &[Algorithm::ES256, Algorithm::ES384, Algorithm::EdDSA, Algorithm::RS256];

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    /// The public JWK of the P-256 test key, `kid` "e", without `alg` or `use`.
    fn p256() -> Value {
        pick_test_crypto_backend();
        let key = SigningKey::from_pem(Algorithm::ES256, "e", include_bytes!("../../tests/keys/p256.pem")).unwrap();
        let mut jwk = serde_json::to_value(&jwks([key.verifying_key()]).keys[0]).unwrap();
        let object = jwk.as_object_mut().unwrap();
        object.remove("alg");
        object.remove("use");
        jwk
    }

    fn with(mut jwk: Value, field: &str, value: Value) -> String {
        jwk[field] = value;
        jwk.to_string()
    }

    #[test]
    fn cache_control() {
        assert_eq!(freshness(&headers(&[])), None);
        assert_eq!(freshness(&headers(&[("cache-control", "public, max-age=600")])), Some(Duration::from_secs(600)));
        assert_eq!(freshness(&headers(&[("cache-control", "Max-Age=\"60\"")])), Some(Duration::from_secs(60)));
        assert_eq!(
            freshness(&headers(&[("cache-control", "max-age=600"), ("age", "100")])),
            Some(Duration::from_secs(500))
        );
        assert_eq!(freshness(&headers(&[("cache-control", "max-age=600, no-cache")])), Some(Duration::ZERO));
        assert_eq!(freshness(&headers(&[("cache-control", "max-age=nonsense")])), None);
    }

    #[test]
    fn keys_without_alg_are_inferred_only_when_unambiguous() {
        assert_eq!(usable_key(&p256().to_string(), ALL).unwrap().algorithm(), Algorithm::ES256);
        let rsa = r#"{"kty":"RSA","kid":"r","n":"sXch","e":"AQAB"}"#;
        assert!(usable_key(rsa, ALL).is_err());
        assert!(usable_key(&p256().to_string(), &[Algorithm::EdDSA]).is_err(), "not allowed");
        assert!(usable_key(&with(p256(), "use", json!("enc")), ALL).is_err());
        assert!(usable_key(&with(p256(), "key_ops", json!(["encrypt"])), ALL).is_err());
        assert!(usable_key(&with(p256(), "use", json!("sig")), ALL).is_ok());
        let mut no_kid = p256();
        no_kid.as_object_mut().unwrap().remove("kid");
        assert!(usable_key(&no_kid.to_string(), ALL).is_err());
    }

    #[test]
    fn mislabelled_and_symmetric_keys_are_skipped() {
        let oct = r#"{"kty":"oct","kid":"s","alg":"ES256","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}"#;
        assert!(usable_key(oct, ALL).is_err());
        assert!(usable_key(&with(p256(), "alg", json!("RS256")), ALL).is_err());
        assert!(usable_key(&with(p256(), "alg", json!("ES384")), ALL).is_err());
        assert!(usable_key(&with(p256(), "alg", json!("RSA-OAEP")), ALL).is_err());
        assert!(usable_key(&with(p256(), "alg", json!("ES256")), ALL).is_ok());
    }

    #[test]
    fn a_document_needs_one_usable_key() {
        let url = "https://issuer.example/jwks";
        assert!(matches!(parse_jwks(url, b"<html>", ALL), Err(FetchError::Malformed { .. })));
        assert!(matches!(parse_jwks(url, br#"{"keys":"no"}"#, ALL), Err(FetchError::Malformed { .. })));
        let junk = br#"{"keys":[{"kty":"weird","kid":"w"},42]}"#;
        assert!(matches!(parse_jwks(url, junk, ALL), Err(FetchError::NoUsableKey { skipped: 2, .. })));
        let doc = json!({"keys": [{"kty": "weird"}, p256(), p256()]}).to_string();
        let keys = parse_jwks(url, doc.as_bytes(), ALL).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid(), "e");
    }
}
