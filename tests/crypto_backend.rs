//! Which crypto backend jsonwebtoken runs on is a feature of this crate
//! (`aws-lc-rs` by default, or `rust-crypto`). Built with neither
//! (`--no-default-features`), every key constructor refuses with the fix in
//! its message instead of jsonwebtoken panicking at the first PEM key or
//! signature check. `./test` runs this file both ways.

use tower_jwt_auth::{Algorithm, KeyError, SigningKey, VerifyingKey, jwk::Jwk};

const ED25519_PEM: &[u8] = include_bytes!("keys/ed25519.pem");
const ED25519_PUBLIC_PEM: &[u8] = include_bytes!("keys/ed25519.pub.pem");

/// A public Ed25519 JWK as another service would publish it.
fn jwk() -> Jwk {
    serde_json::from_str(
        r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"ed","alg":"EdDSA"}"#,
    )
    .expect("a valid JWK")
}

/// Every way of building a key, by name.
fn every_key() -> Vec<(&'static str, Result<(), KeyError>)> {
    vec![
        ("SigningKey::hs256", SigningKey::hs256("k", &[7; 32]).map(drop)),
        ("SigningKey::hmac", SigningKey::hmac(Algorithm::HS512, "k", &[7; 64]).map(drop)),
        ("SigningKey::from_pem", SigningKey::from_pem(Algorithm::EdDSA, "k", ED25519_PEM).map(drop)),
        ("VerifyingKey::hmac", VerifyingKey::hmac(Algorithm::HS256, "k", &[7; 32]).map(drop)),
        (
            "VerifyingKey::from_public_pem",
            VerifyingKey::from_public_pem(Algorithm::EdDSA, "k", ED25519_PUBLIC_PEM).map(drop),
        ),
        ("VerifyingKey::from_jwk", VerifyingKey::from_jwk(&jwk()).map(drop)),
    ]
}

#[cfg(not(any(feature = "aws-lc-rs", feature = "rust-crypto")))]
#[test]
fn without_a_backend_every_key_is_refused_with_the_fix() {
    for (constructor, result) in every_key() {
        let error = result.expect_err(constructor);
        assert!(matches!(error, KeyError::NoCryptoBackend), "{constructor}: {error:?}");
        let message = tower_jwt_auth::ConfigError::from(error).to_string();
        for fix in ["aws-lc-rs", "rust-crypto", "features = [\"rust-crypto\"]"] {
            assert!(message.contains(fix), "{constructor}: the message must name {fix}: {message}");
        }
    }
}

#[cfg(any(feature = "aws-lc-rs", feature = "rust-crypto"))]
#[test]
fn with_a_backend_every_key_builds_and_signs() {
    for (constructor, result) in every_key() {
        result.unwrap_or_else(|error| panic!("{constructor}: {error}"));
    }
    let key = SigningKey::from_pem(Algorithm::EdDSA, "k", ED25519_PEM).expect("an Ed25519 key");
    let auth = tower_jwt_auth::JwtAuth::builder().signing_key(key).build().expect("a layer");
    assert_eq!(auth.jwks().keys.len(), 1, "the public half is published");
    assert!(!auth.test_token("alice").sign().is_empty());
}
