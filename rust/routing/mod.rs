//! Routing: which upstream serves a request. Policies with CEL match expressions,
//! compiled once into a tree this module evaluates; a policy set swapped atomically;
//! target health as atomics; strategies `failover`, `weighted` and `least_cost`.
//!
//! - `value`: CEL values, equality and ordering;
//! - `node`, `compile`: the `cel` crate's parse tree checked and lowered to [`Expression`];
//! - `eval`: evaluation against request attributes ([`Attrs`]) and a budget
//!   ([`BudgetFields`]);
//! - `policy`: definitions and the one validator ([`Policy::compile`]);
//! - `select`: health and strategies;
//! - `memo`: what callers derive once from compiled keys and policies;
//! - `table`: the layers (local `set_policies`, replicated events) and `route`.

mod compile;
mod eval;
mod memo;
mod node;
mod policy;
mod select;
mod table;
mod value;

#[cfg(test)]
mod tests;

pub use crate::error::PolicyError;
pub use compile::{compile, Expression, Key, Problem};
pub use eval::{Attr, Attrs, BudgetFields, Cache, NoBudget, Scope};
pub use memo::Memo;
pub use node::Field;
pub use policy::{Policy, PolicyDef, Strategy, TargetDef, MAX_TARGETS};
pub use select::Picks;
pub use table::{Replicated, RouteCounters, Routed, RoutingTable};
pub use value::{Fail, Value};
