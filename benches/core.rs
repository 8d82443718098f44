//! Criterion benchmarks of the Rust core, each beside a baseline measured in the same
//! run: a `Mutex<HashMap>` check-and-debit (what a straightforward implementation does);
//! for match expressions, the `cel` crate's interpreter on the same expression with a
//! prebuilt context. `try_spend_leased` is `try_spend` on a row bounded by a lease
//! allowance too. Run with `make bench` (or `cargo bench --bench core`).

use _core::routing::{compile, Attr, Attrs, BudgetFields, Fail, Field, Key, Scope, Value};
use _core::{Config, Table};
use cel::objects::Key as CelKey;
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

/// Request attributes held in Rust, a few pairs (the Python bindings read a dict instead).
struct Request(Vec<(&'static str, Value)>);

impl Request {
    fn find(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

impl Attrs for Request {
    /// Strings lent, as the Python bindings lend a `str`.
    fn get(&self, key: &Key) -> Result<Option<Attr<'_>>, Fail> {
        Ok(self.find(key.name()).map(Attr::from))
    }

    fn get_dyn(&self, key: &str) -> Result<Option<Value>, Fail> {
        Ok(self.find(key).cloned())
    }
}

struct Budget;

impl BudgetFields for Budget {
    fn field(&self, field: Field) -> Option<Value> {
        Some(match field {
            Field::RemainingFraction => Value::Double(0.5),
            _ => Value::Int(1),
        })
    }
}

/// The shapes the issue names: one comparison; three clauses with `in` and a budget
/// fraction; a regular expression.
const SHAPES: [(&str, &str); 3] = [
    ("eq", "request.model == 'gpt-4o'"),
    (
        "in_and_budget",
        "request.model in ['gpt-4o', 'gpt-4o-mini'] && request.region in ['eu', 'us'] \
         && budget.remaining_fraction > 0.2",
    ),
    ("matches", "request.model.matches('^gpt-4o(-mini)?$')"),
];

fn expressions(c: &mut Criterion) {
    let request = Request(vec![
        ("model", Value::str("gpt-4o")),
        ("region", Value::str("eu")),
    ]);
    let mut context = cel::Context::default();
    let cel_request: HashMap<CelKey, cel::Value> = HashMap::from([
        (CelKey::from("model"), cel::Value::from("gpt-4o")),
        (CelKey::from("region"), cel::Value::from("eu")),
    ]);
    context.add_variable_from_value("request", cel_request);
    let cel_budget: HashMap<CelKey, cel::Value> =
        HashMap::from([(CelKey::from("remaining_fraction"), cel::Value::Float(0.5))]);
    context.add_variable_from_value("budget", cel_budget);
    let mut g = c.benchmark_group("cel_expression");
    for (name, source) in SHAPES {
        let program = cel::Program::compile(source).expect("valid CEL");
        assert_eq!(program.execute(&context), Ok(cel::Value::Bool(true)));
        g.bench_function(format!("{name}/baseline_cel_interpreter"), |b| {
            b.iter(|| black_box(program.execute(black_box(&context))))
        });
        let expr = compile(source).expect("valid policy");
        let slots: Vec<u16> = (0..expr.keys().len() as u16).collect();
        let run = || {
            // A fresh attribute cache per evaluation, as `route` has per call.
            let cache: [std::cell::OnceCell<_>; 4] = Default::default();
            let scope = Scope {
                attrs: &request,
                cache: &cache,
                slots: &slots,
                budget: &Budget,
            };
            expr.matches(black_box(&scope))
        };
        assert_eq!(run(), Ok(true));
        g.bench_function(format!("{name}/compiled"), |b| b.iter(|| black_box(run())));
    }
    g.finish();
}

criterion_group!(benches, spend, apply, snapshots, expressions);
criterion_main!(benches);
