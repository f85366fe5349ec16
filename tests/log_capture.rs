//! Everything the crate (and what it drives) logs at `trace`, through a
//! whole login → refresh → theft → logout scenario in process, with the
//! memory store and with Redis: no token, refresh-token tag or secret appears
//! in any line, and the security events are there at `warn` with the session
//! id and the cause.

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    Json, Router,
    body::Body,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use http::{Request, header};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tower_jwt_auth::{AuthError, Claims, ClientInfo, JwtAuth, JwtAuthBuilder, LoggedOut, Session, SigningKey};
use tracing_subscriber::fmt::{MakeWriter, format::FmtSpan};

mod support;

use support::in_process::{bearer, send};

const SIGNING_SECRET: &str = "signing-secret-that-must-never-be-logged";
const REFRESH_SECRET: &str = "refresh-secret-that-must-never-be-logged";

/// A writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Self;

    fn make_writer(&'a self) -> Self {
        self.clone()
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[derive(Clone, Serialize, Deserialize)]
struct Profile {
    name: String,
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
}

async fn login(State(auth): State<JwtAuth>, Json(form): Json<LoginForm>) -> Result<Response, AuthError> {
    let tokens = auth.login(&form.username, &Profile { name: form.username.clone() }, ClientInfo::default()).await?;
    Ok(tokens.into_token_response().into_response())
}

async fn me(claims: Claims<Profile>) -> Json<Value> {
    Json(json!({ "sub": claims.sub(), "sid": claims.sid(), "name": claims.name }))
}

async fn logout(session: Session) -> Result<LoggedOut, AuthError> {
    session.logout().await
}

fn app(auth: &JwtAuth) -> Router {
    let protected = Router::new().route("/me", get(me)).route("/logout", post(logout)).route_layer(auth.clone());
    Router::new().route("/login", post(login)).merge(protected).merge(auth.refresh_router()).with_state(auth.clone())
}

fn json_post(uri: &str, body: Value) -> Request<Body> {
    Request::post(uri).header(header::CONTENT_TYPE, "application/json").body(Body::from(body.to_string())).unwrap()
}

fn builder() -> JwtAuthBuilder {
    JwtAuth::builder()
        .signing_key(SigningKey::hs256("k", SIGNING_SECRET.as_bytes()).unwrap())
        .refresh_token_secret(REFRESH_SECRET)
        // A reuse is theft at once: no wait for a grace window to pass.
        .grace(Duration::ZERO)
}

fn now_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()
}

/// Login → request → refresh → theft → logout; returns every token issued
/// and the sessions whose revocation must be logged (theft, logout).
async fn scenario(auth: JwtAuth) -> (Vec<String>, [String; 2]) {
    let app = app(&auth);
    let mut tokens = Vec::new();
    let (status, login) = send(&app, json_post("/login", json!({ "username": "alice" }))).await;
    assert_eq!(status, StatusCode::OK, "{login}");
    let (access, refresh) = (login["access_token"].as_str().unwrap(), login["refresh_token"].as_str().unwrap());
    tokens.extend([access.to_owned(), refresh.to_owned()]);
    let (status, me) = send(&app, bearer("GET", "/me", access)).await;
    assert_eq!(status, StatusCode::OK);
    let stolen_sid = me["sid"].as_str().unwrap().to_owned();

    let (status, refreshed) = send(&app, json_post("/auth/refresh", json!({ "refresh_token": refresh }))).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    tokens.extend(["access_token", "refresh_token"].map(|k| refreshed[k].as_str().unwrap().to_owned()));
    let rotated_at = now_ms();
    // Outside the (empty) grace window, and past the single-flight reuse.
    let ceiling = std::time::Instant::now() + Duration::from_secs(5);
    while now_ms() <= rotated_at + 1 && std::time::Instant::now() < ceiling {
        tokio::task::yield_now().await;
    }
    let (status, theft) = send(&app, json_post("/auth/refresh", json!({ "refresh_token": refresh }))).await;
    assert_eq!((status, &theft["error"]), (StatusCode::BAD_REQUEST, &json!("invalid_grant")), "{theft}");
    let (status, _) = send(&app, bearer("GET", "/me", refreshed["access_token"].as_str().unwrap())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the stolen session's tokens are refused");

    let (_, second) = send(&app, json_post("/login", json!({ "username": "alice" }))).await;
    let access = second["access_token"].as_str().unwrap();
    tokens.extend([access.to_owned(), second["refresh_token"].as_str().unwrap().to_owned()]);
    let (_, me) = send(&app, bearer("GET", "/me", access)).await;
    let logged_out_sid = me["sid"].as_str().unwrap().to_owned();
    let (status, _) = send(&app, bearer("POST", "/logout", access)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    (tokens, [stolen_sid, logged_out_sid])
}

/// What must never be logged: each token whole, its signature or tag, and
/// the secrets in the encodings a careless log line would use.
fn forbidden(tokens: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for token in tokens {
        out.push(token.clone());
        // The JWT signature, or the refresh token's tag.
        out.push(token.rsplit('.').next().unwrap().to_owned());
    }
    for secret in [SIGNING_SECRET, REFRESH_SECRET] {
        out.push(secret.to_owned());
        out.push(STANDARD.encode(secret));
        out.push(URL_SAFE_NO_PAD.encode(secret));
        out.push(secret.bytes().map(|b| format!("{b:02x}")).collect());
        out.push(format!("{:?}", secret.as_bytes()));
    }
    assert!(out.iter().all(|s| s.len() >= 16), "every needle is specific");
    out
}

/// Runs `scenario` with everything captured at `trace`.
fn captured_scenario(make: impl AsyncFnOnce() -> JwtAuth) -> (String, Vec<String>, [String; 2]) {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(FmtSpan::FULL)
        .with_ansi(false)
        .with_writer(captured.clone())
        .finish();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (tokens, sids) =
        tracing::subscriber::with_default(subscriber, || runtime.block_on(async { scenario(make().await).await }));
    drop(runtime);
    (captured.text(), tokens, sids)
}

fn check(text: &str, tokens: &[String], [stolen, logged_out]: &[String; 2]) {
    assert!(text.lines().count() > 50, "the capture caught the crate's trace output:\n{text}");
    for needle in forbidden(tokens) {
        if let Some(line) = text.lines().find(|line| line.contains(&needle)) {
            panic!("a secret ({}…) was logged:\n{line}", &needle[..8]);
        }
    }
    let warned = |sid: &str, cause: &str| {
        text.lines().any(|line| {
            line.contains(" WARN ")
                && line.contains("security: session revoked")
                && line.contains(&format!("sid={sid}"))
                && line.contains(&format!("cause=\"{cause}\""))
        })
    };
    assert!(warned(stolen, "theft"), "the theft is a warning with the sid and cause:\n{text}");
    assert!(warned(logged_out, "logout"), "the logout is a warning with the sid and cause:\n{text}");
    for span in ["tower_jwt_auth.request", "tower_jwt_auth.refresh", "tower_jwt_auth.store"] {
        assert!(text.contains(span), "span {span} is there");
    }
    assert!(text.contains(r#"outcome="rotated""#) && text.contains(r#"outcome="reuse_revoked""#));
}

#[test]
fn nothing_secret_is_logged_with_the_memory_store() {
    let (text, tokens, sids) = captured_scenario(async || builder().build().unwrap());
    check(&text, &tokens, &sids);
}

#[test]
fn nothing_secret_is_logged_with_redis() {
    use support::redis_server::RedisServer;
    use tower_jwt_auth::store::RedisStore;

    let redis = RedisServer::start();
    let url = redis.url();
    let (text, tokens, sids) = captured_scenario(async || {
        let auth = builder().store(RedisStore::connect(&url).await.unwrap()).build().unwrap();
        assert!(auth.revocations_loaded(Duration::from_secs(10)).await);
        auth
    });
    check(&text, &tokens, &sids);
}
