//! A message's fields, interned as a whole: the same protocol and the same
//! field values (`GET /api`, `SELECT ...`) are one shared [`FieldSet`] with
//! a number. Messages, calls and the layer-7 window then carry and hash
//! that number, not a list of strings: no allocation, string hashing or
//! reference counting per field per message (measured: these were about a
//! third of the daemon's layer-7 path).

use std::sync::Arc;

use crate::fast_hash::HashMap;

use super::LoadedPlugin;

/// One protocol's field list, shared by every message that has it.
#[derive(Debug)]
pub struct FieldSet {
    /// Unique for the daemon's life (never reused, so a number held in a
    /// window always means the same fields).
    pub id: u64,
    /// The plugin (its name is the protocol; its field names key `fields`).
    pub plugin: Arc<LoadedPlugin>,
    /// `(index into the plugin's field names, value)`.
    pub fields: Vec<(u16, Arc<str>)>,
}

impl FieldSet {
    /// A field by name.
    pub fn get(&self, name: &str) -> Option<&str> {
        let key = self.plugin.meta.field_names.iter().position(|n| &**n == name)?;
        self.fields.iter().find(|(k, _)| usize::from(*k) == key).map(|(_, v)| &**v)
    }

    /// `(name, value)` pairs.
    pub fn named(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<str>)> {
        let names = &self.plugin.meta.field_names;
        self.fields.iter().filter_map(move |(k, v)| Some((names.get(usize::from(*k))?, v)))
    }
}

/// The interning table, keyed by an encoding of (plugin, fields).
#[derive(Default)]
pub struct FieldSets {
    sets: HashMap<Box<[u8]>, Arc<FieldSet>>,
    scratch: Vec<u8>,
    next_id: u64,
}

impl FieldSets {
    /// Past this many sets, those no message, call or window holds any more
    /// are forgotten (values taken from traffic: URLs, SQL text).
    const MAX: usize = 16 * 1024;

    /// The shared set of `plugin` with these fields, in this order.
    pub fn intern<'a>(
        &mut self,
        plugin: &Arc<LoadedPlugin>,
        fields: impl Iterator<Item = (u16, &'a str)> + Clone,
    ) -> Arc<FieldSet> {
        let key = &mut self.scratch;
        key.clear();
        key.extend_from_slice(&plugin.meta.id.to_le_bytes());
        for (k, v) in fields.clone() {
            key.extend_from_slice(&k.to_le_bytes());
            key.extend_from_slice(&(v.len() as u32).to_le_bytes());
            key.extend_from_slice(v.as_bytes());
        }
        if let Some(set) = self.sets.get(&key[..]) {
            return set.clone();
        }
        if self.sets.len() >= Self::MAX {
            self.sets.retain(|_, s| Arc::strong_count(s) > 1);
        }
        self.next_id += 1;
        let set = Arc::new(FieldSet {
            id: self.next_id,
            plugin: plugin.clone(),
            fields: fields.map(|(k, v)| (k, Arc::from(v))).collect(),
        });
        // Still full of sets in use: this one is not remembered (it is
        // counted correctly, only not shared).
        if self.sets.len() < 2 * Self::MAX {
            self.sets.insert(self.scratch.clone().into_boxed_slice(), set.clone());
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::{Registry, Runtime, SandboxLimits};

    /// The same plugin and fields are one set; any difference (a value, a
    /// key, where one value ends and the next begins, the plugin) another.
    #[test]
    fn same_fields_one_set() {
        let registry = Registry::new(Runtime::new(SandboxLimits::default(), None).unwrap(), Default::default());
        registry.load_builtins();
        let catalog = registry.catalog();
        let (http, redis) = (catalog.get("http").unwrap(), catalog.get("redis").unwrap());
        let mut sets = FieldSets::default();
        let mut id = |p, f: &[(u16, &str)]| sets.intern(p, f.iter().copied()).id;
        let get = id(http, &[(0, "GET"), (1, "/a")]);
        assert_eq!(id(http, &[(0, "GET"), (1, "/a")]), get);
        let others = [
            id(http, &[(0, "GET"), (1, "/b")]),
            id(http, &[(0, "GET"), (2, "/a")]),
            id(http, &[(0, "GE"), (1, "T/a")]),
            id(http, &[(0, "GET")]),
            id(redis, &[(0, "GET"), (1, "/a")]),
        ];
        let mut all = others.to_vec();
        all.push(get);
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 6, "{others:?} and {get}");
    }
}
