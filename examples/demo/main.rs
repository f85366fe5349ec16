//! The runnable showcase of tower-jwt-auth, and the server the black-box
//! tests drive: login in cookie and token modes, transparent refresh,
//! logout (one, all, all others), device management, scope and step-up
//! guards, role changes that apply at once, and the public keys. Its
//! settings and routes are documented in `examples/README.md`.
//!
//! ```text
//! cargo run --example demo                      # embedded store, port 3000
//! REDIS_URL=redis://127.0.0.1:6379 JWT_SECRET=… PORT=8080 cargo run --example demo
//! METRICS_PORT=9000 cargo run --example demo    # Prometheus text at http://127.0.0.1:9000/metrics
//! ```

mod metrics;
mod settings;
mod users;

use std::{net::SocketAddr, time::Duration};

use axum::{
    Json, Router,
    extract::{FromRef, Path, State, rejection::JsonRejection},
    http::StatusCode,
    response::{Html, IntoResponse, Response},
    routing::{delete, get, post, put},
};
use serde::Deserialize;
use serde_json::{Value, json};
use tower_jwt_auth::{
    AuthError, Claims, ClientInfo, JwtAuth, LoggedOut, Session, SessionInfo,
    bff::Gateway,
    guard::{RequireRecentLogin, RequireScope},
    store::RedisStore,
};
use users::{DemoClaims, Role, Users};

/// Everything the handlers share.
#[derive(Clone)]
struct App {
    auth: JwtAuth,
    users: Users,
}

impl FromRef<App> for JwtAuth {
    fn from_ref(app: &App) -> JwtAuth {
        app.auth.clone()
    }
}

#[derive(Deserialize, Default, PartialEq, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Mode {
    #[default]
    Cookie,
    Token,
}

impl Mode {
    fn render(self, tokens: tower_jwt_auth::Tokens) -> Response {
        match self {
            Mode::Cookie => tokens.into_cookies().into_response(),
            Mode::Token => tokens.into_token_response().into_response(),
        }
    }
}

#[derive(Deserialize)]
struct LoginRequest {
    username: String,
    password: String,
    #[serde(default)]
    mode: Mode,
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>, expected: &'static str) -> Result<T, AuthError> {
    body.map(|Json(body)| body).map_err(|_| AuthError::InvalidRequest(expected))
}

async fn login(
    State(app): State<App>,
    client: ClientInfo,
    body: Result<Json<LoginRequest>, JsonRejection>,
) -> Result<Response, AuthError> {
    let request = json_body(body, "Expected JSON {\"username\", \"password\"}")?;
    let claims = app.users.claims(&request.username, Some(&request.password)).ok_or(AuthError::InvalidCredentials)?;
    let tokens = app.auth.login(&request.username, &claims, client).await?;
    Ok(request.mode.render(tokens))
}

/// The demo page: plain HTML and a little JavaScript calling the routes
/// below with same-origin `fetch`.
async fn index() -> Html<&'static str> {
    Html(include_str!("index.html"))
}

async fn me(claims: Claims<DemoClaims>) -> Json<Claims<DemoClaims>> {
    Json(claims)
}

async fn hello(claims: Option<Claims>) -> Json<Value> {
    Json(json!({ "user": claims.as_ref().map(Claims::sub) }))
}

async fn logout(session: Session) -> Result<LoggedOut, AuthError> {
    session.logout().await
}

async fn logout_all(session: Session) -> Result<LoggedOut, AuthError> {
    session.logout_all().await
}

async fn logout_others(session: Session) -> Result<StatusCode, AuthError> {
    session.logout_others().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn sessions(session: Session) -> Result<Json<Vec<SessionInfo>>, AuthError> {
    Ok(Json(session.list().await?))
}

async fn revoke(session: Session, Path(id): Path<String>) -> Result<StatusCode, AuthError> {
    session.revoke(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct ReauthRequest {
    password: String,
    #[serde(default)]
    mode: Mode,
}

/// Step-up: the password again makes the current session fresh.
async fn reauth(
    State(app): State<App>,
    session: Session,
    body: Result<Json<ReauthRequest>, JsonRejection>,
) -> Result<Response, AuthError> {
    let request = json_body(body, "Expected JSON {\"password\"}")?;
    app.users.claims(session.user_id(), Some(&request.password)).ok_or(AuthError::InvalidCredentials)?;
    Ok(request.mode.render(session.reauthenticate().await?))
}

async fn sensitive(claims: Claims) -> Json<Value> {
    Json(json!({ "sub": claims.sub(), "auth_time": claims.auth_time() }))
}

#[derive(Deserialize)]
struct RoleRequest {
    role: Role,
}

/// Changes a user's role; their older access tokens are stale at once on
/// every instance, and their next refresh here carries the new role.
async fn set_role(
    State(app): State<App>,
    Path(user): Path<String>,
    body: Result<Json<RoleRequest>, JsonRejection>,
) -> Result<StatusCode, AuthError> {
    let request = json_body(body, "Expected JSON {\"role\": \"admin\" | \"user\"}")?;
    if !app.users.set_role(&user, request.role) {
        return Err(AuthError::NotFound("No such user"));
    }
    app.auth.invalidate_access_tokens(&user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The demo's whole application; with a gateway, `/api/…` is forwarded to it.
fn app(app: App, fresh: Duration, gateway: Option<Gateway>) -> Router {
    let auth = app.auth.clone();
    let mut protected = Router::new()
        .route("/me", get(me))
        .route("/logout", post(logout))
        .route("/logout-all", post(logout_all))
        .route("/logout-others", post(logout_others))
        .route("/sessions", get(sessions))
        .route("/sessions/{id}", delete(revoke))
        .route("/reauth", post(reauth))
        .route("/admin", get(me).route_layer(RequireScope::all(["admin"])))
        .route("/users/{user}/role", put(set_role).route_layer(RequireScope::all(["admin"])))
        .route("/sensitive", get(sensitive).route_layer(RequireRecentLogin::within(fresh)));
    if let Some(gateway) = gateway {
        protected = protected.nest_service("/api", gateway);
    }
    let protected = protected.route_layer(auth.clone());
    let optional = Router::new().route("/hello", get(hello)).route_layer(auth.optional());
    Router::new()
        .route("/", get(index))
        .route("/login", post(login))
        .merge(protected)
        .merge(optional)
        .merge(auth.refresh_router())
        .merge(auth.jwks_router())
        .with_state(app)
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

    // Before the layer is built: it registers its series with this recorder.
    let metrics_port: Option<u16> = match settings::var("METRICS_PORT") {
        Some(port) => Some(port.parse().map_err(|_| format!("METRICS_PORT={port}: expected a port number"))?),
        None => None,
    };
    let metrics = metrics_port.map(|_| metrics::install()).transpose()?;

    let secret = match settings::var("JWT_SECRET") {
        Some(secret) => secret.into_bytes(),
        None => {
            tracing::warn!("JWT_SECRET is not set: using a random one; sessions end when the demo stops");
            let mut secret = vec![0; 32];
            getrandom::fill(&mut secret).map_err(|e| e.to_string())?;
            secret
        }
    };
    let users = Users::new();
    let reload = users.clone();
    let mut builder = JwtAuth::builder()
        .signing_key(settings::signing_key(&secret)?)
        .refresh_token_secret(settings::derive(&secret, "refresh-token"))
        .issuer("tower-jwt-auth-demo")
        // One clock issues and verifies, so no skew to tolerate: an expired
        // token is refused (or refreshed) the second it expires.
        .leeway(Duration::ZERO)
        .access_ttl(settings::secs("ACCESS_TTL_SECS", 900))
        .refresh_ttl(settings::secs("REFRESH_TTL_SECS", 14 * 24 * 3600))
        .refresh_absolute_ttl(settings::secs("REFRESH_ABSOLUTE_TTL_SECS", 30 * 24 * 3600))
        .grace(settings::secs("GRACE_SECS", 10))
        .max_sessions_per_user(settings::var("MAX_SESSIONS").and_then(|v| v.parse().ok()).unwrap_or(10))
        // Roles change at run time: every refresh re-reads them.
        .reload_claims(move |user: String| {
            let claims = reload.claims(&user, None);
            async move { Ok::<_, std::convert::Infallible>(claims) }
        });
    if let Some(audience) = settings::var("AUDIENCE") {
        builder = builder.audience(audience);
    }
    if let Some(proxies) = settings::var("TRUSTED_PROXIES") {
        builder = builder.trusted_proxies(proxies.split(','));
    }
    if let Some(origin) = settings::var("PUBLIC_ORIGIN") {
        builder = builder.public_origin(origin);
    }
    if let Some(url) = settings::var("REDIS_URL") {
        let mut redis = RedisStore::builder(&url);
        if let Some(ca) = settings::var("REDIS_CA_FILE") {
            redis = redis.ca_certificate_pem(std::fs::read(&ca).map_err(|e| format!("REDIS_CA_FILE={ca}: {e}"))?);
        }
        builder = builder.store(redis.connect().await?);
        tracing::info!(url = %settings::redacted(&url), "sessions live in Redis");
    } else {
        tracing::info!("sessions live in the embedded in-memory store (set REDIS_URL for Redis)");
    }
    let auth = builder.build()?;
    let fresh = settings::secs("FRESH_SECS", 300);
    // Revocations first: from the first request, a revoked session's token is refused.
    if !auth.revocations_loaded(settings::secs("REVOCATIONS_WAIT_SECS", 10)).await {
        tracing::warn!("revocations not loaded yet: token-bearing requests answer 503 until they are");
    }

    if let (Some(handle), Some(port)) = (metrics, metrics_port) {
        metrics::serve(handle, port).await?;
    }
    let port: u16 = settings::var("PORT").and_then(|v| v.parse().ok()).unwrap_or(3000);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let gateway = match settings::var("UPSTREAM_URL") {
        Some(upstream) => {
            let audience = settings::var("UPSTREAM_AUDIENCE").unwrap_or_else(|| "api".into());
            tracing::info!(%upstream, %audience, "API calls under /api/ are forwarded upstream");
            Some(Gateway::builder(upstream).audience(audience).build()?)
        }
        None => None,
    };
    let router = app(App { auth, users }, fresh, gateway);
    axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>()).await?;
    Ok(())
}
