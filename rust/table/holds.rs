//! Two-phase spend: holds (reservations) with a TTL, committed, released or expired
//! exactly once, whichever comes first.

use super::resolved::Resolved;
use super::{Decision, Hasher, Id, Table};
use crate::counters;
use crate::error::{Error, Unresolvable};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// A hold on a row's budget.
#[derive(Clone)]
pub(crate) struct Reservation {
    /// The tenant held against; `None` for an unknown tenant admitted by `allow_unknown`.
    pub(crate) tenant: Option<Id>,
    pub(crate) amount: u64,
    pub(crate) expires_at: i64,
}

/// The outstanding holds of a table and what it needs to expire them and to tell why an
/// id is no longer outstanding.
pub(super) struct Holds {
    pub(super) outstanding: papaya::HashMap<u64, Reservation, Hasher>,
    /// The id the next reservation gets; ids count up from 1.
    pub(super) next_id: AtomicU64,
    /// A lower bound of the earliest expiry among outstanding reservations.
    next_expiry: AtomicI64,
    sweeping: Mutex<()>,
    resolved: Resolved,
}

impl Default for Holds {
    fn default() -> Self {
        Self {
            outstanding: papaya::HashMap::default(),
            next_id: AtomicU64::new(1),
            next_expiry: AtomicI64::new(i64::MAX),
            sweeping: Mutex::new(()),
            resolved: Resolved::default(),
        }
    }
}

impl Table {
    /// Holds `amount` for `ttl_us`; the decision carries the reservation id when allowed.
    pub fn reserve(&self, tenant: &str, amount: u64, ttl_us: i64) -> Decision {
        let now = self.clock.now();
        let (row, mut decision) =
            self.admit_at(now, tenant, amount, counters::try_hold, |cell, amount| {
                counters::settle(cell, amount, 0);
            });
        if decision.allowed {
            let id = self.holds.next_id.fetch_add(1, Ordering::Relaxed);
            let expires_at = now.saturating_add(ttl_us);
            let reservation = Reservation {
                tenant: row.map(|r| r.tenant.clone()),
                amount,
                expires_at,
            };
            self.holds.outstanding.pin().insert(id, reservation);
            self.expire_after(expires_at);
            self.mark_dirty_fenced();
            decision.reservation_id = Some(id);
        }
        decision
    }

    /// Posts `actual` (<= the reserved amount) and releases the rest.
    pub fn commit(&self, id: u64, actual: u64) -> Result<(), Error> {
        self.resolve(id, Some(actual))
    }

    /// Voids a hold.
    pub fn release(&self, id: u64) -> Result<(), Error> {
        self.resolve(id, None)
    }

    fn resolve(&self, id: u64, actual: Option<u64>) -> Result<(), Error> {
        let now = self.clock.now();
        let outstanding = self.holds.outstanding.pin();
        let found = outstanding
            .get(&id)
            .ok_or_else(|| self.not_outstanding(id))?;
        if found.expires_at <= now {
            self.settle(id, outstanding.remove(&id), 0, Unresolvable::Expired);
            return Err(Error::unknown_reservation(id, Unresolvable::Expired));
        }
        if let Some(actual) = actual.filter(|&a| a > found.amount) {
            return Err(Error::InvalidAmount(format!(
                "actual {actual} exceeds the {} micro-units reserved by reservation {id}",
                found.amount
            )));
        }
        // Whoever removes the reservation resolves it: commit, release and expiry race safely.
        match outstanding.remove(&id) {
            Some(removed) => {
                let fate = match actual {
                    Some(_) => Unresolvable::Committed,
                    None => Unresolvable::Released,
                };
                self.settle(id, Some(removed), actual.unwrap_or(0), fate);
                Ok(())
            }
            None => Err(self.not_outstanding(id)),
        }
    }

    /// Why `id` is not an outstanding reservation (as far as the table remembers).
    fn not_outstanding(&self, id: u64) -> Error {
        Error::unknown_reservation(id, self.holds.resolved.get(id))
    }

    /// Applies the resolution of reservation `id` if this caller removed it.
    fn settle(&self, id: u64, removed: Option<&Reservation>, actual: u64, fate: Unresolvable) {
        let Some(removed) = removed else {
            return;
        };
        let held_on = removed.tenant.as_deref().and_then(|t| self.tenants.get(t));
        if let Some(row) = held_on {
            counters::settle(&row.usage, removed.amount, actual);
        }
        self.holds.resolved.record(id, fate);
        self.mark_dirty_fenced();
    }

    /// Notes that a reservation expires at `at` (after inserting it).
    pub(super) fn expire_after(&self, at: i64) {
        self.holds.next_expiry.fetch_min(at, Ordering::SeqCst);
    }

    /// Releases expired reservations when the earliest one is due. Off the fast path
    /// except at the moment something has expired.
    #[inline]
    pub(super) fn expire_due(&self, now: i64) {
        if now >= self.holds.next_expiry.load(Ordering::Relaxed) {
            self.sweep(now);
        }
    }

    #[cold]
    #[inline(never)]
    fn sweep(&self, now: i64) {
        let Some(_sweeping) = self.holds.sweeping.try_lock() else {
            return;
        };
        // Reset first: a reservation inserted meanwhile lowers the bound again after this.
        self.holds.next_expiry.store(i64::MAX, Ordering::SeqCst);
        let outstanding = self.holds.outstanding.pin();
        for (id, r) in &outstanding {
            if r.expires_at <= now {
                self.settle(*id, outstanding.remove(id), 0, Unresolvable::Expired);
            } else {
                self.holds
                    .next_expiry
                    .fetch_min(r.expires_at, Ordering::SeqCst);
            }
        }
    }
}
