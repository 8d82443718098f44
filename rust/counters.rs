//! The spend counters of one budget row and the lock-free operations on them.
//!
//! `spent` and `reserved` live in one 128-bit atomic word, so the admission rule
//! `spent + reserved + amount <= total` is checked and applied by a single
//! compare-and-swap: no lock, no allocation, no torn read of the pair. The
//! algorithms are generic over [`UsageCell`] so that the `loom` model in the tests
//! runs exactly this code on a model atomic.

use portable_atomic::AtomicU128;
use std::sync::atomic::Ordering;

/// Spent and reserved micro-units of one budget row, read and written together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub spent: u64,
    pub reserved: u64,
}

impl Usage {
    /// What is left of `total`, zero when the row is at or over its limit.
    pub fn remaining(self, total: u64) -> u64 {
        total.saturating_sub(self.spent.saturating_add(self.reserved))
    }

    /// Whether debiting `amount` more keeps `spent + reserved` within `total`.
    pub fn admits(self, total: u64, amount: u64) -> bool {
        self.spent
            .checked_add(self.reserved)
            .and_then(|used| used.checked_add(amount))
            .is_some_and(|needed| needed <= total)
    }
}

/// An atomic cell holding a [`Usage`].
pub trait UsageCell {
    fn load(&self) -> Usage;
    /// Replaces `current` by `new`; on failure returns the value found instead.
    fn compare_exchange(&self, current: Usage, new: Usage) -> Result<(), Usage>;
}

/// The production cell: one `AtomicU128`, spent in the high half.
#[derive(Debug, Default)]
pub struct AtomicUsage(AtomicU128);

impl AtomicUsage {
    pub fn new(usage: Usage) -> Self {
        Self(AtomicU128::new(pack(usage)))
    }

    /// The current value, read with an acquire-release RMW: a debit (an RMW too) either
    /// precedes it in the cell's modification order and is seen, or follows it and
    /// synchronises with it (the snapshot side of `Table::dirty`).
    pub fn load_latest(&self) -> Usage {
        unpack(self.0.fetch_or(0, Ordering::AcqRel))
    }
}

fn pack(u: Usage) -> u128 {
    (u128::from(u.spent) << 64) | u128::from(u.reserved)
}

fn unpack(word: u128) -> Usage {
    Usage {
        spent: (word >> 64) as u64,
        reserved: word as u64,
    }
}

impl UsageCell for AtomicUsage {
    #[inline]
    fn load(&self) -> Usage {
        unpack(self.0.load(Ordering::Acquire))
    }

    #[inline]
    fn compare_exchange(&self, current: Usage, new: Usage) -> Result<(), Usage> {
        self.0
            .compare_exchange_weak(
                pack(current),
                pack(new),
                // SeqCst (the same instruction as AcqRel on x86-64): the lease allowance
                // check after a debit pairs with `Table::shrink_allowance` (see `table::lease`).
                Ordering::SeqCst,
                Ordering::Acquire,
            )
            .map(drop)
            .map_err(unpack)
    }
}

/// Moves the cell from its value `u` to `step(u)` while `step` agrees, retrying on
/// contention. Returns `(before, after)`, or the value that `step` refused.
#[inline]
fn update<C: UsageCell>(
    cell: &C,
    step: impl Fn(Usage) -> Option<Usage>,
) -> Result<(Usage, Usage), Usage> {
    let mut current = cell.load();
    loop {
        let next = step(current).ok_or(current)?;
        match cell.compare_exchange(current, next) {
            Ok(()) => return Ok((current, next)),
            Err(found) => current = found,
        }
    }
}

/// Debits `amount` when the row admits it. `Ok(new)` or `Err(current)` when refused.
#[inline]
pub fn try_debit<C: UsageCell>(cell: &C, total: u64, amount: u64) -> Result<Usage, Usage> {
    if amount == 0 {
        let current = cell.load();
        return if current.admits(total, 0) {
            Ok(current)
        } else {
            Err(current)
        };
    }
    update(cell, |u| {
        u.admits(total, amount).then_some(Usage {
            spent: u.spent + amount,
            reserved: u.reserved,
        })
    })
    .map(|(_, after)| after)
}

/// Takes back a debit of `amount` that the lease allowance no longer covers.
pub fn undo_debit<C: UsageCell>(cell: &C, amount: u64) {
    let step = |u: Usage| {
        Some(Usage {
            spent: u.spent.saturating_sub(amount),
            reserved: u.reserved,
        })
    };
    // `step` always agrees.
    let _ = update(cell, step);
}

/// Holds `amount` as reserved when the row admits it (the first phase of a two-phase spend).
pub fn try_hold<C: UsageCell>(cell: &C, total: u64, amount: u64) -> Result<Usage, Usage> {
    update(cell, |u| {
        u.admits(total, amount).then_some(Usage {
            spent: u.spent,
            reserved: u.reserved + amount,
        })
    })
    .map(|(_, after)| after)
}

/// Resolves a hold of `held`: posts `actual` (<= held) as spent and releases the rest.
/// A release is `settle(cell, held, 0)`.
pub fn settle<C: UsageCell>(cell: &C, held: u64, actual: u64) -> Usage {
    debug_assert!(actual <= held);
    let step = |u: Usage| {
        Some(Usage {
            spent: u.spent.saturating_add(actual),
            reserved: u.reserved.saturating_sub(held),
        })
    };
    update(cell, step).map_or_else(|u| u, |(_, after)| after)
}

/// Adds `amount` to the held amount while the sum stays within `max` (restoring holds).
pub fn add_reserved<C: UsageCell>(cell: &C, amount: u64, max: u64) -> Result<Usage, Usage> {
    update(cell, |u| {
        let reserved = u.reserved.checked_add(amount).filter(|&held| held <= max)?;
        Some(Usage { reserved, ..u })
    })
    .map(|(_, after)| after)
}

/// Zeroes `spent` (a new billing period) and returns what it was; holds stay.
pub fn reset_spent<C: UsageCell>(cell: &C) -> u64 {
    let step = |u: Usage| {
        Some(Usage {
            spent: 0,
            reserved: u.reserved,
        })
    };
    update(cell, step).map_or(0, |(before, _)| before.spent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_128_bit_word_is_lock_free() {
        assert!(AtomicU128::is_lock_free());
    }

    #[test]
    fn debit_hold_settle() {
        let cell = AtomicUsage::new(Usage::default());
        assert!(try_debit(&cell, 10, 4).is_ok());
        assert_eq!(
            try_hold(&cell, 10, 5).unwrap(),
            Usage {
                spent: 4,
                reserved: 5
            }
        );
        assert_eq!(
            try_debit(&cell, 10, 2),
            Err(Usage {
                spent: 4,
                reserved: 5
            })
        );
        assert_eq!(
            settle(&cell, 5, 3),
            Usage {
                spent: 7,
                reserved: 0
            }
        );
        assert_eq!(try_debit(&cell, 10, 3).unwrap().remaining(10), 0);
        assert_eq!(reset_spent(&cell), 10);
        assert_eq!(cell.load(), Usage::default());
        let full = Usage {
            spent: u64::MAX,
            reserved: 1,
        };
        assert_eq!(full.remaining(5), 0);
        assert!(!full.admits(u64::MAX, 0), "overflowing sums never admit");
    }

    #[test]
    fn real_threads_never_overspend() {
        const THREADS: usize = 8;
        const TRIES: u64 = 20_000;
        const TOTAL: u64 = 50_000;
        let cell = Arc::new(AtomicUsage::new(Usage::default()));
        let granted: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    let cell = Arc::clone(&cell);
                    s.spawn(move || {
                        (0..TRIES)
                            .filter(|_| try_debit(&*cell, TOTAL, 1).is_ok())
                            .count() as u64
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(granted, TOTAL);
        assert_eq!(cell.load().spent, TOTAL);
    }

    /// The loom model: a model atomic with the pair packed into 64 bits.
    mod model {
        use super::super::*;
        use loom::sync::atomic::{AtomicBool, AtomicU64};
        use loom::sync::Arc;

        struct LoomUsage(AtomicU64);

        impl UsageCell for LoomUsage {
            fn load(&self) -> Usage {
                let w = self.0.load(Ordering::Acquire);
                Usage {
                    spent: w >> 32,
                    reserved: w & 0xffff_ffff,
                }
            }
            fn compare_exchange(&self, current: Usage, new: Usage) -> Result<(), Usage> {
                let p = |u: Usage| (u.spent << 32) | u.reserved;
                self.0
                    .compare_exchange(p(current), p(new), Ordering::AcqRel, Ordering::Acquire)
                    .map(drop)
                    .map_err(|w| Usage {
                        spent: w >> 32,
                        reserved: w & 0xffff_ffff,
                    })
            }
        }

        /// Two threads race to debit a budget that admits only one of them.
        #[test]
        fn check_and_debit_admits_exactly_what_fits() {
            loom::model(|| {
                let cell = Arc::new(LoomUsage(AtomicU64::new(0)));
                let threads: Vec<_> = (0..2)
                    .map(|_| {
                        let cell = Arc::clone(&cell);
                        loom::thread::spawn(move || try_debit(&*cell, 5, 3).is_ok())
                    })
                    .collect();
                let granted = threads
                    .into_iter()
                    .map(|t| t.join().unwrap())
                    .filter(|&ok| ok)
                    .count();
                assert_eq!(granted, 1);
                assert_eq!(
                    cell.load(),
                    Usage {
                        spent: 3,
                        reserved: 0
                    }
                );
            });
        }

        /// The `Table::dirty` protocol, with its orderings: a debit (AcqRel RMW, then
        /// a relaxed check of the flag) races a snapshot (clear, SeqCst fence, AcqRel
        /// RMW read). Afterwards the snapshot saw the debit or the flag is set.
        #[test]
        fn a_debit_a_snapshot_misses_leaves_the_flag_set() {
            loom::model(|| {
                let cell = Arc::new(LoomUsage(AtomicU64::new(0)));
                let dirty = Arc::new(AtomicBool::new(true));
                let spender = {
                    let (cell, dirty) = (Arc::clone(&cell), Arc::clone(&dirty));
                    loom::thread::spawn(move || {
                        assert!(try_debit(&*cell, 10, 1).is_ok());
                        if !dirty.load(Ordering::Relaxed) {
                            dirty.store(true, Ordering::Relaxed);
                        }
                    })
                };
                dirty.store(false, Ordering::Relaxed);
                loom::sync::atomic::fence(Ordering::SeqCst);
                let seen = cell.0.fetch_or(0, Ordering::AcqRel);
                spender.join().unwrap();
                assert!(seen == 1 << 32 || dirty.load(Ordering::Relaxed));
            });
        }

        /// The same for a change to another structure (the reservation map): fences on
        /// both sides.
        #[test]
        fn a_hold_a_snapshot_misses_leaves_the_flag_set() {
            loom::model(|| {
                let map = Arc::new(AtomicBool::new(false));
                let dirty = Arc::new(AtomicBool::new(true));
                let holder = {
                    let (map, dirty) = (Arc::clone(&map), Arc::clone(&dirty));
                    loom::thread::spawn(move || {
                        map.store(true, Ordering::Relaxed);
                        loom::sync::atomic::fence(Ordering::SeqCst);
                        if !dirty.load(Ordering::Relaxed) {
                            dirty.store(true, Ordering::Relaxed);
                        }
                    })
                };
                dirty.store(false, Ordering::Relaxed);
                loom::sync::atomic::fence(Ordering::SeqCst);
                let seen = map.load(Ordering::Relaxed);
                holder.join().unwrap();
                assert!(seen || dirty.load(Ordering::Relaxed));
            });
        }

        /// A hold is committed by one thread while it expires on another and a third
        /// thread debits: the hold resolves exactly once (the `resolved` flag stands for
        /// the reservation map's remove-once), and the row never exceeds its total.
        #[test]
        fn reserve_commit_expire_resolve_once() {
            loom::model(|| {
                let total = 10;
                let cell = Arc::new(LoomUsage(AtomicU64::new(0)));
                assert!(try_hold(&*cell, total, 6).is_ok());
                let resolved = Arc::new(AtomicBool::new(false));
                let commit = {
                    let (cell, resolved) = (Arc::clone(&cell), Arc::clone(&resolved));
                    loom::thread::spawn(move || {
                        if !resolved.swap(true, Ordering::AcqRel) {
                            settle(&*cell, 6, 4);
                            return true;
                        }
                        false
                    })
                };
                let expire = {
                    let (cell, resolved) = (Arc::clone(&cell), Arc::clone(&resolved));
                    loom::thread::spawn(move || {
                        if !resolved.swap(true, Ordering::AcqRel) {
                            settle(&*cell, 6, 0);
                        }
                    })
                };
                let debit = {
                    let cell = Arc::clone(&cell);
                    loom::thread::spawn(move || {
                        let u = cell.load();
                        assert!(u.spent + u.reserved <= total);
                        try_debit(&*cell, total, 5).is_ok()
                    })
                };
                let committed = commit.join().unwrap();
                expire.join().unwrap();
                let debited = debit.join().unwrap();
                let end = cell.load();
                assert_eq!(end.reserved, 0);
                let expected = u64::from(committed) * 4 + u64::from(debited) * 5;
                assert_eq!(end.spent, expected);
                assert!(end.spent <= total);
            });
        }
    }
}
