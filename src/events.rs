//! Security events (login, refresh, reuse, revocation, cap eviction, bump)
//! and their delivery to the application's hook, off the request path.
//!
//! The request path only tries to put an event in a bounded queue (never
//! waits); a thread of the layer's own calls the hook, one event at a time,
//! containing its panics. When the hook falls behind, events are dropped,
//! counted, and said once in the log, so a slow or stuck hook never slows,
//! blocks or fails a request.

use std::{
    fmt,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
};

use crate::metrics::{self, DroppedCounter};

/// How many events may wait for the hook; beyond that they are dropped.
pub(crate) const QUEUE: usize = 1024;

/// Why a session was revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RevocationCause {
    /// The user logged out ([`Session::logout`](crate::Session::logout)).
    Logout,
    /// The user logged out everywhere ([`Session::logout_all`](crate::Session::logout_all),
    /// [`JwtAuth::revoke_all_sessions`](crate::JwtAuth::revoke_all_sessions)).
    LogoutAll,
    /// The user signed out every other device
    /// ([`Session::logout_others`](crate::Session::logout_others),
    /// [`JwtAuth::revoke_other_sessions`](crate::JwtAuth::revoke_other_sessions)).
    LogoutOthers,
    /// One session revoked by id ([`Session::revoke`](crate::Session::revoke),
    /// [`JwtAuth::revoke_session`](crate::JwtAuth::revoke_session)), or by
    /// [`reload_claims`](crate::JwtAuthBuilder::reload_claims) answering `None`.
    Revoke,
    /// A login beyond [`max_sessions_per_user`](crate::JwtAuthBuilder::max_sessions_per_user)
    /// revoked the user's oldest session.
    Cap,
    /// A refresh token was reused outside the grace window: theft.
    Theft,
}

impl RevocationCause {
    /// The label used in the `cause` of [`metrics`](crate::metrics): `logout`,
    /// `logout_all`, `logout_others`, `revoke`, `cap`, `theft`.
    pub fn as_str(self) -> &'static str {
        self.metric().as_str()
    }

    pub(crate) fn metric(self) -> metrics::Cause {
        match self {
            Self::Logout => metrics::Cause::Logout,
            Self::LogoutAll => metrics::Cause::LogoutAll,
            Self::LogoutOthers => metrics::Cause::LogoutOthers,
            Self::Revoke => metrics::Cause::Revoke,
            Self::Cap => metrics::Cause::Cap,
            Self::Theft => metrics::Cause::Theft,
        }
    }
}

impl fmt::Display for RevocationCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that happened to a user's sessions, given to the hook
/// registered with [`JwtAuthBuilder::on_event`](crate::JwtAuthBuilder::on_event).
/// Each happening is one event; none carries a token.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecurityEvent {
    /// A session was created ([`JwtAuth::login`](crate::JwtAuth::login)).
    Login {
        /// The user.
        user_id: String,
        /// The new session.
        session_id: String,
    },
    /// A refresh token was rotated (replays within the grace window are not events).
    Refresh {
        /// The user.
        user_id: String,
        /// The session.
        session_id: String,
    },
    /// A refresh token was reused outside the grace window (theft, or a
    /// client that lost a response): the session is revoked. The event to
    /// alert on, e-mail the user about, or feed to a SIEM.
    ReuseDetected {
        /// The user.
        user_id: String,
        /// The revoked session.
        session_id: String,
    },
    /// A session was revoked by the user or the application: `cause` is
    /// [`Logout`](RevocationCause::Logout), [`LogoutAll`](RevocationCause::LogoutAll)
    /// (one event per session), [`LogoutOthers`](RevocationCause::LogoutOthers) (the
    /// same) or [`Revoke`](RevocationCause::Revoke); theft and the session cap
    /// have events of their own.
    SessionRevoked {
        /// The user.
        user_id: String,
        /// The revoked session.
        session_id: String,
        /// Why.
        cause: RevocationCause,
    },
    /// A login beyond the per-user session cap revoked the oldest session.
    SessionEvicted {
        /// The user.
        user_id: String,
        /// The revoked session.
        session_id: String,
    },
    /// The user's access tokens issued before now were made stale
    /// ([`JwtAuth::invalidate_access_tokens`](crate::JwtAuth::invalidate_access_tokens));
    /// sessions stay.
    TokensInvalidated {
        /// The user.
        user_id: String,
    },
}

impl SecurityEvent {
    /// The user concerned.
    pub fn user_id(&self) -> &str {
        match self {
            Self::Login { user_id, .. }
            | Self::Refresh { user_id, .. }
            | Self::ReuseDetected { user_id, .. }
            | Self::SessionRevoked { user_id, .. }
            | Self::SessionEvicted { user_id, .. }
            | Self::TokensInvalidated { user_id } => user_id,
        }
    }

    /// The session concerned, if the event is about one.
    pub fn session_id(&self) -> Option<&str> {
        match self {
            Self::Login { session_id, .. }
            | Self::Refresh { session_id, .. }
            | Self::ReuseDetected { session_id, .. }
            | Self::SessionRevoked { session_id, .. }
            | Self::SessionEvicted { session_id, .. } => Some(session_id),
            Self::TokensInvalidated { .. } => None,
        }
    }

    /// Why the session ended, if the event is a revocation:
    /// [`Theft`](RevocationCause::Theft) for [`ReuseDetected`](Self::ReuseDetected),
    /// [`Cap`](RevocationCause::Cap) for [`SessionEvicted`](Self::SessionEvicted).
    pub fn revocation_cause(&self) -> Option<RevocationCause> {
        match self {
            Self::ReuseDetected { .. } => Some(RevocationCause::Theft),
            Self::SessionEvicted { .. } => Some(RevocationCause::Cap),
            Self::SessionRevoked { cause, .. } => Some(*cause),
            _ => None,
        }
    }
}

pub(crate) type Hook = Arc<dyn Fn(&SecurityEvent) + Send + Sync>;

/// Where a layer's events go: nowhere without a hook.
#[derive(Clone, Default)]
pub(crate) struct Events(Option<Arc<Queue>>);

struct Queue {
    sender: SyncSender<SecurityEvent>,
    /// Dropping events since the last one delivered to the queue.
    dropping: AtomicBool,
    dropped: AtomicU64,
    full: DroppedCounter,
}

impl Events {
    /// Starts the delivery thread for `hooks` (none: events are not even built).
    pub(crate) fn start(hooks: Vec<Hook>, metrics: &metrics::Metrics) -> std::io::Result<Self> {
        if hooks.is_empty() {
            return Ok(Self(None));
        }
        let (sender, receiver) = sync_channel(QUEUE);
        let panicked = metrics.dropped_handle(metrics::Dropped::HookPanicked);
        // A thread, not a task: a hook that blocks (SMTP, a SIEM call) then
        // holds no runtime worker, and the layer needs no runtime to build.
        std::thread::Builder::new()
            .name("tower-jwt-auth-events".into())
            .spawn(move || deliver(&receiver, &hooks, &panicked))?;
        let full = metrics.dropped_handle(metrics::Dropped::QueueFull);
        Ok(Self(Some(Arc::new(Queue { sender, dropping: AtomicBool::new(false), dropped: AtomicU64::new(0), full }))))
    }

    /// Hands an event to the hook without waiting; `event` is only built
    /// when a hook is registered.
    pub(crate) fn emit(&self, event: impl FnOnce() -> SecurityEvent) {
        let Some(queue) = &self.0 else { return };
        match queue.sender.try_send(event()) {
            Ok(()) => {
                if queue.dropping.load(Ordering::Relaxed) && queue.dropping.swap(false, Ordering::AcqRel) {
                    let dropped = queue.dropped.swap(0, Ordering::AcqRel);
                    tracing::warn!(dropped, "security events reach the hook again");
                }
            }
            Err(TrySendError::Full(_)) => {
                metrics::count_drop(&queue.full);
                queue.dropped.fetch_add(1, Ordering::AcqRel);
                if !queue.dropping.swap(true, Ordering::AcqRel) {
                    tracing::warn!(
                        queue = QUEUE,
                        "the security-event hook is falling behind: events are dropped until it catches up"
                    );
                }
            }
            // The delivery thread is gone (it cannot end while senders live,
            // unless the process is going down): nothing to deliver to.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// The delivery thread: every event to every hook, panics contained; ends
/// when the last layer clone (and so the last sender) is dropped.
fn deliver(receiver: &Receiver<SecurityEvent>, hooks: &[Hook], panicked: &DroppedCounter) {
    let mut panicking = false;
    for event in receiver {
        for hook in hooks {
            match catch_unwind(AssertUnwindSafe(|| hook(&event))) {
                Ok(()) => panicking = false,
                Err(_) => {
                    metrics::count_drop(panicked);
                    if !panicking {
                        panicking = true;
                        tracing::warn!("the security-event hook panicked; the event is dropped, the layer goes on");
                    }
                }
            }
        }
    }
}
