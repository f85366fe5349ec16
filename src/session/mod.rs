//! The session lifecycle: the state shared by a layer's clones, the tokens a
//! login or refresh produces, and what users see of their sessions. The
//! operations themselves (login, refresh, logout, …) are in `ops`.

mod health;
mod ops;

use std::{fmt, future::Future, pin::Pin, sync::Arc, time::Duration};

use serde::Serialize;

use self::health::StoreHealth;
use crate::{
    config::JwtAuth,
    flight::Flights,
    metrics::StoreMetrics,
    refresh_token::RefreshKey,
    revocation::RevocationList,
    store::{SessionPolicy, SessionRecord, SessionStore},
    token::{AccessToken, custom_claims_json},
};

type ReloadFuture = Pin<Box<dyn Future<Output = Result<Option<String>, String>> + Send>>;

/// The user's claims-reloading callback, type-erased to JSON.
#[derive(Clone)]
pub(crate) struct ClaimsReloader(Arc<dyn Fn(String) -> ReloadFuture + Send + Sync>);

impl ClaimsReloader {
    pub(crate) fn new<T, E, F, Fut>(reload: F) -> Self
    where
        T: Serialize + 'static,
        E: fmt::Display + 'static,
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<T>, E>> + Send + 'static,
    {
        Self(Arc::new(move |user_id| {
            let future = reload(user_id);
            Box::pin(async move {
                match future.await {
                    Ok(Some(claims)) => custom_claims_json(&claims).map(Some).map_err(|e| e.to_string()),
                    Ok(None) => Ok(None),
                    Err(error) => Err(error.to_string()),
                }
            })
        }))
    }
}

/// What a successful refresh produced; shared by every racer of one token.
pub(crate) struct Refreshed {
    pub(crate) access: AccessToken,
    pub(crate) refresh_token: String,
    pub(crate) refresh_max_age: Duration,
}

/// Session state shared by the clones of one [`JwtAuth`].
pub(crate) struct Sessions {
    store: Arc<dyn SessionStore>,
    pub(crate) policy: SessionPolicy,
    key: RefreshKey,
    revocations: Arc<RevocationList>,
    reload_claims: Option<ClaimsReloader>,
    /// Rotations in progress or just done, by session.
    flights: Flights,
    health: StoreHealth,
    metrics: StoreMetrics,
}

impl Sessions {
    pub(crate) fn new(
        store: Arc<dyn SessionStore>,
        policy: SessionPolicy,
        key: RefreshKey,
        revocations: Arc<RevocationList>,
        reload_claims: Option<ClaimsReloader>,
        metrics: StoreMetrics,
    ) -> Self {
        Self {
            flights: Flights::new(policy.grace),
            store,
            policy,
            key,
            revocations,
            reload_claims,
            health: StoreHealth::default(),
            metrics,
        }
    }

    /// The session a refresh token names, if its tag verifies.
    pub(crate) fn session_id_of(&self, refresh_token: &str) -> Option<String> {
        self.key.decode(refresh_token).map(|token| token.sid)
    }
}

/// The tokens of a session just created or refreshed. Render it as cookies
/// ([`Tokens::into_cookies`]) for browsers or as an RFC 6749 token response
/// ([`Tokens::into_token_response`]) for header clients.
#[derive(Clone)]
pub struct Tokens {
    pub(crate) auth: JwtAuth,
    pub(crate) refreshed: Arc<Refreshed>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens").field("claims", self.refreshed.access.claims()).finish_non_exhaustive()
    }
}

impl Tokens {
    /// The access token (a JWT).
    pub fn access_token(&self) -> &str {
        &self.refreshed.access.token
    }

    /// The refresh token (opaque).
    pub fn refresh_token(&self) -> &str {
        &self.refreshed.refresh_token
    }

    /// Seconds until the access token expires.
    pub fn expires_in(&self) -> u64 {
        self.refreshed.access.expires_in
    }

    /// The user id (`sub`).
    pub fn user_id(&self) -> &str {
        &self.refreshed.access.claims().sub
    }

    /// The session id (`sid`).
    pub fn session_id(&self) -> &str {
        &self.refreshed.access.claims().sid
    }
}

/// One live session, as shown to its user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SessionInfo {
    /// The session id (`sid`).
    pub id: String,
    /// Login time, Unix seconds.
    pub created_at: u64,
    /// Last refresh, Unix seconds.
    pub last_used_at: u64,
    /// Last time the user proved who they are (login or re-authentication), Unix seconds.
    pub authenticated_at: u64,
    /// When it expires unless used again, Unix seconds.
    pub expires_at: u64,
    /// The `User-Agent` at login.
    pub user_agent: Option<String>,
    /// The IP address at login.
    pub ip: Option<String>,
    /// Whether this is the session of the request that asked.
    pub current: bool,
}

impl SessionInfo {
    fn new(record: SessionRecord, current_sid: Option<&str>) -> Self {
        Self {
            current: current_sid == Some(record.sid.as_str()),
            id: record.sid,
            created_at: record.created_at_ms / 1000,
            last_used_at: record.last_used_at_ms / 1000,
            authenticated_at: record.auth_time_ms / 1000,
            expires_at: record.idle_expires_at_ms / 1000,
            user_agent: record.user_agent,
            ip: record.ip,
        }
    }
}
