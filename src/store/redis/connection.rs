//! Connections to Redis for the store: the data connection (single node or
//! Cluster, auto-reconnecting), where revocation subscribers connect, and the
//! bounds every call runs under (DESIGN §2.9: a hung Redis never hangs a request).

use std::time::Duration;

use redis::{
    Cmd, ErrorKind, FromRedisValue, ProtocolVersion, RedisError, RedisFuture, Script, ServerErrorKind, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::{ClusterClient, ClusterConfig},
    cluster_async::ClusterConnection,
};

use crate::store::StoreError;

/// Ceiling on any one store call, connection included (DESIGN §2.9).
pub(super) const CALL_TIMEOUT: Duration = Duration::from_millis(1000);
/// Ceilings on connecting and on one answer, inside [`CALL_TIMEOUT`].
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
pub(super) const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);

/// The data connection: auto-reconnecting either way.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Where revocation subscribers connect.
#[derive(Clone)]
pub(super) enum SubscriberSource {
    /// A RESP3 client for the node (push messages need RESP3).
    Single(Box<redis::Client>),
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

pub(super) fn unavailable(err: RedisError) -> StoreError {
    StoreError::Unavailable(err.to_string())
}

fn is_connection_error(err: &RedisError) -> bool {
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
    pub(super) fn open(url: &str) -> Result<Self, StoreError> {
        let urls: Vec<&str> = url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
        match urls.as_slice() {
            [] => Err(StoreError::Unavailable("no Redis URL given".into())),
            [one] => Self::single(redis::Client::open(*one).map_err(unavailable)?),
            nodes => Ok(Self::cluster(
                ClusterClient::builder(nodes.iter().copied())
                    .use_protocol(ProtocolVersion::RESP3)
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(RESPONSE_TIMEOUT)
                    .retries(2)
                    .min_retry_wait(10)
                    .max_retry_wait(100)
                    .build()
                    .map_err(unavailable)?,
            )),
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
        let subscriber = redis::Client::open(info.set_redis_settings(resp3)).map_err(unavailable)?;
        let manager = ConnectionManager::new_lazy_with_config(client, config).map_err(unavailable)?;
        Ok(Self { data: Conn::Single(manager), subscriber: SubscriberSource::Single(Box::new(subscriber)) })
    }

    /// A Cluster, connecting lazily; must be called within a Tokio runtime.
    pub(super) fn cluster(client: ClusterClient) -> Self {
        let conn = client.get_pending_async_connection_with_config(cluster_config());
        Self { data: Conn::Cluster(conn), subscriber: SubscriberSource::Cluster(Box::new(client)) }
    }
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
    let mut conn = conn.clone();
    bounded(async move { redis::cmd("PING").query_async::<()>(&mut conn).await }).await
}

/// The result of a script call, and whether Redis may have run it (or an
/// earlier attempt) without this caller seeing the reply: after a timeout or
/// a connection lost mid-call the caller must reconcile.
pub(super) struct Ran<T> {
    pub(super) result: Result<T, StoreError>,
    pub(super) uncertain: bool,
}

/// Runs one script invocation (`EVALSHA …`), loading the script first when
/// Redis does not know it (as `Script::invoke_async`).
pub(super) async fn run<T: FromRedisValue>(conn: &Conn, script: &Script, cmd: &Cmd) -> Ran<T> {
    let mut conn = conn.clone();
    // Whether an attempt may have reached Redis without its reply reaching us.
    let mut uncertain = false;
    let attempt = tokio::time::timeout(CALL_TIMEOUT, async {
        let mut result = cmd.query_async(&mut conn).await;
        // A connection found dead (Redis restarted since the last call)
        // reconnects on its own: try once more rather than fail a request
        // Redis could serve. Safe to repeat: a create rewrites the same
        // session, a rotation whose reply was lost answers `Replayed` with
        // the same successor, and whatever a lost attempt revoked is in the
        // journal (see `reconcile.lua`).
        if let Err(err) = &result
            && is_connection_error(err)
        {
            uncertain |= may_have_run(err);
            result = cmd.query_async(&mut conn).await;
        }
        if let Err(err) = &result
            && err.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
        {
            result = match script.load_async(&mut conn).await {
                Ok(_) => cmd.query_async(&mut conn).await,
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
        Ok(result) => Ran { result: result.map_err(unavailable), uncertain },
        Err(_) => {
            Ran { result: Err(StoreError::Unavailable(format!("{NO_ANSWER} {CALL_TIMEOUT:?}"))), uncertain: true }
        }
    }
}

/// Whether a call that failed this way may still have run in Redis.
fn may_have_run(err: &RedisError) -> bool {
    (is_connection_error(err) || err.is_timeout()) && !err.is_connection_refusal()
}

/// Warns when Redis may evict keys under memory pressure: sessions would
/// vanish silently (every key this store writes has a TTL, so even the
/// `volatile-*` policies may pick them). Managed services that refuse
/// `CONFIG` are only noted at debug level.
pub(super) async fn check_eviction_policy(conn: &Conn) {
    let mut conn = conn.clone();
    let mut cmd = redis::cmd("CONFIG");
    cmd.arg("GET").arg("maxmemory-policy");
    match bounded(cmd.query_async::<Vec<String>>(&mut conn)).await {
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
