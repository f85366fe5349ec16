//! The clocks the crate reads: exact Unix milliseconds, and a coarse Unix
//! second for the verification hot path.

use std::time::{SystemTime, UNIX_EPOCH};

/// The current time in Unix milliseconds.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The current time in Unix seconds from the kernel's coarse clock (a few
/// milliseconds stale, about 2 ns instead of 30 here): for `exp` checks on
/// cache hits, which have one-second resolution anyway.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn coarse_now_secs() -> u64 {
    rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse).tv_sec.max(0) as u64
}

/// The current time in Unix seconds.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn coarse_now_secs() -> u64 {
    now_ms() / 1000
}
