//! A primary, a replica and a stable address in front ([`Failover`]) for
//! tests where a failover loses acknowledged writes, and the TCP [`Forwarder`].
//!
//! Redis replicates asynchronously: a write the primary acknowledged may not
//! have reached the replica when the primary dies. [`Failover`] makes that
//! happen on purpose: the replica replicates through a [`Forwarder`] that
//! [`Failover::partition_replica`] cuts, so writes after the cut never reach
//! it; [`Failover::fail_over`] then kills the primary, promotes the replica
//! and switches the address clients use (as a DNS name or virtual IP of a
//! managed Redis would), dropping their connections.
//!
//! ```ignore
//! let mut redis = Failover::start();
//! // …the store connects to redis.url(), writes A…
//! redis.wait_in_sync();
//! redis.partition_replica();
//! // …the store writes B: acknowledged by the primary only…
//! redis.fail_over();
//! // …the store reconnects to the former replica: A is there, B is not.
//! ```

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::{ClientAuth, READY_CEILING, RedisServer, TlsFiles};

/// How long a replica may take to catch up with its primary.
const SYNC_CEILING: Duration = Duration::from_secs(30);

/// A primary, its replica and a [`Forwarder`] in front of the primary.
#[derive(Debug)]
pub struct Failover {
    primary: RedisServer,
    replica: RedisServer,
    /// The address clients use: the primary's, then the replica's.
    front: Forwarder,
    /// The replication link: the replica connects to the primary through it.
    link: Forwarder,
}

impl Failover {
    /// Starts a primary and a replica of it (plain TCP), and waits until the
    /// replica is in sync. Clients connect to [`url`](Self::url).
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// As [`start`](Self::start), with TLS (replication too) and fresh
    /// certificates; [`url`](Self::url) is then `rediss://…`.
    pub fn start_tls() -> Self {
        Self::start_with(Some((TlsFiles::generate(), ClientAuth::Optional)))
    }

    fn start_with(tls: Option<(Arc<TlsFiles>, ClientAuth)>) -> Self {
        // No wait before a full sync (Redis 7 waits 5 s for more replicas).
        let primary = RedisServer::start_with(false, tls.clone(), &["--repl-diskless-sync-delay", "0"]);
        let link = Forwarder::start(primary.port());
        let replica = RedisServer::start_with(
            false,
            tls,
            &["--replicaof", "127.0.0.1", &link.port().to_string(), "--repl-ping-replica-period", "1"],
        );
        let front = Forwarder::start(primary.port());
        let failover = Self { primary, replica, front, link };
        failover.wait_in_sync();
        failover
    }

    /// The stable address: `redis://127.0.0.1:<front port>` (`rediss://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.primary.tls().is_some() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.front.port())
    }

    /// The primary (stopped after [`fail_over`](Self::fail_over)).
    pub fn primary(&self) -> &RedisServer {
        &self.primary
    }

    /// The replica (the primary after [`fail_over`](Self::fail_over)).
    pub fn replica(&self) -> &RedisServer {
        &self.replica
    }

    /// The forwarder clients connect to.
    pub fn front(&self) -> &Forwarder {
        &self.front
    }

    /// A connection through the stable address, as a client would open.
    pub fn front_connection(&self) -> super::Connection {
        super::Connection::open(self.front.port(), self.primary.tls()).expect("connecting through the forwarder")
    }

    /// Sends one command through the stable address, as a client would.
    pub fn cmd(&self, args: &[&str]) -> Result<String, String> {
        super::command_on(self.front.port(), self.primary.tls(), args)
    }

    /// Waits until the replica's link to the primary is up and it has applied
    /// everything the primary has written (equal replication offsets).
    ///
    /// Panics after 30 s.
    pub fn wait_in_sync(&self) {
        let deadline = Instant::now() + SYNC_CEILING;
        loop {
            let replica = self.replica.cmd(&["INFO", "replication"]).unwrap_or_default();
            let primary = self.primary.cmd(&["INFO", "replication"]).unwrap_or_default();
            let offset = |info: &str| field(info, "master_repl_offset");
            if field(&replica, "master_link_status").as_deref() == Some("up")
                && offset(&replica).is_some()
                && offset(&replica) == offset(&primary)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "replica not in sync within {SYNC_CEILING:?}:\nprimary:\n{primary}\nreplica:\n{replica}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Cuts the replication link: from the moment this returns, nothing the
    /// primary writes reaches the replica (it keeps trying to reconnect and
    /// is refused). Waits until the replica reports its link down.
    pub fn partition_replica(&self) {
        self.link.cut();
        let deadline = Instant::now() + READY_CEILING;
        while field(&self.replica.cmd(&["INFO", "replication"]).unwrap_or_default(), "master_link_status").as_deref()
            != Some("down")
        {
            assert!(Instant::now() < deadline, "the replica still reports its link up after {READY_CEILING:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Fails over: kills the primary (SIGKILL), promotes the replica
    /// (`REPLICAOF NO ONE`) and points the stable address at it, dropping
    /// every connection made through it. Writes the replica had not received
    /// (all those after [`partition_replica`](Self::partition_replica)) are lost.
    pub fn fail_over(&mut self) {
        self.primary.stop();
        self.replica.cmd(&["REPLICAOF", "NO", "ONE"]).unwrap_or_else(|e| panic!("REPLICAOF NO ONE: {e}"));
        let deadline = Instant::now() + READY_CEILING;
        while field(&self.replica.cmd(&["INFO", "replication"]).unwrap_or_default(), "role").as_deref()
            != Some("master")
        {
            assert!(Instant::now() < deadline, "the replica is not a primary after {READY_CEILING:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
        self.front.switch_to(self.replica.port());
    }
}

/// The value of `name:` in an `INFO` reply.
fn field(info: &str, name: &str) -> Option<String> {
    info.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')).map(|v| v.trim().to_owned())
}

/// A TCP forwarder on a free loopback port to a switchable target port:
/// each accepted connection is paired with a new connection to the target.
///
/// Written with threads and blocking sockets rather than on Tokio so it
/// works the same from synchronous benches and from any test runtime (no
/// runtime to nest or to drop inside another); it carries a handful of
/// connections.
#[derive(Debug)]
pub struct Forwarder {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    stopping: AtomicBool,
    next_id: AtomicU64,
}

#[derive(Debug)]
struct State {
    /// Where new connections go; `None` refuses them (accepted, then closed).
    target: Option<u16>,
    /// Both sockets of each live pair, to cut them.
    pairs: HashMap<u64, (TcpStream, TcpStream)>,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes a pair (both directions of both sockets) and forgets it.
    fn close(&self, id: u64) {
        if let Some((a, b)) = self.state().pairs.remove(&id) {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }
}

impl Forwarder {
    /// Starts forwarding a free loopback port to `127.0.0.1:<target>`.
    pub fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free loopback port");
        let port = listener.local_addr().expect("a bound address").port();
        let shared = Arc::new(Shared {
            state: Mutex::new(State { target: Some(target), pairs: HashMap::new() }),
            stopping: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
        });
        let acceptor = {
            let shared = shared.clone();
            std::thread::spawn(move || accept_loop(&listener, &shared))
        };
        Self { port, shared, acceptor: Some(acceptor) }
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where new connections go, `None` when they are refused.
    pub fn target(&self) -> Option<u16> {
        self.shared.state().target
    }

    /// Sends new connections to `127.0.0.1:<target>` and closes every
    /// existing one (their clients see the connection drop and reconnect).
    pub fn switch_to(&self, target: u16) {
        self.reset(Some(target));
    }

    /// Closes every existing connection and refuses new ones (accepted,
    /// then closed at once), as a network partition would.
    pub fn cut(&self) {
        self.reset(None);
    }

    /// Closes every existing connection, keeping the target.
    pub fn drop_connections(&self) {
        let target = self.target();
        self.reset(target);
    }

    /// The number of connections being forwarded now.
    pub fn connections(&self) -> usize {
        self.shared.state().pairs.len()
    }

    fn reset(&self, target: Option<u16>) {
        let mut state = self.shared.state();
        state.target = target;
        for (_, (a, b)) in state.pairs.drain() {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.reset(None);
        // Wake the acceptor blocked in `accept`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        let _ = client.set_nodelay(true);
        // Connect and register under the lock, so a switch cannot miss a
        // connection made to the previous target.
        let mut state = shared.state();
        let Some(target) = state.target else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = upstream.set_nodelay(true);
        let (Ok(client_half), Ok(upstream_half), Ok(client_reg), Ok(upstream_reg)) =
            (client.try_clone(), upstream.try_clone(), client.try_clone(), upstream.try_clone())
        else {
            continue;
        };
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        state.pairs.insert(id, (client_reg, upstream_reg));
        drop(state);
        for (from, to) in [(client, upstream_half), (upstream, client_half)] {
            let shared = shared.clone();
            std::thread::spawn(move || {
                pump(from, to);
                shared.close(id);
            });
        }
    }
}

/// Copies `from` to `to` until either side closes.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}
