//! Writing a snapshot from a table's `Table::export` view.

use super::{MAGIC, VERSION};
use crate::routing::PolicyDef;
use crate::table::{RowImage, Table};

struct Out(Vec<u8>);

impl Out {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u64(v.len() as u64);
        self.0.extend_from_slice(v);
    }
    fn len(&mut self, n: usize) {
        self.u64(n as u64);
    }

    fn row(&mut self, r: &RowImage<'_>) {
        self.bytes(r.tenant.as_bytes());
        self.bytes(r.subscription_id.as_bytes());
        self.u32(r.plan_id);
        self.u32(r.plan_name);
        self.0.extend_from_slice(&r.currency);
        self.u8(r.status as u8);
        self.u64(r.total);
        self.u64(r.spent);
        self.i64(r.period.0);
        self.i64(r.period.1);
        let s = r.stamps;
        for ts in [s.created, s.plan_id, s.plan_name, s.total, s.status] {
            self.i64(ts);
        }
        self.u64(r.drained);
    }

    fn policy(&mut self, p: &PolicyDef) {
        self.bytes(p.id.as_bytes());
        self.i64(p.priority);
        self.bytes(p.match_expression.as_bytes());
        self.bytes(p.strategy.as_bytes());
        self.len(p.targets.len());
        for t in &p.targets {
            self.bytes(t.name.as_bytes());
            self.u64(t.weight);
            self.u64(t.cost);
        }
    }
}

/// Serialises the table with `cursor` (the position in the event stream it reflects).
pub fn encode(table: &Table, cursor: u64) -> Vec<u8> {
    let view = table.export();
    let mut out = Out(Vec::with_capacity(64 + view.row_count() * 128));
    out.0.extend_from_slice(MAGIC);
    out.u32(VERSION);

    let header = view.header();
    let c = header.config;
    out.i64(c.grace_us);
    out.u8(u8::from(c.allow_unknown));
    out.len(c.max_parked);
    out.len(c.max_parked_bytes);
    out.len(c.dedupe_window);
    out.u64(cursor);
    out.u64(header.instance);
    out.u64(header.drain_seq);
    out.u64(header.next_reservation);

    let names = view.names();
    out.len(names.len());
    for name in names {
        out.bytes(name.as_bytes());
    }

    out.len(view.row_count());
    view.for_each_row(|row| out.row(row));

    let superseded = view.superseded();
    out.len(superseded.len());
    for (sub, tenant) in superseded {
        out.bytes(sub.as_bytes());
        out.bytes(tenant.as_bytes());
    }

    out.len(view.holds().len());
    for (id, r) in view.holds() {
        out.u64(*id);
        out.bytes(r.tenant.as_deref().unwrap_or_default().as_bytes());
        out.u64(r.amount);
        out.i64(r.expires_at);
    }

    let seen = view.seen_events();
    out.len(seen.len());
    for hash in seen {
        out.0.extend_from_slice(&hash.to_le_bytes());
    }

    let parked = view.parked();
    out.len(parked.len());
    for (seq, raw) in parked {
        out.u64(seq);
        out.bytes(raw);
    }
    out.u64(view.parked_seq());

    out.len(view.journal().len());
    for item in view.journal() {
        out.bytes(item.tenant_id.as_bytes());
        out.bytes(item.subscription_id.as_bytes());
        out.i64(item.period_start);
        out.u64(item.amount);
    }
    let (local, replicated) = view.routing();
    drop(view);
    out.len(local.len());
    for p in &local {
        out.policy(&p.def);
    }
    out.len(replicated.len());
    for (id, r) in &replicated {
        out.bytes(id.as_bytes());
        out.i64(r.ts);
        out.0.extend_from_slice(&r.tiebreak.to_le_bytes());
        match &r.policy {
            None => out.u8(0),
            Some(p) => {
                out.u8(1);
                out.policy(&p.def);
            }
        }
    }

    let checksum = xxhash_rust::xxh3::xxh3_64(&out.0);
    out.u64(checksum);
    out.0
}
