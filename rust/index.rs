//! An insert-only hash index from a string key to a boxed value, with lock-free reads.
//!
//! Built for the budget table's access pattern: tenants are added (never removed),
//! looked up on every request from many threads, and iterated for snapshots. One
//! writer at a time (an internal mutex) inserts; readers never lock, never allocate.
//!
//! Layout: open addressing with linear probing over two parallel arrays, a tag byte
//! (7 bits of the hash, high bit set; 0 = empty) and a pointer to the boxed value,
//! which carries its own key. A lookup compares tags and dereferences only on a tag
//! match. Growth builds a table twice the size and publishes it atomically; the old
//! table stays allocated until the index is dropped, because a reader may still be
//! probing it. Its contents remain valid, so a reader on an old table just does not
//! see values inserted after the switch. Values are freed only when the index drops.

use parking_lot::Mutex;
use std::hash::BuildHasher;
use std::marker::PhantomData;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU8, AtomicUsize, Ordering};

/// A value stored in an [`Index`], which knows its own key.
pub trait Keyed {
    fn key(&self) -> &str;
}

struct Slots<T> {
    mask: usize,
    tags: Box<[AtomicU8]>,
    values: Box<[AtomicPtr<T>]>,
}

impl<T> Slots<T> {
    fn with_capacity(capacity: usize) -> Self {
        Self {
            mask: capacity - 1,
            tags: (0..capacity).map(|_| AtomicU8::new(0)).collect(),
            values: (0..capacity)
                .map(|_| AtomicPtr::new(ptr::null_mut()))
                .collect(),
        }
    }

    fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// Stores `value` in the first empty slot of its probe sequence. Writer only.
    fn place(&self, hash: u64, value: *mut T) {
        let mut i = hash as usize & self.mask;
        while self.tags[i].load(Ordering::Relaxed) != 0 {
            i = (i + 1) & self.mask;
        }
        // The value pointer first: a reader that sees the tag (Acquire) sees the pointer.
        self.values[i].store(value, Ordering::Release);
        self.tags[i].store(tag(hash), Ordering::Release);
    }
}

fn tag(hash: u64) -> u8 {
    (hash >> 57) as u8 | 0x80
}

/// Tables grow when they would be more than 3/4 full.
fn fits(len: usize, capacity: usize) -> bool {
    len * 4 <= capacity * 3
}

pub struct Index<T> {
    table: AtomicPtr<Slots<T>>,
    len: AtomicUsize,
    /// Serialises writers; holds the tables replaced by growth (see the module docs).
    /// Boxed on purpose: a reader may still hold a pointer to the `Slots` itself.
    #[allow(clippy::vec_box)]
    retired: Mutex<Vec<Box<Slots<T>>>>,
    hasher: foldhash::fast::RandomState,
    _owns: PhantomData<Box<T>>,
}

// SAFETY: the index owns its values (like a `Vec<Box<T>>`) and hands out `&T` to any
// thread, so it is Send when T is Send and Sync when T is Send + Sync.
unsafe impl<T: Send> Send for Index<T> {}
unsafe impl<T: Send + Sync> Sync for Index<T> {}

impl<T: Keyed> Default for Index<T> {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl<T: Keyed> Index<T> {
    /// An index that holds `n` values without growing.
    pub fn with_capacity(n: usize) -> Self {
        let mut capacity = 16;
        while !fits(n, capacity) {
            capacity *= 2;
        }
        Self {
            table: AtomicPtr::new(Box::into_raw(Box::new(Slots::with_capacity(capacity)))),
            len: AtomicUsize::new(0),
            retired: Mutex::new(Vec::new()),
            hasher: foldhash::fast::RandomState::default(),
            _owns: PhantomData,
        }
    }

    fn slots(&self) -> &Slots<T> {
        // SAFETY: the pointer always refers to a live table: tables are freed only in drop.
        unsafe { &*self.table.load(Ordering::Acquire) }
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value with this key. Lock-free; allocates nothing.
    #[inline]
    pub fn get(&self, key: &str) -> Option<&T> {
        let hash = self.hasher.hash_one(key);
        let (slots, wanted) = (self.slots(), tag(hash));
        let mut i = hash as usize & slots.mask;
        loop {
            match slots.tags[i].load(Ordering::Acquire) {
                0 => return None,
                t if t == wanted => {
                    // SAFETY: a set tag is published after its value pointer, and values
                    // live until the index is dropped.
                    let value = unsafe { &*slots.values[i].load(Ordering::Acquire) };
                    if value.key() == key {
                        return Some(value);
                    }
                }
                _ => {}
            }
            i = (i + 1) & slots.mask;
        }
    }

    /// Adds `value` unless its key is present, in which case `value` comes back.
    pub fn insert(&self, value: T) -> Result<&T, T> {
        let mut retired = self.retired.lock();
        if self.get(value.key()).is_some() {
            return Err(value);
        }
        let len = self.len.load(Ordering::Relaxed) + 1;
        let mut slots = self.slots();
        if !fits(len, slots.capacity()) {
            let bigger = Box::new(Slots::with_capacity(slots.capacity() * 2));
            for v in slots.values.iter() {
                let p = v.load(Ordering::Relaxed);
                if !p.is_null() {
                    // SAFETY: non-null pointers in a table are live values.
                    bigger.place(self.hasher.hash_one(unsafe { &*p }.key()), p);
                }
            }
            let old = self.table.swap(Box::into_raw(bigger), Ordering::AcqRel);
            // SAFETY: `old` came from Box::into_raw and is no longer reachable from `table`.
            retired.push(unsafe { Box::from_raw(old) });
            slots = self.slots();
        }
        let hash = self.hasher.hash_one(value.key());
        let p = Box::into_raw(Box::new(value));
        slots.place(hash, p);
        self.len.store(len, Ordering::Relaxed);
        // SAFETY: just allocated; lives until the index is dropped.
        Ok(unsafe { &*p })
    }

    /// Every value, in no particular order. Values inserted meanwhile may be missed.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots().values.iter().filter_map(|v| {
            let p = v.load(Ordering::Acquire);
            // SAFETY: non-null pointers in a table are live values.
            (!p.is_null()).then(|| unsafe { &*p })
        })
    }
}

impl<T> Drop for Index<T> {
    fn drop(&mut self) {
        // SAFETY: `&mut self`: no reader is left. The current table holds every value
        // exactly once (growth moved them all); retired tables only alias them.
        unsafe {
            let table = Box::from_raw(*self.table.get_mut());
            for v in table.values.iter() {
                let p = v.load(Ordering::Relaxed);
                if !p.is_null() {
                    drop(Box::from_raw(p));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    struct Item(String, u64);

    impl Keyed for Item {
        fn key(&self) -> &str {
            &self.0
        }
    }

    #[test]
    fn insert_get_grow_iterate() {
        let index: Index<Item> = Index::default();
        for i in 0..10_000u64 {
            assert_eq!(
                index.insert(Item(format!("k{i}"), i)).map(|v| v.1).ok(),
                Some(i)
            );
        }
        assert!(
            index.insert(Item("k5".into(), 99)).is_err(),
            "keys are unique"
        );
        assert_eq!(index.len(), 10_000);
        assert_eq!(index.get("k1234").map(|v| v.1), Some(1234));
        assert!(index.get("k10000").is_none());
        assert_eq!(
            index.iter().map(|v| v.1).sum::<u64>(),
            (0..10_000u64).sum::<u64>()
        );
        let sized: Index<Item> = Index::with_capacity(1000);
        assert!(fits(1000, sized.slots().capacity()));
    }

    #[test]
    fn readers_see_every_published_value_while_the_writer_grows_the_table() {
        const N: usize = 200_000;
        let index: Arc<Index<Item>> = Arc::new(Index::default());
        let published = Arc::new(AtomicUsize::new(0));
        std::thread::scope(|s| {
            for _ in 0..3 {
                let (index, published) = (Arc::clone(&index), Arc::clone(&published));
                s.spawn(move || {
                    let mut seen = 0;
                    while seen < N {
                        let upto = published.load(Ordering::Acquire);
                        for i in (seen..upto).step_by(7) {
                            let v = index
                                .get(&format!("t{i}"))
                                .expect("a published key is found");
                            assert_eq!(v.1, i as u64);
                        }
                        assert!(index.get("never").is_none());
                        seen = upto;
                    }
                });
            }
            for i in 0..N {
                index.insert(Item(format!("t{i}"), i as u64)).ok().unwrap();
                published.store(i + 1, Ordering::Release);
            }
        });
        assert_eq!(index.len(), N);
    }
}
