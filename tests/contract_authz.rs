//! The demo's contract for authorization and the other new routes, driven
//! over HTTP against `examples/demo` as a process: `/hello` (optional login),
//! `/admin` (scope), `/reauth` and `/sensitive` (step-up), role changes that
//! apply at once (across instances sharing Redis), `/logout-others`, the
//! JWKS for asymmetric `JWT_ALG`, `typ: at+jwt`, `AUDIENCE`, trusted proxies
//! and the public origin.

mod support;

use std::time::{Duration, Instant};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;
use support::{
    backend::{Backend, contract, unix_now, wait_until_after},
    demo::{Auth, Demo, Jar, credentials},
    redis_server::RedisServer,
};

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

async fn hello_is_optional_login(backend: Backend) {
    let env = backend.start(&[("ACCESS_TTL_SECS", "1")]);
    let visitor = env.get("/hello", &Auth::None).await;
    assert_eq!((visitor.status, &visitor.body), (StatusCode::OK, &json!({ "user": null })));
    let (access, _) = env.login_tokens("alice").await;
    assert_eq!(env.get("/hello", &Auth::Bearer(access.clone())).await.body, json!({ "user": "alice" }));
    // A bearer token presented but invalid or expired: 401, so clients refresh.
    env.get("/hello", &Auth::Bearer("garbage".into()))
        .await
        .assert_rejected(StatusCode::UNAUTHORIZED, Some("invalid_token"));
    wait_until_after(claims_of(&access)["exp"].as_u64().unwrap()).await;
    let expired = env.get("/hello", &Auth::Bearer(access)).await;
    expired.assert_rejected(StatusCode::UNAUTHORIZED, Some("invalid_token"));
    assert!(expired.header("www-authenticate").contains("expired"));

    // An expired access cookie with a live refresh cookie: refreshed transparently.
    let mut jar = env.login_cookies("alice").await;
    wait_until_after(claims_of(jar.access.as_ref().unwrap())["exp"].as_u64().unwrap()).await;
    let refreshed = env.get("/hello", &Auth::Cookies(jar.clone())).await;
    assert_eq!(refreshed.body, json!({ "user": "alice" }));
    assert_eq!(refreshed.set_cookies().len(), 2, "new cookies");
    jar.update(&refreshed);
    // Revoked from another device: a visitor again, with both cookies cleared.
    let (other, _) = env.login_tokens("alice").await;
    let sid = claims_of(jar.access.as_ref().unwrap())["sid"].as_str().unwrap().to_owned();
    let revoked = env.send(Method::DELETE, &format!("/sessions/{sid}"), &Auth::Bearer(other), None).await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    let dead = env.get("/hello", &Auth::Cookies(jar.clone())).await;
    assert_eq!((dead.status, &dead.body), (StatusCode::OK, &json!({ "user": null })));
    jar.update(&dead);
    assert_eq!(jar, Jar::default(), "both cookies cleared: {:?}", dead.set_cookies());
    let cache = dead.header("cache-control");
    assert!(cache.contains("no-store") && cache.contains("private"), "{cache}");
}

async fn admin_needs_the_admin_scope(backend: Backend) {
    let env = backend.start(&[]);
    let (alice, _) = env.login_tokens("alice").await;
    let (bob, _) = env.login_tokens("bob").await;
    let ok = env.get("/admin", &Auth::Bearer(alice)).await;
    assert_eq!(
        (ok.status, ok.body["sub"].as_str(), ok.body["scope"].as_str()),
        (StatusCode::OK, Some("alice"), Some("profile admin"))
    );
    assert_eq!(ok.body["role"], "admin");
    let refused = env.get("/admin", &Auth::Bearer(bob)).await;
    refused.assert_rejected(StatusCode::FORBIDDEN, Some("insufficient_scope"));
    let challenge = refused.header("www-authenticate");
    assert!(challenge.starts_with(r#"Bearer error="insufficient_scope", scope="admin""#), "{challenge}");
    env.get("/admin", &Auth::None).await.assert_rejected(StatusCode::UNAUTHORIZED, None);
    let cookies = env.login_cookies("bob").await;
    env.get("/admin", &Auth::Cookies(cookies)).await.assert_rejected(StatusCode::FORBIDDEN, Some("insufficient_scope"));
}

async fn step_up_with_reauth(backend: Backend) {
    let env = backend.start(&[("FRESH_SECS", "1")]);
    let mut jar = env.login_cookies("alice").await;
    let sid = claims_of(jar.access.as_ref().unwrap())["sid"].clone();
    let login_time = claims_of(jar.access.as_ref().unwrap())["auth_time"].as_u64().expect("auth_time");
    assert_eq!(env.get("/sensitive", &Auth::Cookies(jar.clone())).await.status, StatusCode::OK, "fresh after login");
    // Stale once more than FRESH_SECS have passed.
    wait_until_after(login_time + 1).await;
    let stale = env.get("/sensitive", &Auth::Cookies(jar.clone())).await;
    stale.assert_rejected(StatusCode::UNAUTHORIZED, Some("insufficient_user_authentication"));
    let challenge = stale.header("www-authenticate");
    assert!(
        challenge.starts_with(r#"Bearer error="insufficient_user_authentication", error_description=""#),
        "{challenge}"
    );
    assert!(challenge.ends_with("max_age=1"), "{challenge}");

    let wrong = env.post("/reauth", &Auth::Cookies(jar.clone()), Some(json!({ "password": "nope" }))).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let right = env.post("/reauth", &Auth::Cookies(jar.clone()), Some(json!({ "password": "alice-pw" }))).await;
    assert_eq!(right.status, StatusCode::OK, "{:?}", right.body);
    jar.update(&right);
    let claims = claims_of(jar.access.as_ref().unwrap());
    assert_eq!(claims["sid"], sid, "same session");
    assert!(claims["auth_time"].as_u64().unwrap() > login_time);
    assert_eq!(env.get("/sensitive", &Auth::Cookies(jar.clone())).await.status, StatusCode::OK);

    // Token mode.
    let (access, _) = env.login_tokens("alice").await;
    let tokens =
        env.post("/reauth", &Auth::Bearer(access), Some(json!({ "password": "alice-pw", "mode": "token" }))).await;
    assert_eq!((tokens.status, tokens.body["token_type"].as_str()), (StatusCode::OK, Some("Bearer")));
    assert!(!tokens.str("refresh_token").is_empty());
    assert_eq!(env.get("/sensitive", &Auth::Bearer(tokens.str("access_token"))).await.status, StatusCode::OK);
}

async fn logout_others_keeps_the_current_session(backend: Backend) {
    let env = backend.start(&[]);
    let (laptop, laptop_refresh) = env.login_tokens("alice").await;
    let (phone, _) = env.login_tokens("alice").await;
    let (current, current_refresh) = env.login_tokens("alice").await;
    assert_eq!(env.post("/logout-others", &Auth::Bearer(current.clone()), None).await.status, StatusCode::NO_CONTENT);
    for token in [laptop, phone] {
        env.get("/me", &Auth::Bearer(token)).await.assert_rejected(StatusCode::UNAUTHORIZED, Some("invalid_token"));
    }
    let dead = env.post("/auth/refresh", &Auth::None, Some(json!({ "refresh_token": laptop_refresh }))).await;
    assert_eq!(dead.body["error"], "invalid_grant");
    assert_eq!(env.get("/me", &Auth::Bearer(current.clone())).await.status, StatusCode::OK);
    let alive = env.post("/auth/refresh", &Auth::None, Some(json!({ "refresh_token": current_refresh }))).await;
    assert_eq!(alive.status, StatusCode::OK);
    assert_eq!(env.get("/sessions", &Auth::Bearer(current)).await.body.as_array().unwrap().len(), 1);
}

async fn role_changes_apply_at_once(backend: Backend) {
    let env = backend.start(&[]);
    let (alice, _) = env.login_tokens("alice").await;
    let (bob, bob_refresh) = env.login_tokens("bob").await;
    let put = |token: &str, user: &str, body: Value| {
        let (path, auth) = (format!("/users/{user}/role"), Auth::Bearer(token.to_owned()));
        let env = &env;
        async move { env.send(Method::PUT, &path, &auth, Some(body)).await }
    };
    put(&bob, "bob", json!({ "role": "admin" }))
        .await
        .assert_rejected(StatusCode::FORBIDDEN, Some("insufficient_scope"));
    assert_eq!(put(&alice, "nobody", json!({ "role": "admin" })).await.status, StatusCode::NOT_FOUND);
    assert_eq!(put(&alice, "bob", json!({ "role": "emperor" })).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(put(&alice, "bob", json!({ "role": "admin" })).await.status, StatusCode::NO_CONTENT);
    // Bob's older token is stale at once: "expired", so he refreshes.
    let stale = env.get("/me", &Auth::Bearer(bob)).await;
    stale.assert_rejected(StatusCode::UNAUTHORIZED, Some("invalid_token"));
    assert!(stale.header("www-authenticate").contains("expired"));
    let refreshed = env.post("/auth/refresh", &Auth::None, Some(json!({ "refresh_token": bob_refresh }))).await;
    assert_eq!(refreshed.status, StatusCode::OK);
    let token = refreshed.str("access_token");
    assert_eq!(
        (claims_of(&token)["role"].as_str(), claims_of(&token)["scope"].as_str()),
        (Some("admin"), Some("profile admin"))
    );
    assert_eq!(env.get("/admin", &Auth::Bearer(token)).await.status, StatusCode::OK, "the new token is not stale");
    // Alice's own token is untouched.
    assert_eq!(env.get("/me", &Auth::Bearer(alice)).await.status, StatusCode::OK);
}

/// Two demo instances sharing one Redis: a role change made at one makes
/// the user's older tokens stale at the other, quickly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_changes_reach_other_instances() {
    let redis = RedisServer::start();
    let url = redis.url();
    let vars = [("REDIS_URL", url.as_str()), ("ACCESS_TTL_SECS", "600")];
    let (a, b) = (Demo::start(&vars), Demo::start(&vars));
    let (alice, _) = a.login_tokens("alice").await;
    let (bob, bob_refresh) = b.login_tokens("bob").await;
    let mut bob_cookies = b.login_cookies("bob").await;
    assert_eq!(b.get("/me", &Auth::Bearer(bob.clone())).await.status, StatusCode::OK);
    let changed = a.send(Method::PUT, "/users/bob/role", &Auth::Bearer(alice), Some(json!({ "role": "admin" }))).await;
    assert_eq!(changed.status, StatusCode::NO_CONTENT);
    let started = Instant::now();
    loop {
        let reply = b.get("/me", &Auth::Bearer(bob.clone())).await;
        if reply.status == StatusCode::UNAUTHORIZED {
            assert!(reply.header("www-authenticate").contains("expired"));
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(2), "instance B still accepts the stale token");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!("stale at the other instance after {:?} (HTTP polling included)", started.elapsed());
    // Cookie clients at B are refreshed transparently.
    let cookie_reply = b.get("/me", &Auth::Cookies(bob_cookies.clone())).await;
    assert_eq!(cookie_reply.status, StatusCode::OK);
    assert_eq!(cookie_reply.set_cookies().len(), 2, "refreshed");
    bob_cookies.update(&cookie_reply);
    assert_eq!(b.get("/me", &Auth::Cookies(bob_cookies)).await.set_cookies().len(), 0, "no refresh loop");
    // The next refresh at the instance that made the change carries the new role.
    let refreshed = a.post("/auth/refresh", &Auth::None, Some(json!({ "refresh_token": bob_refresh }))).await;
    assert_eq!(claims_of(&refreshed.str("access_token"))["role"], "admin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_publishes_asymmetric_keys_only() {
    let hs = Demo::start(&[]);
    assert_eq!(
        hs.get("/.well-known/jwks.json", &Auth::None).await.body,
        json!({ "keys": [] }),
        "never a symmetric key"
    );
    for (alg, kty) in [("ES256", "EC"), ("EdDSA", "OKP")] {
        let (one, two) = (Demo::start(&[("JWT_ALG", alg)]), Demo::start(&[("JWT_ALG", alg)]));
        let jwks = one.get("/.well-known/jwks.json", &Auth::None).await.body;
        assert_eq!(jwks, two.get("/.well-known/jwks.json", &Auth::None).await.body, "{alg}: instances agree");
        let key = &jwks["keys"][0];
        assert_eq!((key["alg"].as_str(), key["kty"].as_str(), key.get("d")), (Some(alg), Some(kty), None), "{key}");
        let (access, _) = one.login_tokens("alice").await;
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(access.split('.').next().unwrap()).unwrap()).unwrap();
        assert_eq!(
            (header["alg"].as_str(), header["typ"].as_str(), &header["kid"]),
            (Some(alg), Some("at+jwt"), &key["kid"])
        );
        // Verifiable with the published key alone, and accepted by the other instance.
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.clone()).unwrap();
        let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let mut validation =
            jsonwebtoken::Validation::new(jwk.common.key_algorithm.unwrap().to_string().parse().unwrap());
        validation.set_issuer(&["tower-jwt-auth-demo"]);
        jsonwebtoken::decode::<Value>(&access, &decoding, &validation).expect("verifies with the JWKS");
        assert_eq!(two.get("/me", &Auth::Bearer(access)).await.status, StatusCode::OK, "{alg}");
    }
}

/// An HS256 token signed with the demo's own key, as `tests/support` knows
/// its `JWT_SECRET`: `header` and `claims` as given.
fn demo_signed(header: Value, claims: Value) -> String {
    let mut derive = Hmac::<Sha256>::new_from_slice(b"demo-tests-secret").unwrap();
    derive.update(b"access-token");
    let key = derive.finalize().into_bytes();
    let message =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(message.as_bytes());
    format!("{message}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_access_tokens_are_access_tokens_and_audience_is_required() {
    let demo = Demo::start(&[("AUDIENCE", "demo-api")]);
    let (access, _) = demo.login_tokens("alice").await;
    assert_eq!(claims_of(&access)["aud"], "demo-api");
    assert_eq!(demo.get("/me", &Auth::Bearer(access.clone())).await.status, StatusCode::OK);
    let now = unix_now();
    let claims = json!({
        "sub": "alice", "sid": "s", "jti": "j", "iat": now, "exp": now + 600,
        "iss": "tower-jwt-auth-demo", "aud": "demo-api", "role": "admin", "scope": "profile admin",
    });
    let genuine = demo_signed(json!({ "alg": "HS256", "kid": "demo-hs256", "typ": "at+jwt" }), claims.clone());
    let reply = demo.get("/me", &Auth::Bearer(genuine)).await;
    assert_eq!(reply.status, StatusCode::OK, "the test signs like the demo: {:?}", reply.body);
    for typ in [json!("JWT"), json!("id_token+jwt"), Value::Null] {
        let token = demo_signed(json!({ "alg": "HS256", "kid": "demo-hs256", "typ": typ }), claims.clone());
        demo.get("/me", &Auth::Bearer(token)).await.assert_rejected(StatusCode::UNAUTHORIZED, Some("invalid_token"));
    }
    let mut other_audience = claims;
    other_audience["aud"] = json!("another-api");
    let token = demo_signed(json!({ "alg": "HS256", "kid": "demo-hs256", "typ": "at+jwt" }), other_audience);
    demo.get("/me", &Auth::Bearer(token)).await.assert_rejected(StatusCode::UNAUTHORIZED, Some("invalid_token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_addresses_through_trusted_proxies() {
    let client = reqwest::Client::new();
    let login = |demo: &Demo| {
        client
            .post(format!("{}/login", demo.base))
            .header("x-forwarded-for", "198.51.100.66, 203.0.113.9")
            .json(&credentials("alice", "token"))
            .send()
    };
    let ip_of = |demo: &Demo, token: String| {
        let demo = demo.base.clone();
        let client = client.clone();
        async move {
            let sessions: Value =
                client.get(format!("{demo}/sessions")).bearer_auth(token).send().await.unwrap().json().await.unwrap();
            sessions[0]["ip"].clone()
        }
    };
    let trusting = Demo::start(&[("TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1")]);
    let body: Value = login(&trusting).await.unwrap().json().await.unwrap();
    assert_eq!(ip_of(&trusting, body["access_token"].as_str().unwrap().to_owned()).await, "203.0.113.9");
    let plain = Demo::start(&[]);
    let body: Value = login(&plain).await.unwrap().json().await.unwrap();
    assert_eq!(ip_of(&plain, body["access_token"].as_str().unwrap().to_owned()).await, "127.0.0.1", "not believed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_origin_passes_the_cross_origin_check_behind_a_proxy() {
    let demo = Demo::start(&[("PUBLIC_ORIGIN", "https://app.example")]);
    let client = reqwest::Client::new();
    let post = |jar: &Jar, origin: &str| {
        client
            .post(format!("{}/logout", demo.base))
            .header("cookie", jar.header())
            .header("host", "backend.internal:8080")
            .header("origin", origin.to_owned())
            .send()
    };
    let jar = demo.login_cookies("alice").await;
    assert_eq!(post(&jar, "https://evil.example").await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(post(&jar, "https://app.example").await.unwrap().status(), StatusCode::NO_CONTENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_lifetime_below_the_idle_default_is_accepted() {
    let demo = Demo::start(&[("REFRESH_ABSOLUTE_TTL_SECS", "3600")]);
    let (_, refresh) = demo.login_tokens("alice").await;
    let reply = demo.post("/auth/refresh", &Auth::None, Some(json!({ "refresh_token": refresh }))).await;
    assert_eq!(reply.status, StatusCode::OK);
    let exp = claims_of(&reply.str("access_token"))["exp"].as_u64().unwrap();
    assert!(exp <= unix_now() + 3600);
}

contract!(
    [memory => Memory, redis => Redis]
    [
    hello_is_optional_login,
    admin_needs_the_admin_scope,
    step_up_with_reauth,
    logout_others_keeps_the_current_session,
    role_changes_apply_at_once,
    ]
);
