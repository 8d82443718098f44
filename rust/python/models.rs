//! The Python objects the bindings hand out, looked up once in `billing_gateway.models`
//! when `_core` is imported. Enum members are found by value (`Reason("ok")`), each
//! variant by its Rust spelling: a variant without its Python member fails the import.

use crate::table::{Outcome, Reason};
use pyo3::exceptions::PyImportError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

pub(super) struct Models {
    /// Indexed by `Reason as usize`.
    reasons: Box<[Py<PyAny>]>,
    /// Indexed by `Outcome as usize`.
    outcomes: Box<[Py<PyAny>]>,
    pub(super) budget: Py<PyAny>,
    pub(super) usage_record: Py<PyAny>,
    pub(super) routing_policy: Py<PyAny>,
    pub(super) target: Py<PyAny>,
}

static MODELS: PyOnceLock<Models> = PyOnceLock::new();

pub(super) fn load(py: Python<'_>) -> PyResult<&'static Models> {
    MODELS.get_or_try_init(py, || {
        let m = py.import("billing_gateway.models")?;
        Ok(Models {
            reasons: members(&m, "Reason", Reason::ALL.iter().map(|r| r.as_str()))?,
            outcomes: members(&m, "ApplyOutcome", Outcome::ALL.iter().map(|o| o.as_str()))?,
            budget: m.getattr("Budget")?.unbind(),
            usage_record: m.getattr("UsageRecord")?.unbind(),
            routing_policy: m.getattr("RoutingPolicy")?.unbind(),
            target: m.getattr("Target")?.unbind(),
        })
    })
}

/// The members of enum `class` of module `m` with these values, in order.
fn members(
    m: &Bound<'_, PyModule>,
    class: &str,
    values: impl Iterator<Item = &'static str>,
) -> PyResult<Box<[Py<PyAny>]>> {
    let cls = m.getattr(class)?;
    values
        .map(|value| {
            cls.call1((value,)).map(Bound::unbind).map_err(|_| {
                PyImportError::new_err(format!(
                    "billing_gateway.models.{class} has no member with the value {value:?}, \
                     which the Rust core uses"
                ))
            })
        })
        .collect()
}

impl Models {
    pub(super) fn reason(&self, py: Python<'_>, reason: Reason) -> Py<PyAny> {
        self.reasons[reason as usize].clone_ref(py)
    }

    /// The reason `member` (a `billing_gateway.Reason`) stands for.
    pub(super) fn reason_of(&self, member: &Bound<'_, PyAny>) -> Option<Reason> {
        let py = member.py();
        let index = self.reasons.iter().position(|r| r.bind(py).is(member))?;
        Some(Reason::ALL[index])
    }

    pub(super) fn outcome(&self, py: Python<'_>, outcome: Outcome) -> Py<PyAny> {
        self.outcomes[outcome as usize].clone_ref(py)
    }
}
