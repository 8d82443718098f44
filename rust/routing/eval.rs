//! Evaluating a compiled expression against one request: the request's attributes come
//! from an [`Attrs`] source, each key read and converted at most once per `route` call
//! (a [`Cache`] slot per key the policy set names), the budget from [`BudgetFields`].
//!
//! `&&` and `||` absorb errors as CEL specifies: `false && <error>` is `false`,
//! `true || <error>` is `true`, whichever side the error is on; otherwise an error
//! propagates to the top, where it means "no match".

use super::compile::{Expression, Key};
use super::node::{Arith, Cmp, Field, Node, StrTest};
use super::value::{equal, order, Fail, Value};
use std::borrow::Cow;
use std::cell::OnceCell;
use std::cmp::Ordering;

/// Where request attributes come from (the Python bindings read a mapping).
pub trait Attrs {
    /// Attribute `key`: `Ok(None)` when absent, `Err` when its value is none CEL holds.
    fn get(&self, key: &Key) -> Result<Option<Attr<'_>>, Fail>;
    /// Attribute `key` computed at run time (`request[e]`).
    fn get_dyn(&self, key: &str) -> Result<Option<Value>, Fail>;
}

/// The `budget` variable: `None` for every field when there is none (no tenant, an
/// unknown tenant). Read only when an expression names it.
pub trait BudgetFields {
    fn field(&self, field: Field) -> Option<Value>;
}

/// No budget at all.
pub struct NoBudget;

impl BudgetFields for NoBudget {
    fn field(&self, _: Field) -> Option<Value> {
        None
    }
}

/// A request attribute as its source gives it: a string the source lends for the call
/// (compared where it lies, converted only if an operator needs a [`Value`]), or a value.
#[derive(Debug)]
pub enum Attr<'a> {
    Str(&'a str),
    Value(Value),
}

impl Attr<'_> {
    /// As a [`Value`]: a lent string is copied.
    pub fn value(&self) -> Cow<'_, Value> {
        match self {
            Attr::Str(s) => Cow::Owned(Value::str(s)),
            Attr::Value(v) => Cow::Borrowed(v),
        }
    }

    pub fn into_value(self) -> Value {
        match self {
            Attr::Str(s) => Value::str(s),
            Attr::Value(v) => v,
        }
    }

    /// CEL's `==` with `c`; a lent string is compared without a copy.
    fn equals(&self, c: &Value) -> bool {
        match (self, c) {
            (Attr::Str(s), Value::Str(c)) => *s == c.as_str(),
            // Values of different kinds are unequal.
            (Attr::Str(_), _) => false,
            (Attr::Value(v), c) => equal(v, c),
        }
    }
}

/// A value the source holds, its strings lent.
impl<'a> From<&'a Value> for Attr<'a> {
    fn from(v: &'a Value) -> Self {
        match v {
            Value::Str(s) => Attr::Str(s),
            v => Attr::Value(v.clone()),
        }
    }
}

/// Request attributes read so far in one `route` call, by the policy set's key slots.
pub type Cache<'a> = [OnceCell<Result<Option<Attr<'a>>, Fail>>];

/// What one evaluation reads.
pub struct Scope<'a, 'v> {
    pub attrs: &'v dyn Attrs,
    pub cache: &'a Cache<'v>,
    /// The cache slot of each of the expression's keys.
    pub slots: &'a [u16],
    pub budget: &'a dyn BudgetFields,
}

type Out<'a> = Result<Cow<'a, Value>, Fail>;

impl Expression {
    /// Whether the expression holds: `Ok(true)`/`Ok(false)`, `Err` when it has no
    /// boolean value.
    pub fn matches(&self, scope: &Scope<'_, '_>) -> Result<bool, Fail> {
        test(&self.root, self, scope)
    }
}

/// A boolean node, without building a [`Value`]: the fast path of the operators match
/// expressions are made of.
fn test<'a>(node: &'a Node, expr: &'a Expression, scope: &Scope<'a, '_>) -> Result<bool, Fail> {
    match node {
        Node::Const(Value::Bool(b)) => Ok(*b),
        Node::And(a, b) => logic(test(a, expr, scope), || test(b, expr, scope), false),
        Node::Or(a, b) => logic(test(a, expr, scope), || test(b, expr, scope), true),
        Node::Not(a) => test(a, expr, scope).map(|b| !b),
        Node::HasRequest(slot) => Ok(request(expr, scope, *slot)?.is_some()),
        Node::RequestEq(slot, c) => Ok(request(expr, scope, *slot)?.ok_or(Fail)?.equals(c)),
        Node::RequestIn(slot, items) => {
            let v = request(expr, scope, *slot)?.ok_or(Fail)?;
            Ok(items.iter().any(|item| v.equals(item)))
        }
        Node::HasBudget => Ok(scope.budget.field(Field::Total).is_some()),
        Node::BudgetCmp(op, f, c) => compare(*op, &scope.budget.field(*f).ok_or(Fail)?, c),
        Node::Compare(op, a, b) => {
            compare(*op, &*operand(a, expr, scope)?, &*operand(b, expr, scope)?)
        }
        Node::In(a, c) => contains(&*operand(c, expr, scope)?, &*operand(a, expr, scope)?),
        Node::Cond(c, a, b) => {
            if test(c, expr, scope)? {
                test(a, expr, scope)
            } else {
                test(b, expr, scope)
            }
        }
        _ => boolean(&*eval(node, expr, scope)?),
    }
}

/// An operand: constants and request attributes are borrowed without a call.
#[inline(always)]
fn operand<'a>(node: &'a Node, expr: &'a Expression, scope: &Scope<'a, '_>) -> Out<'a> {
    match node {
        Node::Const(v) => Ok(Cow::Borrowed(v)),
        Node::Request(slot) => request(expr, scope, *slot)?.map(Attr::value).ok_or(Fail),
        _ => eval(node, expr, scope),
    }
}

fn boolean(v: &Value) -> Result<bool, Fail> {
    match v {
        Value::Bool(b) => Ok(*b),
        _ => Err(Fail),
    }
}

fn owned<'a>(v: Value) -> Out<'a> {
    Ok(Cow::Owned(v))
}

/// The request attribute in the expression's slot `slot`.
fn request<'a>(
    expr: &Expression,
    scope: &Scope<'a, '_>,
    slot: u16,
) -> Result<Option<&'a Attr<'a>>, Fail> {
    let index = usize::from(scope.slots[usize::from(slot)]);
    let key = &expr.keys[usize::from(slot)];
    let cell = &scope.cache[index];
    cell.get_or_init(|| scope.attrs.get(key))
        .as_ref()
        .map(Option::as_ref)
        .map_err(|f| *f)
}

/// A part of `parent`: borrowed on if the parent was, copied out of an owned one.
fn part<'a>(
    parent: Cow<'a, Value>,
    pick: impl Fn(&Value) -> Result<Option<&Value>, Fail>,
) -> Out<'a> {
    match parent {
        Cow::Borrowed(p) => pick(p)?.map(Cow::Borrowed).ok_or(Fail),
        Cow::Owned(p) => pick(&p)?.cloned().map(Cow::Owned).ok_or(Fail),
    }
}

fn eval<'a>(node: &'a Node, expr: &'a Expression, scope: &Scope<'a, '_>) -> Out<'a> {
    let ev = |n: &'a Node| eval(n, expr, scope);
    match node {
        Node::Const(v) => Ok(Cow::Borrowed(v)),
        Node::Request(slot) => request(expr, scope, *slot)?.map(Attr::value).ok_or(Fail),
        Node::HasRequest(slot) => owned(Value::Bool(request(expr, scope, *slot)?.is_some())),
        Node::RequestDyn(key) => {
            let key = ev(key)?;
            let Value::Str(k) = key.as_ref() else {
                return Err(Fail);
            };
            scope.attrs.get_dyn(k)?.map(Cow::Owned).ok_or(Fail)
        }
        Node::Budget(f) => scope.budget.field(*f).map(Cow::Owned).ok_or(Fail),
        Node::HasBudget => owned(Value::Bool(test(node, expr, scope)?)),
        Node::Select(m, name) => part(ev(m)?, |v| v.field(name)),
        Node::Has(m, name) => owned(Value::Bool(ev(m)?.field(name)?.is_some())),
        Node::Index(c, k) => {
            let (c, k) = (ev(c)?, ev(k)?);
            part(c, |v| index(v, &k))
        }
        Node::List(items) => {
            let values = items.iter().map(|n| ev(n).map(Cow::into_owned));
            owned(Value::List(values.collect::<Result<_, _>>()?))
        }
        Node::Map(entries) => {
            let mut out: Vec<(Value, Value)> = Vec::with_capacity(entries.len());
            for (k, v) in entries.iter() {
                let k = ev(k)?.into_owned();
                if !k.is_key() || out.iter().any(|(seen, _)| equal(seen, &k)) {
                    return Err(Fail);
                }
                out.push((k, ev(v)?.into_owned()));
            }
            owned(Value::Map(out.into()))
        }
        Node::Not(_)
        | Node::And(..)
        | Node::Or(..)
        | Node::RequestEq(..)
        | Node::RequestIn(..)
        | Node::BudgetCmp(..) => owned(Value::Bool(test(node, expr, scope)?)),
        Node::Neg(a) => owned(negate(&*ev(a)?)?),
        Node::Cond(c, a, b) => {
            if boolean(&*ev(c)?)? {
                ev(a)
            } else {
                ev(b)
            }
        }
        Node::Compare(op, a, b) => owned(Value::Bool(compare(*op, &*ev(a)?, &*ev(b)?)?)),
        Node::Arith(op, a, b) => owned(arith(*op, &*ev(a)?, &*ev(b)?)?),
        Node::In(a, c) => owned(Value::Bool(contains(&*ev(c)?, &*ev(a)?)?)),
        Node::Size(a) => owned(Value::Int(size(&*ev(a)?)?)),
        Node::StrTest(t, s, p) => {
            let (s, p) = (ev(s)?, ev(p)?);
            let (Value::Str(s), Value::Str(p)) = (s.as_ref(), p.as_ref()) else {
                return Err(Fail);
            };
            owned(Value::Bool(match t {
                StrTest::Contains => s.contains(&**p),
                StrTest::StartsWith => s.starts_with(&**p),
                StrTest::EndsWith => s.ends_with(&**p),
            }))
        }
        Node::Matches(s, re) => match ev(s)?.as_ref() {
            Value::Str(s) => owned(Value::Bool(re.is_match(s))),
            _ => Err(Fail),
        },
        Node::MatchesDyn(s, p) => {
            let (s, p) = (ev(s)?, ev(p)?);
            let (Value::Str(s), Value::Str(p)) = (s.as_ref(), p.as_ref()) else {
                return Err(Fail);
            };
            let re = regex::Regex::new(p).map_err(|_| Fail)?;
            owned(Value::Bool(re.is_match(s)))
        }
    }
}

/// `&&` (`absorbing` = false) and `||` (true): a side equal to `absorbing` decides,
/// whatever the other side is, an error included.
fn logic(
    a: Result<bool, Fail>,
    second: impl FnOnce() -> Result<bool, Fail>,
    absorbing: bool,
) -> Result<bool, Fail> {
    if a == Ok(absorbing) {
        return Ok(absorbing);
    }
    let b = second();
    match (a, b) {
        (_, Ok(v)) if v == absorbing => Ok(absorbing),
        (Ok(_), Ok(v)) => Ok(v),
        _ => Err(Fail),
    }
}

fn index<'v>(container: &'v Value, key: &Value) -> Result<Option<&'v Value>, Fail> {
    match container {
        Value::List(items) => {
            let i = match key {
                Value::Int(i) => usize::try_from(*i).map_err(|_| Fail)?,
                Value::UInt(u) => usize::try_from(*u).map_err(|_| Fail)?,
                Value::Double(d) if d.fract() == 0.0 && *d >= 0.0 => *d as usize,
                _ => return Err(Fail),
            };
            items.get(i).map(Some).ok_or(Fail)
        }
        Value::Map(_) => container.entry(key),
        _ => Err(Fail),
    }
}

fn compare(op: Cmp, a: &Value, b: &Value) -> Result<bool, Fail> {
    let ord = |a: &Value, b: &Value| -> Result<Option<Ordering>, Fail> {
        match order(a, b) {
            Ok(o) => Ok(Some(o)),
            // NaN is unordered: every comparison with it is false.
            Err(_) if is_number(a) && is_number(b) => Ok(None),
            Err(f) => Err(f),
        }
    };
    Ok(match op {
        Cmp::Eq => equal(a, b),
        Cmp::Ne => !equal(a, b),
        Cmp::Lt => ord(a, b)? == Some(Ordering::Less),
        Cmp::Le => matches!(ord(a, b)?, Some(Ordering::Less | Ordering::Equal)),
        Cmp::Gt => ord(a, b)? == Some(Ordering::Greater),
        Cmp::Ge => matches!(ord(a, b)?, Some(Ordering::Greater | Ordering::Equal)),
    })
}

fn is_number(v: &Value) -> bool {
    matches!(v, Value::Int(_) | Value::UInt(_) | Value::Double(_))
}

fn negate(v: &Value) -> Result<Value, Fail> {
    match v {
        Value::Int(i) => i.checked_neg().map(Value::Int).ok_or(Fail),
        Value::Double(d) => Ok(Value::Double(-d)),
        _ => Err(Fail),
    }
}

/// Integer arithmetic where overflow and division by zero are `None` (CEL errors).
macro_rules! checked {
    ($op:expr, $x:expr, $y:expr) => {
        match $op {
            Arith::Add => $x.checked_add($y),
            Arith::Sub => $x.checked_sub($y),
            Arith::Mul => $x.checked_mul($y),
            Arith::Div => $x.checked_div($y),
            Arith::Rem => $x.checked_rem($y),
        }
    };
}

fn arith(op: Arith, a: &Value, b: &Value) -> Result<Value, Fail> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => checked!(op, *x, *y).map(Value::Int).ok_or(Fail),
        (Value::UInt(x), Value::UInt(y)) => checked!(op, *x, *y).map(Value::UInt).ok_or(Fail),
        (Value::Double(x), Value::Double(y)) => Ok(Value::Double(match op {
            Arith::Add => x + y,
            Arith::Sub => x - y,
            Arith::Mul => x * y,
            Arith::Div => x / y,
            Arith::Rem => return Err(Fail),
        })),
        (Value::Str(x), Value::Str(y)) if op == Arith::Add => {
            Ok(Value::Str(compact_str::format_compact!("{x}{y}")))
        }
        (Value::List(x), Value::List(y)) if op == Arith::Add => {
            Ok(Value::List(x.iter().chain(y.iter()).cloned().collect()))
        }
        _ => Err(Fail),
    }
}

/// `needle in haystack`.
fn contains(haystack: &Value, needle: &Value) -> Result<bool, Fail> {
    match haystack {
        Value::List(items) => Ok(items.iter().any(|v| equal(v, needle))),
        Value::Map(_) => Ok(haystack.entry(needle)?.is_some()),
        _ => Err(Fail),
    }
}

fn size(v: &Value) -> Result<i64, Fail> {
    let n = match v {
        Value::Str(s) => s.chars().count(),
        Value::List(items) => items.len(),
        Value::Map(entries) => entries.len(),
        _ => return Err(Fail),
    };
    i64::try_from(n).map_err(|_| Fail)
}
