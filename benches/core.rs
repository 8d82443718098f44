//! Criterion benchmarks of the Rust core, each beside a baseline measured in the same
//! run: a `Mutex<HashMap>` check-and-debit (what a straightforward implementation does);
//! `try_spend_leased` is `try_spend` on a row bounded by a lease allowance too.
//! Run with `make bench` (or `cargo bench --bench core`).

use _core::{Config, Table};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Mutex;

const TENANTS: usize = 10_000;

fn created(i: usize) -> String {
    format!(
        r#"{{"event_id":"evt_{i}","event_type":"subscription.created","timestamp":"2026-01-01T00:00:00Z","data":{{"subscription_id":"sub_{i}","customer_id":"cus_{i}","plan_id":"plan_pro","plan_name":"Pro","total_budget":1000000,"currency":"USD","period_start":"2026-01-01T00:00:00Z","period_end":"2099-01-01T00:00:00Z"}}}}"#
    )
}

fn loaded(n: usize) -> Table {
    let t = Table::new(Config::default());
    for i in 0..n {
        t.apply(created(i).as_bytes()).expect("valid event");
    }
    t
}

fn spend(c: &mut Criterion) {
    let table = loaded(TENANTS);
    let baseline: Mutex<HashMap<String, (u64, u64)>> = Mutex::new(
        (0..TENANTS)
            .map(|i| (format!("cus_{i}"), (0, u64::MAX)))
            .collect(),
    );
    let mut g = c.benchmark_group("check_and_debit");
    g.bench_function("baseline_mutex_hashmap", |b| {
        b.iter(|| {
            let mut m = baseline.lock().unwrap();
            let row = m.get_mut(black_box("cus_42")).unwrap();
            let amount = black_box(1);
            let ok = row.0 + amount <= row.1;
            if ok {
                row.0 += amount;
            }
            black_box(ok)
        })
    });
    g.bench_function("try_spend", |b| {
        b.iter(|| black_box(table.try_spend(black_box("cus_42"), 1)))
    });
    let leased = loaded(TENANTS);
    leased.attach_leases();
    let period = leased.lease_state("cus_42").expect("a row").period_start;
    assert!(leased.grant_allowance("cus_42", period, u64::MAX, false));
    g.bench_function("try_spend_leased", |b| {
        b.iter(|| black_box(leased.try_spend(black_box("cus_42"), 1)))
    });
    g.bench_function("check", |b| {
        b.iter(|| black_box(table.check(black_box("cus_42"), 1)))
    });
    g.bench_function("reserve_commit", |b| {
        b.iter(|| {
            let id = table
                .reserve(black_box("cus_42"), 1, 60_000_000)
                .reservation_id
                .unwrap();
            table.commit(id, 1).unwrap();
        })
    });
    g.finish();
}

fn apply(c: &mut Criterion) {
    let mut g = c.benchmark_group("apply");
    let raw = created(7);
    g.bench_function("baseline_serde_json_value", |b| {
        b.iter(|| black_box(serde_json::from_str::<serde_json::Value>(black_box(&raw)).unwrap()))
    });
    g.bench_function("parse_and_validate", |b| {
        b.iter(|| black_box(_core::event::parse(black_box(raw.as_bytes())).is_ok()))
    });
    g.bench_function("apply_new_tenant", |b| {
        b.iter_batched(
            || Table::new(Config::default()),
            |t| t.apply(raw.as_bytes()).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn snapshots(c: &mut Criterion) {
    let table = loaded(100_000);
    let bytes = _core::snapshot::encode(&table, 1);
    let mut g = c.benchmark_group("snapshot_100k");
    g.sample_size(10);
    g.bench_function("baseline_memcpy", |b| b.iter(|| black_box(bytes.clone())));
    g.bench_function("encode", |b| {
        b.iter(|| black_box(_core::snapshot::encode(&table, 1)))
    });
    g.bench_function("decode", |b| {
        b.iter(|| black_box(_core::snapshot::decode(&bytes).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, spend, apply, snapshots);
criterion_main!(benches);
