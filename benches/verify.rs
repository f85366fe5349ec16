//! What verifying an access token costs, measured where users pay for it:
//! a request with `Authorization: Bearer` going through [`JwtAuth`].
//!
//! ```text
//! cargo bench -p tower-jwt-auth-benches --bench verify                 # everything (about 2 minutes)
//! cargo bench -p tower-jwt-auth-benches --bench verify -- uncached     # one group (criterion filter)
//! ```
//!
//! Groups:
//! - `uncached/<alg>`: `cache_capacity(0)`, so every request checks the
//!   signature and claims (DESIGN §3 "Verification cost").
//! - `cached/<alg>`: the default cache, so every request after the first is a
//!   cache hit plus the revocation lookup.
//! - `layer_hot_path/*`: the same request through a trivial service with and
//!   without the layer, and through an axum `Router` whose handler extracts
//!   `Claims` with and without the layer: the layer's whole per-request cost.
//!   `router/noop_layer` is the bare router behind a do-nothing layer: what
//!   axum charges for any `Router::layer`.
//!
//! Futures are polled once with a no-op waker: the trivial services are
//! ready at once, so no runtime overhead is measured (a future that is not
//! ready panics rather than spinning).

use std::{
    convert::Infallible,
    future::{Future, ready},
    hint::black_box,
    pin::pin,
    task::{Context, Poll, Waker},
    time::Duration,
};

use axum::{Json, Router, body::Body, routing::get};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{Request, Response, StatusCode, header};
use serde::{Deserialize, Serialize};
use tower::{Layer, Service, service_fn, util::MapRequestLayer};
use tower_jwt_auth::{Algorithm, Claims, JwtAuth, SigningKey};

/// Every algorithm DESIGN §3 cares about, with its test key.
const ALGORITHMS: &[(&str, Algorithm)] = &[
    ("HS256", Algorithm::HS256),
    ("HS384", Algorithm::HS384),
    ("HS512", Algorithm::HS512),
    ("RS256", Algorithm::RS256),
    ("PS256", Algorithm::PS256),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("EdDSA", Algorithm::EdDSA),
];

fn signing_key(alg: Algorithm) -> SigningKey {
    let pem = |file: &str| {
        let path = format!("{}/../tests/keys/{file}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
    };
    let kid = format!("bench-{alg:?}");
    match alg {
        Algorithm::HS256 => SigningKey::hmac(alg, kid, &[7; 32]),
        Algorithm::HS384 => SigningKey::hmac(alg, kid, &[7; 48]),
        Algorithm::HS512 => SigningKey::hmac(alg, kid, &[7; 64]),
        Algorithm::RS256 | Algorithm::PS256 => SigningKey::from_pem(alg, kid, &pem("rsa.pem")),
        Algorithm::ES256 => SigningKey::from_pem(alg, kid, &pem("p256.pem")),
        Algorithm::ES384 => SigningKey::from_pem(alg, kid, &pem("p384.pem")),
        Algorithm::EdDSA => SigningKey::from_pem(alg, kid, &pem("ed25519.pem")),
        other => panic!("no bench key for {other:?}"),
    }
    .expect("the test keys are valid")
}

fn auth(alg: Algorithm, cache_capacity: usize) -> JwtAuth {
    JwtAuth::builder()
        .signing_key(signing_key(alg))
        .issuer("https://bench.example")
        .audience("bench")
        .cache_capacity(cache_capacity)
        .build()
        .expect("the bench configuration builds")
}

/// Custom claims as a typical application has them.
#[derive(Clone, Serialize, Deserialize)]
struct AppClaims {
    role: String,
}

fn token(auth: &JwtAuth) -> String {
    auth.test_token("user-42").claims(&AppClaims { role: "admin".into() }).sign()
}

fn request(bearer: &str) -> Request<Body> {
    Request::get("/hello").header(header::AUTHORIZATION, bearer).body(Body::empty()).expect("a valid request")
}

/// Calls `service` once and polls the response future once.
fn call_now<S>(service: &mut S, request: Request<Body>) -> S::Response
where
    S: Service<Request<Body>, Error = Infallible>,
{
    let mut cx = Context::from_waker(Waker::noop());
    match service.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("the bench service is always ready"),
    }
    match pin!(service.call(request)).poll(&mut cx) {
        Poll::Ready(Ok(response)) => response,
        _ => panic!("the bench service answers at once"),
    }
}

fn trivial() -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send> + Clone + Send
{
    service_fn(|_: Request<Body>| ready(Ok::<_, Infallible>(Response::new(Body::empty()))))
}

#[derive(Serialize)]
struct Hello {
    message: &'static str,
}

async fn hello_bare() -> Json<Hello> {
    Json(Hello { message: "hello" })
}

async fn hello_claims(claims: Claims<AppClaims>) -> Json<Hello> {
    black_box(&claims.role);
    Json(Hello { message: "hello" })
}

/// Benchmarks one request with `bearer` through `service`, after checking it
/// answers 200 (a bench of rejections would measure the wrong thing).
fn bench_service<S>(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    mut service: S,
    bearer: &str,
) where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    let first = call_now(&mut service, request(bearer));
    assert_eq!(first.status(), StatusCode::OK, "{name}: the bench request must be accepted");
    c.bench_function(name, |b| {
        b.iter_batched(|| request(bearer), |req| call_now(&mut service, req), BatchSize::SmallInput)
    });
}

fn verify(c: &mut Criterion) {
    for (group, capacity) in [("uncached", 0), ("cached", 10_000)] {
        let mut g = c.benchmark_group(group);
        for &(name, alg) in ALGORITHMS {
            let auth = auth(alg, capacity);
            let bearer = format!("Bearer {}", token(&auth));
            bench_service(&mut g, name, auth.layer(trivial()), &bearer);
        }
        g.finish();
    }
}

fn layer_hot_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("layer_hot_path");
    let hs256 = auth(Algorithm::HS256, 10_000);
    let es256 = auth(Algorithm::ES256, 10_000);
    let hs_bearer = format!("Bearer {}", token(&hs256));
    let es_bearer = format!("Bearer {}", token(&es256));

    bench_service(&mut g, "service/bare", trivial(), &hs_bearer);
    bench_service(&mut g, "service/jwt_hs256", hs256.layer(trivial()), &hs_bearer);
    bench_service(&mut g, "service/jwt_es256", es256.layer(trivial()), &es_bearer);

    let bare: Router = Router::new().route("/hello", get(hello_bare));
    bench_service(&mut g, "router/bare", bare, &hs_bearer);
    // What any `Router::layer` costs in axum, whatever the layer does.
    let noop: Router =
        Router::new().route("/hello", get(hello_bare)).layer(MapRequestLayer::new(|request: Request<Body>| request));
    bench_service(&mut g, "router/noop_layer", noop, &hs_bearer);
    let jwt: Router = Router::new().route("/hello", get(hello_claims)).layer(hs256.clone());
    bench_service(&mut g, "router/jwt_hs256_claims", jwt, &hs_bearer);
    let jwt: Router = Router::new().route("/hello", get(hello_claims)).layer(es256.clone());
    bench_service(&mut g, "router/jwt_es256_claims", jwt, &es_bearer);
    g.finish();
}

fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3))
}

criterion_group! { name = benches; config = config(); targets = verify, layer_hot_path }
criterion_main!(benches);
