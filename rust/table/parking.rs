//! Events waiting for their subscription's `subscription.created`, bounded in count and
//! bytes, replayed in arrival order when it comes.

use super::{Hasher, Id};
use crate::error::Error;
use std::collections::HashMap;

pub(super) struct Parked {
    pub(super) seq: u64,
    pub(super) raw: Box<[u8]>,
}

#[derive(Default)]
pub(super) struct Parking {
    /// By the subscription they wait for.
    waiting: HashMap<Id, Vec<Parked>, Hasher>,
    count: usize,
    bytes: usize,
    /// The sequence number of the last event parked.
    pub(super) seq: u64,
}

impl Parking {
    /// Parks `raw`, which waits for subscription `sub`, under the next sequence number,
    /// unless `max_count` events or `max_bytes` bytes (with it) would then wait.
    pub(super) fn admit(
        &mut self,
        sub: &str,
        raw: &[u8],
        max_count: usize,
        max_bytes: usize,
    ) -> Result<(), Error> {
        let limit = if self.count >= max_count {
            Some(format!("{} events (max_parked)", self.count))
        } else if self.bytes.saturating_add(raw.len()) > max_bytes {
            Some(format!(
                "{} bytes of events (max_parked_bytes is {max_bytes})",
                self.bytes
            ))
        } else {
            None
        };
        if let Some(held) = limit {
            return Err(Error::ParkingFull(format!(
                "{held} already wait for subscriptions not yet created; \
                 this one ({} bytes, for {sub}) was not applied",
                raw.len()
            )));
        }
        self.seq += 1;
        self.put(sub, self.seq, raw);
        Ok(())
    }

    /// Parks `raw` (which waits for subscription `sub`) under sequence number `seq`.
    pub(super) fn put(&mut self, sub: &str, seq: u64, raw: &[u8]) {
        let parked = Parked {
            seq,
            raw: raw.into(),
        };
        self.waiting.entry(Id::from(sub)).or_default().push(parked);
        self.count += 1;
        self.bytes += raw.len();
    }

    /// Removes the events waiting for `sub`, in arrival order.
    pub(super) fn take(&mut self, sub: &str) -> Vec<Parked> {
        let events = self.waiting.remove(sub).unwrap_or_default();
        self.count -= events.len();
        self.bytes -= events.iter().map(|p| p.raw.len()).sum::<usize>();
        events
    }

    /// Every waiting event, in arrival order.
    pub(super) fn in_order(&self) -> Vec<&Parked> {
        let mut all: Vec<&Parked> = self.waiting.values().flatten().collect();
        all.sort_by_key(|p| p.seq);
        all
    }

    /// Whether the waiting events are within these bounds.
    pub(super) fn within(&self, max_count: usize, max_bytes: usize) -> bool {
        self.count <= max_count && self.bytes <= max_bytes
    }
}
