//! The floor for benchmarks, built only with the `bench-baselines` feature (`make bench`):
//! the public extension does not ship it.

use pyo3::prelude::*;

/// A method with `try_spend`'s signature that does nothing.
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
}
