//! The lease allowance: admission bounded by `min(total, allowance)`, grants and shrinks
//! tied to a period, and real threads racing a shrink.

use super::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

const PERIOD: &str = "2025-11-28T10:00:00Z";

fn start() -> i64 {
    event::parse_time("period", PERIOD).unwrap()
}

fn leased() -> Table {
    let t = seeded();
    assert!(t.try_spend("cus_1", 1_000_000));
    t.attach_leases();
    t
}

#[test]
fn attached_rows_admit_only_what_was_granted() {
    let t = leased();
    let s = t.lease_state("cus_1").unwrap();
    assert_eq!(
        (s.spent, s.allowance, s.period_start),
        (1_000_000, 1_000_000, start())
    );
    assert_eq!(s.total, 100_000_000);
    assert!(t.take_lease_wants().is_empty());
    let d = t.spend("cus_1", 1);
    assert_eq!(
        (d.allowed, d.reason, d.remaining),
        (false, Reason::LeaseExhausted, 0)
    );
    assert_eq!(t.take_lease_wants(), vec![Id::from("cus_1")]);
    assert!(t.take_lease_wants().is_empty(), "taken once");
    assert!(t.grant_allowance("cus_1", start(), 3_000_000, false));
    assert!(t.try_spend("cus_1", 1_500_000));
    let hold = t.reserve("cus_1", 500_000, 60_000_000);
    assert_eq!((hold.allowed, hold.remaining), (true, 0));
    assert_eq!(t.check("cus_1", 1).reason, Reason::LeaseExhausted);
    t.release(hold.reservation_id.unwrap()).unwrap();
    assert!(t.grant_allowance("cus_1", start(), 1, true), "never lowers");
    assert_eq!(t.lease_state("cus_1").unwrap().allowance, 3_000_000);
    assert!(t.try_spend("cus_1", 500_000));
    assert_eq!(
        t.spend("cus_1", 1).reason,
        Reason::InsufficientBudget,
        "the shared budget said it had no more room"
    );
    assert!(
        !t.grant_allowance("cus_1", start() + 1, 9, false),
        "another period"
    );
    assert!(!t.grant_allowance("nobody", start(), 9, false));
    assert_eq!(t.shrink_allowance("nobody", start(), 0), None);
}

#[test]
fn the_total_still_bounds_a_larger_allowance() {
    let t = leased();
    assert!(t.grant_allowance("cus_1", start(), u64::MAX, false));
    let d = t.spend("cus_1", 100_000_000);
    assert_eq!((d.allowed, d.reason), (false, Reason::InsufficientBudget));
}

#[test]
fn a_shrink_keeps_what_is_used() {
    let t = leased();
    assert!(t.grant_allowance("cus_1", start(), 10_000_000, false));
    assert!(t.try_spend("cus_1", 2_000_000));
    assert_eq!(
        t.shrink_allowance("cus_1", start(), 5_000_000),
        Some(5_000_000)
    );
    assert_eq!(t.shrink_allowance("cus_1", start(), 0), Some(3_000_000));
    assert_eq!(t.spend("cus_1", 1).reason, Reason::LeaseExhausted);
}

#[test]
fn a_new_period_starts_a_new_allowance() {
    let t = leased();
    assert!(t.grant_allowance("cus_1", start(), 10_000_000, true));
    let hold = t
        .reserve("cus_1", 2_000_000, 60 * DAY)
        .reservation_id
        .unwrap();
    let ev = paid(
        "e2",
        "2025-12-28T10:00:00Z",
        "sub_1",
        "2025-12-28T10:00:00Z",
        "2026-01-28T10:00:00Z",
    );
    assert_eq!(t.apply(ev.as_bytes()), Ok(Outcome::Applied));
    let s = t.lease_state("cus_1").unwrap();
    assert_eq!(
        (s.spent, s.reserved, s.allowance),
        (0, 2_000_000, 2_000_000)
    );
    assert_eq!(
        t.spend("cus_1", 1).reason,
        Reason::LeaseExhausted,
        "not exhausted any more"
    );
    t.commit(hold, 1_000_000).unwrap();
    assert!(
        !t.grant_allowance("cus_1", start(), 50_000_000, false),
        "the old period"
    );
    assert!(t.grant_allowance("cus_1", s.period_start, 3_000_000, false));
    assert!(t.try_spend("cus_1", 2_000_000));
    assert!(!t.try_spend("cus_1", 1));
}

#[test]
fn threads_racing_shrinks_never_exceed_what_is_held() {
    let t = Arc::new(leased());
    let stop = Arc::new(AtomicBool::new(false));
    let spent = Arc::new(AtomicU64::new(1_000_000));
    std::thread::scope(|s| {
        for _ in 0..4 {
            let (t, stop, spent) = (Arc::clone(&t), Arc::clone(&stop), Arc::clone(&spent));
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if t.try_spend("cus_1", 1_000) {
                        spent.fetch_add(1_000, Ordering::Relaxed);
                    }
                }
            });
        }
        // Grant and take back repeatedly; whatever a shrink says is held bounds the spend
        // (a debit in flight may show for a moment before it undoes itself).
        for round in 0..2_000u64 {
            assert!(t.grant_allowance("cus_1", start(), held(&t) + 50_000, false));
            let to = held(&t) + (round % 7) * 1_000;
            let kept = t.shrink_allowance("cus_1", start(), to).unwrap();
            let used = t.lease_state("cus_1").unwrap().spent;
            assert!(used <= kept + 4 * 1_000, "used {used}, held {kept}");
        }
        stop.store(true, Ordering::Relaxed);
    });
    let kept = t.shrink_allowance("cus_1", start(), 0).unwrap();
    let s = t.lease_state("cus_1").unwrap();
    assert_eq!(
        s.spent,
        spent.load(Ordering::Relaxed),
        "undone debits were refused"
    );
    assert_eq!(s.spent, kept);
}

fn held(t: &Table) -> u64 {
    t.lease_state("cus_1").unwrap().spent
}
