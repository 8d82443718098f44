//! The floor for benchmarks, built only with the `bench-baselines` feature (`make bench`):
//! the public extension does not ship it.

use pyo3::prelude::*;

/// Methods with `try_spend`'s and `route`'s signatures that do nothing.
#[pyclass(frozen, module = "billing_gateway._core")]
pub struct NoOp;

#[pymethods]
impl NoOp {
    #[new]
    fn new() -> Self {
        NoOp
    }

    fn try_spend(&self, tenant_id: &str, amount: i64) -> bool {
        !tenant_id.is_empty() || amount >= 0
    }

    /// `route`'s arguments, nothing done: `None`, as when no policy matches.
    fn route(&self, tenant_id: &Bound<'_, PyAny>, attrs: &Bound<'_, PyAny>) -> Option<bool> {
        (tenant_id.is_none() && attrs.is_none()).then_some(true)
    }
}
