//! The evaluator against the `cel` crate's interpreter on random expressions: whenever
//! the interpreter has a value, ours is the same (a boolean) or an error (a non-boolean);
//! whenever the interpreter fails, ours fails too ("no match").

use super::{attrs, eval, Map};
use crate::routing::{compile, Value};
use cel::objects::Key;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::collections::HashMap;
use std::sync::Arc;

/// The request every expression is evaluated against.
fn request() -> Map {
    let list = Value::List(Arc::from([Value::Int(1), Value::Int(2), Value::Int(3)]));
    let map = Value::Map(Arc::from([
        (Value::str("k"), Value::str("v")),
        (Value::str("n"), Value::Int(7)),
    ]));
    attrs(&[
        ("i", Value::Int(42)),
        ("neg", Value::Int(-5)),
        ("big", Value::Int(i64::MAX - 1)),
        ("u", Value::UInt(3)),
        ("d", Value::Double(2.5)),
        ("s", Value::str("gpt-4o")),
        ("e", Value::str("")),
        ("t", Value::Bool(true)),
        ("f", Value::Bool(false)),
        ("z", Value::Null),
        ("l", list),
        ("m", map),
    ])
}

fn to_cel(v: &Value) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Int(i) => cel::Value::Int(*i),
        Value::UInt(u) => cel::Value::UInt(*u),
        Value::Double(d) => cel::Value::Float(*d),
        Value::Str(s) => cel::Value::String(Arc::new(s.to_string())),
        Value::List(items) => cel::Value::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Map(entries) => {
            let map: HashMap<Key, cel::Value> = entries
                .iter()
                .map(|(k, v)| {
                    let Value::Str(k) = k else {
                        unreachable!("string keys")
                    };
                    (Key::String(Arc::new(k.to_string())), to_cel(v))
                })
                .collect();
            cel::Value::Map(map.into())
        }
    }
}

/// The interpreter's answer: `Some(Some(b))` a boolean, `Some(None)` another value,
/// `None` an error.
fn interpret(source: &str, request: &Map) -> Option<Option<bool>> {
    let program = cel::Program::compile(source).ok()?;
    let mut context = cel::Context::default();
    let map: HashMap<Key, cel::Value> = request
        .0
        .iter()
        .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v)))
        .collect();
    context.add_variable_from_value("request", cel::Value::Map(map.into()));
    match program.execute(&context) {
        Ok(cel::Value::Bool(b)) => Some(Some(b)),
        Ok(_) => Some(None),
        Err(_) => None,
    }
}

fn leaf() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "request.i",
            "request.neg",
            "request.big",
            "request.u",
            "request.d",
            "request.s",
            "request.e",
            "request.t",
            "request.f",
            "request.z",
            "request.l",
            "request.missing",
            "request['s']",
            "request.m.k",
            "request.m.n",
            "request.l[1]",
        ])
        .prop_map(str::to_string),
        prop::sample::select(vec![
            "0",
            "1",
            "2",
            "-1",
            "42",
            "9223372036854775807",
            "1u",
            "3u",
            "0.5",
            "2.5",
            "-0.0",
            "'gpt'",
            "'4o'",
            "''",
            "'v'",
            "true",
            "false",
            "null",
            "[1, 2]",
            "['gpt-4o']",
        ])
        .prop_map(str::to_string),
    ]
}

/// Untyped expressions. Without map values: the interpreter concatenates a list and a
/// map (`[1] + {'x': 1}` is `[1, 'x']`), which cel-spec does not define (an error here);
/// maps are exercised by the typed generators, where nothing adds them.
fn expression() -> impl Strategy<Value = String> {
    leaf().prop_recursive(4, 24, 3, |inner| {
        let binary = prop::sample::select(vec![
            "==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "%", "&&", "||", "in",
        ]);
        prop_oneof![
            (inner.clone(), binary, inner.clone()).prop_map(|(a, op, b)| format!("({a} {op} {b})")),
            inner.clone().prop_map(|a| format!("!{a}")),
            inner.clone().prop_map(|a| format!("-{a}")),
            inner.clone().prop_map(|a| format!("size({a})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a}.startsWith({b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a}.endsWith({b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a}.contains({b})")),
            inner
                .clone()
                .prop_map(|a| format!("{a}.matches('^g.t-[0-9]')")),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(c, a, b)| format!("({c} ? {a} : {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("[{a}, {b}]")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a}[{b}]")),
            prop::sample::select(vec![
                "has(request.i)",
                "has(request.missing)",
                "has(request.m.k)"
            ])
            .prop_map(str::to_string),
        ]
    })
}

fn pick(options: &[&'static str]) -> BoxedStrategy<String> {
    prop::sample::select(options.to_vec())
        .prop_map(str::to_string)
        .boxed()
}

/// Integer-valued expressions (mostly; overflow and division by zero included).
fn ints(depth: u32) -> BoxedStrategy<String> {
    let leaf = pick(&[
        "request.i",
        "request.neg",
        "request.big",
        "request.m.n",
        "request.l[0]",
        "0",
        "1",
        "7",
        "-3",
        "9223372036854775807",
        "size(request.s)",
        "size(request.l)",
    ]);
    if depth == 0 {
        return leaf;
    }
    let op = pick(&["+", "-", "*", "/", "%"]);
    prop_oneof![
        2 => leaf,
        2 => (ints(depth - 1), op, ints(depth - 1)).prop_map(|(a, o, b)| format!("({a} {o} {b})")),
        1 => ints(depth - 1).prop_map(|a| format!("-{a}")),
        1 => (bools(depth - 1), ints(depth - 1), ints(depth - 1))
            .prop_map(|(c, a, b)| format!("({c} ? {a} : {b})")),
    ]
    .boxed()
}

fn strings(depth: u32) -> BoxedStrategy<String> {
    let leaf = pick(&[
        "request.s",
        "request.e",
        "request.m.k",
        "'gpt'",
        "'4o'",
        "''",
        "'v'",
    ]);
    if depth == 0 {
        return leaf;
    }
    prop_oneof![
        3 => leaf,
        1 => (strings(depth - 1), strings(depth - 1)).prop_map(|(a, b)| format!("({a} + {b})")),
    ]
    .boxed()
}

/// Anything, well-typed or not.
fn values(depth: u32) -> BoxedStrategy<String> {
    prop_oneof![
        ints(depth),
        strings(depth),
        bools(depth),
        pick(&[
            "request.u",
            "3u",
            "request.d",
            "2.5",
            "-0.0",
            "request.z",
            "null",
            "request.l",
            "[1, 2]",
            "['gpt-4o', 1]",
            "request.m",
            "{'k': 'v'}",
            "request.missing",
        ]),
    ]
    .boxed()
}

fn bools(depth: u32) -> BoxedStrategy<String> {
    let leaf = pick(&[
        "request.t",
        "request.f",
        "true",
        "false",
        "has(request.i)",
        "has(request.missing)",
        "has(request.m.k)",
    ]);
    if depth == 0 {
        return leaf;
    }
    let d = depth - 1;
    let cmp = pick(&["==", "!=", "<", "<=", ">", ">="]);
    let logic = pick(&["&&", "||"]);
    let test = pick(&["startsWith", "endsWith", "contains"]);
    prop_oneof![
        1 => leaf,
        3 => (ints(d), cmp.clone(), ints(d)).prop_map(|(a, o, b)| format!("{a} {o} {b}")),
        2 => (strings(d), cmp.clone(), strings(d)).prop_map(|(a, o, b)| format!("{a} {o} {b}")),
        2 => (values(d), cmp, values(d)).prop_map(|(a, o, b)| format!("{a} {o} {b}")),
        3 => (bools(d), logic, bools(d)).prop_map(|(a, o, b)| format!("({a} {o} {b})")),
        1 => bools(d).prop_map(|a| format!("!{a}")),
        1 => (values(d), values(d)).prop_map(|(a, b)| format!("{a} in {b}")),
        1 => ints(d).prop_map(|a| format!("{a} in request.l")),
        1 => strings(d).prop_map(|a| format!("{a} in request.m")),
        2 => (strings(d), test, strings(d)).prop_map(|(a, t, b)| format!("{a}.{t}({b})")),
        1 => strings(d).prop_map(|a| format!("{a}.matches('^g.t-[0-9]')")),
        1 => (bools(d), bools(d), bools(d)).prop_map(|(c, a, b)| format!("({c} ? {a} : {b})")),
    ]
    .boxed()
}

/// Random expressions: mostly boolean, with every kind of error mixed in.
fn top() -> impl Strategy<Value = String> {
    prop_oneof![4 => bools(3), 1 => expression()]
}

/// How a comparison went.
#[derive(Debug, PartialEq, Eq)]
enum Agreement {
    /// Both found this boolean.
    Value,
    /// Both found no boolean (an error or another type).
    NoValue,
    /// Refused at compile time (not boolean, unsupported): never evaluated.
    Refused,
}

/// Compares the two on `source`; `Err` describes a disagreement.
fn agree(source: &str) -> Result<Agreement, String> {
    let request = request();
    if compile(source).is_err() {
        return Ok(Agreement::Refused);
    }
    let ours = eval(source, &request, None);
    match (interpret(source, &request), ours) {
        (Some(Some(theirs)), Some(ours)) if theirs == ours => Ok(Agreement::Value),
        (Some(None) | None, None) => Ok(Agreement::NoValue),
        (theirs, ours) => Err(format!("{source}: interpreter {theirs:?}, ours {ours:?}")),
    }
}

#[test]
fn the_evaluator_agrees_with_the_interpreter() {
    let mut runner = TestRunner::new(Config {
        cases: 3000,
        ..Config::default()
    });
    let seen = std::cell::RefCell::new(HashMap::new());
    let result = runner.run(&top(), |source| {
        let outcome = agree(&source).map_err(TestCaseError::fail)?;
        *seen.borrow_mut().entry(format!("{outcome:?}")).or_insert(0) += 1;
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // The generator must exercise values, not only errors.
    let seen = seen.into_inner();
    let values = seen.get("Value").copied().unwrap_or(0);
    assert!(values >= 1000, "{seen:?}");
}
