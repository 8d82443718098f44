//! Request attributes read from the Python mapping given to `route`: only the keys a
//! policy names, each read once per call; a `str` is lent (compared where it lies), any
//! other value converted. A value CEL cannot hold (a `set`, a
//! non-`str` map key, an `int` beyond 64 bits, nesting deeper than [`MAX_DEPTH`]) is an
//! evaluation error for the policies that read it, never an exception.

use crate::routing::{Attr, Attrs, Fail, Key, Value};
use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyMapping, PyString, PyTuple};
use std::cell::{Cell, OnceCell};
use std::sync::Arc;

/// The deepest nesting of lists and mappings converted.
const MAX_DEPTH: usize = 32;

/// How many `str` attributes one call lends without copying (the rest are copied).
const LENT: usize = 8;

pub(super) struct PyAttrs<'a, 'py> {
    map: &'a Bound<'py, PyAny>,
    dict: Option<&'a Bound<'py, PyDict>>,
    /// The `str` values lent to the evaluator, held until the call ends: whatever Python
    /// code runs meanwhile (a custom `__eq__` or `__getitem__`) cannot free them.
    lent: [OnceCell<Bound<'py, PyString>>; LENT],
    next: Cell<usize>,
}

impl<'a, 'py> PyAttrs<'a, 'py> {
    /// Attributes read from `map`, a `dict` or any other `Mapping`.
    pub(super) fn new(map: &'a Bound<'py, PyAny>) -> Self {
        PyAttrs {
            map,
            dict: map.cast::<PyDict>().ok(),
            lent: Default::default(),
            next: Cell::new(0),
        }
    }

    fn lookup(&self, key: &Bound<'py, PyString>) -> Result<Option<Attr<'_>>, Fail> {
        let found = match self.dict {
            Some(d) => d.get_item(key).map_err(|_| Fail)?,
            None => match self.map.get_item(key) {
                Ok(v) => Some(v),
                Err(e) if e.is_instance_of::<PyKeyError>(key.py()) => None,
                Err(_) => return Err(Fail),
            },
        };
        let Some(found) = found else {
            return Ok(None);
        };
        match found.cast_into::<PyString>() {
            Ok(s) => self.lend(s).map(Some),
            Err(other) => convert(&other.into_inner(), 0).map(|v| Some(Attr::Value(v))),
        }
    }

    /// `s` as a borrowed `&str` while a slot is free to hold it, else copied.
    fn lend(&self, s: Bound<'py, PyString>) -> Result<Attr<'_>, Fail> {
        let i = self.next.get();
        let Some(slot) = self.lent.get(i) else {
            return s
                .to_str()
                .map(|s| Attr::Value(Value::str(s)))
                .map_err(|_| Fail);
        };
        self.next.set(i + 1);
        slot.get_or_init(|| s)
            .to_str()
            .map(Attr::Str)
            .map_err(|_| Fail)
    }
}

impl Attrs for PyAttrs<'_, '_> {
    fn get(&self, key: &Key) -> Result<Option<Attr<'_>>, Fail> {
        let py = self.map.py();
        // The key as an interned Python string, made once per compiled key: its hash is
        // cached, and dict lookups start with an identity check.
        let interned = key
            .memo()
            .get_or_init(|| PyString::intern(py, key.name()).unbind());
        match interned {
            Some(k) => self.lookup(k.bind(py)),
            None => self.lookup(&PyString::new(py, key.name())),
        }
    }

    fn get_dyn(&self, key: &str) -> Result<Option<Value>, Fail> {
        let found = self.lookup(&PyString::new(self.map.py(), key))?;
        Ok(found.map(Attr::into_value))
    }
}

/// A Python value as a CEL value.
fn convert(v: &Bound<'_, PyAny>, depth: usize) -> Result<Value, Fail> {
    if let Ok(s) = v.cast::<PyString>() {
        return s.to_str().map(Value::str).map_err(|_| Fail);
    }
    if v.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = v.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if v.is_instance_of::<PyInt>() {
        if let Ok(i) = v.extract::<i64>() {
            return Ok(Value::Int(i));
        }
        return v.extract::<u64>().map(Value::UInt).map_err(|_| Fail);
    }
    if let Ok(f) = v.cast::<PyFloat>() {
        return Ok(Value::Double(f.value()));
    }
    if depth >= MAX_DEPTH {
        return Err(Fail);
    }
    if v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>() {
        let items = v
            .try_iter()
            .map_err(|_| Fail)?
            .map(|item| item.map_err(|_| Fail).and_then(|i| convert(&i, depth + 1)))
            .collect::<Result<Arc<[Value]>, Fail>>()?;
        return Ok(Value::List(items));
    }
    if let Ok(m) = v.cast::<PyMapping>() {
        let items = m.items().map_err(|_| Fail)?;
        let mut entries = Vec::with_capacity(items.len());
        for pair in items.iter() {
            let (k, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) =
                pair.extract().map_err(|_| Fail)?;
            let k = k.cast::<PyString>().map_err(|_| Fail)?;
            let k = k.to_str().map_err(|_| Fail)?;
            entries.push((Value::str(k), convert(&value, depth + 1)?));
        }
        return Ok(Value::Map(entries.into()));
    }
    Err(Fail)
}
