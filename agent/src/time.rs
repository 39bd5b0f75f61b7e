//! Wall-clock time for flow lines, access lines and `status`: the kernel
//! stamps flow events with the monotonic clock, people read RFC 3339.
//! A leaf: it imports nothing of the crate.

use std::fmt;
use std::time::SystemTime;

/// Nanoseconds of the monotonic clock (what the kernel stamps events with).
pub fn now_monotonic() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// The wall-clock time of a monotonic timestamp `ts_ns`.
pub fn monotonic_to_wall(ts_ns: u64) -> Rfc3339 {
    let mono = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128)
        .unwrap_or(0);
    let wall = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    Rfc3339((wall - (mono - ts_ns as i128)).max(0) as u128)
}

/// Now, as the flow stream and `status` write it.
pub fn now() -> Rfc3339 {
    monotonic_to_wall(now_monotonic())
}

/// A UTC instant, in nanoseconds since the Unix epoch, displayed as RFC
/// 3339 with milliseconds (`2026-12-07T06:49:30.123Z`).
pub struct Rfc3339(pub u128);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = (self.0 / 1_000_000_000) as i64;
        let millis = (self.0 / 1_000_000 % 1000) as u32;
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        // Civil-from-days (Howard Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let y = yoe + era * 400;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = if m <= 2 { y + 1 } else { y };
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }
}

#[cfg(test)]
mod tests;
