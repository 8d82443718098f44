//! What a spend check answers.

use crate::spelling::spelled_enum;

spelled_enum! {
    /// Why a spend was allowed or refused (`billing_gateway.Reason`).
    pub enum Reason {
        Ok = "ok",
        InsufficientBudget = "insufficient_budget",
        UnknownTenant = "unknown_tenant",
        Inactive = "inactive",
        PeriodEnded = "period_ended",
        /// The replica's lease slice is used up; the shared budget may still have room.
        LeaseExhausted = "lease_exhausted",
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Decision {
    pub allowed: bool,
    pub reason: Reason,
    pub remaining: u64,
    pub reservation_id: Option<u64>,
}

impl Decision {
    pub(super) fn allow(remaining: u64) -> Self {
        Self {
            allowed: true,
            reason: Reason::Ok,
            remaining,
            reservation_id: None,
        }
    }

    pub(super) fn refuse(reason: Reason, remaining: u64) -> Self {
        Self {
            allowed: false,
            reason,
            remaining,
            reservation_id: None,
        }
    }
}
