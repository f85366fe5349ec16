//! Where sessions live: the [`SessionStore`] trait, the records it keeps, and
//! its two implementations ([`MemoryStore`], the embedded default, and `RedisStore`).
//!
//! A store owns the *state machine* of one session (create, rotate with grace,
//! revoke) and makes every transition atomic: on Redis each one is a single
//! script, one round trip. It never sees a refresh token: the session layer
//! turns tokens into `(user_id, sid, counter)` after checking their HMAC tag, so
//! a dump of the store is useless to an attacker.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use crate::revocation::RevocationList;

mod memory;
pub use memory::MemoryStore;

#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
pub use self::redis::RedisStore;

/// The future returned by every [`SessionStore`] method.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Why a store operation failed. Every variant maps to `503 Service Unavailable`
/// with `Retry-After`: the session data is untouched and the client may retry.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not be reached or did not answer in time.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// The backend answered something this crate cannot read.
    #[error("session store returned unexpected data: {0}")]
    Corrupt(String),
}

/// Lifetimes and limits a store applies; built by the session layer from the
/// [`JwtAuth`](crate::JwtAuth) configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionPolicy {
    /// Idle (sliding) lifetime: a session unused for this long expires.
    pub idle_ttl: Duration,
    /// Absolute lifetime from creation; rotation never extends past it.
    pub absolute_ttl: Duration,
    /// How long the just-rotated refresh counter may still be presented and
    /// answer with the same successor (parallel tabs, retries).
    pub grace: Duration,
    /// Sessions per user; creating one more revokes the oldest. The new
    /// session always survives, so `Some(0)` acts as `Some(1)`.
    pub max_sessions: Option<u32>,
    /// How long a revoked session id must be remembered so its outstanding
    /// access tokens are refused (access-token lifetime plus leeway, plus a
    /// second for `iat`'s whole-second resolution).
    pub revocation_ttl: Duration,
}

/// A session to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSession {
    /// The user (the access token's `sub`).
    pub user_id: String,
    /// Fresh random session id (the access token's `sid`).
    pub sid: String,
    /// The custom claims to re-issue at each refresh, as JSON.
    pub claims: String,
    /// The client's `User-Agent`, truncated by the caller.
    pub user_agent: Option<String>,
    /// The client's IP address.
    pub ip: Option<String>,
    /// Creation time, Unix milliseconds; also the session's first
    /// authentication time (`auth_time`).
    pub now_ms: u64,
}

/// A live session as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    /// Session id.
    pub sid: String,
    /// Owner.
    pub user_id: String,
    /// Custom claims to re-issue, as JSON.
    pub claims: String,
    /// `User-Agent` at login.
    pub user_agent: Option<String>,
    /// IP address at login.
    pub ip: Option<String>,
    /// Unix milliseconds; unique among the user's sessions (a store bumps a
    /// tie by a millisecond), so "the oldest" is well defined.
    pub created_at_ms: u64,
    /// Unix milliseconds of the last time the user proved who they are
    /// (login, or [`SessionStore::reauthenticate`]): the `auth_time` claim.
    pub auth_time_ms: u64,
    /// Unix milliseconds of the last rotation (or creation).
    pub last_used_at_ms: u64,
    /// The current refresh counter: the only one that rotates.
    pub counter: u64,
    /// Unix milliseconds of the last rotation; 0 before the first one.
    pub rotated_at_ms: u64,
    /// When the session expires if not used again (never past `absolute_expires_at_ms`).
    pub idle_expires_at_ms: u64,
    /// When the session expires whatever happens.
    pub absolute_expires_at_ms: u64,
}

/// What presenting a refresh counter did.
///
/// With `n` the stored counter and `p` the presented one:
///
/// | presented | outcome |
/// |---|---|
/// | `p == n` | `Rotated`: the counter becomes `n + 1` |
/// | `p == n + 1` | `FastForwarded`: the counter becomes `p + 1` |
/// | `p == n - 1`, within the grace window of the last rotation | `Replayed`: nothing changes |
/// | anything else | `Theft`: the session is revoked |
///
/// `p == n + 1` can only be a successor this service minted and the store
/// then lost (a failover promoted a replica that missed the write; see the
/// threat model): only the holder of the current token can have it, so the
/// store catches up instead of logging the user out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RotateOutcome {
    /// The presented counter was the current one: the session advanced; the
    /// record carries the new current counter.
    Rotated(SessionRecord),
    /// The presented counter was one ahead of the stored one (the store had
    /// lost the last rotation): the store caught up and advanced past it; the
    /// record carries the new current counter (`presented + 1`).
    FastForwarded(SessionRecord),
    /// The presented counter was the previous one, within the grace window:
    /// nothing changed; the record's counter is the successor already issued.
    Replayed(SessionRecord),
    /// The counter is older, or the previous one outside the grace window, or
    /// more than one ahead: the session has been revoked (and published as such).
    Theft {
        /// The revoked session's owner.
        user_id: String,
        /// The revoked session.
        sid: String,
    },
    /// No such live session: unknown, expired or revoked.
    NotFound,
}

/// Storage for sessions. Implementations must make every method atomic and
/// must pass the shared store test suite (`tests/store_suite.rs`).
///
/// Implement it to keep sessions elsewhere; the crate ships [`MemoryStore`]
/// (default, single process) and `RedisStore` (feature `redis`). A store
/// that wraps another one, here to count logins:
///
/// ```
/// use std::sync::{
///     Arc,
///     atomic::{AtomicU64, Ordering},
/// };
///
/// use tower_jwt_auth::{
///     JwtAuth, SigningKey,
///     revocation::RevocationList,
///     store::{MemoryStore, NewSession, RotateOutcome, SessionPolicy, SessionRecord, SessionStore, StoreFuture},
/// };
///
/// #[derive(Default)]
/// struct CountingStore {
///     inner: MemoryStore,
///     logins: AtomicU64,
/// }
///
/// impl SessionStore for CountingStore {
///     fn create<'a>(&'a self, session: NewSession, policy: &'a SessionPolicy) -> StoreFuture<'a, Vec<String>> {
///         self.logins.fetch_add(1, Ordering::Relaxed);
///         self.inner.create(session, policy)
///     }
///
///     fn rotate<'a>(
///         &'a self,
///         user_id: &'a str,
///         sid: &'a str,
///         presented: u64,
///         now_ms: u64,
///         policy: &'a SessionPolicy,
///     ) -> StoreFuture<'a, RotateOutcome> {
///         self.inner.rotate(user_id, sid, presented, now_ms, policy)
///     }
///
///     fn list<'a>(&'a self, user_id: &'a str, now_ms: u64) -> StoreFuture<'a, Vec<SessionRecord>> {
///         self.inner.list(user_id, now_ms)
///     }
///
///     fn revoke<'a>(
///         &'a self,
///         user_id: &'a str,
///         sid: &'a str,
///         now_ms: u64,
///         policy: &'a SessionPolicy,
///     ) -> StoreFuture<'a, bool> {
///         self.inner.revoke(user_id, sid, now_ms, policy)
///     }
///
///     fn revoke_all<'a>(
///         &'a self,
///         user_id: &'a str,
///         except: Option<&'a str>,
///         now_ms: u64,
///         policy: &'a SessionPolicy,
///     ) -> StoreFuture<'a, Vec<String>> {
///         self.inner.revoke_all(user_id, except, now_ms, policy)
///     }
///
///     fn reauthenticate<'a>(
///         &'a self,
///         user_id: &'a str,
///         sid: &'a str,
///         now_ms: u64,
///         policy: &'a SessionPolicy,
///     ) -> StoreFuture<'a, Option<SessionRecord>> {
///         self.inner.reauthenticate(user_id, sid, now_ms, policy)
///     }
///
///     fn invalidate_tokens<'a>(
///         &'a self,
///         user_id: &'a str,
///         now_ms: u64,
///         policy: &'a SessionPolicy,
///     ) -> StoreFuture<'a, ()> {
///         self.inner.invalidate_tokens(user_id, now_ms, policy)
///     }
///
///     fn attach(&self, list: Arc<RevocationList>) {
///         self.inner.attach(list)
///     }
///
///     // In memory: sessions end with the process.
///     fn outlives_process(&self) -> bool {
///         false
///     }
/// }
///
/// let auth = JwtAuth::builder()
///     .signing_key(SigningKey::hs256("k", &[7; 32])?)
///     .store(CountingStore::default())
///     .build()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Run the shared suite against it before trusting it: every transition
/// (rotation inside and outside the grace window, the session cap, expiry)
/// must behave as [`MemoryStore`]'s do.
pub trait SessionStore: Send + Sync + 'static {
    /// Creates a session; when the user then has more than
    /// `policy.max_sessions`, revokes the oldest ones and returns their ids.
    fn create<'a>(&'a self, session: NewSession, policy: &'a SessionPolicy) -> StoreFuture<'a, Vec<String>>;

    /// Presents refresh counter `presented` of session `sid` at `now_ms`.
    /// Rotation refreshes `last_used_at_ms` and the idle expiry (capped by
    /// the absolute one); a theft revokes the session.
    fn rotate<'a>(
        &'a self,
        user_id: &'a str,
        sid: &'a str,
        presented: u64,
        now_ms: u64,
        policy: &'a SessionPolicy,
    ) -> StoreFuture<'a, RotateOutcome>;

    /// The user's live sessions, oldest first.
    fn list<'a>(&'a self, user_id: &'a str, now_ms: u64) -> StoreFuture<'a, Vec<SessionRecord>>;

    /// Revokes one session of `user_id`; `false` when it was not live.
    fn revoke<'a>(
        &'a self,
        user_id: &'a str,
        sid: &'a str,
        now_ms: u64,
        policy: &'a SessionPolicy,
    ) -> StoreFuture<'a, bool>;

    /// Revokes every session of `user_id` but `except` (the caller's own, for
    /// "sign out everywhere else"); returns their ids, in no particular order.
    fn revoke_all<'a>(
        &'a self,
        user_id: &'a str,
        except: Option<&'a str>,
        now_ms: u64,
        policy: &'a SessionPolicy,
    ) -> StoreFuture<'a, Vec<String>>;

    /// Records that the user of live session `sid` just proved who they are
    /// again: `auth_time_ms` becomes `now_ms`, nothing else changes. `None`
    /// when the session is not live.
    fn reauthenticate<'a>(
        &'a self,
        user_id: &'a str,
        sid: &'a str,
        now_ms: u64,
        policy: &'a SessionPolicy,
    ) -> StoreFuture<'a, Option<SessionRecord>>;

    /// Makes every access token of `user_id` issued before `now_ms` stale on
    /// every instance (for `policy.revocation_ttl`), so clients refresh and
    /// pick up changed claims; sessions stay.
    fn invalidate_tokens<'a>(&'a self, user_id: &'a str, now_ms: u64, policy: &'a SessionPolicy)
    -> StoreFuture<'a, ()>;

    /// Connects `list` to the revocations made by every instance sharing this
    /// store (revoked sessions and stale-before instants): each one from now
    /// on is inserted (until its expiry), and the list is loaded with the
    /// still-relevant ones now and reloaded after each reconnect. Once the
    /// first load is complete the store calls
    /// [`RevocationList::mark_loaded`]; until then the layer answers `503`
    /// rather than accept a token it cannot check. Called once per
    /// [`JwtAuth`](crate::JwtAuth) at build time, from within a Tokio runtime.
    fn attach(&self, list: Arc<RevocationList>);

    /// Whether sessions outlive this process (shared between instances,
    /// surviving restarts). Such a store needs an explicit
    /// [`refresh_token_secret`](crate::JwtAuthBuilder::refresh_token_secret):
    /// a random one would silently end every session at each restart.
    /// `true` unless a store says otherwise ([`MemoryStore`] does).
    fn outlives_process(&self) -> bool {
        true
    }
}
