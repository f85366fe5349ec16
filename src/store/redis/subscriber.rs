//! The task that keeps one [`RevocationList`] in step with every instance:
//! subscribes to the revocation channel, loads the revocation set in pages
//! (then marks the list loaded), relays messages, and reconnects.
//!
//! It runs on connections of its own, never the store's data connection, so
//! loading a million entries never queues a login or a rotation behind it.

use std::{
    sync::{Arc, Weak},
    time::{Duration, Instant},
};

use redis::{PushInfo, PushKind, RedisError, Value, aio::MultiplexedConnection, cluster_async::ClusterConnection};
use tokio::sync::{mpsc, watch};

use super::{
    Names,
    connection::{CALL_TIMEOUT, CONNECT_TIMEOUT, RESPONSE_TIMEOUT, SubscriberSource, cluster_config},
};
use crate::{
    clock::now_ms,
    revocation::{Revocation, RevocationList, wire::parse_score},
};

/// Reconnection backoff.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How often the subscriber checks its connection and whether it is still wanted.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// Entries asked for per `ZSCAN` page: a page is a few hundred kilobytes and
/// about a millisecond of Redis time, so other clients interleave.
const PAGE: usize = 5000;
/// Without pub/sub (a RESP2 Cluster client), how often new revocations are polled.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// How far before the newest expiry seen a poll looks again: covers clocks of
/// other instances that lag this one and revocations of shorter lifetimes.
const POLL_OVERLAP_MS: u64 = 60_000;

/// One subscription feeding one list.
pub(super) struct Subscriber {
    pub(super) source: SubscriberSource,
    pub(super) names: Arc<Names>,
    pub(super) list: Weak<RevocationList>,
    /// Closed when the owner (store or feed) is dropped.
    pub(super) alive: watch::Receiver<()>,
}

/// Why a subscription ended.
enum Ended {
    /// The owner or the list is gone: stop.
    Unwanted,
    /// The connection failed (`healthy`: after subscribing and loading): reconnect.
    Lost { healthy: bool },
    /// Pub/sub is unavailable with this client (RESP2 cluster client): poll.
    NoPush,
}

#[derive(Clone)]
enum SubConn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl SubConn {
    async fn query<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        match self {
            SubConn::Single(c) => cmd.query_async(c).await,
            SubConn::Cluster(c) => cmd.query_async(c).await,
        }
    }
}

/// Bounds one call of the subscriber by [`CALL_TIMEOUT`].
async fn bounded<T>(call: impl Future<Output = redis::RedisResult<T>>) -> Result<T, String> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {CALL_TIMEOUT:?}")),
    }
}

impl Subscriber {
    pub(super) async fn run(self) {
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

    /// Sleeps unless the owner goes away first; `false` when the
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
        self.list.strong_count() > 0 && self.alive.has_changed().is_ok()
    }

    async fn connect(&self, tx: mpsc::UnboundedSender<PushInfo>) -> Result<SubConn, RedisError> {
        match &self.source {
            SubscriberSource::Single(client) => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_push_sender(tx);
                Ok(SubConn::Single(client.get_multiplexed_async_connection_with_config(&config).await?))
            }
            SubscriberSource::Cluster(client) => Ok(SubConn::Cluster(
                client.get_async_connection_with_config(cluster_config().set_push_sender(tx)).await?,
            )),
        }
    }

    /// Connects, subscribes, loads, then relays messages until the
    /// connection fails or nobody needs them any more.
    async fn subscribe_once(&self) -> Ended {
        if !self.wanted() {
            return Ended::Unwanted;
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<PushInfo>();
        let channel = self.names.revoked.clone();
        let connected = tokio::time::timeout(CALL_TIMEOUT, async {
            let mut conn = self.connect(tx).await?;
            match &mut conn {
                SubConn::Single(c) => c.subscribe(&channel).await?,
                SubConn::Cluster(c) => c.subscribe(&channel).await?,
            }
            Ok::<_, RedisError>(conn)
        })
        .await;
        let mut conn = match connected {
            Ok(Ok(conn)) => conn,
            Ok(Err(err)) if err.kind() == redis::ErrorKind::InvalidClientConfig => {
                tracing::warn!(
                    error = %err,
                    "no pub/sub with this Redis Cluster client (build it with RESP3): polling new revocations every second"
                );
                return Ended::NoPush;
            }
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "revocation subscription failed");
                return Ended::Lost { healthy: false };
            }
            Err(_) => return Ended::Lost { healthy: false },
        };
        // Subscribed first, so nothing published from now on is missed; then
        // catch up on whatever was revoked before, relaying what arrives meanwhile.
        let Some(list) = self.list.upgrade() else { return Ended::Unwanted };
        {
            let load = self.load(conn.clone(), &list);
            tokio::pin!(load);
            loop {
                tokio::select! {
                    loaded = &mut load => match loaded {
                        Ok(_) => break,
                        Err(error) => {
                            tracing::warn!(%error, "loading revocations failed; retrying");
                            return Ended::Lost { healthy: false };
                        }
                    },
                    push = rx.recv() => match push {
                        Some(push) => relay(&list, &push),
                        None => return Ended::Lost { healthy: false },
                    },
                }
            }
        }
        drop(list);
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.tick().await;
        let mut alive = self.alive.clone();
        loop {
            tokio::select! {
                push = rx.recv() => match push {
                    Some(push) if push.kind == PushKind::Disconnection => return Ended::Lost { healthy: true },
                    Some(push) => {
                        let Some(list) = self.list.upgrade() else { return Ended::Unwanted };
                        relay(&list, &push);
                    }
                    None => return Ended::Lost { healthy: true },
                },
                _ = heartbeat.tick() => {
                    if !self.wanted() {
                        return Ended::Unwanted;
                    }
                    if bounded(conn.query::<()>(&redis::cmd("PING"))).await.is_err() {
                        return Ended::Lost { healthy: true };
                    }
                }
                _ = alive.changed() => return Ended::Unwanted,
            }
        }
    }

    /// Loads every still-relevant revocation into the list, `ZSCAN` page by
    /// page, then marks it loaded; returns the latest expiry read.
    async fn load(&self, mut conn: SubConn, list: &RevocationList) -> Result<u64, String> {
        let started = Instant::now();
        let key = &self.names.revoked;
        let total: usize = bounded(conn.query(redis::cmd("ZCARD").arg(key))).await?;
        list.reserve(total.saturating_sub(list.len()));
        let (mut cursor, mut read, mut newest) = (0u64, 0usize, 0u64);
        loop {
            let mut cmd = redis::cmd("ZSCAN");
            cmd.arg(key).arg(cursor).arg("COUNT").arg(PAGE);
            let (next, page): (u64, Vec<Vec<u8>>) = bounded(conn.query(&cmd)).await?;
            let now = now_ms();
            for pair in page.chunks_exact(2) {
                if let Some(until) = parse_score(&pair[1]).filter(|&until| until > now)
                    && let Some(revocation) = Revocation::parse_member(&pair[0], until)
                {
                    newest = newest.max(until);
                    list.apply(&revocation);
                }
            }
            read += page.len() / 2;
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        let first = !list.is_loaded();
        list.mark_loaded();
        if first {
            tracing::info!(entries = read, elapsed_ms = started.elapsed().as_millis() as u64, "revocations loaded");
        }
        Ok(newest)
    }

    /// Without pub/sub: one full load, then every second the revocations
    /// whose expiry is at most [`POLL_OVERLAP_MS`] before the newest seen
    /// (new revocations expire last), never the whole set again.
    async fn poll(self) {
        let SubscriberSource::Cluster(client) = &self.source else { return };
        let mut watermark: Option<u64> = None;
        while self.wanted() {
            let conn = bounded(client.get_async_connection_with_config(cluster_config())).await;
            if let (Ok(conn), Some(list)) = (conn, self.list.upgrade()) {
                let mut conn = SubConn::Cluster(conn);
                let result = match watermark {
                    None => self.load(conn, &list).await,
                    Some(mark) => self.poll_since(&mut conn, &list, mark).await,
                };
                match result {
                    Ok(mark) => watermark = Some(watermark.map_or(mark, |w| w.max(mark))),
                    Err(error) => tracing::debug!(%error, "polling revocations failed"),
                }
            }
            if !self.pause(POLL_EVERY).await {
                return;
            }
        }
    }

    /// Applies the revocations expiring after `mark − overlap`; returns the
    /// newest expiry seen.
    async fn poll_since(&self, conn: &mut SubConn, list: &RevocationList, mark: u64) -> Result<u64, String> {
        let (mut offset, mut newest) = (0usize, mark);
        let from = format!("({}", mark.saturating_sub(POLL_OVERLAP_MS));
        loop {
            let mut cmd = redis::cmd("ZRANGEBYSCORE");
            cmd.arg(&self.names.revoked).arg(&from).arg("+inf").arg("WITHSCORES").arg("LIMIT").arg(offset).arg(PAGE);
            let page: Vec<Vec<u8>> = bounded(conn.query(&cmd)).await?;
            for pair in page.chunks_exact(2) {
                if let Some(until) = parse_score(&pair[1])
                    && let Some(revocation) = Revocation::parse_member(&pair[0], until)
                {
                    newest = newest.max(until);
                    list.apply(&revocation);
                }
            }
            if page.len() / 2 < PAGE {
                return Ok(newest);
            }
            offset += PAGE;
        }
    }
}

/// Applies a published revocation, and notes how long it took to get here.
fn relay(list: &RevocationList, push: &PushInfo) {
    if push.kind == PushKind::Message
        && let Some(Value::BulkString(payload)) = push.data.get(1)
        && let Some((revocation, published_ms)) = Revocation::parse_message(payload)
    {
        list.apply(&revocation);
        crate::metrics::propagated(Duration::from_millis(now_ms().saturating_sub(published_ms)));
    }
}
