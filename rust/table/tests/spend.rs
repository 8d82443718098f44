//! The hot path: spends, refusals, and real threads racing for one budget.

use super::*;
use std::sync::Arc;

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
fn grace_period_then_period_ended() {
    let t = seeded();
    let end = t.budget("cus_1").unwrap().period_end;
    t.set_clock(Some(end + DAY - 1));
    assert!(t.try_spend("cus_1", 1));
    t.set_clock(Some(end + DAY));
    assert_eq!(t.spend("cus_1", 1).reason, Reason::PeriodEnded);
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
