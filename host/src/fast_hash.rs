//! Hash maps for the per-event path. std's SipHash showed up as ~13% of
//! the daemon's CPU under load; foldhash (hashbrown's default) is several
//! times faster and still seeded per process, so keys taken from traffic
//! (URLs, SQL) cannot be chosen to collide.

pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// A hash to keep with a value that is hashed over and over (seeded once
/// per process, like the maps).
pub fn hash_once<T: std::hash::Hash>(value: T) -> u64 {
    use std::hash::BuildHasher;
    static STATE: std::sync::OnceLock<foldhash::fast::RandomState> = std::sync::OnceLock::new();
    STATE.get_or_init(Default::default).hash_one(value)
}

/// The last few values looked up, kept in front of a map: events come in
/// runs from a few processes (a client and its server taking turns), and
/// these need no hash. The oldest is replaced first.
#[derive(Clone, Debug)]
pub struct Recent<T> {
    slots: [Option<T>; 4],
    next: usize,
}

impl<T> Default for Recent<T> {
    fn default() -> Self {
        Self { slots: [None, None, None, None], next: 0 }
    }
}

impl<T> Recent<T> {
    /// The remembered value that `is` picks, if any.
    #[inline]
    pub fn find(&self, is: impl Fn(&T) -> bool) -> Option<&T> {
        self.slots.iter().flatten().find(|v| is(v))
    }

    /// Remember `value`, forgetting the oldest.
    #[inline]
    pub fn remember(&mut self, value: T) {
        self.slots[self.next] = Some(value);
        self.next = (self.next + 1) % self.slots.len();
    }

    pub fn clear(&mut self) {
        *self = Self::default();
    }
}
