//! PyO3 bindings: argument conversion and result objects only. All rules live in
//! the Python-free modules of the crate.

use crate::event::{self, Status};
use crate::pyargs::{self, copy_bytes, event_bytes, micros, tenant, type_name};
use crate::table::{BudgetView, Config, Decision, Outcome, Reason, Table, MAX_DURATION_US};
use crate::{snapshot, Error};
use chrono::{DateTime, Utc};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyList, PyMemoryView, PyString};

pyo3::import_exception!(billing_gateway.errors, InvalidEvent);
pyo3::import_exception!(billing_gateway.errors, InvalidAmount);
pyo3::import_exception!(billing_gateway.errors, InvalidSnapshot);
pyo3::import_exception!(billing_gateway.errors, InvalidArgument);
pyo3::import_exception!(billing_gateway.errors, UnknownReservation);
pyo3::import_exception!(billing_gateway.errors, ParkingFull);

impl From<Error> for PyErr {
    fn from(e: Error) -> PyErr {
        match e {
            Error::InvalidEvent(m) => InvalidEvent::new_err(m),
            Error::InvalidAmount(m) => InvalidAmount::new_err(m),
            Error::InvalidSnapshot(m) => InvalidSnapshot::new_err(m),
            Error::InvalidArgument(m) => InvalidArgument::new_err(m),
            Error::UnknownReservation(m) => UnknownReservation::new_err(m),
            Error::ParkingFull(m) => ParkingFull::new_err(m),
        }
    }
}

/// Python objects the bindings hand out, looked up once in `billing_gateway.models`.
struct Models {
    reasons: [Py<PyAny>; 5],
    outcomes: [Py<PyAny>; 5],
    budget: Py<PyAny>,
    usage_record: Py<PyAny>,
    encode_event: Py<PyAny>,
}

static MODELS: PyOnceLock<Models> = PyOnceLock::new();

fn models(py: Python<'_>) -> PyResult<&'static Models> {
    MODELS.get_or_try_init(py, || {
        let m = py.import("billing_gateway.models")?;
        let reason = m.getattr("Reason")?;
        let outcome = m.getattr("ApplyOutcome")?;
        let members = |cls: &Bound<'_, PyAny>, names: [&str; 5]| -> PyResult<[Py<PyAny>; 5]> {
            let mut out = Vec::with_capacity(5);
            for n in names {
                out.push(cls.getattr(n)?.unbind());
            }
            Ok(out
                .try_into()
                .unwrap_or_else(|_| unreachable!("five names give five members")))
        };
        Ok(Models {
            reasons: members(
                &reason,
                [
                    "OK",
                    "INSUFFICIENT_BUDGET",
                    "UNKNOWN_TENANT",
                    "INACTIVE",
                    "PERIOD_ENDED",
                ],
            )?,
            outcomes: members(
                &outcome,
                ["APPLIED", "DUPLICATE", "STALE", "PARKED", "IGNORED"],
            )?,
            budget: m.getattr("Budget")?.unbind(),
            usage_record: m.getattr("UsageRecord")?.unbind(),
            encode_event: py
                .import("billing_gateway.events")?
                .getattr("encode_event")?
                .unbind(),
        })
    })
}

const REASONS: [Reason; 5] = [
    Reason::Ok,
    Reason::InsufficientBudget,
    Reason::UnknownTenant,
    Reason::Inactive,
    Reason::PeriodEnded,
];

/// A stored timestamp as a `datetime`. It never fails for a table's own values: events
/// and snapshots are validated to years 1..=9999, which `datetime` holds.
fn datetime(micros: i64) -> PyResult<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .ok_or_else(|| InvalidArgument::new_err(format!("timestamp out of range: {micros}")))
}

/// The longest TTL and grace period accepted, in seconds.
const MAX_SECONDS: f64 = (MAX_DURATION_US / 1_000_000) as f64;
const DEFAULT_TTL_US: i64 = 60_000_000;

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
pub struct PyDecision(Decision);

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
            .map(|id| pyargs::natural(id, "reservation_id"))
            .transpose()?;
        let m = models(reason.py())?;
        let index = m
            .reasons
            .iter()
            .position(|r| r.bind(reason.py()).is(reason))
            .ok_or_else(|| PyTypeError::new_err("reason must be a billing_gateway.Reason"))?;
        Ok(Self(Decision {
            allowed,
            reason: REASONS[index],
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
        Ok(models(py)?.reasons[self.0.reason as usize].clone_ref(py))
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
        let allow_unknown = match unknown_tenant.map(|u| pyargs::text(u, "unknown_tenant")) {
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
            obj.map_or(Ok(default), |o| pyargs::count(o, what))
        };
        let grace_us = match grace_period_s {
            None => defaults.grace_us,
            Some(g) => pyargs::seconds(g, "grace_period_s", MAX_SECONDS, true)?,
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
                let encoded = models(py)?.encode_event.bind(py).call1((event,))?;
                self.table.apply(encoded.cast::<PyBytes>()?.as_bytes())?
            }
        };
        outcome_member(py, outcome)
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
            Some(t) => pyargs::seconds(t, "ttl_s", MAX_SECONDS, false)?,
        };
        Ok(PyDecision(self.table.reserve(
            tenant(tenant_id)?,
            amount,
            ttl_us,
        )))
    }

    fn commit(&self, reservation_id: &Bound<'_, PyAny>, actual: &Bound<'_, PyAny>) -> PyResult<()> {
        let id = pyargs::reservation_id(reservation_id)?;
        let actual = micros(actual, "actual")?;
        Ok(self.table.commit(id, actual)?)
    }

    fn release(&self, reservation_id: &Bound<'_, PyAny>) -> PyResult<()> {
        Ok(self
            .table
            .release(pyargs::reservation_id(reservation_id)?)?)
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
        let cursor = cursor.map_or(Ok(0), |c| pyargs::natural(c, "cursor"))?;
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
        let cls = models(py)?.usage_record.bind(py);
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

    /// Pins the table's clock at `micros` since the epoch (tests, simulations);
    /// `None` returns to the system clock.
    #[pyo3(signature = (micros))]
    fn _set_clock(&self, micros: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let at = micros.map(|m| pyargs::instant(m, "micros")).transpose()?;
        self.table.set_clock(at);
        Ok(())
    }
}

fn outcome_member(py: Python<'_>, outcome: Outcome) -> PyResult<Py<PyAny>> {
    Ok(models(py)?.outcomes[outcome as usize].clone_ref(py))
}

fn budget_object(py: Python<'_>, b: &BudgetView) -> PyResult<Py<PyAny>> {
    let status: Status = b.status;
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
        status.as_str(),
    );
    Ok(models(py)?.budget.bind(py).call1(args)?.unbind())
}

/// `(stream_seq, consumer_seq, timestamp_ns, pending)` from a JetStream message's reply
/// subject if `consumer` delivered it, else `None` (heartbeats, flow control, others,
/// and strings that are not Unicode).
#[pyfunction]
fn ack_info(
    reply: &Bound<'_, PyString>,
    consumer: &Bound<'_, PyString>,
) -> Option<(u64, u64, i64, u64)> {
    crate::jetstream::ack_info(reply.to_str().ok()?, consumer.to_str().ok()?)
}

/// Checks one event (JSON as `bytes` or `str`) against the one definition of a valid
/// event; raises `InvalidEvent` naming the offending field.
#[pyfunction]
fn validate_event(data: &Bound<'_, PyAny>) -> PyResult<()> {
    let raw = event_bytes(data)?.ok_or_else(|| {
        PyTypeError::new_err(format!(
            "expected an event as bytes or str, not {}",
            type_name(data)
        ))
    })?;
    event::parse(&raw)?;
    Ok(())
}

/// The floor for benchmarks: a method with `try_spend`'s signature that does nothing.
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

#[pymodule(gil_used = false)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Gateway>()?;
    m.add_class::<PyDecision>()?;
    m.add_class::<NoOp>()?;
    m.add_function(wrap_pyfunction!(ack_info, m)?)?;
    m.add_function(wrap_pyfunction!(validate_event, m)?)?;
    Ok(())
}
