//! The budget table: one row per tenant, lock-free spend checks, two-phase spend,
//! and idempotent, order-tolerant event application.
//!
//! Readers (`try_spend`, `spend`, `check`) take no lock: an [`Index`] read and a CAS
//! on the row's [`AtomicUsage`](crate::counters::AtomicUsage). Writers (event
//! application, drains, snapshots) are serialised by one mutex so that an event is
//! applied whole or not at all.
//!
//! Memory: a row is one allocation (ids of up to 24 bytes are stored inline), found
//! through the tenant index (tag byte + pointer per slot) and, for writers, through the
//! subscription index (hash + pointer per slot).
//!
//! The parts: `config` and `decision` (what a table is given and answers), `row`
//! and `names` (a tenant's row, plan names stored once), `spend` (the hot path),
//! `holds` and `resolved` (two-phase spend), `subscriptions`, `parking` and
//! `writer` (the writers' state), `apply` (events), `route` (the budget as routing
//! sees it), `usage` (the usage drain) and
//! `image` (all a snapshot reads and restores, and nothing else).

mod apply;
mod config;
mod decision;
mod holds;
mod image;
mod names;
mod parking;
mod resolved;
mod route;
mod row;
mod spend;
mod subscriptions;
mod usage;
mod writer;

#[cfg(test)]
mod tests;

pub use apply::Outcome;
pub use config::{Config, MAX_DURATION_US};
pub use decision::{Decision, Reason};
pub(crate) use holds::Reservation;
pub(crate) use image::{Header, Import, RowImage};
pub use row::BudgetView;
pub(crate) use row::Stamps;
pub use usage::{UsageItem, UsageRecord};

use crate::clock::Clock;
use crate::index::Index;
use crate::routing::RoutingTable;
use compact_str::CompactString;
use holds::Holds;
use names::Names;
use parking_lot::{Mutex, RwLock};
use row::Row;
use std::hash::BuildHasher;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use writer::Writer;

/// An identifier (tenant, subscription): inline up to 24 bytes, no allocation.
pub type Id = CompactString;

type Hasher = foldhash::fast::RandomState;

pub struct Table {
    config: Config,
    tenants: Index<Row>,
    holds: Holds,
    writer: Mutex<Writer>,
    names: RwLock<Names>,
    clock: Clock,
    /// Distinguishes this table's usage idempotency keys from other replicas'.
    instance: u64,
    cursor: u64,
    /// Whether anything a snapshot holds changed since the last snapshot; see [`Table::dirty`].
    dirty: AtomicBool,
    routing: RoutingTable,
}

fn new_instance_id(seed: i64) -> u64 {
    std::collections::hash_map::RandomState::new().hash_one((seed, std::process::id()))
}

impl Table {
    pub fn new(config: Config) -> Self {
        let instance = new_instance_id(Clock::default().now());
        Self::assemble(config, 0, instance, 0)
    }

    /// An empty table with room for `capacity` tenants.
    fn assemble(config: Config, capacity: usize, instance: u64, cursor: u64) -> Self {
        Self {
            config,
            tenants: Index::with_capacity(capacity),
            holds: Holds::default(),
            writer: Mutex::new(Writer::new(config.dedupe_window)),
            names: RwLock::new(Names::default()),
            clock: Clock::default(),
            instance,
            cursor,
            dirty: AtomicBool::new(false),
            routing: RoutingTable::default(),
        }
    }

    pub fn config(&self) -> Config {
        self.config
    }

    /// The cursor stored in the snapshot this table was restored from (0 if new).
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Whether the table changed since the last snapshot (or since it was created or
    /// restored): a spend, hold, commit, release or expiry, an event that was not a
    /// duplicate, a drain that handed out usage. The next snapshot is then due.
    ///
    /// Protocol. A change is made first, then flagged (`Table::mark_dirty`); a snapshot
    /// clears the flag first (`Table::clear_dirty`), then reads. A change a snapshot
    /// missed therefore finds the flag cleared and sets it again:
    /// - spends (the hot path) change a row's counters with an acquire-release RMW and
    ///   the snapshot reads them with a release RMW
    ///   ([`AtomicUsage::load_latest`](crate::counters::AtomicUsage::load_latest)): either
    ///   the read comes later in the counter's modification order and sees the spend, or
    ///   it synchronises with the spend, which then sees the cleared flag. One relaxed
    ///   load on the hot path, no fence, no RMW;
    /// - holds, commits, releases and expiries also change the reservation map, so they
    ///   put a SeqCst fence before the flag, pairing with the snapshot's;
    /// - event application and drains hold the writer lock, as the snapshot does.
    pub fn dirty(&self) -> bool {
        self.dirty.load(Ordering::Relaxed)
    }

    /// Flags a change made with an acquire-release RMW on a row's counters, or under
    /// the writer lock. The common case is one relaxed load.
    #[inline]
    fn mark_dirty(&self) {
        if !self.dirty.load(Ordering::Relaxed) {
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// Flags a change to the reservation map.
    fn mark_dirty_fenced(&self) {
        fence(Ordering::SeqCst);
        self.mark_dirty();
    }

    /// Called by a snapshot, under the writer lock, before it reads anything.
    fn clear_dirty(&self) {
        self.dirty.store(false, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    pub fn set_clock(&self, micros: Option<i64>) {
        self.clock.set(micros);
    }

    pub fn len(&self) -> usize {
        self.tenants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn budget(&self, tenant: &str) -> Option<BudgetView> {
        self.expire_due(self.clock.now());
        let names = self.names.read();
        self.tenants.get(tenant).map(|row| row.view(&names))
    }

    /// Every row, ordered by tenant id.
    pub fn budgets(&self) -> Vec<BudgetView> {
        self.expire_due(self.clock.now());
        let names = self.names.read();
        let mut all: Vec<BudgetView> = self.tenants.iter().map(|row| row.view(&names)).collect();
        all.sort_unstable_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
        all
    }
}
