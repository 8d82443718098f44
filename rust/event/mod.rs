//! Billing events as the gateway applies them: JSON envelope, typed payloads, and
//! validation whose errors name the offending field (`data.total_budget: ...`).
//!
//! [`parse`] is the one definition of a valid event. The gateway's table applies only
//! what it accepts, the Python decoder (`billing_gateway.events.decode_event`) runs it
//! before building its structs, and every producer validates its output with it, so an
//! event one side accepts is never refused by the other. Lengths are counted in bytes.
//!
//! - `wire`: the JSON shapes, as serde reads them;
//! - `json`: reading them with errors that name the field, and the checks of the
//!   whole document (duplicate keys, depth, numbers, Unicode);
//! - `validation`: [`parse`], every field rule;
//! - `time`: RFC 3339 timestamps.

use crate::error::Error;
use crate::routing::Policy;
use crate::spelling::spelled_enum;
use std::borrow::Cow;

mod json;
mod time;
mod validation;
mod wire;

pub use time::parse_time;
pub(crate) use validation::id_problem;
pub use validation::parse;

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

spelled_enum! {
    /// Subscription status, as billing (and Stripe) spell it. A status's position is its
    /// code in snapshots: new ones go at the end.
    pub enum Status {
        Active = "active",
        Trialing = "trialing",
        PastDue = "past_due",
        Canceled = "canceled",
        Unpaid = "unpaid",
        Incomplete = "incomplete",
        IncompleteExpired = "incomplete_expired",
        Paused = "paused",
    }
}

impl Status {
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
    /// `routing_policy.upserted`: the policy, compiled.
    PolicyUpserted(Box<Policy>),
    /// `routing_policy.deleted`: the policy id.
    PolicyDeleted(Cow<'a, str>),
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
            _ => None,
        }
    }

    /// The customer (tenant) the event names, if it names one.
    pub fn customer(&self) -> Option<&str> {
        match self {
            Kind::Created(c) => Some(&c.customer_id),
            Kind::Updated(u) => u.customer_id.as_deref(),
            Kind::InvoicePaid(p) => Some(&p.customer_id),
            Kind::PaymentFailed(f) => Some(&f.customer_id),
            _ => None,
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
fn invalid(field: &str, msg: impl std::fmt::Display) -> Error {
    Error::InvalidEvent(format!("{field}: {msg}"))
}

#[cfg(test)]
mod tests;
