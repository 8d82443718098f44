//! billing_gateway's core: an in-process budget table and router for API and LLM gateways.
//!
//! Everything here is plain Rust and tested with `cargo test`; the PyO3 bindings
//! live in `python` behind the `python` feature and only translate.
//!
//! Dependencies point down: [`error`], [`money`], [`clock`], [`counters`], [`index`] and
//! [`dedupe`] depend on nothing above them; [`event`] on those; [`table`] on events;
//! [`snapshot`] on the table's snapshot interface only (`Table::export`, `table::Import`).
//! [`routing`] (policies, CEL, target selection) depends on [`error`] and [`event`]'s
//! limits; [`event`] compiles policy events with it, and [`table`] holds a routing table.

mod spelling;

pub mod clock;
pub mod counters;
pub mod dedupe;
pub mod error;
pub mod event;
pub mod index;
pub mod jetstream;
pub mod money;
pub mod routing;
pub mod snapshot;
pub mod table;

#[cfg(feature = "python")]
mod python;

pub use error::{Error, Unresolvable};
pub use table::{BudgetView, Config, Decision, Outcome, Reason, Table, UsageItem, UsageRecord};
