//! Billing events as the gateway applies them: JSON envelope, typed payloads, and
//! validation whose errors name the offending field (`data.total_budget: ...`).
//!
//! [`parse`] is the one definition of a valid event. The gateway's table applies only
//! what it accepts, the Python decoder (`billing_gateway.events.decode_event`) runs it
//! before building its structs, and every producer validates its output with it, so an
//! event one side accepts is never refused by the other. Lengths are counted in bytes.

use crate::money::parse_micros;
use crate::Error;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::HashSet;

/// Longest identifier (event, subscription, customer, plan, invoice, policy, target id), in bytes.
pub const MAX_ID_LEN: usize = 256;
/// Longest plan name, in bytes.
pub const MAX_NAME_LEN: usize = 1024;
/// Longest usage idempotency key, in bytes (billing stores it in 255 characters).
pub const MAX_KEY_LEN: usize = 255;
/// Longest routing policy `match_expression`, in bytes.
pub const MAX_EXPRESSION_LEN: usize = 4096;
/// Longest `event_type`, in bytes (it becomes a NATS subject token sequence).
pub const MAX_EVENT_TYPE_LEN: usize = 128;
/// Deepest nesting of arrays and objects anywhere in an event.
pub const MAX_DEPTH: usize = 32;
/// The earliest instant a timestamp may denote: 0001-01-01T00:00:00Z (Python's `datetime.min`),
/// in microseconds since the Unix epoch.
pub const MIN_TIME: i64 = -62_135_596_800_000_000;
/// The latest: 9999-12-31T23:59:59.999999Z (Python's `datetime.max`).
pub const MAX_TIME: i64 = 253_402_300_799_999_999;

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
    /// Absent means active; `null` is refused, as by the Python struct.
    #[serde(default = "active", borrow)]
    status: Cow<'a, str>,
}

fn active() -> Cow<'static, str> {
    Cow::Borrowed(Status::Active.as_str())
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

#[derive(Deserialize)]
struct PolicyWire<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[allow(dead_code)] // validated by its type
    priority: i64,
    #[serde(borrow)]
    match_expression: Cow<'a, str>,
    #[serde(borrow)]
    strategy: Cow<'a, str>,
    /// Objects, each parsed as a [`TargetWire`] (serde would also take arrays).
    #[serde(borrow)]
    targets: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct TargetWire<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    /// Absent is fine, `null` is not (as for the Python struct); only the range matters here.
    #[serde(default)]
    weight: u64,
    #[serde(default)]
    cost: u64,
}

#[derive(Deserialize)]
struct PolicyDeletedWire<'a> {
    #[serde(borrow)]
    policy_id: Cow<'a, str>,
}

#[derive(Deserialize)]
struct UsageWire<'a> {
    #[serde(borrow)]
    tenant_id: Cow<'a, str>,
    #[serde(borrow)]
    subscription_id: Cow<'a, str>,
    amount: u64,
    #[serde(borrow)]
    period_start: Cow<'a, str>,
    #[serde(borrow)]
    idempotency_key: Cow<'a, str>,
}

// ---- parsing -------------------------------------------------------------------

fn invalid(field: &str, msg: impl std::fmt::Display) -> Error {
    Error::InvalidEvent(format!("{field}: {msg}"))
}

/// The field a serde path names under `prefix` ("." is the root, "?" a position
/// serde could not name).
fn field_name(prefix: &str, path: &str) -> String {
    let path = path.strip_suffix(".?").unwrap_or(path);
    let field = match path {
        "." | "?" => prefix.trim_end_matches('.').to_string(),
        path => format!("{prefix}{path}"),
    };
    if field.is_empty() {
        "event".to_string()
    } else {
        field
    }
}

/// Deserializes `text`; on failure re-reads it with path tracking so the message
/// names the field (the fast path pays nothing for that).
fn from_json<'a, T: Deserialize<'a>>(text: &'a str, prefix: &str) -> Result<T, Error> {
    serde_json::from_str(text).map_err(|_| {
        let mut de = serde_json::Deserializer::from_str(text);
        match serde_path_to_error::deserialize::<_, T>(&mut de) {
            Err(e) => {
                let field = field_name(prefix, &e.path().to_string());
                invalid(&field, strip_position(&e.into_inner().to_string()))
            }
            Ok(_) => invalid(&field_name(prefix, "."), "malformed JSON"),
        }
    })
}

/// Like [`from_json`] for a struct, which must be written as a JSON object (serde
/// would also read a struct from an array of its fields).
fn object<'a, T: Deserialize<'a>>(text: &'a str, prefix: &str) -> Result<T, Error> {
    if !text.trim_start().starts_with('{') {
        return Err(invalid(&field_name(prefix, "."), "expected an object"));
    }
    from_json(text, prefix)
}

/// serde_json appends " at line L column C"; keep the message, drop the position.
fn strip_position(msg: &str) -> &str {
    msg.find(" at line ").map_or(msg, |i| &msg[..i])
}

/// Walks the whole document, the parts no typed struct reads included: every object
/// has distinct keys (parsers disagree on which duplicate wins), nesting stays within
/// [`MAX_DEPTH`], every number is finite, every string is Unicode (no lone surrogate).
fn check_document(text: &str) -> Result<(), Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    if Walk(0).deserialize(&mut de).and_then(|()| de.end()).is_ok() {
        return Ok(());
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let mut track = serde_path_to_error::Track::new();
    let result = Walk(0).deserialize(serde_path_to_error::Deserializer::new(&mut de, &mut track));
    let field = field_name("", &track.path().to_string());
    Err(match result.and_then(|()| de.end()) {
        Err(e) => invalid(&field, strip_position(&e.to_string())),
        Ok(()) => invalid("event", "malformed JSON"),
    })
}

/// A [`check_document`] visitor at nesting depth `.0`.
#[derive(Clone, Copy)]
struct Walk(usize);

impl Walk {
    fn deeper<E: de::Error>(self) -> Result<Walk, E> {
        if self.0 >= MAX_DEPTH {
            return Err(E::custom(format_args!(
                "nested deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(Walk(self.0 + 1))
    }
}

impl<'de> DeserializeSeed<'de> for Walk {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.deeper()?;
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.deeper()?;
        let mut keys = Keys::default();
        while let Some(key) = map.next_key_seed(Key)? {
            if let Err(key) = keys.insert(key) {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            map.next_value_seed(inner)?;
        }
        Ok(())
    }
}

/// The keys of one object seen so far: the usual few inline (no allocation), any
/// more in a hash set.
#[derive(Default)]
struct Keys<'de> {
    inline: [Cow<'de, str>; 16],
    len: usize,
    more: Option<HashSet<Cow<'de, str>, foldhash::fast::RandomState>>,
}

impl<'de> Keys<'de> {
    /// Adds `key`, or gives it back when it is already there.
    fn insert(&mut self, key: Cow<'de, str>) -> Result<(), Cow<'de, str>> {
        let known = self.inline[..self.len].contains(&key)
            || self.more.as_ref().is_some_and(|more| more.contains(&key));
        if known {
            return Err(key);
        }
        if let Some(slot) = self.inline.get_mut(self.len) {
            *slot = key;
            self.len += 1;
        } else {
            self.more.get_or_insert_with(HashSet::default).insert(key);
        }
        Ok(())
    }
}

/// An object key, borrowed from the input unless it had escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

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
            policy(object(data, "data.")?)?;
            Kind::Other
        }
        "routing_policy.deleted" => {
            let w: PolicyDeletedWire<'_> = object(data, "data.")?;
            check_id("data.policy_id", &w.policy_id)?;
            Kind::Other
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

fn policy(w: PolicyWire<'_>) -> Result<(), Error> {
    check_id("data.id", &w.id)?;
    check_len(
        "data.match_expression",
        &w.match_expression,
        MAX_EXPRESSION_LEN,
    )?;
    const STRATEGIES: [&str; 3] = ["failover", "weighted", "least_cost"];
    if !STRATEGIES.contains(&w.strategy.as_ref()) {
        return Err(invalid(
            "data.strategy",
            format!(
                "unknown strategy {:?}; expected one of {}",
                w.strategy,
                STRATEGIES.join(", ")
            ),
        ));
    }
    if w.targets.is_empty() {
        return Err(invalid("data.targets", "must name at least one target"));
    }
    for (i, raw) in w.targets.iter().enumerate() {
        let prefix = format!("data.targets[{i}].");
        let t: TargetWire<'_> = object(raw.get(), &prefix)?;
        check_id(&format!("{prefix}name"), &t.name)?;
        for (name, value) in [("weight", t.weight), ("cost", t.cost)] {
            if value > MAX_MICROS {
                return Err(invalid(
                    &format!("{prefix}{name}"),
                    format!("at most {MAX_MICROS}"),
                ));
            }
        }
    }
    Ok(())
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

/// Money and counts are held in 64-bit signed integers.
const MAX_MICROS: u64 = i64::MAX as u64;

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

/// An RFC 3339 timestamp with a UTC offset, to microseconds since the epoch (UTC).
///
/// Exactly what Python can hold and msgspec decodes to the same instant: `T`, `t` or a
/// space between date and time; `Z`, `z` or `±HH:MM`; fractional digits beyond the
/// sixth round half up on the seventh; no leap second; the local time and the instant
/// both within years 1 to 9999 ([`MIN_TIME`]..=[`MAX_TIME`]).
pub fn parse_time(field: &str, s: &str) -> Result<i64, Error> {
    rfc3339_micros(s.as_bytes()).ok_or_else(|| {
        invalid(
            field,
            format!(
                "expected an RFC 3339 timestamp with a UTC offset between years 1 and 9999 \
                 (such as \"2026-01-31T12:00:00Z\"), got {s:?}"
            ),
        )
    })
}

fn rfc3339_micros(b: &[u8]) -> Option<i64> {
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        b.get(range)?.iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    if b.len() < 20
        || (b[4], b[7], b[13], b[16]) != (b'-', b'-', b':', b':')
        || !matches!(b[10], b'T' | b't' | b' ')
    {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if year == 0 || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let local = chrono::NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?
        .and_hms_opt(hour, minute, second)?
        .and_utc()
        .timestamp_micros();
    let mut rest = &b[19..];
    let mut micros = 0i64;
    if let Some(fraction) = rest.strip_prefix(b".") {
        let n = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        let digit = |i: usize| {
            if i < n {
                i64::from(fraction[i] - b'0')
            } else {
                0
            }
        };
        micros = (0..6).fold(0, |acc, i| acc * 10 + digit(i));
        if digit(6) >= 5 {
            micros += 1;
        }
        rest = &fraction[n..];
    }
    let offset_us = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let [h1, h2, m1, m2] = digits.map(|d| i64::from(d - b'0'));
            let (hours, minutes) = (h1 * 10 + h2, m1 * 10 + m2);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let magnitude = (hours * 60 + minutes) * 60_000_000;
            if *sign == b'-' {
                -magnitude
            } else {
                magnitude
            }
        }
        _ => return None,
    };
    let local = local + micros;
    let utc = local - offset_us;
    ((MIN_TIME..=MAX_TIME).contains(&local) && (MIN_TIME..=MAX_TIME).contains(&utc)).then_some(utc)
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
    fn timestamps_are_exactly_what_python_holds() {
        let t = |s: &str| parse_time("t", s).ok();
        assert_eq!(t("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(t("1970-01-01t01:00:00+01:00"), Some(0));
        assert_eq!(
            t("1970-01-01 00:00:00.0000005z"),
            Some(1),
            "half up on the 7th digit"
        );
        assert_eq!(t("1970-01-01T00:00:00.0000004999Z"), Some(0));
        assert_eq!(t("1969-12-31T23:59:59.9999995-00:00"), Some(0));
        assert_eq!(t("0001-01-01T00:00:00Z"), Some(MIN_TIME));
        assert_eq!(t("9999-12-31T23:59:59.999999Z"), Some(MAX_TIME));
        assert_eq!(
            t("0001-01-01T00:00:00-23:59"),
            Some(MIN_TIME + 86_340_000_000)
        );
        for bad in [
            "0000-01-01T00:00:00Z",
            "0001-01-01T00:30:00+01:00",
            "9999-12-31T23:00:00-02:00",
            "9999-12-31T23:59:59.9999995Z",
            "2016-12-31T23:59:60Z",
            "2026-02-29T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00+0100",
            "2026-01-01T00:00:00+24:00",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00Z",
            "2026-01-01X00:00:00Z",
            "+2026-01-01T00:00:00Z",
            " 2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00Z ",
            "\u{0662}026-01-01T00:00:00Z",
            "",
        ] {
            assert_eq!(t(bad), None, "{bad}");
        }
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
            Kind::Other
        ));
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
}
