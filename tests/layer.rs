//! The verifying layer, in process: every rejection path (status,
//! `WWW-Authenticate`, JSON body), algorithm confusion, key rotation, token
//! sources and their precedence, optional authentication, JWKS.

use std::time::Duration;

use axum::{
    Json, Router,
    body::Body,
    response::IntoResponse,
    routing::{get, post},
};
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tower::ServiceExt;
use tower_jwt_auth::{Algorithm, AuthError, Claims, JwtAuth, SigningKey, VerifyingKey};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Role {
    role: String,
}

fn auth() -> JwtAuth {
    JwtAuth::builder()
        .signing_key(SigningKey::hs256("k1", SECRET).unwrap())
        .issuer("https://issuer.test")
        .audience("app")
        .realm("test")
        .build()
        .unwrap()
}

async fn whoami(claims: Claims<Role>) -> Json<Value> {
    Json(json!({ "sub": claims.sub(), "sid": claims.sid(), "role": claims.role }))
}

async fn maybe(claims: Option<Claims>) -> String {
    claims.map_or_else(|| "anonymous".to_owned(), |c| c.sub().to_owned())
}

fn app(auth: &JwtAuth) -> Router {
    Router::new().route("/me", get(whoami)).route("/write", post(whoami)).layer(auth.clone())
}

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Value,
}

impl Reply {
    fn www_authenticate(&self) -> &str {
        self.headers.get(header::WWW_AUTHENTICATE).map_or("", |v| v.to_str().unwrap())
    }

    /// Asserts a complete RFC 6750 rejection.
    fn assert_rejected(&self, status: StatusCode, code: &str, description: &str) {
        assert_eq!(self.status, status, "{:?}", self.body);
        assert_eq!(self.body["error"], code, "{:?}", self.body);
        let text = self.body["error_description"].as_str().unwrap();
        assert!(text.contains(description), "description {text:?} lacks {description:?}");
        let header = self.www_authenticate();
        assert!(header.starts_with(r#"Bearer realm="test""#), "{header}");
        assert!(header.contains(&format!(r#"error="{code}""#)), "{header}");
        assert!(header.contains("error_description=\""), "{header}");
    }
}

async fn send(app: Router, request: Request<Body>) -> Reply {
    let response = app.oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    Reply { status, headers, body }
}

fn get_with(header_name: &str, value: &str) -> Request<Body> {
    Request::get("/me").header(header_name, value).body(Body::empty()).unwrap()
}

fn bearer(token: &str) -> Request<Body> {
    get_with("authorization", &format!("Bearer {token}"))
}

#[tokio::test]
async fn a_valid_token_reaches_the_handler_with_its_claims() {
    let auth = auth();
    let token = auth.test_token("alice").session("s-1").claims(&Role { role: "admin".into() }).sign();
    let reply = send(app(&auth), bearer(&token)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, json!({ "sub": "alice", "sid": "s-1", "role": "admin" }));
}

#[tokio::test]
async fn no_credentials_is_a_bare_401() {
    let reply = send(app(&auth()), Request::get("/me").body(Body::empty()).unwrap()).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.www_authenticate(), r#"Bearer realm="test""#);
    assert_eq!(reply.body["error"], "login_required");
    assert!(reply.body["error_description"].is_string());
}

#[tokio::test]
async fn malformed_authorization_headers_are_400_invalid_request() {
    let token = auth().test_token("alice").sign();
    for value in [
        format!("Bearer  {token}"),
        format!("Bearer {token} {token}"),
        format!("Bearer {token} "),
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        format!("Bearer,{token}"),
    ] {
        let reply = send(app(&auth()), get_with("authorization", &value)).await;
        reply.assert_rejected(StatusCode::BAD_REQUEST, "invalid_request", "Authorization");
    }
    let two = Request::get("/me")
        .header("authorization", format!("Bearer {token}"))
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    send(app(&auth()), two).await.assert_rejected(StatusCode::BAD_REQUEST, "invalid_request", "one Authorization");
}

/// A proxy's `Basic` (or any other scheme) is not a bearer credential: the
/// request is as if it had none, and its cookies still authenticate it.
#[tokio::test]
async fn other_authorization_schemes_are_not_credentials() {
    let auth = auth();
    let token = auth.test_token("alice").claims(&json!({ "role": "admin" })).sign();
    for scheme in ["Basic dXNlcjpwYXNz", "Negotiate abc", "Digest username=x"] {
        let reply = send(app(&auth), get_with("authorization", scheme)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{scheme}");
        assert_eq!(
            reply.www_authenticate(),
            r#"Bearer realm="test""#,
            "{scheme}: no error code, as without credentials"
        );
        let with_cookie = Request::get("/me")
            .header("authorization", scheme)
            .header("cookie", format!("__Host-access={token}"))
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(app(&auth), with_cookie).await.status, StatusCode::OK, "{scheme} + cookie");
        let bearer_too = Request::get("/me")
            .header("authorization", scheme)
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(app(&auth), bearer_too).await.status, StatusCode::OK, "{scheme} + bearer");
    }
}

#[tokio::test]
async fn bad_tokens_are_401_invalid_token_with_a_reason() {
    let auth = auth();
    let other_key = SigningKey::hs256("k1", b"another secret, also 32 bytes long!").unwrap();
    let unknown_kid = SigningKey::hs256("k9", SECRET).unwrap();
    let cases = [
        (auth.test_token("a").expires_in(-120).sign(), "The access token expired"),
        (auth.test_token("a").not_before_in(3600).sign(), "not valid yet"),
        (auth.test_token("a").issuer(Some("https://evil.test")).sign(), "another issuer"),
        (auth.test_token("a").issuer(None).sign(), "lacks a required claim"),
        (auth.test_token("a").audience(Some("other-app")).sign(), "another audience"),
        (auth.test_token("a").signed_with(&other_key).sign(), "signature is invalid"),
        (auth.test_token("a").signed_with(&unknown_kid).sign(), "unknown key"),
        ("not-a-jwt".to_owned(), "malformed"),
        ("a.b.c".to_owned(), "malformed"),
        ("x".repeat(9000), "too large"),
    ];
    for (token, reason) in cases {
        send(app(&auth), bearer(&token)).await.assert_rejected(StatusCode::UNAUTHORIZED, "invalid_token", reason);
    }
}

#[tokio::test]
async fn within_leeway_is_still_valid() {
    let auth = JwtAuth::builder()
        .signing_key(SigningKey::hs256("k1", SECRET).unwrap())
        .leeway(Duration::from_secs(30))
        .build()
        .unwrap();
    let token = auth.test_token("a").expires_in(-5).claims(&Role { role: "r".into() }).sign();
    assert_eq!(send(app(&auth), bearer(&token)).await.status, StatusCode::OK);
}

/// Base64url without padding, for hand-made tokens.
fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn payload(auth_iss: &str) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    b64(json!({"sub":"mallory","sid":"s","iat":now,"exp":now+600,"jti":"j","iss":auth_iss,"aud":"app","role":"admin"})
        .to_string()
        .as_bytes())
}

#[tokio::test]
async fn alg_none_is_refused() {
    let auth = auth();
    for header in [json!({"alg":"none","kid":"k1"}), json!({"alg":"None","kid":"k1"}), json!({"alg":"HS256"})] {
        let token = format!("{}.{}.", b64(header.to_string().as_bytes()), payload("https://issuer.test"));
        let reply = send(app(&auth), bearer(&token)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{header}: {:?}", reply.body);
        assert_eq!(reply.body["error"], "invalid_token");
    }
}

#[tokio::test]
async fn hs_rs_confusion_is_refused() {
    // The classic attack: sign HS256 with the RSA *public* key as the secret
    // and name the RSA key's kid.
    let private = std::fs::read("tests/keys/rsa.pem").unwrap();
    let public = std::fs::read("tests/keys/rsa.pub.pem").unwrap();
    let auth = JwtAuth::builder()
        .signing_key(SigningKey::from_pem(Algorithm::RS256, "rsa-1", &private).unwrap())
        .issuer("https://issuer.test")
        .audience("app")
        .build()
        .unwrap();
    let forged_key = SigningKey::hmac(Algorithm::HS256, "rsa-1", &public).unwrap();
    let forged = auth.test_token("mallory").signed_with(&forged_key).sign();
    let reply = send(app(&auth), bearer(&forged)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.body["error_description"], "The access token algorithm does not match its key");

    // ES256 header on an RS256 key: same.
    let header = b64(json!({"alg":"ES256","kid":"rsa-1"}).to_string().as_bytes());
    let token = format!("{header}.{}.{}", payload("https://issuer.test"), b64(&[0; 64]));
    assert_eq!(send(app(&auth), bearer(&token)).await.status, StatusCode::UNAUTHORIZED);

    // The genuine token verifies.
    let genuine = auth.test_token("alice").claims(&Role { role: "r".into() }).sign();
    assert_eq!(send(app(&auth), bearer(&genuine)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn every_algorithm_verifies_its_own_tokens() {
    let cases = [
        (Algorithm::RS256, "rsa.pem"),
        (Algorithm::PS256, "rsa.pem"),
        (Algorithm::ES256, "p256.pem"),
        (Algorithm::ES384, "p384.pem"),
        (Algorithm::EdDSA, "ed25519.pem"),
    ];
    for (alg, file) in cases {
        let pem = std::fs::read(format!("tests/keys/{file}")).unwrap();
        let auth = JwtAuth::new(SigningKey::from_pem(alg, "kid", &pem).unwrap());
        let token = auth.test_token("alice").claims(&Role { role: "r".into() }).sign();
        let reply = send(app(&auth), bearer(&token)).await;
        assert_eq!(reply.status, StatusCode::OK, "{alg:?}: {:?}", reply.body);
        // Twice: the second time comes from the cache and must agree.
        assert_eq!(send(app(&auth), bearer(&token)).await.status, StatusCode::OK, "{alg:?} cached");
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, alg);
    }
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let auth = JwtAuth::new(SigningKey::hmac(alg, "kid", &[9; 64]).unwrap());
        let token = auth.test_token("alice").claims(&Role { role: "r".into() }).sign();
        assert_eq!(send(app(&auth), bearer(&token)).await.status, StatusCode::OK, "{alg:?}");
    }
}

#[tokio::test]
async fn a_public_key_alone_verifies_another_services_tokens() {
    let private = std::fs::read("tests/keys/p256.pem").unwrap();
    let public = std::fs::read("tests/keys/p256.pub.pem").unwrap();
    let issuer = JwtAuth::new(SigningKey::from_pem(Algorithm::ES256, "es-1", &private).unwrap());
    let verifier = JwtAuth::builder()
        .signing_key(SigningKey::hs256("local", SECRET).unwrap())
        .verifying_key(VerifyingKey::from_public_pem(Algorithm::ES256, "es-1", &public).unwrap())
        .build()
        .unwrap();
    let token = issuer.test_token("alice").claims(&Role { role: "r".into() }).sign();
    assert_eq!(send(app(&verifier), bearer(&token)).await.status, StatusCode::OK);

    // The same through the issuer's JWKS document.
    let jwks = issuer.jwks();
    let verifier = JwtAuth::builder()
        .signing_key(SigningKey::hs256("local", SECRET).unwrap())
        .verifying_key(VerifyingKey::from_jwk(&jwks.keys[0]).unwrap())
        .build()
        .unwrap();
    assert_eq!(send(app(&verifier), bearer(&token)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_valid_and_signs_with_the_new_key() {
    let old = SigningKey::hs256("2026-10", SECRET).unwrap();
    let before = JwtAuth::new(old.clone());
    let old_token = before.test_token("alice").claims(&Role { role: "r".into() }).sign();

    let new = SigningKey::from_pem(Algorithm::EdDSA, "2026-11", &std::fs::read("tests/keys/ed25519.pem").unwrap());
    let after =
        JwtAuth::builder().signing_key(new.unwrap()).verifying_key(old.verifying_key().clone()).build().unwrap();
    assert_eq!(send(app(&after), bearer(&old_token)).await.status, StatusCode::OK, "old kid still verifies");

    let tokens = after.login("alice", &Role { role: "r".into() }, Default::default()).await.unwrap();
    let header = jsonwebtoken::decode_header(tokens.access_token()).unwrap();
    assert_eq!((header.kid.as_deref(), header.alg), (Some("2026-11"), Algorithm::EdDSA));
    assert_eq!(send(app(&after), bearer(tokens.access_token())).await.status, StatusCode::OK);

    // Once the old key is dropped from the set, its tokens are refused.
    let later = JwtAuth::new(SigningKey::hs256("2026-12", SECRET).unwrap());
    let reply = send(app(&later), bearer(&old_token)).await;
    reply.assert_rejected_without_realm("unknown key");
}

impl Reply {
    fn assert_rejected_without_realm(&self, description: &str) {
        assert_eq!(self.status, StatusCode::UNAUTHORIZED);
        assert!(self.body["error_description"].as_str().unwrap().contains(description), "{:?}", self.body);
        assert!(self.www_authenticate().starts_with(r#"Bearer error="invalid_token""#), "{}", self.www_authenticate());
    }
}

#[test]
fn duplicate_kids_are_refused() {
    let key = SigningKey::hs256("same", SECRET).unwrap();
    let result = JwtAuth::builder().signing_key(key.clone()).verifying_key(key.verifying_key().clone()).build();
    assert!(matches!(result, Err(tower_jwt_auth::ConfigError::DuplicateKid(kid)) if kid == "same"));
}

#[tokio::test]
async fn the_header_wins_over_the_cookie() {
    let auth = auth();
    let good = auth.test_token("alice").claims(&Role { role: "r".into() }).sign();
    let expired = auth.test_token("alice").expires_in(-3600).sign();

    let cookie_only = get_with("cookie", &format!("__Host-access={good}"));
    assert_eq!(send(app(&auth), cookie_only).await.status, StatusCode::OK);

    let bad_header = Request::get("/me")
        .header("authorization", format!("Bearer {expired}"))
        .header("cookie", format!("__Host-access={good}"))
        .body(Body::empty())
        .unwrap();
    send(app(&auth), bad_header).await.assert_rejected(StatusCode::UNAUTHORIZED, "invalid_token", "expired");

    let good_header = Request::get("/me")
        .header("authorization", format!("Bearer {good}"))
        .header("cookie", format!("__Host-access={expired}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(app(&auth), good_header).await.status, StatusCode::OK);
}

#[tokio::test]
async fn cookie_names_are_configurable() {
    let auth = JwtAuth::builder()
        .signing_key(SigningKey::hs256("k1", SECRET).unwrap())
        .cookie_names("__Host-a", "__Host-r")
        .build()
        .unwrap();
    let token = auth.test_token("alice").claims(&Role { role: "r".into() }).sign();
    assert_eq!(send(app(&auth), get_with("cookie", &format!("__Host-a={token}"))).await.status, StatusCode::OK);
    let reply = send(app(&auth), get_with("cookie", &format!("__Host-access={token}"))).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn optional_mode_passes_the_unauthenticated_through() {
    let auth = auth();
    let app = Router::new().route("/", get(maybe)).route("/strict", get(whoami)).layer(auth.optional());
    let anonymous = Request::get("/").body(Body::empty()).unwrap();
    assert_eq!(send(app.clone(), anonymous).await.body, "anonymous");

    let token = auth.test_token("alice").sign();
    assert_eq!(
        send(
            app.clone(),
            Request::get("/").header("authorization", format!("Bearer {token}")).body(Body::empty()).unwrap()
        )
        .await
        .body,
        "alice"
    );

    // A presented but bad bearer token is refused even by `Option<Claims>`,
    // so API clients learn to refresh...
    let expired = auth.test_token("alice").expires_in(-3600).sign();
    let request =
        || Request::get("/").header("authorization", format!("Bearer {expired}")).body(Body::empty()).unwrap();
    send(app.clone(), request()).await.assert_rejected(StatusCode::UNAUTHORIZED, "invalid_token", "expired");
    // ...as by a handler that requires claims.
    let strict =
        Request::get("/strict").header("authorization", format!("Bearer {expired}")).body(Body::empty()).unwrap();
    send(app.clone(), strict).await.assert_rejected(StatusCode::UNAUTHORIZED, "invalid_token", "expired");
    // A malformed bearer header is a client error; another scheme is no credential.
    let malformed = Request::get("/").header("authorization", "Bearer a b").body(Body::empty()).unwrap();
    assert_eq!(send(app.clone(), malformed).await.status, StatusCode::BAD_REQUEST);
    let basic = Request::get("/").header("authorization", "Basic x").body(Body::empty()).unwrap();
    assert_eq!(send(app, basic).await.body, "anonymous");
}

#[tokio::test]
async fn route_layer_protects_only_some_routes() {
    let auth = auth();
    let app =
        Router::new().route("/me", get(whoami)).route_layer(auth.clone()).route("/public", get(|| async { "hello" }));
    assert_eq!(send(app.clone(), Request::get("/public").body(Body::empty()).unwrap()).await.status, StatusCode::OK);
    assert_eq!(send(app, Request::get("/me").body(Body::empty()).unwrap()).await.status, StatusCode::UNAUTHORIZED);
}

/// The layer around the whole router (`auth.layer(router)`, before
/// routing), the cheaper placement: claims, axum's own extensions and
/// guards inside still work, and unknown paths are refused like known ones.
#[tokio::test]
async fn wrapped_around_the_router_it_authenticates_before_routing() {
    use axum::extract::MatchedPath;
    use tower::Layer;
    use tower_jwt_auth::guard::RequireScope;

    let auth = auth();
    let router = Router::new()
        .route(
            "/items/{id}",
            get(|path: MatchedPath, claims: Claims| async move { format!("{} {}", path.as_str(), claims.sub()) }),
        )
        .route("/admin", get(|| async { "admin" }).route_layer(RequireScope::all(["admin"])));
    let app = auth.layer(router);
    let call = |request: Request<Body>| {
        let app = app.clone();
        async move {
            let response = app.oneshot(request).await.unwrap();
            let status = response.status();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&bytes).into_owned())
        }
    };
    let get = |path: &str, token: Option<&str>| {
        let mut request = Request::get(path);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        request.body(Body::empty()).unwrap()
    };
    let token = auth.test_token("alice").sign();
    assert_eq!(call(get("/items/7", Some(&token))).await, (StatusCode::OK, "/items/{id} alice".into()));
    let (status, body) = call(get("/admin", Some(&token))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("insufficient_scope"), "{body}");
    let admin = auth.test_token("root").claims(&json!({ "scope": "admin" })).sign();
    assert_eq!(call(get("/admin", Some(&admin))).await, (StatusCode::OK, "admin".into()));
    assert_eq!(call(get("/items/7", None)).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(call(get("/nowhere", None)).await.0, StatusCode::UNAUTHORIZED, "refused before routing");
    assert_eq!(call(get("/nowhere", Some(&token))).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn claims_of_the_wrong_shape_are_refused_not_500() {
    let auth = auth();
    let token = auth.test_token("alice").sign(); // no `role`
    send(app(&auth), bearer(&token)).await.assert_rejected(StatusCode::UNAUTHORIZED, "invalid_token", "shape");
}

#[tokio::test]
async fn the_rejection_response_can_be_replaced() {
    let auth = JwtAuth::builder()
        .signing_key(SigningKey::hs256("k1", SECRET).unwrap())
        .on_rejection(|error: AuthError| (StatusCode::IM_A_TEAPOT, format!("custom: {error}")).into_response())
        .build()
        .unwrap();
    let reply = send(app(&auth), Request::get("/me").body(Body::empty()).unwrap()).await;
    assert_eq!(reply.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(reply.body, "custom: No access token was provided");
}

#[tokio::test]
async fn jwks_publishes_public_keys_only() {
    let pem = std::fs::read("tests/keys/p256.pem").unwrap();
    let auth = JwtAuth::builder()
        .signing_key(SigningKey::from_pem(Algorithm::ES256, "es-1", &pem).unwrap())
        .verifying_key(SigningKey::hs256("hs-old", SECRET).unwrap().verifying_key().clone())
        .build()
        .unwrap();
    let app: Router = auth.jwks_router();
    let reply = send(app, Request::get("/.well-known/jwks.json").body(Body::empty()).unwrap()).await;
    assert_eq!(reply.status, StatusCode::OK);
    let keys = reply.body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "the HMAC secret is not published: {keys:?}");
    let key = &keys[0];
    assert_eq!(
        (key["kid"].as_str(), key["alg"].as_str(), key["use"].as_str()),
        (Some("es-1"), Some("ES256"), Some("sig"))
    );
    assert_eq!((key["kty"].as_str(), key["crv"].as_str()), (Some("EC"), Some("P-256")));
    assert!(key.get("d").is_none(), "no private part");
}

#[tokio::test]
async fn revoked_sessions_lose_their_access_tokens_at_once() {
    let auth = auth();
    let tokens = auth.login("alice", &Role { role: "r".into() }, Default::default()).await.unwrap();
    assert_eq!(send(app(&auth), bearer(tokens.access_token())).await.status, StatusCode::OK);
    auth.revoke_session("alice", tokens.session_id()).await.unwrap();
    send(app(&auth), bearer(tokens.access_token())).await.assert_rejected(
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "revoked",
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Arbitrary bytes as `Authorization` and `Cookie` values: never a panic,
    /// never a 5xx, always a 4xx.
    #[test]
    fn arbitrary_header_and_cookie_values_are_4xx(
        authorization in proptest::collection::vec(any::<u8>(), 0..600),
        cookie in proptest::collection::vec(any::<u8>(), 0..600),
        use_cookie_name in any::<bool>(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let auth = auth();
        let mut cookie_value = if use_cookie_name { b"__Host-access=".to_vec() } else { Vec::new() };
        cookie_value.extend_from_slice(&cookie);
        for (name, value) in [("authorization", &authorization), ("cookie", &cookie_value)] {
            let Ok(value) = http::HeaderValue::from_bytes(value) else { continue };
            let request = Request::get("/me").header(name, value).body(Body::empty()).unwrap();
            let status = runtime.block_on(app(&auth).oneshot(request)).unwrap().status();
            prop_assert!(status.is_client_error(), "{name}: {status}");
        }
    }
}

/// A session layer without an audience refuses tokens that name one: tokens
/// its key signed for another service (the gateway's upstream tokens) must
/// not pass as its own.
#[tokio::test]
async fn without_an_audience_tokens_naming_one_are_refused() {
    let auth = JwtAuth::builder().signing_key(SigningKey::hs256("k1", SECRET).unwrap()).realm("test").build().unwrap();
    let app = Router::new().route("/me", get(maybe)).layer(auth.clone());
    let own = auth.test_token("alice").sign();
    assert_eq!(send(app.clone(), bearer(&own)).await.status, StatusCode::OK);
    let upstream = auth.test_token("alice").audience(Some("api")).sign();
    send(app, bearer(&upstream)).await.assert_rejected(StatusCode::UNAUTHORIZED, "invalid_token", "another audience");
}
