//! Kernel timestamps (`bpf_ktime_get_ns`, `CLOCK_MONOTONIC`) → wall-clock `SystemTime`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Offset between `CLOCK_REALTIME` and `CLOCK_MONOTONIC`, sampled once at startup.
///
/// # Units
/// Nanoseconds. NTP steps after startup are not followed (spans keep consistent durations).
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    realtime_minus_monotonic_ns: i128,
}

fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

impl Clock {
    /// Samples both clocks now.
    pub fn sample() -> Self {
        let mono = now_ns(libc::CLOCK_MONOTONIC);
        let real = now_ns(libc::CLOCK_REALTIME);
        Self {
            realtime_minus_monotonic_ns: real - mono,
        }
    }

    /// A clock with a fixed offset (tests).
    pub fn with_offset_ns(realtime_minus_monotonic_ns: i128) -> Self {
        Self {
            realtime_minus_monotonic_ns,
        }
    }

    /// Wall-clock time of a monotonic timestamp.
    pub fn to_system_time(&self, monotonic_ns: u64) -> SystemTime {
        let ns = i128::from(monotonic_ns) + self.realtime_minus_monotonic_ns;
        let ns = u64::try_from(ns.max(0)).unwrap_or(u64::MAX);
        UNIX_EPOCH + Duration::from_nanos(ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_with_offset() {
        let c = Clock::with_offset_ns(1_000);
        assert_eq!(
            c.to_system_time(500),
            UNIX_EPOCH + Duration::from_nanos(1_500)
        );
        let sampled = Clock::sample();
        let now = sampled.to_system_time(now_ns(libc::CLOCK_MONOTONIC) as u64);
        let delta = now
            .duration_since(SystemTime::now())
            .unwrap_or_else(|e| e.duration());
        assert!(delta < Duration::from_secs(1), "{delta:?}");
    }
}
