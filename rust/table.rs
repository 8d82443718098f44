//! The budget table: one row per tenant, lock-free spend checks, two-phase spend,
//! and idempotent, order-tolerant event application.
//!
//! Readers (`try_spend`, `spend`, `check`) take no lock: an [`Index`] read and a CAS
//! on the row's [`AtomicUsage`]. Writers (event application, drains, snapshots) are
//! serialised by one mutex so that an event is applied whole or not at all.
//!
//! Memory: a row is one allocation (ids of up to 24 bytes are stored inline), found
//! through the tenant index (tag byte + pointer per slot) and, for writers, through the
//! subscription index (hash + pointer per slot).

use crate::clock::Clock;
use crate::counters::{self, AtomicUsage, Usage, UsageCell};
use crate::dedupe::{id_hash, Dedupe};
use crate::event::{self, Created, Event, InvoicePaid, Kind, Status, Updated};
use crate::index::{Index, Keyed};
use crate::Error;
use compact_str::CompactString;
use hashbrown::HashTable;
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

/// An identifier (tenant, subscription): inline up to 24 bytes, no allocation.
pub type Id = CompactString;

type Hasher = foldhash::fast::RandomState;
pub(crate) type Map<K, V> = papaya::HashMap<K, V, Hasher>;

/// The longest grace period (and reservation TTL) a table accepts: 10^9 s, about 31.7 years.
pub const MAX_DURATION_US: i64 = 1_000_000_000 * 1_000_000;

/// How a table behaves; fixed at creation and carried in snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// How long after `period_end` the old budget still applies, in microseconds.
    pub grace_us: i64,
    /// Whether a tenant without a row may spend.
    pub allow_unknown: bool,
    /// How many events for not-yet-created subscriptions may wait.
    pub max_parked: usize,
    /// How many bytes of such events may wait.
    pub max_parked_bytes: usize,
    /// How many recent event ids are remembered for duplicate detection.
    pub dedupe_window: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            grace_us: 86_400 * 1_000_000,
            allow_unknown: false,
            max_parked: 10_000,
            max_parked_bytes: 64 << 20,
            dedupe_window: 100_000,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Reason {
    Ok = 0,
    InsufficientBudget = 1,
    UnknownTenant = 2,
    Inactive = 3,
    PeriodEnded = 4,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Decision {
    pub allowed: bool,
    pub reason: Reason,
    pub remaining: u64,
    pub reservation_id: Option<u64>,
}

impl Decision {
    fn allow(remaining: u64) -> Self {
        Self {
            allowed: true,
            reason: Reason::Ok,
            remaining,
            reservation_id: None,
        }
    }

    fn refuse(reason: Reason, remaining: u64) -> Self {
        Self {
            allowed: false,
            reason,
            remaining,
            reservation_id: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Outcome {
    Applied = 0,
    Duplicate = 1,
    Stale = 2,
    Parked = 3,
    Ignored = 4,
}

/// One tenant's row. The fields the hot path reads are atomics; the rest sits
/// behind a small mutex that only writers and `budget()` readers take.
pub(crate) struct Entry {
    pub(crate) usage: AtomicUsage,
    pub(crate) total: AtomicU64,
    pub(crate) period_start: AtomicI64,
    pub(crate) period_end: AtomicI64,
    pub(crate) status: AtomicU8,
    pub(crate) tenant: Id,
    pub(crate) meta: Mutex<Meta>,
}

impl Keyed for Entry {
    fn key(&self) -> &str {
        &self.tenant
    }
}

/// A row's cold fields, with the timestamp of the event that last wrote each
/// last-writer-wins field.
pub(crate) struct Meta {
    pub(crate) subscription_id: Id,
    /// Index into [`Names`] (plans are shared by many rows).
    pub(crate) plan_id: u32,
    pub(crate) plan_name: u32,
    pub(crate) currency: [u8; 3],
    pub(crate) created_ts: i64,
    pub(crate) plan_id_ts: i64,
    pub(crate) plan_name_ts: i64,
    pub(crate) total_ts: i64,
    pub(crate) status_ts: i64,
    /// Spend of the current period already handed out by `drain_usage`.
    pub(crate) drained: u64,
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

#[derive(Clone)]
pub(crate) struct Reservation {
    /// The tenant held against; `None` for an unknown tenant admitted by `allow_unknown`.
    pub(crate) tenant: Option<Id>,
    pub(crate) amount: u64,
    pub(crate) expires_at: i64,
}

pub(crate) struct Parked {
    pub(crate) seq: u64,
    pub(crate) raw: Box<[u8]>,
}

/// Plan ids and names, stored once and referred to by index from the rows.
#[derive(Default)]
pub(crate) struct Names {
    index: HashMap<Arc<str>, u32, Hasher>,
    strings: Vec<Arc<str>>,
}

impl Names {
    pub(crate) fn id(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.index.get(s) {
            return id;
        }
        let id = u32::try_from(self.strings.len()).expect("fewer than 2^32 distinct plan names");
        let arc: Arc<str> = Arc::from(s);
        self.strings.push(Arc::clone(&arc));
        self.index.insert(arc, id);
        id
    }

    pub(crate) fn get(&self, id: u32) -> &Arc<str> {
        &self.strings[id as usize]
    }

    pub(crate) fn len(&self) -> usize {
        self.strings.len()
    }

    /// The names in index order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<str>> {
        self.strings.iter()
    }
}

/// A row of this table's tenant index, held by the writer-side subscription index.
#[derive(Clone, Copy)]
struct RowRef(NonNull<Entry>);

// SAFETY: a RowRef points at a row owned by the same table's tenant index, which
// never removes or moves rows and outlives the writer state holding the RowRef.
unsafe impl Send for RowRef {}

impl RowRef {
    fn row(&self) -> &Entry {
        // SAFETY: see `unsafe impl Send for RowRef`: the row is alive while the table is.
        unsafe { self.0.as_ref() }
    }
}

/// Where a subscription stands.
pub(crate) enum SubState<'a> {
    /// It is the subscription this row follows.
    Current(&'a Entry),
    /// Its tenant's row follows a newer subscription.
    Superseded(&'a str),
    Unknown,
}

/// Every subscription ever created: the current ones point at their row, the
/// superseded ones name their tenant. Writer only.
#[derive(Default)]
pub(crate) struct Subs {
    /// Keyed by the row's current `subscription_id`; each slot keeps that id's hash so
    /// the table can grow without locking rows.
    current: HashTable<(u64, RowRef)>,
    pub(crate) superseded: HashMap<Id, Id, Hasher>,
    hasher: Hasher,
}

impl Subs {
    pub(crate) fn get(&self, sub: &str) -> SubState<'_> {
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
    pub(crate) fn follow(&mut self, sub: &str, row: &Entry) {
        let hash = self.hasher.hash_one(sub);
        self.current
            .insert_unique(hash, (hash, RowRef(NonNull::from(row))), |(h, _)| *h);
    }

    /// Records that `row` stopped following `sub` (it follows a newer subscription).
    fn supersede(&mut self, sub: &str, row: &Entry) {
        let hash = self.hasher.hash_one(sub);
        if let Ok(slot) = self
            .current
            .find_entry(hash, |(h, r)| *h == hash && std::ptr::eq(r.row(), row))
        {
            slot.remove();
        }
        self.superseded.insert(Id::from(sub), row.tenant.clone());
    }

    pub(crate) fn reserve(&mut self, rows: usize) {
        self.current.reserve(rows, |(h, _)| *h);
    }
}

/// State only writers touch, under the writer mutex.
pub(crate) struct Writer {
    pub(crate) subs: Subs,
    pub(crate) dedupe: Dedupe,
    /// Events waiting for their subscription's `subscription.created`, by subscription.
    pub(crate) parked: HashMap<Id, Vec<Parked>, Hasher>,
    pub(crate) parked_count: usize,
    pub(crate) parked_bytes: usize,
    pub(crate) parked_seq: u64,
    /// Usage of closed periods and superseded subscriptions not yet drained.
    pub(crate) journal: Vec<UsageItem>,
    pub(crate) drain_seq: u64,
}

impl Writer {
    pub(crate) fn new(dedupe_window: usize) -> Self {
        Self {
            subs: Subs::default(),
            dedupe: Dedupe::new(dedupe_window),
            parked: HashMap::default(),
            parked_count: 0,
            parked_bytes: 0,
            parked_seq: 0,
            journal: Vec::new(),
            drain_seq: 0,
        }
    }

    /// Parks `raw` (which waits for subscription `sub`) under sequence number `seq`.
    pub(crate) fn park(&mut self, sub: &str, seq: u64, raw: &[u8]) {
        let parked = Parked {
            seq,
            raw: raw.into(),
        };
        self.parked.entry(Id::from(sub)).or_default().push(parked);
        self.parked_count += 1;
        self.parked_bytes += raw.len();
    }

    fn unpark(&mut self, sub: &str) -> Vec<Parked> {
        let events = self.parked.remove(sub).unwrap_or_default();
        self.parked_count -= events.len();
        self.parked_bytes -= events.iter().map(|p| p.raw.len()).sum::<usize>();
        events
    }
}

pub struct Table {
    pub(crate) config: Config,
    pub(crate) tenants: Index<Entry>,
    pub(crate) reservations: Map<u64, Reservation>,
    pub(crate) next_reservation: AtomicU64,
    /// A lower bound of the earliest expiry among outstanding reservations.
    next_expiry: AtomicI64,
    sweeping: Mutex<()>,
    pub(crate) writer: Mutex<Writer>,
    pub(crate) names: RwLock<Names>,
    pub(crate) clock: Clock,
    /// Distinguishes this table's usage idempotency keys from other replicas'.
    pub(crate) instance: u64,
    pub(crate) cursor: u64,
    /// Whether anything a snapshot holds changed since the last snapshot; see [`Table::dirty`].
    dirty: AtomicBool,
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

fn new_instance_id(seed: i64) -> u64 {
    std::collections::hash_map::RandomState::new().hash_one((seed, std::process::id()))
}

impl Meta {
    /// The cold fields of a row that follows subscription `sub` from its creation.
    fn created(c: &Created<'_>, ts: i64, names: &mut Names) -> Self {
        Meta {
            subscription_id: Id::from(&*c.subscription_id),
            plan_id: names.id(&c.plan_id),
            plan_name: names.id(&c.plan_name),
            currency: c.currency,
            created_ts: ts,
            plan_id_ts: ts,
            plan_name_ts: ts,
            total_ts: ts,
            status_ts: ts,
            drained: 0,
        }
    }
}

impl Entry {
    pub(crate) fn new(
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
            tenant,
            meta: Mutex::new(meta),
        }
    }

    #[inline]
    fn status(&self) -> Status {
        Status::from_code(self.status.load(Ordering::Relaxed)).unwrap_or(Status::Canceled)
    }

    /// Why this row may not spend right now, if it may not.
    #[inline]
    fn refusal(&self, now: i64, grace_us: i64) -> Option<Reason> {
        if !self.status().may_spend() {
            return Some(Reason::Inactive);
        }
        let end = self.period_end.load(Ordering::Relaxed);
        if now >= end.saturating_add(grace_us) {
            return Some(Reason::PeriodEnded);
        }
        None
    }

    fn view(&self, names: &Names) -> BudgetView {
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
    fn close_period(&self, meta: &mut Meta, journal: &mut Vec<UsageItem>) {
        let spent = counters::reset_spent(&self.usage);
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

    fn set_period(&self, start: i64, end: i64) {
        self.period_start.store(start, Ordering::Relaxed);
        self.period_end.store(end, Ordering::Relaxed);
    }
}

impl Table {
    pub fn new(config: Config) -> Self {
        let instance = new_instance_id(Clock::default().now());
        Self::assemble(config, Writer::new(config.dedupe_window), 0, instance, 0)
    }

    /// A table with room for `capacity` tenants.
    pub(crate) fn assemble(
        config: Config,
        writer: Writer,
        capacity: usize,
        instance: u64,
        cursor: u64,
    ) -> Self {
        Self {
            config,
            tenants: Index::with_capacity(capacity),
            reservations: Map::default(),
            next_reservation: AtomicU64::new(1),
            next_expiry: AtomicI64::new(i64::MAX),
            sweeping: Mutex::new(()),
            writer: Mutex::new(writer),
            names: RwLock::new(Names::default()),
            clock: Clock::default(),
            instance,
            cursor,
            dirty: AtomicBool::new(false),
        }
    }

    /// The cursor stored in the snapshot this table was restored from (0 if new).
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Whether the table changed since the last snapshot (or since it was created or
    /// restored): a spend, hold, commit, release or expiry, an event that was not a
    /// duplicate, a drain that handed out usage. The next snapshot is then due.
    ///
    /// Protocol. A change is made first, then flagged ([`Table::mark_dirty`]); a snapshot
    /// clears the flag first ([`Table::clear_dirty`]), then reads. A change a snapshot
    /// missed therefore finds the flag cleared and sets it again:
    /// - spends (the hot path) change a row's counters with an acquire-release RMW and
    ///   the snapshot reads them with a release RMW ([`AtomicUsage::load_latest`]): either
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
    pub(crate) fn clear_dirty(&self) {
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

    // ---- the hot path ----------------------------------------------------------

    /// Atomically checks and debits `amount`. Lock-free; allocates nothing.
    #[inline]
    pub fn try_spend(&self, tenant: &str, amount: u64) -> bool {
        self.spend(tenant, amount).allowed
    }

    #[inline]
    pub fn spend(&self, tenant: &str, amount: u64) -> Decision {
        let decision = self.admit(tenant, amount, counters::try_debit);
        if decision.reason == Reason::Ok && amount != 0 {
            self.mark_dirty();
        }
        decision
    }

    /// Whether `spend` would be allowed now; debits nothing.
    #[inline]
    pub fn check(&self, tenant: &str, amount: u64) -> Decision {
        self.admit(tenant, amount, |cell: &AtomicUsage, total, amount| {
            let usage = cell.load();
            if usage.admits(total, amount) {
                Ok(usage)
            } else {
                Err(usage)
            }
        })
    }

    #[inline]
    fn admit(
        &self,
        tenant: &str,
        amount: u64,
        op: impl FnOnce(&AtomicUsage, u64, u64) -> Result<Usage, Usage>,
    ) -> Decision {
        let now = self.clock.now();
        self.expire_due(now);
        let Some(entry) = self.tenants.get(tenant) else {
            return self.unknown_tenant();
        };
        let total = entry.total.load(Ordering::Acquire);
        if let Some(reason) = entry.refusal(now, self.config.grace_us) {
            return Decision::refuse(reason, entry.usage.load().remaining(total));
        }
        match op(&entry.usage, total, amount) {
            Ok(after) => Decision::allow(after.remaining(total)),
            Err(found) => Decision::refuse(Reason::InsufficientBudget, found.remaining(total)),
        }
    }

    fn unknown_tenant(&self) -> Decision {
        Decision {
            allowed: self.config.allow_unknown,
            reason: Reason::UnknownTenant,
            remaining: 0,
            reservation_id: None,
        }
    }

    // ---- two-phase spend ---------------------------------------------------------

    /// Holds `amount` for `ttl_us`; the decision carries the reservation id when allowed.
    pub fn reserve(&self, tenant: &str, amount: u64, ttl_us: i64) -> Decision {
        let now = self.clock.now();
        self.expire_due(now);
        let (held_on, mut decision) = match self.tenants.get(tenant) {
            None => (None, self.unknown_tenant()),
            Some(entry) => {
                let total = entry.total.load(Ordering::Acquire);
                let decision = match entry.refusal(now, self.config.grace_us) {
                    Some(reason) => Decision::refuse(reason, entry.usage.load().remaining(total)),
                    None => match counters::try_hold(&entry.usage, total, amount) {
                        Ok(after) => Decision::allow(after.remaining(total)),
                        Err(found) => {
                            Decision::refuse(Reason::InsufficientBudget, found.remaining(total))
                        }
                    },
                };
                (Some(entry.tenant.clone()), decision)
            }
        };
        if decision.allowed {
            let id = self.next_reservation.fetch_add(1, Ordering::Relaxed);
            let expires_at = now.saturating_add(ttl_us);
            let reservation = Reservation {
                tenant: held_on,
                amount,
                expires_at,
            };
            self.reservations.pin().insert(id, reservation);
            self.expire_after(expires_at);
            self.mark_dirty_fenced();
            decision.reservation_id = Some(id);
        }
        decision
    }

    /// Posts `actual` (<= the reserved amount) and releases the rest.
    pub fn commit(&self, id: u64, actual: u64) -> Result<(), Error> {
        self.resolve(id, Some(actual))
    }

    /// Voids a hold.
    pub fn release(&self, id: u64) -> Result<(), Error> {
        self.resolve(id, None)
    }

    fn resolve(&self, id: u64, actual: Option<u64>) -> Result<(), Error> {
        let now = self.clock.now();
        let reservations = self.reservations.pin();
        let unknown = || {
            Error::UnknownReservation(format!(
                "reservation {id} is unknown, expired or already resolved"
            ))
        };
        let found = reservations.get(&id).ok_or_else(unknown)?;
        if found.expires_at <= now {
            self.settle(reservations.remove(&id), 0);
            return Err(Error::UnknownReservation(format!(
                "reservation {id} expired"
            )));
        }
        if let Some(actual) = actual.filter(|&a| a > found.amount) {
            return Err(Error::InvalidAmount(format!(
                "actual {actual} exceeds the {} micro-units reserved by reservation {id}",
                found.amount
            )));
        }
        // Whoever removes the reservation resolves it: commit, release and expiry race safely.
        match reservations.remove(&id) {
            Some(removed) => {
                self.settle(Some(removed), actual.unwrap_or(0));
                Ok(())
            }
            None => Err(unknown()),
        }
    }

    /// Applies the resolution of a reservation this caller removed (if it removed one).
    fn settle(&self, removed: Option<&Reservation>, actual: u64) {
        let Some(removed) = removed else {
            return;
        };
        let held_on = removed.tenant.as_deref().and_then(|t| self.tenants.get(t));
        if let Some(entry) = held_on {
            counters::settle(&entry.usage, removed.amount, actual);
        }
        self.mark_dirty_fenced();
    }

    /// Notes that a reservation expires at `at` (after inserting it).
    pub(crate) fn expire_after(&self, at: i64) {
        self.next_expiry.fetch_min(at, Ordering::SeqCst);
    }

    /// Releases expired reservations when the earliest one is due. Off the fast path
    /// except at the moment something has expired.
    #[inline]
    fn expire_due(&self, now: i64) {
        if now >= self.next_expiry.load(Ordering::Relaxed) {
            self.sweep(now);
        }
    }

    #[cold]
    #[inline(never)]
    fn sweep(&self, now: i64) {
        let Some(_sweeping) = self.sweeping.try_lock() else {
            return;
        };
        // Reset first: a reservation inserted meanwhile lowers the bound again after this.
        self.next_expiry.store(i64::MAX, Ordering::SeqCst);
        let reservations = self.reservations.pin();
        for (id, r) in &reservations {
            if r.expires_at <= now {
                self.settle(reservations.remove(id), 0);
            } else {
                self.next_expiry.fetch_min(r.expires_at, Ordering::SeqCst);
            }
        }
    }

    // ---- reading -----------------------------------------------------------------

    pub fn budget(&self, tenant: &str) -> Option<BudgetView> {
        self.expire_due(self.clock.now());
        let names = self.names.read();
        self.tenants.get(tenant).map(|e| e.view(&names))
    }

    /// Every row, ordered by tenant id.
    pub fn budgets(&self) -> Vec<BudgetView> {
        self.expire_due(self.clock.now());
        let names = self.names.read();
        let mut all: Vec<BudgetView> = self.tenants.iter().map(|e| e.view(&names)).collect();
        all.sort_unstable_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
        all
    }

    // ---- events ------------------------------------------------------------------

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
        let outcome = self.apply_event(&mut w, &ev, raw)?;
        w.dedupe.insert(hash);
        self.mark_dirty();
        Ok(outcome)
    }

    fn apply_event(&self, w: &mut Writer, ev: &Event<'_>, raw: &[u8]) -> Result<Outcome, Error> {
        let Some(sub) = ev.kind.subscription() else {
            return Ok(Outcome::Ignored);
        };
        if let Kind::Created(c) = &ev.kind {
            return self.apply_created(w, ev.ts, c);
        }
        let (tenant, entry) = match w.subs.get(sub) {
            SubState::Unknown => return self.park(w, sub, raw),
            SubState::Superseded(tenant) => (tenant, None),
            SubState::Current(entry) => (entry.tenant.as_str(), Some(entry)),
        };
        if let Some(customer) = ev.kind.customer() {
            check_customer(sub, tenant, customer)?;
        }
        let Some(entry) = entry else {
            // The tenant's row follows a newer subscription: nothing to do.
            return Ok(Outcome::Stale);
        };
        let changed = match &ev.kind {
            Kind::Updated(u) => apply_update(entry, &mut self.names.write(), ev.ts, u),
            Kind::InvoicePaid(p) => apply_paid(entry, &mut w.journal, p),
            Kind::PaymentFailed(_) => {
                set_status(entry, &mut entry.meta.lock(), Status::PastDue, ev.ts, true)
            }
            Kind::Created(_) | Kind::Other => false,
        };
        Ok(if changed {
            Outcome::Applied
        } else {
            Outcome::Stale
        })
    }

    fn park(&self, w: &mut Writer, sub: &str, raw: &[u8]) -> Result<Outcome, Error> {
        let limit = if w.parked_count >= self.config.max_parked {
            Some(format!("{} events (max_parked)", w.parked_count))
        } else if w.parked_bytes.saturating_add(raw.len()) > self.config.max_parked_bytes {
            Some(format!(
                "{} bytes of events (max_parked_bytes is {})",
                w.parked_bytes, self.config.max_parked_bytes
            ))
        } else {
            None
        };
        if let Some(held) = limit {
            return Err(Error::ParkingFull(format!(
                "{held} already wait for subscriptions not yet created; \
                 this one ({} bytes, for {sub}) was not applied",
                raw.len()
            )));
        }
        w.parked_seq += 1;
        let seq = w.parked_seq;
        w.park(sub, seq, raw);
        Ok(Outcome::Parked)
    }

    fn apply_created(&self, w: &mut Writer, ts: i64, c: &Created<'_>) -> Result<Outcome, Error> {
        match w.subs.get(&c.subscription_id) {
            SubState::Current(entry) => {
                check_customer(&c.subscription_id, &entry.tenant, &c.customer_id)?;
                let changed = merge_known(entry, &mut self.names.write(), ts, c)?;
                return Ok(if changed {
                    Outcome::Applied
                } else {
                    Outcome::Stale
                });
            }
            SubState::Superseded(tenant) => {
                check_customer(&c.subscription_id, tenant, &c.customer_id)?;
                return Ok(Outcome::Stale);
            }
            SubState::Unknown => {}
        }
        let period = (c.period_start, c.period_end);
        let Some(entry) = self.tenants.get(&c.customer_id) else {
            let meta = Meta::created(c, ts, &mut self.names.write());
            let row = Entry::new(
                Id::from(&*c.customer_id),
                meta,
                c.total,
                period,
                c.status,
                Usage::default(),
            );
            let entry = self
                .tenants
                .insert(row)
                .unwrap_or_else(|_| unreachable!("the tenant was absent"));
            w.subs.follow(&c.subscription_id, entry);
            self.replay_parked(w, &c.subscription_id);
            return Ok(Outcome::Applied);
        };
        // The row follows the newest subscription.created (ties: the larger id).
        let previous = {
            // Lock order everywhere: names, then a row's meta.
            let mut names = self.names.write();
            let mut meta = entry.meta.lock();
            if (ts, &*c.subscription_id) <= (meta.created_ts, meta.subscription_id.as_str()) {
                None
            } else {
                entry.close_period(&mut meta, &mut w.journal);
                let previous = std::mem::replace(&mut *meta, Meta::created(c, ts, &mut names));
                entry.total.store(c.total, Ordering::Release);
                entry.status.store(c.status as u8, Ordering::Relaxed);
                entry.set_period(period.0, period.1);
                Some(previous.subscription_id)
            }
        };
        match previous {
            Some(old) => {
                w.subs.supersede(&old, entry);
                w.subs.follow(&c.subscription_id, entry);
                self.replay_parked(w, &c.subscription_id);
                Ok(Outcome::Applied)
            }
            None => {
                w.subs
                    .superseded
                    .insert(Id::from(&*c.subscription_id), entry.tenant.clone());
                w.unpark(&c.subscription_id);
                Ok(Outcome::Stale)
            }
        }
    }

    /// Applies, in arrival order, the events that waited for `sub` to be created.
    /// One that now contradicts the table (another customer) is dropped.
    fn replay_parked(&self, w: &mut Writer, sub: &str) {
        for parked in w.unpark(sub) {
            if let Ok(ev) = event::parse(&parked.raw) {
                let _ = self.apply_event(w, &ev, &parked.raw);
            }
        }
    }

    // ---- usage -------------------------------------------------------------------

    /// Committed spend per subscription and period since the last drain, each record
    /// with an idempotency key (at most 64 bytes) stable for this drain.
    pub fn drain_usage(&self) -> Vec<UsageRecord> {
        let mut w = self.writer.lock();
        let mut items = std::mem::take(&mut w.journal);
        for entry in self.tenants.iter() {
            let mut meta = entry.meta.lock();
            let spent = entry.usage.load().spent;
            if spent > meta.drained {
                items.push(UsageItem {
                    tenant_id: entry.tenant.clone(),
                    subscription_id: meta.subscription_id.clone(),
                    period_start: entry.period_start.load(Ordering::Relaxed),
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

fn check_customer(sub: &str, tenant: &str, customer: &str) -> Result<(), Error> {
    if tenant == customer {
        return Ok(());
    }
    Err(Error::InvalidEvent(format!(
        "data.customer_id: subscription {sub} belongs to customer {tenant}, not {customer}"
    )))
}

/// `subscription.created` for the row's own subscription: fields it carries win only
/// when newer; the newest period wins; spend is never reset.
fn merge_known(entry: &Entry, names: &mut Names, ts: i64, c: &Created<'_>) -> Result<bool, Error> {
    let mut meta = entry.meta.lock();
    if meta.currency != c.currency {
        return Err(Error::InvalidEvent(format!(
            "data.currency: subscription {} is in {}, not {}",
            c.subscription_id,
            String::from_utf8_lossy(&meta.currency),
            String::from_utf8_lossy(&c.currency)
        )));
    }
    let mut changed = false;
    if lww(&mut meta.plan_id_ts, ts, false) {
        meta.plan_id = names.id(&c.plan_id);
        changed = true;
    }
    if lww(&mut meta.plan_name_ts, ts, false) {
        meta.plan_name = names.id(&c.plan_name);
        changed = true;
    }
    if lww(&mut meta.total_ts, ts, false) {
        entry.total.store(c.total, Ordering::Release);
        changed = true;
    }
    changed |= set_status(entry, &mut meta, c.status, ts, false);
    if c.period_start > entry.period_start.load(Ordering::Relaxed) {
        entry.set_period(c.period_start, c.period_end);
        changed = true;
    }
    Ok(changed)
}

fn apply_update(entry: &Entry, names: &mut Names, ts: i64, u: &Updated<'_>) -> bool {
    let mut meta = entry.meta.lock();
    let mut changed = false;
    if let Some(plan_id) = &u.plan_id {
        if lww(&mut meta.plan_id_ts, ts, true) {
            meta.plan_id = names.id(plan_id);
            changed = true;
        }
    }
    if let Some(plan_name) = &u.plan_name {
        if lww(&mut meta.plan_name_ts, ts, true) {
            meta.plan_name = names.id(plan_name);
            changed = true;
        }
    }
    if let Some(total) = u.total {
        if lww(&mut meta.total_ts, ts, true) {
            entry.total.store(total, Ordering::Release);
            changed = true;
        }
    }
    if let Some(status) = u.status {
        changed |= set_status(entry, &mut meta, status, ts, true);
    }
    changed
}

/// Sets the status by its rule: `canceled` is terminal and wins whatever its timestamp
/// (so replicas agree whatever the arrival order); other statuses are last-writer-wins
/// among themselves. Returns whether the status changed.
fn set_status(entry: &Entry, meta: &mut Meta, status: Status, ts: i64, wins_tie: bool) -> bool {
    if entry.status() == Status::Canceled {
        return false;
    }
    let applies = if status == Status::Canceled {
        meta.status_ts = meta.status_ts.max(ts);
        true
    } else {
        lww(&mut meta.status_ts, ts, wins_tie)
    };
    if applies {
        entry.status.store(status as u8, Ordering::Relaxed);
    }
    applies
}

/// `invoice.paid` opens a period only if it is newer than the row's; then spend resets.
fn apply_paid(entry: &Entry, journal: &mut Vec<UsageItem>, p: &InvoicePaid<'_>) -> bool {
    if p.period_start <= entry.period_start.load(Ordering::Relaxed) {
        return false;
    }
    let mut meta = entry.meta.lock();
    entry.close_period(&mut meta, journal);
    entry.set_period(p.period_start, p.period_end);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400 * 1_000_000;

    fn created(
        id: &str,
        ts: &str,
        sub: &str,
        cus: &str,
        total: &str,
        start: &str,
        end: &str,
    ) -> String {
        format!(
            r#"{{"event_id":"{id}","event_type":"subscription.created","timestamp":"{ts}","data":{{"subscription_id":"{sub}","customer_id":"{cus}","plan_id":"plan_a","plan_name":"Pro","total_budget":{total},"currency":"USD","period_start":"{start}","period_end":"{end}"}}}}"#
        )
    }

    fn paid(id: &str, ts: &str, sub: &str, start: &str, end: &str) -> String {
        format!(
            r#"{{"event_id":"{id}","event_type":"invoice.paid","timestamp":"{ts}","data":{{"invoice_id":"inv","customer_id":"cus_1","subscription_id":"{sub}","amount_paid":1,"new_period_start":"{start}","new_period_end":"{end}"}}}}"#
        )
    }

    /// The event specification's subscription.created, shortened.
    fn seed_created() -> String {
        created(
            "e1",
            "2025-11-28T10:00:00Z",
            "sub_1",
            "cus_1",
            "100.00",
            "2025-11-28T10:00:00Z",
            "2025-12-28T10:00:00Z",
        )
    }

    fn table_at(now: &str) -> Table {
        let t = Table::new(Config::default());
        t.set_clock(Some(event::parse_time("now", now).unwrap()));
        t
    }

    fn seeded() -> Table {
        let t = table_at("2025-12-01T00:00:00Z");
        let ev = seed_created();
        assert_eq!(t.apply(ev.as_bytes()), Ok(Outcome::Applied));
        t
    }

    #[test]
    fn spend_and_duplicates() {
        let t = seeded();
        assert!(t.try_spend("cus_1", 60_000_000));
        let d = t.spend("cus_1", 50_000_000);
        assert_eq!(
            (d.allowed, d.reason, d.remaining),
            (false, Reason::InsufficientBudget, 40_000_000)
        );
        assert_eq!(t.check("nobody", 1).reason, Reason::UnknownTenant);
        let again = seed_created();
        assert_eq!(t.apply(again.as_bytes()), Ok(Outcome::Duplicate));
        assert_eq!(t.budget("cus_1").unwrap().spent, 60_000_000);
    }

    #[test]
    fn a_late_older_invoice_never_resets_twice() {
        let t = seeded();
        let p2 = paid(
            "p2",
            "2025-12-28T10:05:00Z",
            "sub_1",
            "2025-12-28T10:00:00Z",
            "2026-01-28T10:00:00Z",
        );
        let p1 = paid(
            "p1",
            "2025-11-28T10:05:00Z",
            "sub_1",
            "2025-11-28T10:00:00Z",
            "2025-12-28T10:00:00Z",
        );
        assert!(t.try_spend("cus_1", 5));
        assert_eq!(t.apply(p2.as_bytes()), Ok(Outcome::Applied));
        assert_eq!(t.budget("cus_1").unwrap().spent, 0);
        assert!(t.try_spend("cus_1", 7));
        assert_eq!(t.apply(p1.as_bytes()), Ok(Outcome::Stale));
        assert_eq!(t.budget("cus_1").unwrap().spent, 7);
        let usage = t.drain_usage();
        let amounts: Vec<u64> = usage.iter().map(|u| u.item.amount).collect();
        assert_eq!(amounts, vec![5, 7]);
        assert!(t.drain_usage().is_empty());
    }

    #[test]
    fn parked_until_created() {
        let t = table_at("2025-12-01T00:00:00Z");
        let p = paid(
            "p2",
            "2025-12-28T10:05:00Z",
            "sub_1",
            "2025-12-28T10:00:00Z",
            "2026-01-28T10:00:00Z",
        );
        assert_eq!(t.apply(p.as_bytes()), Ok(Outcome::Parked));
        assert!(t.is_empty());
        let c = created(
            "e1",
            "2025-11-28T10:00:00Z",
            "sub_1",
            "cus_1",
            "100",
            "2025-11-28T10:00:00Z",
            "2025-12-28T10:00:00Z",
        );
        assert_eq!(t.apply(c.as_bytes()), Ok(Outcome::Applied));
        assert_eq!(
            t.budget("cus_1").unwrap().period_start,
            event::parse_time("", "2025-12-28T10:00:00Z").unwrap()
        );
    }

    #[test]
    fn grace_period_then_period_ended() {
        let t = seeded();
        let end = t.budget("cus_1").unwrap().period_end;
        t.set_clock(Some(end + DAY - 1));
        assert!(t.try_spend("cus_1", 1));
        t.set_clock(Some(end + DAY));
        assert_eq!(t.spend("cus_1", 1).reason, Reason::PeriodEnded);
    }

    #[test]
    fn reservations_commit_release_expire() {
        let t = seeded();
        let id = t
            .reserve("cus_1", 30_000_000, 1_000_000)
            .reservation_id
            .unwrap();
        assert_eq!(t.budget("cus_1").unwrap().reserved, 30_000_000);
        assert!(matches!(
            t.commit(id, 40_000_000),
            Err(Error::InvalidAmount(_))
        ));
        t.commit(id, 10_000_000).unwrap();
        assert!(matches!(t.commit(id, 1), Err(Error::UnknownReservation(_))));
        let b = t.budget("cus_1").unwrap();
        assert_eq!((b.spent, b.reserved), (10_000_000, 0));
        let id2 = t
            .reserve("cus_1", 90_000_000, 1_000_000)
            .reservation_id
            .unwrap();
        assert!(!t.try_spend("cus_1", 1));
        let now = t.clock.now();
        t.set_clock(Some(now + 1_000_000));
        assert!(t.try_spend("cus_1", 1), "the expired hold released itself");
        assert!(matches!(t.release(id2), Err(Error::UnknownReservation(_))));
    }

    #[test]
    fn real_threads_hammering_one_budget() {
        let t = Arc::new(seeded());
        let granted: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let t = Arc::clone(&t);
                    s.spawn(move || {
                        let mut n = 0u64;
                        for _ in 0..50_000 {
                            if i % 2 == 0 {
                                n += u64::from(t.try_spend("cus_1", 1_000));
                            } else if let Some(id) =
                                t.reserve("cus_1", 1_000, 60_000_000).reservation_id
                            {
                                t.commit(id, 1_000).unwrap();
                                n += 1;
                            }
                        }
                        n
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(granted, 100_000, "exactly total / amount grants");
        let b = t.budget("cus_1").unwrap();
        assert_eq!((b.spent, b.reserved, b.remaining), (100_000_000, 0, 0));
    }

    /// Readers (names, then a row) against writers switching subscriptions: the lock
    /// order must agree, or this deadlocks.
    #[test]
    fn reads_while_subscriptions_switch() {
        let t = Arc::new(table_at("2025-12-01T00:00:00Z"));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        std::thread::scope(|s| {
            for _ in 0..2 {
                let (t, stop) = (Arc::clone(&t), Arc::clone(&stop));
                s.spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        assert!(t.budgets().len() <= 3);
                        t.budget("cus_1");
                    }
                });
            }
            for i in 0..3_000 {
                let ts = format!("2025-11-28T10:{:02}:{:02}Z", i / 60 % 60, i % 60);
                let ts = format!("{}.{:03}Z", &ts[..19], i / 3600);
                let ev = created(
                    &format!("e{i}"),
                    &ts,
                    &format!("sub_{i}"),
                    &format!("cus_{}", i % 3),
                    "1",
                    "2025-11-28T10:00:00Z",
                    "2025-12-28T10:00:00Z",
                );
                t.apply(ev.as_bytes()).unwrap();
            }
            stop.store(true, Ordering::Relaxed);
        });
        let subs: Vec<String> = t
            .budgets()
            .into_iter()
            .map(|b| b.subscription_id.to_string())
            .collect();
        assert_eq!(subs, ["sub_2997", "sub_2998", "sub_2999"]);
    }

    /// Spenders race snapshots on real threads. At each quiescent point, either the
    /// table is flagged dirty or the last snapshot holds every spend.
    #[test]
    fn a_spend_racing_a_snapshot_leaves_the_table_dirty() {
        let t = Arc::new(table_at("2025-12-01T00:00:00Z"));
        for i in 0..64 {
            let ev = created(
                &format!("e{i}"),
                "2025-11-28T10:00:00Z",
                &format!("sub_{i}"),
                &format!("cus_{i}"),
                "1000000",
                "2025-11-28T10:00:00Z",
                "2025-12-28T10:00:00Z",
            );
            t.apply(ev.as_bytes()).unwrap();
        }
        let spent = |t: &Table| t.budgets().iter().map(|b| b.spent).sum::<u64>();
        let (mut raced, mut clean) = (0, 0);
        for round in 0..400u64 {
            let last = std::thread::scope(|s| {
                for k in 0..3u64 {
                    let t = Arc::clone(&t);
                    s.spawn(move || {
                        for i in 0..50 {
                            assert!(t.try_spend(&format!("cus_{}", (round + k * 13 + i) % 64), 1));
                        }
                    });
                }
                crate::snapshot::encode(&t, 0)
            });
            let restored = crate::snapshot::decode(&last).unwrap();
            if t.dirty() {
                raced += 1;
            } else {
                clean += 1;
                assert_eq!(
                    spent(&restored),
                    spent(&t),
                    "a clean table's snapshot is complete"
                );
            }
            crate::snapshot::encode(&t, 0);
            assert!(!t.dirty());
        }
        assert_eq!(spent(&t), 400 * 150);
        assert!(
            raced > 0 && clean > 0,
            "both outcomes seen ({raced} raced, {clean} clean)"
        );
    }

    #[test]
    fn what_makes_a_table_dirty() {
        let t = seeded();
        assert!(t.dirty());
        crate::snapshot::encode(&t, 0);
        assert!(!t.dirty());
        assert!(t.check("cus_1", 1).allowed && t.try_spend("cus_1", 0));
        assert!(!t.try_spend("cus_1", u64::MAX) && !t.try_spend("nobody", 1));
        assert!(t.drain_usage().is_empty());
        assert!(
            !t.dirty(),
            "reads, refusals and empty drains change nothing"
        );
        let id = t.reserve("cus_1", 5, 1_000).reservation_id.unwrap();
        assert!(t.dirty());
        crate::snapshot::encode(&t, 0);
        let now = t.clock.now();
        t.set_clock(Some(now + 1_000));
        t.budget("cus_1");
        assert!(t.dirty(), "the hold expired");
        assert!(t.release(id).is_err());
        assert!(crate::snapshot::decode(&crate::snapshot::encode(&t, 0)).is_ok_and(|r| !r.dirty()));
    }

    #[test]
    fn requeued_usage_is_drained_again() {
        let t = seeded();
        assert!(t.try_spend("cus_1", 7));
        let first = t.drain_usage();
        assert_eq!(first.len(), 1);
        assert!(first[0].idempotency_key.len() <= crate::event::MAX_KEY_LEN);
        t.requeue_usage(first.clone());
        assert!(t.try_spend("cus_1", 2));
        let again = t.drain_usage();
        let amounts: Vec<u64> = again.iter().map(|r| r.item.amount).collect();
        assert_eq!(amounts, [7, 2]);
        assert_ne!(again[0].idempotency_key, first[0].idempotency_key);
        assert!(t.drain_usage().is_empty());
    }

    #[test]
    fn canceled_is_terminal_whatever_the_order() {
        let cancel = r#"{"event_id":"c","event_type":"subscription.updated","timestamp":"2025-11-29T00:00:00Z","data":{"subscription_id":"sub_1","status":"canceled"}}"#;
        let revive = r#"{"event_id":"r","event_type":"subscription.updated","timestamp":"2025-11-30T00:00:00Z","data":{"subscription_id":"sub_1","status":"active","new_total_budget":5}}"#;
        let failed = r#"{"event_id":"f","event_type":"invoice.payment_failed","timestamp":"2025-12-01T00:00:00Z","data":{"subscription_id":"sub_1","customer_id":"cus_1","invoice_id":"i"}}"#;
        for order in [
            [cancel, revive, failed],
            [revive, failed, cancel],
            [failed, cancel, revive],
        ] {
            let t = seeded();
            for raw in order {
                t.apply(raw.as_bytes()).unwrap();
            }
            let b = t.budget("cus_1").unwrap();
            assert_eq!((b.status, b.total), (Status::Canceled, 5_000_000));
            assert_eq!(t.spend("cus_1", 1).reason, Reason::Inactive);
            let r = crate::snapshot::decode(&crate::snapshot::encode(&t, 0)).unwrap();
            let later = failed
                .replace(r#""f""#, r#""f2""#)
                .replace("12-01", "12-02");
            assert_eq!(r.apply(later.as_bytes()), Ok(Outcome::Stale));
        }
    }

    #[test]
    fn snapshot_round_trip_and_garbage() {
        let t = seeded();
        assert!(t.try_spend("cus_1", 11));
        let id = t.reserve("cus_1", 5, 60_000_000).reservation_id.unwrap();
        let bytes = crate::snapshot::encode(&t, 42);
        let r = crate::snapshot::decode(&bytes).unwrap();
        assert_eq!(r.cursor(), 42);
        r.set_clock(Some(t.clock.now()));
        assert_eq!(r.budget("cus_1"), t.budget("cus_1"));
        r.commit(id, 5).unwrap();
        let again = seed_created();
        assert_eq!(r.apply(again.as_bytes()), Ok(Outcome::Duplicate));
        for cut in [0, 5, 12, bytes.len() / 2, bytes.len() - 1] {
            assert!(matches!(
                crate::snapshot::decode(&bytes[..cut]),
                Err(Error::InvalidSnapshot(_))
            ));
        }
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert!(matches!(
            crate::snapshot::decode(&flipped),
            Err(Error::InvalidSnapshot(_))
        ));
    }
}
