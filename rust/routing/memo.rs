//! Room for one value a user of a compiled object derives from it once, of a type the
//! core does not know: the Python bindings keep Python objects there (a request key as a
//! Python string, a policy's usual `Route`), so the core stays free of Python.

use std::any::Any;
use std::sync::OnceLock;

#[derive(Default)]
pub struct Memo(OnceLock<Box<dyn Any + Send + Sync>>);

impl Memo {
    /// The value `init` made the first time (`None` if one of another type got there first).
    pub fn get_or_init<T: Any + Send + Sync>(&self, init: impl FnOnce() -> T) -> Option<&T> {
        self.0.get_or_init(|| Box::new(init())).downcast_ref()
    }
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Memo(..)"
        } else {
            "Memo"
        })
    }
}
