//! How a table behaves; fixed at creation and carried in snapshots.

/// The longest grace period (and reservation TTL) a table accepts: 10^9 s, about 31.7 years.
pub const MAX_DURATION_US: i64 = 1_000_000_000 * 1_000_000;

/// How a table behaves; fixed at creation and carried in snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// How long after `period_end` the old budget still applies, in microseconds.
    pub grace_us: i64,
    /// Whether a tenant without a row may spend.
    pub allow_unknown: bool,
    /// How many events for not-yet-created subscriptions may wait.
    pub max_parked: usize,
    /// How many bytes of such events may wait.
    pub max_parked_bytes: usize,
    /// How many recent event ids are remembered for duplicate detection.
    pub dedupe_window: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            grace_us: 86_400 * 1_000_000,
            allow_unknown: false,
            max_parked: 10_000,
            max_parked_bytes: 64 << 20,
            dedupe_window: 100_000,
        }
    }
}
