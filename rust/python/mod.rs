//! PyO3 bindings: argument conversion and result objects only. All rules live in the
//! Python-free modules of the crate.
//!
//! One file per class (`gateway`, `decision`, `route`), the module's functions
//! (`functions`), the Python objects the bindings hand out (`models`), arguments
//! (`args`), request attributes (`attrs`), routing policies (`policies`) and errors
//! (`errors`).

mod args;
mod attrs;
mod decision;
mod errors;
mod functions;
mod gateway;
mod models;
#[cfg(feature = "bench-baselines")]
mod noop;
mod policies;
mod route;

use crate::error::Unresolvable;
use crate::event::Status;
use crate::table::{Outcome, Reason};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

/// The spellings of an enum's variants, in order, as a tuple of `str`.
fn spellings<'py, T: Copy>(
    py: Python<'py>,
    all: &[T],
    as_str: fn(T) -> &'static str,
) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(py, all.iter().map(|&v| as_str(v)))
}

#[pymodule(gil_used = false)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    // Now rather than at first use: a variant without its Python member fails the import.
    models::load(py)?;
    m.add_class::<gateway::Gateway>()?;
    m.add_class::<decision::PyDecision>()?;
    m.add_class::<route::PyRoute>()?;
    #[cfg(feature = "bench-baselines")]
    m.add_class::<noop::NoOp>()?;
    m.add_function(wrap_pyfunction!(functions::ack_info, m)?)?;
    m.add_function(wrap_pyfunction!(functions::validate_event, m)?)?;
    m.add("REASONS", spellings(py, Reason::ALL, Reason::as_str)?)?;
    m.add("OUTCOMES", spellings(py, Outcome::ALL, Outcome::as_str)?)?;
    m.add("STATUSES", spellings(py, Status::ALL, Status::as_str)?)?;
    let spending: Vec<Status> = Status::ALL
        .iter()
        .copied()
        .filter(|s| s.may_spend())
        .collect();
    m.add(
        "SPENDING_STATUSES",
        spellings(py, &spending, Status::as_str)?,
    )?;
    m.add(
        "UNKNOWN_RESERVATION_REASONS",
        spellings(py, Unresolvable::ALL, Unresolvable::as_str)?,
    )?;
    Ok(())
}
