//! Tests of the table, by concern; the helpers build the events they apply.

use super::*;
use crate::event;

mod events;
mod holds;
mod lease;
mod snapshots;
mod spend;

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
