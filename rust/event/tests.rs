//! Tests of [`parse`]: what a valid event is, and errors that name the field.

use super::*;

const CREATED: &str = r#"{"event_id":"evt_12345","event_type":"subscription.created","timestamp":"2025-11-28T10:00:00Z","data":{"subscription_id":"sub_67890","customer_id":"cus_12345","plan_id":"plan_abcde","plan_name":"ProLibr - PRO","total_budget":100.00,"currency":"USD","period_start":"2025-11-28T10:00:00Z","period_end":"2025-12-28T10:00:00Z"}}"#;

fn err(raw: &str) -> String {
    match parse(raw.as_bytes()) {
        Err(Error::InvalidEvent(m)) => m,
        other => panic!("expected InvalidEvent, got {other:?}"),
    }
}

#[test]
fn seed_created_parses() {
    let ev = parse(CREATED.as_bytes()).unwrap();
    assert_eq!(ev.id, "evt_12345");
    match ev.kind {
        Kind::Created(c) => {
            assert_eq!(c.total, 100_000_000);
            assert_eq!(&c.currency, b"USD");
            assert_eq!(c.status, Status::Active);
            assert_eq!(c.period_end - c.period_start, 30 * 86_400 * 1_000_000);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn errors_name_the_field() {
    assert!(err(&CREATED.replace("100.00", "\"1x\"")).starts_with("data.total_budget"));
    assert!(err(&CREATED.replace("100.00", "100.0000001")).contains("6 decimal places"));
    assert!(err(&CREATED.replace("\"plan_abcde\"", "5")).starts_with("data.plan_id"));
    assert!(err(&CREATED.replace("\"plan_id\":\"plan_abcde\",", "")).contains("plan_id"));
    assert!(err(&CREATED.replace("\"USD\"", "\"usd\"")).starts_with("data.currency"));
    assert!(
        err(&CREATED.replace("2025-11-28T10:00:00Z\",\"data", "yesterday\",\"data"))
            .starts_with("timestamp")
    );
    assert!(err(&CREATED.replace("2025-12-28", "2025-10-28")).starts_with("data.period_end"));
    assert!(err(&CREATED.replace("evt_12345", "")).starts_with("event_id"));
    assert!(err("{").starts_with("event"));
    assert!(err("[]").starts_with("event"));
    assert!(err(
        r#"{"event_id":"e","event_type":"x","timestamp":"2025-11-28T10:00:00Z","data":[]}"#
    )
    .starts_with("data"));
}

#[test]
fn the_whole_document_is_checked() {
    let env = |data: &str| {
        format!(
            r#"{{"event_id":"e","event_type":"x.y","timestamp":"2026-01-01T00:00:00Z","data":{data}}}"#
        )
    };
    assert!(parse(env(r#"{"a":[1,{"b":null}],"c":1e300}"#).as_bytes()).is_ok());
    assert!(err(&env(r#"{"a":1,"a":2}"#)).contains("duplicate key"));
    assert!(err(&env(r#"{"a":1e400}"#)).contains("out of range"));
    assert!(parse(env(r#"{"\ud800":1}"#).as_bytes()).is_err());
    assert!(parse(env(r#"{"\udfff":1}"#).as_bytes()).is_err());
    let nest = |n: usize| format!(r#"{{"a":{}{}}}"#, "[".repeat(n), "]".repeat(n));
    assert!(err(&env(&nest(MAX_DEPTH))).contains("nested deeper"));
    assert!(parse(env(&nest(MAX_DEPTH - 2)).as_bytes()).is_ok());
    let wide: Vec<String> = (0..10_000).map(|i| format!(r#""k{i}":1"#)).collect();
    assert!(parse(env(&format!("{{{}}}", wide.join(","))).as_bytes()).is_ok());
    for bad_type in ["", "a..b", "a b", "billing.>", "*", &"x".repeat(129)] {
        let raw = CREATED.replace("subscription.created", bad_type);
        assert!(err(&raw).starts_with("event_type"), "{bad_type}");
    }
    let as_array = r#"["e","subscription.created","2026-01-01T00:00:00Z",{}]"#;
    assert!(err(as_array).starts_with("event"));
}

#[test]
fn policies_and_usage_are_validated() {
    let policy = r#"{"event_id":"e","event_type":"routing_policy.upserted","timestamp":"2026-01-01T00:00:00Z","data":{"id":"p","priority":-3,"match_expression":"true","strategy":"weighted","targets":[{"name":"a","weight":0}]}}"#;
    assert!(matches!(
        parse(policy.as_bytes()).unwrap().kind,
        Kind::PolicyUpserted(p) if p.def.targets[0].weight == 0
    ));
    let default_weight = policy.replace(r#","weight":0"#, "");
    assert!(matches!(
        parse(default_weight.as_bytes()).unwrap().kind,
        Kind::PolicyUpserted(p) if p.def.targets[0].weight == 1
    ));
    assert!(err(&policy.replace(r#""true""#, r#""request.x +""#))
        .starts_with("data.match_expression: "));
    let unknown = err(&policy.replace(r#""true""#, r#""x == 1""#));
    assert!(unknown.contains("unknown variable \"x\"") && unknown.ends_with("(at character 0)"));
    assert!(err(&policy.replace("weighted", "random")).starts_with("data.strategy"));
    assert!(err(&policy.replace(r#""weight":0"#, r#""weight":null"#))
        .starts_with("data.targets[0].weight"));
    assert!(
        err(&policy.replace(r#"{"name":"a","weight":0}"#, r#"["a",0,0]"#))
            .starts_with("data.targets[0]")
    );
    assert!(err(&policy.replace(r#"{"name":"a","weight":0}"#, "")).starts_with("data.targets"));
    let usage = r#"{"event_id":"e","event_type":"usage.reported","timestamp":"2026-01-01T00:00:00Z","data":{"tenant_id":"t","subscription_id":"s","amount":9223372036854775807,"period_start":"2026-01-01T00:00:00Z","idempotency_key":"k"}}"#;
    assert!(parse(usage.as_bytes()).is_ok());
    assert!(err(&usage.replace("807", "808")).starts_with("data.amount"));
    let long_key = usage.replace(r#""k""#, &format!(r#""{}""#, "k".repeat(256)));
    assert!(err(&long_key).starts_with("data.idempotency_key"));
}

#[test]
fn ids_are_bounded_in_bytes_and_printable() {
    let id = |n: usize| CREATED.replace("sub_67890", &"\u{e9}".repeat(n));
    assert!(err(&id(129)).contains("longer than 256 bytes"));
    assert!(parse(id(128).as_bytes()).is_ok());
    assert!(err(&CREATED.replace("sub_67890", r"a\u0000b")).contains("control"));
    assert!(err(&CREATED.replace("sub_67890", "\u{3000}")).contains("empty"));
    assert!(err(&CREATED.replace("100.00", r#"" 5 ""#)).starts_with("data.total_budget"));
    let null_status = CREATED.replace(r#""currency""#, r#""status":null,"currency""#);
    assert!(err(&null_status).starts_with("data.status"));
}

#[test]
fn unknown_types_parse_as_other() {
    let raw = r#"{"event_id":"e","event_type":"coupon.created","timestamp":"2025-11-28T10:00:00+01:00","data":{"x":1}}"#;
    assert!(matches!(parse(raw.as_bytes()).unwrap().kind, Kind::Other));
}
