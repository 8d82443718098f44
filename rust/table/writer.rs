//! The state only writers touch, under the table's writer mutex.

use super::parking::Parking;
use super::subscriptions::Subs;
use super::usage::UsageItem;
use crate::dedupe::Dedupe;

pub(super) struct Writer {
    pub(super) subs: Subs,
    pub(super) dedupe: Dedupe,
    pub(super) parking: Parking,
    /// Usage of closed periods and superseded subscriptions not yet drained.
    pub(super) journal: Vec<UsageItem>,
    pub(super) drain_seq: u64,
}

impl Writer {
    pub(super) fn new(dedupe_window: usize) -> Self {
        Self {
            subs: Subs::default(),
            dedupe: Dedupe::new(dedupe_window),
            parking: Parking::default(),
            journal: Vec::new(),
            drain_seq: 0,
        }
    }
}
