//! The short-lived JWTs the gateway sends upstream: minted from the session's
//! access token, cached per access token and reused until close to expiry.
//!
//! Keyed by the access token's `jti`: a refreshed session (new roles, new
//! scope) has a new access token and so gets a new upstream token, and a
//! revoked session's access tokens never reach the gateway (the layer
//! refuses them first). Bounded like the verified-token cache: the oldest
//! entries go first, the order touched only by inserts (which sign anyway).
//! Racing misses for one session may each sign; the last insert wins.

use std::{hash::RandomState, sync::Arc, time::Duration};

use http::HeaderValue;
use serde_json::{Map, Value, value::RawValue};

use crate::{
    bounded_map::BoundedMap,
    clock::now_ms,
    config::JwtAuth,
    error::AuthError,
    token::{TokenSpec, VerifiedToken, access_token_header, sign},
};

/// An upstream token is replaced once less than this share of its lifetime is left.
const RENEW_WHEN_LEFT: (u64, u64) = (1, 4);

/// Mints and caches upstream tokens.
pub(crate) struct UpstreamTokens {
    audience: String,
    ttl: Duration,
    /// Custom claims copied from the session's token besides `scope`.
    forward: Vec<String>,
    /// By access-token `jti`.
    entries: BoundedMap<Arc<str>, Arc<Minted>>,
}

/// One minted token, ready to be sent.
struct Minted {
    /// The session token it was minted for (a hit must match them too).
    sub: String,
    sid: String,
    /// `Bearer <jwt>`, marked sensitive.
    bearer: HeaderValue,
    /// Unix milliseconds after which a new token is minted.
    renew_at_ms: u64,
}

impl UpstreamTokens {
    pub(crate) fn new(audience: String, ttl: Duration, forward: Vec<String>, capacity: usize) -> Self {
        Self { audience, ttl, forward, entries: BoundedMap::with_hasher(capacity, RandomState::default()) }
    }

    pub(crate) fn audience(&self) -> &str {
        &self.audience
    }

    /// `Bearer <jwt>` for the upstream, on behalf of the session whose
    /// access token is `session`: the cached one while it has more than a
    /// quarter of its lifetime left, else a new one.
    pub(crate) fn bearer(&self, auth: &JwtAuth, session: &VerifiedToken) -> Result<HeaderValue, AuthError> {
        let now = now_ms();
        let claims = &session.claims;
        if let Some(hit) = self.entries.get(claims.jti.as_str())
            && now < hit.renew_at_ms
            && hit.sid == claims.sid
            && hit.sub == claims.sub
        {
            return Ok(hit.bearer.clone());
        }
        let minted = self.mint(auth, session, now)?;
        let bearer = minted.bearer.clone();
        self.entries.insert(claims.jti.as_str().into(), Arc::new(minted));
        Ok(bearer)
    }

    /// Signs a token for the upstream: the session's `sub`, `sid` and
    /// `scope`, `aud` = the upstream's audience, `iss` = the layer's, living
    /// the configured lifetime but never past the moment the layer stops
    /// accepting the session's access token (its `exp` plus the leeway).
    fn mint(&self, auth: &JwtAuth, session: &VerifiedToken, now_ms: u64) -> Result<Minted, AuthError> {
        let inner = &auth.inner;
        let claims = &session.claims;
        let now = now_ms / 1000;
        let accepted_until = claims.exp.saturating_add(inner.verifier.leeway_secs());
        // At least a second: the layer may accept a token at the very edge of
        // its leeway, and an already expired upstream token helps nobody.
        let exp = now.saturating_add(self.ttl.as_secs()).min(accepted_until).max(now + 1);
        let custom = self.custom_claims(&session.payload);
        let jti = crate::random::token_id();
        let issuer =
            inner.issuer.as_ref().ok_or(AuthError::Misconfigured("the gateway needs a layer with a signing key"))?;
        let key = issuer.key();
        let header = access_token_header(key);
        let spec = TokenSpec {
            sub: &claims.sub,
            sid: &claims.sid,
            custom_json: &custom,
            iat: now,
            exp,
            nbf: None,
            iss: issuer.issuer(),
            aud: Some(&self.audience),
            jti: &jti,
            auth_time: claims.auth_time,
        };
        let token = sign(key, &header, &spec)?;
        let mut bearer = HeaderValue::try_from(format!("Bearer {}", token.token))
            .map_err(|_| AuthError::Misconfigured("the upstream token is not a header value"))?;
        bearer.set_sensitive(true);
        // Counted from `iat` (the second `now` falls in), so a little early.
        let lifetime_ms = (exp - now) * 1000;
        let renew_at_ms = now * 1000 + lifetime_ms - lifetime_ms * RENEW_WHEN_LEFT.0 / RENEW_WHEN_LEFT.1;
        Ok(Minted { sub: claims.sub.clone(), sid: claims.sid.clone(), bearer, renew_at_ms })
    }

    /// The custom claims of the upstream token, as a JSON object: `scope`
    /// (RFC 9068: a space-separated string; a `scope` or `scp` array is
    /// joined into one) and the claims configured to be forwarded.
    fn custom_claims(&self, payload: &RawValue) -> String {
        let Ok(session) = serde_json::from_str::<Map<String, Value>>(payload.get()) else {
            return "{}".to_owned();
        };
        let mut claims = Map::new();
        if let Some(scope) = scope(&session) {
            claims.insert("scope".to_owned(), Value::String(scope));
        }
        for name in &self.forward {
            if let Some(value) = session.get(name) {
                claims.insert(name.clone(), value.clone());
            }
        }
        Value::Object(claims).to_string()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The session's scope as one space-separated string, if it has one.
fn scope(session: &Map<String, Value>) -> Option<String> {
    let joined = |items: &Vec<Value>| {
        let words: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
        (!words.is_empty()).then(|| words.join(" "))
    };
    match (session.get("scope"), session.get("scp")) {
        (Some(Value::String(scope)), _) => Some(scope.clone()),
        (Some(Value::Array(items)), _) => joined(items),
        (_, Some(Value::String(scope))) => Some(scope.clone()),
        (_, Some(Value::Array(items))) => joined(items),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::keys::SigningKey;

    fn auth() -> JwtAuth {
        JwtAuth::builder().signing_key(SigningKey::hs256("k", &[5; 32]).unwrap()).build().unwrap()
    }

    fn session(auth: &JwtAuth, sid: &str, claims: Value, expires_in: i64) -> Arc<VerifiedToken> {
        let token = auth.test_token("alice").session(sid).claims(&claims).expires_in(expires_in).sign();
        auth.inner.verifier.verify(&token).unwrap()
    }

    fn payload(bearer: &HeaderValue) -> Value {
        let jwt = bearer.to_str().unwrap().strip_prefix("Bearer ").unwrap();
        let body = jwt.split('.').nth(1).unwrap();
        use base64::Engine;
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap()
    }

    #[test]
    fn scope_is_read_from_either_claim() {
        let scope_of = |v: Value| scope(v.as_object().unwrap());
        assert_eq!(scope_of(json!({"scope": "a b"})), Some("a b".into()));
        assert_eq!(scope_of(json!({"scope": ["a", "b", 3]})), Some("a b".into()));
        assert_eq!(scope_of(json!({"scp": ["a", "b"]})), Some("a b".into()));
        assert_eq!(scope_of(json!({"scp": "a"})), Some("a".into()));
        assert_eq!(scope_of(json!({"scope": "a", "scp": ["b"]})), Some("a".into()));
        assert_eq!(scope_of(json!({"scope": 3})), None);
        assert_eq!(scope_of(json!({"scp": []})), None);
    }

    #[test]
    fn reuses_per_access_token_and_caps_at_its_expiry() {
        let auth = auth();
        let tokens = UpstreamTokens::new("api".into(), Duration::from_secs(60), vec!["tenant".into()], 8);
        let first = session(&auth, "s1", json!({"scope": "read", "tenant": "t1", "secret": 1}), 900);
        let a = tokens.bearer(&auth, &first).unwrap();
        assert!(a.is_sensitive());
        assert_eq!(tokens.bearer(&auth, &first).unwrap(), a, "reused");
        let claims = payload(&a);
        assert_eq!(claims["aud"], "api");
        assert_eq!(claims["sid"], "s1");
        assert_eq!(claims["scope"], "read");
        assert_eq!(claims["tenant"], "t1");
        assert!(claims.get("secret").is_none(), "only the configured claims are forwarded");
        assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 60);

        // Another access token of the same session (a refresh): a new token.
        let refreshed = session(&auth, "s1", json!({"scope": "read write"}), 900);
        let b = tokens.bearer(&auth, &refreshed).unwrap();
        assert_ne!(a, b);
        assert_eq!(payload(&b)["scope"], "read write");

        // A session token about to expire caps the upstream token (leeway 5 s).
        let short = session(&auth, "s2", json!({}), 10);
        let claims = payload(&tokens.bearer(&auth, &short).unwrap());
        let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
        assert!((14..=16).contains(&lifetime), "{lifetime}");
        assert!(claims.get("scope").is_none());
    }

    #[test]
    fn stays_bounded() {
        let auth = auth();
        let tokens = UpstreamTokens::new("api".into(), Duration::from_secs(60), Vec::new(), 4);
        let sessions: Vec<_> = (0..20).map(|i| session(&auth, &format!("s{i}"), json!({}), 900)).collect();
        for session in &sessions {
            tokens.bearer(&auth, session).unwrap();
            assert!(tokens.len() <= 4);
        }
        let last = tokens.bearer(&auth, &sessions[19]).unwrap();
        assert_eq!(tokens.bearer(&auth, &sessions[19]).unwrap(), last, "the newest are kept");

        let uncached = UpstreamTokens::new("api".into(), Duration::from_secs(60), Vec::new(), 0);
        let a = uncached.bearer(&auth, &sessions[0]).unwrap();
        assert_ne!(uncached.bearer(&auth, &sessions[0]).unwrap(), a, "capacity 0 mints every time");
    }
}
