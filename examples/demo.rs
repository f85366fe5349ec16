//! The runnable showcase of tower-jwt-auth, and the server the black-box
//! tests drive (see `examples/README.md`): login in cookie and token modes,
//! transparent refresh, logout, logout everywhere, and device management.
//!
//! ```text
//! cargo run --example demo                      # embedded store, port 3000
//! REDIS_URL=redis://127.0.0.1:6379 PORT=8080 cargo run --example demo
//! ```

use std::{env, net::SocketAddr, time::Duration};

use axum::{
    Json, Router,
    extract::{Path, State, rejection::JsonRejection},
    http::StatusCode,
    response::{Html, IntoResponse, Response},
    routing::{delete, get, post},
};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tower_jwt_auth::{
    AuthError, Claims, ClientInfo, JwtAuth, LoggedOut, Session, SessionInfo, SigningKey, store::RedisStore,
};

/// What the demo puts in its access tokens besides the registered claims.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct DemoClaims {
    name: String,
}

const USERS: &[(&str, &str, &str)] = &[("alice", "alice-pw", "Alice"), ("bob", "bob-pw", "Bob")];

#[derive(Deserialize)]
struct LoginRequest {
    username: String,
    password: String,
    #[serde(default)]
    mode: LoginMode,
}

#[derive(Deserialize, Default, PartialEq)]
#[serde(rename_all = "lowercase")]
enum LoginMode {
    #[default]
    Cookie,
    Token,
}

async fn login(
    State(auth): State<JwtAuth>,
    client: ClientInfo,
    body: Result<Json<LoginRequest>, JsonRejection>,
) -> Result<Response, AuthError> {
    let Json(request) = body.map_err(|_| AuthError::InvalidRequest("Expected JSON {\"username\", \"password\"}"))?;
    let (user, _, name) = USERS
        .iter()
        .find(|(user, password, _)| *user == request.username && *password == request.password)
        .ok_or(AuthError::InvalidCredentials)?;
    let tokens = auth.login(user, &DemoClaims { name: (*name).to_owned() }, client).await?;
    Ok(match request.mode {
        LoginMode::Cookie => tokens.into_cookies().into_response(),
        LoginMode::Token => tokens.into_token_response().into_response(),
    })
}

/// The demo page: log in, "who am I", sessions, logout; plain HTML and a
/// little JavaScript calling the routes below with same-origin `fetch`.
async fn index() -> Html<&'static str> {
    Html(include_str!("demo/index.html"))
}

async fn me(claims: Claims<DemoClaims>) -> Json<Claims<DemoClaims>> {
    Json(claims)
}

async fn logout(session: Session) -> Result<LoggedOut, AuthError> {
    session.logout().await
}

async fn logout_all(session: Session) -> Result<LoggedOut, AuthError> {
    session.logout_all().await
}

async fn sessions(session: Session) -> Result<Json<Vec<SessionInfo>>, AuthError> {
    Ok(Json(session.list().await?))
}

async fn revoke(session: Session, Path(id): Path<String>) -> Result<StatusCode, AuthError> {
    session.revoke(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The demo's whole application.
fn app(auth: JwtAuth) -> Router {
    let protected = Router::new()
        .route("/me", get(me))
        .route("/logout", post(logout))
        .route("/logout-all", post(logout_all))
        .route("/sessions", get(sessions))
        .route("/sessions/{id}", delete(revoke))
        .route_layer(auth.clone());
    Router::new()
        .route("/", get(index))
        .route("/login", post(login))
        .merge(protected)
        .merge(auth.refresh_router())
        .with_state(auth)
}

/// `HMAC(secret, label)`: independent keys from one secret, so instances
/// started with the same `JWT_SECRET` agree.
fn derive(secret: &[u8], label: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(label.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn env_secs(name: &str, default: u64) -> Duration {
    Duration::from_secs(env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Logs go to stderr: stdout carries only the `listening on` line.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,tower_jwt_auth=info".into()),
        )
        .init();

    let secret = match env::var("JWT_SECRET") {
        Ok(secret) => secret.into_bytes(),
        Err(_) => {
            tracing::warn!("JWT_SECRET is not set: using a random one; sessions end when the demo stops");
            let mut secret = vec![0; 32];
            getrandom::fill(&mut secret).map_err(|e| e.to_string())?;
            secret
        }
    };
    let max_sessions: u32 = env::var("MAX_SESSIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let mut builder = JwtAuth::builder()
        .signing_key(SigningKey::hs256("demo-1", &derive(&secret, "access-token"))?)
        .refresh_token_secret(derive(&secret, "refresh-token"))
        .issuer("tower-jwt-auth-demo")
        // One clock issues and verifies, so no skew to tolerate: an expired
        // token is refused (or refreshed) the second it expires.
        .leeway(Duration::ZERO)
        .access_ttl(env_secs("ACCESS_TTL_SECS", 900))
        .refresh_ttl(env_secs("REFRESH_TTL_SECS", 14 * 24 * 3600))
        .refresh_absolute_ttl(env_secs("REFRESH_ABSOLUTE_TTL_SECS", 30 * 24 * 3600))
        .grace(env_secs("GRACE_SECS", 10))
        .max_sessions_per_user(max_sessions)
        .realm("demo");
    if let Ok(url) = env::var("REDIS_URL") {
        builder = builder.store(RedisStore::connect(&url).await?);
        tracing::info!(%url, "sessions live in Redis");
    } else {
        tracing::info!("sessions live in the embedded in-memory store (set REDIS_URL for Redis)");
    }
    let auth = builder.build()?;

    let port: u16 = env::var("PORT").ok().and_then(|v| v.parse().ok()).unwrap_or(3000);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app(auth).into_make_service_with_connect_info::<SocketAddr>()).await?;
    Ok(())
}
