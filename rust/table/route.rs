//! Routing against the table: a tenant's row is the `budget` variable of match
//! expressions, read straight from its atomics (the plan and currency, which live with
//! the row's cold fields, only when an expression names them).

use super::names::Names;
use super::row::Row;
use super::Table;
use crate::counters::UsageCell;
use crate::routing::{Attrs, BudgetFields, Field, Routed, RoutingTable, Value};
use parking_lot::RwLock;
use std::sync::atomic::Ordering;
use std::sync::Arc;

struct RowBudget<'a> {
    row: &'a Row,
    names: &'a RwLock<Names>,
}

impl BudgetFields for RowBudget<'_> {
    fn field(&self, field: Field) -> Value {
        let row = self.row;
        let total = row.total.load(Ordering::Acquire);
        let usage = || row.usage.load();
        let int = |v: u64| Value::Int(i64::try_from(v).unwrap_or(i64::MAX));
        let name = |pick: fn(&super::row::Meta) -> u32| {
            let names = self.names.read();
            Value::Str(Arc::clone(names.get(pick(&row.meta.lock()))))
        };
        match field {
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
            Field::PlanId => name(|m| m.plan_id),
            Field::PlanName => name(|m| m.plan_name),
            Field::Currency => {
                let code = row.meta.lock().currency;
                Value::str(std::str::from_utf8(&code).unwrap_or_default())
            }
        }
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
        let row = tenant.and_then(|t| self.tenants.get(t));
        let budget = row.map(|row| RowBudget {
            row,
            names: &self.names,
        });
        let budget = budget.as_ref().map(|b| b as &dyn BudgetFields);
        self.routing.route(attrs, budget, answer)
    }
}
