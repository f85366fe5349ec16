//! `-ASK` redirections during live resharding through redis-rs 1.8's async
//! cluster client, and a workaround: the minimal reproduction of the two
//! upstream bugs that made the store route Cluster commands itself
//! (`src/store/redis/cluster.rs`). The ignored tests are the reproductions
//! (`cargo test --test ask_repro -- --ignored --nocapture`).
//!
//! redis-rs answers `-ASK <slot> <addr>` by sending `ASKING` to `<addr>` as a
//! request of its own on the shared (multiplexed) connection, waiting for
//! its reply, then sending the command
//! (`cluster_handling/async_connection/mod.rs`, `get_redirected_connection`).
//! `ASKING` only lets the *next* command of that connection into an
//! importing slot, so any request sent on that connection in between —
//! another redirected command's `ASKING` and command, or other traffic to
//! that node — takes the flag, and the command is answered `-ASK` again or,
//! from the importing node, `-MOVED` back to the source (which makes
//! redis-rs refresh its slot map). Each costs one of the client's retries.
//!
//! [`query_asking_safe`] works around it on a client built with
//! `.retries(0)` (so redis-rs never follows a redirection itself): on `ASK`
//! it sends `ASKING` and the command as one pipeline to the node named by
//! the error (`ClusterConnection::route_pipeline` with
//! `SingleNodeRoutingInfo::ByAddress`); a pipeline is written to the
//! connection as one buffer, so nothing comes between the two.
//!
//! Each run: a 3-master cluster, 80 keys in the slot of `{ask}`, half of
//! them moved to another master, then [`REQUESTS`] requests, [`CONCURRENCY`]
//! at a time over one `ClusterConnection`, while the rest of the keys move
//! (after a third of the requests); the slot is handed over once the
//! traffic is done. Errors are counted by kind and every counter is checked
//! against the increments reported done.
//!
//! A second problem shows up under the same load: when redis-rs refreshes
//! its slot map (on any `MOVED`, e.g. the one a stolen `ASKING` causes, or
//! a slot changing owner) with requests in flight, the connection can wedge
//! for good: the refresh waits for `conn_lock.write()` while requests queued
//! in `conn_lock.read()` (tokio's fair `RwLock`) are never polled again,
//! because `poll_flush` polls only the recovery future until it ends. See
//! [`a_slot_changing_owner_under_load_wedges_the_connection`]; the
//! workaround here avoids the `MOVED`s the race causes, not that bug.
#![cfg(feature = "redis")]

mod support;

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use redis::{
    Cmd, ErrorKind, FromRedisValue, ProtocolVersion, RedisError, RedisResult, ServerErrorKind, Value,
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
    cluster_routing::{RoutingInfo, SingleNodeRoutingInfo},
};
use support::redis_server::RedisCluster;

/// Requests per run, as in the report this reproduces.
const REQUESTS: usize = 6_500;
/// Requests in flight at once.
const CONCURRENCY: usize = 64;
/// Keys of the migrating slot per kind (counters, strings).
const KEYS: usize = 40;
/// How long a run may take (every request timing out would take longer).
const RUN_CEILING: Duration = Duration::from_secs(120);

/// `ASK`s followed by [`query_asking_safe`] (to show the workaround ran).
static ASKS_FOLLOWED: AtomicUsize = AtomicUsize::new(0);

/// The increment script (a stand-in for the store's scripts: one key, `EVALSHA`).
const INCR_SCRIPT: &str = "return redis.call('INCR', KEYS[1])";

/// Runs `cmd` on a cluster connection whose client follows no redirection
/// itself (`.retries(0)`), following them here:
///
/// * `ASK <slot> <host:port>`: `ASKING` and `cmd` as one pipeline to that node;
/// * `MOVED <slot> <host:port>`: `cmd` to that node (redis-rs refreshes its
///   slot map on its own when it sees `MOVED`);
/// * `TRYAGAIN` (a multi-key command during a migration): `cmd` again after
///   a short wait;
///
/// at most 5 attempts in all; any other outcome is returned as it is.
async fn query_asking_safe<T: FromRedisValue>(conn: &mut ClusterConnection, cmd: &Cmd) -> RedisResult<T> {
    let mut result = cmd.query_async::<Value>(conn).await;
    for attempt in 1..5 {
        let Err(err) = &result else { break };
        let kind = err.kind();
        let node = err.redirect_node().and_then(|(addr, _slot)| {
            let (host, port) = addr.rsplit_once(':')?;
            Some(SingleNodeRoutingInfo::ByAddress { host: host.to_owned(), port: port.parse().ok()? })
        });
        result = match (kind, node) {
            (ErrorKind::Server(ServerErrorKind::Ask), Some(node)) => {
                ASKS_FOLLOWED.fetch_add(1, Ordering::Relaxed);
                let mut pipe = redis::pipe();
                pipe.cmd("ASKING").add_command(cmd.clone());
                // Replies from offset 1: `cmd`'s only.
                conn.route_pipeline(pipe, 1, 1, node).await.and_then(|mut replies| match replies.pop() {
                    Some(reply) => reply.extract_error(),
                    None => Err(RedisError::from((ErrorKind::Client, "no reply to the redirected command"))),
                })
            }
            (ErrorKind::Server(ServerErrorKind::Moved), Some(node)) => {
                conn.route_command(cmd.clone(), RoutingInfo::SingleNode(node)).await
            }
            (ErrorKind::Server(ServerErrorKind::TryAgain), _) => {
                tokio::time::sleep(Duration::from_millis(5 * attempt)).await;
                cmd.query_async(conn).await
            }
            _ => break,
        };
    }
    result.and_then(|value| T::from_redis_value(value).map_err(RedisError::from))
}

/// How requests reach Redis.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// The store's client (2 retries), `cmd.query_async`: redis-rs follows
    /// redirections.
    Plain,
    /// As `Plain`, then up to 3 more tries of our own, 5/10/15 ms apart, on
    /// `ASK`/`TRYAGAIN`.
    RetryWithBackoff,
    /// A client with `.retries(0)` and [`query_asking_safe`].
    AskingPipeline,
}

#[derive(Debug, Default)]
struct Outcome {
    ok: usize,
    /// Errors by their first word (`Ask`, `Moved`, `timed` (out), …).
    errors: BTreeMap<String, usize>,
    /// Successful `EVALSHA` increments.
    increments: usize,
}

impl Outcome {
    fn error_count(&self) -> usize {
        self.errors.values().sum()
    }
}

/// The cluster client as the store configures it (`RedisStore::connect`),
/// with `retries` retries.
fn client(cluster: &RedisCluster, retries: u32) -> ClusterClient {
    ClusterClient::builder(cluster.urls())
        .use_protocol(ProtocolVersion::RESP3)
        .connection_timeout(Duration::from_secs(1))
        .response_timeout(Duration::from_secs(1))
        .retries(retries)
        .min_retry_wait(10)
        .max_retry_wait(100)
        .build()
        .expect("a cluster client")
}

fn counter(i: usize) -> String {
    format!("{{ask}}:c:{i}")
}

fn string(i: usize) -> String {
    format!("{{ask}}:s:{i}")
}

/// Sends [`REQUESTS`] requests, [`CONCURRENCY`] at a time, over clones of
/// `conn` (they share its connections): a third `EVALSHA` increments and a
/// third `GET`s of keys of the migrating slot, a third `SET`s of keys in
/// other slots (other users' traffic, reaching the importing node too).
/// `sent` counts the requests started.
async fn traffic(conn: ClusterConnection, sha: String, mode: Mode, sent: Arc<AtomicUsize>) -> Outcome {
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (mut conn, sha, sent, outcome) = (conn.clone(), sha.clone(), sent.clone(), outcome.clone());
            tokio::spawn(async move {
                loop {
                    let i = sent.fetch_add(1, Ordering::Relaxed);
                    if i >= REQUESTS {
                        return;
                    }
                    let (cmd, increment) = match i % 3 {
                        0 => (redis::cmd("EVALSHA").arg(&sha).arg(1).arg(counter(i % KEYS)).clone(), true),
                        1 => (redis::cmd("GET").arg(string(i % KEYS)).clone(), false),
                        _ => (redis::cmd("SET").arg(format!("{{other{}}}:x", i % 97)).arg(i).clone(), false),
                    };
                    let result: RedisResult<Value> = match mode {
                        Mode::Plain => cmd.query_async(&mut conn).await,
                        Mode::RetryWithBackoff => retry_with_backoff(&mut conn, &cmd).await,
                        Mode::AskingPipeline => query_asking_safe(&mut conn, &cmd).await,
                    };
                    let mut outcome = outcome.lock().unwrap();
                    match result {
                        Ok(_) => {
                            outcome.ok += 1;
                            outcome.increments += usize::from(increment);
                        }
                        Err(err) => {
                            let kind = err.to_string().split([' ', ':']).next().unwrap_or_default().to_owned();
                            *outcome.errors.entry(kind).or_default() += 1;
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a traffic task");
    }
    Arc::try_unwrap(outcome).expect("all tasks done").into_inner().unwrap()
}

/// Workaround candidate: our own retries with a wait on `ASK`/`TRYAGAIN`.
async fn retry_with_backoff(conn: &mut ClusterConnection, cmd: &Cmd) -> RedisResult<Value> {
    let mut result = cmd.query_async(conn).await;
    for attempt in 1..=3 {
        match &result {
            Err(err)
                if matches!(
                    err.kind(),
                    ErrorKind::Server(ServerErrorKind::Ask) | ErrorKind::Server(ServerErrorKind::TryAgain)
                ) =>
            {
                tokio::time::sleep(Duration::from_millis(5 * attempt)).await;
                result = cmd.query_async(conn).await;
            }
            _ => break,
        }
    }
    result
}

/// Waits until `sent` reaches `n` (polling; the traffic always advances:
/// every request ends, at worst by its timeout).
async fn wait_until_sent(sent: &AtomicUsize, n: usize, started: Instant) {
    while sent.load(Ordering::Relaxed) < n {
        assert!(started.elapsed() < RUN_CEILING, "traffic stalled before {n} requests");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Waits until every request has been started and answered.
async fn traffic_done(sent: &AtomicUsize, started: Instant) {
    // `sent` passes REQUESTS once per task, when each finds nothing left.
    wait_until_sent(sent, REQUESTS + CONCURRENCY, started).await;
}

/// One run (see the module docs); the slot changes owner after the traffic.
/// Returns the outcome and whether the connection still answers afterwards.
async fn run(mode: Mode) -> (Outcome, bool) {
    let cluster = RedisCluster::start();
    let owner = cluster.node_for_key(b"{ask}");
    for i in 0..KEYS {
        owner.cmd(&["SET", &counter(i), "0"]).expect("SET");
        owner.cmd(&["SET", &string(i), "v"]).expect("SET");
    }
    let slot = cluster.slot_of(b"{ask}");
    let to = (cluster.owner_of_slot(slot) + 1) % 3;

    let client = client(&cluster, if matches!(mode, Mode::AskingPipeline) { 0 } else { 2 });
    let mut conn = client.get_async_connection().await.expect("a cluster connection");
    // Loaded on every node (redis-rs sends SCRIPT LOAD to all of them).
    let sha: String =
        redis::cmd("SCRIPT").arg("LOAD").arg(INCR_SCRIPT).query_async(&mut conn).await.expect("SCRIPT LOAD");

    let migration = cluster.begin_migration(slot, to);
    assert_eq!(migration.move_keys(KEYS), KEYS, "half of the slot's keys moved");
    let started = Instant::now();
    let sent = Arc::new(AtomicUsize::new(0));
    let traffic = tokio::spawn(traffic(conn.clone(), sha, mode, sent.clone()));
    wait_until_sent(&sent, REQUESTS / 3, started).await;
    tokio::task::block_in_place(|| while migration.move_keys(5) > 0 {});
    traffic_done(&sent, started).await;
    tokio::task::block_in_place(|| migration.finish());
    let outcome = traffic.await.expect("the traffic");
    let took = started.elapsed();

    // A connection wedged by the run times out here too.
    let alive = tokio::time::timeout(Duration::from_secs(3), async {
        redis::cmd("GET").arg("{other1}:x").query_async::<Value>(&mut conn).await.is_ok()
    })
    .await
    .unwrap_or(false);
    let fresh = client.get_async_connection().await.expect("a fresh cluster connection");
    let mut fresh = fresh;
    let mut total = 0;
    for i in 0..KEYS {
        let n: usize = redis::cmd("GET").arg(counter(i)).query_async(&mut fresh).await.expect("GET after");
        total += n;
    }
    eprintln!(
        "{mode:?}: {} requests in {took:?}: {} ok, {} errors {:?}; connection alive afterwards: {alive}",
        REQUESTS,
        outcome.ok,
        outcome.error_count(),
        outcome.errors
    );
    // An `ASK`/`MOVED` error means the command did not run; a timeout may
    // hide one that did.
    if !outcome.errors.contains_key("timed") {
        assert_eq!(total, outcome.increments, "increments applied ≠ increments reported done");
    }
    (outcome, alive)
}

/// The failure as reported: requests fail while the slot migrates (and the
/// connection may wedge for good). Asserts that the race shows up, so it is
/// not run by default (it documents redis-rs's behaviour, which may change):
/// `lcargo test --test ask_repro -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "reproduces a redis-rs race; run with --ignored"]
async fn plain_redis_rs_fails_requests_while_a_slot_migrates() {
    let (outcome, _) = run(Mode::Plain).await;
    assert!(outcome.error_count() > 0, "no error this time: {outcome:?}");
}

/// Our own retries with a wait make errors rarer but keep redis-rs's
/// `ASKING` race (and its slot refreshes): printed for comparison only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measures a partial workaround; run with --ignored"]
async fn retrying_with_backoff_only_narrows_the_race() {
    run(Mode::RetryWithBackoff).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_pipelined_with_the_command_survives_a_migration() {
    let (outcome, alive) = run(Mode::AskingPipeline).await;
    assert_eq!(outcome.error_count(), 0, "{outcome:?}");
    assert_eq!(outcome.ok, REQUESTS);
    assert!(alive, "the connection no longer answers");
    let asks = ASKS_FOLLOWED.load(Ordering::Relaxed);
    eprintln!("ASK redirections followed by ASKING + command pipelines: {asks}");
    assert!(asks > 0, "no request met an ASK redirection");
}

/// A slot changing owner under load wedges redis-rs's connection for good,
/// no `ASK` involved: `GET`s ([`CONCURRENCY`] at a time, half of them on an
/// empty slot) while the slot is handed from master to master six times
/// (`CLUSTER SETSLOT <slot> NODE` on every master: `MOVED` from then on, and
/// redis-rs refreshes its slot map with requests in flight). Afterwards the
/// connection times out on every request, while a new one from the same
/// client works. Not run by default (it documents a redis-rs bug).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "reproduces a redis-rs deadlock; run with --ignored"]
async fn a_slot_changing_owner_under_load_wedges_the_connection() {
    let cluster = RedisCluster::start();
    let client = client(&cluster, 2);
    let mut conn = client.get_async_connection().await.expect("a cluster connection");
    let slot = cluster.slot_of(b"{moved}");
    let started = Instant::now();
    let sent = Arc::new(AtomicUsize::new(0));
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (mut conn, sent, outcome) = (conn.clone(), sent.clone(), outcome.clone());
            tokio::spawn(async move {
                loop {
                    let i = sent.fetch_add(1, Ordering::Relaxed);
                    if i >= REQUESTS {
                        return;
                    }
                    let key = if i % 2 == 0 { "{moved}:k".to_owned() } else { format!("{{other{}}}:k", i % 97) };
                    let result: RedisResult<Value> = redis::cmd("GET").arg(key).query_async(&mut conn).await;
                    let mut outcome = outcome.lock().unwrap();
                    match result {
                        Ok(_) => outcome.ok += 1,
                        Err(err) => {
                            let kind = err.to_string().split([' ', ':']).next().unwrap_or_default().to_owned();
                            *outcome.errors.entry(kind).or_default() += 1;
                        }
                    }
                }
            })
        })
        .collect();
    let mut owner = cluster.owner_of_slot(slot);
    for round in 1..=6 {
        wait_until_sent(&sent, round * REQUESTS / 8, started).await;
        let to = (owner + 1) % 3;
        let id = cluster.node_id(to);
        tokio::task::block_in_place(|| {
            for node in [to, owner, 3 - to - owner] {
                cluster.nodes()[node].cmd(&["CLUSTER", "SETSLOT", &slot.to_string(), "NODE", &id]).expect("SETSLOT");
            }
        });
        owner = to;
    }
    for task in tasks {
        task.await.expect("a traffic task");
    }
    let alive = tokio::time::timeout(Duration::from_secs(3), async {
        redis::cmd("GET").arg("{other1}:k").query_async::<Value>(&mut conn).await.is_ok()
    })
    .await
    .unwrap_or(false);
    let mut fresh = client.get_async_connection().await.expect("a fresh connection");
    let fresh_ok = redis::cmd("GET").arg("{other1}:k").query_async::<Value>(&mut fresh).await.is_ok();
    let outcome = outcome.lock().unwrap();
    eprintln!(
        "6 hand-overs under load: {REQUESTS} GETs in {:?}: {} ok, errors {:?}; old connection alive: {alive}; new connection works: {fresh_ok}",
        started.elapsed(),
        outcome.ok,
        outcome.errors
    );
    assert!(fresh_ok, "a new connection does not work either");
    assert!(!alive, "the connection survived this time: {outcome:?}");
}
