//! `billing_gateway.Gateway`: the budget and routing tables of one process.

use super::args::{self, copy_bytes, event_bytes, micros, tenant, type_name};
use super::attrs::PyAttrs;
use super::decision::PyDecision;
use super::errors::{InvalidArgument, InvalidSnapshot};
use super::models;
use super::policies;
use super::route::PyRoute;
use crate::error::{Error, PolicyError};
use crate::snapshot;
use crate::table::{BudgetView, Config, Table, MAX_DURATION_US};
use chrono::{DateTime, Utc};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyMapping, PyMemoryView};

/// `billing_gateway.events.encode_event`, looked up at first use (`events` imports `_core`).
static ENCODE_EVENT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn encode_event(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    let f = ENCODE_EVENT.get_or_try_init(py, || {
        Ok::<_, PyErr>(
            py.import("billing_gateway.events")?
                .getattr("encode_event")?
                .unbind(),
        )
    })?;
    Ok(f.bind(py))
}

/// A stored timestamp as a `datetime`. It never fails for a table's own values: events
/// and snapshots are validated to years 1..=9999, which `datetime` holds.
fn datetime(micros: i64) -> PyResult<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .ok_or_else(|| InvalidArgument::new_err(format!("timestamp out of range: {micros}")))
}

/// The longest TTL and grace period accepted, in seconds.
const MAX_SECONDS: f64 = (MAX_DURATION_US / 1_000_000) as f64;
const DEFAULT_TTL_US: i64 = 60_000_000;

/// The budget table of one process. Safe to share between threads.
#[pyclass(frozen, module = "billing_gateway", name = "Gateway")]
pub struct Gateway {
    table: Table,
}

#[pymethods]
impl Gateway {
    /// `None` for any keyword means its default.
    #[new]
    #[pyo3(
        signature = (*, grace_period_s = None, unknown_tenant = None, max_parked = None, dedupe_window = None, max_parked_bytes = None),
        text_signature = "(*, grace_period_s=86400.0, unknown_tenant='deny', max_parked=10000, dedupe_window=100000, max_parked_bytes=67108864)"
    )]
    fn new(
        grace_period_s: Option<&Bound<'_, PyAny>>,
        unknown_tenant: Option<&Bound<'_, PyAny>>,
        max_parked: Option<&Bound<'_, PyAny>>,
        dedupe_window: Option<&Bound<'_, PyAny>>,
        max_parked_bytes: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let defaults = Config::default();
        let allow_unknown = match unknown_tenant.map(|u| args::text(u, "unknown_tenant")) {
            None => defaults.allow_unknown,
            Some(Ok("deny")) => false,
            Some(Ok("allow")) => true,
            Some(Ok(other)) => {
                return Err(InvalidArgument::new_err(format!(
                    "unknown_tenant must be \"deny\" or \"allow\", got {other:?}"
                )))
            }
            Some(Err(e)) => return Err(e),
        };
        let count = |obj: Option<&Bound<'_, PyAny>>, what: &str, default: usize| {
            obj.map_or(Ok(default), |o| args::count(o, what))
        };
        let grace_us = match grace_period_s {
            None => defaults.grace_us,
            Some(g) => args::seconds(g, "grace_period_s", MAX_SECONDS, true)?,
        };
        Ok(Self {
            table: Table::new(Config {
                grace_us,
                allow_unknown,
                max_parked: count(max_parked, "max_parked", defaults.max_parked)?,
                max_parked_bytes: count(
                    max_parked_bytes,
                    "max_parked_bytes",
                    defaults.max_parked_bytes,
                )?,
                dedupe_window: count(dedupe_window, "dedupe_window", defaults.dedupe_window)?,
            }),
        })
    }

    /// Applies one event (JSON bytes or str, or a `billing_gateway.events` struct).
    fn apply(&self, py: Python<'_>, event: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let outcome = match event_bytes(event)? {
            Some(raw) => self.table.apply(&raw)?,
            None => {
                let encoded = encode_event(py)?.call1((event,))?;
                self.table.apply(encoded.cast::<PyBytes>()?.as_bytes())?
            }
        };
        Ok(models::load(py)?.outcome(py, outcome))
    }

    fn try_spend(&self, tenant_id: &Bound<'_, PyAny>, amount: &Bound<'_, PyAny>) -> PyResult<bool> {
        let amount = micros(amount, "amount")?;
        Ok(self.table.try_spend(tenant(tenant_id)?, amount))
    }

    fn spend(
        &self,
        tenant_id: &Bound<'_, PyAny>,
        amount: &Bound<'_, PyAny>,
    ) -> PyResult<PyDecision> {
        let amount = micros(amount, "amount")?;
        Ok(PyDecision(self.table.spend(tenant(tenant_id)?, amount)))
    }

    fn check(
        &self,
        tenant_id: &Bound<'_, PyAny>,
        amount: &Bound<'_, PyAny>,
    ) -> PyResult<PyDecision> {
        let amount = micros(amount, "amount")?;
        Ok(PyDecision(self.table.check(tenant(tenant_id)?, amount)))
    }

    /// `ttl_s=None` means the default.
    #[pyo3(
        signature = (tenant_id, amount, *, ttl_s = None),
        text_signature = "($self, tenant_id, amount, *, ttl_s=60.0)"
    )]
    fn reserve(
        &self,
        tenant_id: &Bound<'_, PyAny>,
        amount: &Bound<'_, PyAny>,
        ttl_s: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyDecision> {
        let amount = micros(amount, "amount")?;
        let ttl_us = match ttl_s {
            None => DEFAULT_TTL_US,
            Some(t) => args::seconds(t, "ttl_s", MAX_SECONDS, false)?,
        };
        Ok(PyDecision(self.table.reserve(
            tenant(tenant_id)?,
            amount,
            ttl_us,
        )))
    }

    fn commit(&self, reservation_id: &Bound<'_, PyAny>, actual: &Bound<'_, PyAny>) -> PyResult<()> {
        let id = args::reservation_id(reservation_id)?;
        let actual = micros(actual, "actual")?;
        Ok(self.table.commit(id, actual)?)
    }

    fn release(&self, reservation_id: &Bound<'_, PyAny>) -> PyResult<()> {
        Ok(self.table.release(args::reservation_id(reservation_id)?)?)
    }

    fn budget(&self, py: Python<'_>, tenant_id: &Bound<'_, PyAny>) -> PyResult<Option<Py<PyAny>>> {
        self.table
            .budget(tenant(tenant_id)?)
            .map(|b| budget_object(py, &b))
            .transpose()
    }

    fn budgets<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let views = self.table.budgets();
        let objects = views
            .iter()
            .map(|b| budget_object(py, b))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, objects)
    }

    fn __len__(&self) -> usize {
        self.table.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "Gateway(tenants={}, cursor={})",
            self.table.len(),
            self.table.cursor()
        )
    }

    /// The whole state as bytes, with `cursor` (e.g. the JetStream stream sequence).
    /// `cursor=None` means 0.
    #[pyo3(signature = (cursor = None), text_signature = "($self, cursor=0)")]
    fn snapshot<'py>(
        &self,
        py: Python<'py>,
        cursor: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let cursor = cursor.map_or(Ok(0), |c| args::natural(c, "cursor"))?;
        let bytes = py.detach(|| snapshot::encode(&self.table, cursor));
        Ok(PyBytes::new(py, &bytes))
    }

    /// Rebuilds a gateway from `snapshot()` output; anything else raises InvalidSnapshot.
    #[staticmethod]
    fn restore(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<Self> {
        let bytes: Vec<u8> = if data.is_instance_of::<PyBytes>()
            || data.is_instance_of::<PyByteArray>()
            || data.is_instance_of::<PyMemoryView>()
        {
            copy_bytes(data)?
        } else {
            return Err(InvalidSnapshot::new_err(format!(
                "expected the bytes returned by Gateway.snapshot(), got {}",
                type_name(data)
            )));
        };
        let table = py.detach(|| snapshot::decode(&bytes))?;
        Ok(Self { table })
    }

    #[getter]
    fn cursor(&self) -> u64 {
        self.table.cursor()
    }

    /// Committed spend per subscription since the last drain. If the records cannot be
    /// handed over (e.g. MemoryError), they go back to the journal: nothing is lost.
    fn drain_usage<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let cls = models::load(py)?.usage_record.bind(py);
        let records = self.table.drain_usage();
        let objects = records
            .iter()
            .map(|r| {
                cls.call1((
                    &*r.item.tenant_id,
                    &*r.item.subscription_id,
                    r.item.amount,
                    datetime(r.item.period_start)?,
                    &r.idempotency_key,
                ))
            })
            .collect::<PyResult<Vec<_>>>()
            .and_then(|objects| PyList::new(py, objects));
        if objects.is_err() {
            self.table.requeue_usage(records);
        }
        objects
    }

    /// Whether the table changed since the last `snapshot()` (or since it was created or
    /// restored): the next snapshot is due.
    #[getter]
    fn dirty(&self) -> bool {
        self.table.dirty()
    }

    /// Replaces the locally configured routing policies, all or nothing.
    fn set_policies(&self, policies: &Bound<'_, PyAny>) -> PyResult<()> {
        let compiled = policies::compile_all(policies)?;
        self.table.routing().set_policies(compiled).map_err(|id| {
            Error::InvalidPolicy(Box::new(PolicyError {
                policy_id: id.clone(),
                field: "id".to_string(),
                problem: format!("repeats the id {id:?} of another policy in the set"),
                position: None,
            }))
            .into()
        })
    }

    /// The policies `route` tries, in order (ascending priority, ties by id).
    fn policies<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let all = self.table.routing().policies();
        let objects = all
            .iter()
            .map(|p| policies::to_python(py, p))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, objects)
    }

    /// The route for a request of `tenant_id` (`None`: no budget) with `attrs`, or
    /// `None` when no policy matches with a healthy target. Never raises for what the
    /// expressions find in `attrs`.
    fn route(
        &self,
        tenant_id: &Bound<'_, PyAny>,
        attrs: &Bound<'_, PyAny>,
    ) -> PyResult<Option<Py<PyRoute>>> {
        let tenant = if tenant_id.is_none() {
            None
        } else {
            Some(tenant(tenant_id)?)
        };
        if !(attrs.is_instance_of::<PyDict>() || attrs.cast::<PyMapping>().is_ok()) {
            return Err(PyTypeError::new_err(format!(
                "attrs must be a mapping, not {}",
                type_name(attrs)
            )));
        }
        let source = PyAttrs::new(attrs);
        let py = attrs.py();
        self.table
            .route(tenant, &source, |r| PyRoute::answer(py, &r))
            .transpose()
    }

    /// Skips `target` in every policy for `for_s` seconds (until `mark_up`).
    fn mark_down(&self, target: &Bound<'_, PyAny>, for_s: &Bound<'_, PyAny>) -> PyResult<()> {
        let target = args::text(target, "target")?;
        let for_us = args::seconds(for_s, "for_s", MAX_SECONDS, false)?;
        self.table.routing().mark_down(target, for_us);
        Ok(())
    }

    fn mark_up(&self, target: &Bound<'_, PyAny>) -> PyResult<()> {
        self.table.routing().mark_up(args::text(target, "target")?);
        Ok(())
    }

    /// `{"evaluation_errors": n, "no_match": n}` since the gateway was created.
    fn routing_counters<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = self.table.routing().counters();
        let d = PyDict::new(py);
        d.set_item("evaluation_errors", c.evaluation_errors)?;
        d.set_item("no_match", c.no_match)?;
        Ok(d)
    }

    /// Pins the table's clock at `micros` since the epoch (tests, simulations);
    /// `None` returns to the system clock.
    #[pyo3(signature = (micros))]
    fn _set_clock(&self, micros: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let at = micros.map(|m| args::instant(m, "micros")).transpose()?;
        self.table.set_clock(at);
        Ok(())
    }
}

fn budget_object(py: Python<'_>, b: &BudgetView) -> PyResult<Py<PyAny>> {
    let currency = std::str::from_utf8(&b.currency).unwrap_or("???");
    let args = (
        &*b.tenant_id,
        &*b.subscription_id,
        &*b.plan_id,
        &*b.plan_name,
        currency,
        b.total,
        b.spent,
        b.reserved,
        b.remaining,
        datetime(b.period_start)?,
        datetime(b.period_end)?,
        b.status.as_str(),
    );
    Ok(models::load(py)?.budget.bind(py).call1(args)?.unbind())
}
