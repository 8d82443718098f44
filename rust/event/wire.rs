//! The JSON shapes of events, as serde reads them (borrowing from the input). Reading
//! them is [`super::json`]'s job; what their values may be is [`super::validation`]'s.

use super::Status;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

#[derive(Deserialize)]
pub(super) struct Envelope<'a> {
    #[serde(borrow)]
    pub(super) event_id: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) event_type: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) timestamp: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) data: &'a RawValue,
    #[serde(default, borrow)]
    pub(super) tenant_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) correlation_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) causation_id: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(super) version: Option<u32>,
}

#[derive(Deserialize)]
pub(super) struct CreatedWire<'a> {
    #[serde(borrow)]
    pub(super) subscription_id: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) customer_id: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) plan_id: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) plan_name: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) total_budget: &'a RawValue,
    #[serde(borrow)]
    pub(super) currency: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) period_start: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) period_end: Cow<'a, str>,
    /// Absent means active; `null` is refused, as by the Python struct.
    #[serde(default = "active", borrow)]
    pub(super) status: Cow<'a, str>,
}

fn active() -> Cow<'static, str> {
    Cow::Borrowed(Status::Active.as_str())
}

#[derive(Deserialize)]
pub(super) struct UpdatedWire<'a> {
    #[serde(borrow)]
    pub(super) subscription_id: Cow<'a, str>,
    #[serde(default, borrow)]
    pub(super) customer_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) new_plan_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) new_plan_name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) new_total_budget: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub(super) status: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub(super) struct InvoicePaidWire<'a> {
    #[serde(borrow)]
    pub(super) invoice_id: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) customer_id: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) subscription_id: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) amount_paid: &'a RawValue,
    #[serde(borrow)]
    pub(super) new_period_start: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) new_period_end: Cow<'a, str>,
}

#[derive(Deserialize)]
pub(super) struct PaymentFailedWire<'a> {
    #[serde(borrow)]
    pub(super) customer_id: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) subscription_id: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) invoice_id: Cow<'a, str>,
}

#[derive(Deserialize)]
pub(super) struct PolicyWire<'a> {
    #[serde(borrow)]
    pub(super) id: Cow<'a, str>,
    pub(super) priority: i64,
    #[serde(borrow)]
    pub(super) match_expression: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) strategy: Cow<'a, str>,
    /// Objects, each parsed as a [`TargetWire`] (serde would also take arrays).
    #[serde(borrow)]
    pub(super) targets: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
pub(super) struct TargetWire<'a> {
    #[serde(borrow)]
    pub(super) name: Cow<'a, str>,
    /// Absent means 1 and `null` is refused, as by the Python struct.
    #[serde(default = "one")]
    pub(super) weight: u64,
    #[serde(default)]
    pub(super) cost: u64,
}

fn one() -> u64 {
    1
}

#[derive(Deserialize)]
pub(super) struct PolicyDeletedWire<'a> {
    #[serde(borrow)]
    pub(super) policy_id: Cow<'a, str>,
}

#[derive(Deserialize)]
pub(super) struct UsageWire<'a> {
    #[serde(borrow)]
    pub(super) tenant_id: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) subscription_id: Cow<'a, str>,
    pub(super) amount: u64,
    #[serde(borrow)]
    pub(super) period_start: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) idempotency_key: Cow<'a, str>,
}
