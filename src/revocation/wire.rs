//! How revocations travel between instances: the pub/sub message and the
//! sorted-set member (scored by the Unix ms until which it matters) that a
//! store writes, in one place so every store and feed agrees.
//!
//! | kind | message | member |
//! |---|---|---|
//! | session revoked | `s:<until_ms>:<published_ms>:<sid>` | `s:<sid>` |
//! | user's tokens before an instant stale | `u:<until_ms>:<published_ms>:<before_ms>:<user_id>` | `u:<before_ms>:<user_id>` |
//!
//! Ids come last, so they may contain `:`. `published_ms` is when the
//! publishing instance sent it, for the propagation lag of
//! [`metrics`](crate::metrics).
// Only Redis stores and feeds speak it; without `redis` the types remain.
#![cfg_attr(not(feature = "redis"), allow(dead_code))]

/// One revocation, as published and stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Revocation {
    /// Session `sid` is revoked until `until_ms`.
    Session { sid: String, until_ms: u64 },
    /// `user_id`'s tokens issued before `before_ms` are stale until `until_ms`.
    User { user_id: String, before_ms: u64, until_ms: u64 },
}

impl Revocation {
    /// The pub/sub message, published at `published_ms`.
    pub(crate) fn message(&self, published_ms: u64) -> String {
        match self {
            Self::Session { sid, until_ms } => format!("s:{until_ms}:{published_ms}:{sid}"),
            Self::User { user_id, before_ms, until_ms } => {
                format!("u:{until_ms}:{published_ms}:{before_ms}:{user_id}")
            }
        }
    }

    /// Parses a pub/sub message into the revocation and when it was
    /// published; `None` for anything else.
    pub(crate) fn parse_message(payload: &[u8]) -> Option<(Self, u64)> {
        let text = std::str::from_utf8(payload).ok()?;
        let (kind, rest) = text.split_once(':')?;
        let (until, rest) = rest.split_once(':')?;
        let (published, rest) = rest.split_once(':')?;
        let (until_ms, published_ms) = (until.parse().ok()?, published.parse().ok()?);
        let revocation = match kind {
            "s" if !rest.is_empty() => Self::Session { sid: rest.to_owned(), until_ms },
            "u" => Self::user(rest, until_ms)?,
            _ => return None,
        };
        Some((revocation, published_ms))
    }

    /// The sorted-set member (its score is `until_ms`).
    pub(crate) fn member(&self) -> String {
        match self {
            Self::Session { sid, .. } => format!("s:{sid}"),
            Self::User { user_id, before_ms, .. } => format!("u:{before_ms}:{user_id}"),
        }
    }

    /// Parses a sorted-set member with its score.
    pub(crate) fn parse_member(member: &[u8], until_ms: u64) -> Option<Self> {
        let text = std::str::from_utf8(member).ok()?;
        match text.split_once(':')? {
            ("s", sid) if !sid.is_empty() => Some(Self::Session { sid: sid.to_owned(), until_ms }),
            ("u", rest) => Self::user(rest, until_ms),
            _ => None,
        }
    }

    /// `<before_ms>:<user_id>`.
    fn user(rest: &str, until_ms: u64) -> Option<Self> {
        let (before, user_id) = rest.split_once(':')?;
        let before_ms = before.parse().ok()?;
        (!user_id.is_empty()).then(|| Self::User { user_id: user_id.to_owned(), before_ms, until_ms })
    }

    /// Until when it matters (Unix ms).
    pub(crate) fn until_ms(&self) -> u64 {
        match self {
            Self::Session { until_ms, .. } | Self::User { until_ms, .. } => *until_ms,
        }
    }
}

/// Parses a sorted-set score (an integer, possibly printed as a float).
pub(crate) fn parse_score(score: &[u8]) -> Option<u64> {
    let score = std::str::from_utf8(score).ok()?;
    score.parse().ok().or_else(|| score.parse::<f64>().ok().filter(|f| f.is_finite() && *f >= 0.0).map(|f| f as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_members_round_trip() {
        for revocation in [
            Revocation::Session { sid: "a:b".into(), until_ms: 1_700_000_000_000 },
            Revocation::User { user_id: "mail:x@y".into(), before_ms: 1_699_999_999_999, until_ms: 1_700_000_000_000 },
        ] {
            let published = 1_699_999_999_000;
            let message = revocation.message(published);
            assert_eq!(Revocation::parse_message(message.as_bytes()), Some((revocation.clone(), published)));
            let until = revocation.until_ms();
            assert_eq!(Revocation::parse_member(revocation.member().as_bytes(), until), Some(revocation));
        }
        for junk in [
            "",
            "s",
            "s:1",
            "s:1:2",
            "s:x:2:sid",
            "s:1:x:sid",
            "s:1:2:",
            "u:1:2:3",
            "u:1:2:x:u",
            "q:1:2:s",
            "1700000000000:sid",
        ] {
            assert_eq!(Revocation::parse_message(junk.as_bytes()), None, "{junk:?}");
        }
        assert_eq!(parse_score(b"1700000000000"), Some(1_700_000_000_000));
        assert_eq!(parse_score(b"1.7e12"), Some(1_700_000_000_000));
        assert_eq!(parse_score(b"inf"), None);
    }
}
