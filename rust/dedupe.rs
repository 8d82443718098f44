//! The set of event ids already seen, bounded to the most recent `capacity` ids.
//!
//! Ids are kept as 128-bit XXH3 hashes (16 bytes each, no per-id allocation). The
//! window is a safety net on top of rules that are idempotent anyway: an event
//! older than the window that arrives again is re-applied under last-writer-wins
//! and period ordering, which leave the table as it is.

use std::collections::{HashSet, VecDeque};

#[derive(Debug, Default)]
pub struct Dedupe {
    capacity: usize,
    seen: HashSet<u128, foldhash::fast::FixedState>,
    order: VecDeque<u128>,
}

pub fn id_hash(event_id: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(event_id.as_bytes())
}

impl Dedupe {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            ..Self::default()
        }
    }

    pub fn contains(&self, hash: u128) -> bool {
        self.seen.contains(&hash)
    }

    /// Records `hash` as seen, forgetting the oldest id beyond the capacity.
    pub fn insert(&mut self, hash: u128) {
        if self.capacity == 0 || !self.seen.insert(hash) {
            return;
        }
        self.order.push_back(hash);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
    }

    /// Ids in the order they were first seen, oldest first.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = u128> + '_ {
        self.order.iter().copied()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_forgets_the_oldest() {
        let mut d = Dedupe::new(2);
        for id in ["a", "b", "c"] {
            d.insert(id_hash(id));
        }
        assert!(!d.contains(id_hash("a")));
        assert!(d.contains(id_hash("b")) && d.contains(id_hash("c")));
        assert_eq!(d.iter().len(), 2);
    }
}
