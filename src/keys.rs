//! Signing and verification keys: one active signing key, a set of
//! verification keys looked up by `kid`, each pinned to one algorithm, and the
//! public JWKS document for asymmetric keys.
//!
//! The algorithm is always the key's, never the token header's: a token whose
//! header names another algorithm, `none`, or an unknown `kid` is refused.

use std::sync::Arc;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
pub use jsonwebtoken::{Algorithm, AlgorithmFamily};
use jsonwebtoken::{
    DecodingKey, EncodingKey,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse},
};
use sha2::{Sha256, Sha384, Sha512};

use crate::token::ACCESS_TOKEN_TYP;

/// A key could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The PEM or JWK could not be read for this algorithm.
    #[error("invalid key for {alg:?}: {source}")]
    Invalid {
        /// The algorithm the key was meant for.
        alg: Algorithm,
        /// What jsonwebtoken said.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// An HMAC secret shorter than the hash output (RFC 7518 §3.2).
    #[error("an HMAC secret for {alg:?} must be at least {min} bytes, got {len}")]
    WeakSecret {
        /// The algorithm.
        alg: Algorithm,
        /// Its minimum secret length.
        min: usize,
        /// The length given.
        len: usize,
    },
    /// The constructor does not fit the algorithm (for example `hmac` with ES256).
    #[error("{alg:?} cannot be used here: {why}")]
    WrongAlgorithm {
        /// The algorithm given.
        alg: Algorithm,
        /// Why not.
        why: &'static str,
    },
    /// A JWK without `kid` or `alg`.
    #[error("a JWK needs both `kid` and `alg`")]
    IncompleteJwk,
    /// The crate was built without a crypto backend (`default-features =
    /// false` and neither `aws-lc-rs` nor `rust-crypto`): jsonwebtoken could
    /// neither sign nor verify, so no key is built.
    #[error(
        "tower-jwt-auth was built without a crypto backend: enable its `aws-lc-rs` (default) or `rust-crypto` \
         feature, e.g. `tower-jwt-auth = {{ version = \"0.1\", default-features = false, features = [\"rust-crypto\"] }}`"
    )]
    NoCryptoBackend,
}

/// Refuses every key when no crypto backend is compiled in: jsonwebtoken
/// would otherwise panic at the first PEM, JWK or signature check.
fn require_crypto_backend() -> Result<(), KeyError> {
    if cfg!(any(feature = "aws-lc-rs", feature = "rust-crypto")) { Ok(()) } else { Err(KeyError::NoCryptoBackend) }
}

/// A key that verifies tokens: a `kid`, the one algorithm it accepts, the
/// public (or shared) key material, and the token type it vouches for.
/// Cheap to clone.
#[derive(Clone)]
pub struct VerifyingKey {
    kid: Arc<str>,
    alg: Algorithm,
    decoding: Arc<DecodingKey>,
    /// The public JWK, for asymmetric keys only (secrets are never published).
    public_jwk: Option<Arc<Jwk>>,
    /// The `typ` header tokens must carry (`None`: any).
    typ: Option<Arc<str>>,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey").field("kid", &self.kid).field("alg", &self.alg).finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// An HMAC (HS256/384/512) verification key.
    pub fn hmac(alg: Algorithm, kid: impl Into<String>, secret: &[u8]) -> Result<Self, KeyError> {
        require_crypto_backend()?;
        check_hmac(alg, secret)?;
        Ok(Self {
            kid: kid.into().into(),
            alg,
            decoding: Arc::new(DecodingKey::from_secret(secret)),
            public_jwk: None,
            typ: Some(ACCESS_TOKEN_TYP.into()),
        })
    }

    /// An asymmetric verification key from a public-key PEM (RSA, EC or Ed25519).
    pub fn from_public_pem(alg: Algorithm, kid: impl Into<String>, pem: &[u8]) -> Result<Self, KeyError> {
        require_crypto_backend()?;
        let invalid = |source| KeyError::Invalid { alg, source };
        let decoding = match family(alg)? {
            AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(pem),
            AlgorithmFamily::Ec => DecodingKey::from_ec_pem(pem),
            AlgorithmFamily::Ed => DecodingKey::from_ed_pem(pem),
            AlgorithmFamily::Hmac => unreachable!("family() refuses HMAC"),
        }
        .map_err(invalid)?;
        let jwk = Jwk::from_decoding_key(&decoding, Some(alg)).map_err(invalid)?;
        Ok(Self::asymmetric(kid.into(), alg, decoding, jwk))
    }

    /// A verification key from a public JWK (as found in another service's
    /// JWKS document); it must carry `kid` and `alg`, and its key type (and
    /// curve) must fit `alg`: a symmetric `oct` JWK is refused whatever its
    /// `alg`, as a secret must never be published again in our JWKS.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, KeyError> {
        require_crypto_backend()?;
        let (Some(kid), Some(key_alg)) = (&jwk.common.key_id, jwk.common.key_algorithm) else {
            return Err(KeyError::IncompleteJwk);
        };
        let alg = Algorithm::try_from(key_alg).map_err(|_| KeyError::IncompleteJwk)?;
        family(alg)?;
        if !public_jwk_fits(alg, &jwk.algorithm) {
            return Err(KeyError::WrongAlgorithm { alg, why: "the JWK is not a public key of this algorithm's type" });
        }
        let decoding = DecodingKey::from_jwk(jwk).map_err(|source| KeyError::Invalid { alg, source })?;
        Ok(Self::asymmetric(kid.clone(), alg, decoding, jwk.clone()))
    }

    fn asymmetric(kid: String, alg: Algorithm, decoding: DecodingKey, mut jwk: Jwk) -> Self {
        jwk.common.key_id = Some(kid.clone());
        jwk.common.key_algorithm = Some(KeyAlgorithm::from(alg));
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        Self {
            kid: kid.into(),
            alg,
            decoding: Arc::new(decoding),
            public_jwk: Some(Arc::new(jwk)),
            typ: Some(ACCESS_TOKEN_TYP.into()),
        }
    }

    /// The `typ` header tokens verified by this key must carry. By default
    /// `Some("at+jwt")` (RFC 9068; `application/at+jwt` too, compared without
    /// case), so an ID token or any other JWT this key signed is never taken
    /// for an access token. `None` accepts any `typ` or none, for a foreign
    /// issuer whose access tokens carry no `typ`: then require `issuer` and
    /// `audience` so its other tokens are still refused.
    ///
    /// ```
    /// use tower_jwt_auth::{Algorithm, VerifyingKey};
    /// let pem = b"-----BEGIN PUBLIC KEY-----
    /// MCowBQYDK2VwAyEABBs2odKXUYb7KBeBler9cmGP6FUsJhidm7H+PKtpjj4=
    /// -----END PUBLIC KEY-----";
    /// let foreign = VerifyingKey::from_public_pem(Algorithm::EdDSA, "idp-1", pem)?.require_typ(None);
    /// # drop(foreign);
    /// # Ok::<(), tower_jwt_auth::KeyError>(())
    /// ```
    #[must_use]
    pub fn require_typ(mut self, typ: Option<&str>) -> Self {
        self.typ = typ.map(Into::into);
        self
    }

    /// Whether a token whose header says `typ` may be verified by this key.
    pub(crate) fn accepts_typ(&self, typ: Option<&str>) -> bool {
        let Some(required) = &self.typ else { return true };
        let Some(typ) = typ else { return false };
        let bare = |t: &str| {
            let t = t.trim();
            match t.get(..12) {
                Some(prefix) if prefix.eq_ignore_ascii_case("application/") => t[12..].to_owned(),
                _ => t.to_owned(),
            }
        };
        bare(typ).eq_ignore_ascii_case(&bare(required))
    }

    /// The key id tokens name in their header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The one algorithm this key accepts.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }
}

/// The key new tokens are signed with; it also verifies them.
#[derive(Clone)]
pub struct SigningKey {
    encoding: Arc<EncodingKey>,
    verifying: VerifyingKey,
    /// For HS256/384/512: the HMAC state with the key already absorbed.
    hmac: Option<Arc<HmacSigner>>,
}

/// An HMAC signer keyed once: each signature clones the keyed state instead
/// of setting the key up again, as `jsonwebtoken::encode` does per token.
#[derive(Clone)]
pub(crate) enum HmacSigner {
    Hs256(Hmac<Sha256>),
    Hs384(Hmac<Sha384>),
    Hs512(Hmac<Sha512>),
}

impl HmacSigner {
    fn new(alg: Algorithm, secret: &[u8]) -> Option<Self> {
        let keyed = "HMAC accepts keys of any length";
        Some(match alg {
            Algorithm::HS256 => Self::Hs256(Hmac::new_from_slice(secret).expect(keyed)),
            Algorithm::HS384 => Self::Hs384(Hmac::new_from_slice(secret).expect(keyed)),
            Algorithm::HS512 => Self::Hs512(Hmac::new_from_slice(secret).expect(keyed)),
            _ => return None,
        })
    }

    /// Signs `jws` (the JWS signing input, `header . payload`) and appends
    /// `.` and the base64url signature: a compact JWS.
    pub(crate) fn sign_into(&self, jws: &mut String) {
        fn finish<M: Mac + Clone>(keyed: &M, jws: &mut String) {
            let mut mac = keyed.clone();
            mac.update(jws.as_bytes());
            let tag = mac.finalize().into_bytes();
            jws.push('.');
            URL_SAFE_NO_PAD.encode_string(tag, jws);
        }
        match self {
            Self::Hs256(keyed) => finish(keyed, jws),
            Self::Hs384(keyed) => finish(keyed, jws),
            Self::Hs512(keyed) => finish(keyed, jws),
        }
    }

    /// Length of the base64url signature.
    pub(crate) fn signature_len(&self) -> usize {
        match self {
            Self::Hs256(_) => 43,
            Self::Hs384(_) => 64,
            Self::Hs512(_) => 86,
        }
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid()).field("alg", &self.algorithm()).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// An HS256 key; the secret must be at least 32 bytes.
    ///
    /// ```
    /// use tower_jwt_auth::SigningKey;
    /// let key = SigningKey::hs256("2026-11", b"a secret of at least thirty-two bytes!")?;
    /// assert_eq!(key.kid(), "2026-11");
    /// # Ok::<(), tower_jwt_auth::KeyError>(())
    /// ```
    pub fn hs256(kid: impl Into<String>, secret: &[u8]) -> Result<Self, KeyError> {
        Self::hmac(Algorithm::HS256, kid, secret)
    }

    /// An HMAC key (HS256/384/512); the secret must be at least as long as
    /// the hash output (32, 48 or 64 bytes).
    pub fn hmac(alg: Algorithm, kid: impl Into<String>, secret: &[u8]) -> Result<Self, KeyError> {
        let verifying = VerifyingKey::hmac(alg, kid, secret)?;
        let hmac = HmacSigner::new(alg, secret).map(Arc::new);
        Ok(Self { encoding: Arc::new(EncodingKey::from_secret(secret)), verifying, hmac })
    }

    /// An asymmetric key from a private-key PEM (PKCS#8, or PKCS#1/SEC1 where
    /// jsonwebtoken accepts them): RS256/384/512 and PS256/384/512 with RSA,
    /// ES256/ES384 with EC, EdDSA with Ed25519. The public half is derived
    /// from it and published by [`JwtAuth::jwks`](crate::JwtAuth::jwks).
    ///
    /// ```
    /// use tower_jwt_auth::{Algorithm, SigningKey};
    /// let pem = b"-----BEGIN PRIVATE KEY-----
    /// MC4CAQAwBQYDK2VwBCIEIEds1CKkL04kJaQ+pzquKWpdoMly+LttVvhifkihDnKw
    /// -----END PRIVATE KEY-----";
    /// let key = SigningKey::from_pem(Algorithm::EdDSA, "ed-1", pem)?;
    /// assert_eq!(key.algorithm(), Algorithm::EdDSA);
    /// # Ok::<(), tower_jwt_auth::KeyError>(())
    /// ```
    pub fn from_pem(alg: Algorithm, kid: impl Into<String>, private_pem: &[u8]) -> Result<Self, KeyError> {
        require_crypto_backend()?;
        let invalid = |source| KeyError::Invalid { alg, source };
        let encoding = match family(alg)? {
            AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(private_pem),
            AlgorithmFamily::Ec => EncodingKey::from_ec_pem(private_pem),
            AlgorithmFamily::Ed => EncodingKey::from_ed_pem(private_pem),
            AlgorithmFamily::Hmac => unreachable!("family() refuses HMAC"),
        }
        .map_err(invalid)?;
        let jwk = Jwk::from_encoding_key(&encoding, alg).map_err(invalid)?;
        let decoding = DecodingKey::from_jwk(&jwk).map_err(invalid)?;
        let verifying = VerifyingKey::asymmetric(kid.into(), alg, decoding, jwk);
        Ok(Self { encoding: Arc::new(encoding), verifying, hmac: None })
    }

    /// The key id written into every token's header.
    pub fn kid(&self) -> &str {
        self.verifying.kid()
    }

    /// The algorithm tokens are signed with.
    pub fn algorithm(&self) -> Algorithm {
        self.verifying.alg
    }

    /// The verification half of this key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.verifying
    }

    pub(crate) fn encoding_key(&self) -> &EncodingKey {
        &self.encoding
    }

    /// The pre-keyed signer of an HMAC key (`None`: sign with jsonwebtoken).
    pub(crate) fn hmac_signer(&self) -> Option<&HmacSigner> {
        self.hmac.as_deref()
    }
}

/// The family of an asymmetric algorithm; HMAC is refused.
fn family(alg: Algorithm) -> Result<AlgorithmFamily, KeyError> {
    crate::config::select_crypto_provider();
    match alg.family() {
        AlgorithmFamily::Hmac => {
            Err(KeyError::WrongAlgorithm { alg, why: "HMAC keys are secrets: use `hmac`, not a PEM or JWK" })
        }
        other => Ok(other),
    }
}

/// Whether JWK key parameters are a public key of `alg`'s type and curve
/// (`oct` secrets and unknown types never are).
fn public_jwk_fits(alg: Algorithm, params: &AlgorithmParameters) -> bool {
    match params {
        AlgorithmParameters::RSA(_) => alg.family() == AlgorithmFamily::Rsa,
        AlgorithmParameters::EllipticCurve(ec) => matches!(
            (alg, &ec.curve),
            (Algorithm::ES256, EllipticCurve::P256) | (Algorithm::ES384, EllipticCurve::P384)
        ),
        AlgorithmParameters::OctetKeyPair(okp) => alg == Algorithm::EdDSA && okp.curve == EllipticCurve::Ed25519,
        _ => false,
    }
}

/// Refuses non-HMAC algorithms and secrets shorter than the hash output.
fn check_hmac(alg: Algorithm, secret: &[u8]) -> Result<(), KeyError> {
    crate::config::select_crypto_provider();
    let min = match alg {
        Algorithm::HS256 => 32,
        Algorithm::HS384 => 48,
        Algorithm::HS512 => 64,
        _ => return Err(KeyError::WrongAlgorithm { alg, why: "not an HMAC algorithm" }),
    };
    if secret.len() < min {
        return Err(KeyError::WeakSecret { alg, min, len: secret.len() });
    }
    Ok(())
}

/// What a key set says about a `kid`.
pub(crate) enum KeyLookup {
    Found(VerifyingKey),
    /// No such key: refuse the token.
    Unknown,
    /// Keys come from elsewhere and none has arrived yet: answer 503.
    #[cfg_attr(not(feature = "remote-keys"), allow(dead_code))]
    NotReady,
}

/// The keys a verifier trusts, found by `kid`: configured ones first, then
/// those fetched from another issuer.
#[derive(Clone, Default)]
pub(crate) struct KeySet {
    local: Vec<VerifyingKey>,
    #[cfg(feature = "remote-keys")]
    remote: Option<crate::remote_keys::RemoteKeys>,
}

impl KeySet {
    pub(crate) fn new(local: Vec<VerifyingKey>) -> Self {
        Self { local, ..Self::default() }
    }

    /// Also trusts the keys `remote` fetches.
    #[cfg(feature = "remote-keys")]
    pub(crate) fn with_remote(mut self, remote: crate::remote_keys::RemoteKeys) -> Self {
        self.remote = Some(remote);
        self
    }

    pub(crate) fn lookup(&self, kid: &str) -> KeyLookup {
        if let Some(key) = self.local.iter().find(|key| key.kid() == kid) {
            return KeyLookup::Found(key.clone());
        }
        #[cfg(feature = "remote-keys")]
        if let Some(remote) = &self.remote {
            return match remote.lookup(Some(kid)) {
                crate::remote_keys::KeyLookup::Found(key) => KeyLookup::Found(key),
                crate::remote_keys::KeyLookup::Unknown => KeyLookup::Unknown,
                crate::remote_keys::KeyLookup::NotReady => KeyLookup::NotReady,
            };
        }
        KeyLookup::Unknown
    }

    /// Whether any key can be found at all.
    pub(crate) fn is_empty(&self) -> bool {
        #[cfg(feature = "remote-keys")]
        if self.remote.is_some() {
            return false;
        }
        self.local.is_empty()
    }

    /// The keys configured in this process (not fetched ones).
    pub(crate) fn local(&self) -> impl Iterator<Item = &VerifyingKey> {
        self.local.iter()
    }
}

/// The public JWKS document of every asymmetric key in `keys` (RFC 7517).
pub(crate) fn jwks<'a>(keys: impl IntoIterator<Item = &'a VerifyingKey>) -> JwkSet {
    JwkSet { keys: keys.into_iter().filter_map(|k| k.public_jwk.as_deref().cloned()).collect() }
}

/// Unit tests read PEMs before any `JwtAuth` is built (which would pick the
/// crypto backend when both are compiled in).
#[cfg(test)]
pub(crate) fn pick_test_crypto_backend() {
    #[cfg(all(feature = "aws-lc-rs", feature = "rust-crypto"))]
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_hmac_secrets_are_refused() {
        assert!(matches!(SigningKey::hs256("k", b"short"), Err(KeyError::WeakSecret { min: 32, len: 5, .. })));
        assert!(matches!(SigningKey::hmac(Algorithm::HS512, "k", &[7; 63]), Err(KeyError::WeakSecret { min: 64, .. })));
        assert!(SigningKey::hmac(Algorithm::HS512, "k", &[7; 64]).is_ok());
    }

    #[test]
    fn hmac_and_pem_constructors_refuse_the_wrong_family() {
        assert!(matches!(SigningKey::hmac(Algorithm::ES256, "k", &[0; 64]), Err(KeyError::WrongAlgorithm { .. })));
        assert!(matches!(SigningKey::from_pem(Algorithm::HS256, "k", b""), Err(KeyError::WrongAlgorithm { .. })));
    }

    #[test]
    fn from_jwk_refuses_secrets_and_keys_of_another_type() {
        pick_test_crypto_backend();
        let oct: Jwk =
            serde_json::from_str(r#"{"kty":"oct","kid":"s","alg":"RS256","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"}"#)
                .unwrap();
        assert!(matches!(VerifyingKey::from_jwk(&oct), Err(KeyError::WrongAlgorithm { .. })));
        let ec = SigningKey::from_pem(Algorithm::ES256, "e", include_bytes!("../tests/keys/p256.pem")).unwrap();
        let mut jwk = jwks([ec.verifying_key()]).keys.remove(0);
        assert!(VerifyingKey::from_jwk(&jwk).is_ok());
        for other in [KeyAlgorithm::ES384, KeyAlgorithm::RS256, KeyAlgorithm::EdDSA] {
            jwk.common.key_algorithm = Some(other);
            assert!(matches!(VerifyingKey::from_jwk(&jwk), Err(KeyError::WrongAlgorithm { .. })), "{other:?}");
        }
    }

    #[test]
    fn secrets_are_not_published() {
        let key = SigningKey::hs256("k", &[1; 32]).unwrap();
        assert!(jwks([key.verifying_key()]).keys.is_empty());
    }
}
