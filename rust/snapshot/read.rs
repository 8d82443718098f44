//! Reading a snapshot: the bytes and every value in range here, what they add up to
//! checked by the table's [`Import`].

use super::{CHECKSUM_LEN, MAGIC, VERSION};
use crate::error::Error;
use crate::event::{self, Status};
use crate::money::MAX_MICROS;
use crate::routing::{Policy, PolicyDef, Replicated, TargetDef};
use crate::table::{
    Config, Header, Id, Import, Reservation, RowImage, Stamps, Table, UsageItem, MAX_DURATION_US,
};
use std::sync::Arc;

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
    /// An amount of micro-units (or a counter) within 64-bit signed range.
    fn amount(&mut self) -> Result<u64, Error> {
        let v = self.u64()?;
        if v > MAX_MICROS {
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

    fn config(&mut self, version: u32) -> Result<Config, Error> {
        let config = Config {
            grace_us: self.i64()?,
            allow_unknown: match self.u8()? {
                0 => false,
                1 => true,
                _ => return Err(bad("invalid flag")),
            },
            max_parked: self.limit()?,
            max_parked_bytes: if version >= 2 {
                self.limit()?
            } else {
                Config::default().max_parked_bytes
            },
            dedupe_window: self.limit()?,
        };
        if !(0..=MAX_DURATION_US).contains(&config.grace_us) {
            return Err(bad("grace period out of range"));
        }
        Ok(config)
    }

    fn row(&mut self) -> Result<RowImage<'a>, Error> {
        let tenant = self.id()?;
        let subscription_id = self.id()?;
        let plan_id = self.u32()?;
        let plan_name = self.u32()?;
        let currency: [u8; 3] = self.array()?;
        if !currency.iter().all(u8::is_ascii_uppercase) {
            return Err(bad("invalid currency"));
        }
        let status = Status::from_code(self.u8()?).ok_or_else(|| bad("invalid status"))?;
        Ok(RowImage {
            tenant,
            subscription_id,
            plan_id,
            plan_name,
            currency,
            status,
            total: self.amount()?,
            spent: self.amount()?,
            period: (self.time()?, self.time()?),
            stamps: Stamps {
                created: self.time()?,
                plan_id: self.time()?,
                plan_name: self.time()?,
                total: self.time()?,
                status: self.time()?,
            },
            drained: self.u64()?,
        })
    }

    fn hold(&mut self) -> Result<(u64, Reservation), Error> {
        let id = self.u64()?;
        let tenant = self.str()?;
        Ok((
            id,
            Reservation {
                tenant: (!tenant.is_empty()).then(|| Id::from(tenant)),
                amount: self.amount()?,
                expires_at: self.i64()?,
            },
        ))
    }

    /// A policy, compiled again (as it was when it was set).
    fn policy(&mut self) -> Result<Policy, Error> {
        let id = self.str()?.to_string();
        let priority = self.i64()?;
        let match_expression = self.str()?.to_string();
        let strategy = self.str()?.to_string();
        let targets = (0..self.count(24)?)
            .map(|_| {
                Ok(TargetDef {
                    name: self.str()?.to_string(),
                    weight: self.u64()?,
                    cost: self.u64()?,
                })
            })
            .collect::<Result<_, Error>>()?;
        Policy::compile(PolicyDef {
            id,
            priority,
            match_expression,
            strategy,
            targets,
        })
        .map_err(|e| bad(format!("invalid routing policy: {e}")))
    }

    fn replicated(&mut self) -> Result<(String, Replicated), Error> {
        let id = self.id()?.to_string();
        let ts = self.time()?;
        let tiebreak = u128::from_le_bytes(self.array()?);
        let policy = match self.u8()? {
            0 => None,
            1 => Some(Arc::new(self.policy()?)),
            _ => return Err(bad("invalid flag")),
        };
        Ok((
            id,
            Replicated {
                ts,
                tiebreak,
                policy,
            },
        ))
    }

    fn usage_item(&mut self) -> Result<UsageItem, Error> {
        Ok(UsageItem {
            tenant_id: Id::from(self.id()?),
            subscription_id: Id::from(self.id()?),
            period_start: self.time()?,
            amount: self.amount()?,
        })
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
    let config = r.config(version)?;
    let cursor = r.u64()?;
    let header = Header {
        config,
        instance: r.u64()?,
        drain_seq: r.u64()?,
        next_reservation: r.u64()?,
    };
    let names: Vec<&str> = (0..r.count(8)?)
        .map(|_| r.str())
        .collect::<Result<_, _>>()?;
    if names.iter().any(|name| name.len() > event::MAX_NAME_LEN) {
        return Err(bad("plan name too long"));
    }
    let rows = r.count(90)?;
    let mut table = Import::new(header, cursor, rows);
    for name in names {
        table.name(name).map_err(bad)?;
    }
    for _ in 0..rows {
        let row = r.row()?;
        table.row(&row).map_err(bad)?;
    }
    for _ in 0..r.count(16)? {
        let (sub, tenant) = (r.id()?, r.id()?);
        table.superseded(sub, tenant).map_err(bad)?;
    }
    for _ in 0..r.count(32)? {
        let (id, hold) = r.hold()?;
        table.hold(id, hold).map_err(bad)?;
    }
    for _ in 0..r.count(16)? {
        table.seen_event(u128::from_le_bytes(r.array()?));
    }
    for _ in 0..r.count(16)? {
        let (seq, raw) = (r.u64()?, r.bytes()?);
        table.parked(seq, raw).map_err(bad)?;
    }
    table.parked_seq(r.u64()?).map_err(bad)?;
    for _ in 0..r.count(32)? {
        let item = r.usage_item()?;
        table.journal(item).map_err(bad)?;
    }
    if version >= 3 {
        let local = (0..r.count(40)?)
            .map(|_| r.policy())
            .collect::<Result<_, _>>()?;
        let replicated = (0..r.count(33)?)
            .map(|_| r.replicated())
            .collect::<Result<_, _>>()?;
        table.routing(local, replicated).map_err(bad)?;
    }
    if r.pos != body.len() {
        return Err(bad("trailing bytes"));
    }
    Ok(table.finish())
}
