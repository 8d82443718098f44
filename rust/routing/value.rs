//! CEL values as the evaluator sees them, and CEL's equality and ordering on them.
//!
//! Cheap to clone (strings, lists and maps are shared), `Send + Sync` so compiled
//! constants live in the shared policy set. Equality follows cel-spec: numbers compare
//! by value across `int`, `uint` and `double`; values of different kinds are unequal
//! (never an error); NaN equals nothing.

use compact_str::CompactString;
use std::cmp::Ordering;
use std::sync::Arc;

#[derive(Clone, Debug)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Double(f64),
    /// Inline up to 24 bytes: request strings are converted without allocating.
    Str(CompactString),
    List(Arc<[Value]>),
    /// Entries in insertion order; keys are `Int`, `UInt`, `Bool` or `Str`, distinct.
    Map(Arc<[(Value, Value)]>),
}

/// An evaluation that has no value (a missing key, a wrong type, an overflow): the
/// policy does not match. Why is not kept: routing only counts these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fail;

impl Value {
    pub fn str(s: &str) -> Value {
        Value::Str(CompactString::from(s))
    }

    /// The CEL type name, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::UInt(_) => "uint",
            Value::Double(_) => "double",
            Value::Str(_) => "string",
            Value::List(_) => "list",
            Value::Map(_) => "map",
        }
    }

    /// Whether this value may be a map key.
    pub fn is_key(&self) -> bool {
        matches!(
            self,
            Value::Int(_) | Value::UInt(_) | Value::Bool(_) | Value::Str(_)
        )
    }

    /// The entry of map `self` under `key` (numeric keys match across int and uint).
    pub fn entry(&self, key: &Value) -> Result<Option<&Value>, Fail> {
        let Value::Map(entries) = self else {
            return Err(Fail);
        };
        // A double finds the integer key it equals.
        if !(key.is_key() || matches!(key, Value::Double(_))) {
            return Err(Fail);
        }
        Ok(entries.iter().find(|(k, _)| equal(k, key)).map(|(_, v)| v))
    }

    /// The entry under a string key (a field selection `m.f`).
    pub fn field(&self, name: &str) -> Result<Option<&Value>, Fail> {
        let Value::Map(entries) = self else {
            return Err(Fail);
        };
        Ok(entries
            .iter()
            .find(|(k, _)| matches!(k, Value::Str(s) if &**s == name))
            .map(|(_, v)| v))
    }
}

/// CEL's `==`.
pub fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Str(x), Value::Str(y)) => x == y,
        (Value::List(x), Value::List(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(p, q)| equal(p, q))
        }
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len()
                && x.iter().all(|(k, v)| {
                    y.iter()
                        .find(|(k2, _)| equal(k, k2))
                        .is_some_and(|(_, v2)| equal(v, v2))
                })
        }
        _ => numeric_order(a, b) == Some(Ordering::Equal),
    }
}

/// The order of two numbers of any numeric kinds, exactly (no rounding of large
/// integers through doubles); `None` for NaN or a non-number.
fn numeric_order(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        (Value::UInt(x), Value::UInt(y)) => Some(x.cmp(y)),
        (Value::Double(x), Value::Double(y)) => x.partial_cmp(y),
        (Value::Int(x), Value::UInt(y)) => Some(i128::from(*x).cmp(&i128::from(*y))),
        (Value::UInt(x), Value::Int(y)) => Some(i128::from(*x).cmp(&i128::from(*y))),
        (Value::Int(x), Value::Double(y)) => int_double(i128::from(*x), *y),
        (Value::UInt(x), Value::Double(y)) => int_double(i128::from(*x), *y),
        (Value::Double(x), Value::Int(y)) => int_double(i128::from(*y), *x).map(Ordering::reverse),
        (Value::Double(x), Value::UInt(y)) => int_double(i128::from(*y), *x).map(Ordering::reverse),
        _ => None,
    }
}

/// `i` against `d`, exactly.
fn int_double(i: i128, d: f64) -> Option<Ordering> {
    if d.is_nan() {
        return None;
    }
    // Every i64/u64 lies strictly inside (-2^64, 2^64), where doubles are exact integers
    // after `floor`.
    const LIMIT: f64 = 18_446_744_073_709_551_616.0;
    if d >= LIMIT {
        return Some(Ordering::Less);
    }
    if d <= -LIMIT {
        return Some(Ordering::Greater);
    }
    let floor = d.floor();
    let whole = floor as i128;
    Some(match i.cmp(&whole) {
        Ordering::Equal if d > floor => Ordering::Less,
        other => other,
    })
}

/// CEL's `<`, `<=`, `>`, `>=`: numbers across kinds, strings, bools; anything else
/// (or NaN) has no order.
pub fn order(a: &Value, b: &Value) -> Result<Ordering, Fail> {
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => Ok(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Ok(x.cmp(y)),
        _ => numeric_order(a, b).ok_or(Fail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_compare_exactly_across_kinds() {
        assert!(equal(&Value::Int(1), &Value::Double(1.0)));
        assert!(equal(&Value::UInt(1), &Value::Int(1)));
        assert!(!equal(&Value::Int(-1), &Value::UInt(u64::MAX)));
        assert!(!equal(
            &Value::Int(i64::MAX),
            &Value::Double(9.223372036854776e18)
        ));
        assert_eq!(
            order(&Value::Int(2), &Value::Double(1.5)),
            Ok(Ordering::Greater)
        );
        assert_eq!(
            order(&Value::Int(1), &Value::Double(1.5)),
            Ok(Ordering::Less)
        );
        assert_eq!(
            order(&Value::Int(-2), &Value::Double(-1.5)),
            Ok(Ordering::Less)
        );
        assert!(!equal(&Value::Double(f64::NAN), &Value::Double(f64::NAN)));
        assert!(!equal(&Value::str("1"), &Value::Int(1)));
        assert_eq!(order(&Value::str("1"), &Value::Int(1)), Err(Fail));
    }
}
