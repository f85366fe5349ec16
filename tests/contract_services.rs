//! More than one service, as processes: `examples/api` (verify-only, keys
//! from a JWKS URL, revocations from the demo's Redis) against a JWKS server
//! the test controls and against the demo itself, and the demo's BFF routes
//! forwarding to the api.

#[path = "support/jwks_server.rs"]
mod jwks_server;
mod support;

use std::time::{Duration, Instant};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jwks_server::{Behaviour, JwksServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{
    demo::{Auth, Demo, free_port},
    redis_server::RedisServer,
};
use tower_jwt_auth::{Algorithm, JwtAuth, SigningKey};

const ISSUER: &str = "tower-jwt-auth-demo";

fn claims_of(token: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap()
}

fn jwks_of(keys: &[&SigningKey]) -> String {
    let mut builder = JwtAuth::builder().signing_key(keys[0].clone());
    for key in &keys[1..] {
        builder = builder.verifying_key(key.verifying_key().clone());
    }
    let auth = builder.build().unwrap();
    serde_json::to_string(&auth.jwks()).unwrap()
}

fn key(alg: Algorithm, kid: &str, file: &str) -> SigningKey {
    let pem = std::fs::read(format!("{}/tests/keys/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    SigningKey::from_pem(alg, kid, &pem).unwrap()
}

/// A token as the demo would mint it, signed with `key`.
fn token(key: &SigningKey, kid_override: Option<&str>) -> String {
    let auth = JwtAuth::builder().signing_key(key.clone()).issuer(ISSUER).build().unwrap();
    let token = auth.test_token("alice").claims(&json!({ "scope": "profile admin" })).sign();
    match kid_override {
        None => token,
        // Same signature input but another kid: verification fails, which is
        // fine: an unknown kid is refused before the signature is checked.
        Some(kid) => {
            let header = URL_SAFE_NO_PAD.encode(json!({ "alg": "EdDSA", "kid": kid, "typ": "at+jwt" }).to_string());
            let mut parts = token.splitn(2, '.');
            parts.next();
            format!("{header}.{}", parts.next().unwrap())
        }
    }
}

async fn polled<F, Fut>(what: &str, ceiling: Duration, mut probe: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !probe().await {
        assert!(started.elapsed() < ceiling, "{what}: not within {ceiling:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_starts_without_keys_then_verifies_refuses_unknown_kids_and_survives_outages() {
    let ed = key(Algorithm::EdDSA, "ed-1", "ed25519.pem");
    let mut jwks = JwksServer::start(jwks_of(&[&ed])).await;
    jwks.set_behaviour(Behaviour::Status(500));
    let api = Demo::start_example("api", &[("JWKS_URL", &jwks.url()), ("JWKS_COOLDOWN_SECS", "1")]);
    let valid = token(&ed, None);

    // Serving before keys arrive: 503 with Retry-After, 401 without credentials.
    api.get("/whoami", &Auth::None).await.assert_rejected(StatusCode::UNAUTHORIZED, None);
    let early = api.get("/whoami", &Auth::Bearer(valid.clone())).await;
    assert_eq!(early.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", early.body);
    assert!(!early.header("retry-after").is_empty());
    jwks.set_behaviour(Behaviour::Serve);
    let took = polled("keys arrive", Duration::from_secs(10), || async {
        api.get("/whoami", &Auth::Bearer(valid.clone())).await.status == StatusCode::OK
    })
    .await;
    eprintln!("keys after {took:?} (cooldown 1 s)");
    let me = api.get("/whoami", &Auth::Bearer(valid.clone())).await;
    assert_eq!((me.body["sub"].as_str(), me.set_cookies().len()), (Some("alice"), 0));
    assert_eq!(api.get("/admin-only", &Auth::Bearer(valid.clone())).await.status, StatusCode::OK);

    // A flood of unknown kids: refused at once, at most one fetch per cooldown.
    let before = jwks.jwks_requests();
    let started = Instant::now();
    for i in 0..300 {
        let reply = api.get("/whoami", &Auth::Bearer(token(&ed, Some(&format!("random-{i}"))))).await;
        reply.assert_rejected(StatusCode::UNAUTHORIZED, Some("invalid_token"));
    }
    let fetches = jwks.jwks_requests() - before;
    let cooldowns = started.elapsed().as_secs() + 1;
    assert!(fetches as u64 <= cooldowns, "{fetches} fetches in {:?}", started.elapsed());

    // The JWKS URL fails in every way: the keys held keep working.
    for behaviour in [Behaviour::Status(500), Behaviour::NotAJwks, Behaviour::Slow(Duration::from_secs(10))] {
        jwks.set_behaviour(behaviour);
        let failing = jwks.jwks_requests();
        let unknown = token(&ed, Some("trigger-a-fetch"));
        polled("a failing fetch", Duration::from_secs(15), || async {
            api.get("/whoami", &Auth::Bearer(unknown.clone())).await;
            jwks.jwks_requests() > failing
        })
        .await;
        assert_eq!(api.get("/whoami", &Auth::Bearer(valid.clone())).await.status, StatusCode::OK, "{behaviour:?}");
    }
    jwks.stop().await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // a cooldown passes with the port closed
    assert_eq!(api.get("/whoami", &Auth::Bearer(valid.clone())).await.status, StatusCode::OK, "closed port");

    // A rotated key set is picked up after an unknown kid.
    jwks.restart().await;
    let p256 = key(Algorithm::ES256, "p256-2", "p256.pem");
    jwks.set_jwks(jwks_of(&[&p256, &ed]));
    jwks.set_behaviour(Behaviour::Serve);
    let rotated = token(&p256, None);
    polled("the new key is fetched", Duration::from_secs(10), || async {
        api.get("/whoami", &Auth::Bearer(rotated.clone())).await.status == StatusCode::OK
    })
    .await;
    // Bearer only: a cookie is no credential here.
    let cookie = reqwest::Client::new()
        .get(format!("{}/whoami", api.base))
        .header("cookie", format!("__Host-access={valid}"))
        .send()
        .await
        .unwrap();
    assert_eq!(cookie.status(), StatusCode::UNAUTHORIZED);
}

/// The demo and the api share the demo's Redis: a logout at the demo is
/// refused by the api at once; a session revoked before the api started is
/// refused from its first request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_reach_the_api() {
    let redis = RedisServer::start();
    let url = redis.url();
    let demo = Demo::start(&[("REDIS_URL", &url), ("JWT_ALG", "EdDSA")]);
    let jwks_url = format!("{}/.well-known/jwks.json", demo.base);
    let (before_start, _) = demo.login_tokens("bob").await;
    assert_eq!(demo.post("/logout", &Auth::Bearer(before_start.clone()), None).await.status, StatusCode::NO_CONTENT);

    let api = Demo::start_example("api", &[("JWKS_URL", &jwks_url), ("REDIS_URL", &url), ("JWKS_COOLDOWN_SECS", "1")]);
    let (access, _) = demo.login_tokens("alice").await;
    polled("keys", Duration::from_secs(10), || async {
        api.get("/whoami", &Auth::Bearer(access.clone())).await.status == StatusCode::OK
    })
    .await;
    let first = api.get("/whoami", &Auth::Bearer(before_start)).await;
    first.assert_rejected(StatusCode::UNAUTHORIZED, Some("invalid_token"));
    assert!(first.header("www-authenticate").contains("revoked"));

    assert_eq!(demo.post("/logout", &Auth::Bearer(access.clone()), None).await.status, StatusCode::NO_CONTENT);
    let lag = polled("the logout reaches the api", Duration::from_secs(2), || async {
        api.get("/whoami", &Auth::Bearer(access.clone())).await.status == StatusCode::UNAUTHORIZED
    })
    .await;
    eprintln!("refused by the api {lag:?} after the logout's answer (HTTP polling included)");
}

/// The BFF: a browser session at the demo calls `/api/…`, forwarded to the
/// api with a short-lived token the api verifies through the demo's JWKS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_forwards_to_the_api() {
    let (demo_port, api_port) = (free_port(), free_port());
    let jwks_url = format!("http://127.0.0.1:{demo_port}/.well-known/jwks.json");
    let upstream = format!("http://127.0.0.1:{api_port}");
    let api = Demo::start_example(
        "api",
        &[("PORT", &api_port.to_string()), ("JWKS_URL", &jwks_url), ("AUDIENCE", "api"), ("JWKS_COOLDOWN_SECS", "1")],
    );
    let demo = Demo::start(&[("PORT", &demo_port.to_string()), ("JWT_ALG", "EdDSA"), ("UPSTREAM_URL", &upstream)]);
    let jar = demo.login_cookies("alice").await;
    let whoami = polled("keys reach the api", Duration::from_secs(10), || async {
        demo.get("/api/whoami", &Auth::Cookies(jar.clone())).await.status == StatusCode::OK
    })
    .await;
    eprintln!("first forwarded call after {whoami:?}");
    let reply = demo.get("/api/whoami?x=1", &Auth::Cookies(jar.clone())).await;
    assert_eq!(
        (reply.status, reply.body["sub"].as_str(), reply.body["aud"].as_str()),
        (StatusCode::OK, Some("alice"), Some("api"))
    );
    assert_eq!(reply.body["scope"], "profile admin");
    let lifetime = reply.body["exp"].as_u64().unwrap() - reply.body["iat"].as_u64().unwrap();
    assert!(lifetime <= 60, "{lifetime}");
    let session_sid = claims_of(jar.access.as_ref().unwrap())["sid"].clone();
    assert_eq!(reply.body["sid"], session_sid);

    // Bearer clients too; the api's own refusals come back as they are.
    let (bob, _) = demo.login_tokens("bob").await;
    let refused = demo.get("/api/admin-only", &Auth::Bearer(bob)).await;
    refused.assert_rejected(StatusCode::FORBIDDEN, Some("insufficient_scope"));
    demo.get("/api/whoami", &Auth::None).await.assert_rejected(StatusCode::UNAUTHORIZED, None);
    // A cookie-authenticated unsafe request from another site never leaves the gateway.
    let forged = reqwest::Client::new()
        .post(format!("{}/api/whoami", demo.base))
        .header("cookie", jar.header())
        .header("sec-fetch-site", "cross-site")
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    drop(api);
    let down = demo.send(Method::GET, "/api/whoami", &Auth::Cookies(jar), None).await;
    assert_eq!(down.status, StatusCode::BAD_GATEWAY);
    assert!(down.body["error"].is_string(), "{:?}", down.body);
}
