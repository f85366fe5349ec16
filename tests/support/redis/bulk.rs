//! Loading many sorted-set members fast ([`zadd_bulk`]) and generating
//! revocation entries ([`revocation_members`]) for the "a million
//! revocations" tests and benches.
//!
//! One connection, `ZADD`s of [`MEMBERS_PER_ZADD`] members each, written
//! [`PIPELINE_DEPTH`] commands at a time before their replies are read.

use std::io::Write as _;

use super::RedisServer;

/// Members per `ZADD` command.
pub const MEMBERS_PER_ZADD: usize = 1000;
/// `ZADD` commands written before their replies are read.
pub const PIPELINE_DEPTH: usize = 64;

/// Adds `members` (`(score, member)` pairs) to the sorted set `key` on
/// `server` (for a Cluster, the node that owns `key`: see
/// `RedisCluster::node_for_key`). Returns how many were new (the sum of the
/// `ZADD` replies).
pub fn zadd_bulk<M: AsRef<[u8]>>(
    server: &RedisServer,
    key: &[u8],
    members: impl IntoIterator<Item = (u64, M)>,
) -> Result<u64, String> {
    let mut conn = server.connect()?;
    let mut members = members.into_iter().peekable();
    let mut added = 0;
    let mut batch = Vec::with_capacity(PIPELINE_DEPTH * MEMBERS_PER_ZADD * 40);
    while members.peek().is_some() {
        batch.clear();
        let mut commands = 0;
        while commands < PIPELINE_DEPTH && members.peek().is_some() {
            let chunk: Vec<(u64, M)> = members.by_ref().take(MEMBERS_PER_ZADD).collect();
            write_zadd(&mut batch, key, &chunk);
            commands += 1;
        }
        conn.send(&batch)?;
        for _ in 0..commands {
            let reply = conn.read()?;
            let n = reply.first().and_then(|n| std::str::from_utf8(n).ok()?.parse::<u64>().ok());
            added += n.ok_or_else(|| format!("unexpected ZADD reply {reply:?}"))?;
        }
    }
    Ok(added)
}

/// Appends `ZADD key score member score member …` in RESP to `out`.
fn write_zadd<M: AsRef<[u8]>>(out: &mut Vec<u8>, key: &[u8], members: &[(u64, M)]) {
    let bulk = |out: &mut Vec<u8>, arg: &[u8]| {
        let _ = write!(out, "${}\r\n", arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    };
    let _ = write!(out, "*{}\r\n", 2 + 2 * members.len());
    bulk(out, b"ZADD");
    bulk(out, key);
    for (score, member) in members {
        bulk(out, score.to_string().as_bytes());
        bulk(out, member.as_ref());
    }
}

/// `n` distinct revocation entries `(until_ms, "<prefix><16-char sid>")`,
/// the same for the same `seed`: sids of 16 URL-safe base64 characters
/// (96 random bits, as a session id would be), scores spread over the
/// minute from `until_ms`.
pub fn revocation_members(n: usize, prefix: &str, until_ms: u64, seed: u64) -> impl Iterator<Item = (u64, String)> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let prefix = prefix.to_owned();
    (0..n as u64).map(move |i| {
        // Two splitmix64 outputs, the first a bijection of `i`: distinct sids.
        let (a, b) = (splitmix64(seed ^ i), splitmix64(i.wrapping_add(seed.rotate_left(32))));
        let mut member = String::with_capacity(prefix.len() + 16);
        member.push_str(&prefix);
        for k in 0..16 {
            let word = if k < 10 { a >> (6 * k) } else { b >> (6 * (k - 10)) };
            member.push(ALPHABET[(word & 63) as usize] as char);
        }
        (until_ms + i % 60_000, member)
    })
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE5_E4B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
