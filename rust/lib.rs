//! billing_gateway's core: an in-process budget table for API and LLM gateways.
//!
//! Everything here is plain Rust and tested with `cargo test`; the PyO3 bindings
//! live in [`python`] behind the `python` feature and only translate.

pub mod clock;
pub mod counters;
pub mod dedupe;
pub mod event;
pub mod index;
pub mod jetstream;
pub mod money;
pub mod snapshot;
pub mod table;

#[cfg(feature = "python")]
mod pyargs;
#[cfg(feature = "python")]
mod python;

pub use table::{BudgetView, Config, Decision, Outcome, Reason, Table, UsageItem, UsageRecord};

/// Every way the core refuses a request. Each maps to one Python exception class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    InvalidEvent(String),
    InvalidAmount(String),
    InvalidSnapshot(String),
    InvalidArgument(String),
    UnknownReservation(String),
    ParkingFull(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (Error::InvalidEvent(m)
        | Error::InvalidAmount(m)
        | Error::InvalidSnapshot(m)
        | Error::InvalidArgument(m)
        | Error::UnknownReservation(m)
        | Error::ParkingFull(m)) = self;
        f.write_str(m)
    }
}

impl std::error::Error for Error {}
