//! The BFF gateway end to end: a real gateway (axum on a free port, behind
//! the `JwtAuth` layer) forwarding to a real upstream that records what it
//! receives. Header stripping, the upstream token, `Set-Cookie` dropping,
//! CSRF, failures (400, 500, 502, 504), streaming, and parallel tabs
//! refreshing through the proxy.

mod support;

use std::{collections::HashSet, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::{Query, State},
    response::{IntoResponse, Response},
    routing::post,
};
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use jsonwebtoken::{DecodingKey, Validation, decode, decode_header};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use support::upstream::{Upstream, closed_url, pattern};
use tokio::{net::TcpListener, task::JoinHandle};
use tower::ServiceExt;
use tower_jwt_auth::{
    Algorithm, AuthError, ClientInfo, JwtAuth, JwtAuthBuilder, SigningKey,
    bff::{Gateway, GatewayBuilder},
};

const AUDIENCE: &str = "orders-api";
const ISSUER: &str = "https://bff.test";
/// A generous ceiling for anything that must happen (the tests never wait on time otherwise).
const CEILING: Duration = Duration::from_secs(10);

fn auth_builder() -> JwtAuthBuilder {
    let pem = std::fs::read("tests/keys/ed25519.pem").expect("tests/keys/ed25519.pem");
    JwtAuth::builder()
        .signing_key(SigningKey::from_pem(Algorithm::EdDSA, "ed-1", &pem).unwrap())
        .issuer(ISSUER)
        // Not the upstream's: an upstream token is no session credential here.
        .audience("bff")
        .leeway(Duration::ZERO)
}

fn gateway_builder(upstream: &str) -> GatewayBuilder {
    Gateway::builder(upstream).audience(AUDIENCE).allow_set_cookie(["theme"])
}

#[derive(Deserialize)]
struct LoginForm {
    user: String,
    scope: String,
    #[serde(default)]
    token: bool,
}

/// `POST /login?user=…&scope=…[&token=true]`: cookies, or a token response.
async fn login(State(auth): State<JwtAuth>, Query(form): Query<LoginForm>) -> Result<Response, AuthError> {
    let tokens = auth.login(&form.user, &json!({ "scope": form.scope }), ClientInfo::default()).await?;
    Ok(if form.token { tokens.into_token_response().into_response() } else { tokens.into_cookies().into_response() })
}

/// The gateway at `/api` behind the layer, and a login route.
fn app(auth: &JwtAuth, gateway: Gateway) -> Router {
    Router::new()
        .nest_service("/api", gateway)
        .route_layer(auth.clone())
        .route("/login", post(login))
        .with_state(auth.clone())
}

/// An HTTP server on a free loopback port, stopped on drop.
struct Server {
    base: String,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(app: Router) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Server { base, task }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An upstream, and a gateway to it behind a layer.
struct Setup {
    auth: JwtAuth,
    upstream: Upstream,
    server: Server,
    client: reqwest::Client,
}

impl Setup {
    async fn new() -> Setup {
        Setup::with(auth_builder(), gateway_builder).await
    }

    /// `gateway` gets the upstream's URL.
    async fn with(auth: JwtAuthBuilder, gateway: impl FnOnce(&str) -> GatewayBuilder) -> Setup {
        let auth = auth.build().unwrap();
        let upstream = Upstream::start().await;
        let gateway = gateway(&upstream.base).build().unwrap();
        let server = Server::start(app(&auth, gateway)).await;
        let client = reqwest::Client::builder().timeout(CEILING).build().unwrap();
        Setup { auth, upstream, server, client }
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{path}", self.server.base))
    }

    /// Logs in through the login route; answers the `Cookie` header a
    /// browser would then send.
    async fn login_cookies(&self, user: &str, scope: &str) -> String {
        let response =
            self.request(Method::POST, "/login").query(&[("user", user), ("scope", scope)]).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let cookies: Vec<String> =
            set_cookies(response.headers()).into_iter().map(|(n, v)| format!("{n}={v}")).collect();
        assert_eq!(cookies.len(), 2, "{cookies:?}");
        cookies.join("; ")
    }

    /// Logs in in token mode; answers the access token.
    async fn login_bearer(&self, user: &str, scope: &str) -> String {
        let response = self
            .request(Method::POST, "/login")
            .query(&[("user", user), ("scope", scope), ("token", "true")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }
}

/// `(name, value)` of each `Set-Cookie`, attributes dropped.
fn set_cookies(headers: &reqwest::header::HeaderMap) -> Vec<(String, String)> {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|value| {
            let pair = value.to_str().unwrap().split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            (name.trim().to_owned(), value.to_owned())
        })
        .collect()
}

/// The JSON body of a gateway failure, with its status checked.
async fn failure(response: reqwest::Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], code, "{body}");
    assert!(body["error_description"].is_string(), "{body}");
    body
}

/// The upstream token's claims, verified with the public key from the
/// layer's JWKS (as an API server would).
fn verify_upstream_token(auth: &JwtAuth, authorization: &str) -> Value {
    let jwt = authorization.strip_prefix("Bearer ").expect("a Bearer token upstream");
    let header = decode_header(jwt).unwrap();
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let jwks = auth.jwks();
    let jwk = jwks.find(header.kid.as_deref().expect("a kid")).expect("the kid is in the JWKS");
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&[AUDIENCE]);
    validation.set_issuer(&[ISSUER]);
    validation.set_required_spec_claims(&["exp", "iat", "sub", "aud", "iss"]);
    let claims = decode::<Value>(jwt, &DecodingKey::from_jwk(jwk).unwrap(), &validation).unwrap().claims;
    let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert!((1..=60).contains(&lifetime), "lifetime {lifetime}");
    claims
}

#[tokio::test]
async fn forwards_method_path_query_body_and_end_to_end_headers_only() {
    let setup = Setup::new().await;
    let cookies = setup.login_cookies("alice", "profile admin").await;
    let response = setup
        .request(Method::PUT, "/api/orders/42?expand=items&x=%20y")
        .header(header::COOKIE, format!("{cookies}; theme=dark"))
        .header(header::CONNECTION, "keep-alive, X-Hop-Named")
        .header("x-hop-named", "secret")
        .header("keep-alive", "timeout=5")
        .header(header::PROXY_AUTHORIZATION, "Basic dXNlcjpwdw==")
        .header(header::TE, "trailers")
        .header(header::TRAILER, "x-checksum")
        .header(header::UPGRADE, "websocket")
        .header(header::FORWARDED, "for=203.0.113.9")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-request-id", "req-1")
        .header(header::ACCEPT, "application/json")
        .header(header::CONTENT_TYPE, "text/plain")
        .body("hello upstream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-upstream"], "echo");
    assert_eq!(response.headers()[header::CACHE_CONTROL], "private", "added when the upstream says nothing");
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["path"], "/orders/42");

    let received = setup.upstream.only();
    assert_eq!(received.method, "PUT");
    assert_eq!(received.path, "/orders/42");
    assert_eq!(received.query.as_deref(), Some("expand=items&x=%20y"));
    assert_eq!(received.body, b"hello upstream");
    for name in ["cookie", "x-hop-named", "keep-alive", "proxy-authorization", "te", "trailer", "upgrade"] {
        assert!(received.header(name).is_none(), "{name} reached the upstream: {:?}", received.headers);
    }
    assert_eq!(received.header("x-request-id"), Some("req-1"));
    // Forwarding headers pass, the gateway's view appended when it knows the peer.
    assert_eq!(received.header("forwarded"), Some("for=203.0.113.9"));
    assert!(received.header("x-forwarded-for").is_some_and(|v| v.starts_with("203.0.113.9")), "{:?}", received.headers);
    assert_eq!(received.header("accept"), Some("application/json"));
    assert_eq!(received.header("content-type"), Some("text/plain"));
    assert_eq!(received.header("host"), Some(setup.upstream.addr.to_string().as_str()));

    let claims = verify_upstream_token(&setup.auth, received.header("authorization").unwrap());
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["scope"], "profile admin");
    assert_eq!(claims["aud"], AUDIENCE);
    assert!(claims["sid"].as_str().is_some_and(|sid| !sid.is_empty()));
    assert!(claims["jti"].is_string());
}

#[tokio::test]
async fn the_browsers_bearer_token_is_replaced_and_cross_site_is_fine_for_it() {
    let setup = Setup::new().await;
    let access = setup.login_bearer("bob", "orders:write").await;
    let response = setup
        .request(Method::POST, "/api/orders")
        .bearer_auth(&access)
        .header(header::COOKIE, "theme=dark")
        .header("sec-fetch-site", "cross-site")
        .header(header::ORIGIN, "https://elsewhere.example")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "bearer requests are not exposed to CSRF");
    let received = setup.upstream.only();
    let authorization = received.header("authorization").unwrap();
    assert_ne!(authorization, format!("Bearer {access}"), "the browser's token stays at the gateway");
    assert!(received.header("cookie").is_none());
    let claims = verify_upstream_token(&setup.auth, authorization);
    assert_eq!((claims["sub"].as_str(), claims["scope"].as_str()), (Some("bob"), Some("orders:write")));
}

#[tokio::test]
async fn one_upstream_token_per_session_reused_across_requests() {
    let setup = Setup::new().await;
    let alice = setup.login_cookies("alice", "profile").await;
    let alice_again = setup.login_cookies("alice", "profile").await;
    for cookies in [&alice, &alice, &alice_again, &alice] {
        let response = setup.request(Method::GET, "/api/me").header(header::COOKIE, cookies).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let tokens: Vec<String> =
        setup.upstream.requests().iter().map(|r| r.header("authorization").unwrap().to_owned()).collect();
    assert_eq!(tokens[0], tokens[1], "the same session reuses its upstream token");
    assert_eq!(tokens[0], tokens[3]);
    assert_ne!(tokens[0], tokens[2], "another session (same user) gets its own");
    let sid = |token: &str| verify_upstream_token(&setup.auth, token)["sid"].clone();
    assert_ne!(sid(&tokens[0]), sid(&tokens[2]));
}

#[tokio::test]
async fn upstream_cookies_are_dropped_unless_allowed() {
    let setup = Setup::new().await;
    let cookies = setup.login_cookies("alice", "profile").await;
    let response = setup.request(Method::GET, "/api/set-cookie").header(header::COOKIE, &cookies).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        set_cookies(response.headers()),
        [("theme".to_owned(), "dark".to_owned())],
        "only the allow-listed cookie passes; never one named like the session's"
    );
    let headers = response.headers();
    assert!(headers.get("x-upstream-hop").is_none() && headers.get("keep-alive").is_none(), "{headers:?}");
    assert_eq!(headers["x-upstream-kept"], "1");
    assert_eq!(headers[header::CACHE_CONTROL], "max-age=5", "the upstream's own caching is kept");

    // Without an allow-list, none passes; the session's own cookie names
    // never do, even allow-listed.
    for allowed in [&[][..], &["__Host-access", "session"]] {
        let setup = Setup::with(auth_builder(), |base| {
            Gateway::builder(base).audience(AUDIENCE).allow_set_cookie(allowed.iter().copied())
        })
        .await;
        let cookies = setup.login_cookies("alice", "profile").await;
        let response =
            setup.request(Method::GET, "/api/set-cookie").header(header::COOKIE, &cookies).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let names: Vec<String> = set_cookies(response.headers()).into_iter().map(|(name, _)| name).collect();
        let expected: &[&str] = if allowed.is_empty() { &[] } else { &["session"] };
        assert_eq!(names, expected, "allowed: {allowed:?}");
    }
}

#[tokio::test]
async fn cross_site_cookie_requests_with_unsafe_methods_never_reach_the_upstream() {
    let setup = Setup::new().await;
    let cookies = setup.login_cookies("alice", "profile").await;
    let propfind = Method::from_bytes(b"PROPFIND").unwrap();
    for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE, propfind] {
        for (name, value) in [("sec-fetch-site", "cross-site"), ("origin", "https://evil.example")] {
            let response = setup
                .request(method.clone(), "/api/orders/1")
                .header(header::COOKIE, &cookies)
                .header(name, value)
                .body("{}")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{method} with {name}: {value}");
        }
    }
    assert!(setup.upstream.requests().is_empty(), "{:#?}", setup.upstream.requests());

    // Same-origin unsafe requests and cross-site safe ones pass.
    let response = setup
        .request(Method::POST, "/api/orders")
        .header(header::COOKIE, &cookies)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = setup
        .request(Method::GET, "/api/orders")
        .header(header::COOKIE, &cookies)
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(setup.upstream.requests().len(), 2);
}

#[tokio::test]
async fn unauthenticated_requests_never_reach_the_upstream() {
    let setup = Setup::new().await;
    let response = setup.request(Method::GET, "/api/orders").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let forged = setup.auth.test_token("mallory").signed_with(&SigningKey::hs256("ed-1", &[1; 32]).unwrap()).sign();
    let response = setup.request(Method::GET, "/api/orders").bearer_auth(forged).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // In optional mode too: the gateway answers the layer's rejection.
    let auth = auth_builder().build().unwrap();
    let upstream = Upstream::start().await;
    let gateway = gateway_builder(&upstream.base).build().unwrap();
    let app = Router::new().nest_service("/api", gateway).route_layer(auth.optional());
    let response = app.oneshot(Request::get("/api/orders").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers()[header::WWW_AUTHENTICATE].to_str().unwrap().starts_with("Bearer"));
    assert!(upstream.requests().is_empty() && setup.upstream.requests().is_empty());
}

#[tokio::test]
async fn an_unreachable_upstream_is_502_json() {
    let setup = Setup::with(auth_builder(), |_| gateway_builder(&closed_url())).await;
    let cookies = setup.login_cookies("alice", "profile").await;
    let response = setup.request(Method::GET, "/api/orders").header(header::COOKIE, &cookies).send().await.unwrap();
    failure(response, StatusCode::BAD_GATEWAY, "bad_gateway").await;
}

#[tokio::test]
async fn a_slow_upstream_is_504_json() {
    let setup = Setup::with(auth_builder(), |base| gateway_builder(base).timeout(Duration::from_millis(300))).await;
    let cookies = setup.login_cookies("alice", "profile").await;
    let response = setup.request(Method::GET, "/api/slow").header(header::COOKIE, &cookies).send().await.unwrap();
    failure(response, StatusCode::GATEWAY_TIMEOUT, "gateway_timeout").await;
    assert_eq!(setup.upstream.only().path, "/slow");
}

#[tokio::test]
async fn without_the_layer_the_gateway_refuses_with_500_json() {
    let upstream = Upstream::start().await;
    let gateway = gateway_builder(&upstream.base).build().unwrap();
    let server = Server::start(Router::new().nest_service("/api", gateway)).await;
    let client = reqwest::Client::new();
    for _ in 0..2 {
        let response = client.get(format!("{}/api/orders", server.base)).send().await.unwrap();
        let body = failure(response, StatusCode::INTERNAL_SERVER_ERROR, "server_error").await;
        assert!(body["error_description"].as_str().unwrap().contains("JwtAuth"), "{body}");
    }
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn paths_that_climb_out_of_the_upstream_base_are_400() {
    // In process: an HTTP client would normalize some of these paths itself.
    let auth = auth_builder().build().unwrap();
    let upstream = Upstream::start().await;
    let gateway = Gateway::builder(format!("{}/v1", upstream.base)).audience(AUDIENCE).build().unwrap();
    let app = app(&auth, gateway);
    let access = auth.test_token("alice").sign();
    for path in
        ["/api/../admin", "/api/%2e%2e/admin", "/api/.%2E/admin", "/api/..%2fadmin", "/api/%252e%252e/x", "/api/..;/x"]
    {
        let request = Request::get(path).header(header::AUTHORIZATION, format!("Bearer {access}"));
        let response = app.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        let body: Value = serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(body["error"], "invalid_request");
    }
    assert!(upstream.requests().is_empty(), "{:#?}", upstream.requests());

    let request = Request::get("/api/items/a%2Fb?q=1").header(header::AUTHORIZATION, format!("Bearer {access}"));
    let response = app.oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let received = upstream.only();
    assert_eq!((received.path.as_str(), received.query.as_deref()), ("/v1/items/a%2Fb", Some("q=1")));
}

#[tokio::test]
async fn a_request_body_failing_midway_is_400_not_502() {
    let auth = auth_builder().build().unwrap();
    let upstream = Upstream::start().await;
    let app = app(&auth, gateway_builder(&upstream.base).build().unwrap());
    let chunks: Vec<Result<&'static [u8], std::io::Error>> =
        vec![Ok(b"first;"), Err(std::io::Error::other("the browser went away"))];
    let request = Request::post("/api/upload")
        .header(header::AUTHORIZATION, format!("Bearer {}", auth.test_token("alice").sign()))
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["error"], "invalid_request", "{body}");
}

#[tokio::test]
async fn a_mebibyte_streams_through_intact_both_ways() {
    let setup = Setup::new().await;
    let cookies = setup.login_cookies("alice", "profile").await;
    let upload = pattern(1024 * 1024);
    let response = setup
        .request(Method::POST, "/api/upload")
        .header(header::COOKIE, &cookies)
        .body(upload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(setup.upstream.only().body == upload, "the upstream received the body intact");

    let response =
        setup.request(Method::GET, "/api/large?bytes=1048576").header(header::COOKIE, &cookies).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.bytes().await.unwrap() == upload, "the browser received the body intact");
}

#[tokio::test]
async fn bodies_stream_through_without_being_buffered() {
    let setup = Setup::new().await;
    let cookies = setup.login_cookies("alice", "profile").await;

    // Response: the first chunk reaches the browser while the upstream still
    // holds back the rest.
    let mut response = tokio::time::timeout(
        CEILING,
        setup.request(Method::GET, "/api/gated-response").header(header::COOKIE, &cookies).send(),
    )
    .await
    .expect("the response headers arrive before the upstream's body ends")
    .unwrap();
    let first = tokio::time::timeout(CEILING, response.chunk()).await.expect("the first chunk arrives alone");
    assert_eq!(first.unwrap().as_deref(), Some(&b"first;"[..]));
    setup.upstream.release();
    assert_eq!(response.bytes().await.unwrap(), "rest");

    // Request: the upstream reads the first chunk while the browser still
    // holds back the rest.
    let (mut sender, receiver) = futures::channel::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let request = setup
        .request(Method::POST, "/api/gated-request")
        .header(header::COOKIE, &cookies)
        .body(reqwest::Body::wrap_stream(receiver))
        .send();
    let request = tokio::spawn(request);
    use futures::SinkExt;
    sender.send(Ok(b"first;".to_vec())).await.unwrap();
    tokio::time::timeout(CEILING, setup.upstream.first_chunk_seen())
        .await
        .expect("the upstream sees the first chunk before the browser sends the rest");
    sender.send(Ok(b"rest".to_vec())).await.unwrap();
    drop(sender);
    let response = request.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "10");
    let received = setup.upstream.requests();
    assert_eq!(received.last().unwrap().body, b"first;rest");
}

#[tokio::test]
async fn twenty_tabs_with_an_expired_access_cookie_converge_through_the_gateway() {
    let setup = Setup::new().await;
    let tokens = setup.auth.login("alice", &json!({ "scope": "profile" }), ClientInfo::default()).await.unwrap();
    // The access cookie a browser still holds a minute after it expired.
    let expired = setup
        .auth
        .test_token("alice")
        .session(tokens.session_id())
        .claims(&json!({ "scope": "profile" }))
        .expires_in(-60)
        .sign();
    let cookies = format!("__Host-access={expired}; __Host-refresh={}", tokens.refresh_token());
    let tabs = (0..20).map(|i| {
        let request = setup.request(Method::GET, &format!("/api/tab/{i}")).header(header::COOKIE, cookies.clone());
        tokio::spawn(async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            let cookies = set_cookies(response.headers());
            let echo: Value = response.json().await.unwrap();
            (status, cookies, echo)
        })
    });
    let mut refresh_cookies = HashSet::new();
    let mut access_cookies = HashSet::new();
    for tab in futures::future::join_all(tabs).await {
        let (status, cookies, echo) = tab.unwrap();
        assert_eq!(status, StatusCode::OK, "{echo}");
        assert!(echo["path"].as_str().unwrap().starts_with("/tab/"), "the upstream answered: {echo}");
        for (name, value) in cookies {
            match name.as_str() {
                "__Host-refresh" => refresh_cookies.insert(value),
                "__Host-access" => access_cookies.insert(value),
                other => panic!("unexpected cookie {other}"),
            };
        }
    }
    assert_eq!(refresh_cookies.len(), 1, "every tab got the same successor: {refresh_cookies:?}");
    assert_eq!(access_cookies.len(), 1, "and the same access token");
    assert!(!refresh_cookies.contains(tokens.refresh_token()));

    let received = setup.upstream.requests();
    assert_eq!(received.len(), 20);
    for request in &received {
        let claims = verify_upstream_token(&setup.auth, request.header("authorization").unwrap());
        assert_eq!(claims["sid"], tokens.session_id());
        assert_eq!(claims["scope"], "profile");
    }
}

#[test]
fn settings_out_of_range_are_refused() {
    let build = |builder: GatewayBuilder| builder.build().map(|_| ()).map_err(|e| e.to_string());
    assert!(build(Gateway::builder("http://127.0.0.1:1")).unwrap_err().contains("audience"));
    for builder in [
        gateway_builder("https://api.example"),
        gateway_builder("http://api.example/?x=1"),
        gateway_builder("http://127.0.0.1:1").token_ttl(Duration::from_secs(61)),
        gateway_builder("http://127.0.0.1:1").token_ttl(Duration::ZERO),
        gateway_builder("http://127.0.0.1:1").timeout(Duration::ZERO),
        gateway_builder("http://127.0.0.1:1").allow_set_cookie(["bad name"]),
        gateway_builder("http://127.0.0.1:1").forward_claims(["sub"]),
        gateway_builder("http://127.0.0.1:1").forward_claims(["scope"]),
    ] {
        assert!(build(builder).is_err());
    }
    assert!(build(gateway_builder("http://127.0.0.1:1/v1/").forward_claims(["tenant"])).is_ok());
}
