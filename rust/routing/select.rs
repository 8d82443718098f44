//! Picking a target: health as atomics, the three strategies, and a thread-local
//! random source. Nothing here locks or allocates.

use super::policy::{Policy, Strategy, MAX_TARGETS};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// A target's health: 0 when up, else the monotonic instant (µs, > 0) it is down until.
#[derive(Debug, Default)]
pub struct Health(AtomicI64);

impl Health {
    /// Down for `for_us` microseconds from now.
    pub fn mark_down(&self, for_us: i64) {
        let until = monotonic_now().saturating_add(for_us.max(1));
        self.0.store(until, Ordering::Relaxed);
    }

    pub fn mark_up(&self) {
        self.0.store(0, Ordering::Relaxed);
    }

    /// Whether the target may be picked; reads the clock (once per `now`) only when it
    /// has been marked down.
    #[inline]
    fn is_up(&self, now: &mut Option<i64>) -> bool {
        let until = self.0.load(Ordering::Relaxed);
        if until == 0 {
            return true;
        }
        let now = *now.get_or_insert_with(monotonic_now);
        if now >= until {
            // Back up: later checks need no clock. A racing mark_down wins the exchange.
            let _ = self
                .0
                .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed);
            return true;
        }
        false
    }
}

/// Microseconds since the first call, at least 1.
fn monotonic_now() -> i64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    i64::try_from(epoch.elapsed().as_micros())
        .unwrap_or(i64::MAX)
        .saturating_add(1)
}

/// Target indexes of one policy, in the order they would be tried: the pick first.
#[derive(Clone, Copy, Debug)]
pub struct Picks {
    len: u8,
    items: [u8; MAX_TARGETS],
}

impl Default for Picks {
    fn default() -> Self {
        Self::new()
    }
}

impl Picks {
    fn new() -> Self {
        Picks {
            len: 0,
            items: [0; MAX_TARGETS],
        }
    }

    fn push(&mut self, i: u8) {
        self.items[usize::from(self.len)] = i;
        self.len += 1;
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.items[..usize::from(self.len)]
    }

    /// The chosen target.
    pub fn first(&self) -> Option<u8> {
        self.as_slice().first().copied()
    }

    /// The fallbacks, in order.
    pub fn rest(&self) -> &[u8] {
        self.as_slice().get(1..).unwrap_or_default()
    }
}

/// Puts in `picks` the healthy targets of `policy` (each with its [`Health`] in
/// `health`) in the order its strategy tries them; none when none is healthy. Filled in
/// place: `Picks` is too big to move on the hot path.
pub fn pick(policy: &Policy, health: &[std::sync::Arc<Health>], picks: &mut Picks) {
    let mut now = None;
    picks.len = 0;
    match policy.strategy {
        Strategy::Failover | Strategy::LeastCost => {
            for &i in policy.preference.iter() {
                if health[usize::from(i)].is_up(&mut now) {
                    picks.push(i);
                }
            }
        }
        Strategy::Weighted => {
            let mut pool = Picks::new();
            for (i, t) in policy.def.targets.iter().enumerate() {
                if t.weight > 0 && health[i].is_up(&mut now) {
                    pool.push(i as u8);
                }
            }
            weighted_order(policy, &mut pool, picks);
        }
    }
}

/// Moves `pool` into `out` in a random order where each next target is drawn with
/// probability proportional to its weight among those left.
fn weighted_order(policy: &Policy, pool: &mut Picks, out: &mut Picks) {
    let weight = |i: u8| u128::from(policy.def.targets[usize::from(i)].weight);
    let mut total: u128 = pool.as_slice().iter().map(|&i| weight(i)).sum();
    while pool.len > 0 {
        let mut r = random_below(total);
        let mut at = usize::from(pool.len) - 1;
        for (k, &i) in pool.as_slice().iter().enumerate() {
            if r < weight(i) {
                at = k;
                break;
            }
            r -= weight(i);
        }
        let chosen = pool.items[at];
        out.push(chosen);
        total -= weight(chosen);
        pool.len -= 1;
        pool.items[at] = pool.items[usize::from(pool.len)];
    }
}

thread_local! {
    static RNG: Cell<u64> = const { Cell::new(0) };
}

/// A uniform number in `0..bound` (`bound` > 0) from a per-thread xorshift generator.
fn random_below(bound: u128) -> u128 {
    let draw = RNG.with(|state| {
        let mut x = state.get();
        if x == 0 {
            x = seed(state as *const Cell<u64> as u64);
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        x
    });
    let wide = u128::from(draw.wrapping_mul(0x9E37_79B9_7F4A_7C15)) << 64 | u128::from(draw);
    if let Ok(small) = u64::try_from(bound) {
        // Lemire's multiply-shift: no division.
        return (u128::from(draw) * u128::from(small)) >> 64;
    }
    wide % bound
}

fn seed(salt: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut z = nanos ^ salt.rotate_left(32) ^ 0x9E37_79B9_7F4A_7C15;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) | 1
}
