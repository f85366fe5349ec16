//! An instance starting next to a million live revocations (DESIGN §4: loaded
//! in ≤ 5 s, ≤ 100 B resident each, refused from the first request, other
//! Redis traffic never stalled, new revocations still received).
//!
//! ```text
//! cargo bench -p tower-jwt-auth-benches --bench revocation_load
//! REVOCATIONS=200000 cargo bench -p tower-jwt-auth-benches --bench revocation_load
//! ```
//!
//! One `redis-server` on a free loopback port; `REVOCATIONS` (default
//! 1,000,000) members bulk-loaded into `tjwt:revoked` as a fleet's logouts
//! would leave them (`s:<16-char sid>`, expiring within the hour). Then, in
//! this process, a `JwtAuth` on a `RedisStore` is built, as an instance
//! starting up, and measured:
//!
//! - **load time**: from `build()` until the revocation list says it is
//!   loaded (`JwtAuth::revocations_loaded`);
//! - **memory**: heap bytes held after the load minus before, divided by the
//!   entries (a counting global allocator: exact, unlike RSS, which keeps
//!   the freed pages of the replies parsed on the way), and the RSS growth;
//! - **other traffic**: while loading, a second task sends `EVALSHA` logins
//!   through the same store every 2 ms; their latencies (median, max);
//! - **new revocations during the load**: another instance revokes a session
//!   while the list loads; the list must hold it at the end;
//! - **first request**: a revoked session's token through the layer → 401.

#[path = "../tests/support/redis_server.rs"]
mod redis_server;

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicIsize, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{Router, body::Body, routing::get};
use http::{Request, StatusCode, header};
use redis_server::{
    RedisServer,
    bulk::{revocation_members, zadd_bulk},
};
use tower::ServiceExt;
use tower_jwt_auth::{ClientInfo, JwtAuth, SigningKey, store::RedisStore};

/// Counts live heap bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: delegates to the system allocator; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

const SECRET: &[u8] = b"the revocation_load bench's refresh secret";

fn instance(store: RedisStore) -> JwtAuth {
    JwtAuth::builder()
        .signing_key(SigningKey::hs256("k", &[7; 32]).unwrap())
        .refresh_token_secret(SECRET)
        .max_sessions_per_user(1000)
        .store(store)
        .build()
        .unwrap()
}

async fn status(auth: &JwtAuth, token: &str) -> StatusCode {
    let app = Router::new().route("/", get(|| async { "ok" })).layer(auth.clone());
    let request =
        Request::get("/").header(header::AUTHORIZATION, format!("Bearer {token}")).body(Body::empty()).unwrap();
    app.oneshot(request).await.unwrap().status()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("REVOCATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let server = RedisServer::start();
    let url = server.url();

    // A real revoked session, to be refused at the first request.
    let first = instance(RedisStore::connect(&url).await.unwrap());
    let revoked = first.login("victim", &(), ClientInfo::default()).await.unwrap();
    first.revoke_session("victim", revoked.session_id()).await.unwrap();

    let started = Instant::now();
    let added = zadd_bulk(&server, b"tjwt:revoked", revocation_members(n, "s:", unix_ms() + 3_600_000, 11)).unwrap();
    println!("bulk-loaded {added} revocations into Redis in {:.2} s", started.elapsed().as_secs_f64());
    println!("Redis used_memory: {}", server.cmd(&["MEMORY", "USAGE", "tjwt:revoked"]).unwrap_or_default());

    let (heap_before, rss_before) = (LIVE.load(Ordering::Relaxed), rss_bytes());
    let built = Instant::now();
    let store = RedisStore::connect(&url).await.unwrap();
    let auth = instance(store.clone());

    // Other traffic on the same store while the list loads.
    let traffic = {
        let auth = auth.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(10);
            while !auth.revocations_loaded(Duration::ZERO).await && Instant::now() < deadline {
                let t = Instant::now();
                auth.login("bystander", &(), ClientInfo::default()).await.expect("a login while loading");
                latencies.push(t.elapsed());
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            latencies
        })
    };
    // A revocation made elsewhere during the load.
    let during = first.login("during", &(), ClientInfo::default()).await.unwrap();
    first.revoke_session("during", during.session_id()).await.unwrap();

    let loaded = auth.revocations_loaded(Duration::from_secs(60)).await;
    let load_time = built.elapsed();
    assert!(loaded, "not loaded within 60 s");
    let mut latencies = traffic.await.unwrap();
    let (heap_after, rss_after) = (LIVE.load(Ordering::Relaxed), rss_bytes());
    let first_status = status(&auth, revoked.access_token()).await;
    let during_status = status(&auth, during.access_token()).await;

    latencies.sort();
    let median = latencies.get(latencies.len() / 2).copied().unwrap_or_default();
    let max = latencies.last().copied().unwrap_or_default();
    let heap_per = (heap_after - heap_before) as f64 / n as f64;
    let rss_per = rss_after.saturating_sub(rss_before) as f64 / n as f64;
    println!("revocations in Redis:          {}", n + 2);
    println!("load time (build → loaded):    {:.2} s   (target ≤ 5 s)", load_time.as_secs_f64());
    println!("heap held per revocation:      {heap_per:.1} B   (target ≤ 100 B)");
    println!("RSS growth per revocation:     {rss_per:.1} B   (includes freed reply buffers)");
    println!(
        "logins during the load:        {} (median {:.2} ms, max {:.2} ms)",
        latencies.len(),
        median.as_secs_f64() * 1000.0,
        max.as_secs_f64() * 1000.0
    );
    println!("revoked before start, first request: {first_status}");
    println!("revoked during the load:             {during_status}");
    assert_eq!(first_status, StatusCode::UNAUTHORIZED);
    assert_eq!(during_status, StatusCode::UNAUTHORIZED);
}
