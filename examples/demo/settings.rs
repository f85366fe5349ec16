//! The demo's settings, from environment variables (see `examples/README.md`
//! for the table), and the keys derived from `JWT_SECRET` so that
//! several instances, and a restarted one, agree.

use std::{env, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tower_jwt_auth::{Algorithm, SigningKey};

/// `HMAC(secret, label)`: independent keys from one secret.
pub fn derive(secret: &[u8], label: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(label.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

pub fn secs(name: &str, default: u64) -> Duration {
    Duration::from_secs(env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default))
}

pub fn var(name: &str) -> Option<String> {
    env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The access-token signing key for `JWT_ALG` (`HS256`, `ES256` or `EdDSA`).
pub fn signing_key(secret: &[u8]) -> Result<SigningKey, Box<dyn std::error::Error>> {
    signing_key_for(&var("JWT_ALG").unwrap_or_else(|| "HS256".into()), secret)
}

fn signing_key_for(alg: &str, secret: &[u8]) -> Result<SigningKey, Box<dyn std::error::Error>> {
    Ok(match alg.to_ascii_uppercase().as_str() {
        "HS256" => SigningKey::hs256("demo-hs256", &derive(secret, "access-token"))?,
        "ES256" => p256_key(secret)?,
        "EDDSA" => {
            let seed = derive(secret, "access-token-ed25519");
            SigningKey::from_pem(Algorithm::EdDSA, "demo-eddsa", pem(&ed25519_pkcs8(&seed)).as_bytes())?
        }
        other => return Err(format!("JWT_ALG={other}: expected HS256, ES256 or EdDSA").into()),
    })
}

/// A P-256 key whose private scalar is derived from the secret (retrying in
/// the unlikely case a derivation falls outside the curve's order).
fn p256_key(secret: &[u8]) -> Result<SigningKey, Box<dyn std::error::Error>> {
    let mut last = None;
    for attempt in 0..8 {
        let scalar = derive(secret, &format!("access-token-p256-{attempt}"));
        match SigningKey::from_pem(Algorithm::ES256, "demo-es256", pem(&p256_pkcs8(&scalar)).as_bytes()) {
            Ok(key) => return Ok(key),
            Err(error) => last = Some(error),
        }
    }
    Err(last.map_or_else(|| "no P-256 key".into(), Into::into))
}

/// PKCS#8 of an Ed25519 seed (RFC 8410): a fixed prefix and the 32 bytes.
fn ed25519_pkcs8(seed: &[u8]) -> Vec<u8> {
    let mut der = vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    der.extend_from_slice(&seed[..32]);
    der
}

/// PKCS#8 of a P-256 private scalar (RFC 5915 `ECPrivateKey` without the
/// public key, which the crypto library computes).
fn p256_pkcs8(scalar: &[u8]) -> Vec<u8> {
    let mut der = vec![
        0x30, 0x41, 0x02, 0x01, 0x00, // SEQUENCE, version 0
        0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, // id-ecPublicKey
        0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, // prime256v1
        0x04, 0x27, 0x30, 0x25, 0x02, 0x01, 0x01, 0x04, 0x20, // OCTET STRING { ECPrivateKey { 1, d } }
    ];
    der.extend_from_slice(&scalar[..32]);
    der
}

fn pem(der: &[u8]) -> String {
    format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", STANDARD.encode(der))
}

/// `REDIS_URL` without its password, for logs.
pub fn redacted(url: &str) -> String {
    url.split(',')
        .map(|one| match (one.find("://"), one.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => format!("{}://***@{}", &one[..scheme], &one[at + 1..]),
            _ => one.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    #[test]
    fn redis_urls_are_logged_without_their_password() {
        assert_eq!(super::redacted("redis://:hunter2@cache:6379/0"), "redis://***@cache:6379/0");
        assert_eq!(super::redacted("rediss://app:pw@a:1,rediss://app:pw@b:2"), "rediss://***@a:1,rediss://***@b:2");
        assert_eq!(super::redacted("redis://cache:6379"), "redis://cache:6379");
    }

    #[test]
    fn asymmetric_keys_derive_the_same_from_the_same_secret() {
        let jwks = |alg: &str, secret: &[u8]| {
            let key = super::signing_key_for(alg, secret).unwrap();
            serde_json::to_string(&tower_jwt_auth::JwtAuth::new(key).jwks()).unwrap()
        };
        for alg in ["ES256", "EdDSA"] {
            assert_eq!(jwks(alg, b"one"), jwks(alg, b"one"), "{alg}: instances agree");
            assert_ne!(jwks(alg, b"one"), jwks(alg, b"two"), "{alg}: the secret decides");
        }
        assert!(super::signing_key_for("RS256", b"one").is_err());
    }
}
