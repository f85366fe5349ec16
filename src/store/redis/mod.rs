//! The Redis [`SessionStore`] (single node or Redis Cluster): one Lua script
//! per state change, all of a user's sessions packed in one small hash.
//!
//! Rooms: `record` (the binary layout of a session), `scripts` and `lua/`
//! (the state machine), `connection` (connections and call bounds),
//! `subscriber` (revocations from other instances), and this file (the store
//! itself and what it does when a reply is lost).

mod cluster;
mod connection;
mod record;
mod scripts;
mod subscriber;

use std::{
    sync::{Arc, Mutex, PoisonError, Weak},
    time::Duration,
};

use redis::{Cmd, FromRedisValue};
use tokio::sync::watch;

use self::{
    connection::{Conn, Connections, Ran, SubscriberSource, Tls, run},
    record::{MAX_48, corrupt, decode, encode, ms, utf8},
    scripts::{Lua, Scripts},
    subscriber::Subscriber,
};
use super::{NewSession, RotateOutcome, SessionPolicy, SessionRecord, SessionStore, StoreError, StoreFuture};
use crate::{
    clock::now_ms,
    revocation::{Revocation, RevocationList, wire::parse_score},
};

/// How long after a lost reply the store keeps trying to reconcile (the
/// journal keeps revocations for a minute).
const RECONCILE_FOR: Duration = Duration::from_secs(50);
/// A second reconciliation this long after the first catches a script that
/// Redis ran late (after a pause) behind the first one.
const RECONCILE_AGAIN: Duration = Duration::from_secs(2);

/// Sessions in Redis, single node or Cluster.
///
/// Cheap to clone (clones share connections). Every call is bounded by about
/// one second: when Redis is down or slow it fails with
/// [`StoreError::Unavailable`] (the layer answers `503` with `Retry-After`),
/// and the same store works again by itself once Redis is back. Needs Redis
/// 6.2 or later (`ZADD GT`); measured on 7.0. Run it with
/// `maxmemory-policy noeviction` (checked, with a warning, at
/// [`connect`](Self::connect)): any other policy lets Redis drop sessions.
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
///   43 bytes of metadata followed by the session's data:
///
///   | bytes | content (unsigned big-endian) |
///   |---|---|
///   | 0..6 | `created_at_ms` |
///   | 6..12 | `absolute_expires_at_ms` |
///   | 12..18 | `idle_expires_at_ms` |
///   | 18..24 | `last_used_at_ms` |
///   | 24..30 | `rotated_at_ms` |
///   | 30..36 | `counter` |
///   | 36..42 | `auth_time_ms` |
///   | 42 | number of chunks (1..=255) |
///   | 43.. | data: a flags byte (bit 0: ip present, bit 1: user agent present), then `varint len ‖ bytes` for the ip, the user agent (when present) and the claims |
///
///   Chunk 0 carries the metadata and the first 21 data bytes, the next
///   chunks 64 bytes each. Every field and value thus stays ≤ 64 bytes, and
///   a user's hash stays in Redis' compact `listpack` encoding (two fields
///   per session with a 40-byte user agent; see `cargo bench --bench
///   redis_memory`; a hash per session costs ≈ 430 B) unless sids are over
///   63 bytes or a user has more than 128 chunks in all; beyond that Redis
///   silently switches the hash to a hashtable: more memory, same behaviour.
///   Rotation rewrites chunk 0 only. Redis 7.0 has no per-field TTL, so the
///   scripts expire sessions themselves: an expired session is dropped
///   whenever it is touched, and the key's TTL is pushed to the latest idle
///   expiry of its sessions, so an untouched user disappears on its own.
///
///   One more field, `"\xff"`, is the user's *journal*: the sessions revoked
///   in the last minute, written by the same script that revoked them. When
///   a script's reply is lost (a timeout, a dropped connection), the store
///   reads it back to record those revocations (below) and undoes what the
///   caller never delivered: a rotation (the client keeps its token, which
///   then still works) or a login (which would otherwise count against the
///   session cap).
///
/// * `tjwt:revoked` — a sorted set of revocations scored by the Unix ms until
///   which they matter (pruned of past ones at each write; its TTL is the
///   latest score): members `s:<sid>` (a revoked session) and
///   `u:<before_ms>:<user_id>` (a user's access tokens issued before
///   `before_ms` are stale). Instances load it in pages when they start and
///   after every reconnect of their subscription. Revocations are also
///   `PUBLISH`ed on the channel `tjwt:revoked`.
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
/// `tjwt:revoked` key in another slot, record it for instances that start
/// later and publish it once more (for a subscriber that subscribed between
/// the two calls and loaded before the record); it is retried in the
/// background until it succeeds. Rotation therefore stays one round trip.
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

pub(crate) struct Names {
    prefix: String,
    /// Both the revocation sorted set and the pub/sub channel.
    revoked: String,
}

impl Names {
    fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_owned(), revoked: format!("{prefix}:revoked") }
    }

    /// `<prefix>:{<user_id>}`: the user's hash (the braces are the Cluster hash tag).
    fn user_key(&self, user_id: &str) -> String {
        let mut key = String::with_capacity(self.prefix.len() + user_id.len() + 3);
        key.push_str(&self.prefix);
        key.push_str(":{");
        key.push_str(user_id);
        key.push('}');
        key
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

/// What a reconciliation undoes (see `lua/reconcile.lua`).
#[derive(Clone, Copy, Debug)]
enum Undo {
    Nothing,
    /// The rotation of `sid` to `counter` at `at` (ms).
    Rotation {
        counter: u64,
        at: u64,
    },
    /// The creation of `sid` at `at` (ms).
    Creation {
        at: u64,
    },
}

/// Configures a [`RedisStore`]: TLS with a private CA or a client
/// certificate, the key prefix. From [`RedisStore::builder`].
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use tower_jwt_auth::store::RedisStore;
///
/// let store = RedisStore::builder("rediss://redis.internal:6380")
///     .ca_certificate_pem(std::fs::read("/etc/redis/ca.pem")?)
///     .connect()
///     .await?;
/// # drop(store); Ok(()) }
/// ```
#[must_use]
pub struct RedisStoreBuilder {
    urls: String,
    tls: Tls,
    prefix: String,
}

impl RedisStoreBuilder {
    /// Trusts this CA (PEM) for `rediss://` servers, instead of the system's
    /// roots: for a private CA (ElastiCache, Azure and self-managed Redis
    /// often use one).
    pub fn ca_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls.ca = Some(pem.into());
        self
    }

    /// Presents this client certificate and key (PEM) to `rediss://`
    /// servers that require one (`tls-auth-clients yes`).
    pub fn client_certificate_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.tls.client = Some((cert.into(), key.into()));
        self
    }

    /// See [`RedisStore::key_prefix`].
    pub fn key_prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_owned();
        self
    }

    /// Connects now, checks the connection (and warns about an eviction
    /// policy that could drop sessions); [`StoreError::Unavailable`] when no
    /// connection can be made.
    pub async fn connect(self) -> Result<RedisStore, StoreError> {
        let store = self.connect_lazy()?;
        connection::ping(&store.inner.conn).await?;
        connection::check_eviction_policy(&store.inner.conn).await;
        Ok(store)
    }

    /// The store without connecting yet (the first call connects); must be
    /// called from within a Tokio runtime.
    pub fn connect_lazy(self) -> Result<RedisStore, StoreError> {
        let connections = Connections::open(&self.urls, &self.tls)?;
        Ok(RedisStore::from_parts(connections.data, connections.subscriber, &self.prefix))
    }
}

impl RedisStore {
    /// Connects to `url` (`redis://…`, `rediss://…` for TLS with the system's
    /// roots, `unix://…`), or to a Redis Cluster when given several
    /// comma-separated node URLs (one URL always means a single node). Fails
    /// with [`StoreError::Unavailable`] when no connection can be made now.
    /// For a private CA or client certificates, use [`builder`](Self::builder).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::builder(url).connect().await
    }

    /// A store to configure before connecting (TLS certificates, prefix).
    pub fn builder(urls: &str) -> RedisStoreBuilder {
        RedisStoreBuilder { urls: urls.to_owned(), tls: Tls::default(), prefix: "tjwt".to_owned() }
    }

    /// A store on one Redis node through a client the application built.
    /// Connects lazily (the first call connects); must be called from within
    /// a Tokio runtime.
    pub fn from_client(client: redis::Client) -> Result<Self, StoreError> {
        let connections = Connections::single(client)?;
        Ok(Self::from_parts(connections.data, connections.subscriber, "tjwt"))
    }

    fn from_parts(conn: Conn, subscriber: SubscriberSource, prefix: &str) -> Self {
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
            prefix: Arc::new(Names::new(prefix)),
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
        Self::from_parts(self.inner.conn.clone(), self.inner.subscriber.clone(), prefix)
    }

    /// `EVALSHA <script> 1 <user's hash>` and the key, with room for `args`
    /// more arguments of about `bytes` bytes in all: the caller adds them.
    fn eval(&self, script: &Lua, user_id: &str, args: usize, bytes: usize) -> (Cmd, String) {
        let key = self.prefix.user_key(user_id);
        (script.call(&key, key.len(), args, bytes), key)
    }

    async fn run<T: FromRedisValue>(&self, script: &Lua, key: &str, cmd: &Cmd) -> Ran<T> {
        run(&self.inner.conn, script, key.as_bytes(), cmd).await
    }

    /// The prefix of the revocation message of a session revoked (and
    /// published) now: `s:<until_ms>:<published_ms>:` (see `revocation::wire`).
    fn message_prefix(now_ms: u64, policy: &SessionPolicy) -> String {
        format!("s:{}:{now_ms}:", now_ms.saturating_add(ms(policy.revocation_ttl)))
    }

    /// Records revocations a script already published: into the lists
    /// attached here at once, and into the revocation set for instances that
    /// start later (retried in the background until it succeeds or the
    /// revocations no longer matter). `Err` when the first attempt failed.
    async fn record(&self, revocations: Vec<Revocation>) -> Result<(), StoreError> {
        if revocations.is_empty() {
            return Ok(());
        }
        feed(&self.inner.lists, &revocations);
        let first = self.record_once(&revocations).await;
        if let Err(error) = &first {
            tracing::warn!(%error, count = revocations.len(), "recording revocations failed; retrying in the background");
            let store = self.clone();
            tokio::spawn(async move {
                let mut backoff = Duration::from_millis(50);
                loop {
                    tokio::time::sleep(backoff).await;
                    let now = now_ms();
                    let pending: Vec<Revocation> = revocations.iter().filter(|r| r.until_ms() > now).cloned().collect();
                    if pending.is_empty() || store.record_once(&pending).await.is_ok() {
                        tracing::info!("revocations recorded after a retry");
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            });
        }
        first
    }

    async fn record_once(&self, revocations: &[Revocation]) -> Result<(), StoreError> {
        let script = &self.inner.scripts.record_revoked;
        let key = &self.prefix.revoked;
        let mut cmd = script.call(key, key.len(), 2 + 3 * revocations.len(), 64 * revocations.len());
        let now = now_ms();
        cmd.arg(now).arg(key);
        for revocation in revocations {
            cmd.arg(revocation.until_ms()).arg(revocation.member()).arg(revocation.message(now));
        }
        run::<()>(&self.inner.conn, script, key.as_bytes(), &cmd).await.result
    }

    /// Records revoked sessions (see [`record`](Self::record)); a failure is
    /// logged, not returned: the session is already gone and live instances
    /// have heard about it.
    async fn record_sessions(&self, sids: &[String], now_ms: u64, policy: &SessionPolicy) {
        let until_ms = now_ms.saturating_add(ms(policy.revocation_ttl));
        let revocations = sids.iter().map(|sid| Revocation::Session { sid: sid.clone(), until_ms }).collect();
        let _ = self.record(revocations).await;
    }

    /// After a call whose reply may have been lost: in the background, undo
    /// `undo` and record whatever the user's journal says was revoked; once
    /// more a little later, for a script Redis ran late.
    fn reconcile(&self, user_id: &str, sid: &str, undo: Undo, policy: &SessionPolicy) {
        let (store, user_id, sid, ttl) = (self.clone(), user_id.to_owned(), sid.to_owned(), ms(policy.revocation_ttl));
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let mut backoff = Duration::from_millis(50);
            let mut done = 0;
            while done < 2 && started.elapsed() < RECONCILE_FOR {
                match store.reconcile_once(&user_id, &sid, undo, ttl).await {
                    Ok(()) => {
                        done += 1;
                        tokio::time::sleep(RECONCILE_AGAIN).await;
                    }
                    Err(error) => {
                        tracing::debug!(%error, "reconciling after a lost reply failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                }
            }
            if done == 0 {
                tracing::warn!(sid, "could not reconcile a session after a lost reply from Redis");
            }
        });
    }

    async fn reconcile_once(&self, user_id: &str, sid: &str, undo: Undo, ttl: u64) -> Result<(), StoreError> {
        let script = &self.inner.scripts.reconcile;
        let (what, counter, at) = match undo {
            Undo::Nothing => ("-", 0, 0),
            Undo::Rotation { counter, at } => ("r", counter, at),
            Undo::Creation { at } => ("c", 0, at),
        };
        let (mut cmd, key) = self.eval(script, user_id, 5, sid.len() + 60);
        cmd.arg(now_ms()).arg(what).arg(sid).arg(counter).arg(at);
        let journal: Vec<Vec<u8>> = self.run(script, &key, &cmd).await.result?;
        let revocations = journal
            .chunks_exact(2)
            .filter_map(|pair| {
                let revoked_at = parse_score(&pair[1])?;
                let sid = std::str::from_utf8(&pair[0]).ok()?.to_owned();
                Some(Revocation::Session { sid, until_ms: revoked_at.saturating_add(ttl) })
            })
            .collect();
        self.record(revocations).await
    }

    /// A revocation feed for services that only verify tokens: subscribes
    /// `list` to this store's revocations without writing anything.
    pub(crate) fn subscribe(&self, list: Arc<RevocationList>) {
        let subscriber = Subscriber {
            source: self.inner.subscriber.clone(),
            names: self.prefix.clone(),
            list: Arc::downgrade(&list),
            alive: self.inner.alive.clone(),
        };
        tokio::spawn(subscriber.run());
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

/// Feeds revocations into every live attached list.
fn feed(lists: &Mutex<Vec<Weak<RevocationList>>>, revocations: &[Revocation]) {
    let mut lists = lists.lock().unwrap_or_else(PoisonError::into_inner);
    lists.retain(|weak| match weak.upgrade() {
        Some(list) => {
            for revocation in revocations {
                list.apply(revocation);
            }
            true
        }
        None => false,
    });
}

fn sids(reply: Vec<Vec<u8>>) -> Result<Vec<String>, StoreError> {
    reply.into_iter().map(utf8).collect()
}

impl SessionStore for RedisStore {
    fn create<'a>(&'a self, session: NewSession, policy: &'a SessionPolicy) -> StoreFuture<'a, Vec<String>> {
        Box::pin(async move {
            let now = session.now_ms;
            // The new session always survives, so a cap of 0 acts as 1.
            let cap = policy.max_sessions.map_or(0, |m| m.max(1));
            let chunks = encode(&session, policy);
            let script = &self.inner.scripts.create;
            let bytes = 64 + session.sid.len() + self.prefix.revoked.len() + chunks.iter().map(Vec::len).sum::<usize>();
            let (mut cmd, key) = self.eval(script, &session.user_id, 5 + chunks.len(), bytes);
            cmd.arg(now).arg(&session.sid).arg(cap).arg(&self.prefix.revoked).arg(Self::message_prefix(now, policy));
            for chunk in &chunks {
                cmd.arg(chunk.as_slice());
            }
            let ran: Ran<Vec<Vec<u8>>> = self.run(script, &key, &cmd).await;
            if ran.uncertain {
                // Failed: a session nobody received must not count against
                // the cap. Succeeded after a retry: a lost first attempt's
                // evictions are in the journal.
                let undo = if ran.result.is_err() { Undo::Creation { at: now } } else { Undo::Nothing };
                self.reconcile(&session.user_id, &session.sid, undo, policy);
            }
            let evicted = sids(ran.result?)?;
            self.record_sessions(&evicted, now, policy).await;
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
            let script = &self.inner.scripts.rotate;
            let (mut cmd, key) = self.eval(script, user_id, 7, sid.len() + self.prefix.revoked.len() + 80);
            // Lua numbers are doubles; anything past 2^48 is above every stored counter anyway.
            let presented = presented.min(MAX_48 + 1);
            cmd.arg(sid).arg(presented).arg(now_ms).arg(ms(policy.grace)).arg(ms(policy.idle_ttl));
            cmd.arg(&self.prefix.revoked).arg(Self::message_prefix(now_ms, policy));
            let ran: Ran<Vec<Vec<u8>>> = self.run(script, &key, &cmd).await;
            if ran.uncertain {
                // The client did not get the successor: undo the rotation so
                // the token it holds still works (anyone who did get it is one
                // ahead, which rotation accepts).
                let undo = if ran.result.is_err() {
                    Undo::Rotation { counter: presented + 1, at: now_ms }
                } else {
                    Undo::Nothing
                };
                self.reconcile(user_id, sid, undo, policy);
            }
            let reply = ran.result?;
            let Some((code, reply)) = reply.split_first() else {
                return Err(corrupt("empty rotate reply"));
            };
            match code.as_slice() {
                b"N" => Ok(RotateOutcome::NotFound),
                b"T" => {
                    // Boxed: this rare call's future is larger than the rest of
                    // rotate's, which would grow every rotation's allocation.
                    Box::pin(self.record_sessions(&[sid.to_owned()], now_ms, policy)).await;
                    Ok(RotateOutcome::Theft { user_id: user_id.to_owned(), sid: sid.to_owned() })
                }
                b"R" => Ok(RotateOutcome::Rotated(decode(user_id, sid.to_owned(), reply)?)),
                b"F" => Ok(RotateOutcome::FastForwarded(decode(user_id, sid.to_owned(), reply)?)),
                b"P" => Ok(RotateOutcome::Replayed(decode(user_id, sid.to_owned(), reply)?)),
                _ => Err(corrupt("unknown rotate reply")),
            }
        })
    }

    fn list<'a>(&'a self, user_id: &'a str, now_ms: u64) -> StoreFuture<'a, Vec<SessionRecord>> {
        Box::pin(async move {
            let script = &self.inner.scripts.list;
            let (mut cmd, key) = self.eval(script, user_id, 1, 20);
            cmd.arg(now_ms);
            let reply: Vec<Vec<Vec<u8>>> = self.run(script, &key, &cmd).await.result?;
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
            let script = &self.inner.scripts.revoke;
            let (mut cmd, key) = self.eval(script, user_id, 4, sid.len() + self.prefix.revoked.len() + 40);
            cmd.arg(sid).arg(now_ms).arg(&self.prefix.revoked).arg(Self::message_prefix(now_ms, policy));
            let ran: Ran<i64> = self.run(script, &key, &cmd).await;
            if ran.uncertain {
                self.reconcile(user_id, sid, Undo::Nothing, policy);
            }
            let revoked = ran.result? == 1;
            if revoked {
                self.record_sessions(&[sid.to_owned()], now_ms, policy).await;
            }
            Ok(revoked)
        })
    }

    fn revoke_all<'a>(
        &'a self,
        user_id: &'a str,
        except: Option<&'a str>,
        now_ms: u64,
        policy: &'a SessionPolicy,
    ) -> StoreFuture<'a, Vec<String>> {
        Box::pin(async move {
            let script = &self.inner.scripts.revoke_all;
            let except = except.unwrap_or("");
            let (mut cmd, key) = self.eval(script, user_id, 4, self.prefix.revoked.len() + except.len() + 40);
            cmd.arg(now_ms).arg(&self.prefix.revoked).arg(Self::message_prefix(now_ms, policy)).arg(except);
            let ran: Ran<Vec<Vec<u8>>> = self.run(script, &key, &cmd).await;
            if ran.uncertain {
                self.reconcile(user_id, except, Undo::Nothing, policy);
            }
            let revoked = sids(ran.result?)?;
            self.record_sessions(&revoked, now_ms, policy).await;
            Ok(revoked)
        })
    }

    fn reauthenticate<'a>(
        &'a self,
        user_id: &'a str,
        sid: &'a str,
        now_ms: u64,
        _policy: &'a SessionPolicy,
    ) -> StoreFuture<'a, Option<SessionRecord>> {
        Box::pin(async move {
            let script = &self.inner.scripts.reauthenticate;
            let (mut cmd, key) = self.eval(script, user_id, 2, sid.len() + 20);
            cmd.arg(sid).arg(now_ms);
            let chunks: Vec<Vec<u8>> = self.run(script, &key, &cmd).await.result?;
            if chunks.is_empty() {
                return Ok(None);
            }
            decode(user_id, sid.to_owned(), &chunks).map(Some)
        })
    }

    fn invalidate_tokens<'a>(
        &'a self,
        user_id: &'a str,
        now_ms: u64,
        policy: &'a SessionPolicy,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let until_ms = now_ms.saturating_add(ms(policy.revocation_ttl));
            self.record(vec![Revocation::User { user_id: user_id.to_owned(), before_ms: now_ms, until_ms }]).await
        })
    }

    fn attach(&self, list: Arc<RevocationList>) {
        {
            let mut lists = self.inner.lists.lock().unwrap_or_else(PoisonError::into_inner);
            lists.retain(|weak| weak.strong_count() > 0);
            lists.push(Arc::downgrade(&list));
        }
        self.subscribe(list);
    }
}

/// A real `redis-server` for the tests below (the integration tests' harness).
#[cfg(test)]
#[path = "../../../tests/support/redis_server.rs"]
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
                    (rotated.counter, rotated.rotated_at_ms, rotated.last_used_at_ms, rotated.auth_time_ms),
                    (1, now + 1000, now + 1000, now)
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
                let reauth = store.reauthenticate(&user, &sid, now + 3000, &policy).await.unwrap().unwrap();
                assert_eq!(reauth, SessionRecord { auth_time_ms: now + 3000, ..rotated }, "case {i}");
            }
        });
    }
}
