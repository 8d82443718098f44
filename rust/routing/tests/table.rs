//! The routing table: layers, events, strategies, health, threads.

use super::attrs;
use crate::routing::{NoBudget, Policy, PolicyDef, Replicated, RoutingTable, TargetDef, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn def(
    id: &str,
    priority: i64,
    expr: &str,
    strategy: &str,
    targets: &[(&str, u64, u64)],
) -> Policy {
    Policy::compile(PolicyDef {
        id: id.to_string(),
        priority,
        match_expression: expr.to_string(),
        strategy: strategy.to_string(),
        targets: targets
            .iter()
            .map(|&(name, weight, cost)| TargetDef {
                name: name.to_string(),
                weight,
                cost,
            })
            .collect(),
    })
    .unwrap()
}

fn failover(id: &str, priority: i64, targets: &[&str]) -> Policy {
    let t: Vec<(&str, u64, u64)> = targets.iter().map(|&n| (n, 1, 0)).collect();
    def(id, priority, "true", "failover", &t)
}

/// `(policy, target, fallbacks)` for an empty request.
fn route(t: &RoutingTable) -> Option<(String, String, Vec<String>)> {
    let request = attrs(&[]);
    t.route(&request, &NoBudget, |r| {
        let fallbacks = r.fallbacks().map(str::to_string).collect();
        (r.policy.id().to_string(), r.target().to_string(), fallbacks)
    })
}

fn target(t: &RoutingTable) -> Option<String> {
    route(t).map(|(_, target, _)| target)
}

fn event(ts: i64, tiebreak: u128, policy: Option<Policy>) -> Replicated {
    Replicated {
        ts,
        tiebreak,
        policy: policy.map(Arc::new),
    }
}

#[test]
fn a_set_with_a_repeated_id_is_refused_whole() {
    let t = RoutingTable::default();
    t.set_policies(vec![failover("a", 1, &["x"])]).unwrap();
    let refused = t.set_policies(vec![failover("b", 1, &["y"]), failover("b", 2, &["z"])]);
    assert_eq!(refused, Err("b".to_string()));
    assert_eq!(target(&t).as_deref(), Some("x"));
}

#[test]
fn events_are_last_writer_wins_per_id_with_tombstones() {
    let t = RoutingTable::default();
    assert!(t.apply_event("p", event(10, 1, Some(failover("p", 1, &["v10"])))));
    assert!(!t.apply_event("p", event(5, 9, Some(failover("p", 1, &["v5"])))));
    assert!(
        t.apply_event("p", event(10, 2, Some(failover("p", 1, &["v10b"])))),
        "tie: larger hash"
    );
    assert_eq!(target(&t).as_deref(), Some("v10b"));
    assert!(t.apply_event("p", event(20, 0, None)));
    assert!(!t.apply_event("p", event(15, 0, Some(failover("p", 1, &["late"])))));
    assert_eq!(target(&t), None);
    assert_eq!(t.export().1.len(), 1, "the tombstone is kept");
}

#[test]
fn an_event_replaces_or_deletes_the_local_policy_with_its_id() {
    let t = RoutingTable::default();
    t.set_policies(vec![failover("p", 1, &["local"]), failover("q", 2, &["q"])])
        .unwrap();
    t.apply_event("p", event(1, 0, Some(failover("p", 3, &["billing"]))));
    let ids: Vec<String> = t.policies().iter().map(|p| p.id().to_string()).collect();
    assert_eq!(ids, ["q", "p"]);
    assert_eq!(target(&t).as_deref(), Some("q"));
    t.apply_event("p", event(2, 0, None));
    assert_eq!(t.policies().len(), 1);
}

#[test]
fn strategies_order_healthy_targets() {
    let t = RoutingTable::default();
    let cheap = def(
        "cheap",
        1,
        "true",
        "least_cost",
        &[("x", 1, 30), ("y", 1, 10), ("z", 1, 10)],
    );
    t.set_policies(vec![cheap, failover("last", 2, &["a", "b"])])
        .unwrap();
    let r = |p: &str, t: &str, f: &[&str]| {
        Some((
            p.to_string(),
            t.to_string(),
            f.iter().map(|s| s.to_string()).collect(),
        ))
    };
    assert_eq!(route(&t), r("cheap", "y", &["z", "x"]));
    t.mark_down("y", 60_000_000);
    assert_eq!(route(&t), r("cheap", "z", &["x"]));
    t.mark_down("z", 60_000_000);
    t.mark_down("x", 60_000_000);
    assert_eq!(route(&t), r("last", "a", &["b"]));
    t.mark_up("y");
    assert_eq!(route(&t), r("cheap", "y", &[]));
    t.mark_down("y", 1);
    std::thread::sleep(std::time::Duration::from_millis(2));
    assert_eq!(route(&t), r("cheap", "y", &[]), "back after its time");
}

#[test]
fn weighted_follows_the_weights() {
    let t = RoutingTable::default();
    let w = def(
        "w",
        1,
        "true",
        "weighted",
        &[("a", 1, 0), ("b", 4, 0), ("never", 0, 0)],
    );
    t.set_policies(vec![w]).unwrap();
    let n = 50_000;
    let mut b = 0;
    for _ in 0..n {
        let (_, target, fallbacks) = route(&t).unwrap();
        assert_ne!(target, "never");
        assert_eq!(fallbacks.len(), 1);
        b += usize::from(target == "b");
    }
    let share = b as f64 / n as f64;
    // 0.8 within five standard deviations (sqrt(0.16 / n) ~ 0.0018).
    assert!((share - 0.8).abs() < 0.01, "{share}");
}

#[test]
fn evaluation_errors_and_no_match_are_counted() {
    let t = RoutingTable::default();
    t.set_policies(vec![def(
        "p",
        1,
        "request.x == 1",
        "failover",
        &[("a", 1, 0)],
    )])
    .unwrap();
    assert_eq!(target(&t), None);
    let c = t.counters();
    assert_eq!((c.evaluation_errors, c.no_match), (1, 1));
    let request = attrs(&[("x", Value::Int(1))]);
    assert!(t.route(&request, &NoBudget, |_| ()).is_some());
    assert_eq!(t.counters().no_match, 1);
}

#[test]
fn readers_see_whole_sets_while_a_writer_swaps_them() {
    let t = Arc::new(RoutingTable::default());
    let generation = |n: u64| {
        vec![
            def(
                "a",
                1,
                &format!("request.n >= {n} - {n}"),
                "failover",
                &[(&format!("t{n}"), 1, 0)],
            ),
            failover("b", 2, &[&format!("u{n}")]),
        ]
    };
    t.set_policies(generation(0)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..8)
        .map(|k| {
            let (t, stop) = (Arc::clone(&t), Arc::clone(&stop));
            std::thread::spawn(move || {
                let request = attrs(&[("n", Value::Int(k))]);
                let mut seen = 0u64;
                while !stop.load(Ordering::Relaxed) || seen < 1000 {
                    let target = t.route(&request, &NoBudget, |r| r.target().to_string());
                    assert!(target.is_some_and(|t| t.starts_with('t')));
                    let policies = t.policies();
                    let generations: std::collections::HashSet<&str> = policies
                        .iter()
                        .map(|p| &p.def.targets[0].name[1..])
                        .collect();
                    assert_eq!(generations.len(), 1, "a torn set");
                    seen += 1;
                }
                seen
            })
        })
        .collect();
    for n in 1..=500 {
        t.set_policies(generation(n)).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() >= 1000);
    }
}
