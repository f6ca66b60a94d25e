//! A window's keys and their figures, in the order the keys came, with an
//! index by key. A caller keeps the place a key was found at (on the
//! connection) and passes it back: while the entry there still has that
//! key, it is found without hashing (the windows hash a key per call
//! otherwise; for layer 4 that was a twelfth of the daemon's path per
//! event). A place from an older window, or of another key, is looked up.

use std::hash::Hash;

use crate::fast_hash::HashMap;

pub struct KeyedEntries<K, V> {
    entries: Vec<(K, V)>,
    /// Each key's place in `entries`.
    index: HashMap<K, u32>,
}

impl<K, V> Default for KeyedEntries<K, V> {
    fn default() -> Self {
        Self { entries: Vec::new(), index: HashMap::default() }
    }
}

impl<K: Copy + Eq + Hash, V> KeyedEntries<K, V> {
    /// `key`'s place: `kept` if the entry there has it, else from the index.
    #[inline]
    pub fn find(&self, key: &K, kept: usize) -> Option<usize> {
        if self.entries.get(kept).is_some_and(|(k, _)| k == key) {
            return Some(kept);
        }
        self.index.get(key).map(|&at| at as usize)
    }

    /// A new key (not in the window) and its figures; its place.
    pub fn insert(&mut self, key: K, value: V) -> usize {
        let at = self.entries.len();
        self.entries.push((key, value));
        self.index.insert(key, at as u32);
        at
    }

    /// The figures at a place [`KeyedEntries::find`] or
    /// [`KeyedEntries::insert`] gave.
    #[inline]
    pub fn value_mut(&mut self, at: usize) -> &mut V {
        &mut self.entries[at].1
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Every key and its figures, leaving the window empty.
    pub fn drain(&mut self) -> std::vec::Drain<'_, (K, V)> {
        self.index.clear();
        self.entries.drain(..)
    }

    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = &(K, V)> {
        self.entries.iter()
    }
}
