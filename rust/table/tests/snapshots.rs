//! Snapshots of live tables: what marks a table dirty, round trips, and tables whose
//! insides were tampered with before they were written.

use super::*;
use crate::counters::{Usage, UsageCell};
use crate::error::Error;
use crate::snapshot::tests::{assert_rejected, table, CREATED};
use crate::snapshot::{decode, encode};
use std::sync::atomic::Ordering;
use std::sync::Arc;

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
            encode(&t, 0)
        });
        let restored = decode(&last).unwrap();
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
        encode(&t, 0);
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
    encode(&t, 0);
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
    encode(&t, 0);
    let now = t.clock.now();
    t.set_clock(Some(now + 1_000));
    t.budget("cus_1");
    assert!(t.dirty(), "the hold expired");
    assert!(t.release(id).is_err());
    assert!(decode(&encode(&t, 0)).is_ok_and(|r| !r.dirty()));
}

#[test]
fn snapshot_round_trip_and_garbage() {
    let t = seeded();
    assert!(t.try_spend("cus_1", 11));
    let id = t.reserve("cus_1", 5, 60_000_000).reservation_id.unwrap();
    let bytes = encode(&t, 42);
    let r = decode(&bytes).unwrap();
    assert_eq!(r.cursor(), 42);
    r.set_clock(Some(t.clock.now()));
    assert_eq!(r.budget("cus_1"), t.budget("cus_1"));
    r.commit(id, 5).unwrap();
    let again = seed_created();
    assert_eq!(r.apply(again.as_bytes()), Ok(Outcome::Duplicate));
    for cut in [0, 5, 12, bytes.len() / 2, bytes.len() - 1] {
        assert!(matches!(
            decode(&bytes[..cut]),
            Err(Error::InvalidSnapshot(_))
        ));
    }
    let mut flipped = bytes.clone();
    flipped[20] ^= 1;
    assert!(matches!(decode(&flipped), Err(Error::InvalidSnapshot(_))));
}

fn row(t: &Table) -> &row::Row {
    t.tenants.get("cus_1").unwrap()
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
            Box::new(|t| row(t).meta.lock().stamps.status = i64::MIN),
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
                t.writer.lock().subs.add_superseded("sub_0", "cus_nobody");
            }),
        ),
        (
            "a hold beyond 64-bit signed",
            Box::new(|t| {
                let id = t.holds.next_id.fetch_add(1, Ordering::Relaxed);
                let hold = Reservation {
                    tenant: Some(Id::from("cus_1")),
                    amount: u64::MAX,
                    expires_at: i64::MAX,
                };
                t.holds.outstanding.pin().insert(id, hold);
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
        t.writer.lock().parking.put("sub_2", 1, parked.as_bytes());
        assert_rejected(&encode(&t, 0), "too many parked bytes");
    }
    let t = table(Config::default());
    t.writer.lock().parking.put("sub_2", 5, parked.as_bytes());
    assert_rejected(
        &encode(&t, 0),
        "a parked sequence number ahead of the counter",
    );
}

/// Holds taken and released on other threads while snapshots are written: every
/// snapshot restores (each hold in it has an id below the next id it records).
#[test]
fn snapshots_written_while_holds_are_taken_restore() {
    let t = seeded();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let failures = std::thread::scope(|s| {
        for _ in 0..2 {
            let (t, stop) = (&t, &stop);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let id = t.reserve("cus_1", 1, 60_000_000).reservation_id.unwrap();
                    t.release(id).unwrap();
                }
            });
        }
        let failures: Vec<Error> = (0..3_000)
            .filter_map(|_| decode(&encode(&t, 0)).err())
            .collect();
        stop.store(true, Ordering::Relaxed);
        failures
    });
    assert_eq!(failures.first(), None, "{} of 3000 failed", failures.len());
}
