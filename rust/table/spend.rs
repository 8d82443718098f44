//! The hot path: spend checks and debits. Lock-free, allocation-free, no I/O.

use super::row::Row;
use super::{Decision, Reason, Table};
use crate::counters::{self, AtomicUsage, Usage, UsageCell};
use std::sync::atomic::Ordering;

impl Table {
    /// Atomically checks and debits `amount`. Lock-free; allocates nothing.
    #[inline]
    pub fn try_spend(&self, tenant: &str, amount: u64) -> bool {
        self.spend(tenant, amount).allowed
    }

    #[inline]
    pub fn spend(&self, tenant: &str, amount: u64) -> Decision {
        let decision = self.admit(tenant, amount, counters::try_debit, counters::undo_debit);
        if decision.reason == Reason::Ok && amount != 0 {
            self.mark_dirty();
        }
        decision
    }

    /// Whether `spend` would be allowed now; debits nothing.
    #[inline]
    pub fn check(&self, tenant: &str, amount: u64) -> Decision {
        self.admit(
            tenant,
            amount,
            |cell: &AtomicUsage, total, amount| {
                let usage = cell.load();
                if usage.admits(total, amount) {
                    Ok(usage)
                } else {
                    Err(usage)
                }
            },
            |_, _| {},
        )
    }

    #[inline]
    fn admit(
        &self,
        tenant: &str,
        amount: u64,
        op: impl FnOnce(&AtomicUsage, u64, u64) -> Result<Usage, Usage>,
        undo: impl FnOnce(&AtomicUsage, u64),
    ) -> Decision {
        self.admit_at(self.clock.now(), tenant, amount, op, undo).1
    }

    /// The decision for `tenant` at `now`, with `op` (a debit, a hold or a look) applied
    /// to the row's counters when nothing else refuses it; with the row, if there is one.
    /// With leases attached the limit is `min(total, allowance)`, and `undo` takes back
    /// an `op` that a concurrent shrink of the allowance no longer covers.
    #[inline]
    pub(super) fn admit_at(
        &self,
        now: i64,
        tenant: &str,
        amount: u64,
        op: impl FnOnce(&AtomicUsage, u64, u64) -> Result<Usage, Usage>,
        undo: impl FnOnce(&AtomicUsage, u64),
    ) -> (Option<&Row>, Decision) {
        self.expire_due(now);
        let Some(row) = self.tenants.get(tenant) else {
            return (None, self.unknown_tenant());
        };
        let total = row.total.load(Ordering::Acquire);
        let leased = self.leased.load(Ordering::Relaxed);
        let limit = if leased {
            row.lease.bound(total)
        } else {
            total
        };
        let decision = if let Some(reason) = row.refusal(now, self.config.grace_us) {
            Decision::refuse(reason, row.usage.load().remaining(limit))
        } else {
            match op(&row.usage, limit, amount) {
                Ok(after) if leased && !row.lease.covers(after) => {
                    undo(&row.usage, amount);
                    self.mark_dirty();
                    Decision::refuse(row.lease.refusal(&self.lease_wanted), 0)
                }
                Ok(after) => Decision::allow(after.remaining(limit)),
                Err(found) if limit < total => Decision::refuse(
                    row.lease.refusal(&self.lease_wanted),
                    found.remaining(limit),
                ),
                Err(found) => Decision::refuse(Reason::InsufficientBudget, found.remaining(total)),
            }
        };
        (Some(row), decision)
    }

    fn unknown_tenant(&self) -> Decision {
        Decision {
            allowed: self.config.allow_unknown,
            reason: Reason::UnknownTenant,
            remaining: 0,
            reservation_id: None,
        }
    }
}
