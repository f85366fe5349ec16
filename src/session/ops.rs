//! What applications do with sessions through [`JwtAuth`]: log in, refresh
//! (single-flight within the process, grace window and theft detection in
//! the store), re-authenticate, make a user's tokens stale, log out one,
//! all or all other sessions, and list them.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde::Serialize;
use tracing::{Instrument, Span, field::Empty};

use super::{Refreshed, SessionInfo, Sessions, Tokens};
use crate::{
    client_info::ClientInfo,
    clock::now_ms,
    config::JwtAuth,
    error::AuthError,
    events::{RevocationCause, SecurityEvent},
    metrics::{Cause, Operation, RefreshOutcome},
    refresh_token::RefreshToken,
    store::{NewSession, RotateOutcome, SessionRecord, StoreError},
    token::{IssueSpec, custom_claims_json},
};

/// A refresh token whose tag does not verify.
const INVALID: AuthError = AuthError::InvalidGrant("The refresh token is invalid");
/// A refresh token of a session this instance knows is revoked.
const REVOKED: AuthError = AuthError::InvalidGrant("The session was revoked");
/// A refresh token reused outside the grace window.
const THEFT: AuthError = AuthError::InvalidGrant("The refresh token was already used; the session is revoked");
/// A refresh token of an unknown, expired or revoked session.
const NOT_FOUND: AuthError = AuthError::InvalidGrant("The refresh token is expired or revoked");
/// `reload_claims` answered `None`.
const DENIED: AuthError = AuthError::InvalidGrant("The user can no longer sign in");

/// What a refresh that joined another request's rotation of the same token
/// (single flight) amounts to.
fn joined(result: &Result<Arc<Refreshed>, AuthError>) -> RefreshOutcome {
    match result {
        Ok(_) => RefreshOutcome::Replayed,
        Err(AuthError::Unavailable) => RefreshOutcome::Unavailable,
        Err(error) if *error == THEFT => RefreshOutcome::ReuseRevoked,
        Err(error) if *error == DENIED => RefreshOutcome::Denied,
        Err(_) => RefreshOutcome::NotFound,
    }
}

/// Longest user id a session can have (refresh tokens carry it, and are
/// capped at 1 KiB).
const MAX_USER_ID: usize = 512;

impl Sessions {
    /// Runs a store call in a `tower_jwt_auth.store` span, timed and
    /// counted, noting the store's health (logged once per outage).
    async fn call<T>(
        &self,
        operation: Operation,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, AuthError> {
        let span = tracing::info_span!("tower_jwt_auth.store", operation = operation.as_str(), outcome = Empty);
        let started = Instant::now();
        let result = call.instrument(span.clone()).await;
        self.metrics.call(operation, result.is_ok(), started.elapsed());
        span.record("outcome", if result.is_ok() { "ok" } else { "error" });
        Ok(self.health.note(result)?)
    }

    /// Marks sessions revoked on this instance at once (stores also tell
    /// every instance, this one included).
    fn forget(&self, sids: &[String]) {
        let until = now_ms() + self.policy.revocation_ttl.as_millis() as u64;
        for sid in sids {
            self.revocations.revoke_session(sid, until);
        }
    }
}

impl JwtAuth {
    /// Counts, logs (at `warn`: security events) and reports sessions of
    /// `user_id` that were just revoked.
    fn revoked(&self, user_id: &str, sids: &[String], cause: RevocationCause) {
        self.inner.metrics.revoked(cause.metric(), sids.len());
        let reason = match cause {
            RevocationCause::Logout => "logged out",
            RevocationCause::LogoutAll => "logged out everywhere",
            RevocationCause::LogoutOthers => "signed out from another device",
            RevocationCause::Revoke => "revoked by the application or the user",
            RevocationCause::Cap => "session cap reached: the oldest session goes",
            RevocationCause::Theft => "refresh token reused outside the grace window",
        };
        for sid in sids {
            tracing::warn!(user_id, sid = %sid, cause = cause.as_str(), reason, "security: session revoked");
            self.inner.events.emit(|| {
                let (user_id, session_id) = (user_id.to_owned(), sid.clone());
                match cause {
                    RevocationCause::Theft => SecurityEvent::ReuseDetected { user_id, session_id },
                    RevocationCause::Cap => SecurityEvent::SessionEvicted { user_id, session_id },
                    cause => SecurityEvent::SessionRevoked { user_id, session_id, cause },
                }
            });
        }
    }

    fn sessions(&self) -> Result<&Sessions, AuthError> {
        self.inner.sessions.as_ref().ok_or(AuthError::Misconfigured(
            "this layer only verifies tokens: sessions need a JwtAuth built with JwtAuth::builder()",
        ))
    }

    /// Creates a session for `user_id` whose access tokens carry `claims`
    /// (a serde type serializing to a JSON object, without registered claim
    /// names), and issues its first tokens. Call it after checking the
    /// user's password: the session's `auth_time` is now.
    ///
    /// A login handler checks the credentials, then answers the tokens as
    /// cookies (browsers) or as a token response (mobile and API clients):
    ///
    /// ```
    /// use axum::{
    ///     Json, Router,
    ///     extract::State,
    ///     response::{IntoResponse, Response},
    ///     routing::post,
    /// };
    /// use serde::{Deserialize, Serialize};
    /// use tower_jwt_auth::{AuthError, ClientInfo, JwtAuth, SigningKey};
    ///
    /// #[derive(Deserialize)]
    /// struct Credentials {
    ///     username: String,
    ///     password: String,
    ///     #[serde(default)]
    ///     bearer: bool,
    /// }
    ///
    /// /// What every access token of the session carries besides `sub` and `sid`.
    /// #[derive(Serialize)]
    /// struct MyClaims {
    ///     role: String,
    /// }
    ///
    /// /// Your user store; a real one compares password hashes (argon2, …).
    /// async fn check_password(username: &str, password: &str) -> Option<String> {
    ///     (username == "alice" && password == "alice-pw").then(|| "admin".to_owned())
    /// }
    ///
    /// async fn login(
    ///     State(auth): State<JwtAuth>,
    ///     client: ClientInfo,
    ///     Json(form): Json<Credentials>,
    /// ) -> Result<Response, AuthError> {
    ///     let role = check_password(&form.username, &form.password).await.ok_or(AuthError::InvalidCredentials)?;
    ///     let tokens = auth.login(&form.username, &MyClaims { role }, client).await?;
    ///     Ok(if form.bearer {
    ///         tokens.into_token_response().into_response()
    ///     } else {
    ///         tokens.into_cookies().into_response()
    ///     })
    /// }
    ///
    /// let auth = JwtAuth::new(SigningKey::hs256("k", &[7; 32])?);
    /// let app: Router = Router::new()
    ///     .route("/login", post(login))
    ///     .merge(auth.refresh_router())
    ///     .with_state(auth);
    /// # Ok::<(), tower_jwt_auth::KeyError>(())
    /// ```
    ///
    ///
    /// ```
    /// # use serde::Serialize;
    /// # #[derive(Serialize)] struct MyClaims { role: &'static str }
    /// use tower_jwt_auth::{ClientInfo, JwtAuth, SigningKey};
    /// # tokio_test_block(async {
    /// let auth = JwtAuth::new(SigningKey::hs256("k", &[7; 32])?);
    /// let tokens = auth.login("alice", &MyClaims { role: "admin" }, ClientInfo::default()).await?;
    /// assert_eq!(tokens.user_id(), "alice");
    /// # Ok::<(), Box<dyn std::error::Error>>(()) });
    /// # fn tokio_test_block<F: std::future::Future>(f: F) -> F::Output {
    /// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
    /// # }
    /// ```
    pub async fn login<T: Serialize + ?Sized>(
        &self,
        user_id: &str,
        claims: &T,
        client: ClientInfo,
    ) -> Result<Tokens, AuthError> {
        let sessions = self.sessions()?;
        if user_id.is_empty() || user_id.len() > MAX_USER_ID {
            return Err(AuthError::InvalidRequest("User ids must be 1 to 512 bytes long"));
        }
        let custom = custom_claims_json(claims)?;
        let sid = crate::random::session_id();
        let now = now_ms();
        let new = NewSession {
            user_id: user_id.to_owned(),
            sid: sid.clone(),
            claims: custom.clone(),
            user_agent: client.user_agent,
            ip: client.ip.map(|ip| ip.to_string()),
            now_ms: now,
        };
        let policy = &sessions.policy;
        let evicted = sessions.call(Operation::Create, sessions.store.create(new, policy)).await?;
        if !evicted.is_empty() {
            sessions.forget(&evicted);
            self.revoked(user_id, &evicted, RevocationCause::Cap);
        }
        let idle_end = now.saturating_add(policy.idle_ttl.as_millis() as u64);
        let absolute_end = now.saturating_add(policy.absolute_ttl.as_millis() as u64);
        let record = SessionRecord {
            sid,
            user_id: user_id.to_owned(),
            claims: custom,
            user_agent: None,
            ip: None,
            created_at_ms: now,
            auth_time_ms: now,
            last_used_at_ms: now,
            counter: 0,
            rotated_at_ms: 0,
            idle_expires_at_ms: idle_end.min(absolute_end),
            absolute_expires_at_ms: absolute_end,
        };
        tracing::debug!(user_id, sid = %record.sid, "session created");
        let (user, session) = (&record.user_id, &record.sid);
        self.inner.events.emit(|| SecurityEvent::Login { user_id: user.clone(), session_id: session.clone() });
        self.issue(&record, &record.claims, now).map(|refreshed| Tokens { auth: self.clone(), refreshed })
    }

    /// Signs an access token for `record` (with `claims`) and bundles it with
    /// the refresh token of its current counter.
    fn issue(&self, record: &SessionRecord, claims: &str, now: u64) -> Result<Arc<Refreshed>, AuthError> {
        let sessions = self.sessions()?;
        let issuer = self.inner.issuer.as_ref().ok_or(AuthError::Misconfigured("no signing key"))?;
        let access = issuer.issue(IssueSpec {
            sub: &record.user_id,
            sid: &record.sid,
            custom_json: claims,
            iat: self.inner.revocations.issue_at(&record.user_id, now),
            auth_time: record.auth_time_ms / 1000,
            session_end_ms: record.idle_expires_at_ms.min(record.absolute_expires_at_ms),
        })?;
        self.inner.verifier.remember(&access);
        let refresh_token = sessions.key.encode(&record.user_id, &record.sid, record.counter);
        let refresh_max_age = Duration::from_millis(record.idle_expires_at_ms.saturating_sub(now));
        Ok(Arc::new(Refreshed { access, refresh_token, refresh_max_age }))
    }

    /// Rotates a refresh token: a new access token and the successor refresh
    /// token. Concurrent calls with the same token share one store call and
    /// one result; within the grace window a just-rotated token yields the
    /// same successor; a token one ahead of the store (a lost write) is
    /// accepted; any other reuse revokes the session.
    ///
    /// Runs in a `tower_jwt_auth.refresh` span (fields `user_id`, `sid`,
    /// `outcome`) and counts one `tower_jwt_auth_refresh_total{outcome}`.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens, AuthError> {
        let sessions = self.sessions()?;
        let span = tracing::info_span!("tower_jwt_auth.refresh", user_id = Empty, sid = Empty, outcome = Empty);
        let (outcome, result) = self.refresh_in_span(sessions, refresh_token, &span).instrument(span.clone()).await;
        span.record("outcome", outcome.as_str());
        self.inner.metrics.refresh(outcome);
        result.map(|refreshed| Tokens { auth: self.clone(), refreshed })
    }

    async fn refresh_in_span(
        &self,
        sessions: &Sessions,
        refresh_token: &str,
        span: &Span,
    ) -> (RefreshOutcome, Result<Arc<Refreshed>, AuthError>) {
        let Some(presented) = sessions.key.decode(refresh_token) else {
            tracing::debug!(outcome = "invalid", "a refresh token whose tag does not verify");
            return (RefreshOutcome::Invalid, Err(INVALID));
        };
        span.record("user_id", presented.user_id.as_str()).record("sid", presented.sid.as_str());
        if sessions.revocations.is_revoked(&presented.sid) {
            tracing::debug!(outcome = "not_found", "refresh of a revoked session");
            return (RefreshOutcome::NotFound, Err(REVOKED));
        }
        // Set only by the request that runs the rotation; the others joined it.
        let mut ran = None;
        let result = sessions
            .flights
            .run(&presented, || async {
                let (outcome, result) = self.rotate(&presented).await;
                ran = Some(outcome);
                result
            })
            .await;
        (ran.unwrap_or_else(|| joined(&result)), result)
    }

    /// Reloads the claims (when configured), then one store call for a
    /// presented refresh token, then the new tokens.
    async fn rotate(&self, presented: &RefreshToken) -> (RefreshOutcome, Result<Arc<Refreshed>, AuthError>) {
        let sessions = match self.sessions() {
            Ok(sessions) => sessions,
            Err(error) => return (RefreshOutcome::Unavailable, Err(error)),
        };
        let (user_id, sid) = (&presented.user_id, &presented.sid);
        let reloaded = match self.reload_claims(sessions, user_id, sid).await {
            Ok(reloaded) => reloaded,
            Err((outcome, error)) => return (outcome, Err(error)),
        };
        let now = now_ms();
        let rotated = sessions
            .call(Operation::Rotate, sessions.store.rotate(user_id, sid, presented.counter, now, &sessions.policy))
            .await;
        let (outcome, record) = match rotated {
            Err(error) => return (RefreshOutcome::Unavailable, Err(error)),
            Ok(RotateOutcome::Rotated(record)) => {
                tracing::debug!(outcome = "rotated", "refresh token rotated");
                (RefreshOutcome::Rotated, record)
            }
            Ok(RotateOutcome::Replayed(record)) => {
                tracing::debug!(outcome = "replayed", "refresh token replayed within the grace window");
                (RefreshOutcome::Replayed, record)
            }
            Ok(RotateOutcome::FastForwarded(record)) => {
                tracing::warn!(
                    user_id,
                    sid,
                    outcome = "rotated",
                    "the session store had lost this session's last rotation (failover?): caught up"
                );
                (RefreshOutcome::Rotated, record)
            }
            Ok(RotateOutcome::Theft { user_id, sid }) => {
                sessions.forget(std::slice::from_ref(&sid));
                self.revoked(&user_id, &[sid], RevocationCause::Theft);
                return (RefreshOutcome::ReuseRevoked, Err(THEFT));
            }
            Ok(RotateOutcome::NotFound) => {
                tracing::debug!(outcome = "not_found", "refresh of an unknown or ended session");
                return (RefreshOutcome::NotFound, Err(NOT_FOUND));
            }
        };
        if outcome == RefreshOutcome::Rotated {
            self.inner.events.emit(|| SecurityEvent::Refresh { user_id: user_id.clone(), session_id: sid.clone() });
        }
        let claims = reloaded.as_deref().unwrap_or(&record.claims);
        match self.issue(&record, claims, now) {
            Ok(refreshed) => (outcome, Ok(refreshed)),
            Err(error) => (RefreshOutcome::Unavailable, Err(error)),
        }
    }

    /// Marks the session `sid` of `user_id` as freshly authenticated, after
    /// the application checked the user's password (or second factor)
    /// again: same session, `auth_time` now, new tokens. Routes guarded by
    /// [`RequireRecentLogin`](crate::guard::RequireRecentLogin)
    /// then pass.
    ///
    /// ```
    /// use axum::{Json, extract::State};
    /// use serde::Deserialize;
    /// use tower_jwt_auth::{AuthError, CookieTokens, JwtAuth, Session};
    ///
    /// #[derive(Deserialize)]
    /// struct Password { password: String }
    ///
    /// async fn reauth(session: Session, Json(body): Json<Password>) -> Result<CookieTokens, AuthError> {
    ///     if body.password != "correct horse" {
    ///         return Err(AuthError::InvalidCredentials);
    ///     }
    ///     Ok(session.reauthenticate().await?.into_cookies())
    /// }
    /// ```
    pub async fn reauthenticate(&self, user_id: &str, sid: &str) -> Result<Tokens, AuthError> {
        let sessions = self.sessions()?;
        let reloaded = self.reload_claims(sessions, user_id, sid).await.map_err(|(_, error)| error)?;
        let now = now_ms();
        let record = sessions
            .call(Operation::Reauthenticate, sessions.store.reauthenticate(user_id, sid, now, &sessions.policy))
            .await?
            .ok_or(AuthError::InvalidToken("The session has ended"))?;
        tracing::debug!(user_id, sid, "session re-authenticated");
        let claims = reloaded.as_deref().unwrap_or(&record.claims);
        self.issue(&record, claims, now).map(|refreshed| Tokens { auth: self.clone(), refreshed })
    }

    /// The user's current claims from
    /// [`reload_claims`](crate::JwtAuthBuilder::reload_claims), if
    /// configured, before any store call: a failure leaves the store as it
    /// was, so the client's token keeps working. A user the callback
    /// refuses has this session revoked.
    async fn reload_claims(
        &self,
        sessions: &Sessions,
        user_id: &str,
        sid: &str,
    ) -> Result<Option<String>, (RefreshOutcome, AuthError)> {
        let Some(reload) = &sessions.reload_claims else { return Ok(None) };
        match (reload.0)(user_id.to_owned()).await {
            Ok(Some(claims)) => Ok(Some(claims)),
            Ok(None) => {
                let _ = self.revoke_session_because(user_id, sid, RevocationCause::Revoke).await;
                Err((RefreshOutcome::Denied, DENIED))
            }
            Err(error) => {
                tracing::warn!(%error, user_id, "reloading claims failed");
                Err((RefreshOutcome::Unavailable, AuthError::Unavailable))
            }
        }
    }

    /// Makes every access token of `user_id` issued before now stale on every
    /// instance, within the revocation latency: after the user's roles or
    /// claims changed. Cookie clients are refreshed transparently (and
    /// [`reload_claims`](crate::JwtAuthBuilder::reload_claims) gives them the
    /// new claims); bearer clients get `invalid_token` "expired" and refresh.
    /// Sessions stay; each instance keeps one entry per user, for an access
    /// token's lifetime.
    pub async fn invalidate_access_tokens(&self, user_id: &str) -> Result<(), AuthError> {
        let sessions = self.sessions()?;
        let now = now_ms();
        sessions
            .call(Operation::InvalidateTokens, sessions.store.invalidate_tokens(user_id, now, &sessions.policy))
            .await?;
        self.inner.metrics.revoked(Cause::Bump, 1);
        tracing::info!(user_id, cause = "bump", "access tokens issued before now made stale");
        self.inner.events.emit(|| SecurityEvent::TokensInvalidated { user_id: user_id.to_owned() });
        Ok(())
    }

    /// Revokes one session of `user_id`: its refresh token at once and its
    /// access tokens on every instance. `NotFound` when the user has no such
    /// live session (another user's id included).
    pub async fn revoke_session(&self, user_id: &str, sid: &str) -> Result<(), AuthError> {
        self.revoke_session_because(user_id, sid, RevocationCause::Revoke).await
    }

    /// [`revoke_session`](Self::revoke_session), counted and reported with `cause`.
    pub(crate) async fn revoke_session_because(
        &self,
        user_id: &str,
        sid: &str,
        cause: RevocationCause,
    ) -> Result<(), AuthError> {
        let sessions = self.sessions()?;
        if sessions.call(Operation::Revoke, sessions.store.revoke(user_id, sid, now_ms(), &sessions.policy)).await? {
            let sid = [sid.to_owned()];
            sessions.forget(&sid);
            self.revoked(user_id, &sid, cause);
            Ok(())
        } else {
            Err(AuthError::NotFound("No such session"))
        }
    }

    /// Revokes every session of `user_id` (logout everywhere); returns how many.
    pub async fn revoke_all_sessions(&self, user_id: &str) -> Result<usize, AuthError> {
        self.revoke_sessions_except(user_id, None).await
    }

    /// Revokes every session of `user_id` but `keep_sid` ("sign out
    /// everywhere else", after a password change); returns how many.
    pub async fn revoke_other_sessions(&self, user_id: &str, keep_sid: &str) -> Result<usize, AuthError> {
        self.revoke_sessions_except(user_id, Some(keep_sid)).await
    }

    async fn revoke_sessions_except(&self, user_id: &str, except: Option<&str>) -> Result<usize, AuthError> {
        let sessions = self.sessions()?;
        let call = sessions.store.revoke_all(user_id, except, now_ms(), &sessions.policy);
        let revoked = sessions.call(Operation::RevokeAll, call).await?;
        sessions.forget(&revoked);
        let cause = if except.is_some() { RevocationCause::LogoutOthers } else { RevocationCause::LogoutAll };
        self.revoked(user_id, &revoked, cause);
        Ok(revoked.len())
    }

    /// The live sessions (devices) of `user_id`, oldest first; `current_sid`
    /// marks the caller's own.
    pub async fn list_sessions(&self, user_id: &str, current_sid: Option<&str>) -> Result<Vec<SessionInfo>, AuthError> {
        let sessions = self.sessions()?;
        let records = sessions.call(Operation::List, sessions.store.list(user_id, now_ms())).await?;
        Ok(records.into_iter().map(|record| SessionInfo::new(record, current_sid)).collect())
    }
}
