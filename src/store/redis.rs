//! The Redis [`SessionStore`] (single node or Redis Cluster): one Lua script
//! per state change, all of a user's sessions packed in one small hash.

use std::{
    sync::{Arc, Mutex, PoisonError, Weak},
    time::Duration,
};

use redis::{
    Cmd, ErrorKind, FromRedisValue, ProtocolVersion, PushInfo, PushKind, RedisError, RedisFuture, RedisWrite, Script,
    ServerErrorKind, ToRedisArgs, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection},
    cluster::{ClusterClient, ClusterConfig},
    cluster_async::ClusterConnection,
};
use tokio::sync::{mpsc, watch};

use super::{NewSession, RotateOutcome, SessionPolicy, SessionRecord, SessionStore, StoreError, StoreFuture};
use crate::revocation::{RevocationList, now_ms};

/// Bytes of metadata at the start of chunk 0.
const META_LEN: usize = 37;
/// Largest chunk (and so hash value) written while a session fits 255 chunks.
const CHUNK: usize = 64;
/// Ceiling on any one store call, connection included (DESIGN §2.9).
const CALL_TIMEOUT: Duration = Duration::from_millis(1000);
/// Ceilings on connecting and on one answer, inside [`CALL_TIMEOUT`].
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
/// Reconnection backoff of the revocation subscriber.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How often the subscriber checks its connection and whether it is still wanted.
const HEARTBEAT: Duration = Duration::from_secs(2);

/// Shared Lua helpers, prepended to every session script. See the module
/// docs for the layout they read and write (offsets here are 1-based).
const LUA_PRELUDE: &str = r"
local function rd(s, o)
  local a, b, c, d, e, f = string.byte(s, o, o + 5)
  return ((((a * 256 + b) * 256 + c) * 256 + d) * 256 + e) * 256 + f
end
local function wr(n)
  local t = {}
  for i = 6, 1, -1 do t[i] = n % 256; n = math.floor(n / 256) end
  return string.char(t[1], t[2], t[3], t[4], t[5], t[6])
end
local function live(m, now) return now < rd(m, 13) and now < rd(m, 7) end
local function fields(sid, m)
  local t = {}
  for k = 0, string.byte(m, 37) - 1 do t[k + 1] = string.char(k) .. sid end
  return t
end
local function drop(key, sid, m) redis.call('HDEL', key, unpack(fields(sid, m))) end
-- Pushes the key's TTL up to at least `ttl` ms, never down: one PEXPIRE ... GT on
-- Redis 7+ (which knows REDIS_VERSION_NUM); PTTL then PEXPIRE when GT declined
-- (a key without TTL) or on Redis 6.2.
local function extend(key, ttl)
  if redis.REDIS_VERSION_NUM and redis.call('PEXPIRE', key, ttl, 'GT') == 1 then return end
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
end
local function scan(key)
  local all, out = redis.call('HGETALL', key), {}
  for i = 1, #all, 2 do
    if string.byte(all[i], 1) == 0 then out[#out + 1] = {string.sub(all[i], 2), all[i + 1]} end
  end
  return out, all
end
";

/// `KEYS[1]` user hash; `ARGV`: now, sid, cap (0: none), channel, until, chunk 0, chunk 1, …
/// Returns the evicted sids.
const LUA_CREATE: &str = r"
local key, now, sid, cap = KEYS[1], tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local old = redis.call('HGET', key, '\0' .. sid)
if old then drop(key, sid, old) end
local others, newest = {}, 0
for _, s in ipairs(scan(key)) do
  if live(s[2], now) then
    others[#others + 1] = s
    newest = math.max(newest, rd(s[2], 1))
  else
    drop(key, s[1], s[2])
  end
end
-- Creation times are unique per user, so the oldest session is always well defined.
local meta = ARGV[6]
if newest >= rd(meta, 1) then meta = wr(newest + 1) .. string.sub(meta, 7) end
local args = {string.char(0) .. sid, meta}
for k = 1, #ARGV - 6 do
  args[#args + 1] = string.char(k) .. sid
  args[#args + 1] = ARGV[6 + k]
end
redis.call('HSET', key, unpack(args))
local evicted, first = {}, 1
if cap > 0 and #others + 1 > cap then
  table.sort(others, function(a, b)
    local x, y = rd(a[2], 1), rd(b[2], 1)
    if x ~= y then return x < y end
    return a[1] < b[1]
  end)
  first = #others + 2 - cap
  for i = 1, first - 1 do
    drop(key, others[i][1], others[i][2])
    redis.call('PUBLISH', ARGV[4], ARGV[5] .. ':' .. others[i][1])
    evicted[#evicted + 1] = others[i][1]
  end
end
local latest = rd(ARGV[6], 13)
for i = first, #others do latest = math.max(latest, rd(others[i][2], 13)) end
redis.call('PEXPIRE', key, latest - now)
return evicted
";

/// `KEYS[1]` user hash; `ARGV`: sid, presented, now, grace, idle ttl, channel, until.
/// Returns `{'N'}`, `{'T'}`, or `{'R' | 'P', chunk 0, chunk 1, …}`.
///
/// The hot path, kept to three commands for a session of one or two chunks
/// (a 40-byte user agent makes two): chunks 0 and 1 in one `HMGET`, the new
/// chunk 0 in one `HSET`, and `extend`. `struct` (a C library every Redis
/// ships to scripts) reads and writes the metadata at once: Redis CPU per
/// rotation is mostly per-command and per-Lua-operation overhead.
const LUA_ROTATE: &str = r"
local key, sid = KEYS[1], ARGV[1]
local presented, now, grace, idle = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local head = '\0' .. sid
local got = redis.call('HMGET', key, head, '\1' .. sid)
local m = got[1]
if not m then return {'N'} end
local _, absolute, idle_at, _, rotated, counter, n = struct.unpack('>I6I6I6I6I6I6B', m)
if not (now < idle_at and now < absolute) then drop(key, sid, m); return {'N'} end
local code = 'P'
if presented == counter then
  local expires = math.min(now + idle, absolute)
  m = string.sub(m, 1, 12) .. struct.pack('>I6I6I6I6', expires, now, now, counter + 1) .. string.sub(m, 37)
  redis.call('HSET', key, head, m)
  extend(key, expires - now)
  code = 'R'
elseif not (counter > 0 and presented == counter - 1 and now - rotated <= grace) then
  drop(key, sid, m)
  redis.call('PUBLISH', ARGV[6], ARGV[7] .. ':' .. sid)
  return {'T'}
end
if n == 1 then return {code, m} end
local out = {code, m, got[2]}
if n > 2 then
  local names = {}
  for k = 2, n - 1 do names[k - 1] = string.char(k) .. sid end
  for _, v in ipairs(redis.call('HMGET', key, unpack(names))) do out[#out + 1] = v end
end
return out
";

/// `KEYS[1]` user hash; `ARGV`: now. Returns `{{sid, chunk 0, chunk 1, …}, …}` of live sessions.
const LUA_LIST: &str = r"
local key, now = KEYS[1], tonumber(ARGV[1])
local sessions, all = scan(KEYS[1])
local by_field = {}
for i = 1, #all, 2 do by_field[all[i]] = all[i + 1] end
local out = {}
for _, s in ipairs(sessions) do
  if live(s[2], now) then
    local one = {s[1]}
    for i, f in ipairs(fields(s[1], s[2])) do one[i + 1] = by_field[f] or '' end
    out[#out + 1] = one
  else
    drop(key, s[1], s[2])
  end
end
return out
";

/// `KEYS[1]` user hash; `ARGV`: sid, now, channel, until. Returns 1 when a live session was revoked.
const LUA_REVOKE: &str = r"
local key, sid = KEYS[1], ARGV[1]
local m = redis.call('HGET', key, '\0' .. sid)
if not m then return 0 end
drop(key, sid, m)
if not live(m, tonumber(ARGV[2])) then return 0 end
redis.call('PUBLISH', ARGV[3], ARGV[4] .. ':' .. sid)
return 1
";

/// `KEYS[1]` user hash; `ARGV`: now, channel, until. Returns the revoked (live) sids.
const LUA_REVOKE_ALL: &str = r"
local key, now = KEYS[1], tonumber(ARGV[1])
local out = {}
for _, s in ipairs(scan(key)) do
  if live(s[2], now) then
    redis.call('PUBLISH', ARGV[2], ARGV[3] .. ':' .. s[1])
    out[#out + 1] = s[1]
  end
end
redis.call('DEL', key)
return out
";

/// `KEYS[1]` revocation zset; `ARGV`: now, channel, then `until, sid` pairs.
/// Records revocations, prunes past ones, keeps the key's TTL at the latest,
/// then publishes them again: a subscriber that subscribed after the session
/// script's publish either reloads them from the set or hears them now.
const LUA_RECORD_REVOKED: &str = r"
local key, now = KEYS[1], tonumber(ARGV[1])
for i = 3, #ARGV, 2 do redis.call('ZADD', key, 'GT', ARGV[i], ARGV[i + 1]) end
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
if last[2] then redis.call('PEXPIRE', key, math.max(1, tonumber(last[2]) - now)) end
for i = 3, #ARGV, 2 do redis.call('PUBLISH', ARGV[2], ARGV[i] .. ':' .. ARGV[i + 1]) end
return 0
";

/// `KEYS[1]` revocation zset; `ARGV`: now. Returns `{sid, until, sid, until, …}` still relevant.
const LUA_LOAD_REVOKED: &str = r"
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'WITHSCORES')
";

struct Scripts {
    create: Script,
    rotate: Script,
    list: Script,
    revoke: Script,
    revoke_all: Script,
    record_revoked: Script,
    load_revoked: Script,
}

impl Scripts {
    fn new() -> Self {
        let with_prelude = |body: &str| Script::new(&format!("{LUA_PRELUDE}{body}"));
        Self {
            create: with_prelude(LUA_CREATE),
            rotate: with_prelude(LUA_ROTATE),
            list: with_prelude(LUA_LIST),
            revoke: with_prelude(LUA_REVOKE),
            revoke_all: with_prelude(LUA_REVOKE_ALL),
            record_revoked: Script::new(LUA_RECORD_REVOKED),
            load_revoked: Script::new(LUA_LOAD_REVOKED),
        }
    }
}

/// Sessions in Redis, single node or Cluster.
///
/// Cheap to clone (clones share connections). Every call is bounded by about
/// one second: when Redis is down or slow it fails with
/// [`StoreError::Unavailable`] (the layer answers `503` with `Retry-After`),
/// and the same store works again by itself once Redis is back. Needs Redis
/// 6.2 or later (RESP3 pub/sub, `ZADD GT`); measured on 7.0.
///
/// # Layout
///
/// With the default prefix `tjwt` there are exactly two kinds of keys, and
/// every key has a TTL:
///
/// * `tjwt:{<user_id>}` — a hash holding all sessions of one user (the braces
///   are the Cluster hash tag, so every script touches one key, one slot).
///   A session is split into one or more *chunks*, each a field named
///   `<chunk index as one byte><sid>` (so chunk 0 of session `abc` is the
///   field `"\x00abc"`). The chunks' concatenation is
///   37 bytes of metadata followed by the session's data:
///
///   | bytes | content (unsigned big-endian) |
///   |---|---|
///   | 0..6 | `created_at_ms` |
///   | 6..12 | `absolute_expires_at_ms` |
///   | 12..18 | `idle_expires_at_ms` |
///   | 18..24 | `last_used_at_ms` |
///   | 24..30 | `rotated_at_ms` |
///   | 30..36 | `counter` |
///   | 36 | number of chunks (1..=255) |
///   | 37.. | data: a flags byte (bit 0: ip present, bit 1: user agent present), then `varint len ‖ bytes` for the ip, the user agent (when present) and the claims |
///
///   Chunk 0 carries the metadata and the first 27 data bytes, the next
///   chunks 64 bytes each. Every field and value thus stays ≤ 64 bytes, and
///   a user's hash stays in Redis' compact `listpack` encoding (225 B per
///   session measured by `cargo bench --bench redis_memory` with a 40-byte
///   user agent: two fields per session; a hash per session costs ≈ 430 B)
///   unless sids are over 63 bytes or a user has more than 128 chunks in all; beyond that Redis silently switches the
///   hash to a hashtable: more memory, same behaviour. Rotation rewrites
///   chunk 0 only. Redis 7.0 has no per-field TTL, so the scripts expire
///   sessions themselves: an expired session is dropped whenever it is
///   touched (rotate, revoke, list, create), and the key's TTL is pushed to
///   the latest idle expiry of its sessions, so an untouched user disappears
///   on its own.
///
/// * `tjwt:revoked` — a sorted set of revoked session ids scored by the Unix
///   ms until which they matter (pruned of past ones at each write; its TTL
///   is the latest score). Instances reload it on every (re)connect of their
///   subscription. Revocations are also `PUBLISH`ed on the channel
///   `tjwt:revoked` as `<until_ms>:<sid>`.
///
/// Nothing stored is a token: only session ids, counters and timestamps
/// (the refresh token's tag is an HMAC under a key Redis never sees).
///
/// # Round trips
///
/// Each operation is one `EVALSHA` (loaded on first use). The script also
/// `PUBLISH`es every revocation it makes, atomically with the change (a
/// publish has no key, so this works on Cluster too, where it reaches every
/// node). Only when something was revoked does a second script, on the
/// `tjwt:revoked` key in another slot, record it for instances that reconnect
/// later and publish it once more (for a subscriber that subscribed between
/// the two calls and reloaded before the record). Rotation therefore stays
/// one round trip; a revocation takes two and is heard at most twice.
///
/// # Times
///
/// All times are the caller's Unix milliseconds. Key TTLs are set relative
/// to the caller's `now_ms` (`PEXPIRE expiry - now`), so they stay right
/// even when the caller's clock and Redis' disagree.
///
/// # Example
///
/// ```no_run
/// # async fn demo() -> Result<(), tower_jwt_auth::store::StoreError> {
/// use tower_jwt_auth::store::RedisStore;
///
/// let single = RedisStore::connect("redis://127.0.0.1:6379").await?;
/// let cluster = RedisStore::connect("redis://10.0.0.1:7000,redis://10.0.0.2:7000")
///     .await?
///     .key_prefix("myapp");
/// # drop((single, cluster));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
    /// Key prefix as given, and the derived names.
    prefix: Arc<Names>,
}

struct Names {
    prefix: String,
    /// Both the revocation sorted set and the pub/sub channel.
    revoked: String,
}

impl Names {
    fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_owned(), revoked: format!("{prefix}:revoked") }
    }

    fn user_key<'a>(&'a self, user_id: &'a str) -> UserKey<'a> {
        UserKey { prefix: &self.prefix, user_id }
    }
}

/// `<prefix>:{<user_id>}`, the user's hash, written straight into a command.
struct UserKey<'a> {
    prefix: &'a str,
    user_id: &'a str,
}

impl UserKey<'_> {
    fn len(&self) -> usize {
        self.prefix.len() + self.user_id.len() + 3
    }
}

impl ToRedisArgs for UserKey<'_> {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        use std::io::Write as _;
        let mut arg = out.writer_for_next_arg();
        for part in [self.prefix.as_bytes(), b":{", self.user_id.as_bytes(), b"}"] {
            arg.write_all(part).expect("writing to memory");
        }
    }
}

struct Inner {
    conn: Conn,
    /// Where revocation subscribers connect.
    subscriber: SubscriberSource,
    scripts: Scripts,
    /// Lists attached through this store, fed at once on local revocations.
    lists: Mutex<Vec<Weak<RevocationList>>>,
    /// Dropped with the last clone: tells subscriber tasks to stop.
    _alive: watch::Sender<()>,
    alive: watch::Receiver<()>,
}

/// The data connection: auto-reconnecting either way.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

#[derive(Clone)]
enum SubscriberSource {
    /// A RESP3 client for the node (push messages need RESP3).
    Single(redis::Client),
    Cluster(Box<ClusterClient>),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

fn unavailable(err: RedisError) -> StoreError {
    StoreError::Unavailable(err.to_string())
}

fn is_connection_error(err: &RedisError) -> bool {
    err.is_io_error() || err.is_connection_dropped() || err.is_connection_refusal()
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

fn cluster_config() -> ClusterConfig {
    ClusterConfig::new().set_connection_timeout(CONNECT_TIMEOUT).set_response_timeout(RESPONSE_TIMEOUT)
}

impl RedisStore {
    /// Connects to `url` (`redis://…`, `rediss://…`, `unix://…`), or to a Redis
    /// Cluster when given several comma-separated node URLs (one URL always
    /// means a single node: for a cluster known by one seed, use
    /// [`from_cluster_client`](Self::from_cluster_client)). Fails with
    /// [`StoreError::Unavailable`] when no connection can be made now.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let urls: Vec<&str> = url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
        let store = match urls.as_slice() {
            [] => return Err(StoreError::Unavailable("no Redis URL given".into())),
            [one] => Self::from_client(redis::Client::open(*one).map_err(unavailable)?)?,
            nodes => Self::from_cluster_client(
                ClusterClient::builder(nodes.iter().copied())
                    .use_protocol(ProtocolVersion::RESP3)
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(RESPONSE_TIMEOUT)
                    .retries(2)
                    .min_retry_wait(10)
                    .max_retry_wait(100)
                    .build()
                    .map_err(unavailable)?,
            )?,
        };
        store.ping().await?;
        Ok(store)
    }

    /// A store on one Redis node. Connects lazily (the first call connects);
    /// must be called from within a Tokio runtime.
    pub fn from_client(client: redis::Client) -> Result<Self, StoreError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(100));
        let info = client.get_connection_info().clone();
        let resp3 = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
        let subscriber = redis::Client::open(info.set_redis_settings(resp3)).map_err(unavailable)?;
        let manager = ConnectionManager::new_lazy_with_config(client, config).map_err(unavailable)?;
        Ok(Self::with(Conn::Single(manager), SubscriberSource::Single(subscriber)))
    }

    /// A store on a Redis Cluster. Connects lazily; must be called from within
    /// a Tokio runtime. Build `client` with
    /// `.use_protocol(redis::ProtocolVersion::RESP3)`: revocations then reach
    /// other instances at once through pub/sub; with RESP2 they are polled
    /// from Redis every second instead.
    pub fn from_cluster_client(client: ClusterClient) -> Result<Self, StoreError> {
        let conn = client.get_pending_async_connection_with_config(cluster_config());
        Ok(Self::with(Conn::Cluster(conn), SubscriberSource::Cluster(Box::new(client))))
    }

    fn with(conn: Conn, subscriber: SubscriberSource) -> Self {
        let (alive_tx, alive) = watch::channel(());
        Self {
            inner: Arc::new(Inner {
                conn,
                subscriber,
                scripts: Scripts::new(),
                lists: Mutex::new(Vec::new()),
                _alive: alive_tx,
                alive,
            }),
            prefix: Arc::new(Names::new("tjwt")),
        }
    }

    /// Prefixes every key and the pub/sub channel with `prefix` (default
    /// `"tjwt"`), so several applications can share one Redis. A prefix
    /// containing `{` would change the Cluster hash tag: avoid it.
    ///
    /// The returned store shares this one's connections but is a separate
    /// store: lists attached to it only hear about revocations under `prefix`.
    #[must_use]
    pub fn key_prefix(self, prefix: &str) -> Self {
        let (alive_tx, alive) = watch::channel(());
        Self {
            inner: Arc::new(Inner {
                conn: self.inner.conn.clone(),
                subscriber: self.inner.subscriber.clone(),
                scripts: Scripts::new(),
                lists: Mutex::new(Vec::new()),
                _alive: alive_tx,
                alive,
            }),
            prefix: Arc::new(Names::new(prefix)),
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.inner.conn.clone();
        bounded(async move { redis::cmd("PING").query_async::<()>(&mut conn).await }).await
    }

    /// `EVALSHA <script> 1 <user's hash>`, with room for `args` more
    /// arguments of about `bytes` bytes in all: the caller adds them.
    fn eval(&self, script: &Script, user_id: &str, args: usize, bytes: usize) -> Cmd {
        let key = self.prefix.user_key(user_id);
        let mut cmd = Cmd::with_capacity(4 + args, 7 + script.get_hash().len() + 1 + key.len() + bytes);
        cmd.arg("EVALSHA").arg(script.get_hash()).arg(1).arg(key);
        cmd
    }

    /// Runs one script invocation built by [`eval`](Self::eval), loading the
    /// script first when Redis does not know it (as `Script::invoke_async`).
    async fn run<T: FromRedisValue>(&self, script: &Script, cmd: &Cmd) -> Result<T, StoreError> {
        let mut conn = self.inner.conn.clone();
        bounded(async {
            let done = match cmd.query_async(&mut conn).await {
                // A connection found dead (Redis restarted since the last
                // call) reconnects on its own: try once more rather than fail
                // a request Redis could serve. Safe to repeat: a create
                // rewrites the same session, and a rotation whose reply was
                // lost answers `Replayed` with the same successor.
                Err(err) if is_connection_error(&err) => cmd.query_async(&mut conn).await,
                done => done,
            };
            match done {
                Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    script.load_async(&mut conn).await?;
                    cmd.query_async(&mut conn).await
                }
                done => done,
            }
        })
        .await
    }

    /// Records revocations the script already published: into the lists
    /// attached here at once, and into the revocation set for instances that
    /// reconnect later. A failure of the latter is logged, not returned: the
    /// session is already gone and live instances have heard about it.
    async fn record_revoked(&self, sids: &[String], until: u64, now: u64) {
        if sids.is_empty() {
            return;
        }
        feed(&self.inner.lists, sids, until);
        let until_s = until.to_string();
        let mut invocation = self.inner.scripts.record_revoked.key(&self.prefix.revoked);
        invocation.arg(now).arg(&self.prefix.revoked);
        for sid in sids {
            invocation.arg(&until_s).arg(sid);
        }
        let mut conn = self.inner.conn.clone();
        if let Err(err) = bounded(async { invocation.invoke_async::<()>(&mut conn).await }).await {
            tracing::warn!(error = %err, sessions = ?sids, "revocation published but not recorded for reconnecting instances");
        }
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.inner.conn {
            Conn::Single(_) => "single",
            Conn::Cluster(_) => "cluster",
        };
        f.debug_struct("RedisStore").field("mode", &mode).field("key_prefix", &self.prefix.prefix).finish()
    }
}

/// Bounds a Redis call by [`CALL_TIMEOUT`] and maps its errors.
async fn bounded<T>(call: impl Future<Output = redis::RedisResult<T>>) -> Result<T, StoreError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => result.map_err(unavailable),
        Err(_) => Err(StoreError::Unavailable(format!("no answer within {CALL_TIMEOUT:?}"))),
    }
}

fn feed(lists: &Mutex<Vec<Weak<RevocationList>>>, sids: &[String], until: u64) {
    let mut lists = lists.lock().unwrap_or_else(PoisonError::into_inner);
    lists.retain(|weak| match weak.upgrade() {
        Some(list) => {
            for sid in sids {
                list.insert(sid, until);
            }
            true
        }
        None => false,
    });
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The largest value the 6-byte fields hold; times and counters are clamped to it.
const MAX_48: u64 = (1 << 48) - 1;

fn push_u48(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(&n.min(MAX_48).to_be_bytes()[2..]);
}

fn read_u48(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0, |n, &b| (n << 8) | u64::from(b))
}

fn push_varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn read_varint(bytes: &mut &[u8]) -> Option<usize> {
    let mut n = 0usize;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        n |= usize::from(b & 0x7f).checked_shl(shift)?;
        if b & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

fn read_str(bytes: &mut &[u8]) -> Option<String> {
    let len = read_varint(bytes)?;
    if bytes.len() < len {
        return None;
    }
    let (s, rest) = bytes.split_at(len);
    *bytes = rest;
    String::from_utf8(s.to_vec()).ok()
}

/// Splits a new session into its chunks (see the module docs).
fn encode(session: &NewSession, policy: &SessionPolicy) -> Vec<Vec<u8>> {
    let now = session.now_ms;
    let absolute = now.saturating_add(ms(policy.absolute_ttl));
    let mut data = Vec::with_capacity(8 + session.claims.len());
    data.push(u8::from(session.ip.is_some()) | (u8::from(session.user_agent.is_some()) << 1));
    for s in [&session.ip, &session.user_agent].into_iter().flatten().chain([&session.claims]) {
        push_varint(&mut data, s.len());
        data.extend_from_slice(s.as_bytes());
    }
    let head = data.len().min(CHUNK - META_LEN);
    let rest = &data[head..];
    // At most 255 chunks; past 254 × 64 bytes chunks grow (the hash has long
    // left listpack encoding by then anyway).
    let size = CHUNK.max(rest.len().div_ceil(254));
    let chunks = 1 + rest.len().div_ceil(size);
    let mut first = Vec::with_capacity(CHUNK);
    push_u48(&mut first, now);
    push_u48(&mut first, absolute);
    push_u48(&mut first, now.saturating_add(ms(policy.idle_ttl)).min(absolute));
    push_u48(&mut first, now);
    push_u48(&mut first, 0);
    push_u48(&mut first, 0);
    first.push(chunks as u8);
    first.extend_from_slice(&data[..head]);
    std::iter::once(first).chain(rest.chunks(size).map(<[u8]>::to_vec)).collect()
}

/// Rebuilds a record from its chunks.
fn decode(user_id: &str, sid: String, chunks: &[Vec<u8>]) -> Result<SessionRecord, StoreError> {
    let first = chunks.first().filter(|c| c.len() >= META_LEN).ok_or_else(|| corrupt("short session metadata"))?;
    if usize::from(first[36]) != chunks.len() {
        return Err(corrupt("missing session chunks"));
    }
    let mut data = Vec::with_capacity(chunks.iter().map(Vec::len).sum::<usize>() - META_LEN);
    data.extend_from_slice(&first[META_LEN..]);
    for chunk in &chunks[1..] {
        data.extend_from_slice(chunk);
    }
    let field = |i: usize| read_u48(&first[i * 6..i * 6 + 6]);
    let mut bytes = data.as_slice();
    let flags = *bytes.first().ok_or_else(|| corrupt("empty session data"))?;
    bytes = &bytes[1..];
    let mut next = |present: bool| -> Result<Option<String>, StoreError> {
        if !present {
            return Ok(None);
        }
        read_str(&mut bytes).map(Some).ok_or_else(|| corrupt("truncated session data"))
    };
    let ip = next(flags & 1 != 0)?;
    let user_agent = next(flags & 2 != 0)?;
    let claims = next(true)?.unwrap_or_default();
    Ok(SessionRecord {
        sid,
        user_id: user_id.to_owned(),
        claims,
        user_agent,
        ip,
        created_at_ms: field(0),
        absolute_expires_at_ms: field(1),
        idle_expires_at_ms: field(2),
        last_used_at_ms: field(3),
        rotated_at_ms: field(4),
        counter: field(5),
    })
}

fn utf8(bytes: Vec<u8>) -> Result<String, StoreError> {
    String::from_utf8(bytes).map_err(|_| corrupt("session id is not UTF-8"))
}

impl SessionStore for RedisStore {
    fn create<'a>(&'a self, session: NewSession, policy: &'a SessionPolicy) -> StoreFuture<'a, Vec<String>> {
        Box::pin(async move {
            let now = session.now_ms;
            let until = now.saturating_add(ms(policy.revocation_ttl));
            // The new session always survives, so a cap of 0 acts as 1.
            let cap = policy.max_sessions.map_or(0, |m| m.max(1));
            let chunks = encode(&session, policy);
            let script = &self.inner.scripts.create;
            let bytes = 64 + session.sid.len() + self.prefix.revoked.len() + chunks.iter().map(Vec::len).sum::<usize>();
            let mut cmd = self.eval(script, &session.user_id, 5 + chunks.len(), bytes);
            cmd.arg(now).arg(&session.sid).arg(cap).arg(&self.prefix.revoked).arg(until);
            for chunk in &chunks {
                cmd.arg(chunk.as_slice());
            }
            let evicted: Vec<Vec<u8>> = self.run(script, &cmd).await?;
            let evicted = evicted.into_iter().map(utf8).collect::<Result<Vec<_>, _>>()?;
            self.record_revoked(&evicted, until, now).await;
            Ok(evicted)
        })
    }

    fn rotate<'a>(
        &'a self,
        user_id: &'a str,
        sid: &'a str,
        presented: u64,
        now_ms: u64,
        policy: &'a SessionPolicy,
    ) -> StoreFuture<'a, RotateOutcome> {
        Box::pin(async move {
            let until = now_ms.saturating_add(ms(policy.revocation_ttl));
            let script = &self.inner.scripts.rotate;
            let mut cmd = self.eval(script, user_id, 7, sid.len() + self.prefix.revoked.len() + 80);
            // Lua numbers are doubles; anything past 2^48 is above every stored counter anyway.
            cmd.arg(sid).arg(presented.min(MAX_48 + 1)).arg(now_ms).arg(ms(policy.grace)).arg(ms(policy.idle_ttl));
            cmd.arg(&self.prefix.revoked).arg(until);
            let reply: Vec<Vec<u8>> = self.run(script, &cmd).await?;
            let Some((code, reply)) = reply.split_first() else {
                return Err(corrupt("empty rotate reply"));
            };
            match code.as_slice() {
                b"N" => Ok(RotateOutcome::NotFound),
                b"T" => {
                    tracing::debug!(user_id, sid, "refresh counter reuse: session revoked");
                    // Boxed: this rare call's future is larger than the rest of
                    // rotate's, which would grow every rotation's allocation past 1 KiB.
                    Box::pin(self.record_revoked(&[sid.to_owned()], until, now_ms)).await;
                    Ok(RotateOutcome::Theft { user_id: user_id.to_owned(), sid: sid.to_owned() })
                }
                b"R" => Ok(RotateOutcome::Rotated(decode(user_id, sid.to_owned(), reply)?)),
                b"P" => Ok(RotateOutcome::Replayed(decode(user_id, sid.to_owned(), reply)?)),
                _ => Err(corrupt("unknown rotate reply")),
            }
        })
    }

    fn list<'a>(&'a self, user_id: &'a str, now_ms: u64) -> StoreFuture<'a, Vec<SessionRecord>> {
        Box::pin(async move {
            let script = &self.inner.scripts.list;
            let mut cmd = self.eval(script, user_id, 1, 20);
            cmd.arg(now_ms);
            let reply: Vec<Vec<Vec<u8>>> = self.run(script, &cmd).await?;
            let mut records = reply
                .into_iter()
                .map(|mut one| {
                    if one.is_empty() {
                        return Err(corrupt("empty list entry"));
                    }
                    let sid = utf8(one.remove(0))?;
                    decode(user_id, sid, &one)
                })
                .collect::<Result<Vec<_>, _>>()?;
            records.sort_unstable_by(|a, b| (a.created_at_ms, &a.sid).cmp(&(b.created_at_ms, &b.sid)));
            Ok(records)
        })
    }

    fn revoke<'a>(
        &'a self,
        user_id: &'a str,
        sid: &'a str,
        now_ms: u64,
        policy: &'a SessionPolicy,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let until = now_ms.saturating_add(ms(policy.revocation_ttl));
            let script = &self.inner.scripts.revoke;
            let mut cmd = self.eval(script, user_id, 4, sid.len() + self.prefix.revoked.len() + 40);
            cmd.arg(sid).arg(now_ms).arg(&self.prefix.revoked).arg(until);
            let revoked: i64 = self.run(script, &cmd).await?;
            if revoked == 1 {
                self.record_revoked(&[sid.to_owned()], until, now_ms).await;
            }
            Ok(revoked == 1)
        })
    }

    fn revoke_all<'a>(
        &'a self,
        user_id: &'a str,
        now_ms: u64,
        policy: &'a SessionPolicy,
    ) -> StoreFuture<'a, Vec<String>> {
        Box::pin(async move {
            let until = now_ms.saturating_add(ms(policy.revocation_ttl));
            let script = &self.inner.scripts.revoke_all;
            let mut cmd = self.eval(script, user_id, 3, self.prefix.revoked.len() + 40);
            cmd.arg(now_ms).arg(&self.prefix.revoked).arg(until);
            let sids: Vec<Vec<u8>> = self.run(script, &cmd).await?;
            let sids = sids.into_iter().map(utf8).collect::<Result<Vec<_>, _>>()?;
            self.record_revoked(&sids, until, now_ms).await;
            Ok(sids)
        })
    }

    fn attach(&self, list: Arc<RevocationList>) {
        {
            let mut lists = self.inner.lists.lock().unwrap_or_else(PoisonError::into_inner);
            lists.retain(|weak| weak.strong_count() > 0);
            lists.push(Arc::downgrade(&list));
        }
        let subscriber = Subscriber {
            store: Arc::downgrade(&self.inner),
            names: self.prefix.clone(),
            list: Arc::downgrade(&list),
            alive: self.inner.alive.clone(),
        };
        tokio::spawn(subscriber.run());
    }
}

/// The task that keeps one attached list in step with every instance.
struct Subscriber {
    store: Weak<Inner>,
    names: Arc<Names>,
    list: Weak<RevocationList>,
    /// Closed when the last clone of the store is dropped.
    alive: watch::Receiver<()>,
}

/// Why a subscription ended.
enum Ended {
    /// The store or the list is gone: stop.
    Unwanted,
    /// The connection failed (`healthy`: after subscribing and reloading): reconnect.
    Lost { healthy: bool },
    /// Pub/sub is unavailable with this client (RESP2 cluster client): poll.
    NoPush,
}

impl Subscriber {
    async fn run(self) {
        let mut backoff = BACKOFF_MIN;
        loop {
            match self.subscribe_once().await {
                Ended::Unwanted => return,
                Ended::NoPush => return self.poll().await,
                // It had worked: retry soon.
                Ended::Lost { healthy: true } => backoff = BACKOFF_MIN,
                Ended::Lost { healthy: false } => {}
            }
            tracing::debug!(retry_in = ?backoff, "revocation subscription lost");
            if !self.pause(backoff).await {
                return;
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Sleeps unless the store goes away first; `false` when the
    /// subscription is no longer wanted.
    async fn pause(&self, duration: Duration) -> bool {
        let mut alive = self.alive.clone();
        let slept = tokio::select! {
            _ = tokio::time::sleep(duration) => true,
            _ = alive.changed() => false,
        };
        slept && self.wanted()
    }

    fn wanted(&self) -> bool {
        self.store.strong_count() > 0 && self.list.strong_count() > 0
    }

    /// Connects, subscribes, reloads, then relays messages until the
    /// connection fails or nobody needs them any more.
    async fn subscribe_once(&self) -> Ended {
        let Some(source) = self.store.upgrade().map(|inner| inner.subscriber.clone()) else {
            return Ended::Unwanted;
        };
        let (tx, mut rx) = mpsc::unbounded_channel::<PushInfo>();
        let channel = self.names.revoked.clone();
        let connected = tokio::time::timeout(CALL_TIMEOUT, async {
            match source {
                SubscriberSource::Single(client) => {
                    let config = redis::AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(CONNECT_TIMEOUT))
                        .set_response_timeout(Some(RESPONSE_TIMEOUT))
                        .set_push_sender(tx);
                    let mut conn = client.get_multiplexed_async_connection_with_config(&config).await?;
                    conn.subscribe(&channel).await?;
                    Ok::<_, RedisError>(SubConn::Single(conn))
                }
                SubscriberSource::Cluster(client) => {
                    let mut conn =
                        client.get_async_connection_with_config(cluster_config().set_push_sender(tx)).await?;
                    conn.subscribe(&channel).await?;
                    Ok(SubConn::Cluster(conn))
                }
            }
        })
        .await;
        let mut conn = match connected {
            Ok(Ok(conn)) => conn,
            Ok(Err(err)) if err.kind() == redis::ErrorKind::InvalidClientConfig => {
                tracing::warn!(error = %err, "no pub/sub with this Redis client (RESP3 needed): polling revocations");
                return Ended::NoPush;
            }
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "revocation subscription failed");
                return Ended::Lost { healthy: false };
            }
            Err(_) => return Ended::Lost { healthy: false },
        };
        // Subscribed first, so nothing published from now on is missed; then
        // catch up on whatever was revoked while not subscribed.
        if !self.reload().await {
            return if self.wanted() { Ended::Lost { healthy: false } } else { Ended::Unwanted };
        }
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.tick().await;
        let mut alive = self.alive.clone();
        loop {
            tokio::select! {
                push = rx.recv() => match push {
                    Some(push) if push.kind == PushKind::Message => {
                        let Some(list) = self.list.upgrade() else { return Ended::Unwanted };
                        if let Some(Value::BulkString(payload)) = push.data.get(1)
                            && let Some((sid, until)) = parse_message(payload)
                        {
                            list.insert(sid, until);
                        }
                    }
                    Some(push) if push.kind == PushKind::Disconnection => return Ended::Lost { healthy: true },
                    Some(_) => {}
                    None => return Ended::Lost { healthy: true },
                },
                _ = heartbeat.tick() => {
                    if !self.wanted() {
                        return Ended::Unwanted;
                    }
                    if tokio::time::timeout(CALL_TIMEOUT, conn.ping()).await.map_or(true, |r| r.is_err()) {
                        return Ended::Lost { healthy: true };
                    }
                }
                _ = alive.changed() => return Ended::Unwanted,
            }
        }
    }

    /// Loads every still-relevant revocation into the list; `false` on failure.
    async fn reload(&self) -> bool {
        let (Some(inner), Some(list)) = (self.store.upgrade(), self.list.upgrade()) else {
            return false;
        };
        let mut conn = inner.conn.clone();
        let mut invocation = inner.scripts.load_revoked.key(&self.names.revoked);
        invocation.arg(now_ms());
        match bounded(async { invocation.invoke_async::<Vec<Vec<u8>>>(&mut conn).await }).await {
            Ok(flat) => {
                for pair in flat.chunks_exact(2) {
                    let until = std::str::from_utf8(&pair[1]).ok().and_then(parse_score);
                    if let (Ok(sid), Some(until)) = (std::str::from_utf8(&pair[0]), until) {
                        list.insert(sid, until);
                    }
                }
                true
            }
            Err(err) => {
                tracing::debug!(error = %err, "reloading revocations failed");
                false
            }
        }
    }

    /// Without pub/sub: reload every second while wanted.
    async fn poll(self) {
        while self.wanted() {
            self.reload().await;
            if !self.pause(BACKOFF_MAX).await {
                return;
            }
        }
    }
}

enum SubConn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl SubConn {
    async fn ping(&mut self) -> redis::RedisResult<()> {
        match self {
            SubConn::Single(c) => redis::cmd("PING").query_async(c).await,
            SubConn::Cluster(c) => redis::cmd("PING").query_async(c).await,
        }
    }
}

/// Parses a published `<until_ms>:<sid>`.
fn parse_message(payload: &[u8]) -> Option<(&str, u64)> {
    let colon = payload.iter().position(|&b| b == b':')?;
    let until = std::str::from_utf8(&payload[..colon]).ok()?.parse().ok()?;
    Some((std::str::from_utf8(&payload[colon + 1..]).ok()?, until))
}

/// Parses a sorted-set score (an integer, possibly printed as a float).
fn parse_score(score: &str) -> Option<u64> {
    score.parse().ok().or_else(|| score.parse::<f64>().ok().map(|f| f as u64))
}

/// A real `redis-server` for the tests below (the integration tests' harness).
#[cfg(test)]
#[path = "../../tests/support/redis_server.rs"]
mod test_redis_server;

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> SessionPolicy {
        SessionPolicy {
            idle_ttl: Duration::from_secs(3600),
            absolute_ttl: Duration::from_secs(86_400),
            grace: Duration::from_secs(10),
            max_sessions: None,
            revocation_ttl: Duration::from_secs(900),
        }
    }

    fn session(ua: Option<String>, claims: String) -> NewSession {
        NewSession {
            user_id: "u".into(),
            sid: "s".into(),
            claims,
            user_agent: ua,
            ip: Some("2001:db8::1".into()),
            now_ms: 1_700_000_000_123,
        }
    }

    #[test]
    fn chunks_round_trip_and_stay_small() {
        for (ua, claims) in [
            (None, String::new()),
            (Some("Mozilla/5.0 (X11; Linux x86_64) Firefox/1".to_owned()), r#"{"role":"admin"}"#.to_owned()),
            (Some("ü|:{}\n".repeat(50)), "x".repeat(5000)),
            (Some(String::new()), "y".repeat(254 * 64 * 3)),
        ] {
            let new = session(ua.clone(), claims.clone());
            let chunks = encode(&new, &policy());
            assert!(chunks.len() <= 255);
            if claims.len() < 10_000 {
                assert!(chunks.iter().all(|c| c.len() <= CHUNK), "a chunk over 64 bytes");
            }
            let record = decode("u", "s".into(), &chunks).unwrap();
            assert_eq!(record.user_agent, ua);
            assert_eq!(record.claims, claims);
            assert_eq!(record.ip.as_deref(), Some("2001:db8::1"));
            assert_eq!(record.created_at_ms, 1_700_000_000_123);
            assert_eq!(record.idle_expires_at_ms, 1_700_000_000_123 + 3_600_000);
            assert_eq!(record.counter, 0);
        }
    }

    use super::test_redis_server as redis_server;

    /// The rotate script's three reply shapes: a session of one chunk (no
    /// second field to read), of two (the `HMGET` of chunks 0 and 1 has it all)
    /// and of many (a second `HMGET`); each must come back whole, as `list`
    /// reads it, and extend the key's TTL.
    #[test]
    fn rotate_returns_sessions_of_any_size_whole() {
        let server = redis_server::RedisServer::start();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let store = RedisStore::connect(&server.url()).await.unwrap();
            let policy = policy();
            let now = now_ms();
            let cases = [
                (None, None, String::new(), 1),
                (Some("Mozilla/5.0 (X11; Linux x86_64) Gecko/20".to_owned()), Some("127.0.0.1"), "{}".to_owned(), 2),
                (
                    Some("Agent ü|:{}\n".repeat(25)),
                    Some("2001:db8::1"),
                    format!(r#"{{"blob":"{}"}}"#, "é".repeat(400)),
                    19,
                ),
            ];
            for (i, (user_agent, ip, claims, chunks)) in cases.into_iter().enumerate() {
                let (user, sid) = (format!("user-{i}"), format!("sid-{i}"));
                let new = NewSession {
                    user_id: user.clone(),
                    sid: sid.clone(),
                    claims: claims.clone(),
                    user_agent: user_agent.clone(),
                    ip: ip.map(str::to_owned),
                    now_ms: now,
                };
                assert_eq!(encode(&new, &policy).len(), chunks, "case {i}");
                store.create(new, &policy).await.unwrap();
                let RotateOutcome::Rotated(rotated) = store.rotate(&user, &sid, 0, now + 1000, &policy).await.unwrap()
                else {
                    panic!("case {i}: not rotated");
                };
                assert_eq!(
                    (rotated.counter, rotated.rotated_at_ms, rotated.last_used_at_ms),
                    (1, now + 1000, now + 1000)
                );
                assert_eq!(rotated.idle_expires_at_ms, now + 1000 + 3_600_000);
                assert_eq!((&rotated.claims, &rotated.user_agent, rotated.ip.as_deref()), (&claims, &user_agent, ip));
                assert_eq!(store.list(&user, now + 1000).await.unwrap(), vec![rotated.clone()], "case {i}");
                let RotateOutcome::Replayed(replayed) =
                    store.rotate(&user, &sid, 0, now + 2000, &policy).await.unwrap()
                else {
                    panic!("case {i}: not replayed");
                };
                assert_eq!(replayed, rotated, "case {i}");
                let ttl: i64 = server.cmd(&["PTTL", &format!("tjwt:{{{user}}}")]).unwrap().trim().parse().unwrap();
                assert!((3_590_000..=3_601_000).contains(&ttl), "case {i}: TTL {ttl}");
            }
        });
    }

    #[test]
    fn messages_parse() {
        assert_eq!(parse_message(b"1700000000000:a:b"), Some(("a:b", 1_700_000_000_000)));
        assert_eq!(parse_message(b"nope"), None);
        assert_eq!(parse_score("1700000000000"), Some(1_700_000_000_000));
        assert_eq!(parse_score("1.7e12"), Some(1_700_000_000_000));
    }
}
