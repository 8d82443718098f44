//! `billing_gateway.RoutingPolicy` and `Target` to policy definitions and back. Any
//! problem with a policy, its types included, is `InvalidPolicy` naming the policy id,
//! the field and the problem.

use super::args::type_name;
use super::models;
use crate::error::{Error, PolicyError};
use crate::money::MAX_MICROS;
use crate::routing::{Policy, PolicyDef, TargetDef};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyInt, PyString, PyTuple};

/// Builds the error for policy `policy_id`.
fn invalid(policy_id: &str, field: &str, problem: String) -> PyErr {
    Error::InvalidPolicy(Box::new(PolicyError {
        policy_id: policy_id.to_string(),
        field: field.to_string(),
        problem,
        position: None,
    }))
    .into()
}

/// Reads one field of a policy or target.
struct Reader<'a, 'py> {
    obj: &'a Bound<'py, PyAny>,
    policy_id: &'a str,
    prefix: String,
}

impl Reader<'_, '_> {
    fn attr(&self, name: &str) -> PyResult<Bound<'_, PyAny>> {
        self.obj.getattr(name).map_err(|_| {
            let what = type_name(self.obj);
            invalid(
                self.policy_id,
                &self.field(name),
                format!("missing ({what} has no {name})"),
            )
        })
    }

    fn field(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn string(&self, name: &str) -> PyResult<String> {
        let v = self.attr(name)?;
        let s = v.cast::<PyString>().map_err(|_| {
            invalid(
                self.policy_id,
                &self.field(name),
                format!("must be a str, not {}", type_name(&v)),
            )
        })?;
        s.to_str().map(str::to_string).map_err(|_| {
            invalid(
                self.policy_id,
                &self.field(name),
                "is not valid Unicode".to_string(),
            )
        })
    }

    /// An `int` (not a `bool`) within `min..=max`.
    fn int(&self, name: &str, min: i64, max: i64) -> PyResult<i64> {
        let v = self.attr(name)?;
        if !v.is_instance_of::<PyInt>() || v.is_instance_of::<PyBool>() {
            let p = format!("must be an int, not {}", type_name(&v));
            return Err(invalid(self.policy_id, &self.field(name), p));
        }
        v.extract::<i64>()
            .ok()
            .filter(|i| (min..=max).contains(i))
            .ok_or_else(|| {
                let p = if min == 0 && v.lt(0).unwrap_or(false) {
                    format!("must be >= 0, got {v}")
                } else {
                    format!("must be between {min} and {max}, got {v}")
                };
                invalid(self.policy_id, &self.field(name), p)
            })
    }
}

/// A policy definition from a `RoutingPolicy` (or any object with its attributes);
/// `index` names it while its id is unreadable.
pub(super) fn definition(obj: &Bound<'_, PyAny>, index: usize) -> PyResult<PolicyDef> {
    let placeholder = format!("<policy {index}>");
    let first = Reader {
        obj,
        policy_id: &placeholder,
        prefix: String::new(),
    };
    let id = first.string("id")?;
    let r = Reader {
        obj,
        policy_id: &id,
        prefix: String::new(),
    };
    let priority = r.int("priority", i64::MIN, i64::MAX)?;
    let match_expression = r.string("match_expression")?;
    let strategy = r.string("strategy")?;
    let items = r.attr("targets")?;
    let iter = items.try_iter().map_err(|_| {
        let p = format!("must be a sequence of Target, not {}", type_name(&items));
        invalid(&id, "targets", p)
    })?;
    let mut targets = Vec::new();
    for (i, t) in iter.enumerate() {
        let t = t?;
        let tr = Reader {
            obj: &t,
            policy_id: &id,
            prefix: format!("targets[{i}]."),
        };
        let max = MAX_MICROS as i64;
        targets.push(TargetDef {
            name: tr.string("name")?,
            weight: tr.int("weight", 0, max)? as u64,
            cost: tr.int("cost", 0, max)? as u64,
        });
    }
    Ok(PolicyDef {
        id: id.clone(),
        priority,
        match_expression,
        strategy,
        targets,
    })
}

/// Compiles the policies of an iterable; the first problem is the error.
pub(super) fn compile_all(policies: &Bound<'_, PyAny>) -> PyResult<Vec<Policy>> {
    let iter = policies.try_iter().map_err(|_| {
        pyo3::exceptions::PyTypeError::new_err(format!(
            "policies must be an iterable of RoutingPolicy, not {}",
            type_name(policies)
        ))
    })?;
    iter.enumerate()
        .map(|(i, p)| {
            let def = definition(&p?, i)?;
            Policy::compile(def).map_err(|e| Error::InvalidPolicy(Box::new(e)).into())
        })
        .collect()
}

/// A `RoutingPolicy` object for `policy`.
pub(super) fn to_python(py: Python<'_>, policy: &Policy) -> PyResult<Py<PyAny>> {
    let m = models::load(py)?;
    let target = m.target.bind(py);
    let targets = policy
        .def
        .targets
        .iter()
        .map(|t| target.call1((&t.name, t.weight, t.cost)))
        .collect::<PyResult<Vec<_>>>()?;
    let d = &policy.def;
    let args = (
        &d.id,
        d.priority,
        &d.match_expression,
        &d.strategy,
        PyTuple::new(py, targets)?,
    );
    Ok(m.routing_policy.bind(py).call1(args)?.unbind())
}
