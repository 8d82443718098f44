//! All a snapshot reads from a table and all it gives back to rebuild one: the snapshot
//! format ([`crate::snapshot`]) sees these value types and nothing of the table's insides.
//!
//! [`Export`] is a consistent view of a table, taken under the writer lock. [`Import`]
//! rebuilds a table part by part, in the order snapshots hold them, and refuses a part
//! that breaks the table's invariants (one row per tenant and per subscription, holds on
//! known rows within range, parked events within their bounds, ...). Each refusal is a
//! short description; whether values are in range (ids, timestamps, amounts) is the
//! format's to check before it hands them over.

use super::holds::Reservation;
use super::names::Names;
use super::row::{Meta, Row, Stamps};
use super::subscriptions::SubState;
use super::usage::UsageItem;
use super::writer::Writer;
use super::{Config, Id, Table};
use crate::counters::{self, Usage};
use crate::event::{self, Status};
use crate::money::MAX_MICROS;
use crate::routing::{Policy, Replicated, RoutingTable};
use parking_lot::{MutexGuard, RwLockReadGuard};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A table's scalars (the cursor is the caller's: the position the snapshot reflects).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) config: Config,
    /// Distinguishes the table's usage idempotency keys from other replicas'.
    pub(crate) instance: u64,
    /// How many drains handed out usage.
    pub(crate) drain_seq: u64,
    /// The id the next reservation gets.
    pub(crate) next_reservation: u64,
}

/// A row as snapshots hold it.
pub(crate) struct RowImage<'a> {
    pub(crate) tenant: &'a str,
    pub(crate) subscription_id: &'a str,
    /// Indexes into the plan names.
    pub(crate) plan_id: u32,
    pub(crate) plan_name: u32,
    pub(crate) currency: [u8; 3],
    pub(crate) status: Status,
    pub(crate) total: u64,
    pub(crate) spent: u64,
    pub(crate) period: (i64, i64),
    pub(crate) stamps: Stamps,
    /// Spend of the current period already handed out by a drain.
    pub(crate) drained: u64,
}

/// A consistent view of everything a snapshot holds; the table's writers wait while it lives.
pub(crate) struct Export<'a> {
    table: &'a Table,
    writer: MutexGuard<'a, Writer>,
    names: RwLockReadGuard<'a, Names>,
    holds: Vec<(u64, Reservation)>,
    next_reservation: u64,
}

impl Table {
    /// Takes the view a snapshot is written from, and marks the table clean: a change
    /// the snapshot misses flags it again (see [`Table::dirty`]).
    pub(crate) fn export(&self) -> Export<'_> {
        let writer = self.writer.lock();
        self.clear_dirty();
        // Holds before rows: a commit racing the snapshot can then only make the restored
        // table hold too much (released at expiry), never too little.
        let now = self.clock.now();
        let holds: Vec<(u64, Reservation)> = self
            .holds
            .outstanding
            .pin()
            .iter()
            .filter(|(_, r)| r.expires_at > now)
            .map(|(id, r)| (*id, r.clone()))
            .collect();
        // After the holds: every hold seen was issued before this is read.
        let next_reservation = self.holds.next_id.load(Ordering::Relaxed);
        let names = self.names.read();
        Export {
            table: self,
            writer,
            names,
            holds,
            next_reservation,
        }
    }
}

impl Export<'_> {
    pub(crate) fn header(&self) -> Header {
        Header {
            config: self.table.config,
            instance: self.table.instance,
            drain_seq: self.writer.drain_seq,
            next_reservation: self.next_reservation,
        }
    }

    /// Plan ids and names, in the order [`RowImage`] indexes them.
    pub(crate) fn names(&self) -> impl ExactSizeIterator<Item = &str> {
        self.names.iter()
    }

    /// How many rows [`Export::for_each_row`] gives (exact: rows are added only by writers).
    pub(crate) fn row_count(&self) -> usize {
        self.table.tenants.len()
    }

    pub(crate) fn for_each_row(&self, mut f: impl FnMut(&RowImage<'_>)) {
        for row in self.table.tenants.iter() {
            let meta = row.meta.lock();
            f(&RowImage {
                tenant: &row.tenant,
                subscription_id: &meta.subscription_id,
                plan_id: meta.plan_id,
                plan_name: meta.plan_name,
                currency: meta.currency,
                status: row.status(),
                total: row.total.load(Ordering::Acquire),
                spent: row.usage.load_latest().spent,
                period: (
                    row.period_start.load(Ordering::Relaxed),
                    row.period_end.load(Ordering::Relaxed),
                ),
                stamps: meta.stamps,
                drained: meta.drained,
            });
        }
    }

    /// Superseded subscriptions and their tenants (the current ones are the rows').
    pub(crate) fn superseded(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.writer.subs.superseded()
    }

    /// The holds that had not expired when the view was taken.
    pub(crate) fn holds(&self) -> &[(u64, Reservation)] {
        &self.holds
    }

    /// Hashes of the event ids remembered for duplicate detection, oldest first.
    pub(crate) fn seen_events(&self) -> impl ExactSizeIterator<Item = u128> + '_ {
        self.writer.dedupe.iter()
    }

    /// The parked events as `(sequence number, event)`, in arrival order.
    pub(crate) fn parked(&self) -> Vec<(u64, &[u8])> {
        let parked = self.writer.parking.in_order();
        parked.into_iter().map(|p| (p.seq, &*p.raw)).collect()
    }

    /// The sequence number of the last event parked.
    pub(crate) fn parked_seq(&self) -> u64 {
        self.writer.parking.seq
    }

    /// Usage of closed periods and superseded subscriptions not yet drained.
    pub(crate) fn journal(&self) -> &[UsageItem] {
        &self.writer.journal
    }

    /// The routing layers: local policies, replicated entries by id.
    pub(crate) fn routing(&self) -> (Vec<Arc<Policy>>, Vec<(String, Replicated)>) {
        self.table.routing.export()
    }
}

/// A table being rebuilt from a snapshot's parts, given in the snapshot's order: names,
/// rows, superseded subscriptions, holds, seen events, parked events and their sequence
/// number, journal, routing layers.
pub(crate) struct Import {
    table: Table,
    last_parked: u64,
}

impl Import {
    /// An empty table with `header`'s scalars, `cursor`, and room for `rows` rows.
    pub(crate) fn new(header: Header, cursor: u64, rows: usize) -> Self {
        let mut table = Table::assemble(header.config, rows, header.instance, cursor);
        *table.holds.next_id.get_mut() = header.next_reservation;
        let w = table.writer.get_mut();
        w.drain_seq = header.drain_seq;
        w.subs.reserve(rows);
        Self {
            table,
            last_parked: 0,
        }
    }

    /// The next plan id or name.
    pub(crate) fn name(&mut self, name: &str) -> Result<(), &'static str> {
        let names = self.table.names.get_mut();
        let expected = names.len();
        if names.id(name) as usize != expected {
            return Err("duplicate plan name");
        }
        Ok(())
    }

    pub(crate) fn row(&mut self, r: &RowImage<'_>) -> Result<(), &'static str> {
        let names = self.table.names.get_mut();
        // A plan id is also an identifier (names were checked for length as they came).
        let plan = |index: u32, is_id: bool| {
            (index as usize) < names.len()
                && !(is_id && event::id_problem(names.get(index), event::MAX_ID_LEN).is_some())
        };
        if !(plan(r.plan_id, true) && plan(r.plan_name, false)) {
            return Err("invalid plan reference");
        }
        if r.drained > r.spent || r.period.1 <= r.period.0 {
            return Err("inconsistent row");
        }
        let w = self.table.writer.get_mut();
        if !matches!(w.subs.get(r.subscription_id), SubState::Unknown) {
            return Err("duplicate subscription");
        }
        let meta = Meta {
            subscription_id: Id::from(r.subscription_id),
            plan_id: r.plan_id,
            plan_name: r.plan_name,
            currency: r.currency,
            stamps: r.stamps,
            drained: r.drained,
        };
        let usage = Usage {
            spent: r.spent,
            reserved: 0,
        };
        let row = Row::new(Id::from(r.tenant), meta, r.total, r.period, r.status, usage);
        let row = self
            .table
            .tenants
            .insert(row)
            .map_err(|_| "duplicate row")?;
        w.subs.follow(r.subscription_id, row);
        Ok(())
    }

    /// A subscription `tenant`'s row no longer follows.
    pub(crate) fn superseded(&mut self, sub: &str, tenant: &str) -> Result<(), &'static str> {
        if self.table.tenants.get(tenant).is_none() {
            return Err("superseded subscription of an unknown tenant");
        }
        let w = self.table.writer.get_mut();
        if !matches!(w.subs.get(sub), SubState::Unknown) {
            return Err("duplicate subscription");
        }
        w.subs.add_superseded(sub, tenant);
        Ok(())
    }

    pub(crate) fn hold(&mut self, id: u64, hold: Reservation) -> Result<(), &'static str> {
        let table = &self.table;
        if let Some(tenant) = &hold.tenant {
            let row = table
                .tenants
                .get(tenant)
                .ok_or("reservation for an unknown tenant")?;
            counters::add_reserved(&row.usage, hold.amount, MAX_MICROS)
                .map_err(|_| "reservations too large")?;
        }
        let outstanding = table.holds.outstanding.pin();
        let issued = id < table.holds.next_id.load(Ordering::Relaxed);
        if !issued || outstanding.get(&id).is_some() {
            return Err("invalid reservation id");
        }
        table.expire_after(hold.expires_at);
        outstanding.insert(id, hold);
        Ok(())
    }

    /// The hash of an event id seen, oldest first.
    pub(crate) fn seen_event(&mut self, hash: u128) {
        self.table.writer.get_mut().dedupe.insert(hash);
    }

    /// The next parked event, with its sequence number.
    pub(crate) fn parked(&mut self, seq: u64, raw: &[u8]) -> Result<(), &'static str> {
        let ev = event::parse(raw).map_err(|_| "invalid parked event")?;
        let sub = ev.kind.subscription().ok_or("invalid parked event")?;
        if seq <= self.last_parked {
            return Err("parked events out of order");
        }
        self.last_parked = seq;
        self.table.writer.get_mut().parking.put(sub, seq, raw);
        Ok(())
    }

    /// The sequence number of the last event parked, after the parked events.
    pub(crate) fn parked_seq(&mut self, seq: u64) -> Result<(), &'static str> {
        let config = self.table.config;
        let parking = &mut self.table.writer.get_mut().parking;
        parking.seq = seq;
        if self.last_parked > seq || !parking.within(config.max_parked, config.max_parked_bytes) {
            return Err("inconsistent parked events");
        }
        Ok(())
    }

    pub(crate) fn journal(&mut self, item: UsageItem) -> Result<(), &'static str> {
        if item.amount == 0 {
            return Err("empty usage record");
        }
        self.table.writer.get_mut().journal.push(item);
        Ok(())
    }

    /// The routing layers (snapshots from version 3 on).
    pub(crate) fn routing(
        &mut self,
        local: Vec<Policy>,
        replicated: Vec<(String, Replicated)>,
    ) -> Result<(), String> {
        self.table.routing = RoutingTable::import(local, replicated)?;
        Ok(())
    }

    pub(crate) fn finish(self) -> Table {
        self.table
    }
}
