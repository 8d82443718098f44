//! The usage drain: committed spend per subscription and period, handed out once, each
//! record under an idempotency key, so billing can ingest it exactly once.

use super::{Id, Table};
use crate::counters::UsageCell;
use std::sync::atomic::Ordering;

/// Committed spend of one subscription and period, ready to report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageItem {
    pub tenant_id: Id,
    pub subscription_id: Id,
    pub period_start: i64,
    pub amount: u64,
}

/// A usage item with the idempotency key of the drain that produced it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRecord {
    pub item: UsageItem,
    pub idempotency_key: String,
}

impl Table {
    /// Committed spend per subscription and period since the last drain, each record
    /// with an idempotency key (at most 64 bytes) stable for this drain.
    pub fn drain_usage(&self) -> Vec<UsageRecord> {
        let mut w = self.writer.lock();
        let mut items = std::mem::take(&mut w.journal);
        for row in self.tenants.iter() {
            let mut meta = row.meta.lock();
            let spent = row.usage.load().spent;
            if spent > meta.drained {
                items.push(UsageItem {
                    tenant_id: row.tenant.clone(),
                    subscription_id: meta.subscription_id.clone(),
                    period_start: row.period_start.load(Ordering::Relaxed),
                    amount: spent - meta.drained,
                });
                meta.drained = spent;
            }
        }
        if items.is_empty() {
            return Vec::new();
        }
        w.drain_seq += 1;
        self.mark_dirty();
        let (instance, seq) = (self.instance, w.drain_seq);
        items.sort_by(|a, b| (&a.tenant_id, a.period_start).cmp(&(&b.tenant_id, b.period_start)));
        items
            .into_iter()
            .map(|item| {
                let subscription = xxhash_rust::xxh3::xxh3_64(item.subscription_id.as_bytes());
                UsageRecord {
                    idempotency_key: format!(
                        "usage:{instance:016x}:{seq}:{}:{subscription:016x}",
                        item.period_start
                    ),
                    item,
                }
            })
            .collect()
    }

    /// Puts back records a drain handed out but the caller could not deliver (they go
    /// out again, under new keys, with the next drain): a drain loses nothing.
    pub fn requeue_usage(&self, records: Vec<UsageRecord>) {
        let mut w = self.writer.lock();
        let later = std::mem::take(&mut w.journal);
        w.journal = records.into_iter().map(|r| r.item).chain(later).collect();
        self.mark_dirty();
    }
}
