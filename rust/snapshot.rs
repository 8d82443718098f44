//! The whole table as bytes, and back.
//!
//! Layout (little-endian): `MAGIC`, format version (u32), payload, XXH3-64 of all
//! that precedes it. The checksum and a strict reader reject anything `encode` did
//! not write: wrong magic, unknown version, truncation, flipped bits, trailing bytes.
//! The checksum only detects accidents, so the reader also validates every value as
//! the event parser would (ids, names, times in years 1..=9999, amounts within 64-bit
//! signed micro-units, consistent counters and references): a snapshot whose checksum
//! was recomputed after tampering still restores only a table events could have built.
//!
//! Version 2 added `max_parked_bytes` after `max_parked`; version 1 is still read
//! (with the default bound).

use crate::counters::{Usage, UsageCell};
use crate::dedupe::Dedupe;
use crate::event::{self, Status};
use crate::table::{
    Config, Entry, Id, Meta, Names, Parked, Reservation, SubState, Table, UsageItem, Writer,
    MAX_DURATION_US,
};
use crate::Error;
use std::sync::atomic::Ordering;

const MAGIC: &[u8; 8] = b"BGWSNAP\x00";
const VERSION: u32 = 2;
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
    out.len(c.max_parked_bytes);
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

/// The largest amount (and counter) a table holds: 64-bit signed micro-units.
const MAX_AMOUNT: u64 = i64::MAX as u64;

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
    /// An amount of micro-units (or a counter) within 64-bit signed range.
    fn amount(&mut self) -> Result<u64, Error> {
        let v = self.u64()?;
        if v > MAX_AMOUNT {
            return Err(bad(format!("amount {v} out of range")));
        }
        Ok(v)
    }
    /// A timestamp Python's `datetime` can hold.
    fn time(&mut self) -> Result<i64, Error> {
        let v = self.i64()?;
        if !(event::MIN_TIME..=event::MAX_TIME).contains(&v) {
            return Err(bad(format!("timestamp {v} out of range")));
        }
        Ok(v)
    }
    /// A count of items each at least `min_size` bytes long, checked against what is left.
    fn count(&mut self, min_size: usize) -> Result<usize, Error> {
        let n = usize::try_from(self.u64()?).map_err(|_| bad("count out of range"))?;
        if n.saturating_mul(min_size) > self.buf.len() - self.pos {
            return Err(bad("count larger than the data"));
        }
        Ok(n)
    }
    /// A limit from the configuration (any `usize`).
    fn limit(&mut self) -> Result<usize, Error> {
        usize::try_from(self.u64()?).map_err(|_| bad("limit out of range"))
    }
    fn bytes(&mut self) -> Result<&'a [u8], Error> {
        let n = self.count(1)?;
        self.take(n)
    }
    fn str(&mut self) -> Result<&'a str, Error> {
        std::str::from_utf8(self.bytes()?).map_err(|_| bad("invalid UTF-8 in a string"))
    }
    /// An identifier as events carry them (`event::id_problem`).
    fn id(&mut self) -> Result<&'a str, Error> {
        let s = self.str()?;
        if let Some(problem) = event::id_problem(s, event::MAX_ID_LEN) {
            return Err(bad(format!("invalid identifier {s:?}: {problem}")));
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
    if !(1..=VERSION).contains(&version) {
        return Err(Error::InvalidSnapshot(format!(
            "snapshot format version {version} is not supported (this build reads versions 1 to {VERSION})"
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
        max_parked: r.limit()?,
        max_parked_bytes: if version >= 2 {
            r.limit()?
        } else {
            Config::default().max_parked_bytes
        },
        dedupe_window: r.limit()?,
    };
    if !(0..=MAX_DURATION_US).contains(&config.grace_us) {
        return Err(bad("grace period out of range"));
    }
    let cursor = r.u64()?;
    let instance = r.u64()?;
    let mut writer = Writer::new(config.dedupe_window);
    writer.drain_seq = r.u64()?;
    let next_reservation = r.u64()?;
    let mut names = Names::default();
    for expected_id in 0..r.count(8)? {
        let name = r.str()?;
        if name.len() > event::MAX_NAME_LEN {
            return Err(bad("plan name too long"));
        }
        if names.id(name) as usize != expected_id {
            return Err(bad("duplicate plan name"));
        }
    }
    let rows = r.count(90)?;
    writer.subs.reserve(rows);
    let table = Table::assemble(config, writer, rows, instance, cursor);
    table
        .next_reservation
        .store(next_reservation, Ordering::Relaxed);
    read_rows(&mut r, &table, &names, rows)?;
    *table.names.write() = names;
    read_rest(&mut r, &table)?;
    if r.pos != body.len() {
        return Err(bad("trailing bytes"));
    }
    Ok(table)
}

fn read_rows(r: &mut In<'_>, table: &Table, names: &Names, rows: usize) -> Result<(), Error> {
    let mut w = table.writer.lock();
    // Names are at most MAX_NAME_LEN bytes (checked when read); a plan id is also an id.
    let plan = |id: u32, is_id: bool| {
        let known = (id as usize) < names.len();
        if known && !(is_id && event::id_problem(names.get(id), event::MAX_ID_LEN).is_some()) {
            Ok(id)
        } else {
            Err(bad("invalid plan reference"))
        }
    };
    for _ in 0..rows {
        let tenant = Id::from(r.id()?);
        let sub = r.id()?;
        let plan_id = plan(r.u32()?, true)?;
        let plan_name = plan(r.u32()?, false)?;
        let currency: [u8; 3] = r.array()?;
        if !currency.iter().all(u8::is_ascii_uppercase) {
            return Err(bad("invalid currency"));
        }
        let status = Status::from_code(r.u8()?).ok_or_else(|| bad("invalid status"))?;
        let total = r.amount()?;
        let spent = r.amount()?;
        let period = (r.time()?, r.time()?);
        let [created_ts, plan_id_ts, plan_name_ts, total_ts, status_ts] =
            [r.time()?, r.time()?, r.time()?, r.time()?, r.time()?];
        let drained = r.u64()?;
        if drained > spent || period.1 <= period.0 {
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
        let tenant = r.id()?;
        if table.tenants.get(tenant).is_none() {
            return Err(bad("superseded subscription of an unknown tenant"));
        }
        if !matches!(w.subs.get(sub), SubState::Unknown) {
            return Err(bad("duplicate subscription"));
        }
        w.subs.superseded.insert(Id::from(sub), Id::from(tenant));
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
        let amount = r.amount()?;
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
                .filter(|&held| held <= MAX_AMOUNT)
                .ok_or_else(|| bad("reservations too large"))?;
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
    let mut previous = 0;
    for _ in 0..n {
        let seq = r.u64()?;
        let raw = r.bytes()?;
        let ev = event::parse(raw).map_err(|_| bad("invalid parked event"))?;
        let sub = ev
            .kind
            .subscription()
            .ok_or_else(|| bad("invalid parked event"))?;
        if seq <= previous {
            return Err(bad("parked events out of order"));
        }
        previous = seq;
        w.park(sub, seq, raw);
    }
    w.parked_seq = r.u64()?;
    let config = table.config;
    if previous > w.parked_seq
        || w.parked_count > config.max_parked
        || w.parked_bytes > config.max_parked_bytes
    {
        return Err(bad("inconsistent parked events"));
    }

    let n = r.count(32)?;
    for _ in 0..n {
        let item = UsageItem {
            tenant_id: Id::from(r.id()?),
            subscription_id: Id::from(r.id()?),
            period_start: r.time()?,
            amount: r.amount()?,
        };
        if item.amount == 0 {
            return Err(bad("empty usage record"));
        }
        w.journal.push(item);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREATED: &str = r#"{"event_id":"e1","event_type":"subscription.created","timestamp":"2025-11-28T10:00:00Z","data":{"subscription_id":"sub_1","customer_id":"cus_1","plan_id":"plan_a","plan_name":"Pro","total_budget":100,"currency":"USD","period_start":"2025-11-28T10:00:00Z","period_end":"2025-12-28T10:00:00Z"}}"#;

    fn table(config: Config) -> Table {
        let t = Table::new(config);
        t.set_clock(Some(
            event::parse_time("now", "2025-12-01T00:00:00Z").unwrap(),
        ));
        t.apply(CREATED.as_bytes()).unwrap();
        assert!(t.try_spend("cus_1", 5));
        t
    }

    fn row(t: &Table) -> &Entry {
        t.tenants.get("cus_1").unwrap()
    }

    /// What a tamperer does after editing the bytes: recompute the checksum.
    fn reseal(mut bytes: Vec<u8>) -> Vec<u8> {
        let body = bytes.len() - CHECKSUM_LEN;
        let sum = xxhash_rust::xxh3::xxh3_64(&bytes[..body]);
        bytes[body..].copy_from_slice(&sum.to_le_bytes());
        bytes
    }

    fn replace(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
        let at = bytes.windows(from.len()).position(|w| w == from).unwrap();
        [&bytes[..at], to, &bytes[at + from.len()..]].concat()
    }

    fn assert_rejected(bytes: &[u8], what: &str) {
        assert!(
            matches!(decode(bytes), Err(Error::InvalidSnapshot(_))),
            "{what} was restored"
        );
    }

    #[test]
    fn out_of_range_values_are_rejected_whatever_the_checksum() {
        let item = |tenant: &str, period_start: i64, amount: u64| UsageItem {
            tenant_id: Id::from(tenant),
            subscription_id: Id::from("sub_1"),
            period_start,
            amount,
        };
        type Tampering = Box<dyn Fn(&Table)>;
        let tamperings: Vec<(&str, Tampering)> = vec![
            (
                "a year-0 period",
                Box::new(|t| {
                    row(t)
                        .period_start
                        .store(event::MIN_TIME - 1, Ordering::Relaxed)
                }),
            ),
            (
                "a period past 9999",
                Box::new(|t| {
                    row(t)
                        .period_end
                        .store(event::MAX_TIME + 1, Ordering::Relaxed)
                }),
            ),
            (
                "an empty period",
                Box::new(|t| {
                    let start = row(t).period_start.load(Ordering::Relaxed);
                    row(t).period_end.store(start, Ordering::Relaxed);
                }),
            ),
            (
                "an event timestamp out of range",
                Box::new(|t| row(t).meta.lock().status_ts = i64::MIN),
            ),
            (
                "a total beyond 64-bit signed",
                Box::new(|t| row(t).total.store(u64::MAX, Ordering::Relaxed)),
            ),
            (
                "a spend beyond 64-bit signed",
                Box::new(|t| {
                    let u = row(t).usage.load();
                    row(t)
                        .usage
                        .compare_exchange(
                            u,
                            Usage {
                                spent: u64::MAX,
                                ..u
                            },
                        )
                        .unwrap();
                }),
            ),
            (
                "more drained than spent",
                Box::new(|t| row(t).meta.lock().drained = 6),
            ),
            (
                "a plan id with a control character",
                Box::new(|t| {
                    let id = t.names.write().id("plan\u{7}");
                    row(t).meta.lock().plan_id = id;
                }),
            ),
            (
                "a plan name over 1024 bytes",
                Box::new(|t| {
                    let id = t.names.write().id(&"\u{e9}".repeat(513));
                    row(t).meta.lock().plan_name = id;
                }),
            ),
            (
                "a journal entry in year 0",
                Box::new(move |t| {
                    t.writer
                        .lock()
                        .journal
                        .push(item("cus_1", event::MIN_TIME - 1, 1))
                }),
            ),
            (
                "an empty journal entry",
                Box::new(move |t| t.writer.lock().journal.push(item("cus_1", 0, 0))),
            ),
            (
                "a journal entry beyond 64-bit signed",
                Box::new(move |t| t.writer.lock().journal.push(item("cus_1", 0, u64::MAX))),
            ),
            (
                "a journal entry of a blank tenant",
                Box::new(move |t| t.writer.lock().journal.push(item(" ", 0, 1))),
            ),
            (
                "a superseded subscription of nobody",
                Box::new(|t| {
                    t.writer
                        .lock()
                        .subs
                        .superseded
                        .insert(Id::from("sub_0"), Id::from("cus_nobody"));
                }),
            ),
            (
                "a hold beyond 64-bit signed",
                Box::new(|t| {
                    let id = t.next_reservation.fetch_add(1, Ordering::Relaxed);
                    let hold = Reservation {
                        tenant: Some(Id::from("cus_1")),
                        amount: u64::MAX,
                        expires_at: i64::MAX,
                    };
                    t.reservations.pin().insert(id, hold);
                }),
            ),
        ];
        for (what, tamper) in tamperings {
            let t = table(Config::default());
            assert!(decode(&encode(&t, 0)).is_ok());
            tamper(&t);
            assert_rejected(&encode(&t, 0), what);
        }
    }

    #[test]
    fn tampered_bytes_with_a_recomputed_checksum_are_rejected() {
        let data = encode(&table(Config::default()), 7);
        assert!(decode(&reseal(data.clone())).is_ok());
        let mut negative_grace = data.clone();
        negative_grace[12..20].copy_from_slice(&(-1i64).to_le_bytes());
        assert_rejected(&reseal(negative_grace), "a negative grace period");
        let mut huge_grace = data.clone();
        huge_grace[12..20].copy_from_slice(&i64::MAX.to_le_bytes());
        assert_rejected(&reseal(huge_grace), "a grace period of 292,000 years");
        for (from, to) in [
            (&b"cus_1"[..], &b"cus\x07x"[..]),
            (b"cus_1", b"     "),
            (b"sub_1", b"sub\x001"),
            (b"USD", b"usd"),
            (b"Pro", b"\xff\xfe\xfd"),
        ] {
            let what = format!(
                "{} instead of {}",
                String::from_utf8_lossy(to),
                String::from_utf8_lossy(from)
            );
            assert_rejected(&reseal(replace(&data, from, to)), &what);
        }
    }

    #[test]
    fn version_1_snapshots_still_restore() {
        let t = table(Config {
            max_parked_bytes: 10,
            ..Config::default()
        });
        let v2 = encode(&t, 3);
        let body = &v2[..v2.len() - CHECKSUM_LEN];
        // Version 1 had no max_parked_bytes (bytes 29..37 of version 2).
        let v1 = [
            &body[..8],
            &1u32.to_le_bytes()[..],
            &body[12..29],
            &body[37..],
            &[0; 8],
        ]
        .concat();
        let restored = decode(&reseal(v1)).unwrap();
        assert_eq!(
            restored.config.max_parked_bytes,
            Config::default().max_parked_bytes
        );
        assert_eq!(restored.budget("cus_1"), t.budget("cus_1"));
        assert_eq!(restored.cursor(), 3);
        let mut v3 = v2.clone();
        v3[8..12].copy_from_slice(&3u32.to_le_bytes());
        assert!(
            matches!(decode(&reseal(v3)), Err(Error::InvalidSnapshot(m)) if m.contains("version 3"))
        );
    }

    #[test]
    fn parked_events_beyond_the_bounds_are_rejected() {
        let parked = CREATED
            .replace("subscription.created", "subscription.updated")
            .replace("sub_1", "sub_2");
        for config in [
            Config {
                max_parked_bytes: parked.len() - 1,
                ..Config::default()
            },
            Config {
                max_parked: 0,
                ..Config::default()
            },
        ] {
            let t = table(config);
            t.writer.lock().park("sub_2", 1, parked.as_bytes());
            assert_rejected(&encode(&t, 0), "too many parked bytes");
        }
        let t = table(Config::default());
        t.writer.lock().park("sub_2", 5, parked.as_bytes());
        assert_rejected(
            &encode(&t, 0),
            "a parked sequence number ahead of the counter",
        );
    }
}
