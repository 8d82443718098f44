//! How recently resolved reservations ended, so that a late commit or release can say
//! which case it is (expired, already committed, already released) instead of "unknown".
//!
//! Bounded and lock-free: ids count up, and slot `id % REMEMBERED` holds the fate of the
//! last id resolved among those sharing it, packed with the id in one 64-bit word. An id
//! is remembered until one `REMEMBERED` later is resolved, then it is unknown again. A
//! resolution is one relaxed store; a lookup (only when an id is not outstanding), one load.

use crate::error::Unresolvable;
use std::alloc::{alloc_zeroed, handle_alloc_error, Layout};
use std::sync::atomic::{AtomicU64, Ordering};

/// How many resolutions are remembered: 512 KiB per table, which the OS commits as ids
/// advance through the slots.
pub(super) const REMEMBERED: usize = 1 << 16;

/// Ids from here on cannot be packed beside their fate, so are not remembered (from 1,
/// 2^62 ids take a century at a billion reservations a second).
const PACKABLE: u64 = 1 << 62;

pub(super) struct Resolved {
    slots: Box<[AtomicU64]>,
}

impl Default for Resolved {
    fn default() -> Self {
        let layout = Layout::array::<AtomicU64>(REMEMBERED).expect("a fixed, small array");
        // SAFETY: the layout is not empty; all-zero bytes are a valid AtomicU64 (it has the
        // bit validity of u64), and the box frees the memory with this same layout.
        let slots = unsafe {
            let p = alloc_zeroed(layout).cast::<AtomicU64>();
            if p.is_null() {
                handle_alloc_error(layout);
            }
            Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, REMEMBERED))
        };
        Self { slots }
    }
}

impl Resolved {
    /// Notes how reservation `id` ended.
    pub(super) fn record(&self, id: u64, fate: Unresolvable) {
        debug_assert!(fate != Unresolvable::Unknown);
        if id < PACKABLE {
            self.slot(id)
                .store(id << 2 | fate as u64, Ordering::Relaxed);
        }
    }

    /// How reservation `id` ended, if it is remembered; `Unknown` otherwise.
    pub(super) fn get(&self, id: u64) -> Unresolvable {
        let word = self.slot(id).load(Ordering::Relaxed);
        if id < PACKABLE && word >> 2 == id {
            Unresolvable::ALL[(word & 3) as usize]
        } else {
            Unresolvable::Unknown
        }
    }

    fn slot(&self, id: u64) -> &AtomicU64 {
        &self.slots[id as usize & (REMEMBERED - 1)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_until_the_slot_is_reused() {
        let r = Resolved::default();
        assert_eq!(r.get(7), Unresolvable::Unknown);
        r.record(7, Unresolvable::Committed);
        r.record(8, Unresolvable::Released);
        r.record(9, Unresolvable::Expired);
        assert_eq!(
            [r.get(7), r.get(8), r.get(9), r.get(10)],
            [
                Unresolvable::Committed,
                Unresolvable::Released,
                Unresolvable::Expired,
                Unresolvable::Unknown
            ]
        );
        let later = 7 + REMEMBERED as u64;
        assert_eq!(r.get(later), Unresolvable::Unknown, "same slot, other id");
        r.record(later, Unresolvable::Released);
        assert_eq!(r.get(7), Unresolvable::Unknown, "forgotten");
        assert_eq!(r.get(later), Unresolvable::Released);
        r.record(PACKABLE, Unresolvable::Committed);
        assert_eq!(r.get(PACKABLE), Unresolvable::Unknown);
        assert_eq!(r.get(0), Unresolvable::Unknown, "an empty slot");
        assert_eq!(r.get(u64::MAX), Unresolvable::Unknown);
    }
}
