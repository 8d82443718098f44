//! Applying events in any order, and the usage they leave to drain.

use super::*;
use crate::event::Status;
use crate::snapshot::{decode, encode};
use std::sync::atomic::Ordering;
use std::sync::Arc;

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
        let r = decode(&encode(&t, 0)).unwrap();
        let later = failed
            .replace(r#""f""#, r#""f2""#)
            .replace("12-01", "12-02");
        assert_eq!(r.apply(later.as_bytes()), Ok(Outcome::Stale));
    }
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
