//! Sessions through the layer, in process with the embedded store:
//! transparent refresh, convergence of racing refreshes, theft detection,
//! logout semantics, the refresh endpoint, CSRF, device management.

use std::time::Duration;

use axum::{
    Json, Router,
    body::Body,
    extract::Path,
    http::StatusCode,
    routing::{delete, get, post},
};
use http::{HeaderMap, Request, header};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tower::ServiceExt;
use tower_jwt_auth::{AuthError, Claims, ClientInfo, JwtAuth, LoggedOut, Session, SessionInfo, SigningKey};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Profile {
    name: String,
}

fn builder() -> tower_jwt_auth::JwtAuthBuilder {
    JwtAuth::builder().signing_key(SigningKey::hs256("k", &[3; 32]).unwrap()).leeway(Duration::ZERO)
}

async fn me(claims: Claims<Profile>) -> Json<Claims<Profile>> {
    Json(claims)
}

async fn logout(session: Session) -> Result<LoggedOut, AuthError> {
    session.logout().await
}

async fn list(session: Session) -> Result<Json<Vec<SessionInfo>>, AuthError> {
    Ok(Json(session.list().await?))
}

async fn revoke(session: Session, Path(id): Path<String>) -> Result<StatusCode, AuthError> {
    session.revoke(&id).await.map(|()| StatusCode::NO_CONTENT)
}

fn app(auth: &JwtAuth) -> Router {
    let protected = Router::new()
        .route("/me", get(me))
        .route("/me", post(me))
        .route("/logout", post(logout))
        .route("/sessions", get(list))
        .route("/sessions/{id}", delete(revoke))
        .route_layer(auth.clone());
    Router::new().merge(protected).merge(auth.refresh_router())
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    /// `name=value` of each `Set-Cookie`, attributes dropped.
    fn set_cookies(&self) -> Vec<(String, String)> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| {
                let pair = v.to_str().unwrap().split(';').next().unwrap();
                let (name, value) = pair.split_once('=').unwrap();
                (name.to_owned(), value.to_owned())
            })
            .collect()
    }

    fn cookie(&self, name: &str) -> Option<String> {
        self.set_cookies().into_iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply { status, headers, body }
}

fn with_cookies(method: &str, uri: &str, access: Option<&str>, refresh: Option<&str>) -> http::request::Builder {
    let mut cookies = Vec::new();
    if let Some(access) = access {
        cookies.push(format!("__Host-access={access}"));
    }
    if let Some(refresh) = refresh {
        cookies.push(format!("__Host-refresh={refresh}"));
    }
    Request::builder().method(method).uri(uri).header(header::COOKIE, cookies.join("; "))
}

async fn login(auth: &JwtAuth, user: &str) -> tower_jwt_auth::Tokens {
    auth.login(user, &Profile { name: user.to_uppercase() }, ClientInfo::default()).await.unwrap()
}

/// An access token of `tokens`' session that expired a minute ago, as a
/// browser would still hold in its cookie.
fn expired_access(auth: &JwtAuth, tokens: &tower_jwt_auth::Tokens) -> String {
    auth.test_token(tokens.user_id()).session(tokens.session_id()).expires_in(-60).sign()
}

#[tokio::test]
async fn an_expired_access_cookie_is_refreshed_transparently() {
    let auth = builder().build().unwrap();
    let app = app(&auth);
    let tokens = login(&auth, "alice").await;
    let expired = expired_access(&auth, &tokens);

    let reply = send(
        &app,
        with_cookies("GET", "/me", Some(&expired), Some(tokens.refresh_token())).body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["sub"], "alice");
    assert_eq!(reply.body["sid"], tokens.session_id(), "the handler sees the refreshed session's claims");
    assert_eq!(reply.body["name"], "ALICE", "custom claims are re-issued");
    assert_eq!(reply.headers[header::CACHE_CONTROL], "private, no-store");
    let new_access = reply.cookie("__Host-access").expect("a new access cookie");
    let new_refresh = reply.cookie("__Host-refresh").expect("a new refresh cookie");
    assert_ne!(new_refresh, tokens.refresh_token());
    for set_cookie in reply.headers.get_all(header::SET_COOKIE) {
        let set_cookie = set_cookie.to_str().unwrap();
        for attr in ["HttpOnly", "Secure", "Path=/", "SameSite=Lax"] {
            assert!(set_cookie.contains(attr), "{set_cookie}");
        }
    }

    // The new pair works without refreshing again.
    let reply =
        send(&app, with_cookies("GET", "/me", Some(&new_access), Some(&new_refresh)).body(Body::empty()).unwrap())
            .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.set_cookies().is_empty(), "a valid access cookie needs no refresh");

    // A missing access cookie with a valid refresh cookie is refreshed too.
    let reply = send(&app, with_cookies("GET", "/me", None, Some(&new_refresh)).body(Body::empty()).unwrap()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.cookie("__Host-refresh").is_some());
}

#[tokio::test]
async fn bearer_clients_are_told_their_token_expired() {
    let auth = builder().build().unwrap();
    let tokens = login(&auth, "alice").await;
    let expired = expired_access(&auth, &tokens);
    let request = Request::get("/me")
        .header(header::AUTHORIZATION, format!("Bearer {expired}"))
        .header(header::COOKIE, format!("__Host-refresh={}", tokens.refresh_token()))
        .body(Body::empty())
        .unwrap();
    let reply = send(&app(&auth), request).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let www = reply.headers[header::WWW_AUTHENTICATE].to_str().unwrap();
    assert!(www.contains(r#"error="invalid_token""#) && www.contains("expired"), "{www}");
    assert!(reply.set_cookies().is_empty(), "no cookie refresh for bearer clients");
}

#[tokio::test]
async fn fifty_parallel_refreshes_converge_on_one_successor() {
    let auth = builder().build().unwrap();
    let app = app(&auth);
    let tokens = login(&auth, "alice").await;
    let expired = expired_access(&auth, &tokens);
    let requests = (0..50).map(|_| {
        let app = app.clone();
        let request =
            with_cookies("GET", "/me", Some(&expired), Some(tokens.refresh_token())).body(Body::empty()).unwrap();
        tokio::spawn(async move { send(&app, request).await })
    });
    let mut successors = std::collections::HashSet::new();
    for reply in futures_join(requests).await {
        assert_eq!(reply.status, StatusCode::OK);
        successors.insert(reply.cookie("__Host-refresh").unwrap());
    }
    assert_eq!(successors.len(), 1, "every racer gets the same successor");

    // Exactly one rotation happened: the successor is counter 1, so rotating
    // it yields counter 2 and the original token is now two generations old.
    let successor = successors.into_iter().next().unwrap();
    assert!(successor.split('.').nth(2) == Some("1"), "{successor}");
    let next = auth.refresh(&successor).await.unwrap();
    assert_eq!(next.refresh_token().split('.').nth(2), Some("2"));
}

async fn futures_join<T: Send + 'static>(handles: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for handle in handles.collect::<Vec<_>>() {
        out.push(handle.await.unwrap());
    }
    out
}

#[tokio::test]
async fn within_grace_the_previous_token_yields_the_same_successor() {
    let auth = builder().grace(Duration::from_secs(30)).build().unwrap();
    let tokens = login(&auth, "alice").await;
    let first = auth.refresh(tokens.refresh_token()).await.unwrap();
    let again = auth.refresh(tokens.refresh_token()).await.unwrap();
    assert_eq!(first.refresh_token(), again.refresh_token());
    assert_eq!(first.session_id(), again.session_id());
}

#[tokio::test]
async fn reuse_after_grace_revokes_the_whole_session() {
    let auth = builder().grace(Duration::ZERO).build().unwrap();
    let app = app(&auth);
    let tokens = login(&auth, "alice").await;
    let rotated = auth.refresh(tokens.refresh_token()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await; // past the zero grace window

    let theft = auth.refresh(tokens.refresh_token()).await.unwrap_err();
    assert!(matches!(theft, AuthError::InvalidGrant(d) if d.contains("already used")), "{theft:?}");

    // Everything of the session is dead: the newest refresh token...
    assert!(matches!(auth.refresh(rotated.refresh_token()).await, Err(AuthError::InvalidGrant(_))));
    // ...its access tokens, at once...
    let request = Request::get("/me").header(header::AUTHORIZATION, format!("Bearer {}", rotated.access_token()));
    assert_eq!(send(&app, request.body(Body::empty()).unwrap()).await.status, StatusCode::UNAUTHORIZED);
    // ...and replaying anything later does not reopen it.
    for token in [tokens.refresh_token(), rotated.refresh_token()] {
        assert!(auth.refresh(token).await.is_err());
    }
}

#[tokio::test]
async fn a_dead_refresh_cookie_is_401_and_clears_the_cookies() {
    let auth = builder().build().unwrap();
    let tokens = login(&auth, "alice").await;
    auth.revoke_session("alice", tokens.session_id()).await.unwrap();
    let reply =
        send(&app(&auth), with_cookies("GET", "/me", None, Some(tokens.refresh_token())).body(Body::empty()).unwrap())
            .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.body["error"], "invalid_token");
    assert_eq!(reply.cookie("__Host-access").as_deref(), Some(""));
    assert_eq!(reply.cookie("__Host-refresh").as_deref(), Some(""));
    assert!(reply.headers.get_all(header::SET_COOKIE).iter().all(|c| c.to_str().unwrap().contains("Max-Age=0")));

    let forged =
        send(&app(&auth), with_cookies("GET", "/me", None, Some("a.b.0.c")).body(Body::empty()).unwrap()).await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn logout_clears_cookies_and_never_sets_fresh_ones() {
    let auth = builder().build().unwrap();
    let app = app(&auth);
    let tokens = login(&auth, "alice").await;
    let expired = expired_access(&auth, &tokens);
    // The access cookie expired: the layer refreshes on the way in, but the
    // handler logs out, so the response only clears.
    let reply = send(
        &app,
        with_cookies("POST", "/logout", Some(&expired), Some(tokens.refresh_token())).body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(
        reply.set_cookies(),
        vec![("__Host-access".into(), String::new()), ("__Host-refresh".into(), String::new())]
    );
    assert_eq!(reply.headers[header::CACHE_CONTROL], "private, no-store");
    assert!(auth.list_sessions("alice", None).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_refresh_endpoint_speaks_rfc6749() {
    let auth = builder().build().unwrap();
    let app = app(&auth);
    let tokens = login(&auth, "alice").await;

    let json_request = |token: &str| {
        Request::post("/auth/refresh")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(json!({ "refresh_token": token }).to_string()))
            .unwrap()
    };
    let reply = send(&app, json_request(tokens.refresh_token())).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["token_type"], "Bearer");
    assert!(reply.body["access_token"].as_str().unwrap().split('.').count() == 3);
    assert!(reply.body["expires_in"].as_u64().unwrap() > 0);
    let next = reply.body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(next, tokens.refresh_token());
    assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store");
    assert!(reply.set_cookies().is_empty());

    // The form encoding of RFC 6749 §6 works too.
    let form = Request::post("/auth/refresh")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("grant_type=refresh_token&refresh_token={next}")))
        .unwrap();
    assert_eq!(send(&app, form).await.status, StatusCode::OK);

    for bad in ["", "garbage", "a.b.1.c"] {
        let reply = send(&app, json_request(bad)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert_eq!(reply.body["error"], "invalid_grant");
    }
    let not_json = Request::post("/auth/refresh").body(Body::from("{")).unwrap();
    assert_eq!(send(&app, not_json).await.body["error"], "invalid_request");

    // Cookie mode: no body, the refresh cookie rotates.
    let tokens = login(&auth, "bob").await;
    let reply = send(
        &app,
        with_cookies("POST", "/auth/refresh", None, Some(tokens.refresh_token())).body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["sub"], "bob");
    assert!(reply.cookie("__Host-refresh").is_some_and(|c| c != tokens.refresh_token()));
    assert_eq!(reply.headers[header::CACHE_CONTROL], "private, no-store");
    let none = send(&app, Request::post("/auth/refresh").body(Body::empty()).unwrap()).await;
    // Nothing to refresh with: a missing parameter (RFC 6749 §5.2).
    assert_eq!((none.status, none.body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")));
}

#[tokio::test]
async fn cross_site_cookie_requests_are_refused_before_any_rotation() {
    let auth = builder().build().unwrap();
    let app = app(&auth);
    let tokens = login(&auth, "alice").await;
    let expired = expired_access(&auth, &tokens);
    let cross_site = |uri: &str| {
        with_cookies("POST", uri, Some(&expired), Some(tokens.refresh_token()))
            .header(header::HOST, "app.test")
            .header("sec-fetch-site", "cross-site")
            .header(header::ORIGIN, "https://evil.test")
            .body(Body::empty())
            .unwrap()
    };
    for uri in ["/logout", "/auth/refresh"] {
        let reply = send(&app, cross_site(uri)).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{uri}");
        assert!(reply.headers[header::WWW_AUTHENTICATE].to_str().unwrap().starts_with("Bearer"));
        assert_eq!(reply.body["error"], "access_denied");
        assert!(reply.set_cookies().is_empty());
    }
    // No rotation happened: the refresh token is still the current one
    // (rotating it now gives counter 1, not a theft).
    let next = auth.refresh(tokens.refresh_token()).await.unwrap();
    assert_eq!(next.refresh_token().split('.').nth(2), Some("1"));

    // An Origin other than the server's own, without Sec-Fetch-Site: refused too.
    let request = with_cookies("POST", "/me", Some(next.access_token()), None)
        .header(header::HOST, "app.test")
        .header(header::ORIGIN, "https://evil.test")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, request).await.status, StatusCode::FORBIDDEN);
    // Same origin passes; so does a bearer request from anywhere.
    let same = with_cookies("POST", "/me", Some(next.access_token()), None)
        .header(header::HOST, "app.test")
        .header(header::ORIGIN, "http://app.test")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, same).await.status, StatusCode::OK);
    let bearer = Request::post("/me")
        .header(header::AUTHORIZATION, format!("Bearer {}", next.access_token()))
        .header("sec-fetch-site", "cross-site")
        .header(header::ORIGIN, "https://evil.test")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, bearer).await.status, StatusCode::OK);
}

#[tokio::test]
async fn users_see_and_revoke_only_their_own_sessions() {
    let auth = builder().build().unwrap();
    let app = app(&auth);
    let client = ClientInfo { user_agent: Some("Firefox/140".into()), ip: Some([10, 0, 0, 7].into()) };
    let laptop = auth.login("alice", &Profile { name: "A".into() }, client).await.unwrap();
    let phone = login(&auth, "alice").await;
    let bobs = login(&auth, "bob").await;

    let bearer = |token: &str, method: &str, uri: &str| {
        Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap()
    };
    let reply = send(&app, bearer(phone.access_token(), "GET", "/sessions")).await;
    let list = reply.body.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["id"], laptop.session_id());
    assert_eq!(list[0]["user_agent"], "Firefox/140");
    assert_eq!(list[0]["current"], false);
    assert_eq!(list[1]["current"], true);
    assert!(list[0]["created_at"].as_u64().unwrap() > 1_700_000_000);
    assert!(list[0]["last_used_at"].as_u64().is_some());

    let other = send(&app, bearer(phone.access_token(), "DELETE", &format!("/sessions/{}", bobs.session_id()))).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    assert_eq!(send(&app, bearer(bobs.access_token(), "GET", "/sessions")).await.body.as_array().unwrap().len(), 1);

    let mine = send(&app, bearer(phone.access_token(), "DELETE", &format!("/sessions/{}", laptop.session_id()))).await;
    assert_eq!(mine.status, StatusCode::NO_CONTENT);
    assert_eq!(send(&app, bearer(laptop.access_token(), "GET", "/me")).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(send(&app, bearer(phone.access_token(), "GET", "/me")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn logout_all_and_the_session_cap() {
    let auth = builder().max_sessions_per_user(2).build().unwrap();
    // Within the same millisecond, often: creation order still decides.
    let first = login(&auth, "alice").await;
    let second = login(&auth, "alice").await;
    let third = login(&auth, "alice").await;
    let live: Vec<String> = auth.list_sessions("alice", None).await.unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(live, vec![second.session_id().to_owned(), third.session_id().to_owned()], "the oldest is evicted");
    assert!(auth.refresh(first.refresh_token()).await.is_err());
    let app = app(&auth);
    let me = |token: &str| {
        Request::get("/me").header(header::AUTHORIZATION, format!("Bearer {token}")).body(Body::empty()).unwrap()
    };
    assert_eq!(send(&app, me(first.access_token())).await.status, StatusCode::UNAUTHORIZED, "evicted at once");

    let bob = login(&auth, "bob").await;
    assert_eq!(auth.revoke_all_sessions("alice").await.unwrap(), 2);
    for tokens in [&second, &third] {
        assert_eq!(send(&app, me(tokens.access_token())).await.status, StatusCode::UNAUTHORIZED);
        assert!(auth.refresh(tokens.refresh_token()).await.is_err());
    }
    assert_eq!(send(&app, me(bob.access_token())).await.status, StatusCode::OK, "other users are untouched");
}

#[tokio::test]
async fn claims_can_be_reloaded_at_refresh() {
    let auth = builder()
        .reload_claims(|user: String| async move {
            match user.as_str() {
                "alice" => Ok(Some(Profile { name: "Alice, promoted".into() })),
                _ => Ok::<_, std::io::Error>(None),
            }
        })
        .build()
        .unwrap();
    let alice = login(&auth, "alice").await;
    let refreshed = auth.refresh(alice.refresh_token()).await.unwrap();
    let app = app(&auth);
    let request = Request::get("/me").header(header::AUTHORIZATION, format!("Bearer {}", refreshed.access_token()));
    assert_eq!(send(&app, request.body(Body::empty()).unwrap()).await.body["name"], "Alice, promoted");

    let bob = login(&auth, "bob").await;
    assert!(
        matches!(auth.refresh(bob.refresh_token()).await, Err(AuthError::InvalidGrant(_))),
        "a user gone ends the session"
    );
    assert!(auth.list_sessions("bob", None).await.unwrap().is_empty());
}

#[tokio::test]
async fn custom_claims_may_not_shadow_registered_ones() {
    let auth = builder().build().unwrap();
    let result = auth.login("alice", &json!({ "sub": "root" }), ClientInfo::default()).await;
    assert!(matches!(result, Err(AuthError::Misconfigured(_))));
}

#[tokio::test]
async fn double_submit_tokens_guard_cookie_sessions_when_enabled() {
    let auth = builder().csrf_double_submit().build().unwrap();
    let app = app(&auth);
    let tokens = login(&auth, "alice").await;
    let login_reply = {
        let response = axum::response::IntoResponse::into_response(tokens.clone().into_cookies());
        Reply { status: response.status(), headers: response.headers().clone(), body: Value::Null }
    };
    let csrf_cookie = login_reply
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("__Host-csrf="))
        .expect("a CSRF cookie");
    assert!(!csrf_cookie.contains("HttpOnly"), "the page must read it: {csrf_cookie}");
    assert!(csrf_cookie.contains("Secure") && csrf_cookie.contains("Path=/"), "{csrf_cookie}");
    let token = login_reply.cookie("__Host-csrf").unwrap();

    let post = |header_value: Option<&str>| {
        let mut request = with_cookies("POST", "/me", Some(tokens.access_token()), None);
        if let Some(value) = header_value {
            request = request.header("x-csrf-token", value);
        }
        request.body(Body::empty()).unwrap()
    };
    assert_eq!(send(&app, post(None)).await.status, StatusCode::FORBIDDEN);
    assert_eq!(send(&app, post(Some("forged"))).await.status, StatusCode::FORBIDDEN);
    let other = login(&auth, "alice").await;
    let other_token = {
        let response = axum::response::IntoResponse::into_response(other.into_cookies());
        Reply { status: response.status(), headers: response.headers().clone(), body: Value::Null }
            .cookie("__Host-csrf")
            .unwrap()
    };
    assert_eq!(send(&app, post(Some(&other_token))).await.status, StatusCode::FORBIDDEN, "bound to the session");
    assert_eq!(send(&app, post(Some(&token))).await.status, StatusCode::OK);
    let get = with_cookies("GET", "/me", Some(tokens.access_token()), None).body(Body::empty()).unwrap();
    assert_eq!(send(&app, get).await.status, StatusCode::OK, "safe methods need no token");
    let bearer = Request::post("/me").header(header::AUTHORIZATION, format!("Bearer {}", tokens.access_token()));
    assert_eq!(send(&app, bearer.body(Body::empty()).unwrap()).await.status, StatusCode::OK, "bearer is exempt");

    // On the refresh path, a missing token is refused before any rotation.
    let expired = expired_access(&auth, &tokens);
    let refresh_post = |value: Option<&str>| {
        let mut request = with_cookies("POST", "/me", Some(&expired), Some(tokens.refresh_token()));
        if let Some(value) = value {
            request = request.header("x-csrf-token", value);
        }
        request.body(Body::empty()).unwrap()
    };
    let refused = send(&app, refresh_post(None)).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.set_cookies().is_empty());
    let served = send(&app, refresh_post(Some(&token))).await;
    assert_eq!(served.status, StatusCode::OK);
    assert_eq!(served.cookie("__Host-csrf").as_deref(), Some(token.as_str()), "same session, same token");
    assert_eq!(served.cookie("__Host-refresh").unwrap().split('.').nth(2), Some("1"), "one rotation");

    let logout = with_cookies("POST", "/logout", Some(tokens.access_token()), None).header("x-csrf-token", &token);
    let reply = send(&app, logout.body(Body::empty()).unwrap()).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(reply.cookie("__Host-csrf").as_deref(), Some(""), "logout clears it too");
}

#[tokio::test]
async fn access_tokens_never_outlive_their_session() {
    let auth = builder()
        .access_ttl(Duration::from_secs(900))
        .refresh_ttl(Duration::from_secs(60))
        .refresh_absolute_ttl(Duration::from_secs(120))
        .build()
        .unwrap();
    let tokens = login(&auth, "alice").await;
    assert!(tokens.expires_in() <= 60, "capped by the idle lifetime: {}", tokens.expires_in());
    let claims = jsonwebtoken::dangerous::insecure_decode::<Value>(tokens.access_token()).unwrap().claims;
    assert!(claims["exp"].as_u64().unwrap() <= claims["iat"].as_u64().unwrap() + 60);
}

/// A claims type that denies unknown fields works: it sees the custom claims
/// only, not the registered ones the payload shares. `Claims` is `Clone`.
#[tokio::test]
async fn claims_types_may_deny_unknown_fields_and_claims_clone() {
    #[derive(Clone, Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Strict {
        name: String,
        #[serde(default)]
        team: Option<String>,
    }
    async fn strict(claims: Claims<Strict>) -> Json<Value> {
        let copy = claims.clone();
        Json(json!({ "name": copy.name, "team": claims.team, "sub": claims.sub() }))
    }
    let auth = builder().build().unwrap();
    let app = Router::new().route("/strict", get(strict)).route_layer(auth.clone());
    let tokens = login(&auth, "alice").await;
    let request = Request::get("/strict").header(header::AUTHORIZATION, format!("Bearer {}", tokens.access_token()));
    let reply = send(&app, request.body(Body::empty()).unwrap()).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body, json!({ "name": "ALICE", "team": null, "sub": "alice" }));
}

/// A handler that needs claims on a route without the layer is a wiring
/// mistake: a 500 that says so, never a 401 that blames the client.
#[tokio::test]
async fn claims_without_the_layer_are_a_500_that_names_the_fix() {
    let auth = builder().build().unwrap();
    let unlayered = Router::new().route("/me", get(me));
    let tokens = login(&auth, "alice").await;
    let request = Request::get("/me").header(header::AUTHORIZATION, format!("Bearer {}", tokens.access_token()));
    let reply = send(&unlayered, request.body(Body::empty()).unwrap()).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.body["error"], "server_error");
    assert!(reply.body["error_description"].as_str().unwrap().contains(".route_layer(auth)"), "{:?}", reply.body);
}

/// Optional routes tell the guest cases apart: no credentials, a bearer
/// token refused (the rejection, so clients refresh), a dead cookie session
/// (a guest, cookies cleared), a store outage during the refresh (a guest,
/// cookies kept).
#[tokio::test]
async fn optional_routes_tell_guests_apart() {
    use tower_jwt_auth::Authentication;
    async fn hello(auth: Authentication) -> String {
        match auth {
            Authentication::Authenticated(claims) => format!("user {}", claims.sub()),
            Authentication::Guest => "guest".into(),
            Authentication::SessionEnded => "ended".into(),
            Authentication::Unavailable => "unavailable".into(),
            Authentication::Refused(error) => format!("refused: {error}"),
            _ => "other".into(),
        }
    }
    async fn maybe(claims: Option<Claims>) -> String {
        claims.map_or_else(|| "guest".to_owned(), |c| c.sub().to_owned())
    }
    let store = tower_jwt_auth::store::MemoryStore::new();
    let auth = builder().store(store).build().unwrap();
    let app = Router::new().route("/hello", get(hello)).route("/maybe", get(maybe)).route_layer(auth.optional());
    let text = |reply: &Reply| reply.body.as_str().map(str::to_owned);
    let get = |uri: &str| Request::get(uri.to_owned());

    let guest = app.clone().oneshot(get("/hello").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(&guest.into_body().collect().await.unwrap().to_bytes()[..], b"guest");
    let tokens = login(&auth, "alice").await;
    let bearer = |token: &str| get("/hello").header(header::AUTHORIZATION, format!("Bearer {token}"));
    let reply = app.clone().oneshot(bearer(tokens.access_token()).body(Body::empty()).unwrap()).await.unwrap();
    let body = reply.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"user alice");
    let refused = app.clone().oneshot(bearer("a.b.c").body(Body::empty()).unwrap()).await.unwrap();
    let body = refused.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).starts_with("refused: "), "{body:?}");
    // `Option<Claims>` answers the rejection for a refused bearer token.
    let maybe_refused =
        send(&app, get("/maybe").header(header::AUTHORIZATION, "Bearer a.b.c").body(Body::empty()).unwrap()).await;
    assert_eq!(maybe_refused.status, StatusCode::UNAUTHORIZED);

    // A dead cookie session: revoked elsewhere.
    let expired = expired_access(&auth, &tokens);
    auth.revoke_session("alice", tokens.session_id()).await.unwrap();
    let ended = send(
        &app,
        with_cookies("GET", "/maybe", Some(&expired), Some(tokens.refresh_token())).body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!((ended.status, text(&ended)), (StatusCode::OK, None));
    let cleared = ended.set_cookies();
    assert!(cleared.iter().any(|(n, v)| n == "__Host-refresh" && v.is_empty()), "{cleared:?}");
    assert_eq!(ended.headers[header::CACHE_CONTROL], "private, no-store");
}

/// A failed transparent refresh clears the cookies with `Cache-Control:
/// private, no-store`, also under a custom rejection renderer.
#[tokio::test]
async fn cleared_cookies_are_private_no_store_even_with_a_custom_renderer() {
    use axum::response::IntoResponse;
    let auth = builder().on_rejection(|error: AuthError| (error.status(), "custom").into_response()).build().unwrap();
    let app = app(&auth);
    let tokens = login(&auth, "alice").await;
    let expired = expired_access(&auth, &tokens);
    auth.revoke_session("alice", tokens.session_id()).await.unwrap();
    let reply = send(
        &app,
        with_cookies("GET", "/me", Some(&expired), Some(tokens.refresh_token())).body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.set_cookies().len(), 2, "both cleared");
    assert_eq!(reply.headers[header::CACHE_CONTROL], "private, no-store");
}
