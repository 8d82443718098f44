//! Wall-clock time in microseconds since the Unix epoch, cheap enough for the hot path.

use std::sync::atomic::{AtomicI64, Ordering};

const SYSTEM: i64 = i64::MIN;

/// The system clock, or a fixed instant set for tests and simulations.
#[derive(Debug)]
pub struct Clock {
    fixed: AtomicI64,
}

impl Default for Clock {
    fn default() -> Self {
        Self {
            fixed: AtomicI64::new(SYSTEM),
        }
    }
}

impl Clock {
    #[inline]
    pub fn now(&self) -> i64 {
        match self.fixed.load(Ordering::Relaxed) {
            SYSTEM => system_now(),
            fixed => fixed,
        }
    }

    /// Pins the clock at `micros`, or hands it back to the system clock with `None`.
    pub fn set(&self, micros: Option<i64>) {
        self.fixed
            .store(micros.unwrap_or(SYSTEM), Ordering::Relaxed);
    }
}

/// The kernel's coarse real-time clock: a few nanoseconds through the vDSO, at the
/// resolution of a scheduler tick (1–4 ms), ample for periods and reservation TTLs.
#[cfg(target_os = "linux")]
#[inline]
fn system_now() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_REALTIME_COARSE always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    ts.tv_sec * 1_000_000 + ts.tv_nsec / 1_000
}

#[cfg(not(target_os = "linux"))]
#[inline]
fn system_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_and_system() {
        let c = Clock::default();
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64;
        assert!((c.now() - before).abs() < 50_000);
        c.set(Some(42));
        assert_eq!(c.now(), 42);
        c.set(None);
        assert!(c.now() > 42);
    }
}
