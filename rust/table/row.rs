//! One tenant's row. The fields the hot path reads are atomics; the rest sits behind a
//! small mutex that only writers and `budget()` readers take.

use super::lease::Lease;
use super::names::Names;
use super::usage::UsageItem;
use super::{Id, Reason};
use crate::counters::{self, AtomicUsage, Usage, UsageCell};
use crate::event::{Created, Status};
use crate::index::Keyed;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

pub(super) struct Row {
    pub(super) usage: AtomicUsage,
    pub(super) total: AtomicU64,
    pub(super) period_start: AtomicI64,
    pub(super) period_end: AtomicI64,
    pub(super) status: AtomicU8,
    /// The replica's share of the tenant's budget, when leases are attached.
    pub(super) lease: Lease,
    pub(super) tenant: Id,
    pub(super) meta: Mutex<Meta>,
}

impl Keyed for Row {
    fn key(&self) -> &str {
        &self.tenant
    }
}

/// A row's cold fields.
pub(super) struct Meta {
    pub(super) subscription_id: Id,
    /// Index into [`Names`] (plans are shared by many rows).
    pub(super) plan_id: u32,
    pub(super) plan_name: u32,
    pub(super) currency: [u8; 3],
    pub(super) stamps: Stamps,
    /// Spend of the current period already handed out by `drain_usage`.
    pub(super) drained: u64,
}

/// The timestamps of the row's `subscription.created` and of the event that last wrote
/// each last-writer-wins field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamps {
    pub(crate) created: i64,
    pub(crate) plan_id: i64,
    pub(crate) plan_name: i64,
    pub(crate) total: i64,
    pub(crate) status: i64,
}

/// Everything about a row, as plain values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetView {
    pub tenant_id: Id,
    pub subscription_id: Id,
    pub plan_id: Arc<str>,
    pub plan_name: Arc<str>,
    pub currency: [u8; 3],
    pub total: u64,
    pub spent: u64,
    pub reserved: u64,
    pub remaining: u64,
    pub period_start: i64,
    pub period_end: i64,
    pub status: Status,
}

impl Meta {
    /// The cold fields of a row that follows subscription `sub` from its creation.
    pub(super) fn created(c: &Created<'_>, ts: i64, names: &mut Names) -> Self {
        Meta {
            subscription_id: Id::from(&*c.subscription_id),
            plan_id: names.id(&c.plan_id),
            plan_name: names.id(&c.plan_name),
            currency: c.currency,
            stamps: Stamps {
                created: ts,
                plan_id: ts,
                plan_name: ts,
                total: ts,
                status: ts,
            },
            drained: 0,
        }
    }
}

impl Row {
    pub(super) fn new(
        tenant: Id,
        meta: Meta,
        total: u64,
        period: (i64, i64),
        status: Status,
        usage: Usage,
    ) -> Self {
        Self {
            usage: AtomicUsage::new(usage),
            total: AtomicU64::new(total),
            period_start: AtomicI64::new(period.0),
            period_end: AtomicI64::new(period.1),
            status: AtomicU8::new(status as u8),
            lease: Lease::default(),
            tenant,
            meta: Mutex::new(meta),
        }
    }

    #[inline]
    pub(super) fn status(&self) -> Status {
        Status::from_code(self.status.load(Ordering::Relaxed)).unwrap_or(Status::Canceled)
    }

    /// Why this row may not spend right now, if it may not.
    #[inline]
    pub(super) fn refusal(&self, now: i64, grace_us: i64) -> Option<Reason> {
        if !self.status().may_spend() {
            return Some(Reason::Inactive);
        }
        let end = self.period_end.load(Ordering::Relaxed);
        if now >= end.saturating_add(grace_us) {
            return Some(Reason::PeriodEnded);
        }
        None
    }

    pub(super) fn view(&self, names: &Names) -> BudgetView {
        let meta = self.meta.lock();
        let total = self.total.load(Ordering::Acquire);
        let usage = self.usage.load();
        BudgetView {
            tenant_id: self.tenant.clone(),
            subscription_id: meta.subscription_id.clone(),
            plan_id: Arc::clone(names.get(meta.plan_id)),
            plan_name: Arc::clone(names.get(meta.plan_name)),
            currency: meta.currency,
            total,
            spent: usage.spent,
            reserved: usage.reserved,
            remaining: usage.remaining(total),
            period_start: self.period_start.load(Ordering::Relaxed),
            period_end: self.period_end.load(Ordering::Relaxed),
            status: self.status(),
        }
    }

    /// Starts a new period (or a new subscription): zeroes spend, keeps holds, and
    /// journals the spend not yet drained under the subscription and period it belongs to.
    /// A lease allowance starts over too: the new period is a new shared budget.
    pub(super) fn close_period(&self, meta: &mut Meta, journal: &mut Vec<UsageItem>) {
        self.lease.close();
        let spent = counters::reset_spent(&self.usage);
        self.lease.open(self.usage.load().reserved);
        let undrained = spent.saturating_sub(meta.drained);
        if undrained > 0 {
            journal.push(UsageItem {
                tenant_id: self.tenant.clone(),
                subscription_id: meta.subscription_id.clone(),
                period_start: self.period_start.load(Ordering::Relaxed),
                amount: undrained,
            });
        }
        meta.drained = 0;
    }

    pub(super) fn set_period(&self, start: i64, end: i64) {
        self.period_start.store(start, Ordering::Relaxed);
        self.period_end.store(end, Ordering::Relaxed);
    }
}
