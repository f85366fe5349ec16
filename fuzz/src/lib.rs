//! What the fuzz targets share: one `JwtAuth` (memory store) behind a small
//! router, a runtime to drive it, and the checks every response must pass.
//!
//! Everything goes through the crate's public API, as a client would reach it.

use std::sync::LazyLock;

use axum::{
    Json, Router,
    body::{Body, Bytes},
    routing::{get, post},
};
use http::{HeaderMap, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde::Deserialize;
use tokio::runtime::Runtime;
use tower::ServiceExt;
use tower_jwt_auth::{Algorithm, Claims, ClientInfo, JwtAuth, SigningKey, VerifyingKey};

/// The HS256 secret of the signing key `k1`.
pub const HS_SECRET: &[u8] = b"fuzz-secret-of-at-least-thirty-two-bytes";
/// The refresh-token HMAC secret.
pub const REFRESH_SECRET: &[u8] = b"fuzz-refresh-secret-at-least-32-bytes!!!";
pub const ED_PRIVATE: &[u8] = include_bytes!("../../tests/keys/ed25519.pem");
pub const ED_PUBLIC: &[u8] = include_bytes!("../../tests/keys/ed25519.pub.pem");
pub const P256_PRIVATE: &[u8] = include_bytes!("../../tests/keys/p256.pem");
pub const P256_PUBLIC: &[u8] = include_bytes!("../../tests/keys/p256.pub.pem");
pub const ISSUER: &str = "https://issuer.fuzz";
pub const AUDIENCE: &str = "app";
/// Leeway configured on both layers.
pub const LEEWAY_SECS: u64 = 5;

/// Custom claims a handler asks for (so the claims decoder is reached too).
#[derive(Clone, Debug, Deserialize)]
pub struct Custom {
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub level: Option<u8>,
    #[serde(default)]
    pub tags: Vec<String>,
}

pub struct Harness {
    pub runtime: Runtime,
    /// Requires `iss` and `aud`; keys `k1` (HS256), `ed` (EdDSA), `p256` (ES256).
    pub strict: Router,
    /// Same keys, no `iss`/`aud` requirement, double-submit CSRF tokens on.
    pub plain: Router,
    /// A genuine refresh token of a session of `alice` on `strict`.
    pub refresh_token: String,
    /// A genuine access token of that session.
    pub access_token: String,
    /// A genuine refresh token and access token of a session on `plain`.
    pub plain_refresh_token: String,
    pub plain_access_token: String,
}

fn build(issuer_and_audience: bool, double_submit: bool) -> JwtAuth {
    let mut builder = JwtAuth::builder()
        .signing_key(SigningKey::hs256("k1", HS_SECRET).expect("HS256 key"))
        .verifying_key(VerifyingKey::from_public_pem(Algorithm::EdDSA, "ed", ED_PUBLIC).expect("Ed25519 key"))
        .verifying_key(VerifyingKey::from_public_pem(Algorithm::ES256, "p256", P256_PUBLIC).expect("P-256 key"))
        .refresh_token_secret(REFRESH_SECRET)
        .leeway(std::time::Duration::from_secs(LEEWAY_SECS));
    if issuer_and_audience {
        builder = builder.issuer(ISSUER).audience(AUDIENCE);
    }
    if double_submit {
        builder = builder.csrf_double_submit();
    }
    builder.build().expect("the fuzz configuration builds")
}

fn router(auth: &JwtAuth) -> Router {
    async fn me(claims: Claims<Custom>) -> Json<serde_json::Value> {
        Json(serde_json::json!({ "sub": claims.sub(), "role": claims.role, "level": claims.level }))
    }
    async fn any(claims: Claims) -> String {
        claims.sid().to_owned()
    }
    async fn raw(claims: Claims<serde_json::Value>) -> Json<serde_json::Value> {
        Json(claims.into_inner())
    }
    async fn optional(claims: Option<Claims<Custom>>) -> String {
        claims.map_or_else(|| "anonymous".to_owned(), |c| c.sub().to_owned())
    }
    let protected = Router::new()
        .route("/me", get(me))
        .route("/any", get(any))
        .route("/raw", get(raw))
        .route("/write", post(any))
        .layer(auth.clone());
    let optional = Router::new().route("/opt", get(optional).post(optional)).layer(auth.optional());
    protected.merge(optional).merge(auth.refresh_router())
}

static HARNESS: LazyLock<Harness> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let strict = build(true, false);
    let plain = build(false, true);
    let login = |auth: &JwtAuth| {
        runtime
            .block_on(auth.login("alice", &serde_json::json!({ "role": "admin" }), ClientInfo::default()))
            .expect("login")
    };
    let (tokens, plain_tokens) = (login(&strict), login(&plain));
    Harness {
        refresh_token: tokens.refresh_token().to_owned(),
        access_token: tokens.access_token().to_owned(),
        plain_refresh_token: plain_tokens.refresh_token().to_owned(),
        plain_access_token: plain_tokens.access_token().to_owned(),
        strict: router(&strict),
        plain: router(&plain),
        runtime,
    }
});

/// The shared harness, built on first use.
pub fn harness() -> &'static Harness {
    &HARNESS
}

/// `FUZZ_PRINT_STATUS=1` prints every status to stderr (to see which
/// answers a corpus reaches: `-runs=0` replays it).
static PRINT_STATUS: LazyLock<bool> = LazyLock::new(|| std::env::var_os("FUZZ_PRINT_STATUS").is_some());

/// A response, collected.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Harness {
    /// Sends `request` through `router` and collects the response.
    pub fn send(&self, router: &Router, request: Request<Body>) -> Reply {
        self.runtime.block_on(async {
            let response = router.clone().oneshot(request).await.expect("axum routers are infallible");
            let (parts, body) = response.into_parts();
            let body = body.collect().await.expect("in-memory bodies do not fail").to_bytes();
            Reply { status: parts.status, headers: parts.headers, body }
        })
    }
}

impl Reply {
    /// Never a 5xx (the memory store cannot be unavailable), only 2xx or 4xx;
    /// a rejection never echoes what was presented.
    pub fn check(&self, presented: &[u8]) {
        if *PRINT_STATUS {
            eprintln!("status {}", self.status.as_u16());
        }
        assert!(
            self.status.is_success() || self.status.is_client_error(),
            "status {} for a client input; body {:?}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        if !self.status.is_success() {
            assert_no_echo(presented, &self.body);
            if let Some(challenge) = self.headers.get(header::WWW_AUTHENTICATE) {
                assert_no_echo(presented, challenge.as_bytes());
            }
        }
    }
}

/// No 16-byte window of `presented` that holds a digit appears in `text`.
///
/// Rejection texts are static English without digits, so a window with a
/// digit found in one can only have come from the input. Windows start every
/// 4 bytes (cheap enough per execution; any echo of 19+ bytes is caught).
pub fn assert_no_echo(presented: &[u8], text: &[u8]) {
    const WINDOW: usize = 16;
    if presented.len() < WINDOW || text.len() < WINDOW {
        return;
    }
    for start in (0..=presented.len() - WINDOW).step_by(4) {
        let window = &presented[start..start + WINDOW];
        if window.iter().any(u8::is_ascii_digit) {
            assert!(
                !text.windows(WINDOW).any(|w| w == window),
                "the response echoes the input: {:?} in {:?}",
                String::from_utf8_lossy(window),
                String::from_utf8_lossy(text)
            );
        }
    }
}

/// A request builder for `method path` with the given headers (invalid header
/// values are skipped, as hyper would refuse them before the layer).
pub fn request(method: &str, path: &str, headers: &[(&'static str, &[u8])], body: Vec<u8>) -> Request<Body> {
    let mut request = Request::builder().method(method).uri(path).body(Body::from(body)).expect("valid request");
    for (name, value) in headers {
        if let Ok(value) = http::HeaderValue::from_bytes(value) {
            request.headers_mut().append(http::HeaderName::from_static(name), value);
        }
    }
    request
}
