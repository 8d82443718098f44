//! Python arguments to Rust values, with the package's errors: a wrong type (a `bool`
//! included, though Python counts it as an `int`) is `TypeError`; a value out of its
//! range is `InvalidAmount` for money and `InvalidArgument` otherwise, never a bare
//! `OverflowError` or `UnicodeEncodeError`.

use super::errors::{InvalidAmount, InvalidArgument, InvalidEvent};
use crate::error::{Error, Unresolvable};
use crate::event;
use pyo3::exceptions::{PyOverflowError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyInt, PyMemoryView, PyString};
use std::borrow::Cow;

pub(super) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map_or_else(|_| "?".to_string(), |n| n.to_string())
}

/// An `int` that is not a `bool`.
fn is_int(obj: &Bound<'_, PyAny>) -> bool {
    obj.is_instance_of::<PyInt>() && !obj.is_instance_of::<PyBool>()
}

fn not_an_int(obj: &Bound<'_, PyAny>, what: &str, hint: &str) -> PyErr {
    PyTypeError::new_err(format!(
        "{what} must be an int{hint}, not {}",
        type_name(obj)
    ))
}

/// An amount: a non-negative `int` of micro-units within 64-bit signed range.
#[inline]
pub(super) fn micros(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<u64> {
    if obj.is_exact_instance_of::<PyInt>() {
        if let Ok(v @ 0..) = obj.extract::<i64>() {
            return Ok(v as u64);
        }
    }
    other_micros(obj, what)
}

#[cold]
fn other_micros(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<u64> {
    if !is_int(obj) {
        return Err(not_an_int(
            obj,
            what,
            " of micro-units (convert with billing_gateway.to_micros)",
        ));
    }
    match obj.extract::<i64>() {
        Ok(v @ 0..) => Ok(v as u64),
        Ok(v) => Err(InvalidAmount::new_err(format!(
            "{what} must be >= 0 micro-units, got {v}"
        ))),
        Err(_) => Err(InvalidAmount::new_err(format!(
            "{what} {obj} is out of range (at most {} micro-units)",
            i64::MAX
        ))),
    }
}

/// A tenant id: a `str` that is Unicode (no lone surrogate).
#[inline]
pub(super) fn tenant<'a>(obj: &'a Bound<'_, PyAny>) -> PyResult<&'a str> {
    match obj.cast::<PyString>() {
        Ok(s) => s.to_str().map_err(|_| {
            InvalidArgument::new_err("tenant_id is not valid Unicode (it holds a lone surrogate)")
        }),
        Err(_) => Err(PyTypeError::new_err(format!(
            "tenant_id must be a str, not {}",
            type_name(obj)
        ))),
    }
}

/// A reservation id; one that was never issued (negative, huge) is unknown.
pub(super) fn reservation_id(obj: &Bound<'_, PyAny>) -> PyResult<u64> {
    if !is_int(obj) {
        return Err(not_an_int(obj, "reservation_id", ""));
    }
    obj.extract::<u64>()
        .map_err(|_| Error::unknown_reservation(obj, Unresolvable::Unknown).into())
}

/// A non-negative `int` within 64 bits (a cursor, a count, a size).
pub(super) fn natural(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<u64> {
    if !is_int(obj) {
        return Err(not_an_int(obj, what, ""));
    }
    obj.extract::<u64>().map_err(|_| {
        InvalidArgument::new_err(format!(
            "{what} must be between 0 and {}, got {obj}",
            u64::MAX
        ))
    })
}

/// A [`natural`] number of things held in memory.
pub(super) fn count(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<usize> {
    usize::try_from(natural(obj, what)?).map_err(|_| {
        InvalidArgument::new_err(format!("{what} must be at most {}, got {obj}", usize::MAX))
    })
}

/// A number of seconds (`int` or `float`, not `bool`), finite and at most `max`, as
/// microseconds. Zero is allowed only when `allow_zero`; otherwise the result is >= 1.
pub(super) fn seconds(
    obj: &Bound<'_, PyAny>,
    what: &str,
    max: f64,
    allow_zero: bool,
) -> PyResult<i64> {
    if obj.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err(format!(
            "{what} must be a number of seconds, not bool"
        )));
    }
    let out_of_range = || {
        let least = if allow_zero { ">= 0" } else { "> 0" };
        InvalidArgument::new_err(format!(
            "{what} must be a finite number of seconds {least} and <= {max}, got {obj}"
        ))
    };
    let value = match obj.extract::<f64>() {
        Ok(v) => v,
        Err(e) if e.is_instance_of::<PyOverflowError>(obj.py()) => return Err(out_of_range()),
        Err(e) => return Err(e),
    };
    let positive = value > 0.0 || (allow_zero && value == 0.0);
    if !(value.is_finite() && positive && value <= max) {
        return Err(out_of_range());
    }
    let micros = (value * 1e6).round() as i64;
    Ok(if allow_zero { micros } else { micros.max(1) })
}

/// A point in time, in microseconds since the epoch, within what `datetime` holds.
pub(super) fn instant(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<i64> {
    if !is_int(obj) {
        return Err(not_an_int(obj, what, " of microseconds"));
    }
    obj.extract::<i64>()
        .ok()
        .filter(|v| (event::MIN_TIME..=event::MAX_TIME).contains(v))
        .ok_or_else(|| {
            InvalidArgument::new_err(format!(
                "{what} must be between {} and {} microseconds, got {obj}",
                event::MIN_TIME,
                event::MAX_TIME
            ))
        })
}

/// A `str` argument other than a tenant id (e.g. `unknown_tenant`).
pub(super) fn text<'a>(obj: &'a Bound<'_, PyAny>, what: &str) -> PyResult<&'a str> {
    let s = obj.cast::<PyString>().map_err(|_| {
        PyTypeError::new_err(format!("{what} must be a str, not {}", type_name(obj)))
    })?;
    s.to_str().map_err(|_| {
        InvalidArgument::new_err(format!(
            "{what} is not valid Unicode (it holds a lone surrogate)"
        ))
    })
}

/// A copy of a bytes-like object (`bytearray`, `memoryview`) as `bytes`.
pub(super) fn copy_bytes(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    obj.py()
        .import("builtins")?
        .getattr("bytes")?
        .call1((obj,))?
        .extract()
}

/// The JSON of an event given as `bytes`, `str`, `bytearray` or `memoryview`; `None`
/// for anything else. A `str` that is not Unicode (a lone surrogate) is `InvalidEvent`.
pub(super) fn event_bytes<'a>(event: &'a Bound<'_, PyAny>) -> PyResult<Option<Cow<'a, [u8]>>> {
    if let Ok(b) = event.cast::<PyBytes>() {
        return Ok(Some(Cow::Borrowed(b.as_bytes())));
    }
    if let Ok(s) = event.cast::<PyString>() {
        let text = s.to_str().map_err(|_| {
            InvalidEvent::new_err("event: not UTF-8 (the str holds a lone surrogate)")
        })?;
        return Ok(Some(Cow::Borrowed(text.as_bytes())));
    }
    if event.is_instance_of::<PyByteArray>() || event.is_instance_of::<PyMemoryView>() {
        return Ok(Some(Cow::Owned(copy_bytes(event)?)));
    }
    Ok(None)
}
