//! HTTP throughput of the same handler behind `JwtAuth` versus bare axum
//! (DESIGN §4: a valid access token, any algorithm, revocation on, must keep
//! at least 0.95 × bare axum's requests/s).
//!
//! ```text
//! cargo bench -p tower-jwt-auth-benches --bench http_load                  # 5 cycles of 3 s rounds, about 2 minutes
//! cargo bench -p tower-jwt-auth-benches --bench http_load -- --quick       # 2 cycles of 1 s rounds, about 20 s
//! HTTP_LOAD_QUICK=1 cargo bench -p tower-jwt-auth-benches --bench http_load               # the same as --quick
//! HTTP_LOAD_SECS=5 HTTP_LOAD_CYCLES=7 HTTP_LOAD_CONNS=64 cargo bench -p tower-jwt-auth-benches --bench http_load
//! HTTP_LOAD_ONLY=bare/HS256 cargo bench -p tower-jwt-auth-benches --bench http_load -- --quick   # one server alone, for profiling
//! ```
//!
//! One process: a server thread (a current-thread Tokio runtime) serves ten
//! axum servers on free 127.0.0.1 ports with the same handler: bare, and the
//! router behind `JwtAuth` with an HS256, ES256, RS256 or EdDSA key (the
//! handler extracts `Claims`; revocation is always on), each twice: without
//! metrics (no recorder: every metric call is a branch on an empty handle,
//! as good as compiled out) and with metrics (`ALG+metrics`: the layer built
//! under a Prometheus recorder, counting every request), and a do-nothing
//! `Router::layer` for reference. The main thread
//! (another current-thread runtime) is the load generator: N keep-alive
//! HTTP/1.1 connections, each sending one fixed pre-built `GET` with its own
//! token in `Authorization: Bearer` and reading the response before sending
//! again. For every algorithm and cycle, a bare round and a `JwtAuth` round
//! send the very same requests (bare ignores the header), alternating which
//! goes first, so background noise hits both alike.
//!
//! Reported per algorithm: the median requests/s of each side and their
//! ratio, and the server thread's CPU time per request (read from
//! `/proc/self/task/*/schedstat`) with its ratio, which stays meaningful when
//! other processes take CPU time from the bench.
//!
//! Four more pairs: `HS256+guard` (the HS256 layer with `RequireScope` on
//! the route) and `HS256+guard-extractor` (the same guard as a `Guarded`
//! extractor of the handler), each against the same HS256 server without
//! the guard (DESIGN §7: target ≥ 0.98); `EdDSA verify-only` (`JwtAuth::resource_server` with
//! the EdDSA public key) against bare axum (DESIGN §4: ≥ 0.95); and
//! `HS256 outer`, the HS256 layer wrapped around the whole router
//! (`auth.layer(router)`, before routing) rather than `Router::layer`,
//! against bare axum.
//!
//! `HTTP_LOAD_ONLY` (comma-separated `bare/HS256`, `HS256`, `bare/ES256`, …)
//! runs only the named servers, for profiling one alone (see BENCHMARKS.md).
//! Every loop is bounded by time and by count.

#[path = "support/load.rs"]
mod load;

use std::{
    io,
    net::SocketAddr,
    sync::{Arc, mpsc},
    time::{Duration, Instant},
};

use axum::{Json, Router, routing::get};
use load::{cpu_ns, median, read_response, thread_id};
use serde::{Deserialize, Serialize};
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
    sync::oneshot,
    task::JoinSet,
};
use tower_jwt_auth::{Algorithm, Claims, JwtAuth, SigningKey, define_guard, guard::Guarded};

/// Target of DESIGN §4.
const TARGET_RATIO: f64 = 0.95;
/// Hard bound on requests per connection per round, on top of the time bound.
const MAX_REQUESTS_PER_CONN: u64 = 50_000_000;
/// A response must arrive within this; the bench aborts otherwise.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

struct Settings {
    round: Duration,
    warmup: Duration,
    cycles: usize,
    conns: usize,
}

impl Settings {
    fn from_env() -> Self {
        let quick = std::env::args().any(|a| a == "--quick") || std::env::var_os("HTTP_LOAD_QUICK").is_some();
        let env = |name: &str, default: u64| -> u64 {
            std::env::var(name).ok().and_then(|v| v.parse().ok()).filter(|&v| v > 0).unwrap_or(default)
        };
        let (secs, cycles) = if quick { (1, 2) } else { (3, 5) };
        Self {
            round: Duration::from_secs(env("HTTP_LOAD_SECS", secs).min(60)),
            warmup: Duration::from_millis(if quick { 300 } else { 700 }),
            cycles: env("HTTP_LOAD_CYCLES", cycles).min(50) as usize,
            conns: env("HTTP_LOAD_CONNS", 32).min(1024) as usize,
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
struct AppClaims {
    role: String,
    /// For the guarded route (`RequireScope::all(["admin"])`).
    scope: String,
}

#[derive(Serialize)]
struct Hello {
    message: &'static str,
}

/// The one handler body both sides serve.
fn hello() -> Json<Hello> {
    Json(Hello { message: "hello" })
}

async fn hello_bare() -> Json<Hello> {
    hello()
}

async fn hello_jwt(claims: Claims<AppClaims>) -> Json<Hello> {
    std::hint::black_box(&claims.role);
    hello()
}

define_guard!(Admin = tower_jwt_auth::guard::RequireScope::all(["admin"]));

/// `hello_jwt` with the scope guard as an extractor.
async fn hello_guarded(_: Guarded<Admin>, claims: Claims<AppClaims>) -> Json<Hello> {
    std::hint::black_box(&claims.role);
    hello()
}

fn signing_key(alg: Algorithm) -> SigningKey {
    let pem = |file: &str| {
        let path = format!("{}/../tests/keys/{file}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
    };
    let kid = format!("load-{alg:?}");
    match alg {
        Algorithm::HS256 => SigningKey::hs256(kid, &[7; 32]),
        Algorithm::ES256 => SigningKey::from_pem(alg, kid, &pem("p256.pem")),
        Algorithm::RS256 => SigningKey::from_pem(alg, kid, &pem("rsa.pem")),
        Algorithm::EdDSA => SigningKey::from_pem(alg, kid, &pem("ed25519.pem")),
        other => panic!("no load-test key for {other:?}"),
    }
    .expect("the test keys are valid")
}

/// One server under test and the requests its connections send.
struct Target {
    name: String,
    addr: SocketAddr,
    /// One pre-built request per connection.
    requests: Vec<Arc<[u8]>>,
    rates: Vec<f64>,
    /// Server-thread CPU nanoseconds per request, per round.
    costs: Vec<f64>,
    /// Requests answered, warm-up included.
    served: u64,
}

fn build_request(bearer_token: &str) -> Arc<[u8]> {
    format!("GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {bearer_token}\r\n\r\n")
        .into_bytes()
        .into()
}

struct Servers {
    addrs: Vec<SocketAddr>,
    tid: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Servers {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts the bare router, one `JwtAuth` router per layer, the do-nothing
/// layer and `extras`, on one current-thread runtime in its own thread.
fn start_servers(layers: Vec<JwtAuth>, extras: Vec<Router>, outer: JwtAuth) -> Servers {
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("servers".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            rt.block_on(async move {
                let mut routers = vec![Router::new().route("/hello", get(hello_bare))];
                routers
                    .extend(layers.into_iter().map(|auth| Router::new().route("/hello", get(hello_jwt)).layer(auth)));
                // For reference: what any `Router::layer` costs, a layer that does nothing.
                let noop = tower::util::MapRequestLayer::new(|request: axum::extract::Request| request);
                routers.push(Router::new().route("/hello", get(hello_bare)).layer(noop));
                routers.extend(extras);
                let mut addrs = Vec::new();
                for router in routers {
                    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
                    addrs.push(listener.local_addr().expect("a bound address"));
                    tokio::spawn(async move { axum::serve(listener, router).await.expect("serving") });
                }
                // The layer around the whole router, before routing (the
                // other servers use `Router::layer`, around each route).
                let wrapped = tower::Layer::layer(&outer, Router::new().route("/hello", get(hello_jwt)));
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
                addrs.push(listener.local_addr().expect("a bound address"));
                tokio::spawn(async move {
                    let service = axum::ServiceExt::<axum::extract::Request>::into_make_service(wrapped);
                    axum::serve(listener, service).await.expect("serving")
                });
                ready_tx.send((addrs, thread_id())).expect("main is waiting");
                let _ = stop_rx.await;
            });
        })
        .expect("spawning the server thread");
    let (addrs, tid) = ready_rx.recv_timeout(Duration::from_secs(30)).expect("the servers start");
    Servers { addrs, tid, stop: Some(stop_tx), thread: Some(thread) }
}

/// One connection's loop until the deadline (or the request bound).
async fn drive(mut stream: TcpStream, request: Arc<[u8]>, deadline: Instant) -> io::Result<u64> {
    let mut buf = Vec::with_capacity(4096);
    let mut done = 0;
    while done < MAX_REQUESTS_PER_CONN && Instant::now() < deadline {
        stream.write_all(&request).await?;
        let (status, _) = tokio::time::timeout(IO_TIMEOUT, read_response(&mut stream, &mut buf))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no response in time"))??;
        if status != 200 {
            let text = String::from_utf8_lossy(&buf[..buf.len().min(400)]).into_owned();
            return Err(io::Error::other(format!("status {status} (the bench request must be accepted):\n{text}")));
        }
        done += 1;
    }
    Ok(done)
}

struct Round {
    requests: u64,
    rate: f64,
    /// Share of the wall time each thread was on a CPU.
    server_cpu: f64,
    client_cpu: f64,
    /// Server-thread CPU nanoseconds per request.
    server_ns_per_request: f64,
}

/// Drives `target` with one connection per pre-built request for `length`.
async fn round(target: &Target, length: Duration, server_tid: &str) -> io::Result<Round> {
    let mut streams = Vec::with_capacity(target.requests.len());
    for _ in &target.requests {
        let stream = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(target.addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        streams.push(stream);
    }
    let client_tid = thread_id();
    let (server0, client0) = (cpu_ns(server_tid), cpu_ns(&client_tid));
    let start = Instant::now();
    let deadline = start + length;
    let mut tasks = JoinSet::new();
    for (stream, request) in streams.into_iter().zip(&target.requests) {
        tasks.spawn(drive(stream, request.clone(), deadline));
    }
    let mut total = 0;
    while let Some(done) = tasks.join_next().await {
        total += done.map_err(io::Error::other)??;
    }
    let wall = start.elapsed();
    let server_ns = cpu_ns(server_tid).saturating_sub(server0) as f64;
    let share = |ns: f64| ns / wall.as_nanos() as f64;
    Ok(Round {
        requests: total,
        rate: total as f64 / wall.as_secs_f64(),
        server_cpu: share(server_ns),
        client_cpu: share(cpu_ns(&client_tid).saturating_sub(client0) as f64),
        server_ns_per_request: server_ns / total.max(1) as f64,
    })
}

fn main() {
    let settings = Settings::from_env();
    let algorithms = [Algorithm::HS256, Algorithm::ES256, Algorithm::RS256, Algorithm::EdDSA];
    let build = |alg: Algorithm| {
        JwtAuth::builder()
            .signing_key(signing_key(alg))
            .issuer("https://bench.example")
            .audience("bench")
            .build()
            .expect("the bench configuration builds")
    };
    // Each layer registers its series with the recorder current at build
    // time: none for the plain ones, Prometheus for the "+metrics" ones.
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let scrape = prometheus.handle();
    let variants: Vec<(String, JwtAuth)> = algorithms
        .iter()
        .flat_map(|&alg| {
            let counted = metrics::with_local_recorder(&prometheus, || build(alg));
            [(format!("{alg:?}"), build(alg)), (format!("{alg:?}+metrics"), counted)]
        })
        .collect();
    let layers: Vec<JwtAuth> = variants.iter().map(|(_, auth)| auth.clone()).collect();
    // One distinct token per connection, as distinct users would have.
    let requests: Vec<Vec<Arc<[u8]>>> = layers
        .iter()
        .map(|auth| {
            (0..settings.conns)
                .map(|i| {
                    let claims = AppClaims { role: "admin".into(), scope: "profile admin".into() };
                    build_request(&auth.test_token(&format!("user-{i}")).claims(&claims).sign())
                })
                .collect()
        })
        .collect();

    // The same HS256 layer with a scope guard on the route (DESIGN §7: a
    // guarded route ÷ the same route unguarded), and a verify-only layer with
    // the EdDSA key's public half (resource servers; ÷ bare axum).
    let hs256 = layers[0].clone();
    let outer = hs256.clone();
    let guarded = Router::new()
        .route("/hello", get(hello_jwt).route_layer(tower_jwt_auth::guard::RequireScope::all(["admin"])))
        .layer(hs256.clone());
    let guarded_extractor = Router::new().route("/hello", get(hello_guarded)).layer(hs256);
    let verifier = JwtAuth::resource_server()
        .verifying_key(signing_key(Algorithm::EdDSA).verifying_key().clone())
        .issuer("https://bench.example")
        .audience("bench")
        .build()
        .expect("the verify-only configuration builds");
    let verify_only = Router::new().route("/hello", get(hello_jwt)).layer(verifier);
    // `variants` holds each algorithm plain then "+metrics".
    let plain = |alg: Algorithm| 2 * algorithms.iter().position(|&a| a == alg).expect("benched");
    let (hs256_requests, eddsa_requests) =
        (requests[plain(Algorithm::HS256)].clone(), requests[plain(Algorithm::EdDSA)].clone());
    let servers = start_servers(layers, vec![guarded, verify_only, guarded_extractor], outer);
    let target = |name: String, addr: SocketAddr, requests: Vec<Arc<[u8]>>| Target {
        name,
        addr,
        requests,
        rates: Vec::new(),
        costs: Vec::new(),
        served: 0,
    };
    // Per layer, a pair: bare axum and JwtAuth, fed the very same requests.
    let mut pairs: Vec<[Target; 2]> = variants
        .iter()
        .zip(&servers.addrs[1..])
        .zip(requests)
        .map(|(((name, _), addr), requests)| {
            [target(format!("bare/{name}"), servers.addrs[0], requests.clone()), target(name.clone(), *addr, requests)]
        })
        .collect();
    let noop_requests = pairs[0][0].requests.clone();
    pairs.push([
        target("bare/noop".into(), servers.addrs[0], noop_requests.clone()),
        target("noop-layer".into(), servers.addrs[variants.len() + 1], noop_requests),
    ]);
    // Not against bare axum: the same HS256 layer without the guard.
    pairs.push([
        target("HS256/unguarded".into(), servers.addrs[1], hs256_requests.clone()),
        target("HS256+guard".into(), servers.addrs[variants.len() + 2], hs256_requests.clone()),
    ]);
    pairs.push([
        target("bare/verify".into(), servers.addrs[0], eddsa_requests.clone()),
        target("EdDSA verify-only".into(), servers.addrs[variants.len() + 3], eddsa_requests),
    ]);
    pairs.push([
        target("HS256/unguarded-for-extractor".into(), servers.addrs[1], hs256_requests.clone()),
        target("HS256+guard-extractor".into(), servers.addrs[variants.len() + 4], hs256_requests.clone()),
    ]);
    pairs.push([
        target("bare/outer".into(), servers.addrs[0], hs256_requests.clone()),
        target("HS256 outer".into(), servers.addrs[variants.len() + 5], hs256_requests),
    ]);
    // For profiling one server alone (e.g. under callgrind): HTTP_LOAD_ONLY=bare/HS256 or HS256.
    let only = std::env::var("HTTP_LOAD_ONLY").ok();
    let selected =
        |t: &Target| only.as_deref().is_none_or(|o| o.split(',').any(|n| n.trim().eq_ignore_ascii_case(&t.name)));
    assert!(pairs.iter().flatten().any(selected), "HTTP_LOAD_ONLY names none of bare/HS256, HS256, …");

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("http_load: same handler (small JSON), bare axum vs the router behind JwtAuth (handler extracts Claims)");
    println!(
        "  {} keep-alive HTTP/1.1 connections; {} cycles; per cycle and algorithm a bare round and a JwtAuth round \
         of {:.1} s each with the same requests, alternating which goes first",
        settings.conns,
        settings.cycles,
        settings.round.as_secs_f64()
    );
    println!(
        "  {cores} CPU(s): the servers run on 1 thread and the load generator on 1 thread of this process; \
         both compete for the same cores (and with anything else running), the same way for every server"
    );

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let started = Instant::now();
    rt.block_on(async {
        for target in pairs.iter_mut().flatten().filter(|t| selected(t)) {
            let r = round(target, settings.warmup, &servers.tid).await;
            target.served += r.unwrap_or_else(|e| panic!("{}: {e}", target.name)).requests;
        }
        for cycle in 0..settings.cycles {
            for pair in &mut pairs {
                let order = if cycle % 2 == 0 { [0, 1] } else { [1, 0] };
                for k in order {
                    let target = &mut pair[k];
                    if !selected(target) {
                        continue;
                    }
                    let r = round(target, settings.round, &servers.tid)
                        .await
                        .unwrap_or_else(|e| panic!("{}: {e}", target.name));
                    println!(
                        "  cycle {} {:<18} {:>8.0} req/s  server {:>5.2} µs CPU/req  on-CPU: server {:>3.0}%, client {:>3.0}%",
                        cycle + 1,
                        target.name,
                        r.rate,
                        r.server_ns_per_request / 1000.0,
                        r.server_cpu * 100.0,
                        r.client_cpu * 100.0
                    );
                    target.rates.push(r.rate);
                    target.costs.push(r.server_ns_per_request);
                    target.served += r.requests;
                }
            }
        }
    });
    drop(servers);

    println!();
    println!(
        "  {:<13} {:>10} {:>13} {:>6} {:>6} {:>6}   {:>11} {:>14} {:>9} {:>10}",
        "alg",
        "bare req/s",
        "JwtAuth req/s",
        "ratio",
        "target",
        "paired",
        "bare µs/req",
        "JwtAuth µs/req",
        "CPU ratio",
        "CPU best"
    );
    let best = |costs: &[f64]| costs.iter().copied().fold(f64::INFINITY, f64::min);
    for [bare, jwt] in &pairs {
        let (bare_rate, jwt_rate) = (median(&bare.rates), median(&jwt.rates));
        let (bare_cost, jwt_cost) = (median(&bare.costs), median(&jwt.costs));
        let ratio = jwt_rate / bare_rate;
        // Each cycle's two rounds run back to back: their ratio cancels the
        // slow drifts of a shared machine that the medians above mix in.
        let paired: Vec<f64> = bare.rates.iter().zip(&jwt.rates).map(|(b, j)| j / b).collect();
        let paired = median(&paired);
        let verdict = if ratio.is_nan() {
            ""
        } else if ratio >= TARGET_RATIO {
            "ok"
        } else {
            "BELOW"
        };
        println!(
            "  {:<13} {bare_rate:>10.0} {jwt_rate:>13.0} {ratio:>6.3} {verdict:>6} {paired:>6.3}   {:>11.2} {:>14.2} {:>9.3} {:>10.3}",
            jwt.name,
            bare_cost / 1000.0,
            jwt_cost / 1000.0,
            bare_cost / jwt_cost,
            best(&bare.costs) / best(&jwt.costs),
        );
    }
    println!(
        "  req/s and µs/req (server thread CPU time per request) are medians over the rounds; ratio = JwtAuth req/s / \
         bare req/s (target >= {TARGET_RATIO}, DESIGN §4); paired = the median of each cycle's JwtAuth/bare ratio \
         (the two rounds of a cycle run back to back); CPU ratio = bare µs/req / JwtAuth µs/req, what the ratio \
         would be with the server thread alone on a core, insensitive to CPU time taken by other processes; CPU best = \
         the same from each side's cheapest round (interference only adds cost)"
    );
    let served: Vec<String> =
        pairs.iter().flatten().filter(|t| selected(t)).map(|t| format!("{} {}", t.name, t.served)).collect();
    println!("  requests answered, warm-up included: {}", served.join(", "));
    // The "+metrics" layers really counted: their authenticated requests, as Prometheus has them.
    let counted: f64 = scrape
        .render()
        .lines()
        .filter(|line| line.starts_with("tower_jwt_auth_requests_total{result=\"authenticated\"}"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let answered: u64 =
        pairs.iter().map(|[_, jwt]| jwt).filter(|t| t.name.ends_with("+metrics")).map(|t| t.served).sum();
    println!(
        "  +metrics: tower_jwt_auth_requests_total{{result=\"authenticated\"}} = {counted} for {answered} answered"
    );
    println!("  took {:.0} s", started.elapsed().as_secs_f64());
}
