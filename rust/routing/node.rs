//! The compiled form of a match expression: a tree the evaluator walks, with request
//! keys resolved to slots and budget fields to [`Field`]s.

use super::value::Value;
use crate::spelling::spelled_enum;
use regex::Regex;

spelled_enum! {
    /// A field of the `budget` variable. Its position is its code in nothing persistent.
    pub enum Field {
        Total = "total",
        Spent = "spent",
        Reserved = "reserved",
        Remaining = "remaining",
        RemainingFraction = "remaining_fraction",
        PlanId = "plan_id",
        PlanName = "plan_name",
        Status = "status",
        Currency = "currency",
    }
}

impl Field {
    pub(super) fn ty(self) -> Ty {
        match self {
            Field::Total | Field::Spent | Field::Reserved | Field::Remaining => Ty::Int,
            Field::RemainingFraction => Ty::Double,
            Field::PlanId | Field::PlanName | Field::Status | Field::Currency => Ty::Str,
        }
    }
}

/// What the compiler knows of an expression's type (`Dyn`: only known at run time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ty {
    Null,
    Bool,
    Int,
    UInt,
    Double,
    Str,
    List,
    Map,
    /// Arithmetic of unknown operands: a number, string or list, never a bool.
    Arith,
    Dyn,
}

impl Ty {
    pub(super) fn of(v: &Value) -> Ty {
        match v {
            Value::Null => Ty::Null,
            Value::Bool(_) => Ty::Bool,
            Value::Int(_) => Ty::Int,
            Value::UInt(_) => Ty::UInt,
            Value::Double(_) => Ty::Double,
            Value::Str(_) => Ty::Str,
            Value::List(_) => Ty::List,
            Value::Map(_) => Ty::Map,
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Ty::Null => "null",
            Ty::Bool => "bool",
            Ty::Int => "int",
            Ty::UInt => "uint",
            Ty::Double => "double",
            Ty::Str => "string",
            Ty::List => "list",
            Ty::Map => "map",
            Ty::Arith => "arithmetic",
            Ty::Dyn => "dyn",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    /// The comparison with its operands swapped (`a < b` is `b > a`).
    pub(super) fn flip(self) -> Cmp {
        match self {
            Cmp::Lt => Cmp::Gt,
            Cmp::Le => Cmp::Ge,
            Cmp::Gt => Cmp::Lt,
            Cmp::Ge => Cmp::Le,
            c => c,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StrTest {
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Debug)]
pub(super) enum Node {
    Const(Value),
    /// `request.k` / `request["k"]`: the key in slot `.0` of the expression's keys.
    Request(u16),
    /// `request[e]` with a key computed at run time.
    RequestDyn(Box<Node>),
    /// `has(request.k)`.
    HasRequest(u16),
    /// `request.k == c` for a constant `c` (the most common clause, without a call).
    RequestEq(u16, Value),
    /// `request.k in [c, ...]` for a constant list.
    RequestIn(u16, std::sync::Arc<[Value]>),
    Budget(Field),
    /// `budget.f <op> c` for a constant `c` (budget on the left once flipped).
    BudgetCmp(Cmp, Field, Value),
    /// `has(budget.f)`: whether the tenant has a budget.
    HasBudget,
    /// `e.f` on a map.
    Select(Box<Node>, Box<str>),
    /// `has(e.f)` on a map.
    Has(Box<Node>, Box<str>),
    /// `e[i]` on a list or a map.
    Index(Box<Node>, Box<Node>),
    List(Box<[Node]>),
    Map(Box<[(Node, Node)]>),
    Not(Box<Node>),
    Neg(Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Cond(Box<Node>, Box<Node>, Box<Node>),
    Compare(Cmp, Box<Node>, Box<Node>),
    Arith(Arith, Box<Node>, Box<Node>),
    /// `e in list-or-map`.
    In(Box<Node>, Box<Node>),
    Size(Box<Node>),
    StrTest(StrTest, Box<Node>, Box<Node>),
    /// `e.matches(re)` with a literal pattern, compiled once.
    Matches(Box<Node>, Box<Regex>),
    /// `e.matches(p)` with a pattern computed at run time (compiled at each evaluation).
    MatchesDyn(Box<Node>, Box<Node>),
}
