//! Every subscription ever created: the current ones point at their row, the superseded
//! ones name their tenant. Writers only (under the writer lock).

use super::row::Row;
use super::{Hasher, Id};
use hashbrown::HashTable;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::ptr::NonNull;

/// A row of this table's tenant index, held by the writer-side subscription index.
#[derive(Clone, Copy)]
struct RowRef(NonNull<Row>);

// SAFETY: a RowRef points at a row owned by the same table's tenant index, which
// never removes or moves rows and outlives the writer state holding the RowRef.
unsafe impl Send for RowRef {}

impl RowRef {
    fn row(&self) -> &Row {
        // SAFETY: see `unsafe impl Send for RowRef`: the row is alive while the table is.
        unsafe { self.0.as_ref() }
    }
}

/// Where a subscription stands.
pub(super) enum SubState<'a> {
    /// It is the subscription this row follows.
    Current(&'a Row),
    /// Its tenant's row follows a newer subscription.
    Superseded(&'a str),
    Unknown,
}

#[derive(Default)]
pub(super) struct Subs {
    /// Keyed by the row's current `subscription_id`; each slot keeps that id's hash so
    /// the table can grow without locking rows.
    current: HashTable<(u64, RowRef)>,
    /// Superseded subscription -> its tenant.
    superseded: HashMap<Id, Id, Hasher>,
    hasher: Hasher,
}

impl Subs {
    pub(super) fn get(&self, sub: &str) -> SubState<'_> {
        let hash = self.hasher.hash_one(sub);
        let found = self.current.find(hash, |(h, r)| {
            *h == hash && r.row().meta.lock().subscription_id == sub
        });
        match (found, self.superseded.get(sub)) {
            (Some((_, r)), _) => SubState::Current(r.row()),
            (None, Some(tenant)) => SubState::Superseded(tenant),
            (None, None) => SubState::Unknown,
        }
    }

    /// Records that `row` now follows `sub`. The caller must not hold the row's meta lock.
    pub(super) fn follow(&mut self, sub: &str, row: &Row) {
        let hash = self.hasher.hash_one(sub);
        self.current
            .insert_unique(hash, (hash, RowRef(NonNull::from(row))), |(h, _)| *h);
    }

    /// Records that `row` stopped following `sub` (it follows a newer subscription).
    pub(super) fn supersede(&mut self, sub: &str, row: &Row) {
        let hash = self.hasher.hash_one(sub);
        if let Ok(slot) = self
            .current
            .find_entry(hash, |(h, r)| *h == hash && std::ptr::eq(r.row(), row))
        {
            slot.remove();
        }
        self.add_superseded(sub, &row.tenant);
    }

    /// Records `sub`, which `tenant`'s row never follows (or no longer does).
    pub(super) fn add_superseded(&mut self, sub: &str, tenant: &str) {
        self.superseded.insert(Id::from(sub), Id::from(tenant));
    }

    /// The superseded subscriptions and their tenants.
    pub(super) fn superseded(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.superseded
            .iter()
            .map(|(s, t)| (s.as_str(), t.as_str()))
    }

    pub(super) fn reserve(&mut self, rows: usize) {
        self.current.reserve(rows, |(h, _)| *h);
    }
}
