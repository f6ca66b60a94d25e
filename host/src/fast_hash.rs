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
