//! Real `redis-server` processes for tests and benches: one node
//! ([`RedisServer`]) or a three-master Cluster ([`RedisCluster`]), each on free
//! loopback ports in a fresh temporary directory, killed on drop; plain TCP or
//! TLS ([`RedisServer::start_tls`], [`RedisCluster::start_tls`]).
//!
//! Fault harnesses live in submodules: [`failover`] (a primary, a replica and
//! a switchable address), [`reshard`] (moving a Cluster slot live), [`bulk`]
//! (loading a million sorted-set members), [`tls`] (certificates).
//!
//! Use from a test file with `mod support;` and
//! `support::redis_server::RedisServer::start()`, or from a bench with
//! `#[path = "../tests/support/redis_server.rs"] mod redis_server;` (the
//! submodules come along).
//! Never touches a server already running on this machine (e.g. port 6379).
#![allow(dead_code)] // each test file uses a different part of it

#[path = "redis/bulk.rs"]
pub mod bulk;
#[path = "redis/failover.rs"]
pub mod failover;
#[path = "redis/reshard.rs"]
pub mod reshard;
#[path = "redis/tls.rs"]
pub mod tls;

use std::{
    io::{BufRead, BufReader, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, ChildStdin, Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use tls::Stream;
pub use tls::{ClientAuth, TlsFiles};

/// How long a server may take to answer after starting.
const READY_CEILING: Duration = Duration::from_secs(10);
/// How long a cluster may take to report `cluster_state:ok` on every node.
const CLUSTER_CEILING: Duration = Duration::from_secs(30);

/// One `redis-server` on `127.0.0.1:<port>`, no persistence.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    /// The cluster bus port, for cluster nodes.
    cluster_port: Option<u16>,
    /// Certificates and client authentication, for a TLS-only server.
    tls: Option<(Arc<TlsFiles>, ClientAuth)>,
    /// More `redis-server` arguments (e.g. `--replicaof`).
    extra: Vec<String>,
    dir: PathBuf,
    /// The `sh` guard around `redis-server` (see [`GUARD`]) and the pipe
    /// whose closing kills the server.
    guard: Option<(Child, ChildStdin)>,
}

/// Runs `redis-server` and SIGKILLs it as soon as our end of its stdin pipe
/// closes: on [`RedisServer::stop`], on drop, and when the test process
/// exits or dies, so no server outlives its tests (even a `static` one);
/// then removes its directory.
/// Prints the server's pid first; exits when the server does.
const GUARD: &str = r#"exec 3<&0
redis-server "$@" </dev/null &
pid=$!
echo "$pid"
{ read -r _ <&3; kill -9 "$pid" 2>/dev/null; rm -rf "$TJWT_REDIS_DIR"; } &
wait "$pid""#;

impl RedisServer {
    /// Starts a standalone server on a free port and waits until it answers
    /// (polling `INFO server` until it reports this child's pid).
    ///
    /// Panics when `redis-server` is not installed or does not come up.
    pub fn start() -> Self {
        Self::start_with(false, None, &[])
    }

    /// Starts a TLS-only server (`--port 0 --tls-port P`) with fresh
    /// certificates, asking clients for a certificate without requiring one.
    /// [`url`](Self::url) is then `rediss://127.0.0.1:<port>`; clients must
    /// trust [`TlsFiles::ca_path`] (see [`tls`](Self::tls)).
    pub fn start_tls() -> Self {
        Self::start_tls_with(TlsFiles::generate(), ClientAuth::Optional)
    }

    /// Starts a TLS-only server with these certificates and this client
    /// authentication ([`ClientAuth::Required`] for mutual TLS).
    pub fn start_tls_with(files: Arc<TlsFiles>, auth: ClientAuth) -> Self {
        Self::start_with(false, Some((files, auth)), &[])
    }

    /// Starts a plain server with more `redis-server` arguments
    /// (e.g. `["--maxmemory", "10mb"]`).
    pub fn start_with_args(args: &[&str]) -> Self {
        Self::start_with(false, None, args)
    }

    fn start_with(cluster: bool, tls: Option<(Arc<TlsFiles>, ClientAuth)>, extra: &[&str]) -> Self {
        require_redis_server();
        // A port found free may be taken before the server binds it: retry.
        let mut last_error = String::new();
        for _ in 0..5 {
            let mut server = RedisServer {
                port: free_port(),
                cluster_port: cluster.then(free_port),
                tls: tls.clone(),
                extra: extra.iter().map(|a| (*a).to_owned()).collect(),
                dir: PathBuf::new(),
                guard: None,
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(err) => last_error = err,
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    /// A server shared by every test of this test binary, started on first
    /// use and killed when the binary exits. Tests sharing it must not stop
    /// it, and should keep to their own keys (e.g. a key prefix per test).
    pub fn shared() -> &'static RedisServer {
        static SHARED: OnceLock<RedisServer> = OnceLock::new();
        SHARED.get_or_init(RedisServer::start)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`, or `rediss://127.0.0.1:<port>` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The certificates of a TLS server (the CA to trust, a client
    /// certificate), `None` for a plain one.
    pub fn tls(&self) -> Option<&Arc<TlsFiles>> {
        self.tls.as_ref().map(|(files, _)| files)
    }

    /// A `redis-cli` command aimed at this server (`-h 127.0.0.1 -p <port>`,
    /// and for TLS `--tls --cacert … --cert … --key …`); add the command's
    /// arguments (and `-c` to follow Cluster redirections).
    ///
    /// Panics when `redis-cli` is not installed.
    pub fn cli(&self) -> Command {
        require_binary("redis-cli");
        let mut cli = Command::new("redis-cli");
        cli.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some((files, _)) = &self.tls {
            cli.arg("--tls")
                .arg("--cacert")
                .arg(files.ca_path())
                .arg("--cert")
                .arg(files.client_cert_path())
                .arg("--key")
                .arg(files.client_key_path());
        }
        cli
    }

    /// The process id of the running server, if it runs.
    pub fn pid(&self) -> Option<u32> {
        let info = self.cmd(&["INFO", "server"]).ok()?;
        info.lines().find_map(|l| l.strip_prefix("process_id:")).and_then(|p| p.trim().parse().ok())
    }

    /// Kills the server (SIGKILL, as a crash would) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some((mut guard, stdin)) = self.guard.take() {
            drop(stdin);
            let _ = guard.wait();
        }
    }

    /// Starts the server again on the same port (after [`stop`](Self::stop));
    /// it comes back empty, as persistence is off (a cluster node comes back
    /// outside its cluster).
    pub fn restart(&mut self) {
        self.stop();
        if let Err(err) = self.spawn() {
            panic!("redis-server did not restart on port {}: {err}", self.port);
        }
    }

    /// Sends one command and returns the reply, flattened to text (see
    /// [`command`]); over TLS for a TLS server (with the client certificate).
    pub fn cmd(&self, args: &[&str]) -> Result<String, String> {
        command_on(self.port, self.tls(), args)
    }

    /// As [`cmd`](Self::cmd), binary-safe: arguments and the flattened reply
    /// as bytes.
    pub fn cmd_bytes<A: AsRef<[u8]>>(&self, args: &[A]) -> Result<Vec<Vec<u8>>, String> {
        self.connect()?.cmd_bytes(args)
    }

    /// A new connection to this server (TLS for a TLS server) that stays
    /// open: for several commands on one connection, or pipelines.
    pub fn connect(&self) -> Result<Connection, String> {
        Connection::open(self.port, self.tls())
    }

    fn spawn(&mut self) -> Result<(), String> {
        // A new directory per start: the previous one is removed asynchronously.
        self.dir = fresh_dir();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", GUARD, "sh"])
            .env("TJWT_REDIS_DIR", &self.dir)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"));
        match &self.tls {
            Some((files, auth)) => cmd.args(files.server_args(self.port, *auth)),
            None => cmd.args(["--port", &self.port.to_string()]),
        };
        if self.tls.is_some() && self.cluster_port.is_some() {
            cmd.args(["--tls-cluster", "yes"]);
        }
        cmd.args(&self.extra);
        if let Some(bus) = self.cluster_port {
            // A restarted node starts from an empty nodes.conf: it forgets the cluster.
            cmd.args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]).args([
                "--cluster-port",
                &bus.to_string(),
                "--cluster-node-timeout",
                "5000",
            ]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawning redis-server: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin pipe")?;
        let mut pid = String::new();
        BufReader::new(child.stdout.take().ok_or("no stdout pipe")?)
            .read_line(&mut pid)
            .map_err(|e| format!("reading the server pid: {e}"))?;
        // The port may have been handed to another server too: only our own
        // process counts as ready.
        let own = format!("process_id:{}\r", pid.trim());
        self.guard = Some((child, stdin));
        let deadline = Instant::now() + READY_CEILING;
        loop {
            if let Some((child, _)) = &mut self.guard
                && let Ok(Some(status)) = child.try_wait()
            {
                self.guard = None;
                let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
                return Err(format!("redis-server exited with {status}: {}", log.trim()));
            }
            if self.cmd(&["INFO", "server"]).is_ok_and(|info| info.contains(&own)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!("no answer on port {} within {READY_CEILING:?}", self.port));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of three masters (no replicas) owning all 16384 slots.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled nodes, assigns the slots, joins them, and
    /// waits until every node reports `cluster_state:ok`.
    pub fn start() -> Self {
        Self::start_nodes(None)
    }

    /// As [`start`](Self::start), with TLS only (clients, the cluster bus and
    /// `MIGRATE` between nodes: `--tls-cluster yes`) and fresh certificates,
    /// client certificates optional. The node URLs are `rediss://…`.
    pub fn start_tls() -> Self {
        Self::start_tls_with(TlsFiles::generate(), ClientAuth::Optional)
    }

    /// As [`start_tls`](Self::start_tls) with these certificates and client
    /// authentication.
    pub fn start_tls_with(files: Arc<TlsFiles>, auth: ClientAuth) -> Self {
        Self::start_nodes(Some((files, auth)))
    }

    fn start_nodes(tls: Option<(Arc<TlsFiles>, ClientAuth)>) -> Self {
        let nodes: Vec<RedisServer> = (0..3).map(|_| RedisServer::start_with(true, tls.clone(), &[])).collect();
        let ranges = [(0, 5460), (5461, 10922), (10923, 16383)];
        for (node, (from, to)) in nodes.iter().zip(ranges) {
            node.cmd(&["CLUSTER", "ADDSLOTSRANGE", &from.to_string(), &to.to_string()])
                .unwrap_or_else(|e| panic!("CLUSTER ADDSLOTSRANGE: {e}"));
        }
        for other in &nodes[1..] {
            let (port, bus) = (other.port.to_string(), other.cluster_port.unwrap_or_default().to_string());
            nodes[0]
                .cmd(&["CLUSTER", "MEET", "127.0.0.1", &port, &bus])
                .unwrap_or_else(|e| panic!("CLUSTER MEET: {e}"));
        }
        let deadline = Instant::now() + CLUSTER_CEILING;
        loop {
            let ready = nodes.iter().all(|n| {
                n.cmd(&["CLUSTER", "INFO"])
                    .is_ok_and(|info| info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3"))
            });
            if ready {
                return Self { nodes };
            }
            assert!(Instant::now() < deadline, "cluster not ok within {CLUSTER_CEILING:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A cluster shared by every test of this test binary (a cluster takes
    /// seconds to form), started on first use and killed when the binary exits.
    pub fn shared() -> &'static RedisCluster {
        static SHARED: OnceLock<RedisCluster> = OnceLock::new();
        SHARED.get_or_init(RedisCluster::start)
    }

    /// The node URLs.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The node URLs joined by commas (the form `RedisStore::connect` takes).
    pub fn url(&self) -> String {
        self.urls().join(",")
    }

    /// The certificates of a TLS cluster, `None` for a plain one.
    pub fn tls(&self) -> Option<&Arc<TlsFiles>> {
        self.nodes[0].tls()
    }

    /// The nodes (to query each one, e.g. `SCAN`).
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }
}

/// Sends one command to `127.0.0.1:<port>` over a fresh connection (RESP2)
/// and returns the reply as text: simple and bulk strings as they are,
/// integers in decimal, a nil as `""`, arrays as their elements joined by
/// `'\n'` (nested arrays flattened). An error reply is `Err`.
pub fn command(port: u16, args: &[&str]) -> Result<String, String> {
    command_on(port, None, args)
}

/// As [`command`], over TLS when given certificates (trusting their CA and
/// presenting their client certificate).
pub fn command_on(port: u16, tls: Option<&Arc<TlsFiles>>, args: &[&str]) -> Result<String, String> {
    Connection::open(port, tls)?.cmd(args)
}

/// One open connection to a server (see [`RedisServer::connect`]).
pub struct Connection {
    stream: BufReader<Box<dyn Stream>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connection")
    }
}

impl Connection {
    /// Connects to `127.0.0.1:<port>`, over TLS when given certificates.
    pub fn open(port: u16, tls: Option<&Arc<TlsFiles>>) -> Result<Self, String> {
        Ok(Self { stream: open(port, tls.map(|f| &**f))? })
    }

    /// Sends one command and reads its reply, flattened to text (see [`command`]).
    pub fn cmd(&mut self, args: &[&str]) -> Result<String, String> {
        let values = self.cmd_bytes(args)?;
        Ok(values.iter().map(|v| String::from_utf8_lossy(v)).collect::<Vec<_>>().join("\n"))
    }

    /// Sends one command and reads its reply, binary-safe.
    pub fn cmd_bytes<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Vec<Vec<u8>>, String> {
        self.send(&encode(args))?;
        self.read()
    }

    /// Writes raw RESP (one or more commands: a pipeline).
    pub fn send(&mut self, resp: &[u8]) -> Result<(), String> {
        self.stream.get_mut().write_all(resp).and_then(|()| self.stream.get_mut().flush()).map_err(|e| e.to_string())
    }

    /// Reads one reply, flattened (see [`read_values`]).
    pub fn read(&mut self) -> Result<Vec<Vec<u8>>, String> {
        let mut out = Vec::new();
        read_values(&mut self.stream, &mut out)?;
        Ok(out)
    }
}

/// Opens a connection to `127.0.0.1:<port>` (TLS when given certificates),
/// with a read timeout of 5 s.
fn open(port: u16, tls: Option<&TlsFiles>) -> Result<BufReader<Box<dyn Stream>>, String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let stream: Box<dyn Stream> = match tls {
        Some(files) => files.connect(stream)?,
        None => Box::new(stream),
    };
    Ok(BufReader::with_capacity(64 * 1024, stream))
}

/// One command in RESP.
pub fn encode<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        let arg = arg.as_ref();
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg);
        request.extend_from_slice(b"\r\n");
    }
    request
}

/// Reads one reply, flattened into `out` as [`command`] describes; an error
/// reply is `Err`.
pub fn read_reply(reader: &mut impl BufRead, out: &mut Vec<String>) -> Result<(), String> {
    let mut values = Vec::new();
    read_values(reader, &mut values)?;
    out.extend(values.iter().map(|v| String::from_utf8_lossy(v).into_owned()));
    Ok(())
}

/// Reads one reply as raw bytes, flattened into `out` (binary-safe: keys
/// may hold any byte); an error reply is `Err`.
pub fn read_values(reader: &mut impl BufRead, out: &mut Vec<Vec<u8>>) -> Result<(), String> {
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| e.to_string())?;
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at_checked(1).ok_or("connection closed")?;
    match kind {
        "+" | ":" => out.push(rest.as_bytes().to_vec()),
        "-" => return Err(rest.to_owned()),
        "$" => {
            let len: i64 = rest.parse().map_err(|_| format!("bad bulk length {rest}"))?;
            if len < 0 {
                out.push(Vec::new());
            } else {
                let mut buf = vec![0; len as usize + 2];
                reader.read_exact(&mut buf).map_err(|e| e.to_string())?;
                buf.truncate(len as usize);
                out.push(buf);
            }
        }
        "*" => {
            let len: i64 = rest.parse().map_err(|_| format!("bad array length {rest}"))?;
            for _ in 0..len.max(0) {
                read_values(reader, out)?;
            }
        }
        other => return Err(format!("unexpected reply type {other:?}")),
    }
    Ok(())
}

fn require_redis_server() {
    require_binary("redis-server");
}

/// Panics with an install hint when `binary` (`redis-server`, `redis-cli`) is
/// not on `PATH`.
pub fn require_binary(binary: &str) {
    match Command::new(binary).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "{binary} not found on PATH: run `./test` (it installs it as root on Debian), or install it with \
             `apt-get install -y redis-server redis-tools` (Debian, Ubuntu), `dnf install -y redis` (Fedora) or \
             `brew install redis` (macOS)"
        ),
        Err(e) => panic!("cannot run {binary}: {e}"),
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    // Cluster nodes need their port + 10000 unused by convention only; we
    // pass `--cluster-port` explicitly, so any free port will do.
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("no free loopback port")
}

fn fresh_dir() -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("tjwt-redis-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a temporary directory for redis-server");
    dir
}
