//! Plan ids and names, stored once and referred to by index from the rows.

use super::Hasher;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Default)]
pub(super) struct Names {
    index: HashMap<Arc<str>, u32, Hasher>,
    strings: Vec<Arc<str>>,
}

impl Names {
    pub(super) fn id(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.index.get(s) {
            return id;
        }
        let id = u32::try_from(self.strings.len()).expect("fewer than 2^32 distinct plan names");
        let arc: Arc<str> = Arc::from(s);
        self.strings.push(Arc::clone(&arc));
        self.index.insert(arc, id);
        id
    }

    pub(super) fn get(&self, id: u32) -> &Arc<str> {
        &self.strings[id as usize]
    }

    pub(super) fn len(&self) -> usize {
        self.strings.len()
    }

    /// The names in index order.
    pub(super) fn iter(&self) -> impl ExactSizeIterator<Item = &str> {
        self.strings.iter().map(|s| &**s)
    }
}
