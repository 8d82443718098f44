//! From CEL source to a [`Node`] tree: parsed by the `cel` crate, then checked and
//! lowered here. Whatever the evaluator does not cover is refused with a message naming
//! the construct and where it is, never evaluated approximately.
//!
//! Covered: literals (null, bool, int, uint, double, string), list and map literals,
//! `request.k`, `request["k"]`, `request[e]`, `budget.f`, field selection and indexing
//! on nested maps and lists, `== != < <= > >=`, `&& || !`, `in`, `has()`, `+ - * / %`
//! and unary `-` on ints, uints and doubles (`+` also on strings and lists), `size`,
//! `contains`, `startsWith`, `endsWith`, `matches` and the ternary `?:`.

use super::memo::Memo;
use super::node::{Arith, Cmp, Field, Node, StrTest, Ty};
use super::value::{equal, Value};
use cel::common::ast::{CallExpr, EntryExpr, Expr, IdedExpr, LiteralValue, SourceInfo};
use cel::parser::Parser;
use std::sync::Arc;

/// Why an expression was refused, and where (a character offset into the source).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub message: String,
    pub position: Option<usize>,
}

/// A compiled match expression.
#[derive(Debug)]
pub struct Expression {
    pub(super) root: Node,
    /// The request keys it names statically, by slot.
    pub(super) keys: Box<[Key]>,
}

impl Expression {
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }
}

/// A request key an expression names, with room for one value an attribute source
/// derives from it once (the Python bindings keep the key as a Python string there).
pub struct Key {
    name: Arc<str>,
    memo: Memo,
}

impl Key {
    fn new(name: &str) -> Self {
        Key {
            name: Arc::from(name),
            memo: Memo::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// What an attribute source derives from this key once.
    pub fn memo(&self) -> &Memo {
        &self.memo
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.name)
    }
}

/// The deepest expression accepted (the evaluator recurses once per level).
const MAX_DEPTH: u16 = 64;

/// Compiles `source`; the result is boolean (or known only at run time).
pub fn compile(source: &str) -> Result<Expression, Problem> {
    let parsed = std::panic::catch_unwind(|| {
        Parser::new()
            .max_recursion_depth(MAX_DEPTH)
            .parse_with_source_info(source)
    })
    .map_err(|_| Problem {
        message: "the expression could not be parsed".to_string(),
        position: None,
    })?;
    let (expr, info) = parsed.map_err(|errors| {
        let first = errors.errors.first();
        Problem {
            message: first.map_or_else(|| "syntax error".to_string(), |e| e.msg.clone()),
            position: first.and_then(|e| line_column_offset(source, e.pos)),
        }
    })?;
    let mut c = Compiler {
        info: &info,
        keys: Vec::new(),
    };
    let (root, ty) = c.node(&expr)?;
    if !matches!(ty, Ty::Bool | Ty::Dyn) {
        return Err(Problem {
            message: format!("the expression is not boolean (it is {})", ty.name()),
            position: c.position(&expr),
        });
    }
    Ok(Expression {
        root,
        keys: c.keys.into(),
    })
}

/// The character offset of a 1-based line and column, as the parser reports them.
fn line_column_offset(source: &str, (line, column): (isize, isize)) -> Option<usize> {
    let line = usize::try_from(line).ok()?.checked_sub(1)?;
    let column = usize::try_from(column).ok()?.checked_sub(1)?;
    let before: usize = source
        .split_inclusive('\n')
        .take(line)
        .map(|l| l.chars().count())
        .sum();
    Some(before + column)
}

struct Compiler<'a> {
    info: &'a SourceInfo,
    keys: Vec<Key>,
}

type Compiled = Result<(Node, Ty), Problem>;

impl Compiler<'_> {
    /// Where `e` starts, in characters (the parser counts bytes).
    fn position(&self, e: &IdedExpr) -> Option<usize> {
        let (start, _) = self.info.offset_for(e.id)?;
        let source = &self.info.source;
        source
            .get(..start as usize)
            .map(|before| before.chars().count())
    }

    fn fail<T>(&self, e: &IdedExpr, message: impl Into<String>) -> Result<T, Problem> {
        Err(Problem {
            message: message.into(),
            position: self.position(e),
        })
    }

    fn slot(&mut self, key: &str) -> u16 {
        let at = self.keys.iter().position(|k| k.name() == key);
        let at = at.unwrap_or_else(|| {
            self.keys.push(Key::new(key));
            self.keys.len() - 1
        });
        // At most 4096 bytes of source hold far fewer than 65536 keys.
        u16::try_from(at).unwrap_or(u16::MAX)
    }

    fn node(&mut self, e: &IdedExpr) -> Compiled {
        match &e.expr {
            Expr::Literal(lit) => Ok(constant(self.literal(e, lit)?)),
            Expr::Ident(name) => match name.as_str() {
                "request" => self.fail(
                    e,
                    "request is read key by key (request.k, request[\"k\"], has(request.k))",
                ),
                "budget" => self.fail(e, "budget is read field by field (budget.f, has(budget.f))"),
                other => self.fail(
                    e,
                    format!("unknown variable {other:?}: the variables are request and budget"),
                ),
            },
            Expr::Select(s) => self.select(e, &s.operand, &s.field, s.test),
            Expr::Call(call) => self.call(e, call),
            Expr::List(list) => {
                if !list.optional_indices.is_empty() {
                    return self.fail(e, "optional list elements are not supported");
                }
                let items = list
                    .elements
                    .iter()
                    .map(|x| self.node(x).map(|(n, _)| n))
                    .collect::<Result<Vec<_>, _>>()?;
                if items.iter().all(|n| matches!(n, Node::Const(_))) {
                    let values = items.into_iter().map(|n| match n {
                        Node::Const(v) => v,
                        _ => unreachable!("all constants"),
                    });
                    return Ok(constant(Value::List(values.collect())));
                }
                Ok((Node::List(items.into()), Ty::List))
            }
            Expr::Map(map) => self.map(e, map),
            Expr::Comprehension(_) => self.fail(
                e,
                "the macros all, exists, exists_one, map and filter are not supported",
            ),
            Expr::Struct(s) => self.fail(
                e,
                format!(
                    "message construction ({}{{...}}) is not supported",
                    s.type_name
                ),
            ),
            Expr::Unspecified => self.fail(e, "incomplete expression"),
        }
    }

    fn literal(&self, e: &IdedExpr, lit: &LiteralValue) -> Result<Value, Problem> {
        Ok(match lit {
            LiteralValue::Boolean(b) => Value::Bool(*b.inner()),
            LiteralValue::Int(i) => Value::Int(*i.inner()),
            LiteralValue::UInt(u) => Value::UInt(*u.inner()),
            LiteralValue::Double(d) => Value::Double(*d.inner()),
            LiteralValue::String(s) => Value::str(s.inner()),
            LiteralValue::Null => Value::Null,
            LiteralValue::Bytes(_) => return self.fail(e, "bytes literals are not supported"),
        })
    }

    fn map(&mut self, e: &IdedExpr, map: &cel::common::ast::MapExpr) -> Compiled {
        let mut entries = Vec::with_capacity(map.entries.len());
        for entry in &map.entries {
            let EntryExpr::MapEntry(m) = &entry.expr else {
                return self.fail(e, "struct fields in a map literal");
            };
            if m.optional {
                return self.fail(e, "optional map entries are not supported");
            }
            let (k, _) = self.node(&m.key)?;
            let (v, _) = self.node(&m.value)?;
            entries.push((k, v));
        }
        let all_const = entries
            .iter()
            .all(|(k, v)| matches!((k, v), (Node::Const(_), Node::Const(_))));
        if !all_const {
            return Ok((Node::Map(entries.into()), Ty::Map));
        }
        let mut values: Vec<(Value, Value)> = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            let (Node::Const(k), Node::Const(v)) = (k, v) else {
                unreachable!("all constants")
            };
            if !k.is_key() {
                return self.fail(e, format!("a map key cannot be a {}", k.type_name()));
            }
            if values.iter().any(|(seen, _)| equal(seen, &k)) {
                return self.fail(e, "duplicate key in a map literal");
            }
            values.push((k, v));
        }
        Ok(constant(Value::Map(values.into())))
    }

    fn select(&mut self, e: &IdedExpr, operand: &IdedExpr, field: &str, test: bool) -> Compiled {
        match &operand.expr {
            Expr::Ident(name) if name == "request" => {
                let slot = self.slot(field);
                if test {
                    Ok((Node::HasRequest(slot), Ty::Bool))
                } else {
                    Ok((Node::Request(slot), Ty::Dyn))
                }
            }
            Expr::Ident(name) if name == "budget" => {
                let f = self.budget_field(e, field)?;
                if test {
                    Ok((Node::HasBudget, Ty::Bool))
                } else {
                    Ok((Node::Budget(f), f.ty()))
                }
            }
            _ => {
                let (inner, ty) = self.node(operand)?;
                if !matches!(ty, Ty::Map | Ty::Dyn) {
                    return self.fail(e, format!("a {} has no fields", ty.name()));
                }
                let field = Box::from(field);
                if test {
                    Ok((Node::Has(Box::new(inner), field), Ty::Bool))
                } else {
                    Ok((Node::Select(Box::new(inner), field), Ty::Dyn))
                }
            }
        }
    }

    fn budget_field(&self, e: &IdedExpr, name: &str) -> Result<Field, Problem> {
        Field::parse(name).map_or_else(
            || {
                let known: Vec<&str> = Field::ALL.iter().map(|f| f.as_str()).collect();
                self.fail(
                    e,
                    format!(
                        "budget has no field {name:?}; its fields are {}",
                        known.join(", ")
                    ),
                )
            },
            Ok,
        )
    }

    fn call(&mut self, e: &IdedExpr, call: &CallExpr) -> Compiled {
        use cel::common::ast::operators as op;
        let name = call.func_name.as_str();
        let args = &call.args;
        if let Some(target) = &call.target {
            return self.method(e, name, target, args);
        }
        let two = |c: &mut Self| -> Result<(Node, Ty, Node, Ty), Problem> {
            let (a, ta) = c.node(&args[0])?;
            let (b, tb) = c.node(&args[1])?;
            Ok((a, ta, b, tb))
        };
        let arity = |n: usize| args.len() == n;
        let cmp = |c: Cmp| Some(c);
        let compare = match name {
            op::EQUALS if arity(2) => cmp(Cmp::Eq),
            op::NOT_EQUALS if arity(2) => cmp(Cmp::Ne),
            op::LESS if arity(2) => cmp(Cmp::Lt),
            op::LESS_EQUALS if arity(2) => cmp(Cmp::Le),
            op::GREATER if arity(2) => cmp(Cmp::Gt),
            op::GREATER_EQUALS if arity(2) => cmp(Cmp::Ge),
            _ => None,
        };
        if let Some(c) = compare {
            let (a, _, b, _) = two(self)?;
            return Ok((compare_node(c, a, b), Ty::Bool));
        }
        let arith = match name {
            op::ADD if arity(2) => Some(Arith::Add),
            op::SUBSTRACT if arity(2) => Some(Arith::Sub),
            op::MULTIPLY if arity(2) => Some(Arith::Mul),
            op::DIVIDE if arity(2) => Some(Arith::Div),
            op::MODULO if arity(2) => Some(Arith::Rem),
            _ => None,
        };
        if let Some(a) = arith {
            let (x, tx, y, ty) = two(self)?;
            let t = if tx == ty && tx != Ty::Dyn {
                tx
            } else {
                Ty::Arith
            };
            return Ok((Node::Arith(a, Box::new(x), Box::new(y)), t));
        }
        match name {
            op::LOGICAL_AND | op::LOGICAL_OR if arity(2) => {
                let (a, _, b, _) = two(self)?;
                let (a, b) = (Box::new(a), Box::new(b));
                let n = if name == op::LOGICAL_AND {
                    Node::And(a, b)
                } else {
                    Node::Or(a, b)
                };
                Ok((n, Ty::Bool))
            }
            op::LOGICAL_NOT if arity(1) => {
                let (a, _) = self.node(&args[0])?;
                Ok((Node::Not(Box::new(a)), Ty::Bool))
            }
            op::NEGATE if arity(1) => {
                let (a, t) = self.node(&args[0])?;
                let t = if t == Ty::Dyn { Ty::Arith } else { t };
                Ok((Node::Neg(Box::new(a)), t))
            }
            op::CONDITIONAL if arity(3) => {
                let (c, _) = self.node(&args[0])?;
                let (a, ta) = self.node(&args[1])?;
                let (b, tb) = self.node(&args[2])?;
                let t = if ta == tb { ta } else { Ty::Dyn };
                Ok((Node::Cond(Box::new(c), Box::new(a), Box::new(b)), t))
            }
            op::IN if arity(2) => {
                let (a, _, b, _) = two(self)?;
                let n = match (a, b) {
                    (Node::Request(slot), Node::Const(Value::List(items))) => {
                        Node::RequestIn(slot, items)
                    }
                    (a, b) => Node::In(Box::new(a), Box::new(b)),
                };
                Ok((n, Ty::Bool))
            }
            op::INDEX if arity(2) => self.index(&args[0], &args[1]),
            "size" if arity(1) => {
                let (a, _) = self.node(&args[0])?;
                Ok((Node::Size(Box::new(a)), Ty::Int))
            }
            "matches" if arity(2) => self.matches(&args[0], &args[1]),
            "has" => self.fail(e, "has() takes a field selection such as has(request.k)"),
            other => self.fail(e, format!("the function {other}() is not supported")),
        }
    }

    fn method(
        &mut self,
        e: &IdedExpr,
        name: &str,
        target: &IdedExpr,
        args: &[IdedExpr],
    ) -> Compiled {
        let test = match name {
            "contains" => Some(StrTest::Contains),
            "startsWith" => Some(StrTest::StartsWith),
            "endsWith" => Some(StrTest::EndsWith),
            _ => None,
        };
        match (name, args) {
            (_, [arg]) if test.is_some() => {
                let (t, _) = self.node(target)?;
                let (a, _) = self.node(arg)?;
                let test = test.unwrap_or(StrTest::Contains);
                Ok((Node::StrTest(test, Box::new(t), Box::new(a)), Ty::Bool))
            }
            ("matches", [pattern]) => self.matches(target, pattern),
            ("size", []) => {
                let (t, _) = self.node(target)?;
                Ok((Node::Size(Box::new(t)), Ty::Int))
            }
            _ => self.fail(e, format!("the method .{name}() is not supported")),
        }
    }

    fn index(&mut self, operand: &IdedExpr, key: &IdedExpr) -> Compiled {
        let constant_key = match &key.expr {
            Expr::Literal(LiteralValue::String(s)) => Some(s.inner().to_string()),
            _ => None,
        };
        match (&operand.expr, constant_key) {
            (Expr::Ident(v), Some(k)) if v == "request" => {
                Ok((Node::Request(self.slot(&k)), Ty::Dyn))
            }
            (Expr::Ident(v), None) if v == "request" => {
                let (k, _) = self.node(key)?;
                Ok((Node::RequestDyn(Box::new(k)), Ty::Dyn))
            }
            (Expr::Ident(v), Some(k)) if v == "budget" => {
                let f = self.budget_field(key, &k)?;
                Ok((Node::Budget(f), f.ty()))
            }
            (Expr::Ident(v), None) if v == "budget" => {
                self.fail(key, "budget is indexed by a field name in quotes")
            }
            _ => {
                let (o, _) = self.node(operand)?;
                let (k, _) = self.node(key)?;
                Ok((Node::Index(Box::new(o), Box::new(k)), Ty::Dyn))
            }
        }
    }

    fn matches(&mut self, target: &IdedExpr, pattern: &IdedExpr) -> Compiled {
        let (t, _) = self.node(target)?;
        if let Expr::Literal(LiteralValue::String(p)) = &pattern.expr {
            let re = regex::Regex::new(p.inner())
                .or_else(|err| self.fail(pattern, format!("invalid regular expression: {err}")))?;
            return Ok((Node::Matches(Box::new(t), Box::new(re)), Ty::Bool));
        }
        let (p, _) = self.node(pattern)?;
        Ok((Node::MatchesDyn(Box::new(t), Box::new(p)), Ty::Bool))
    }
}

/// A comparison; `request.k == <constant>` and `budget.f <op> <constant>` (either way
/// round) get their own nodes.
fn compare_node(c: Cmp, a: Node, b: Node) -> Node {
    match (c, a, b) {
        (Cmp::Eq, Node::Request(slot), Node::Const(v))
        | (Cmp::Eq, Node::Const(v), Node::Request(slot)) => Node::RequestEq(slot, v),
        (c, Node::Budget(f), Node::Const(v)) => Node::BudgetCmp(c, f, v),
        (c, Node::Const(v), Node::Budget(f)) => Node::BudgetCmp(c.flip(), f, v),
        (c, a, b) => Node::Compare(c, Box::new(a), Box::new(b)),
    }
}

fn constant(v: Value) -> (Node, Ty) {
    let t = Ty::of(&v);
    (Node::Const(v), t)
}
