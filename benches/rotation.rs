//! Transparent refresh-token rotation through HTTP against Redis on loopback,
//! versus tower-sessions' login path, "a Redis write per request" (DESIGN §4:
//! rotations/s must be at least 1.0 × that rate; reference: one Redis round
//! trip per rotation). Two references: the real `tower-sessions` (the target's
//! baseline) and a bare `SET` handler (a lower bound of the ratio).
//!
//! ```text
//! cargo bench -p tower-jwt-auth-benches --bench rotation                   # 5 cycles of 3 s rounds, about 40 s
//! cargo bench -p tower-jwt-auth-benches --bench rotation -- --quick        # 2 cycles of 1 s rounds, about 10 s
//! ROTATION_SECS=5 ROTATION_CYCLES=7 ROTATION_CONNS=64 cargo bench -p tower-jwt-auth-benches --bench rotation
//! ROTATION_GRACE_MS=0 cargo bench -p tower-jwt-auth-benches --bench rotation      # grace window (default: the crate's, 10 s)
//! ROTATION_CACHE_CAPACITY=0 cargo bench -p tower-jwt-auth-benches --bench rotation # verified-token cache (default: the crate's, 10 000)
//! ```
//!
//! `ROTATION_ONLY=rotation` (or `tower-sessions`, or `set`) runs one server
//! alone, for profiling. `ROTATION_REQUESTS=N` ends every round (warm-up
//! included) after exactly N requests per connection instead of after its
//! duration, so an instruction count (callgrind) covers a known number of
//! requests: `(cycles + 1) × connections × N`, plus one login per connection
//! for `rotation`.
//!
//! `ROTATION_GRACE_MS` and `ROTATION_CACHE_CAPACITY` show what two parts of
//! the crate cost under a stream of rotations (see BENCHMARKS.md): the
//! single-flight map, which keeps each rotation for a while, and the
//! verified-token cache, which every rotation inserts into. A server thread
//! that stops answering (as the cache once made it after some 30–40 k
//! rotations) aborts the bench.
//!
//! One process and one `redis-server` (started on a free loopback port, killed
//! at the end). A server thread (a current-thread Tokio runtime) serves three
//! axum servers on free 127.0.0.1 ports:
//!
//! * `tower-sessions`: the real thing — `tower_sessions::SessionManagerLayer`
//!   (0.14) over `tower_sessions_redis_store::RedisStore` (0.16, a fred pool of
//!   one connection, database 2, flushed after every round outside the
//!   timing), `Expiry::OnInactivity(1 day)`; the handler logs in, inserting a
//!   small user record into the new session, so the layer saves it
//!   (`SET <id> <MessagePack record> NX EXAT …`) and sets the `id` cookie.
//!   The client sends no cookie: every request is a login;
//! * `set`: the bare minimum of that — a handler that writes one new session,
//!   `SET <fresh random key> <200-byte value> PX <1 day>`, through a redis-rs
//!   `ConnectionManager` (database 1, flushed after every round, outside the
//!   timing), then answers 200 with a `Set-Cookie` and a small JSON body;
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
//! The `tower-sessions` client checks for a 200 and an `id` cookie, the `set`
//! client for a 200. Each cycle runs one round per server, reversing the
//! order every other cycle.
//!
//! Printed: each round's rate, the CPU each thread and redis-server spent per
//! request, the medians and the ratios rotation / tower-sessions (the target)
//! and rotation / set, and, from `INFO commandstats`, Redis round trips per
//! rotation (`EVALSHA` calls / rotations) and `SET` calls per login.

#[path = "support/load.rs"]
mod load;
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
use load::{cpu_ns, median, read_response, thread_id};
use redis::aio::ConnectionManager;
use redis_server::RedisServer;
use serde::{Deserialize, Serialize};
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
    sync::oneshot,
    task::JoinSet,
};
use tower_jwt_auth::{Claims, ClientInfo, JwtAuth, SigningKey, store::RedisStore};
use tower_sessions::{Expiry, Session, SessionManagerLayer, cookie::time};
use tower_sessions_redis_store::{
    RedisStore as TowerSessionsRedisStore,
    fred::prelude::{ClientLike, Config as FredConfig, Pool as FredPool},
};

/// Target of DESIGN §4.
const TARGET_RATIO: f64 = 1.0;
/// Hard bound on requests per connection per round, on top of the time bound.
const MAX_REQUESTS_PER_CONN: u64 = 10_000_000;
/// A response must arrive within this; the bench aborts otherwise.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Ceiling on a round that ends by request count (`ROTATION_REQUESTS`).
const COUNTED_ROUND_CEILING: Duration = Duration::from_secs(600);
/// Size of the baseline's session value (a serialized tower-sessions record).
const VALUE_BYTES: usize = 200;
/// The baseline sessions' expiry.
const BASELINE_TTL_MS: u64 = 24 * 3600 * 1000;
/// Ceiling on one baseline `SET`, as `RedisStore` bounds its calls.
const BASELINE_CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// Exactly 40 bytes, as in the memory benchmark.
const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) Gecko/20";
const REFRESH_COOKIE: &str = "__Host-refresh";
/// tower-sessions' default cookie name.
const TOWER_SESSIONS_COOKIE: &str = "id";
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
    /// Requests per connection per round, when rounds end by count (profiling).
    requests: Option<u64>,
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
                Ok("tower-sessions") => Some(Kind::TowerSessions),
                Ok("set" | "baseline") => Some(Kind::Set),
                Ok(other) => panic!("ROTATION_ONLY={other:?}: expected rotation, tower-sessions or set"),
                Err(_) => None,
            },
            requests: env("ROTATION_REQUESTS").filter(|&n| n > 0).map(|n| n.min(MAX_REQUESTS_PER_CONN)),
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

/// What the tower-sessions handler stores at login.
#[derive(Serialize)]
struct SessionUser {
    id: &'static str,
    role: &'static str,
}

/// tower-sessions' login: a value inserted into the new session, which its
/// layer then saves to Redis and names in the `id` cookie.
async fn login_tower_sessions(session: Session) -> Response {
    match session.insert("user", SessionUser { id: "user-0001", role: "admin" }).await {
        Ok(()) => hello().into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

/// The bare `SET` handler: tower-sessions' login reduced to its Redis write.
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

struct Servers {
    set: SocketAddr,
    tower_sessions: SocketAddr,
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

/// Starts the three servers on one current-thread runtime in its own thread
/// (the Redis clients live there too: they spawn their tasks on it).
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
                let set = Router::new().route("/hello", get(login_baseline)).with_state(Baseline { conn, value });

                let config = FredConfig::from_url(&format!("{redis_url}/2")).expect("a valid URL");
                let pool = FredPool::new(config, None, None, None, 1).expect("a fred pool");
                pool.init().await.expect("connecting fred to redis-server");
                let layer = SessionManagerLayer::new(TowerSessionsRedisStore::new(pool))
                    .with_expiry(Expiry::OnInactivity(time::Duration::milliseconds(BASELINE_TTL_MS as i64)));
                let tower_sessions = Router::new().route("/hello", get(login_tower_sessions)).layer(layer);

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
                for router in [set, tower_sessions, rotation] {
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
    Servers {
        set: addrs[0],
        tower_sessions: addrs[1],
        rotation: addrs[2],
        tid,
        stop: Some(stop_tx),
        thread: Some(thread),
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
    set_cookie(head, REFRESH_COOKIE)
}

/// The value of the cookie `name` a response head sets, if not empty.
fn set_cookie<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (header, value) = line.split_once(':')?;
        if !header.eq_ignore_ascii_case("set-cookie") {
            return None;
        }
        let pair = value.trim().split(';').next()?;
        let (cookie, value) = pair.split_once('=')?;
        (cookie == name && !value.is_empty()).then_some(value)
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
    /// 200 responses (set), 200 responses with an `id` cookie (tower-sessions)
    /// or 200 responses with a counter advance (rotation).
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

/// Login connection (`set`, `tower-sessions`): the same request, without a
/// cookie, until the deadline or `max` requests; `cookie` is the cookie each
/// response must set, if any.
async fn drive_login(mut stream: TcpStream, cookie: Option<&str>, deadline: Instant, max: u64) -> io::Result<Tally> {
    let request =
        b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Gecko/20\r\n\r\n";
    let mut buf = Vec::with_capacity(4096);
    let mut tally = Tally::default();
    let mut sent = 0;
    while sent < max && Instant::now() < deadline {
        let (status, head) = exchange(&mut stream, request, &mut buf).await?;
        sent += 1;
        let cookie_set = cookie.is_none_or(|name| {
            std::str::from_utf8(&buf[..head]).ok().and_then(|head| set_cookie(head, name)).is_some()
        });
        if status == 200 && cookie_set {
            tally.ok += 1;
        } else {
            let text = String::from_utf8_lossy(&buf[..buf.len().min(300)]).into_owned();
            tally.error(format!("login status {status}, cookie {cookie:?} set: {cookie_set}: {text}"));
        }
    }
    Ok(tally)
}

/// Rotation connection: present the current refresh token, keep its successor.
async fn drive_rotation(mut stream: TcpStream, client: &mut Client, deadline: Instant, max: u64) -> io::Result<Tally> {
    let mut buf = Vec::with_capacity(4096);
    let mut tally = Tally::default();
    let mut request = Vec::with_capacity(512);
    let mut sent = 0;
    while sent < max && Instant::now() < deadline {
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
    Set,
    TowerSessions,
    Rotation,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Set, Kind::TowerSessions, Kind::Rotation];

    fn name(self) -> &'static str {
        match self {
            Kind::Set => "set",
            Kind::TowerSessions => "tower-sessions",
            Kind::Rotation => "rotation",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The Redis database the server writes to, flushed after each round (`None`: kept).
    fn flushed_db(self) -> Option<u8> {
        match self {
            Kind::Set => Some(1),
            Kind::TowerSessions => Some(2),
            Kind::Rotation => None,
        }
    }
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
    requests: Option<u64>,
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
    let (deadline, max) = match requests {
        Some(n) => (start + COUNTED_ROUND_CEILING, n),
        None => (start + length, MAX_REQUESTS_PER_CONN),
    };
    let tallies: Vec<Tally> = match kind {
        Kind::Set | Kind::TowerSessions => {
            let cookie = (kind == Kind::TowerSessions).then_some(TOWER_SESSIONS_COOKIE);
            let mut tasks = JoinSet::new();
            for stream in streams {
                tasks.spawn(drive_login(stream, cookie, deadline, max));
            }
            let mut tallies = Vec::new();
            while let Some(done) = tasks.join_next().await {
                tallies.push(done.map_err(io::Error::other)??);
            }
            tallies
        }
        Kind::Rotation => {
            // Borrowing the clients: join the futures in this task.
            let drives = streams.into_iter().zip(clients.iter_mut()).map(|(s, c)| drive_rotation(s, c, deadline, max));
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
    requests: Option<u64>,
    /// A connection to Redis, for flushing the login servers' databases.
    flush: redis::aio::MultiplexedConnection,
}

impl Bench<'_> {
    /// One round against one server; `cycle` is `None` for the warm-up.
    async fn run(&mut self, kind: Kind, length: Duration, cycle: Option<usize>, results: &mut Results) {
        let addr = match kind {
            Kind::Set => self.servers.set,
            Kind::TowerSessions => self.servers.tower_sessions,
            Kind::Rotation => self.servers.rotation,
        };
        let mut r = round(kind, addr, &mut self.clients, length, self.requests, &self.servers.tid, self.redis)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{kind:?} round failed: {e} (a server thread that stops answering altogether is stuck; \
                     see BENCHMARKS.md, \"Session rotation and Redis\")"
                )
            });
        let errors = r.errors;
        if let Some(db) = kind.flushed_db() {
            redis::cmd("SELECT").arg(db).query_async::<()>(&mut self.flush).await.expect("SELECT");
            redis::cmd("FLUSHDB").query_async::<()>(&mut self.flush).await.expect("FLUSHDB");
        }
        let name = kind.name();
        results.errors += errors;
        let room = MAX_ERROR_SAMPLES.saturating_sub(results.error_samples.len());
        results.error_samples.extend(r.samples.drain(..).take(room));
        let Some(cycle) = cycle else {
            println!("  warm-up  {name:<14} {:>8.0} req/s, {errors} errors", r.rate);
            return;
        };
        println!(
            "  cycle {cycle} {name:<14} {:>8.0} req/s  CPU per request: server {:>6.1} µs, redis {:>5.1} µs  \
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
        "rotation: transparent rotation behind JwtAuth (only a refresh cookie, a fresh one each request) vs \
         tower-sessions' login (a new session saved to Redis per request) and a bare SET of a new {VALUE_BYTES}-byte \
         session per request"
    );
    println!(
        "  redis-server {} on 127.0.0.1:{} (loopback); {} keep-alive HTTP/1.1 connections; {}; grace window {}; \
         verified-token cache {}",
        redis
            .cmd(&["INFO", "server"])
            .ok()
            .and_then(|i| i.lines().find_map(|l| l.strip_prefix("redis_version:")).map(str::trim).map(str::to_owned))
            .unwrap_or_default(),
        redis.port(),
        settings.conns,
        match settings.requests {
            Some(n) => format!("{} cycles of {n} requests per connection", settings.cycles),
            None => format!("{} cycles of {:.1} s rounds", settings.cycles, settings.round.as_secs_f64()),
        },
        settings.grace.map_or("10 s (default)".to_owned(), |g| format!("{g:?}")),
        settings.cache_capacity.map_or("10000 tokens (default)".to_owned(), |n| format!("{n} tokens")),
    );
    println!(
        "  {cores} CPU(s): servers on 1 thread, the load generator on 1 thread, redis-server 1 process; all compete \
         for the same cores (and with anything else running)"
    );

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let started = Instant::now();
    let results = rt.block_on(async {
        let flush_client = redis::Client::open(redis.url()).expect("a valid URL");
        let flush = flush_client.get_multiplexed_async_connection().await.expect("connecting to redis-server");
        let mut clients = Vec::with_capacity(settings.conns);
        if settings.only.is_none_or(|only| only == Kind::Rotation) {
            let mut stream = TcpStream::connect(servers.rotation).await.expect("connecting to the rotation server");
            let mut buf = Vec::new();
            for i in 0..settings.conns {
                let user = format!("user-{i:04}");
                let refresh_token = login(&mut stream, &user, &mut buf).await.expect("logging in");
                clients.push(Client { user, refresh_token });
            }
        } else {
            // Only the number of connections matters to the other servers.
            clients.extend((0..settings.conns).map(|_| Client { user: String::new(), refresh_token: String::new() }));
        }
        let mut results: [Results; 3] = Default::default();
        let mut bench = Bench { servers: &servers, redis: &redis, clients, requests: settings.requests, flush };
        let selected = |kind: &Kind| settings.only.is_none_or(|only| only == *kind);
        let length = |round: Duration| if settings.requests.is_some() { COUNTED_ROUND_CEILING } else { round };
        for kind in Kind::ALL.into_iter().filter(selected) {
            bench.run(kind, length(settings.warmup), None, &mut results[kind.index()]).await;
        }
        for cycle in 1..=settings.cycles {
            // Reverse the order every other cycle, so drifting noise hits all alike.
            let mut order = Kind::ALL;
            if cycle % 2 == 0 {
                order.reverse();
            }
            for kind in order.into_iter().filter(selected) {
                bench.run(kind, length(settings.round), Some(cycle), &mut results[kind.index()]).await;
            }
        }
        results
    });
    drop(servers);

    println!();
    println!(
        "  {:<14} {:>12} {:>8} {:>8} {:>14} {:>14} {:>8}",
        "server", "median req/s", "min", "max", "server µs/req", "redis µs/req", "errors"
    );
    for kind in Kind::ALL {
        let r = &results[kind.index()];
        if r.rates.is_empty() {
            continue;
        }
        let min = r.rates.iter().copied().fold(f64::INFINITY, f64::min);
        let max = r.rates.iter().copied().fold(0.0, f64::max);
        println!(
            "  {:<14} {:>12.0} {min:>8.0} {max:>8.0} {:>14.1} {:>14.1} {:>8}",
            kind.name(),
            median(&r.rates),
            median(&r.server_costs) / 1000.0,
            median(&r.redis_costs) / 1000.0,
            r.errors
        );
    }
    let [set, tower_sessions, rotation] = &results;
    let rate = |r: &Results| median(&r.rates);
    if !rotation.rates.is_empty() && !tower_sessions.rates.is_empty() {
        let ratio = rate(rotation) / rate(tower_sessions);
        let verdict = if ratio >= TARGET_RATIO { "ok" } else { "BELOW" };
        println!("  ratio rotation / tower-sessions: {ratio:.3} (target >= {TARGET_RATIO}, DESIGN §4): {verdict}");
    }
    if !rotation.rates.is_empty() && !set.rates.is_empty() {
        println!(
            "  ratio rotation / set: {:.3} (a lower bound: a bare SET handler does less than any session layer)",
            rate(rotation) / rate(set)
        );
    }
    if !rotation.rates.is_empty() {
        println!(
            "  Redis round trips per rotation: {:.3} (EVALSHA calls {} / rotations {}); commands Redis ran per \
             rotation, the script's own included: {:.3}",
            rotation.evalsha as f64 / rotation.ok.max(1) as f64,
            rotation.evalsha,
            rotation.ok,
            rotation.commands as f64 / rotation.ok.max(1) as f64,
        );
    }
    for (name, r) in [("tower-sessions", tower_sessions), ("set", set)] {
        if !r.rates.is_empty() {
            println!(
                "  {name}: SET calls per login {:.3} ({} / {}); commands Redis ran per login: {:.3}",
                r.set as f64 / r.ok.max(1) as f64,
                r.set,
                r.ok,
                r.commands as f64 / r.ok.max(1) as f64,
            );
        }
    }
    for sample in results.iter().flat_map(|r| &r.error_samples) {
        println!("  error sample: {sample}");
    }
    println!("  took {:.0} s", started.elapsed().as_secs_f64());
}
