//! `billing_gateway.Route`: where `Gateway.route` sends a request.

use crate::routing::{Picks, Policy, Routed};
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// The policy, the target and the fallbacks: names are Python strings only when read.
enum Names {
    /// As `route` found it: the policy (shared with the table) and the picks.
    Routed(Arc<Policy>, Picks),
    Given {
        policy_id: String,
        target: String,
        fallbacks: Vec<String>,
    },
}

/// The answer of `Gateway.route`: the policy that matched, the target it picked, and
/// its other healthy targets in the order its strategy would try them.
#[pyclass(
    frozen,
    skip_from_py_object,
    module = "billing_gateway",
    name = "Route"
)]
pub struct PyRoute(Names);

impl PyRoute {
    /// The `Route` for `routed`: a policy's usual answer (all targets up, in its order) is
    /// made once and shared, as it is immutable.
    pub(super) fn answer(py: Python<'_>, routed: &Routed<'_>) -> PyResult<Py<PyRoute>> {
        let make = || PyRoute(Names::Routed(Arc::clone(routed.policy), *routed.picks));
        if routed.is_usual() {
            let usual = routed.policy.memo.get_or_init(|| Py::new(py, make()).ok());
            if let Some(Some(route)) = usual {
                return Ok(route.clone_ref(py));
            }
        }
        Py::new(py, make())
    }

    fn policy_id_str(&self) -> &str {
        match &self.0 {
            Names::Routed(p, _) => p.id(),
            Names::Given { policy_id, .. } => policy_id,
        }
    }

    fn target_str(&self) -> &str {
        match &self.0 {
            Names::Routed(p, picks) => &p.def.targets[usize::from(picks.first().unwrap_or(0))].name,
            Names::Given { target, .. } => target,
        }
    }

    fn fallback_strs(&self) -> Vec<&str> {
        match &self.0 {
            Names::Routed(p, picks) => picks
                .rest()
                .iter()
                .map(|&i| p.def.targets[usize::from(i)].name.as_str())
                .collect(),
            Names::Given { fallbacks, .. } => fallbacks.iter().map(String::as_str).collect(),
        }
    }

    fn key(&self) -> (&str, &str, Vec<&str>) {
        (
            self.policy_id_str(),
            self.target_str(),
            self.fallback_strs(),
        )
    }
}

#[pymethods]
impl PyRoute {
    #[new]
    fn new(policy_id: String, target: String, fallbacks: Vec<String>) -> Self {
        PyRoute(Names::Given {
            policy_id,
            target,
            fallbacks,
        })
    }

    #[getter]
    fn policy_id(&self) -> &str {
        self.policy_id_str()
    }

    #[getter]
    fn target(&self) -> &str {
        self.target_str()
    }

    #[getter]
    fn fallbacks<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.fallback_strs())
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<PyRoute>()
            .is_ok_and(|o| self.key() == o.get().key())
    }

    fn __hash__(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.key().hash(&mut h);
        h.finish()
    }

    fn __repr__(&self) -> String {
        let fallbacks: Vec<String> = self
            .fallback_strs()
            .iter()
            .map(|f| format!("{f:?}"))
            .collect();
        let comma = if fallbacks.len() == 1 { "," } else { "" };
        format!(
            "Route(policy_id={:?}, target={:?}, fallbacks=({}{comma}))",
            self.policy_id_str(),
            self.target_str(),
            fallbacks.join(", ")
        )
    }
}
