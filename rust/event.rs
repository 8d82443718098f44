//! Billing events as the gateway applies them: JSON envelope, typed payloads, and
//! validation whose errors name the offending field (`data.total_budget: ...`).

use crate::money::parse_micros;
use crate::Error;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// Longest identifier (event, subscription, customer, plan, invoice id) accepted.
pub const MAX_ID_LEN: usize = 256;
/// Longest plan name accepted.
pub const MAX_NAME_LEN: usize = 1024;

/// Subscription status, as billing (and Stripe) spell it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    Active = 0,
    Trialing = 1,
    PastDue = 2,
    Canceled = 3,
    Unpaid = 4,
    Incomplete = 5,
    IncompleteExpired = 6,
    Paused = 7,
}

impl Status {
    pub const ALL: [Status; 8] = [
        Status::Active,
        Status::Trialing,
        Status::PastDue,
        Status::Canceled,
        Status::Unpaid,
        Status::Incomplete,
        Status::IncompleteExpired,
        Status::Paused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Trialing => "trialing",
            Status::PastDue => "past_due",
            Status::Canceled => "canceled",
            Status::Unpaid => "unpaid",
            Status::Incomplete => "incomplete",
            Status::IncompleteExpired => "incomplete_expired",
            Status::Paused => "paused",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn from_code(code: u8) -> Option<Status> {
        Status::ALL.get(usize::from(code)).copied()
    }

    /// Whether a subscription in this status may spend.
    pub fn may_spend(self) -> bool {
        matches!(self, Status::Active | Status::Trialing | Status::PastDue)
    }
}

/// A validated event. Timestamps are microseconds since the Unix epoch (UTC).
#[derive(Debug)]
pub struct Event<'a> {
    pub id: Cow<'a, str>,
    pub ts: i64,
    pub kind: Kind<'a>,
}

#[derive(Debug)]
pub enum Kind<'a> {
    Created(Created<'a>),
    Updated(Updated<'a>),
    InvoicePaid(InvoicePaid<'a>),
    PaymentFailed(PaymentFailed<'a>),
    /// A well-formed event the budget table does not act on (unknown or non-budget type).
    Other,
}

impl Kind<'_> {
    /// The subscription the event is about, for the kinds that refer to one.
    pub fn subscription(&self) -> Option<&str> {
        match self {
            Kind::Created(c) => Some(&c.subscription_id),
            Kind::Updated(u) => Some(&u.subscription_id),
            Kind::InvoicePaid(p) => Some(&p.subscription_id),
            Kind::PaymentFailed(f) => Some(&f.subscription_id),
            Kind::Other => None,
        }
    }

    /// The customer (tenant) the event names, if it names one.
    pub fn customer(&self) -> Option<&str> {
        match self {
            Kind::Created(c) => Some(&c.customer_id),
            Kind::Updated(u) => u.customer_id.as_deref(),
            Kind::InvoicePaid(p) => Some(&p.customer_id),
            Kind::PaymentFailed(f) => Some(&f.customer_id),
            Kind::Other => None,
        }
    }
}

#[derive(Debug)]
pub struct Created<'a> {
    pub subscription_id: Cow<'a, str>,
    pub customer_id: Cow<'a, str>,
    pub plan_id: Cow<'a, str>,
    pub plan_name: Cow<'a, str>,
    pub total: u64,
    pub currency: [u8; 3],
    pub period_start: i64,
    pub period_end: i64,
    pub status: Status,
}

#[derive(Debug)]
pub struct Updated<'a> {
    pub subscription_id: Cow<'a, str>,
    pub customer_id: Option<Cow<'a, str>>,
    pub plan_id: Option<Cow<'a, str>>,
    pub plan_name: Option<Cow<'a, str>>,
    pub total: Option<u64>,
    pub status: Option<Status>,
}

#[derive(Debug)]
pub struct InvoicePaid<'a> {
    pub subscription_id: Cow<'a, str>,
    pub customer_id: Cow<'a, str>,
    pub period_start: i64,
    pub period_end: i64,
}

#[derive(Debug)]
pub struct PaymentFailed<'a> {
    pub subscription_id: Cow<'a, str>,
    pub customer_id: Cow<'a, str>,
}

// ---- wire shapes ---------------------------------------------------------------

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(borrow)]
    event_type: Cow<'a, str>,
    #[serde(borrow)]
    timestamp: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default, borrow)]
    tenant_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    correlation_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    causation_id: Option<Cow<'a, str>>,
    #[serde(default)]
    version: Option<u32>,
}

#[derive(Deserialize)]
struct CreatedWire<'a> {
    #[serde(borrow)]
    subscription_id: Cow<'a, str>,
    #[serde(borrow)]
    customer_id: Cow<'a, str>,
    #[serde(borrow)]
    plan_id: Cow<'a, str>,
    #[serde(borrow)]
    plan_name: Cow<'a, str>,
    #[serde(borrow)]
    total_budget: &'a RawValue,
    #[serde(borrow)]
    currency: Cow<'a, str>,
    #[serde(borrow)]
    period_start: Cow<'a, str>,
    #[serde(borrow)]
    period_end: Cow<'a, str>,
    #[serde(default, borrow)]
    status: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct UpdatedWire<'a> {
    #[serde(borrow)]
    subscription_id: Cow<'a, str>,
    #[serde(default, borrow)]
    customer_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    new_plan_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    new_plan_name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    new_total_budget: Option<&'a RawValue>,
    #[serde(default, borrow)]
    status: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct InvoicePaidWire<'a> {
    #[serde(borrow)]
    invoice_id: Cow<'a, str>,
    #[serde(borrow)]
    customer_id: Cow<'a, str>,
    #[serde(borrow)]
    subscription_id: Cow<'a, str>,
    #[serde(borrow)]
    amount_paid: &'a RawValue,
    #[serde(borrow)]
    new_period_start: Cow<'a, str>,
    #[serde(borrow)]
    new_period_end: Cow<'a, str>,
}

#[derive(Deserialize)]
struct PaymentFailedWire<'a> {
    #[serde(borrow)]
    customer_id: Cow<'a, str>,
    #[serde(borrow)]
    subscription_id: Cow<'a, str>,
    #[serde(borrow)]
    invoice_id: Cow<'a, str>,
}

// ---- parsing -------------------------------------------------------------------

fn invalid(field: &str, msg: impl std::fmt::Display) -> Error {
    Error::InvalidEvent(format!("{field}: {msg}"))
}

/// Deserializes `text`; on failure re-reads it with path tracking so the message
/// names the field (the fast path pays nothing for that).
fn from_json<'a, T: Deserialize<'a>>(text: &'a str, prefix: &str) -> Result<T, Error> {
    serde_json::from_str(text).map_err(|_| {
        let mut de = serde_json::Deserializer::from_str(text);
        match serde_path_to_error::deserialize::<_, T>(&mut de) {
            Err(e) => {
                let path = e.path().to_string();
                let inner = e.into_inner();
                // "." is the root, "?" a position serde could not name.
                let field = match path.as_str() {
                    "." | "?" => prefix.trim_end_matches('.').to_string(),
                    path => format!("{prefix}{path}"),
                };
                let field = if field.is_empty() {
                    "event".to_string()
                } else {
                    field
                };
                invalid(&field, strip_position(&inner.to_string()))
            }
            Ok(_) => invalid(prefix.trim_end_matches('.'), "malformed JSON"),
        }
    })
}

/// serde_json appends " at line L column C"; keep the message, drop the position.
fn strip_position(msg: &str) -> &str {
    msg.find(" at line ").map_or(msg, |i| &msg[..i])
}

/// Parses and validates one event. Nothing is returned unless everything checks out.
pub fn parse(raw: &[u8]) -> Result<Event<'_>, Error> {
    let text = std::str::from_utf8(raw).map_err(|e| invalid("event", format!("not UTF-8: {e}")))?;
    let env: Envelope<'_> = from_json(text, "")?;
    check_id("event_id", &env.event_id)?;
    for (name, value) in [
        ("tenant_id", &env.tenant_id),
        ("correlation_id", &env.correlation_id),
        ("causation_id", &env.causation_id),
    ] {
        if let Some(v) = value {
            check_len(name, v, MAX_ID_LEN)?;
        }
    }
    if env.version == Some(0) {
        return Err(invalid("version", "must be 1 or greater"));
    }
    if env.event_type.is_empty() {
        return Err(invalid("event_type", "must not be empty"));
    }
    let ts = parse_time("timestamp", &env.timestamp)?;
    let data = env.data.get();
    if !data.starts_with('{') {
        return Err(invalid("data", "expected an object"));
    }
    let kind = match env.event_type.as_ref() {
        "subscription.created" => Kind::Created(created(from_json(data, "data.")?)?),
        "subscription.updated" => Kind::Updated(updated(from_json(data, "data.")?)?),
        "invoice.paid" => Kind::InvoicePaid(invoice_paid(from_json(data, "data.")?)?),
        "invoice.payment_failed" => {
            let w: PaymentFailedWire<'_> = from_json(data, "data.")?;
            check_id("data.customer_id", &w.customer_id)?;
            check_id("data.subscription_id", &w.subscription_id)?;
            check_id("data.invoice_id", &w.invoice_id)?;
            Kind::PaymentFailed(PaymentFailed {
                subscription_id: w.subscription_id,
                customer_id: w.customer_id,
            })
        }
        _ => Kind::Other,
    };
    Ok(Event {
        id: env.event_id,
        ts,
        kind,
    })
}

fn created(w: CreatedWire<'_>) -> Result<Created<'_>, Error> {
    check_id("data.subscription_id", &w.subscription_id)?;
    check_id("data.customer_id", &w.customer_id)?;
    check_id("data.plan_id", &w.plan_id)?;
    check_len("data.plan_name", &w.plan_name, MAX_NAME_LEN)?;
    let total = amount("data.total_budget", w.total_budget)?;
    let currency = parse_currency(&w.currency)?;
    let (period_start, period_end) = period(
        ("data.period_start", &w.period_start),
        ("data.period_end", &w.period_end),
    )?;
    let status = match w.status {
        Some(s) => parse_status("data.status", &s)?,
        None => Status::Active,
    };
    Ok(Created {
        subscription_id: w.subscription_id,
        customer_id: w.customer_id,
        plan_id: w.plan_id,
        plan_name: w.plan_name,
        total,
        currency,
        period_start,
        period_end,
        status,
    })
}

fn updated(w: UpdatedWire<'_>) -> Result<Updated<'_>, Error> {
    check_id("data.subscription_id", &w.subscription_id)?;
    if let Some(c) = &w.customer_id {
        check_id("data.customer_id", c)?;
    }
    if let Some(p) = &w.new_plan_id {
        check_id("data.new_plan_id", p)?;
    }
    if let Some(n) = &w.new_plan_name {
        check_len("data.new_plan_name", n, MAX_NAME_LEN)?;
    }
    let total = w
        .new_total_budget
        .map(|raw| amount("data.new_total_budget", raw))
        .transpose()?;
    let status = w
        .status
        .map(|s| parse_status("data.status", &s))
        .transpose()?;
    Ok(Updated {
        subscription_id: w.subscription_id,
        customer_id: w.customer_id,
        plan_id: w.new_plan_id,
        plan_name: w.new_plan_name,
        total,
        status,
    })
}

fn invoice_paid(w: InvoicePaidWire<'_>) -> Result<InvoicePaid<'_>, Error> {
    check_id("data.invoice_id", &w.invoice_id)?;
    check_id("data.customer_id", &w.customer_id)?;
    check_id("data.subscription_id", &w.subscription_id)?;
    amount("data.amount_paid", w.amount_paid)?;
    let (period_start, period_end) = period(
        ("data.new_period_start", &w.new_period_start),
        ("data.new_period_end", &w.new_period_end),
    )?;
    Ok(InvoicePaid {
        subscription_id: w.subscription_id,
        customer_id: w.customer_id,
        period_start,
        period_end,
    })
}

fn check_len(field: &str, value: &str, max: usize) -> Result<(), Error> {
    if value.len() > max {
        return Err(invalid(field, format!("longer than {max} bytes")));
    }
    Ok(())
}

fn check_id(field: &str, value: &str) -> Result<(), Error> {
    if value.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    check_len(field, value, MAX_ID_LEN)
}

/// A money amount given as a JSON number or a decimal string, converted exactly.
fn amount(field: &str, raw: &RawValue) -> Result<u64, Error> {
    let text = raw.get();
    let digits = if let Some(quoted) = text.strip_prefix('"') {
        quoted
            .strip_suffix('"')
            .filter(|s| !s.contains(['\\', '"']))
            .map(str::trim)
    } else if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        Some(text)
    } else {
        None
    };
    let digits =
        digits.ok_or_else(|| invalid(field, format!("expected a decimal amount, got {text}")))?;
    parse_micros(digits).map_err(|e| invalid(field, e))
}

fn parse_currency(code: &str) -> Result<[u8; 3], Error> {
    match code.as_bytes() {
        &[a, b, c] if [a, b, c].iter().all(u8::is_ascii_uppercase) => Ok([a, b, c]),
        _ => Err(invalid(
            "data.currency",
            format!("expected a three-letter ISO 4217 code such as \"USD\", got {code:?}"),
        )),
    }
}

fn parse_status(field: &str, s: &str) -> Result<Status, Error> {
    Status::parse(s).ok_or_else(|| {
        let known: Vec<&str> = Status::ALL.iter().map(|st| st.as_str()).collect();
        invalid(
            field,
            format!("unknown status {s:?}; expected one of {}", known.join(", ")),
        )
    })
}

fn period(start: (&str, &str), end: (&str, &str)) -> Result<(i64, i64), Error> {
    let s = parse_time(start.0, start.1)?;
    let e = parse_time(end.0, end.1)?;
    if e <= s {
        return Err(invalid(end.0, format!("must be after {}", start.0)));
    }
    Ok((s, e))
}

/// RFC 3339 with an explicit offset, to microseconds since the epoch (UTC).
pub fn parse_time(field: &str, s: &str) -> Result<i64, Error> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_micros())
        .map_err(|e| {
            invalid(
                field,
                format!("expected an RFC 3339 timestamp with a UTC offset, got {s:?} ({e})"),
            )
        })
}

#[cfg(test)]
mod tests {
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
    fn unknown_types_parse_as_other() {
        let raw = r#"{"event_id":"e","event_type":"coupon.created","timestamp":"2025-11-28T10:00:00+01:00","data":{"x":1}}"#;
        assert!(matches!(parse(raw.as_bytes()).unwrap().kind, Kind::Other));
    }
}
