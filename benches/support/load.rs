//! What the HTTP load benchmarks share: reading responses off raw keep-alive
//! connections, a thread's CPU time, medians. Included with `#[path]`.
#![allow(dead_code)] // each bench uses a different part

use std::io;

use tokio::{io::AsyncReadExt, net::TcpStream};

/// A response larger than this is an error (the bench's are tiny).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The thread's CPU time so far, in nanoseconds (`/proc/.../schedstat`).
pub fn cpu_ns(task: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/self/task/{task}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The calling thread's id, as named under /proc/self/task.
pub fn thread_id() -> String {
    std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default()
}

/// Reads one HTTP/1.1 response (headers + `content-length` body) into `buf`;
/// answers its status and the length of its head.
pub async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<(u16, usize)> {
    buf.clear();
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).map_err(|_| invalid("non-UTF-8 head"))?;
            let status = head.get(9..12).and_then(|s| s.parse().ok()).ok_or_else(|| invalid("no status"))?;
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
                })
                .ok_or_else(|| invalid("no content-length"))?;
            let total = end + 4 + length;
            if total > MAX_RESPONSE_BYTES {
                return Err(invalid("response too large"));
            }
            while buf.len() < total {
                if stream.read_buf(buf).await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
            if buf.len() != total {
                return Err(invalid("bytes after the response"));
            }
            return Ok((status, end));
        }
        if buf.len() > MAX_RESPONSE_BYTES {
            return Err(invalid("response head too large"));
        }
        buf.reserve(4096);
        if stream.read_buf(buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// The median (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}
