//! `billing_gateway.Decision`: the outcome of a spend check.

use super::args::{micros, natural};
use super::models;
use crate::table::Decision;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

/// The outcome of a spend check; `bool(decision)` is `decision.allowed`.
#[pyclass(
    frozen,
    eq,
    hash,
    skip_from_py_object,
    module = "billing_gateway",
    name = "Decision"
)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PyDecision(pub(super) Decision);

#[pymethods]
impl PyDecision {
    #[new]
    #[pyo3(signature = (allowed, reason, remaining, reservation_id = None))]
    fn new(
        allowed: bool,
        reason: &Bound<'_, PyAny>,
        remaining: &Bound<'_, PyAny>,
        reservation_id: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let remaining = micros(remaining, "remaining")?;
        let reservation_id = reservation_id
            .map(|id| natural(id, "reservation_id"))
            .transpose()?;
        let reason = models::load(reason.py())?
            .reason_of(reason)
            .ok_or_else(|| PyTypeError::new_err("reason must be a billing_gateway.Reason"))?;
        Ok(Self(Decision {
            allowed,
            reason,
            remaining,
            reservation_id,
        }))
    }

    #[getter]
    fn allowed(&self) -> bool {
        self.0.allowed
    }

    #[getter]
    fn reason(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(models::load(py)?.reason(py, self.0.reason))
    }

    #[getter]
    fn remaining(&self) -> u64 {
        self.0.remaining
    }

    #[getter]
    fn reservation_id(&self) -> Option<u64> {
        self.0.reservation_id
    }

    fn __bool__(&self) -> bool {
        self.0.allowed
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let reason = self.reason(py)?;
        let id = self
            .0
            .reservation_id
            .map_or_else(|| "None".to_string(), |i| i.to_string());
        Ok(format!(
            "Decision(allowed={}, reason={}, remaining={}, reservation_id={id})",
            if self.0.allowed { "True" } else { "False" },
            reason.bind(py).repr()?,
            self.0.remaining,
        ))
    }
}
