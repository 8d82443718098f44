//! Budget leases: a per-row allowance that bounds local admission when the table shares
//! its budgets with other replicas (`billing_gateway.leases`).
//!
//! The allowance is a ceiling on the row's `spent + reserved` in the current period: the
//! share of the tenant's budget this replica was granted. Raising it is always safe. The
//! hot path reads it once before its CAS and once after: a spend whose CAS lands after a
//! concurrent [`Table::shrink_allowance`] lowered the ceiling sees the lower value and
//! undoes itself, or else the shrink sees the spend and returns less (both sides are
//! sequentially consistent: a Dekker pair, so at least one of them sees the other).

use super::{Id, Reason, Table};
use crate::counters::{AtomicUsage, Usage, UsageCell};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};

/// A row's share of the shared budget.
#[derive(Debug, Default)]
pub(super) struct Lease {
    /// The most `spent + reserved` may reach in this period (0 until granted).
    allowance: AtomicU64,
    /// The shared budget had no room left at the last grant: a refusal is then
    /// `InsufficientBudget`, not `LeaseExhausted`.
    exhausted: AtomicBool,
    /// A spend found the slice used up since the lease layer last looked.
    wanted: AtomicBool,
}

impl Lease {
    /// The admission limit given the row's own total.
    #[inline]
    pub(super) fn bound(&self, total: u64) -> u64 {
        total.min(self.allowance.load(Ordering::SeqCst))
    }

    /// Whether `after` (the counters just written) is still within the allowance.
    #[inline]
    pub(super) fn covers(&self, after: Usage) -> bool {
        after.spent.saturating_add(after.reserved) <= self.allowance.load(Ordering::SeqCst)
    }

    /// Why a spend the allowance (not the total) refused was refused; a refill is then
    /// wanted (`wants` is the table's flag that some row wants one).
    #[cold]
    pub(super) fn refusal(&self, wants: &AtomicBool) -> Reason {
        if self.exhausted.load(Ordering::Relaxed) {
            return Reason::InsufficientBudget;
        }
        if !self.wanted.load(Ordering::Relaxed) {
            self.wanted.store(true, Ordering::Relaxed);
        }
        if !wants.load(Ordering::Relaxed) {
            wants.store(true, Ordering::Release);
        }
        Reason::LeaseExhausted
    }

    /// Closes the period: nothing is admitted until [`Lease::open`].
    pub(super) fn close(&self) {
        self.allowance.store(0, Ordering::SeqCst);
    }

    /// Opens a period whose counters hold `carried` (the holds that outlive the old one):
    /// nothing beyond them until a grant for the new period.
    pub(super) fn open(&self, carried: u64) {
        self.allowance.store(carried, Ordering::SeqCst);
        self.exhausted.store(false, Ordering::Relaxed);
    }
}

/// What the lease layer reads of a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseState {
    pub total: u64,
    /// The timestamp of the event that set `total` (last-writer-wins in Redis too).
    pub total_stamp: i64,
    pub period_start: i64,
    pub spent: u64,
    pub reserved: u64,
    pub allowance: u64,
}

fn used(cell: &AtomicUsage) -> u64 {
    let u = cell.load();
    u.spent.saturating_add(u.reserved)
}

impl Table {
    /// Bounds every row by its allowance from now on; each starts at what it already
    /// used (nothing more until granted). Rows created later start at zero.
    pub fn attach_leases(&self) {
        for row in self.tenants.iter() {
            let _meta = row.meta.lock();
            row.lease.open(used(&row.usage));
        }
        self.leased.store(true, Ordering::SeqCst);
    }

    /// The tenants whose slice a spend found used up since the last call (clearing that).
    pub fn take_lease_wants(&self) -> Vec<Id> {
        if !self.lease_wanted.swap(false, Ordering::Acquire) {
            return Vec::new();
        }
        self.tenants
            .iter()
            .filter(|row| row.lease.wanted.swap(false, Ordering::Relaxed))
            .map(|row| row.tenant.clone())
            .collect()
    }

    /// What the lease layer needs to know of `tenant`'s row.
    pub fn lease_state(&self, tenant: &str) -> Option<LeaseState> {
        let row = self.tenants.get(tenant)?;
        let meta = row.meta.lock();
        let usage = row.usage.load();
        Some(LeaseState {
            total: row.total.load(Ordering::Acquire),
            total_stamp: meta.stamps.total,
            period_start: row.period_start.load(Ordering::Relaxed),
            spent: usage.spent,
            reserved: usage.reserved,
            allowance: row.lease.allowance.load(Ordering::SeqCst),
        })
    }

    /// Raises the allowance of `tenant` for the period starting at `period_start` to
    /// `allowance` (never lowers it); `exhausted` records that the shared budget had no
    /// more room. False when the row is gone or has moved to another period.
    pub fn grant_allowance(
        &self,
        tenant: &str,
        period_start: i64,
        allowance: u64,
        exhausted: bool,
    ) -> bool {
        self.with_period(tenant, period_start, |lease, _| {
            lease.allowance.fetch_max(allowance, Ordering::SeqCst);
            lease.exhausted.store(exhausted, Ordering::Relaxed);
        })
        .is_some()
    }

    /// Lowers the allowance of `tenant` (period `period_start`) to `to`, or to what the
    /// row has used if that is more, and returns the resulting allowance: what the
    /// replica still holds. `None` when the row is gone or has moved to another period.
    pub fn shrink_allowance(&self, tenant: &str, period_start: i64, to: u64) -> Option<u64> {
        self.with_period(tenant, period_start, |lease, cell| {
            lease.allowance.fetch_min(to, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let floor = to.max(used(cell));
            lease
                .allowance
                .fetch_max(floor, Ordering::SeqCst)
                .max(floor)
        })
    }

    /// Runs `f` on the row's lease under its meta lock (which period changes hold), if
    /// the row is still in the period starting at `period_start`.
    fn with_period<T>(
        &self,
        tenant: &str,
        period_start: i64,
        f: impl FnOnce(&Lease, &AtomicUsage) -> T,
    ) -> Option<T> {
        let row = self.tenants.get(tenant)?;
        let _meta = row.meta.lock();
        (row.period_start.load(Ordering::Relaxed) == period_start)
            .then(|| f(&row.lease, &row.usage))
    }
}
