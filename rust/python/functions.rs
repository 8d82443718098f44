//! The module's functions.

use super::args::{event_bytes, type_name};
use crate::event;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyString;

/// `(stream_seq, consumer_seq, timestamp_ns, pending)` from a JetStream message's reply
/// subject if `consumer` delivered it, else `None` (heartbeats, flow control, others,
/// and strings that are not Unicode).
#[pyfunction]
pub(super) fn ack_info(
    reply: &Bound<'_, PyString>,
    consumer: &Bound<'_, PyString>,
) -> Option<(u64, u64, i64, u64)> {
    crate::jetstream::ack_info(reply.to_str().ok()?, consumer.to_str().ok()?)
}

/// Checks one event (JSON as `bytes` or `str`) against the one definition of a valid
/// event; raises `InvalidEvent` naming the offending field.
#[pyfunction]
pub(super) fn validate_event(data: &Bound<'_, PyAny>) -> PyResult<()> {
    let raw = event_bytes(data)?.ok_or_else(|| {
        PyTypeError::new_err(format!(
            "expected an event as bytes or str, not {}",
            type_name(data)
        ))
    })?;
    event::parse(&raw)?;
    Ok(())
}
