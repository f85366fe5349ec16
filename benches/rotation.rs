//! Transparent refresh-token rotation through HTTP against Redis on loopback,
//! versus tower-sessions' login path, "a Redis write per request" (DESIGN §4:
//! rotations/s must be at least 1.0 × that baseline; reference: one Redis
//! round trip per rotation).
//!
//! ```text
//! cargo bench --bench rotation                   # 5 cycles of 3 s rounds, about 40 s
//! cargo bench --bench rotation -- --quick        # 2 cycles of 1 s rounds, about 10 s
//! ROTATION_SECS=5 ROTATION_CYCLES=7 ROTATION_CONNS=64 cargo bench --bench rotation
//! ROTATION_GRACE_MS=0 cargo bench --bench rotation      # grace window (default: the crate's, 10 s)
//! ROTATION_CACHE_CAPACITY=0 cargo bench --bench rotation # verified-token cache (default: the crate's, 10 000)
//! ```
//!
//! `ROTATION_ONLY=rotation` (or `baseline`) runs one server alone, for profiling.
//!
//! `ROTATION_GRACE_MS` and `ROTATION_CACHE_CAPACITY` show what two parts of
//! the crate cost under a stream of rotations (see BENCHMARKS.md): the
//! single-flight map, which keeps every rotation for the grace window, and the
//! verified-token cache, which every rotation inserts into. With the crate's
//! defaults the server thread stops answering after some 30–40 k rotations
//! (the cache's eviction never returns); the bench then aborts.
//!
//! One process and one `redis-server` (started on a free loopback port, killed
//! at the end). A server thread (a current-thread Tokio runtime) serves two
//! axum servers on free 127.0.0.1 ports:
//!
//! * `baseline`: what tower-sessions does at login — a handler that writes one
//!   new session, `SET <fresh random key> <200-byte value> PX <1 day>`, through
//!   a redis-rs `ConnectionManager` (database 1, flushed after every round,
//!   outside the timing), then answers 200 with a `Set-Cookie` and a small JSON body;
//! * `rotation`: the same small JSON handler (extracting `Claims`) behind
//!   `JwtAuth` with `RedisStore::connect` (database 0) and a fixed refresh
//!   secret. Requests carry only the `__Host-refresh` cookie, no access
//!   cookie, so the layer rotates on every request.
//!
//! The main thread (another current-thread runtime) is the load generator: N
//! keep-alive HTTP/1.1 connections, each sending a request and reading its
//! response before the next. For `rotation` each connection owns one session
//! (logged in once through `auth.login` via `POST /login/{user}`) and presents
//! the `__Host-refresh` cookie of the previous response each time, so every
//! request is a real rotation: the client checks that each new token's
//! counter is the previous one plus one (anything else counts as an error, as
//! does any status other than 200; the connection then logs in again).
//! Each cycle runs one round per server, alternating which goes first.
//!
//! Printed: each round's rate, the CPU each thread and redis-server spent per
//! request, the medians and the ratio rotation / baseline, and, from
//! `INFO commandstats`, Redis round trips per rotation (`EVALSHA` calls /
//! rotations) and `SET` calls per baseline request.

#[path = "../tests/support/redis_server.rs"]
mod redis_server;

use std::{
    io,
    net::SocketAddr,
    sync::{Arc, mpsc},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use redis::aio::ConnectionManager;
use redis_server::RedisServer;
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::oneshot,
    task::JoinSet,
};
use tower_jwt_auth::{Claims, ClientInfo, JwtAuth, SigningKey, store::RedisStore};

/// Target of DESIGN §4.
const TARGET_RATIO: f64 = 1.0;
/// Hard bound on requests per connection per round, on top of the time bound.
const MAX_REQUESTS_PER_CONN: u64 = 10_000_000;
/// A response must arrive within this; the bench aborts otherwise.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest response accepted (ours are under 1 KiB).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Size of the baseline's session value (a serialized tower-sessions record).
const VALUE_BYTES: usize = 200;
/// The baseline sessions' expiry.
const BASELINE_TTL_MS: u64 = 24 * 3600 * 1000;
/// Ceiling on one baseline `SET`, as `RedisStore` bounds its calls.
const BASELINE_CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// Exactly 40 bytes, as in the memory benchmark.
const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) Gecko/20";
const REFRESH_COOKIE: &str = "__Host-refresh";
/// Stop reporting error texts after this many per round.
const MAX_ERROR_SAMPLES: usize = 3;

struct Settings {
    round: Duration,
    warmup: Duration,
    cycles: usize,
    conns: usize,
    grace: Option<Duration>,
    cache_capacity: Option<usize>,
    /// Run only this server (profiling).
    only: Option<Kind>,
}

impl Settings {
    fn from_env() -> Self {
        let quick = std::env::args().any(|a| a == "--quick") || std::env::var_os("ROTATION_QUICK").is_some();
        let env = |name: &str| -> Option<u64> { std::env::var(name).ok().and_then(|v| v.parse().ok()) };
        let positive = |name: &str, default: u64| env(name).filter(|&v| v > 0).unwrap_or(default);
        let (secs, cycles) = if quick { (1, 2) } else { (3, 5) };
        Self {
            round: Duration::from_secs(positive("ROTATION_SECS", secs).min(60)),
            warmup: Duration::from_millis(if quick { 300 } else { 700 }),
            cycles: positive("ROTATION_CYCLES", cycles).min(50) as usize,
            conns: positive("ROTATION_CONNS", 32).min(1024) as usize,
            grace: env("ROTATION_GRACE_MS").map(|ms| Duration::from_millis(ms.min(600_000))),
            cache_capacity: env("ROTATION_CACHE_CAPACITY").map(|n| n.min(10_000_000) as usize),
            only: match std::env::var("ROTATION_ONLY").as_deref().map(str::trim) {
                Ok("rotation") => Some(Kind::Rotation),
                Ok("baseline") => Some(Kind::Baseline),
                Ok(other) => panic!("ROTATION_ONLY={other:?}: expected rotation or baseline"),
                Err(_) => None,
            },
        }
    }
}

#[derive(Serialize)]
struct Hello {
    message: &'static str,
}

fn hello() -> Json<Hello> {
    Json(Hello { message: "hello" })
}

#[derive(Clone, Serialize, Deserialize)]
struct AppClaims {
    role: String,
}

/// The baseline: tower-sessions' login, one new session written to Redis.
#[derive(Clone)]
struct Baseline {
    conn: ConnectionManager,
    value: Arc<[u8]>,
}

async fn login_baseline(State(state): State<Baseline>) -> Response {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).expect("the OS random generator");
    let id = URL_SAFE_NO_PAD.encode(id);
    let mut conn = state.conn.clone();
    let mut set = redis::cmd("SET");
    set.arg(format!("tower-sessions:{id}")).arg(&state.value[..]).arg("PX").arg(BASELINE_TTL_MS);
    match tokio::time::timeout(BASELINE_CALL_TIMEOUT, set.query_async::<()>(&mut conn)).await {
        Ok(Ok(())) => {
            let cookie = format!("id={id}; HttpOnly; SameSite=Strict; Secure; Path=/");
            ([(header::SET_COOKIE, cookie)], hello()).into_response()
        }
        Ok(Err(err)) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "redis timeout").into_response(),
    }
}

async fn hello_jwt(claims: Claims<AppClaims>) -> Json<Hello> {
    std::hint::black_box(&claims.role);
    hello()
}

async fn login_jwt(State(auth): State<JwtAuth>, Path(user): Path<String>, client: ClientInfo) -> Response {
    match auth.login(&user, &AppClaims { role: "admin".into() }, client).await {
        Ok(tokens) => tokens.into_cookies().into_response(),
        Err(error) => error.into_response(),
    }
}

/// The thread's CPU time so far, in nanoseconds (`/proc/.../schedstat`).
fn cpu_ns(task: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/self/task/{task}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The calling thread's id, as named under /proc/self/task.
fn thread_id() -> String {
    std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default()
}

struct Servers {
    baseline: SocketAddr,
    rotation: SocketAddr,
    tid: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Servers {
    fn drop(&mut self) {
        drop(self.stop.take());
        // After a failed round the server thread may be stuck: never wait for it then.
        if std::thread::panicking() {
            return;
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts both servers on one current-thread runtime in its own thread (the
/// Redis clients live there too: they spawn their tasks on it).
fn start_servers(redis_url: String, grace: Option<Duration>, cache_capacity: Option<usize>) -> Servers {
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("servers".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            rt.block_on(async move {
                let client = redis::Client::open(format!("{redis_url}/1")).expect("a valid URL");
                let conn = ConnectionManager::new(client).await.expect("connecting to redis-server");
                let value: Arc<[u8]> = (0..VALUE_BYTES).map(|i| b'a' + (i % 26) as u8).collect();
                let baseline = Router::new().route("/hello", get(login_baseline)).with_state(Baseline { conn, value });

                let store = RedisStore::connect(&redis_url).await.expect("connecting RedisStore");
                let mut builder = JwtAuth::builder()
                    .signing_key(SigningKey::hs256("rotation-bench", &[7; 32]).expect("a valid key"))
                    .refresh_token_secret(vec![9; 32])
                    .issuer("https://bench.example")
                    .audience("bench")
                    .store(store);
                if let Some(grace) = grace {
                    builder = builder.grace(grace);
                }
                if let Some(capacity) = cache_capacity {
                    builder = builder.cache_capacity(capacity);
                }
                let auth = builder.build().expect("the bench configuration builds");
                let rotation = Router::new()
                    .route("/hello", get(hello_jwt))
                    .layer(auth.clone())
                    .merge(Router::new().route("/login/{user}", post(login_jwt)).with_state(auth));

                let mut addrs = Vec::new();
                for router in [baseline, rotation] {
                    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
                    addrs.push(listener.local_addr().expect("a bound address"));
                    tokio::spawn(async move { axum::serve(listener, router).await.expect("serving") });
                }
                ready_tx.send((addrs, thread_id())).expect("main is waiting");
                let _ = stop_rx.await;
            });
        })
        .expect("spawning the server thread");
    let (addrs, tid) = ready_rx.recv_timeout(Duration::from_secs(30)).expect("the servers start");
    Servers { baseline: addrs[0], rotation: addrs[1], tid, stop: Some(stop_tx), thread: Some(thread) }
}

/// Reads one HTTP/1.1 response (headers + `content-length` body) into `buf`;
/// answers its status and the length of its head.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<(u16, usize)> {
    buf.clear();
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).map_err(|_| invalid("non-UTF-8 head"))?;
            let status = head.get(9..12).and_then(|s| s.parse().ok()).ok_or_else(|| invalid("no status"))?;
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
                })
                .ok_or_else(|| invalid("no content-length"))?;
            let total = end + 4 + length;
            if total > MAX_RESPONSE_BYTES {
                return Err(invalid("response too large"));
            }
            while buf.len() < total {
                if stream.read_buf(buf).await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
            if buf.len() != total {
                return Err(invalid("bytes after the response"));
            }
            return Ok((status, end));
        }
        if buf.len() > MAX_RESPONSE_BYTES {
            return Err(invalid("response head too large"));
        }
        buf.reserve(4096);
        if stream.read_buf(buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Sends `request` and reads the response, within [`IO_TIMEOUT`].
async fn exchange(stream: &mut TcpStream, request: &[u8], buf: &mut Vec<u8>) -> io::Result<(u16, usize)> {
    stream.write_all(request).await?;
    tokio::time::timeout(IO_TIMEOUT, read_response(stream, buf))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no response in time"))?
}

/// The value of the `__Host-refresh` cookie a response head sets.
fn refresh_cookie(head: &str) -> Option<&str> {
    head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if !name.eq_ignore_ascii_case("set-cookie") {
            return None;
        }
        let pair = value.trim().split(';').next()?;
        let (cookie, value) = pair.split_once('=')?;
        (cookie == REFRESH_COOKIE && !value.is_empty()).then_some(value)
    })
}

/// The counter of a refresh token (`user . sid . counter . tag`).
fn counter_of(token: &str) -> Option<u64> {
    token.split('.').nth(2)?.parse().ok()
}

/// One load-generator connection's session on the rotation server.
struct Client {
    user: String,
    refresh_token: String,
}

/// Logs `user` in on the rotation server over `stream`; answers the refresh token.
async fn login(stream: &mut TcpStream, user: &str, buf: &mut Vec<u8>) -> io::Result<String> {
    let request = format!(
        "POST /login/{user} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {USER_AGENT}\r\nContent-Length: 0\r\n\r\n"
    );
    let (status, head) = exchange(stream, request.as_bytes(), buf).await?;
    let head = String::from_utf8_lossy(&buf[..head]);
    match refresh_cookie(&head) {
        Some(token) if status == 200 => Ok(token.to_owned()),
        _ => Err(io::Error::other(format!("login of {user} answered {status}:\n{head}"))),
    }
}

/// What one connection did in one round.
#[derive(Default)]
struct Tally {
    /// 200 responses (baseline) or 200 responses with a counter advance (rotation).
    ok: u64,
    errors: u64,
    samples: Vec<String>,
}

impl Tally {
    fn error(&mut self, what: String) {
        self.errors += 1;
        if self.samples.len() < MAX_ERROR_SAMPLES {
            self.samples.push(what);
        }
    }
}

/// Baseline connection: the same request until the deadline.
async fn drive_baseline(mut stream: TcpStream, deadline: Instant) -> io::Result<Tally> {
    let request =
        b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Gecko/20\r\n\r\n";
    let mut buf = Vec::with_capacity(4096);
    let mut tally = Tally::default();
    let mut sent = 0;
    while sent < MAX_REQUESTS_PER_CONN && Instant::now() < deadline {
        let (status, _) = exchange(&mut stream, request, &mut buf).await?;
        sent += 1;
        if status == 200 {
            tally.ok += 1;
        } else {
            tally.error(format!("baseline status {status}: {}", String::from_utf8_lossy(&buf[..buf.len().min(300)])));
        }
    }
    Ok(tally)
}

/// Rotation connection: present the current refresh token, keep its successor.
async fn drive_rotation(mut stream: TcpStream, client: &mut Client, deadline: Instant) -> io::Result<Tally> {
    let mut buf = Vec::with_capacity(4096);
    let mut tally = Tally::default();
    let mut request = Vec::with_capacity(512);
    let mut sent = 0;
    while sent < MAX_REQUESTS_PER_CONN && Instant::now() < deadline {
        request.clear();
        request.extend_from_slice(b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: ");
        request.extend_from_slice(USER_AGENT.as_bytes());
        request.extend_from_slice(b"\r\nCookie: ");
        request.extend_from_slice(REFRESH_COOKIE.as_bytes());
        request.push(b'=');
        request.extend_from_slice(client.refresh_token.as_bytes());
        request.extend_from_slice(b"\r\n\r\n");
        let (status, head) = exchange(&mut stream, &request, &mut buf).await?;
        sent += 1;
        let head = std::str::from_utf8(&buf[..head]).unwrap_or("");
        let previous = counter_of(&client.refresh_token);
        let problem = match refresh_cookie(head) {
            _ if status != 200 => Some(format!("status {status}")),
            None => Some("no new refresh cookie".to_owned()),
            Some(next) if counter_of(next) != previous.map(|c| c + 1) => {
                Some(format!("counter {:?} -> {:?} (not a rotation)", previous, counter_of(next)))
            }
            Some(next) => {
                client.refresh_token = next.to_owned();
                None
            }
        };
        match problem {
            None => tally.ok += 1,
            Some(problem) => {
                let text = String::from_utf8_lossy(&buf[..buf.len().min(400)]).into_owned();
                tally.error(format!("rotation of {}: {problem}:\n{text}", client.user));
                // Start a fresh session rather than replay a dead or used token.
                client.refresh_token = login(&mut stream, &client.user, &mut buf).await?;
            }
        }
    }
    Ok(tally)
}

/// Redis-side counters, from `INFO`.
#[derive(Clone, Copy, Default)]
struct RedisStats {
    evalsha: u64,
    set: u64,
    commands: u64,
    cpu_s: f64,
}

fn redis_stats(server: &RedisServer) -> RedisStats {
    let info = server.cmd(&["INFO", "all"]).unwrap_or_else(|e| panic!("INFO: {e}"));
    let calls = |cmd: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
            .and_then(|rest| rest.split(',').next()?.parse().ok())
            .unwrap_or(0)
    };
    let field = |name: &str| -> f64 {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    RedisStats {
        evalsha: calls("evalsha"),
        set: calls("set"),
        commands: field("total_commands_processed") as u64,
        cpu_s: field("used_cpu_user") + field("used_cpu_sys"),
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Baseline,
    Rotation,
}

struct Round {
    ok: u64,
    rate: f64,
    server_cpu: f64,
    client_cpu: f64,
    server_ns_per_request: f64,
    redis_ns_per_request: f64,
    before: RedisStats,
    after: RedisStats,
    errors: u64,
    /// A few error texts.
    samples: Vec<String>,
}

/// Drives one server with every connection for `length`.
async fn round(
    kind: Kind,
    addr: SocketAddr,
    clients: &mut [Client],
    length: Duration,
    server_tid: &str,
    redis: &RedisServer,
) -> io::Result<Round> {
    let mut streams = Vec::with_capacity(clients.len());
    for _ in 0..clients.len() {
        let stream = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        streams.push(stream);
    }
    let client_tid = thread_id();
    let before = redis_stats(redis);
    let (server0, client0) = (cpu_ns(server_tid), cpu_ns(&client_tid));
    let start = Instant::now();
    let deadline = start + length;
    let tallies: Vec<Tally> = match kind {
        Kind::Baseline => {
            let mut tasks = JoinSet::new();
            for stream in streams {
                tasks.spawn(drive_baseline(stream, deadline));
            }
            let mut tallies = Vec::new();
            while let Some(done) = tasks.join_next().await {
                tallies.push(done.map_err(io::Error::other)??);
            }
            tallies
        }
        Kind::Rotation => {
            // Borrowing the clients: join the futures in this task.
            let drives = streams.into_iter().zip(clients.iter_mut()).map(|(s, c)| drive_rotation(s, c, deadline));
            futures::future::try_join_all(drives).await?
        }
    };
    let wall = start.elapsed();
    let server_ns = cpu_ns(server_tid).saturating_sub(server0) as f64;
    let client_ns = cpu_ns(&client_tid).saturating_sub(client0) as f64;
    let after = redis_stats(redis);
    let ok: u64 = tallies.iter().map(|t| t.ok).sum();
    let errors: u64 = tallies.iter().map(|t| t.errors).sum();
    let samples: Vec<String> = tallies.into_iter().flat_map(|t| t.samples).take(MAX_ERROR_SAMPLES).collect();
    let share = |ns: f64| ns / wall.as_nanos() as f64;
    Ok(Round {
        ok,
        rate: ok as f64 / wall.as_secs_f64(),
        server_cpu: share(server_ns),
        client_cpu: share(client_ns),
        server_ns_per_request: server_ns / ok.max(1) as f64,
        redis_ns_per_request: (after.cpu_s - before.cpu_s) * 1e9 / ok.max(1) as f64,
        before,
        after,
        errors,
        samples,
    })
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Per-server results over the measured rounds.
#[derive(Default)]
struct Results {
    rates: Vec<f64>,
    server_costs: Vec<f64>,
    redis_costs: Vec<f64>,
    ok: u64,
    evalsha: u64,
    set: u64,
    commands: u64,
    errors: u64,
    error_samples: Vec<String>,
}

/// What every round needs.
struct Bench<'a> {
    servers: &'a Servers,
    redis: &'a RedisServer,
    clients: Vec<Client>,
    /// A connection to database 1, the baseline's.
    flush: redis::aio::MultiplexedConnection,
}

impl Bench<'_> {
    /// One round against one server; `cycle` is `None` for the warm-up.
    async fn run(&mut self, kind: Kind, length: Duration, cycle: Option<usize>, results: &mut Results) {
        let addr = match kind {
            Kind::Baseline => self.servers.baseline,
            Kind::Rotation => self.servers.rotation,
        };
        let mut r =
            round(kind, addr, &mut self.clients, length, &self.servers.tid, self.redis).await.unwrap_or_else(|e| {
                panic!(
                    "{kind:?} round failed: {e} (a server thread that stops answering altogether is stuck; \
                     see BENCHMARKS.md, \"Session rotation and Redis\")"
                )
            });
        let errors = r.errors;
        if kind == Kind::Baseline {
            redis::cmd("FLUSHDB").query_async::<()>(&mut self.flush).await.expect("FLUSHDB");
        }
        let name = if kind == Kind::Baseline { "baseline" } else { "rotation" };
        results.errors += errors;
        let room = MAX_ERROR_SAMPLES.saturating_sub(results.error_samples.len());
        results.error_samples.extend(r.samples.drain(..).take(room));
        let Some(cycle) = cycle else {
            println!("  warm-up  {name:<8} {:>8.0} req/s, {errors} errors", r.rate);
            return;
        };
        println!(
            "  cycle {cycle} {name:<8} {:>8.0} req/s  CPU per request: server {:>6.1} µs, redis {:>5.1} µs  \
             on-CPU: server {:>3.0}%, client {:>3.0}%  errors {errors}",
            r.rate,
            r.server_ns_per_request / 1000.0,
            r.redis_ns_per_request / 1000.0,
            r.server_cpu * 100.0,
            r.client_cpu * 100.0,
        );
        results.rates.push(r.rate);
        results.server_costs.push(r.server_ns_per_request);
        results.redis_costs.push(r.redis_ns_per_request);
        results.ok += r.ok;
        results.evalsha += r.after.evalsha - r.before.evalsha;
        results.set += r.after.set - r.before.set;
        // The closing INFO counts itself.
        results.commands += (r.after.commands - r.before.commands).saturating_sub(1);
    }
}

fn main() {
    let settings = Settings::from_env();
    let redis = RedisServer::start();
    let servers = start_servers(redis.url(), settings.grace, settings.cache_capacity);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "rotation: tower-sessions' login (one SET of a new {VALUE_BYTES}-byte session per request) vs transparent \
         rotation behind JwtAuth (only a refresh cookie, a fresh one each request)"
    );
    println!(
        "  redis-server {} on 127.0.0.1:{} (loopback); {} keep-alive HTTP/1.1 connections; {} cycles of {:.1} s rounds; \
         grace window {}; verified-token cache {}",
        redis
            .cmd(&["INFO", "server"])
            .ok()
            .and_then(|i| i.lines().find_map(|l| l.strip_prefix("redis_version:")).map(str::trim).map(str::to_owned))
            .unwrap_or_default(),
        redis.port(),
        settings.conns,
        settings.cycles,
        settings.round.as_secs_f64(),
        settings.grace.map_or("10 s (default)".to_owned(), |g| format!("{g:?}")),
        settings.cache_capacity.map_or("10000 tokens (default)".to_owned(), |n| format!("{n} tokens")),
    );
    println!(
        "  {cores} CPU(s): servers on 1 thread, the load generator on 1 thread, redis-server 1 process; all compete \
         for the same cores (and with anything else running)"
    );

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let started = Instant::now();
    let (baseline, rotation) = rt.block_on(async {
        // Database 1 holds the baseline's sessions: flushed after each round.
        let flush_client = redis::Client::open(format!("{}/1", redis.url())).expect("a valid URL");
        let flush = flush_client.get_multiplexed_async_connection().await.expect("connecting to redis-server");
        let mut clients = Vec::with_capacity(settings.conns);
        {
            let mut stream = TcpStream::connect(servers.rotation).await.expect("connecting to the rotation server");
            let mut buf = Vec::new();
            for i in 0..settings.conns {
                let user = format!("user-{i:04}");
                let refresh_token = login(&mut stream, &user, &mut buf).await.expect("logging in");
                clients.push(Client { user, refresh_token });
            }
        }
        let (mut baseline, mut rotation) = (Results::default(), Results::default());
        let mut bench = Bench { servers: &servers, redis: &redis, clients, flush };
        let kinds =
            |first: Kind, second: Kind| [first, second].into_iter().filter(|k| settings.only.is_none_or(|o| o == *k));
        for kind in kinds(Kind::Baseline, Kind::Rotation) {
            let results = if kind == Kind::Baseline { &mut baseline } else { &mut rotation };
            bench.run(kind, settings.warmup, None, results).await;
        }
        for cycle in 1..=settings.cycles {
            // Alternate which server goes first, so drifting noise hits both alike.
            let order =
                if cycle % 2 == 1 { (Kind::Baseline, Kind::Rotation) } else { (Kind::Rotation, Kind::Baseline) };
            for kind in kinds(order.0, order.1) {
                let results = if kind == Kind::Baseline { &mut baseline } else { &mut rotation };
                bench.run(kind, settings.round, Some(cycle), results).await;
            }
        }
        (baseline, rotation)
    });
    drop(servers);

    let (base_rate, rot_rate) = (median(&baseline.rates), median(&rotation.rates));
    let ratio = rot_rate / base_rate;
    println!();
    println!(
        "  {:<9} {:>12} {:>8} {:>8} {:>14} {:>14} {:>8}",
        "server", "median req/s", "min", "max", "server µs/req", "redis µs/req", "errors"
    );
    for (name, r) in [("baseline", &baseline), ("rotation", &rotation)] {
        let min = r.rates.iter().copied().fold(f64::INFINITY, f64::min);
        let max = r.rates.iter().copied().fold(0.0, f64::max);
        println!(
            "  {name:<9} {:>12.0} {min:>8.0} {max:>8.0} {:>14.1} {:>14.1} {:>8}",
            median(&r.rates),
            median(&r.server_costs) / 1000.0,
            median(&r.redis_costs) / 1000.0,
            r.errors
        );
    }
    let verdict = if ratio >= TARGET_RATIO { "ok" } else { "BELOW" };
    println!("  ratio rotation / baseline: {ratio:.3} (target >= {TARGET_RATIO}, DESIGN §4): {verdict}");
    println!(
        "  Redis round trips per rotation: {:.3} (EVALSHA calls {} / rotations {}); commands Redis ran per rotation, \
         the script's own included: {:.3}",
        rotation.evalsha as f64 / rotation.ok.max(1) as f64,
        rotation.evalsha,
        rotation.ok,
        rotation.commands as f64 / rotation.ok.max(1) as f64,
    );
    println!(
        "  baseline: SET calls per request {:.3} ({} / {}); commands Redis ran per request: {:.3}",
        baseline.set as f64 / baseline.ok.max(1) as f64,
        baseline.set,
        baseline.ok,
        baseline.commands as f64 / baseline.ok.max(1) as f64,
    );
    for sample in baseline.error_samples.iter().chain(&rotation.error_samples) {
        println!("  error sample: {sample}");
    }
    println!("  took {:.0} s", started.elapsed().as_secs_f64());
}
