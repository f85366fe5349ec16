//! The layer's hot path in process, for counting instructions: one router
//! (bare, a do-nothing `Router::layer`, or `JwtAuth` with a cached HS256
//! token, with or without a metrics recorder) called `N` times with the same
//! request, each future polled once with a no-op waker (no runtime, no I/O).
//! Run under callgrind collecting only the measured loop (`measure`), with
//! two values of `N`: the difference of the totals divided by the
//! difference of `N` is the exact cost of one request.
//!
//! ```text
//! cargo bench -p tower-jwt-auth-benches --bench hot_path --no-run
//! for n in 2000 12000; do
//!   valgrind --tool=callgrind --toggle-collect='hot_path::measure*' --callgrind-out-file=cg.$n \
//!     target/release/deps/hot_path-<hash> jwt 100 $n
//! done
//! ```
//!
//! Arguments: `bare` | `noop` | `jwt` | `jwt+metrics` | `jwt+guard` |
//! `jwt+guard-handler` | `jwt+guard-extractor` | `verify-only` | `jwt-outer` |
//! `jwt-no-extractor`, then the number
//! of warm-up requests and of measured requests (both only change totals).
//! With `HOT_PATH_TIME=1`, prints the best wall time per request of 9
//! rounds instead (noisy on a shared machine; compare runs side by side).

use std::{
    convert::Infallible,
    future::Future,
    pin::pin,
    task::{Context, Poll, Waker},
};

use axum::{Json, Router, body::Body, routing::get};
use http::{Request, header};
use serde::{Deserialize, Serialize};
use tower::Service;
use tower_jwt_auth::{Claims, JwtAuth, SigningKey, define_guard, guard::Guarded};

#[derive(Clone, Serialize, Deserialize)]
struct AppClaims {
    role: String,
    scope: String,
}

#[derive(Serialize)]
struct Hello {
    message: &'static str,
}

async fn hello_bare() -> Json<Hello> {
    Json(Hello { message: "hello" })
}

async fn hello_jwt(claims: Claims<AppClaims>) -> Json<Hello> {
    std::hint::black_box(&claims.role);
    Json(Hello { message: "hello" })
}

define_guard!(Admin = tower_jwt_auth::guard::RequireScope::all(["admin"]));

async fn hello_guarded(_: Guarded<Admin>, claims: Claims<AppClaims>) -> Json<Hello> {
    std::hint::black_box(&claims.role);
    Json(Hello { message: "hello" })
}

fn build() -> JwtAuth {
    JwtAuth::builder()
        .signing_key(SigningKey::hs256("load-HS256", &[7; 32]).expect("a valid key"))
        .issuer("https://bench.example")
        .audience("bench")
        .build()
        .expect("the bench configuration builds")
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let variant = args.next().unwrap_or_else(|| "jwt".into());
    let warmup: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1);
    let n: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(10_000);
    // Every variant gets the same requests (bare ignores the header): 32
    // users' tokens in turn, as http_load's 32 connections send them.
    let signer = build();
    let authorizations: Vec<String> = (0..32)
        .map(|i| {
            let token = signer
                .test_token(&format!("user-{i}"))
                .claims(&AppClaims { role: "admin".into(), scope: "profile admin".into() })
                .sign();
            format!("Bearer {token}")
        })
        .collect();
    if variant == "jwt-outer" {
        // The layer around the whole router (it runs before routing) rather
        // than `Router::layer` (around each route).
        let service = tower::Layer::layer(&build(), Router::new().route("/hello", get(hello_jwt)));
        return run(service, &variant, &authorizations, warmup, n);
    }
    let router = match variant.as_str() {
        "bare" => Router::new().route("/hello", get(hello_bare)),
        "noop" => {
            let noop = tower::util::MapRequestLayer::new(|request: axum::extract::Request| request);
            Router::new().route("/hello", get(hello_bare)).layer(noop)
        }
        // The layer alone: its handler takes no extractor.
        "jwt-no-extractor" => Router::new().route("/hello", get(hello_bare)).layer(build()),
        "jwt" | "jwt+metrics" => {
            let auth = if variant == "jwt" {
                build()
            } else {
                // Leaked: it must outlive the layer's handles.
                let prometheus =
                    Box::leak(Box::new(metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder()));
                metrics::with_local_recorder(prometheus, build)
            };
            Router::new().route("/hello", get(hello_jwt)).layer(auth)
        }
        // The same route behind a scope guard (DESIGN §7: guarded ÷ unguarded).
        "jwt+guard" => Router::new()
            .route("/hello", get(hello_jwt).route_layer(tower_jwt_auth::guard::RequireScope::all(["admin"])))
            .layer(build()),
        // The guard on the handler itself: no route_layer boxing.
        "jwt+guard-handler" => {
            use axum::handler::Handler;
            let guarded = hello_jwt.layer(tower_jwt_auth::guard::RequireScope::all(["admin"]));
            Router::new().route("/hello", get(guarded)).layer(build())
        }
        // The guard as an extractor of the handler: no layer at all.
        "jwt+guard-extractor" => Router::new().route("/hello", get(hello_guarded)).layer(build()),
        // A verify-only layer with the same key as a verifying key.
        "verify-only" => {
            let verifier = JwtAuth::resource_server()
                .verifying_key(SigningKey::hs256("load-HS256", &[7; 32]).expect("a valid key").verifying_key().clone())
                .issuer("https://bench.example")
                .audience("bench")
                .build()
                .expect("the verify-only configuration builds");
            Router::new().route("/hello", get(hello_jwt)).layer(verifier)
        }
        other => panic!(
            "unknown variant {other}: bare, noop, jwt, jwt+metrics, jwt+guard, jwt+guard-handler, jwt+guard-extractor, verify-only, jwt-outer or jwt-no-extractor"
        ),
    };
    run(router, &variant, &authorizations, warmup, n);
}

fn run<S: App>(mut app: S, variant: &str, authorization: &[String], warmup: usize, n: usize) {
    requests(&mut app, authorization, warmup);
    if std::env::var_os("HOT_PATH_TIME").is_some() {
        // Wall time instead: the cheapest of 9 rounds of `n` requests.
        let best = (0..9)
            .map(|_| {
                let started = std::time::Instant::now();
                measure(&mut app, authorization, n);
                started.elapsed().as_nanos() as f64 / n as f64
            })
            .fold(f64::INFINITY, f64::min);
        println!("{variant}: {best:.0} ns/request (best of 9 rounds of {n})");
        return;
    }
    measure(&mut app, authorization, n);
    println!("{variant}: {} requests", warmup + n);
}

/// What the bench drives: a `Router`, or the layer wrapped around one.
trait App: Service<Request<Body>, Response = axum::response::Response, Error = Infallible> {}
impl<S: Service<Request<Body>, Response = axum::response::Response, Error = Infallible>> App for S {}

/// The measured requests (what callgrind collects).
#[inline(never)]
fn measure<S: App>(app: &mut S, authorization: &[String], n: usize) {
    requests(app, authorization, n);
}

fn requests<S: App>(app: &mut S, authorization: &[String], n: usize) {
    let mut cx = Context::from_waker(Waker::noop());
    for i in 0..n {
        let request = Request::get("/hello")
            .header(header::HOST, "127.0.0.1")
            .header(header::AUTHORIZATION, &authorization[i % authorization.len()])
            .body(Body::empty())
            .expect("a valid request");
        let future = pin!(app.call(request));
        match future.poll(&mut cx) {
            Poll::Ready(Ok(response)) => assert_eq!(std::hint::black_box(response).status(), 200),
            Poll::Ready(Err(never)) => match never {},
            Poll::Pending => panic!("the hot path never waits"),
        }
    }
}
