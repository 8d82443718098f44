//! Applying events: idempotent (duplicate ids are skipped), order-tolerant (fields are
//! last-writer-wins by event timestamp, periods only move forward, `canceled` is
//! terminal), and whole or not at all.

use super::names::Names;
use super::row::{Meta, Row};
use super::subscriptions::SubState;
use super::usage::UsageItem;
use super::writer::Writer;
use super::{Id, Table};
use crate::counters::Usage;
use crate::dedupe::id_hash;
use crate::error::Error;
use crate::event::{self, Created, Event, InvoicePaid, Kind, Status, Updated};
use crate::routing::Replicated;
use crate::spelling::spelled_enum;
use std::sync::atomic::Ordering;
use std::sync::Arc;

spelled_enum! {
    /// What applying an event did (`billing_gateway.ApplyOutcome`).
    pub enum Outcome {
        Applied = "applied",
        Duplicate = "duplicate",
        Stale = "stale",
        Parked = "parked",
        Ignored = "ignored",
    }
}

impl Outcome {
    fn of_change(changed: bool) -> Self {
        if changed {
            Outcome::Applied
        } else {
            Outcome::Stale
        }
    }
}

impl Table {
    /// Applies one JSON event. Malformed input or an event that contradicts the
    /// table (another customer's subscription, another currency) is an error and
    /// changes nothing.
    pub fn apply(&self, raw: &[u8]) -> Result<Outcome, Error> {
        let ev = event::parse(raw)?;
        let hash = id_hash(&ev.id);
        let mut w = self.writer.lock();
        if w.dedupe.contains(hash) {
            return Ok(Outcome::Duplicate);
        }
        let outcome = match ev.kind {
            Kind::PolicyUpserted(_) | Kind::PolicyDeleted(_) => {
                self.apply_policy(ev.ts, hash, ev.kind)
            }
            _ => self.apply_event(&mut w, &ev, raw)?,
        };
        w.dedupe.insert(hash);
        self.mark_dirty();
        Ok(outcome)
    }

    /// A replicated policy upsert or delete: last-writer-wins per policy id.
    fn apply_policy(&self, ts: i64, hash: u128, kind: Kind<'_>) -> Outcome {
        let (id, policy) = match kind {
            Kind::PolicyUpserted(p) => (p.def.id.clone(), Some(Arc::from(p))),
            Kind::PolicyDeleted(id) => (id.into_owned(), None),
            _ => return Outcome::Ignored,
        };
        let event = Replicated {
            ts,
            tiebreak: hash,
            policy,
        };
        Outcome::of_change(self.routing.apply_event(&id, event))
    }

    fn apply_event(&self, w: &mut Writer, ev: &Event<'_>, raw: &[u8]) -> Result<Outcome, Error> {
        let Some(sub) = ev.kind.subscription() else {
            return Ok(Outcome::Ignored);
        };
        if let Kind::Created(c) = &ev.kind {
            return self.apply_created(w, ev.ts, c);
        }
        let (tenant, row) = match w.subs.get(sub) {
            SubState::Unknown => {
                let c = self.config;
                w.parking
                    .admit(sub, raw, c.max_parked, c.max_parked_bytes)?;
                return Ok(Outcome::Parked);
            }
            SubState::Superseded(tenant) => (tenant, None),
            SubState::Current(row) => (row.tenant.as_str(), Some(row)),
        };
        if let Some(customer) = ev.kind.customer() {
            check_customer(sub, tenant, customer)?;
        }
        let Some(row) = row else {
            // The tenant's row follows a newer subscription: nothing to do.
            return Ok(Outcome::Stale);
        };
        let changed = match &ev.kind {
            Kind::Updated(u) => apply_update(row, &mut self.names.write(), ev.ts, u),
            Kind::InvoicePaid(p) => apply_paid(row, &mut w.journal, p),
            Kind::PaymentFailed(_) => {
                set_status(row, &mut row.meta.lock(), Status::PastDue, ev.ts, true)
            }
            _ => false,
        };
        Ok(Outcome::of_change(changed))
    }

    fn apply_created(&self, w: &mut Writer, ts: i64, c: &Created<'_>) -> Result<Outcome, Error> {
        match w.subs.get(&c.subscription_id) {
            SubState::Current(row) => {
                check_customer(&c.subscription_id, &row.tenant, &c.customer_id)?;
                let changed = merge_known(row, &mut self.names.write(), ts, c)?;
                return Ok(Outcome::of_change(changed));
            }
            SubState::Superseded(tenant) => {
                check_customer(&c.subscription_id, tenant, &c.customer_id)?;
                return Ok(Outcome::Stale);
            }
            SubState::Unknown => {}
        }
        let period = (c.period_start, c.period_end);
        let Some(row) = self.tenants.get(&c.customer_id) else {
            let meta = Meta::created(c, ts, &mut self.names.write());
            let row = Row::new(
                Id::from(&*c.customer_id),
                meta,
                c.total,
                period,
                c.status,
                Usage::default(),
            );
            let row = self
                .tenants
                .insert(row)
                .unwrap_or_else(|_| unreachable!("the tenant was absent"));
            w.subs.follow(&c.subscription_id, row);
            self.replay_parked(w, &c.subscription_id);
            return Ok(Outcome::Applied);
        };
        // The row follows the newest subscription.created (ties: the larger id).
        let previous = {
            // Lock order everywhere: names, then a row's meta.
            let mut names = self.names.write();
            let mut meta = row.meta.lock();
            if (ts, &*c.subscription_id) <= (meta.stamps.created, meta.subscription_id.as_str()) {
                None
            } else {
                row.close_period(&mut meta, &mut w.journal);
                let previous = std::mem::replace(&mut *meta, Meta::created(c, ts, &mut names));
                row.total.store(c.total, Ordering::Release);
                row.status.store(c.status as u8, Ordering::Relaxed);
                row.set_period(period.0, period.1);
                Some(previous.subscription_id)
            }
        };
        match previous {
            Some(old) => {
                w.subs.supersede(&old, row);
                w.subs.follow(&c.subscription_id, row);
                self.replay_parked(w, &c.subscription_id);
                Ok(Outcome::Applied)
            }
            None => {
                w.subs.add_superseded(&c.subscription_id, &row.tenant);
                w.parking.take(&c.subscription_id);
                Ok(Outcome::Stale)
            }
        }
    }

    /// Applies, in arrival order, the events that waited for `sub` to be created.
    /// One that now contradicts the table (another customer) is dropped.
    fn replay_parked(&self, w: &mut Writer, sub: &str) {
        for parked in w.parking.take(sub) {
            if let Ok(ev) = event::parse(&parked.raw) {
                let _ = self.apply_event(w, &ev, &parked.raw);
            }
        }
    }
}

fn check_customer(sub: &str, tenant: &str, customer: &str) -> Result<(), Error> {
    if tenant == customer {
        return Ok(());
    }
    Err(Error::InvalidEvent(format!(
        "data.customer_id: subscription {sub} belongs to customer {tenant}, not {customer}"
    )))
}

/// Writes `ts` as the field's timestamp when it is newer (or equal, for updates,
/// which win ties against the `subscription.created` they follow).
fn lww(field_ts: &mut i64, ts: i64, wins_tie: bool) -> bool {
    let newer = ts > *field_ts || (wins_tie && ts == *field_ts);
    if newer {
        *field_ts = ts;
    }
    newer
}

/// `subscription.created` for the row's own subscription: fields it carries win only
/// when newer; the newest period wins; spend is never reset.
fn merge_known(row: &Row, names: &mut Names, ts: i64, c: &Created<'_>) -> Result<bool, Error> {
    let mut meta = row.meta.lock();
    if meta.currency != c.currency {
        return Err(Error::InvalidEvent(format!(
            "data.currency: subscription {} is in {}, not {}",
            c.subscription_id,
            String::from_utf8_lossy(&meta.currency),
            String::from_utf8_lossy(&c.currency)
        )));
    }
    let mut changed = false;
    if lww(&mut meta.stamps.plan_id, ts, false) {
        meta.plan_id = names.id(&c.plan_id);
        changed = true;
    }
    if lww(&mut meta.stamps.plan_name, ts, false) {
        meta.plan_name = names.id(&c.plan_name);
        changed = true;
    }
    if lww(&mut meta.stamps.total, ts, false) {
        row.total.store(c.total, Ordering::Release);
        changed = true;
    }
    changed |= set_status(row, &mut meta, c.status, ts, false);
    if c.period_start > row.period_start.load(Ordering::Relaxed) {
        row.set_period(c.period_start, c.period_end);
        changed = true;
    }
    Ok(changed)
}

fn apply_update(row: &Row, names: &mut Names, ts: i64, u: &Updated<'_>) -> bool {
    let mut meta = row.meta.lock();
    let mut changed = false;
    if let Some(plan_id) = &u.plan_id {
        if lww(&mut meta.stamps.plan_id, ts, true) {
            meta.plan_id = names.id(plan_id);
            changed = true;
        }
    }
    if let Some(plan_name) = &u.plan_name {
        if lww(&mut meta.stamps.plan_name, ts, true) {
            meta.plan_name = names.id(plan_name);
            changed = true;
        }
    }
    if let Some(total) = u.total {
        if lww(&mut meta.stamps.total, ts, true) {
            row.total.store(total, Ordering::Release);
            changed = true;
        }
    }
    if let Some(status) = u.status {
        changed |= set_status(row, &mut meta, status, ts, true);
    }
    changed
}

/// Sets the status by its rule: `canceled` is terminal and wins whatever its timestamp
/// (so replicas agree whatever the arrival order); other statuses are last-writer-wins
/// among themselves. Returns whether the status changed.
fn set_status(row: &Row, meta: &mut Meta, status: Status, ts: i64, wins_tie: bool) -> bool {
    if row.status() == Status::Canceled {
        return false;
    }
    let applies = if status == Status::Canceled {
        meta.stamps.status = meta.stamps.status.max(ts);
        true
    } else {
        lww(&mut meta.stamps.status, ts, wins_tie)
    };
    if applies {
        row.status.store(status as u8, Ordering::Relaxed);
    }
    applies
}

/// `invoice.paid` opens a period only if it is newer than the row's; then spend resets.
fn apply_paid(row: &Row, journal: &mut Vec<UsageItem>, p: &InvoicePaid<'_>) -> bool {
    if p.period_start <= row.period_start.load(Ordering::Relaxed) {
        return false;
    }
    let mut meta = row.meta.lock();
    row.close_period(&mut meta, journal);
    row.set_period(p.period_start, p.period_end);
    true
}
