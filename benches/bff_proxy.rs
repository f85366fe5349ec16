//! The BFF gateway's added latency per proxied request, side by side with a
//! plain hyper-util proxy forwarding to the same upstream (target: the
//! gateway's latency at most 1.1 × the plain proxy's).
//!
//! ```text
//! cargo bench -p tower-jwt-auth-benches --bench bff_proxy      # about 30 s
//! BFF_BENCH_CYCLES=20 cargo bench -p tower-jwt-auth-benches --bench bff_proxy
//! ```
//!
//! One process. A server thread (a current-thread Tokio runtime) serves:
//! the recording upstream of the tests (`tests/support/upstream.rs`, whose
//! `/bench` answers `ok` without recording); a plain proxy (axum
//! `nest_service("/api", …)` around hyper-util's legacy client, forwarding
//! everything as is); and the gateway (`nest_service("/api", gateway)`
//! behind `JwtAuth` with an EdDSA key), with a bearer session and with a
//! cookie session whose access token is valid (verified from the cache,
//! upstream token reused). The main thread (another current-thread
//! runtime) is the client: raw keep-alive HTTP/1.1 connections sending one
//! pre-built `GET` and reading the response before sending again.
//!
//! - Sequential: one connection, rounds of `REQUESTS` requests per mode,
//!   modes interleaved and their order rotated each cycle; every request's
//!   round-trip time is kept. Reported: median and p90 over all rounds, the
//!   latency added over calling the upstream directly, and the server
//!   thread's CPU time per request.
//! - Concurrent: `CONNS` connections for `ROUND` per mode and cycle;
//!   reported: median requests/s over the rounds, median latency, CPU time.

#[path = "support/load.rs"]
mod load;
#[path = "../tests/support/upstream.rs"]
#[allow(dead_code)]
mod upstream;

use std::{
    convert::Infallible,
    io,
    net::SocketAddr,
    sync::{Arc, mpsc},
    time::{Duration, Instant},
};

use axum::{Router, body::Body, extract::Request, response::IntoResponse};
use http::{StatusCode, Version, header};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use load::{cpu_ns, median, read_response, thread_id};
use serde_json::json;
use tokio::{io::AsyncWriteExt, net::TcpListener, net::TcpStream, sync::oneshot, task::JoinSet};
use tower_jwt_auth::{Algorithm, ClientInfo, JwtAuth, SigningKey, bff::Gateway};

const TARGET_RATIO: f64 = 1.1;
/// Requests per sequential round.
const REQUESTS: usize = 2_000;
/// Connections of the concurrent run.
const CONNS: usize = 16;
/// Length of a concurrent round.
const ROUND: Duration = Duration::from_millis(800);
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// One way of reaching the upstream.
struct Mode {
    name: &'static str,
    addr: SocketAddr,
    request: Arc<[u8]>,
    /// Sequential round-trip times, nanoseconds, all rounds.
    latencies: Vec<f64>,
    /// Server-thread CPU nanoseconds per request, per sequential round.
    cpu: Vec<f64>,
    /// Concurrent rounds: requests/s, median latency (ns), CPU ns/request.
    concurrent: Vec<(f64, f64, f64)>,
}

struct Servers {
    upstream: SocketAddr,
    plain: SocketAddr,
    gateway: SocketAddr,
    access_token: String,
    cookies: String,
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

/// The plain proxy: the request as it came, to the same upstream, through
/// the same client the gateway uses.
fn plain_proxy(upstream: SocketAddr) -> Router {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Body> =
        Client::builder(TokioExecutor::new()).pool_timer(TokioTimer::new()).build(connector);
    let base: Arc<str> = format!("http://{upstream}").into();
    let forward = tower::service_fn(move |request: Request| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let (mut parts, body) = request.into_parts();
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            parts.uri = format!("{base}{path}").parse().expect("a valid upstream URI");
            parts.version = Version::HTTP_11;
            parts.headers.remove(header::HOST);
            let response = match client.request(Request::from_parts(parts, body)).await {
                Ok(response) => response.map(Body::new),
                Err(_) => StatusCode::BAD_GATEWAY.into_response(),
            };
            Ok::<_, Infallible>(response)
        }
    });
    Router::new().nest_service("/api", forward)
}

fn start_servers() -> Servers {
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("servers".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            rt.block_on(async move {
                let upstream = upstream::Upstream::start().await;
                let pem = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/keys/ed25519.pem")).unwrap();
                let auth = JwtAuth::builder()
                    .signing_key(SigningKey::from_pem(Algorithm::EdDSA, "bench", &pem).unwrap())
                    .issuer("https://bff.bench")
                    .audience("bff")
                    .build()
                    .unwrap();
                let gateway = Gateway::builder(&upstream.base).audience("api").build().unwrap();
                let gateway_app = Router::new().nest_service("/api", gateway).route_layer(auth.clone());
                let mut addrs = Vec::new();
                for app in [plain_proxy(upstream.addr), gateway_app] {
                    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
                    addrs.push(listener.local_addr().unwrap());
                    tokio::spawn(async move { axum::serve(listener, app).await.expect("serving") });
                }
                let claims = json!({ "scope": "profile orders" });
                let bearer = auth.login("bench-bearer", &claims, ClientInfo::default()).await.unwrap();
                let cookie = auth.login("bench-cookie", &claims, ClientInfo::default()).await.unwrap();
                let cookies =
                    format!("__Host-access={}; __Host-refresh={}", cookie.access_token(), cookie.refresh_token());
                let ready = (upstream.addr, addrs, bearer.access_token().to_owned(), cookies, thread_id());
                ready_tx.send(ready).expect("main is waiting");
                let _ = stop_rx.await;
                drop(upstream);
            });
        })
        .expect("spawning the server thread");
    let (upstream, addrs, access_token, cookies, tid) =
        ready_rx.recv_timeout(Duration::from_secs(30)).expect("the servers start");
    Servers {
        upstream,
        plain: addrs[0],
        gateway: addrs[1],
        access_token,
        cookies,
        tid,
        stop: Some(stop_tx),
        thread: Some(thread),
    }
}

async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Sends `request` and reads its answer, which must be `200`.
async fn exchange(stream: &mut TcpStream, request: &[u8], buf: &mut Vec<u8>) -> io::Result<()> {
    stream.write_all(request).await?;
    let (status, _) = tokio::time::timeout(IO_TIMEOUT, read_response(stream, buf))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no response in time"))??;
    if status != 200 {
        let text = String::from_utf8_lossy(&buf[..buf.len().min(400)]).into_owned();
        return Err(io::Error::other(format!("status {status}:\n{text}")));
    }
    Ok(())
}

/// `count` requests one after the other on one connection: their round-trip
/// times (ns) and the server thread's CPU ns per request.
async fn sequential(mode: &Mode, count: usize, server_tid: &str) -> io::Result<(Vec<f64>, f64)> {
    let mut stream = connect(mode.addr).await?;
    let mut buf = Vec::with_capacity(4096);
    // The first exchange opens the proxies' own upstream connections.
    exchange(&mut stream, &mode.request, &mut buf).await?;
    let mut times = Vec::with_capacity(count);
    let cpu0 = cpu_ns(server_tid);
    for _ in 0..count {
        let start = Instant::now();
        exchange(&mut stream, &mode.request, &mut buf).await?;
        times.push(start.elapsed().as_nanos() as f64);
    }
    let cpu = cpu_ns(server_tid).saturating_sub(cpu0) as f64 / count as f64;
    Ok((times, cpu))
}

/// `CONNS` connections for `ROUND`: requests/s, median latency (ns), CPU ns/request.
async fn concurrent(mode: &Mode, server_tid: &str) -> io::Result<(f64, f64, f64)> {
    let mut streams = Vec::with_capacity(CONNS);
    for _ in 0..CONNS {
        streams.push(connect(mode.addr).await?);
    }
    let cpu0 = cpu_ns(server_tid);
    let start = Instant::now();
    let deadline = start + ROUND;
    let mut tasks = JoinSet::new();
    for mut stream in streams {
        let request = mode.request.clone();
        tasks.spawn(async move {
            let mut buf = Vec::with_capacity(4096);
            let mut times = Vec::new();
            while Instant::now() < deadline && times.len() < 10_000_000 {
                let sent = Instant::now();
                exchange(&mut stream, &request, &mut buf).await?;
                times.push(sent.elapsed().as_nanos() as f64);
            }
            Ok::<_, io::Error>(times)
        });
    }
    let mut times = Vec::new();
    while let Some(done) = tasks.join_next().await {
        times.extend(done.map_err(io::Error::other)??);
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = cpu_ns(server_tid).saturating_sub(cpu0) as f64 / times.len().max(1) as f64;
    Ok((times.len() as f64 / wall, median(&times), cpu))
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(((v.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(f64::NAN)
}

fn main() {
    let cycles: usize = std::env::var("BFF_BENCH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| (1..=50).contains(&n))
        .unwrap_or(9);
    let servers = start_servers();
    let get = |path: &str, extra: &str| -> Arc<[u8]> {
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n{extra}\r\n").into_bytes().into()
    };
    let bearer = format!("Authorization: Bearer {}\r\n", servers.access_token);
    let cookie = format!("Cookie: {}\r\n", servers.cookies);
    let mode = |name, addr, request| Mode {
        name,
        addr,
        request,
        latencies: Vec::new(),
        cpu: Vec::new(),
        concurrent: Vec::new(),
    };
    let mut modes = [
        mode("direct", servers.upstream, get("/bench", &bearer)),
        mode("plain proxy", servers.plain, get("/api/bench", &bearer)),
        mode("gateway/bearer", servers.gateway, get("/api/bench", &bearer)),
        mode("gateway/cookie", servers.gateway, get("/api/bench", &cookie)),
    ];

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("bff_proxy: GET through a plain hyper-util proxy vs the BFF gateway (behind JwtAuth), same upstream");
    println!(
        "  {cores} CPU(s); upstream, proxy and gateway on 1 server thread, the client on another; {cycles} cycles, \
         modes interleaved (order rotated per cycle)"
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let started = Instant::now();
    rt.block_on(async {
        for mode in &modes {
            sequential(mode, 300, &servers.tid).await.unwrap_or_else(|e| panic!("{}: {e}", mode.name));
        }
        for cycle in 0..cycles {
            for k in 0..modes.len() {
                let mode = &mut modes[(k + cycle) % 4];
                let (times, cpu) =
                    sequential(mode, REQUESTS, &servers.tid).await.unwrap_or_else(|e| panic!("{}: {e}", mode.name));
                mode.latencies.extend(times);
                mode.cpu.push(cpu);
            }
            // Concurrency for the proxies only (direct is the reference).
            for k in 0..3 {
                let mode = &mut modes[1 + (k + cycle) % 3];
                let round = concurrent(mode, &servers.tid).await.unwrap_or_else(|e| panic!("{}: {e}", mode.name));
                mode.concurrent.push(round);
            }
        }
    });
    drop(servers);

    let us = |ns: f64| ns / 1000.0;
    let direct = median(&modes[0].latencies);
    println!();
    println!("  sequential, 1 keep-alive connection, {REQUESTS} requests per round");
    println!("  {:<15} {:>10} {:>8} {:>10} {:>13}", "mode", "median µs", "p90 µs", "added µs", "server µs CPU");
    for mode in &modes {
        let m = median(&mode.latencies);
        println!(
            "  {:<15} {:>10.1} {:>8.1} {:>10.1} {:>13.1}",
            mode.name,
            us(m),
            us(percentile(&mode.latencies, 0.9)),
            us(m - direct),
            us(median(&mode.cpu))
        );
    }
    let plain = median(&modes[1].latencies);
    for gateway in &modes[2..] {
        let g = median(&gateway.latencies);
        let ratio = g / plain;
        println!(
            "  {} ÷ plain proxy: latency {ratio:.3} ({}, target <= {TARGET_RATIO}), added latency {:.2}, server CPU {:.2}",
            gateway.name,
            if ratio <= TARGET_RATIO { "ok" } else { "ABOVE" },
            (g - direct) / (plain - direct),
            median(&gateway.cpu) / median(&modes[1].cpu),
        );
    }
    println!();
    println!("  concurrent, {CONNS} keep-alive connections, rounds of {:.1} s", ROUND.as_secs_f64());
    println!("  {:<15} {:>9} {:>10} {:>13}", "mode", "req/s", "median µs", "server µs CPU");
    let column =
        |mode: &Mode, f: fn(&(f64, f64, f64)) -> f64| median(&mode.concurrent.iter().map(f).collect::<Vec<_>>());
    for mode in &modes[1..] {
        println!(
            "  {:<15} {:>9.0} {:>10.1} {:>13.1}",
            mode.name,
            column(mode, |r| r.0),
            us(column(mode, |r| r.1)),
            us(column(mode, |r| r.2))
        );
    }
    let plain_rate = column(&modes[1], |r| r.0);
    for gateway in &modes[2..] {
        println!(
            "  {} ÷ plain proxy: req/s {:.3}, median latency {:.3}",
            gateway.name,
            column(gateway, |r| r.0) / plain_rate,
            column(gateway, |r| r.1) / column(&modes[1], |r| r.1)
        );
    }
    println!(
        "  medians over all requests (sequential) or over the rounds (concurrent); added = median − direct's median; \
         server µs CPU = the server thread's CPU time per request (upstream included, the same for every mode)"
    );
    println!("  took {:.0} s", started.elapsed().as_secs_f64());
}
