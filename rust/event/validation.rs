//! The rules of a valid event, field by field; [`parse`] applies them all.

use super::json::{check_document, object};
use super::wire::{
    CreatedWire, Envelope, InvoicePaidWire, PaymentFailedWire, PolicyDeletedWire, PolicyWire,
    TargetWire, UpdatedWire, UsageWire,
};
use super::{
    invalid, parse_time, Created, Event, InvoicePaid, Kind, PaymentFailed, Status, Updated,
    MAX_EVENT_TYPE_LEN, MAX_ID_LEN, MAX_KEY_LEN, MAX_NAME_LEN,
};
use crate::error::Error;
use crate::money::{parse_micros, MAX_MICROS};
use crate::routing::{Policy, PolicyDef, TargetDef};
use serde_json::value::RawValue;

/// Parses and validates one event. Nothing is returned unless everything checks out.
pub fn parse(raw: &[u8]) -> Result<Event<'_>, Error> {
    let text = std::str::from_utf8(raw).map_err(|e| invalid("event", format!("not UTF-8: {e}")))?;
    check_document(text)?;
    let env: Envelope<'_> = object(text, "")?;
    check_id("event_id", &env.event_id)?;
    for (name, value) in [
        ("tenant_id", &env.tenant_id),
        ("correlation_id", &env.correlation_id),
        ("causation_id", &env.causation_id),
    ] {
        if let Some(v) = value {
            check_id(name, v)?;
        }
    }
    if env.version == Some(0) {
        return Err(invalid("version", "must be 1 or greater"));
    }
    check_event_type(&env.event_type)?;
    let ts = parse_time("timestamp", &env.timestamp)?;
    let data = env.data.get();
    if !data.starts_with('{') {
        return Err(invalid("data", "expected an object"));
    }
    let kind = match env.event_type.as_ref() {
        "subscription.created" => Kind::Created(created(object(data, "data.")?)?),
        "subscription.updated" => Kind::Updated(updated(object(data, "data.")?)?),
        "invoice.paid" => Kind::InvoicePaid(invoice_paid(object(data, "data.")?)?),
        "invoice.payment_failed" => {
            let w: PaymentFailedWire<'_> = object(data, "data.")?;
            check_id("data.customer_id", &w.customer_id)?;
            check_id("data.subscription_id", &w.subscription_id)?;
            check_id("data.invoice_id", &w.invoice_id)?;
            Kind::PaymentFailed(PaymentFailed {
                subscription_id: w.subscription_id,
                customer_id: w.customer_id,
            })
        }
        "routing_policy.upserted" => {
            Kind::PolicyUpserted(Box::new(policy(object(data, "data.")?)?))
        }
        "routing_policy.deleted" => {
            let w: PolicyDeletedWire<'_> = object(data, "data.")?;
            check_id("data.policy_id", &w.policy_id)?;
            Kind::PolicyDeleted(w.policy_id)
        }
        "usage.reported" => {
            usage(object(data, "data.")?)?;
            Kind::Other
        }
        _ => Kind::Other,
    };
    Ok(Event {
        id: env.event_id,
        ts,
        kind,
    })
}

/// Dot-separated tokens of ASCII letters, digits, `_` and `-`: the type is also the
/// tail of the NATS subject the event is published on.
fn check_event_type(event_type: &str) -> Result<(), Error> {
    if event_type.is_empty() {
        return Err(invalid("event_type", "must not be empty"));
    }
    let token_ok = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if event_type.len() > MAX_EVENT_TYPE_LEN || !event_type.split('.').all(token_ok) {
        return Err(invalid(
            "event_type",
            format!(
                "expected dot-separated tokens of ASCII letters, digits, '_' or '-' \
                 (at most {MAX_EVENT_TYPE_LEN} bytes), got {event_type:?}"
            ),
        ));
    }
    Ok(())
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
    let status = parse_status("data.status", &w.status)?;
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

/// A policy, compiled by the one policy validator ([`Policy::compile`]).
fn policy(w: PolicyWire<'_>) -> Result<Policy, Error> {
    let mut targets = Vec::with_capacity(w.targets.len());
    for (i, raw) in w.targets.iter().enumerate() {
        let t: TargetWire<'_> = object(raw.get(), &format!("data.targets[{i}]."))?;
        targets.push(TargetDef {
            name: t.name.into_owned(),
            weight: t.weight,
            cost: t.cost,
        });
    }
    Policy::compile(PolicyDef {
        id: w.id.into_owned(),
        priority: w.priority,
        match_expression: w.match_expression.into_owned(),
        strategy: w.strategy.into_owned(),
        targets,
    })
    .map_err(|e| {
        let at = e
            .position
            .map(|p| format!(" (at character {p})"))
            .unwrap_or_default();
        invalid(&format!("data.{}", e.field), format!("{}{at}", e.problem))
    })
}

fn usage(w: UsageWire<'_>) -> Result<(), Error> {
    check_id("data.tenant_id", &w.tenant_id)?;
    check_id("data.subscription_id", &w.subscription_id)?;
    if w.amount > MAX_MICROS {
        return Err(invalid(
            "data.amount",
            format!("at most {MAX_MICROS} micro-units"),
        ));
    }
    parse_time("data.period_start", &w.period_start)?;
    check_key("data.idempotency_key", &w.idempotency_key, MAX_KEY_LEN)
}

fn check_len(field: &str, value: &str, max: usize) -> Result<(), Error> {
    if value.len() > max {
        return Err(invalid(field, format!("longer than {max} bytes")));
    }
    Ok(())
}

/// An identifier: not blank, no control character, at most [`MAX_ID_LEN`] bytes.
fn check_id(field: &str, value: &str) -> Result<(), Error> {
    check_key(field, value, MAX_ID_LEN)
}

fn check_key(field: &str, value: &str, max: usize) -> Result<(), Error> {
    id_problem(value, max).map_or(Ok(()), |problem| Err(invalid(field, problem)))
}

/// Why `value` is not an identifier of at most `max` bytes, if it is not: blank, a
/// control character, or too long.
pub(crate) fn id_problem(value: &str, max: usize) -> Option<String> {
    if value.trim().is_empty() {
        Some("must not be empty".to_string())
    } else if value.chars().any(char::is_control) {
        Some("must not contain control characters".to_string())
    } else if value.len() > max {
        Some(format!("longer than {max} bytes"))
    } else {
        None
    }
}

/// A money amount given as a JSON number or a decimal string (the same grammar,
/// nothing around it), converted exactly.
fn amount(field: &str, raw: &RawValue) -> Result<u64, Error> {
    let text = raw.get();
    let digits = if let Some(quoted) = text.strip_prefix('"') {
        quoted
            .strip_suffix('"')
            .filter(|s| !s.contains(['\\', '"']))
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
