//! The routing table: two layers of policies, their union compiled into one [`Set`]
//! swapped atomically, target health, and the counters.
//!
//! **Layers.** Policies come from two places:
//! - *local*: [`RoutingTable::set_policies`] replaces this layer whole (local
//!   configuration of this process);
//! - *replicated*: `routing_policy.upserted` / `routing_policy.deleted` events, one entry
//!   per policy id, last-writer-wins by event timestamp (ties: the larger event-id hash),
//!   a delete kept as a tombstone so an older upsert arriving later stays dead.
//!
//! `route` and `policies` see the union in ascending `(priority, id)`. An id billing has
//! spoken about (any event, upsert or delete) is billing's: its latest event decides,
//! and a local policy with that id is hidden (replaced, or removed by the tombstone).
//!
//! Writers (`set_policies`, events, restores) serialise on one mutex and publish a new
//! [`Set`]; `route` loads the current one through `arc-swap` and never waits.

use super::eval::{Attrs, BudgetFields, Cache, Scope};
use super::policy::{Policy, Strategy};
use super::select::{pick, Health, Picks};
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use std::cell::OnceCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A replicated policy id's latest event: the policy, or `None` for a delete.
#[derive(Clone, Debug)]
pub struct Replicated {
    pub ts: i64,
    /// Breaks timestamp ties the same way on every replica (the event id's hash).
    pub tiebreak: u128,
    pub policy: Option<Arc<Policy>>,
}

impl Replicated {
    fn newer_than(&self, other: &Replicated) -> bool {
        (self.ts, self.tiebreak) > (other.ts, other.tiebreak)
    }
}

#[derive(Default)]
struct Layers {
    local: Vec<Arc<Policy>>,
    replicated: HashMap<String, Replicated>,
    /// Every target name ever seen by `mark_down` or a policy.
    health: HashMap<Box<str>, Arc<Health>>,
}

/// One policy of the published set, with what routing needs resolved.
struct Entry {
    policy: Arc<Policy>,
    health: Box<[Arc<Health>]>,
    /// The cache slot of each request key its expression names.
    slots: Box<[u16]>,
}

/// The compiled union of the layers, in routing order.
#[derive(Default)]
struct Set {
    entries: Box<[Entry]>,
    /// How many distinct request keys the set names (cache slots).
    keys: usize,
}

/// What `route` answered: the policy and the targets in the order to try them.
pub struct Routed<'a> {
    pub policy: &'a Arc<Policy>,
    pub picks: &'a Picks,
}

impl Routed<'_> {
    pub fn target(&self) -> &str {
        let first = self.picks.first().unwrap_or_default();
        &self.policy.def.targets[usize::from(first)].name
    }

    /// Whether every target is tried, in the order the policy prefers them (failover and
    /// least_cost with all targets up): the answer is then always the same.
    pub fn is_usual(&self) -> bool {
        self.policy.strategy != Strategy::Weighted
            && self.picks.as_slice() == &*self.policy.preference
    }

    pub fn fallbacks(&self) -> impl ExactSizeIterator<Item = &str> {
        let targets = &self.policy.def.targets;
        self.picks
            .rest()
            .iter()
            .map(move |&i| targets[usize::from(i)].name.as_str())
    }
}

/// Counters of `route` answers that found nothing to say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteCounters {
    /// Policy evaluations that had no boolean value (missing key, wrong type, ...).
    pub evaluation_errors: u64,
    /// `route` calls that matched no policy with a healthy target.
    pub no_match: u64,
}

#[derive(Default)]
pub struct RoutingTable {
    set: ArcSwap<Set>,
    layers: Mutex<Layers>,
    evaluation_errors: AtomicU64,
    no_match: AtomicU64,
}

/// Keys cached on the stack per `route` call; a set naming more uses the heap.
const INLINE_KEYS: usize = 8;

impl RoutingTable {
    /// Replaces the local layer. The policies were each compiled; the set is refused
    /// (and nothing changes) if two share an id.
    pub fn set_policies(&self, policies: Vec<Policy>) -> Result<(), String> {
        let mut ids: Vec<&str> = policies.iter().map(Policy::id).collect();
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(w[0].to_string());
        }
        let mut layers = self.layers.lock();
        layers.local = policies.into_iter().map(Arc::new).collect();
        self.publish(&mut layers);
        Ok(())
    }

    /// Applies a replicated upsert or delete (`policy` `None`) of `id`; whether it won.
    pub fn apply_event(&self, id: &str, event: Replicated) -> bool {
        let mut layers = self.layers.lock();
        if let Some(current) = layers.replicated.get(id) {
            if !event.newer_than(current) {
                return false;
            }
        }
        layers.replicated.insert(id.to_string(), event);
        self.publish(&mut layers);
        true
    }

    /// The policies `route` tries, in order.
    pub fn policies(&self) -> Vec<Arc<Policy>> {
        self.set
            .load()
            .entries
            .iter()
            .map(|e| Arc::clone(&e.policy))
            .collect()
    }

    pub fn mark_down(&self, target: &str, for_us: i64) {
        self.health_of(target).mark_down(for_us);
    }

    pub fn mark_up(&self, target: &str) {
        self.health_of(target).mark_up();
    }

    fn health_of(&self, target: &str) -> Arc<Health> {
        let mut layers = self.layers.lock();
        Arc::clone(layers.health.entry(target.into()).or_default())
    }

    pub fn counters(&self) -> RouteCounters {
        RouteCounters {
            evaluation_errors: self.evaluation_errors.load(Ordering::Relaxed),
            no_match: self.no_match.load(Ordering::Relaxed),
        }
    }

    /// The first policy, in order, whose expression holds and which has a healthy
    /// target; `answer` sees it while the set is pinned. Lock-free.
    pub fn route<R>(
        &self,
        attrs: &dyn Attrs,
        budget: &dyn BudgetFields,
        answer: impl FnOnce(Routed<'_>) -> R,
    ) -> Option<R> {
        let set = self.set.load();
        let mut picks = Picks::default();
        let found = if set.keys <= INLINE_KEYS {
            let cache: [OnceCell<_>; INLINE_KEYS] = Default::default();
            self.first_match(&set, attrs, budget, &cache, &mut picks)
        } else {
            let cache: Vec<OnceCell<_>> = (0..set.keys).map(|_| OnceCell::new()).collect();
            self.first_match(&set, attrs, budget, &cache, &mut picks)
        };
        match found {
            Some(i) => Some(answer(Routed {
                policy: &set.entries[i].policy,
                picks: &picks,
            })),
            None => {
                self.no_match.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    fn first_match<'v>(
        &self,
        set: &Set,
        attrs: &'v dyn Attrs,
        budget: &dyn BudgetFields,
        cache: &Cache<'v>,
        picks: &mut Picks,
    ) -> Option<usize> {
        let mut scope = Scope {
            attrs,
            cache,
            slots: &[],
            budget,
        };
        for (i, entry) in set.entries.iter().enumerate() {
            scope.slots = &entry.slots;
            match entry.policy.expression.matches(&scope) {
                Ok(true) => {
                    pick(&entry.policy, &entry.health, picks);
                    if picks.first().is_some() {
                        return Some(i);
                    }
                }
                Ok(false) => {}
                Err(_) => {
                    self.evaluation_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        None
    }

    /// Builds and publishes the union of the layers.
    fn publish(&self, layers: &mut Layers) {
        let mut union: Vec<Arc<Policy>> = layers
            .local
            .iter()
            .filter(|p| !layers.replicated.contains_key(p.id()))
            .cloned()
            .collect();
        union.extend(layers.replicated.values().filter_map(|r| r.policy.clone()));
        union.sort_by(|a, b| a.rank().cmp(&b.rank()));
        let mut keys: Vec<Box<str>> = Vec::new();
        let entries = union
            .into_iter()
            .map(|policy| {
                let slots = policy
                    .expression
                    .keys()
                    .iter()
                    .map(|k| {
                        let at = keys
                            .iter()
                            .position(|seen| &**seen == k.name())
                            .unwrap_or_else(|| {
                                keys.push(k.name().into());
                                keys.len() - 1
                            });
                        u16::try_from(at).unwrap_or(u16::MAX)
                    })
                    .collect();
                let health = policy
                    .def
                    .targets
                    .iter()
                    .map(|t| Arc::clone(layers.health.entry(t.name.as_str().into()).or_default()))
                    .collect();
                Entry {
                    policy,
                    health,
                    slots,
                }
            })
            .collect();
        self.set.store(Arc::new(Set {
            entries,
            keys: keys.len(),
        }));
    }

    /// The layers as snapshots hold them: the local policies, then the replicated
    /// entries ordered by id.
    pub fn export(&self) -> (Vec<Arc<Policy>>, Vec<(String, Replicated)>) {
        let layers = self.layers.lock();
        let mut replicated: Vec<(String, Replicated)> = layers
            .replicated
            .iter()
            .map(|(id, r)| (id.clone(), r.clone()))
            .collect();
        replicated.sort_by(|a, b| a.0.cmp(&b.0));
        (layers.local.clone(), replicated)
    }

    /// A table with these layers (from a snapshot).
    pub fn import(
        local: Vec<Policy>,
        replicated: Vec<(String, Replicated)>,
    ) -> Result<Self, String> {
        let table = RoutingTable::default();
        table
            .set_policies(local)
            .map_err(|id| format!("policy id {id:?} repeated"))?;
        let mut layers = table.layers.lock();
        for (id, r) in replicated {
            if r.policy.as_ref().is_some_and(|p| p.id() != id) {
                return Err(format!("replicated policy {id:?} holds another id"));
            }
            if layers.replicated.insert(id.clone(), r).is_some() {
                return Err(format!("replicated policy {id:?} repeated"));
            }
        }
        table.publish(&mut layers);
        drop(layers);
        Ok(table)
    }
}
