//! Two-phase spend: holds committed, released or expired exactly once, and what a late
//! commit or release is told.

use super::*;
use crate::error::{Error, Unresolvable};
use crate::snapshot::{decode, encode};
use std::sync::Arc;

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
    assert!(matches!(
        t.commit(id, 1),
        Err(Error::UnknownReservation(..))
    ));
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
    assert!(matches!(t.release(id2), Err(Error::UnknownReservation(..))));
}

/// Why `result` (of a commit or release) failed, if it failed on the reservation id.
fn why(result: Result<(), Error>) -> Option<Unresolvable> {
    match result {
        Err(Error::UnknownReservation(_, why)) => Some(why),
        _ => None,
    }
}

#[test]
fn a_late_commit_or_release_says_which_case_it_is() {
    let t = seeded();
    let hold = |ttl_us| t.reserve("cus_1", 10, ttl_us).reservation_id.unwrap();
    let (committed, released) = (hold(60_000_000), hold(60_000_000));
    let (expired, swept) = (hold(1_000), hold(1_000));
    t.commit(committed, 5).unwrap();
    t.release(released).unwrap();
    let now = t.clock.now();
    t.set_clock(Some(now + 1_000));
    assert_eq!(why(t.commit(expired, 1)), Some(Unresolvable::Expired));
    assert!(t.try_spend("cus_1", 0), "expires `swept`");
    for id in [expired, swept] {
        assert_eq!(why(t.commit(id, 1)), Some(Unresolvable::Expired));
        assert_eq!(why(t.release(id)), Some(Unresolvable::Expired));
    }
    for (id, fate) in [
        (committed, Unresolvable::Committed),
        (released, Unresolvable::Released),
    ] {
        assert_eq!(why(t.commit(id, 1)), Some(fate));
        assert_eq!(why(t.release(id)), Some(fate));
    }
    assert_eq!(
        why(t.release(swept + 1)),
        Some(Unresolvable::Unknown),
        "never issued"
    );
    let messages: Vec<String> = [committed, released, expired, swept + 1]
        .into_iter()
        .map(|id| t.release(id).unwrap_err().to_string())
        .collect();
    assert_eq!(
        messages[..3],
        [
            format!("reservation {committed} was already committed"),
            format!("reservation {released} was already released"),
            format!("reservation {expired} expired"),
        ]
    );
    assert!(messages[3].contains("is unknown"), "{}", messages[3]);
    let b = t.budget("cus_1").unwrap();
    assert_eq!((b.spent, b.reserved), (5, 0), "late calls change nothing");

    let restored = decode(&encode(&t, 0)).unwrap();
    assert_eq!(
        why(restored.release(committed)),
        Some(Unresolvable::Unknown),
        "a restored table remembers no resolution"
    );
}

#[test]
fn resolutions_are_remembered_for_a_bounded_number_of_later_ones() {
    let t = seeded();
    let first = t.reserve("cus_1", 1, 60_000_000).reservation_id.unwrap();
    t.commit(first, 1).unwrap();
    for _ in 1..super::super::resolved::REMEMBERED {
        let id = t.reserve("cus_1", 1, 60_000_000).reservation_id.unwrap();
        t.release(id).unwrap();
    }
    assert_eq!(why(t.commit(first, 1)), Some(Unresolvable::Committed));
    let id = t.reserve("cus_1", 1, 60_000_000).reservation_id.unwrap();
    t.release(id).unwrap();
    assert_eq!(why(t.commit(first, 1)), Some(Unresolvable::Unknown));
    assert_eq!(why(t.commit(id, 1)), Some(Unresolvable::Released));
}

/// Real threads commit and release the same holds: each resolves exactly once, the
/// losers are told so (or, inside the winner's few instructions, that it is unknown),
/// and afterwards everyone is told how it ended.
#[test]
fn racing_resolutions_resolve_once() {
    let t = Arc::new(seeded());
    let ids: Vec<u64> = (0..2_000)
        .map(|_| t.reserve("cus_1", 1, 60_000_000).reservation_id.unwrap())
        .collect();
    let outcomes: Vec<Vec<Result<(), Error>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|k| {
                let (t, ids) = (Arc::clone(&t), &ids);
                s.spawn(move || {
                    ids.iter()
                        .map(|&id| {
                            if k % 2 == 0 {
                                t.commit(id, 1)
                            } else {
                                t.release(id)
                            }
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut committed = 0;
    for (i, &id) in ids.iter().enumerate() {
        let won: Vec<usize> = (0..4).filter(|&k| outcomes[k][i].is_ok()).collect();
        assert_eq!(won.len(), 1, "reservation {id} resolved by {won:?}");
        let fate = if won[0] % 2 == 0 {
            committed += 1;
            Unresolvable::Committed
        } else {
            Unresolvable::Released
        };
        for k in (0..4).filter(|&k| k != won[0]) {
            let told = why(outcomes[k][i].clone());
            assert!(
                told == Some(fate) || told == Some(Unresolvable::Unknown),
                "{told:?}"
            );
        }
        assert_eq!(why(t.release(id)), Some(fate));
    }
    let b = t.budget("cus_1").unwrap();
    assert_eq!((b.spent, b.reserved), (committed, 0));
}
