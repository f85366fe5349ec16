//! The binary layout of one session in the user's hash (see the `RedisStore`
//! docs): metadata and data split into chunks of at most 64 bytes.

use std::time::Duration;

use crate::store::{NewSession, SessionPolicy, SessionRecord, StoreError};

/// Bytes of metadata at the start of chunk 0.
pub(super) const META_LEN: usize = 43;
/// Largest chunk (and so hash value) written while a session fits 255 chunks.
pub(super) const CHUNK: usize = 64;

pub(super) fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

pub(super) fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The largest value the 6-byte fields hold; times and counters are clamped to it.
pub(super) const MAX_48: u64 = (1 << 48) - 1;

fn push_u48(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(&n.min(MAX_48).to_be_bytes()[2..]);
}

fn read_u48(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0, |n, &b| (n << 8) | u64::from(b))
}

fn push_varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn read_varint(bytes: &mut &[u8]) -> Option<usize> {
    let mut n = 0usize;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        n |= usize::from(b & 0x7f).checked_shl(shift)?;
        if b & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

fn read_str(bytes: &mut &[u8]) -> Option<String> {
    let len = read_varint(bytes)?;
    if bytes.len() < len {
        return None;
    }
    let (s, rest) = bytes.split_at(len);
    *bytes = rest;
    String::from_utf8(s.to_vec()).ok()
}

/// Splits a new session into its chunks (see the module docs).
pub(super) fn encode(session: &NewSession, policy: &SessionPolicy) -> Vec<Vec<u8>> {
    let now = session.now_ms;
    let absolute = now.saturating_add(ms(policy.absolute_ttl));
    let mut data = Vec::with_capacity(8 + session.claims.len());
    data.push(u8::from(session.ip.is_some()) | (u8::from(session.user_agent.is_some()) << 1));
    for s in [&session.ip, &session.user_agent].into_iter().flatten().chain([&session.claims]) {
        push_varint(&mut data, s.len());
        data.extend_from_slice(s.as_bytes());
    }
    let head = data.len().min(CHUNK - META_LEN);
    let rest = &data[head..];
    // At most 255 chunks; past 254 × 64 bytes chunks grow (the hash has long
    // left listpack encoding by then anyway).
    let size = CHUNK.max(rest.len().div_ceil(254));
    let chunks = 1 + rest.len().div_ceil(size);
    let mut first = Vec::with_capacity(CHUNK);
    push_u48(&mut first, now);
    push_u48(&mut first, absolute);
    push_u48(&mut first, now.saturating_add(ms(policy.idle_ttl)).min(absolute));
    push_u48(&mut first, now);
    push_u48(&mut first, 0);
    push_u48(&mut first, 0);
    push_u48(&mut first, now);
    first.push(chunks as u8);
    first.extend_from_slice(&data[..head]);
    std::iter::once(first).chain(rest.chunks(size).map(<[u8]>::to_vec)).collect()
}

/// Rebuilds a record from its chunks.
pub(super) fn decode(user_id: &str, sid: String, chunks: &[Vec<u8>]) -> Result<SessionRecord, StoreError> {
    let first = chunks.first().filter(|c| c.len() >= META_LEN).ok_or_else(|| corrupt("short session metadata"))?;
    if usize::from(first[META_LEN - 1]) != chunks.len() {
        return Err(corrupt("missing session chunks"));
    }
    let mut data = Vec::with_capacity(chunks.iter().map(Vec::len).sum::<usize>() - META_LEN);
    data.extend_from_slice(&first[META_LEN..]);
    for chunk in &chunks[1..] {
        data.extend_from_slice(chunk);
    }
    let field = |i: usize| read_u48(&first[i * 6..i * 6 + 6]);
    let mut bytes = data.as_slice();
    let flags = *bytes.first().ok_or_else(|| corrupt("empty session data"))?;
    bytes = &bytes[1..];
    let mut next = |present: bool| -> Result<Option<String>, StoreError> {
        if !present {
            return Ok(None);
        }
        read_str(&mut bytes).map(Some).ok_or_else(|| corrupt("truncated session data"))
    };
    let ip = next(flags & 1 != 0)?;
    let user_agent = next(flags & 2 != 0)?;
    let claims = next(true)?.unwrap_or_default();
    Ok(SessionRecord {
        sid,
        user_id: user_id.to_owned(),
        claims,
        user_agent,
        ip,
        created_at_ms: field(0),
        absolute_expires_at_ms: field(1),
        idle_expires_at_ms: field(2),
        last_used_at_ms: field(3),
        rotated_at_ms: field(4),
        counter: field(5),
        auth_time_ms: field(6),
    })
}

pub(super) fn utf8(bytes: Vec<u8>) -> Result<String, StoreError> {
    String::from_utf8(bytes).map_err(|_| corrupt("session id is not UTF-8"))
}

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

    fn session(ua: Option<String>, claims: String) -> NewSession {
        NewSession {
            user_id: "u".into(),
            sid: "s".into(),
            claims,
            user_agent: ua,
            ip: Some("2001:db8::1".into()),
            now_ms: 1_700_000_000_123,
        }
    }

    #[test]
    fn chunks_round_trip_and_stay_small() {
        for (ua, claims) in [
            (None, String::new()),
            (Some("Mozilla/5.0 (X11; Linux x86_64) Firefox/1".to_owned()), r#"{"role":"admin"}"#.to_owned()),
            (Some("ü|:{}\n".repeat(50)), "x".repeat(5000)),
            (Some(String::new()), "y".repeat(254 * 64 * 3)),
        ] {
            let new = session(ua.clone(), claims.clone());
            let chunks = encode(&new, &policy());
            assert!(chunks.len() <= 255);
            if claims.len() < 10_000 {
                assert!(chunks.iter().all(|c| c.len() <= CHUNK), "a chunk over 64 bytes");
            }
            let record = decode("u", "s".into(), &chunks).unwrap();
            assert_eq!(record.user_agent, ua);
            assert_eq!(record.claims, claims);
            assert_eq!(record.ip.as_deref(), Some("2001:db8::1"));
            assert_eq!(record.created_at_ms, 1_700_000_000_123);
            assert_eq!(record.idle_expires_at_ms, 1_700_000_000_123 + 3_600_000);
            assert_eq!(record.counter, 0);
            assert_eq!(record.auth_time_ms, 1_700_000_000_123);
        }
    }
}
