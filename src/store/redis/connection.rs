//! Connections to Redis for the store: the data connection (a single node
//! through redis-rs's auto-reconnecting manager, or a Cluster through our
//! router), where revocation subscribers connect, TLS, and the bounds every
//! call runs under (DESIGN §2.9: a hung Redis never hangs a request).

use std::{sync::Arc, time::Duration};

use redis::{
    Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, FromRedisValue, IntoConnectionInfo, ProtocolVersion, RedisError,
    RedisResult, ServerErrorKind, Value,
    aio::{ConnectionManager, ConnectionManagerConfig},
    cluster::{ClusterClient, ClusterConfig},
};

use super::{cluster::ClusterRouter, scripts::Lua};
use crate::store::StoreError;

/// Ceiling on any one store call, connection included (DESIGN §2.9).
pub(super) const CALL_TIMEOUT: Duration = Duration::from_millis(1000);
/// Ceilings on connecting and on one answer, inside [`CALL_TIMEOUT`].
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
pub(super) const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);

/// TLS settings beyond the URL's `rediss://`: a private CA and a client
/// certificate (PEM).
#[derive(Clone, Default)]
pub(super) struct Tls {
    pub(super) ca: Option<Vec<u8>>,
    pub(super) client: Option<(Vec<u8>, Vec<u8>)>,
}

impl Tls {
    #[cfg(feature = "redis-tls")]
    fn is_default(&self) -> bool {
        self.ca.is_none() && self.client.is_none()
    }

    /// A client for `info`, with these settings when it is a TLS address.
    pub(super) fn client(&self, info: ConnectionInfo) -> RedisResult<redis::Client> {
        if !matches!(info.addr(), ConnectionAddr::TcpTls { .. }) {
            return redis::Client::open(info);
        }
        #[cfg(feature = "redis-tls")]
        {
            install_tls_provider();
            if self.is_default() {
                return redis::Client::open(info);
            }
            redis::Client::build_with_tls(info, self.certificates())
        }
        #[cfg(not(feature = "redis-tls"))]
        Err(no_tls())
    }

    #[cfg(feature = "redis-tls")]
    fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self
                .client
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig { client_cert: cert.clone(), client_key: key.clone() }),
            root_cert: self.ca.clone(),
        }
    }
}

#[cfg(not(feature = "redis-tls"))]
fn no_tls() -> RedisError {
    RedisError::from((
        ErrorKind::InvalidClientConfig,
        "rediss:// (TLS) needs the `redis-tls` feature of tower-jwt-auth (on by default)",
    ))
}

/// redis-rs's rustls asks for the process-wide crypto provider: install the
/// one matching this crate's backend, unless the application chose one.
#[cfg(feature = "redis-tls")]
fn install_tls_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_some() {
        return;
    }
    #[cfg(feature = "aws-lc-rs")]
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    #[cfg(all(feature = "rust-crypto", not(feature = "aws-lc-rs")))]
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The data connection: auto-reconnecting either way.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(Arc<ClusterRouter>),
}

/// Where revocation subscribers connect.
#[derive(Clone)]
pub(super) enum SubscriberSource {
    /// A RESP3 client for the node (push messages need RESP3).
    Single(Box<redis::Client>),
    Cluster(Box<ClusterClient>),
}

impl Conn {
    /// Sends a command whose key is `key` (the one it touches).
    pub(super) async fn query(&self, key: &[u8], cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Conn::Single(conn) => cmd.query_async(&mut conn.clone()).await,
            Conn::Cluster(router) => router.query(key, cmd).await,
        }
    }

    /// Sends a keyless command (to every primary of a cluster).
    pub(super) async fn query_all(&self, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Conn::Single(conn) => cmd.query_async(&mut conn.clone()).await,
            Conn::Cluster(router) => router.all(cmd).await,
        }
    }
}

pub(super) fn unavailable(err: RedisError) -> StoreError {
    StoreError::Unavailable(err.to_string())
}

pub(super) fn connection_error(err: &RedisError) -> bool {
    err.is_io_error() || err.is_connection_dropped() || err.is_connection_refusal()
}

pub(super) fn cluster_config() -> ClusterConfig {
    ClusterConfig::new().set_connection_timeout(CONNECT_TIMEOUT).set_response_timeout(RESPONSE_TIMEOUT)
}

/// The connections of one store.
pub(super) struct Connections {
    pub(super) data: Conn,
    pub(super) subscriber: SubscriberSource,
}

impl Connections {
    /// One node for one URL, a Cluster for several comma-separated ones.
    pub(super) fn open(url: &str, tls: &Tls) -> Result<Self, StoreError> {
        let urls: Vec<&str> = url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
        let infos: Vec<ConnectionInfo> =
            urls.iter().map(|url| url.into_connection_info()).collect::<RedisResult<_>>().map_err(unavailable)?;
        match infos.as_slice() {
            [] => Err(StoreError::Unavailable("no Redis URL given".into())),
            [one] => Self::single(tls.client(one.clone()).map_err(unavailable)?),
            _ => Self::cluster(infos, tls),
        }
    }

    /// A single node, connecting lazily; must be called within a Tokio runtime.
    pub(super) fn single(client: redis::Client) -> Result<Self, StoreError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(100));
        let info = client.get_connection_info().clone();
        let resp3 = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
        // The address carries the TLS settings too.
        let subscriber = redis::Client::open(info.set_redis_settings(resp3)).map_err(unavailable)?;
        let manager = ConnectionManager::new_lazy_with_config(client, config).map_err(unavailable)?;
        Ok(Self { data: Conn::Single(manager), subscriber: SubscriberSource::Single(Box::new(subscriber)) })
    }

    /// A Cluster from its seed nodes, connecting lazily.
    fn cluster(seeds: Vec<ConnectionInfo>, tls: &Tls) -> Result<Self, StoreError> {
        let subscriber = cluster_client(&seeds, tls).map_err(unavailable)?;
        let router = ClusterRouter::new(seeds, tls.clone());
        Ok(Self { data: Conn::Cluster(Arc::new(router)), subscriber: SubscriberSource::Cluster(Box::new(subscriber)) })
    }
}

/// redis-rs's cluster client, for pub/sub and loading revocations only (the
/// data path goes through [`ClusterRouter`]).
fn cluster_client(seeds: &[ConnectionInfo], tls: &Tls) -> RedisResult<ClusterClient> {
    #[cfg_attr(not(feature = "redis-tls"), allow(unused_mut))]
    let mut builder = ClusterClient::builder(seeds.iter().cloned())
        .use_protocol(ProtocolVersion::RESP3)
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT);
    if seeds.iter().any(|seed| matches!(seed.addr(), ConnectionAddr::TcpTls { .. })) {
        #[cfg(feature = "redis-tls")]
        {
            install_tls_provider();
            if !tls.is_default() {
                builder = builder.certs(tls.certificates());
            }
        }
        #[cfg(not(feature = "redis-tls"))]
        {
            let _ = tls;
            return Err(no_tls());
        }
    }
    builder.build()
}

const NO_ANSWER: &str = "no answer within";

/// Bounds a Redis call by [`CALL_TIMEOUT`] and maps its errors.
pub(super) async fn bounded<T>(call: impl Future<Output = redis::RedisResult<T>>) -> Result<T, StoreError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => result.map_err(unavailable),
        Err(_) => Err(StoreError::Unavailable(format!("{NO_ANSWER} {CALL_TIMEOUT:?}"))),
    }
}

pub(super) async fn ping(conn: &Conn) -> Result<(), StoreError> {
    bounded(async { conn.query_all(&redis::cmd("PING")).await.map(drop) }).await
}

/// The result of a script call, and whether Redis may have run it (or an
/// earlier attempt) without this caller seeing the reply: after a timeout or
/// a connection lost mid-call the caller must reconcile.
pub(super) struct Ran<T> {
    pub(super) result: Result<T, StoreError>,
    pub(super) uncertain: bool,
}

/// Runs one script invocation (`EVALSHA <sha> 1 <key> …`), loading the
/// script first when Redis does not know it (as `Script::invoke_async`).
pub(super) async fn run<T: FromRedisValue>(conn: &Conn, script: &Lua, key: &[u8], cmd: &Cmd) -> Ran<T> {
    // Whether an attempt may have reached Redis without its reply reaching us.
    let mut uncertain = false;
    let attempt = tokio::time::timeout(CALL_TIMEOUT, async {
        let mut result = conn.query(key, cmd).await;
        // A connection found dead (Redis restarted since the last call)
        // reconnects on its own: try once more rather than fail a request
        // Redis could serve. Safe to repeat: a create rewrites the same
        // session, a rotation whose reply was lost answers `Replayed` with
        // the same successor, and whatever a lost attempt revoked is in the
        // journal (see `reconcile.lua`).
        if let Err(err) = &result
            && connection_error(err)
        {
            uncertain |= may_have_run(err);
            result = conn.query(key, cmd).await;
        }
        if let Err(err) = &result
            && err.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
        {
            let mut load = redis::cmd("SCRIPT");
            load.arg("LOAD").arg(&script.code);
            result = match conn.query_all(&load).await {
                Ok(_) => conn.query(key, cmd).await,
                Err(err) => Err(err),
            };
        }
        if let Err(err) = &result {
            uncertain |= may_have_run(err);
        }
        result
    })
    .await;
    match attempt {
        Ok(result) => Ran {
            result: result.and_then(|v| T::from_redis_value(v).map_err(RedisError::from)).map_err(unavailable),
            uncertain,
        },
        Err(_) => {
            Ran { result: Err(StoreError::Unavailable(format!("{NO_ANSWER} {CALL_TIMEOUT:?}"))), uncertain: true }
        }
    }
}

/// Whether a call that failed this way may still have run in Redis.
fn may_have_run(err: &RedisError) -> bool {
    (connection_error(err) || err.is_timeout()) && !err.is_connection_refusal()
}

/// Warns when Redis may evict keys under memory pressure: sessions would
/// vanish silently (every key this store writes has a TTL, so even the
/// `volatile-*` policies may pick them). Managed services that refuse
/// `CONFIG` are only noted at debug level.
pub(super) async fn check_eviction_policy(conn: &Conn) {
    let mut cmd = redis::cmd("CONFIG");
    cmd.arg("GET").arg("maxmemory-policy");
    let reply = bounded(async {
        conn.query_all(&cmd).await.and_then(|v| Vec::<String>::from_redis_value(v).map_err(RedisError::from))
    })
    .await;
    match reply {
        Ok(reply) => match reply.get(1).map(String::as_str) {
            Some("noeviction") | None => {}
            Some(policy) => tracing::warn!(
                policy,
                "Redis maxmemory-policy is not `noeviction`: under memory pressure Redis will silently \
                 evict sessions (users logged out) and revocation records (revoked tokens accepted by \
                 instances started later); set `maxmemory-policy noeviction` on the sessions' Redis"
            ),
        },
        Err(error) => tracing::debug!(%error, "could not read Redis maxmemory-policy"),
    }
}
