//! `examples/README.md`, line by line, against `examples/demo` running as a
//! real process and driven over HTTP: once with the embedded store, once
//! with a single Redis node, once with a three-node Redis Cluster.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::json;
use support::{
    backend::{Backend, contract, unix_now, wait_until_after},
    demo::{Auth, Jar, credentials},
};

async fn login_modes(backend: Backend) {
    let env = backend.start(&[]);
    let reply = env.post("/login", &Auth::None, Some(credentials("alice", "cookie"))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["sub"], "alice");
    assert!(reply.body["expires_in"].as_u64().unwrap() > 0);
    let cookies =
        reply.headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect::<Vec<_>>();
    assert_eq!(cookies.len(), 2);
    for cookie in &cookies {
        assert!(cookie.starts_with("__Host-"), "{cookie}");
        for attr in ["HttpOnly", "Secure", "Path=/"] {
            assert!(cookie.contains(attr), "{cookie} lacks {attr}");
        }
        assert!(cookie.contains("SameSite=Lax") || cookie.contains("SameSite=Strict"), "{cookie}");
    }
    assert!(reply.header("cache-control").contains("no-store") && reply.header("cache-control").contains("private"));

    let reply = env.post("/login", &Auth::None, Some(credentials("bob", "token"))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["token_type"], "Bearer");
    assert!(reply.body["expires_in"].as_u64().unwrap() > 0);
    assert!(reply.str("access_token").split('.').count() == 3 && !reply.str("refresh_token").is_empty());
    assert!(reply.set_cookies().is_empty(), "token mode sets no cookie");

    let wrong = env.post("/login", &Auth::None, Some(json!({"username":"alice","password":"nope"}))).await;
    wrong.assert_rejected(StatusCode::UNAUTHORIZED, None);
    let junk = env.post("/login", &Auth::None, Some(json!([1, 2]))).await;
    assert_eq!(junk.status, StatusCode::BAD_REQUEST);
}

async fn me_with_header_or_cookie(backend: Backend) {
    let env = backend.start(&[]);
    let (access, _) = env.login_tokens("alice").await;
    let jar = env.login_cookies("bob").await;
    let by_header = env.get("/me", &Auth::Bearer(access.clone())).await;
    assert_eq!(by_header.status, StatusCode::OK);
    for claim in ["sub", "sid", "exp", "iat"] {
        assert!(!by_header.body[claim].is_null(), "{claim} in {:?}", by_header.body);
    }
    assert_eq!(by_header.body["sub"], "alice");
    let by_cookie = env.get("/me", &Auth::Cookies(jar.clone())).await;
    assert_eq!((by_cookie.status, by_cookie.body["sub"].as_str()), (StatusCode::OK, Some("bob")));

    // Both: the header wins.
    let both = env.send(Method::GET, "/me", &Auth::Bearer(access), None).await;
    assert_eq!(both.body["sub"], "alice");
    let client = reqwest::Client::new();
    let both = client
        .get(format!("{}/me", env.base))
        .bearer_auth(env.login_tokens("alice").await.0)
        .header("cookie", jar.header())
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = both.json().await.unwrap();
    assert_eq!(body["sub"], "alice");
}

async fn rejections_follow_rfc6750(backend: Backend) {
    let env = backend.start(&[]);
    env.get("/me", &Auth::None).await.assert_rejected(StatusCode::UNAUTHORIZED, None);
    env.get("/me", &Auth::Bearer("garbage".into()))
        .await
        .assert_rejected(StatusCode::UNAUTHORIZED, Some("invalid_token"));
    let client = reqwest::Client::new();
    for header in ["Bearer  two  spaces", "Bearer a b"] {
        let reply = client.get(format!("{}/me", env.base)).header("authorization", header).send().await.unwrap();
        assert_eq!(reply.status(), StatusCode::BAD_REQUEST, "{header}");
        let body: serde_json::Value = reply.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request");
    }
    // Another scheme is no bearer credential: as if there were none.
    let reply =
        client.get(format!("{}/me", env.base)).header("authorization", "Basic YWxpY2U6cHc=").send().await.unwrap();
    assert_eq!(reply.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(reply.headers()["www-authenticate"], "Bearer");
    // Nothing malformed or large gets a 500 or takes the server down.
    let huge = "a".repeat(200 * 1024);
    let reply = client.get(format!("{}/me", env.base)).header("authorization", format!("Bearer {huge}")).send().await;
    assert!(reply.map_or(true, |r| r.status().is_client_error()));
    let reply = client.post(format!("{}/auth/refresh", env.base)).body(vec![b'{'; 100_000]).send().await.unwrap();
    assert!(reply.status().is_client_error(), "{}", reply.status());
    assert_eq!(env.get("/me", &Auth::None).await.status, StatusCode::UNAUTHORIZED, "still serving");
}

async fn transparent_refresh_and_parallel_tabs(backend: Backend) {
    let env = backend.start(&[("ACCESS_TTL_SECS", "1")]);
    let mut jar = env.login_cookies("alice").await;
    let first = env.get("/me", &Auth::Cookies(jar.clone())).await;
    let (sid, exp) = (first.str("sid"), first.body["exp"].as_u64().unwrap());
    wait_until_after(exp).await;

    // Five tabs at once with the same expired cookies.
    let auth = Auth::Cookies(jar.clone());
    let requests = (0..5).map(|_| env.get("/me", &auth));
    let replies = futures::future::join_all(requests).await;
    let mut successors = std::collections::HashSet::new();
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        assert_eq!(reply.str("sid"), sid, "same session");
        assert!(reply.body["exp"].as_u64().unwrap() > exp, "fresh claims");
        assert!(reply.header("cache-control").contains("no-store"));
        let mut tab = jar.clone();
        tab.update(reply);
        successors.insert(tab.refresh.clone().unwrap());
    }
    assert_eq!(successors.len(), 1, "all tabs converge on one successor");
    jar.update(&replies[0]);
    assert_eq!(env.get("/me", &Auth::Cookies(jar)).await.status, StatusCode::OK);
}

async fn expired_bearer_tokens_are_401_expired(backend: Backend) {
    let env = backend.start(&[("ACCESS_TTL_SECS", "1")]);
    let (access, refresh) = env.login_tokens("alice").await;
    let me = env.get("/me", &Auth::Bearer(access.clone())).await;
    wait_until_after(me.body["exp"].as_u64().unwrap()).await;
    let reply = env.get("/me", &Auth::Bearer(access)).await;
    reply.assert_rejected(StatusCode::UNAUTHORIZED, Some("invalid_token"));
    assert!(reply.header("www-authenticate").contains("expired"), "{}", reply.header("www-authenticate"));

    let refreshed = env.post("/auth/refresh", &Auth::None, Some(json!({ "refresh_token": refresh }))).await;
    assert_eq!(refreshed.status, StatusCode::OK);
    assert_eq!(refreshed.body["token_type"], "Bearer");
    assert_ne!(refreshed.str("refresh_token"), refresh);
    assert_eq!(env.get("/me", &Auth::Bearer(refreshed.str("access_token"))).await.status, StatusCode::OK);
}

async fn refresh_endpoint_modes_and_errors(backend: Backend) {
    let env = backend.start(&[]);
    let jar = env.login_cookies("alice").await;
    let reply = env.post("/auth/refresh", &Auth::Cookies(jar.clone()), None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let mut rotated = jar.clone();
    rotated.update(&reply);
    assert_ne!(rotated.refresh, jar.refresh);
    assert!(reply.header("cache-control").contains("no-store"));

    for token in ["", "nonsense", "YWxpY2U.c2lk.0.dGFn"] {
        let reply = env.post("/auth/refresh", &Auth::None, Some(json!({ "refresh_token": token }))).await;
        assert!(matches!(reply.status, StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED), "{token}");
        assert_eq!(reply.body["error"], "invalid_grant", "{token}");
    }
}

async fn grace_window_gives_the_same_successor(backend: Backend) {
    let env = backend.start(&[("GRACE_SECS", "30")]);
    let (_, refresh) = env.login_tokens("alice").await;
    let body = Some(json!({ "refresh_token": refresh }));
    let first = env.post("/auth/refresh", &Auth::None, body.clone()).await;
    let second = env.post("/auth/refresh", &Auth::None, body).await;
    assert_eq!((first.status, second.status), (StatusCode::OK, StatusCode::OK));
    assert_eq!(first.str("refresh_token"), second.str("refresh_token"));
}

async fn reuse_after_grace_revokes_the_session(backend: Backend) {
    let env = backend.start(&[("GRACE_SECS", "1")]);
    let (_, refresh) = env.login_tokens("alice").await;
    let rotated = env.post("/auth/refresh", &Auth::None, Some(json!({ "refresh_token": refresh }))).await;
    assert_eq!(rotated.status, StatusCode::OK);
    let (access, newest) = (rotated.str("access_token"), rotated.str("refresh_token"));
    assert_eq!(env.get("/me", &Auth::Bearer(access.clone())).await.status, StatusCode::OK);
    wait_until_after(unix_now() + 1).await;

    let theft = env.post("/auth/refresh", &Auth::None, Some(json!({ "refresh_token": refresh }))).await;
    assert_eq!(theft.body["error"], "invalid_grant");
    env.get("/me", &Auth::Bearer(access)).await.assert_rejected(StatusCode::UNAUTHORIZED, Some("invalid_token"));
    let newest = env.post("/auth/refresh", &Auth::None, Some(json!({ "refresh_token": newest }))).await;
    assert_eq!(newest.body["error"], "invalid_grant", "the whole session is gone");
}

async fn logout_revokes_and_clears(backend: Backend) {
    let env = backend.start(&[("ACCESS_TTL_SECS", "1")]);
    let jar = env.login_cookies("alice").await;
    let me = env.get("/me", &Auth::Cookies(jar.clone())).await;
    let (access, exp) = (jar.access.clone().unwrap(), me.body["exp"].as_u64().unwrap());
    wait_until_after(exp).await;

    // The access cookie has expired: logout must still only clear cookies.
    let reply = env.post("/logout", &Auth::Cookies(jar.clone()), None).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let set = reply.set_cookies();
    assert_eq!(set.len(), 2, "{set:?}");
    assert!(set.iter().all(|(_, _, removed)| *removed), "only removals: {set:?}");
    for cookie in reply.headers.get_all("set-cookie") {
        let cookie = cookie.to_str().unwrap();
        assert!(cookie.contains("Path=/") && cookie.contains("Secure") && cookie.contains("HttpOnly"), "{cookie}");
    }
    let mut cleared = jar.clone();
    cleared.update(&reply);
    assert_eq!(cleared, Jar::default());
    assert_eq!(
        env.get("/me", &Auth::Cookies(jar)).await.status,
        StatusCode::UNAUTHORIZED,
        "the refresh cookie is dead"
    );
    let _ = access;

    // Bearer: the access token dies at once.
    let (access, _) = env.login_tokens("alice").await;
    assert_eq!(env.post("/logout", &Auth::Bearer(access.clone()), None).await.status, StatusCode::NO_CONTENT);
    env.get("/me", &Auth::Bearer(access)).await.assert_rejected(StatusCode::UNAUTHORIZED, Some("invalid_token"));
}

async fn logout_all_and_devices(backend: Backend) {
    let env = backend.start(&[]);
    let (laptop, _) = env.login_tokens("alice").await;
    let (phone, _) = env.login_tokens("alice").await;
    let (bob, _) = env.login_tokens("bob").await;

    let list = env.get("/sessions", &Auth::Bearer(phone.clone())).await;
    assert_eq!(list.status, StatusCode::OK);
    let sessions = list.body.as_array().unwrap().clone();
    assert_eq!(sessions.len(), 2);
    for session in &sessions {
        for field in ["id", "created_at", "last_used_at", "user_agent", "current"] {
            assert!(session.get(field).is_some(), "{field} in {session}");
        }
    }
    assert_eq!(sessions.iter().filter(|s| s["current"] == true).count(), 1);
    let laptop_id = env.get("/me", &Auth::Bearer(laptop.clone())).await.str("sid");
    let bob_id = env.get("/me", &Auth::Bearer(bob.clone())).await.str("sid");

    let other = env.send(Method::DELETE, &format!("/sessions/{bob_id}"), &Auth::Bearer(phone.clone()), None).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    let mine = env.send(Method::DELETE, &format!("/sessions/{laptop_id}"), &Auth::Bearer(phone.clone()), None).await;
    assert_eq!(mine.status, StatusCode::NO_CONTENT);
    assert_eq!(env.get("/me", &Auth::Bearer(laptop)).await.status, StatusCode::UNAUTHORIZED);

    let (tablet, tablet_refresh) = env.login_tokens("alice").await;
    assert_eq!(env.post("/logout-all", &Auth::Bearer(phone.clone()), None).await.status, StatusCode::NO_CONTENT);
    for token in [phone, tablet] {
        assert_eq!(env.get("/me", &Auth::Bearer(token)).await.status, StatusCode::UNAUTHORIZED);
    }
    let refresh = env.post("/auth/refresh", &Auth::None, Some(json!({ "refresh_token": tablet_refresh }))).await;
    assert_eq!(refresh.body["error"], "invalid_grant");
    assert_eq!(env.get("/me", &Auth::Bearer(bob)).await.status, StatusCode::OK, "bob is untouched");
}

async fn session_cap_evicts_the_oldest(backend: Backend) {
    let env = backend.start(&[("MAX_SESSIONS", "2")]);
    let (first, _) = env.login_tokens("alice").await;
    let (second, _) = env.login_tokens("alice").await;
    let (third, _) = env.login_tokens("alice").await;
    assert_eq!(env.get("/me", &Auth::Bearer(first)).await.status, StatusCode::UNAUTHORIZED);
    for token in [&second, &third] {
        assert_eq!(env.get("/me", &Auth::Bearer(token.clone())).await.status, StatusCode::OK);
    }
    assert_eq!(env.get("/sessions", &Auth::Bearer(third)).await.body.as_array().unwrap().len(), 2);
}

async fn cross_site_cookie_posts_are_403(backend: Backend) {
    let env = backend.start(&[]);
    let jar = env.login_cookies("alice").await;
    let client = reqwest::Client::new();
    let cross = |path: &str| {
        client
            .post(format!("{}{path}", env.base))
            .header("cookie", jar.header())
            .header("sec-fetch-site", "cross-site")
            .header("origin", "http://evil.example")
    };
    for path in ["/logout", "/logout-all", "/auth/refresh"] {
        let reply = cross(path).send().await.unwrap();
        assert_eq!(reply.status(), StatusCode::FORBIDDEN, "{path}");
        assert!(reply.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
        assert!(reply.headers().get("set-cookie").is_none());
        let body: serde_json::Value = reply.json().await.unwrap();
        assert!(body["error"].is_string() && body["error_description"].is_string());
    }
    let origin_only = client
        .post(format!("{}/logout", env.base))
        .header("cookie", jar.header())
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(origin_only.status(), StatusCode::FORBIDDEN);
    assert_eq!(env.get("/me", &Auth::Cookies(jar)).await.status, StatusCode::OK, "the session survived");

    let (access, _) = env.login_tokens("alice").await;
    let bearer = client
        .post(format!("{}/logout", env.base))
        .bearer_auth(access)
        .header("sec-fetch-site", "cross-site")
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), StatusCode::NO_CONTENT, "bearer requests are not subject to CSRF");
}

contract!(
    [memory => Memory, redis => Redis, cluster => Cluster]
    [
    login_modes,
    me_with_header_or_cookie,
    rejections_follow_rfc6750,
    transparent_refresh_and_parallel_tabs,
    expired_bearer_tokens_are_401_expired,
    refresh_endpoint_modes_and_errors,
    grace_window_gives_the_same_successor,
    reuse_after_grace_revokes_the_session,
    logout_revokes_and_clears,
    logout_all_and_devices,
    session_cap_evicts_the_oldest,
    cross_site_cookie_posts_are_403,
    ]
);
