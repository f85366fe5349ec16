//! Routing the store's commands on a Redis Cluster: a slot map, one
//! auto-reconnecting connection per node, and redirections handled here.
//!
//! Written by hand because redis-rs 1.8's async cluster connection fails
//! under live resharding in two ways (reproduced in `tests/ask_repro.rs`):
//! it sends `ASKING` as a request of its own on the shared connection, so a
//! concurrent command takes the one-shot flag and the redirected command
//! fails; and the slot refresh that a `MOVED` triggers waits for a write lock
//! while queued requests hold the way, so the connection stops answering for
//! good. Every command of this store names one key (one slot), which makes
//! routing simple: the slot's owner from the map; on `ASK`, `ASKING` and the
//! command pipelined as one write to the named node; on `MOVED`, the map is
//! corrected at once and refreshed in the background; on `TRYAGAIN` (keys of
//! one command split across a migration), a short wait. Requests never wait
//! for a refresh.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::Duration,
};

use redis::{
    Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, RedisError, RedisResult, ServerErrorKind, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
};

use super::connection::{CONNECT_TIMEOUT, RESPONSE_TIMEOUT, Tls, connection_error};

/// Slots in a Redis Cluster.
const SLOTS: u16 = 16_384;
/// Redirections followed for one command before giving up.
const MAX_ATTEMPTS: u32 = 6;

/// The cluster as this store sees it.
pub(super) struct ClusterRouter {
    /// How to reach the seeds (and, with another address, every node).
    seeds: Vec<ConnectionInfo>,
    tls: Tls,
    /// Owner of each slot (`None`: unknown yet), shared with in-flight requests.
    slots: RwLock<Arc<Vec<Option<Arc<str>>>>>,
    /// A connection per node address, made on first use.
    nodes: Mutex<HashMap<Arc<str>, ConnectionManager>>,
    /// Held by the one refresh in flight.
    refreshing: tokio::sync::Mutex<()>,
}

/// The cluster slot of a key: CRC16 (XMODEM) of its hash tag, as Redis computes it.
pub(super) fn slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter().position(|&b| b == b'}').filter(|&close| close > 0).map(|close| &rest[..close])
        })
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(tagged) % SLOTS
}

fn address(host: &str, port: u16) -> Arc<str> {
    format!("{host}:{port}").into()
}

impl ClusterRouter {
    pub(super) fn new(seeds: Vec<ConnectionInfo>, tls: Tls) -> Self {
        Self {
            seeds,
            tls,
            slots: RwLock::new(Arc::new(vec![None; usize::from(SLOTS)])),
            nodes: Mutex::new(HashMap::new()),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// The connection to `addr` (`host:port`), made on first use with the
    /// seeds' credentials and TLS settings.
    fn node(&self, addr: &Arc<str>) -> RedisResult<ConnectionManager> {
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(conn) = nodes.get(addr) {
            return Ok(conn.clone());
        }
        let (host, port) = addr
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host.trim_start_matches('[').trim_end_matches(']'), port.parse().ok()?)))
            .ok_or_else(|| RedisError::from((ErrorKind::Client, "unreadable node address")))?;
        let seed = self.seeds.first().ok_or_else(|| RedisError::from((ErrorKind::Client, "no seed")))?;
        let target = match seed.addr() {
            ConnectionAddr::TcpTls { insecure, .. } => {
                ConnectionAddr::TcpTls { host: host.to_owned(), port, insecure: *insecure, tls_params: None }
            }
            _ => ConnectionAddr::Tcp(host.to_owned(), port),
        };
        let client = self.tls.client(seed.clone().set_addr(target))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(100));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        nodes.insert(addr.clone(), conn.clone());
        Ok(conn)
    }

    /// The owner of `slot` per the map, or a seed while the map is empty.
    fn owner(&self, slot: u16) -> Option<Arc<str>> {
        self.slots.read().unwrap_or_else(PoisonError::into_inner)[usize::from(slot)].clone()
    }

    fn set_owner(&self, slot: u16, addr: Arc<str>) {
        let mut slots = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        Arc::make_mut(&mut slots)[usize::from(slot)] = Some(addr);
    }

    /// Reads the slot map from the first node that answers (`CLUSTER
    /// SLOTS`). Concurrent callers share one refresh.
    pub(super) async fn refresh(&self) -> RedisResult<()> {
        let Ok(_guard) = self.refreshing.try_lock() else {
            // One is in flight: wait for it rather than start another.
            let _ = self.refreshing.lock().await;
            return Ok(());
        };
        let known: Vec<Arc<str>> = {
            let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
            let mut known: Vec<Arc<str>> = slots.iter().flatten().cloned().collect();
            known.dedup();
            known
        };
        let seeds = self.seeds.iter().filter_map(|seed| match seed.addr() {
            ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => Some(address(host, *port)),
            _ => None,
        });
        let mut last = RedisError::from((ErrorKind::Client, "no cluster node answered"));
        for addr in known.into_iter().chain(seeds) {
            let mut conn = match self.node(&addr) {
                Ok(conn) => conn,
                Err(error) => {
                    last = error;
                    continue;
                }
            };
            match redis::cmd("CLUSTER").arg("SLOTS").query_async::<Value>(&mut conn).await {
                Ok(reply) => {
                    let map = parse_slots(&reply, &addr)?;
                    *self.slots.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(map);
                    return Ok(());
                }
                Err(error) => last = error,
            }
        }
        Err(last)
    }

    /// Sends `cmd` (whose key is `key`) to the owner of its slot, following
    /// redirections.
    pub(super) async fn query(self: &Arc<Self>, key: &[u8], cmd: &Cmd) -> RedisResult<Value> {
        let slot = slot(key);
        let mut target = match self.owner(slot) {
            Some(owner) => owner,
            None => {
                self.refresh().await?;
                self.owner(slot).ok_or_else(|| RedisError::from((ErrorKind::Client, "slot not served")))?
            }
        };
        let mut asking = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut conn = self.node(&target)?;
            let result = if asking {
                let mut pipe = redis::pipe();
                pipe.cmd("ASKING").add_command(cmd.clone());
                // One write: nothing can come between ASKING and the command.
                conn.req_packed_commands(&pipe, 1, 1).await.and_then(|mut replies| {
                    replies.pop().ok_or_else(|| RedisError::from((ErrorKind::Client, "no reply")))?.extract_error()
                })
            } else {
                cmd.query_async::<Value>(&mut conn).await
            };
            let error = match result {
                Ok(value) => return Ok(value),
                Err(error) if attempt >= MAX_ATTEMPTS => return Err(error),
                Err(error) => error,
            };
            asking = false;
            match error.kind() {
                ErrorKind::Server(ServerErrorKind::Moved) => {
                    let Some((addr, moved_slot)) = error.redirect_node() else { return Err(error) };
                    target = addr.into();
                    self.set_owner(moved_slot, target.clone());
                    // The rest of the map is probably stale too: refresh it
                    // without making this request wait.
                    self.spawn_refresh();
                }
                ErrorKind::Server(ServerErrorKind::Ask) => {
                    let Some((addr, _)) = error.redirect_node() else { return Err(error) };
                    target = addr.into();
                    asking = true;
                }
                ErrorKind::Server(ServerErrorKind::TryAgain | ServerErrorKind::ClusterDown) => {
                    tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
                }
                _ if connection_error(&error) => {
                    // The node may be gone (failover): ask the cluster again.
                    let _ = self.refresh().await;
                    target = self.owner(slot).unwrap_or(target);
                }
                _ => return Err(error),
            }
        }
    }

    /// Sends a keyless command (`SCRIPT LOAD`, `PING`, `CONFIG GET`) to every
    /// known primary; the first reply is returned once all answered.
    pub(super) async fn all(&self, cmd: &Cmd) -> RedisResult<Value> {
        if self.owner(0).is_none() {
            self.refresh().await?;
        }
        let mut owners: Vec<Arc<str>> =
            self.slots.read().unwrap_or_else(PoisonError::into_inner).iter().flatten().cloned().collect();
        owners.sort();
        owners.dedup();
        let mut first = None;
        for owner in owners {
            let mut conn = self.node(&owner)?;
            let value = cmd.query_async::<Value>(&mut conn).await?;
            first.get_or_insert(value);
        }
        first.ok_or_else(|| RedisError::from((ErrorKind::Client, "no cluster node known")))
    }

    fn spawn_refresh(self: &Arc<Self>) {
        // Weak: a store dropped meanwhile needs no map.
        let router = Arc::downgrade(self);
        tokio::spawn(async move {
            if let Some(router) = router.upgrade() {
                let _ = router.refresh().await;
            }
        });
    }
}

/// `CLUSTER SLOTS`: `[[start, end, [host, port, id, …], replicas…], …]`.
/// A node that reports an empty host means "the address you reached me at".
fn parse_slots(reply: &Value, reached: &Arc<str>) -> RedisResult<Vec<Option<Arc<str>>>> {
    let bad = || RedisError::from((ErrorKind::Parse, "unexpected CLUSTER SLOTS reply"));
    let Value::Array(ranges) = reply else { return Err(bad()) };
    let mut map = vec![None; usize::from(SLOTS)];
    for range in ranges {
        let Value::Array(fields) = range else { return Err(bad()) };
        let number = |v: &Value| match v {
            Value::Int(n) => u16::try_from(*n).ok(),
            _ => None,
        };
        let (Some(start), Some(end), Some(Value::Array(primary))) =
            (fields.first().and_then(number), fields.get(1).and_then(number), fields.get(2))
        else {
            return Err(bad());
        };
        let host = match primary.first() {
            Some(Value::BulkString(host)) if !host.is_empty() => String::from_utf8_lossy(host).into_owned(),
            _ => reached.rsplit_once(':').map_or_else(String::new, |(host, _)| host.to_owned()),
        };
        let port = match primary.get(1) {
            Some(Value::Int(port)) => u16::try_from(*port).map_err(|_| bad())?,
            _ => return Err(bad()),
        };
        let owner = address(&host, port);
        for slot in start..=end.min(SLOTS - 1) {
            map[usize::from(slot)] = Some(owner.clone());
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_redis() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot(b"123456789"), 12_739);
        assert_eq!(slot(b"foo"), 12_182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(slot(b"tjwt:{alice}"), slot(b"alice"));
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"), "an empty tag hashes the whole key");
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
    }
}
