//! A second service that only verifies the demo's access tokens: keys from
//! the demo's JWKS (fetched in the background), revocations from the demo's
//! Redis (read-only), no signing key, no session store, no cookies. Its
//! settings are documented in `examples/README.md`.
//!
//! ```text
//! JWT_ALG=EdDSA JWT_SECRET=s cargo run --example demo &
//! JWKS_URL=http://127.0.0.1:3000/.well-known/jwks.json cargo run --example api --features remote-keys
//! ```

use std::{env, time::Duration};

use axum::{Json, Router, routing::get};
use tower_jwt_auth::{Claims, JwtAuth, guard::RequireScope, remote_keys::RemoteKeys, store::RedisStore};

async fn whoami(claims: Claims) -> Json<Claims> {
    Json(claims)
}

fn var(name: &str) -> Option<String> {
    env::var(name).ok().filter(|v| !v.trim().is_empty())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,tower_jwt_auth=info".into()),
        )
        .init();

    let jwks_url = var("JWKS_URL").ok_or("JWKS_URL is required (e.g. http://127.0.0.1:3000/.well-known/jwks.json)")?;
    let cooldown = Duration::from_secs(var("JWKS_COOLDOWN_SECS").and_then(|v| v.parse().ok()).unwrap_or(30));
    // Serves at once: until the keys arrive, protected routes answer 503.
    let keys = RemoteKeys::jwks_url(jwks_url).cooldown(cooldown).build()?;
    let mut builder = JwtAuth::resource_server()
        .remote_keys(keys)
        .issuer(var("ISSUER").unwrap_or_else(|| "tower-jwt-auth-demo".into()))
        .leeway(Duration::ZERO);
    if let Some(audience) = var("AUDIENCE") {
        builder = builder.audience(audience);
    }
    if let Some(url) = var("REDIS_URL") {
        builder = builder.revocations_from(RedisStore::connect(&url).await?);
    }
    let verifier = builder.build()?;
    // Revocations first: from the first request, a revoked session's token is refused.
    if !verifier.revocations_loaded(Duration::from_secs(10)).await {
        tracing::warn!("revocations not loaded yet: token-bearing requests answer 503 until they are");
    }

    let app = Router::new()
        .route("/whoami", get(whoami))
        .route("/admin-only", get(whoami).route_layer(RequireScope::all(["admin"])))
        .layer(verifier);
    let port: u16 = var("PORT").and_then(|v| v.parse().ok()).unwrap_or(3001);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
