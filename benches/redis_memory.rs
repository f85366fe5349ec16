//! Redis memory per session and single-node rotation latency of `RedisStore`
//! (DESIGN §4: ≤ 320 B per session with a 40-byte user agent).
//!
//! Starts its own `redis-server` on a free loopback port, creates 100,002
//! sessions (3 per user, 16-character sids as the session layer makes them,
//! a 40-byte user agent, `{"role":"admin"}` claims, an IPv4 address), and
//! prints the `used_memory` growth per session and the encoding of one user's
//! hash; then times sequential rotations of one session.
//!
//! Run: `cargo bench -p tower-jwt-auth-benches --bench redis_memory` (needs `redis-server` on PATH).

#[path = "../tests/support/redis_server.rs"]
mod redis_server;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use redis_server::RedisServer;
use tokio::task::JoinSet;
use tower_jwt_auth::store::{NewSession, RedisStore, RotateOutcome, SessionPolicy, SessionStore};

const USERS: usize = 33_334;
const PER_USER: usize = 3;
const ROTATIONS: usize = 10_000;
const IN_FLIGHT: usize = 64;
/// Exactly 40 bytes.
const AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) Gecko/20";

fn policy() -> SessionPolicy {
    SessionPolicy {
        idle_ttl: Duration::from_secs(14 * 86_400),
        absolute_ttl: Duration::from_secs(30 * 86_400),
        grace: Duration::from_secs(10),
        max_sessions: Some(5),
        revocation_ttl: Duration::from_secs(900),
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn session_id() -> String {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).unwrap();
    URL_SAFE_NO_PAD.encode(bytes)
}

fn user_id(i: usize) -> String {
    format!("user-{i:08}")
}

fn used_memory(server: &RedisServer) -> i64 {
    let info = server.cmd(&["INFO", "memory"]).unwrap();
    info.lines().find_map(|l| l.strip_prefix("used_memory:")).unwrap().trim().parse().unwrap()
}

fn main() {
    assert_eq!(AGENT.len(), 40);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(run());
}

async fn run() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let before = used_memory(&server);

    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..USERS * PER_USER {
        if tasks.len() >= IN_FLIGHT {
            tasks.join_next().await.unwrap().unwrap();
        }
        let store = store.clone();
        tasks.spawn(async move {
            let session = NewSession {
                user_id: user_id(i / PER_USER),
                sid: session_id(),
                claims: r#"{"role":"admin"}"#.into(),
                user_agent: Some(AGENT.into()),
                ip: Some("203.0.113.45".into()),
                now_ms: now_ms(),
            };
            assert!(store.create(session, &policy()).await.unwrap().is_empty());
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let created = USERS * PER_USER;
    let elapsed = started.elapsed();
    let after = used_memory(&server);
    let key = format!("tjwt:{{{}}}", user_id(0));
    println!(
        "redis-server: {}",
        server.cmd(&["INFO", "server"]).unwrap().lines().find(|l| l.starts_with("redis_version")).unwrap_or("?").trim()
    );
    println!("sessions created: {created} ({USERS} users × {PER_USER}) in {elapsed:.2?}");
    println!("used_memory: {before} -> {after} bytes");
    println!("redis memory per session: {:.1} bytes", (after - before) as f64 / created as f64);
    println!(
        "one user's key {key}: encoding {}, {} fields, MEMORY USAGE {} bytes",
        server.cmd(&["OBJECT", "ENCODING", &key]).unwrap(),
        server.cmd(&["HLEN", &key]).unwrap(),
        server.cmd(&["MEMORY", "USAGE", &key]).unwrap(),
    );

    let (user, sid, t) = (user_id(USERS + 1), session_id(), now_ms());
    let session = NewSession {
        user_id: user.clone(),
        sid: sid.clone(),
        claims: r#"{"role":"admin"}"#.into(),
        user_agent: Some(AGENT.into()),
        ip: Some("203.0.113.45".into()),
        now_ms: t,
    };
    store.create(session, &policy()).await.unwrap();
    let mut latencies = Vec::with_capacity(ROTATIONS);
    for counter in 0..ROTATIONS as u64 {
        let started = Instant::now();
        let outcome = store.rotate(&user, &sid, counter, t + counter, &policy()).await.unwrap();
        latencies.push(started.elapsed());
        assert!(matches!(outcome, RotateOutcome::Rotated(_)));
    }
    latencies.sort_unstable();
    println!(
        "rotate latency over {ROTATIONS} sequential calls (single node, loopback): median {:.1?}, p99 {:.1?}, max {:.1?}",
        latencies[ROTATIONS / 2],
        latencies[ROTATIONS * 99 / 100],
        latencies[ROTATIONS - 1],
    );
}
