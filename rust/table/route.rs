//! Routing against the table: a tenant's row is the `budget` variable of match
//! expressions, read straight from its atomics (the plan and currency, which live with
//! the row's cold fields, only when an expression names them). The row is looked up
//! only when an expression reads the budget.

use super::names::Names;
use super::row::{Meta, Row};
use super::Table;
use crate::counters::UsageCell;
use crate::routing::{Attrs, BudgetFields, Field, Routed, RoutingTable, Value};
use std::cell::OnceCell;
use std::sync::atomic::Ordering;

/// The budget of `tenant`, found at the first read.
struct TenantBudget<'a> {
    table: &'a Table,
    tenant: Option<&'a str>,
    row: OnceCell<Option<&'a Row>>,
}

impl TenantBudget<'_> {
    fn plan(&self, row: &Row, pick: fn(&Meta) -> u32) -> Value {
        let names: &Names = &self.table.names.read();
        Value::str(names.get(pick(&row.meta.lock())))
    }
}

impl BudgetFields for TenantBudget<'_> {
    fn field(&self, field: Field) -> Option<Value> {
        let row = *self
            .row
            .get_or_init(|| self.tenant.and_then(|t| self.table.tenants.get(t)));
        let row = row?;
        let total = row.total.load(Ordering::Acquire);
        let usage = || row.usage.load();
        let int = |v: u64| Value::Int(i64::try_from(v).unwrap_or(i64::MAX));
        Some(match field {
            Field::Total => int(total),
            Field::Spent => int(usage().spent),
            Field::Reserved => int(usage().reserved),
            Field::Remaining => int(usage().remaining(total)),
            Field::RemainingFraction => Value::Double(if total == 0 {
                0.0
            } else {
                (usage().remaining(total) as f64 / total as f64).clamp(0.0, 1.0)
            }),
            Field::Status => Value::str(row.status().as_str()),
            Field::PlanId => self.plan(row, |m| m.plan_id),
            Field::PlanName => self.plan(row, |m| m.plan_name),
            Field::Currency => {
                let code = row.meta.lock().currency;
                Value::str(std::str::from_utf8(&code).unwrap_or_default())
            }
        })
    }
}

impl Table {
    /// The routing table (policies, health, counters).
    pub fn routing(&self) -> &RoutingTable {
        &self.routing
    }

    /// Routes a request of `tenant` (`None`: no budget variable) with attributes `attrs`;
    /// `answer` sees the result while the policy set is pinned. Lock-free.
    pub fn route<R>(
        &self,
        tenant: Option<&str>,
        attrs: &dyn Attrs,
        answer: impl FnOnce(Routed<'_>) -> R,
    ) -> Option<R> {
        let budget = TenantBudget {
            table: self,
            tenant,
            row: OnceCell::new(),
        };
        self.routing.route(attrs, &budget, answer)
    }
}
