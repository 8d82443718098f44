//! A routing policy: its definition as users and events give it, and the one validator
//! that turns a definition into a compiled [`Policy`] (used by `set_policies`, by the
//! event validator and by snapshots alike).

use super::compile::{compile, Expression};
use super::memo::Memo;
use crate::error::PolicyError;
use crate::event::{id_problem, MAX_EXPRESSION_LEN, MAX_ID_LEN};
use crate::money::MAX_MICROS;
use crate::spelling::spelled_enum;

/// The most targets one policy may list.
pub const MAX_TARGETS: usize = 64;

spelled_enum! {
    /// How a policy picks among its healthy targets.
    pub enum Strategy {
        /// The first healthy target, in list order.
        Failover = "failover",
        /// Healthy targets in proportion to their weight; weight 0 never.
        Weighted = "weighted",
        /// The cheapest healthy target; ties keep list order.
        LeastCost = "least_cost",
    }
}

impl Strategy {
    pub fn parse(s: &str) -> Option<Strategy> {
        Strategy::ALL.iter().copied().find(|st| st.as_str() == s)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetDef {
    pub name: String,
    pub weight: u64,
    /// Micro-units per unit of work.
    pub cost: u64,
}

/// A policy as given: nothing checked yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyDef {
    pub id: String,
    pub priority: i64,
    pub match_expression: String,
    pub strategy: String,
    pub targets: Vec<TargetDef>,
}

/// A validated, compiled policy.
#[derive(Debug)]
pub struct Policy {
    pub def: PolicyDef,
    pub strategy: Strategy,
    pub(super) expression: Expression,
    /// Target indexes in the order the strategy prefers them (by cost for least_cost,
    /// stable; list order otherwise).
    pub(super) preference: Box<[u8]>,
    /// What a caller derives once from the policy (the bindings: its usual `Route`).
    pub memo: Memo,
}

impl Policy {
    /// Checks and compiles `def`.
    pub fn compile(def: PolicyDef) -> Result<Policy, PolicyError> {
        let fail = |field: &str, problem: String, position: Option<usize>| PolicyError {
            policy_id: def.id.clone(),
            field: field.to_string(),
            problem,
            position,
        };
        if let Some(p) = id_problem(&def.id, MAX_ID_LEN) {
            return Err(fail("id", p, None));
        }
        if def.match_expression.len() > MAX_EXPRESSION_LEN {
            let p = format!("longer than {MAX_EXPRESSION_LEN} bytes");
            return Err(fail("match_expression", p, None));
        }
        let Some(strategy) = Strategy::parse(&def.strategy) else {
            let known: Vec<&str> = Strategy::ALL.iter().map(|s| s.as_str()).collect();
            let p = format!(
                "unknown strategy {:?}; expected one of {}",
                def.strategy,
                known.join(", ")
            );
            return Err(fail("strategy", p, None));
        };
        if def.targets.is_empty() {
            return Err(fail(
                "targets",
                "must name at least one target".into(),
                None,
            ));
        }
        if def.targets.len() > MAX_TARGETS {
            let p = format!("at most {MAX_TARGETS} targets");
            return Err(fail("targets", p, None));
        }
        for (i, t) in def.targets.iter().enumerate() {
            if let Some(p) = id_problem(&t.name, MAX_ID_LEN) {
                return Err(fail(&format!("targets[{i}].name"), p, None));
            }
            if def.targets[..i].iter().any(|other| other.name == t.name) {
                let p = format!("repeats target {:?}", t.name);
                return Err(fail(&format!("targets[{i}].name"), p, None));
            }
            for (what, v) in [("weight", t.weight), ("cost", t.cost)] {
                if v > MAX_MICROS {
                    let p = format!("at most {MAX_MICROS}");
                    return Err(fail(&format!("targets[{i}].{what}"), p, None));
                }
            }
        }
        let expression = compile(&def.match_expression)
            .map_err(|p| fail("match_expression", p.message, p.position))?;
        let mut preference: Vec<u8> = (0..def.targets.len() as u8).collect();
        if strategy == Strategy::LeastCost {
            preference.sort_by_key(|&i| def.targets[usize::from(i)].cost);
        }
        Ok(Policy {
            def,
            strategy,
            expression,
            preference: preference.into(),
            memo: Memo::default(),
        })
    }

    pub fn id(&self) -> &str {
        &self.def.id
    }

    /// The order policies are tried in: ascending priority, ties by id.
    pub fn rank(&self) -> (i64, &str) {
        (self.def.priority, &self.def.id)
    }
}
