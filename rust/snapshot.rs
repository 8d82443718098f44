//! The whole table as bytes, and back.
//!
//! Layout (little-endian): `MAGIC`, format version (u32), payload, XXH3-64 of all
//! that precedes it. The checksum and a strict reader reject anything `encode` did
//! not write: wrong magic, unknown version, truncation, flipped bits, trailing bytes.

use crate::counters::{Usage, UsageCell};
use crate::dedupe::Dedupe;
use crate::event::{self, Status};
use crate::table::{
    Config, Entry, Id, Meta, Names, Parked, Reservation, SubState, Table, UsageItem, Writer,
};
use crate::Error;
use std::sync::atomic::Ordering;

const MAGIC: &[u8; 8] = b"BGWSNAP\x00";
const VERSION: u32 = 1;
const CHECKSUM_LEN: usize = 8;

// ---- writing ------------------------------------------------------------------

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
}

/// Serialises the table with `cursor` (the position in the event stream it reflects).
pub fn encode(table: &Table, cursor: u64) -> Vec<u8> {
    let w = table.writer.lock();
    // Before reading anything: a change this snapshot misses flags the table again.
    table.clear_dirty();
    let tenants = &table.tenants;
    let mut out = Out(Vec::with_capacity(64 + tenants.len() * 128));
    out.0.extend_from_slice(MAGIC);
    out.u32(VERSION);

    let c = table.config;
    out.i64(c.grace_us);
    out.u8(u8::from(c.allow_unknown));
    out.len(c.max_parked);
    out.len(c.dedupe_window);
    out.u64(cursor);
    out.u64(table.instance);
    out.u64(w.drain_seq);
    out.u64(table.next_reservation.load(Ordering::Relaxed));

    // Reservations before rows: a commit racing the snapshot can then only make the
    // restored table hold too much (released at expiry), never too little.
    let now = table.clock.now();
    let reservations = table.reservations.pin();
    let live: Vec<(u64, Reservation)> = reservations
        .iter()
        .filter(|(_, r)| r.expires_at > now)
        .map(|(id, r)| (*id, r.clone()))
        .collect();

    let names = table.names.read();
    out.len(names.len());
    for name in names.iter() {
        out.bytes(name.as_bytes());
    }

    // Rows only change under the writer lock, which is held: the count is exact.
    out.len(tenants.len());
    for e in tenants.iter() {
        let m = e.meta.lock();
        out.bytes(e.tenant.as_bytes());
        out.bytes(m.subscription_id.as_bytes());
        out.u32(m.plan_id);
        out.u32(m.plan_name);
        out.0.extend_from_slice(&m.currency);
        out.u8(e.status.load(Ordering::Relaxed));
        out.u64(e.total.load(Ordering::Acquire));
        out.u64(e.usage.load_latest().spent);
        out.i64(e.period_start.load(Ordering::Relaxed));
        out.i64(e.period_end.load(Ordering::Relaxed));
        for ts in [
            m.created_ts,
            m.plan_id_ts,
            m.plan_name_ts,
            m.total_ts,
            m.status_ts,
        ] {
            out.i64(ts);
        }
        out.u64(m.drained);
    }

    // Superseded subscriptions; the current ones are implied by the rows.
    out.len(w.subs.superseded.len());
    for (sub, tenant) in &w.subs.superseded {
        out.bytes(sub.as_bytes());
        out.bytes(tenant.as_bytes());
    }

    out.len(live.len());
    for (id, r) in &live {
        out.u64(*id);
        out.bytes(r.tenant.as_deref().unwrap_or_default().as_bytes());
        out.u64(r.amount);
        out.i64(r.expires_at);
    }

    out.len(w.dedupe.iter().len());
    for hash in w.dedupe.iter() {
        out.0.extend_from_slice(&hash.to_le_bytes());
    }

    let mut parked: Vec<&Parked> = w.parked.values().flatten().collect();
    parked.sort_by_key(|p| p.seq);
    out.len(parked.len());
    for p in parked {
        out.u64(p.seq);
        out.bytes(&p.raw);
    }
    out.u64(w.parked_seq);

    out.len(w.journal.len());
    for item in &w.journal {
        out.bytes(item.tenant_id.as_bytes());
        out.bytes(item.subscription_id.as_bytes());
        out.i64(item.period_start);
        out.u64(item.amount);
    }

    let checksum = xxhash_rust::xxh3::xxh3_64(&out.0);
    out.u64(checksum);
    out.0
}

// ---- reading ------------------------------------------------------------------

struct In<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn bad(msg: impl std::fmt::Display) -> Error {
    Error::InvalidSnapshot(format!("not a billing_gateway snapshot: {msg}"))
}

impl<'a> In<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| bad("truncated"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.array::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, Error> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    /// A count of items each at least `min_size` bytes long, checked against what is left.
    fn count(&mut self, min_size: usize) -> Result<usize, Error> {
        let n = usize::try_from(self.u64()?).map_err(|_| bad("count out of range"))?;
        if n.saturating_mul(min_size) > self.buf.len() - self.pos {
            return Err(bad("count larger than the data"));
        }
        Ok(n)
    }
    fn bytes(&mut self) -> Result<&'a [u8], Error> {
        let n = self.count(1)?;
        self.take(n)
    }
    fn str(&mut self) -> Result<&'a str, Error> {
        std::str::from_utf8(self.bytes()?).map_err(|_| bad("invalid UTF-8 in a string"))
    }
    fn id(&mut self) -> Result<&'a str, Error> {
        let s = self.str()?;
        if s.is_empty() || s.len() > event::MAX_ID_LEN {
            return Err(bad("invalid identifier"));
        }
        Ok(s)
    }
}

/// Rebuilds a table from `encode`'s output. Anything else is `InvalidSnapshot`.
pub fn decode(data: &[u8]) -> Result<Table, Error> {
    if data.len() < MAGIC.len() + 4 + CHECKSUM_LEN || &data[..MAGIC.len()] != MAGIC {
        return Err(bad("missing header"));
    }
    let (body, sum) = data.split_at(data.len() - CHECKSUM_LEN);
    let mut r = In {
        buf: body,
        pos: MAGIC.len(),
    };
    let version = r.u32()?;
    if version != VERSION {
        return Err(Error::InvalidSnapshot(format!(
            "snapshot format version {version} is not supported (this build reads version {VERSION})"
        )));
    }
    let expected = u64::from_le_bytes(sum.try_into().map_err(bad)?);
    if xxhash_rust::xxh3::xxh3_64(body) != expected {
        return Err(bad("checksum mismatch (corrupted or truncated)"));
    }
    let config = Config {
        grace_us: r.i64()?,
        allow_unknown: match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(bad("invalid flag")),
        },
        max_parked: r.count(0)?,
        dedupe_window: r.count(0)?,
    };
    if config.grace_us < 0 {
        return Err(bad("negative grace period"));
    }
    let cursor = r.u64()?;
    let instance = r.u64()?;
    let mut writer = Writer::new(config.dedupe_window);
    writer.drain_seq = r.u64()?;
    let next_reservation = r.u64()?;
    let mut names = Names::default();
    for expected_id in 0..r.count(8)? {
        if names.id(r.str()?) as usize != expected_id {
            return Err(bad("duplicate plan name"));
        }
    }
    let rows = r.count(90)?;
    writer.subs.reserve(rows);
    let table = Table::assemble(config, writer, rows, instance, cursor);
    *table.names.write() = names;
    table
        .next_reservation
        .store(next_reservation, Ordering::Relaxed);
    read_rows(&mut r, &table, rows)?;
    read_rest(&mut r, &table)?;
    if r.pos != body.len() {
        return Err(bad("trailing bytes"));
    }
    Ok(table)
}

fn read_rows(r: &mut In<'_>, table: &Table, rows: usize) -> Result<(), Error> {
    let mut w = table.writer.lock();
    w.subs.reserve(rows);
    let names = table.names.read().len();
    let name_id = |id: u32| {
        if (id as usize) < names {
            Ok(id)
        } else {
            Err(bad("invalid plan name"))
        }
    };
    for _ in 0..rows {
        let tenant = Id::from(r.id()?);
        let sub = r.id()?;
        let plan_id = name_id(r.u32()?)?;
        let plan_name = name_id(r.u32()?)?;
        let currency: [u8; 3] = r.array()?;
        if !currency.iter().all(u8::is_ascii_uppercase) {
            return Err(bad("invalid currency"));
        }
        let status = Status::from_code(r.u8()?).ok_or_else(|| bad("invalid status"))?;
        let total = r.u64()?;
        let spent = r.u64()?;
        let period = (r.i64()?, r.i64()?);
        let [created_ts, plan_id_ts, plan_name_ts, total_ts, status_ts] =
            [r.i64()?, r.i64()?, r.i64()?, r.i64()?, r.i64()?];
        let drained = r.u64()?;
        if total > i64::MAX as u64
            || spent > i64::MAX as u64
            || drained > spent
            || period.1 <= period.0
        {
            return Err(bad("inconsistent row"));
        }
        if !matches!(w.subs.get(sub), SubState::Unknown) {
            return Err(bad("duplicate subscription"));
        }
        let meta = Meta {
            subscription_id: Id::from(sub),
            plan_id,
            plan_name,
            currency,
            created_ts,
            plan_id_ts,
            plan_name_ts,
            total_ts,
            status_ts,
            drained,
        };
        let usage = Usage { spent, reserved: 0 };
        let row = Entry::new(tenant, meta, total, period, status, usage);
        let entry = table
            .tenants
            .insert(row)
            .map_err(|_| bad("duplicate row"))?;
        w.subs.follow(sub, entry);
    }
    for _ in 0..r.count(16)? {
        let sub = r.id()?;
        let tenant = Id::from(r.id()?);
        if !matches!(w.subs.get(sub), SubState::Unknown) {
            return Err(bad("duplicate subscription"));
        }
        w.subs.superseded.insert(Id::from(sub), tenant);
    }
    Ok(())
}

fn read_rest(r: &mut In<'_>, table: &Table) -> Result<(), Error> {
    let reservations = table.reservations.pin();
    let n = r.count(32)?;
    let mut earliest = i64::MAX;
    for _ in 0..n {
        let id = r.u64()?;
        let tenant = r.str()?;
        let amount = r.u64()?;
        let expires_at = r.i64()?;
        let held_on = if tenant.is_empty() {
            None
        } else {
            let entry = table
                .tenants
                .get(tenant)
                .ok_or_else(|| bad("reservation for an unknown tenant"))?;
            let usage = entry.usage.load();
            let reserved = usage
                .reserved
                .checked_add(amount)
                .ok_or_else(|| bad("reservation too large"))?;
            entry
                .usage
                .compare_exchange(usage, Usage { reserved, ..usage })
                .map_err(|_| bad("concurrent restore"))?;
            Some(entry.tenant.clone())
        };
        if id >= table.next_reservation.load(Ordering::Relaxed) || reservations.get(&id).is_some() {
            return Err(bad("invalid reservation id"));
        }
        reservations.insert(
            id,
            Reservation {
                tenant: held_on,
                amount,
                expires_at,
            },
        );
        earliest = earliest.min(expires_at);
    }
    table.expire_after(earliest);

    let mut w = table.writer.lock();
    let n = r.count(16)?;
    let mut dedupe = Dedupe::new(table.config.dedupe_window);
    for _ in 0..n {
        dedupe.insert(u128::from_le_bytes(r.array()?));
    }
    w.dedupe = dedupe;

    let n = r.count(16)?;
    for _ in 0..n {
        let seq = r.u64()?;
        let raw = r.bytes()?;
        let ev = event::parse(raw).map_err(|_| bad("invalid parked event"))?;
        let sub = ev
            .kind
            .subscription()
            .ok_or_else(|| bad("invalid parked event"))?;
        w.parked.entry(Id::from(sub)).or_default().push(Parked {
            seq,
            raw: raw.into(),
        });
        w.parked_count += 1;
    }
    w.parked_seq = r.u64()?;

    let n = r.count(32)?;
    for _ in 0..n {
        let item = UsageItem {
            tenant_id: Id::from(r.id()?),
            subscription_id: Id::from(r.id()?),
            period_start: r.i64()?,
            amount: r.u64()?,
        };
        w.journal.push(item);
    }
    Ok(())
}
