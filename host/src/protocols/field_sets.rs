//! A message's fields, interned as a whole: the same protocol and the same
//! field values (`GET /api`, `SELECT ...`) are one shared [`FieldSet`] with
//! a number. Messages, calls and the layer-7 window then carry and hash
//! that number, not a list of strings: no allocation, string hashing or
//! reference counting per field per message (measured: these were about a
//! third of the daemon's layer-7 path).

use std::rc::Rc;
use std::sync::Arc;

use crate::fast_hash::HashMap;

use super::wire::MessageKind;
use super::LoadedPlugin;

/// One protocol's field list, shared by every message that has it, by
/// `Rc`: sets are made, held and let go on the collector's thread only
/// (records take their values, `Arc<str>`), and an atomic count cost four
/// locked instructions per call (a message's set taken, a call's two let go).
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
    sets: HashMap<Box<[u8]>, Rc<FieldSet>>,
    scratch: Vec<u8>,
    next_id: u64,
    /// The last plugin's set of no fields.
    empty: Option<Rc<FieldSet>>,
    /// The last set with fields, per message kind (requests, responses,
    /// one-way): messages of a kind come in runs with the same fields
    /// (pipelined commands, a client's repeated query, `200` after `200`),
    /// which are then compared field by field, without a key or a hash.
    last: [Option<Rc<FieldSet>>; 3],
}

impl FieldSets {
    /// Past this many sets, those no message, call or window holds any more
    /// are forgotten (values taken from traffic: URLs, SQL text).
    const MAX: usize = 16 * 1024;

    /// The shared set of `plugin` with these fields, in this order: field
    /// `i` is `keys[i]` with the text `arena[offsets[i]..][..lens[i]]`
    /// (spans the sandbox checked: inside the arena, UTF-8, on character
    /// boundaries; a span outside the arena is taken as empty), for a
    /// message of `kind`. The arena is taken as bytes: it was validated
    /// once, in the sandbox, and a text is made of it only for a new set.
    #[inline]
    pub fn intern(
        &mut self,
        kind: MessageKind,
        plugin: &Arc<LoadedPlugin>,
        keys: &[u16],
        offsets: &[u32],
        lens: &[u32],
        arena: &[u8],
    ) -> Rc<FieldSet> {
        let n = keys.len().min(offsets.len()).min(lens.len());
        // Most responses carry no field: the plugin's empty set, kept.
        if n == 0 {
            if let Some(set) = self.empty.as_ref().filter(|s| Arc::ptr_eq(&s.plugin, plugin)) {
                return set.clone();
            }
        }
        let text = |i: usize| {
            let start = offsets[i] as usize;
            arena.get(start..start.saturating_add(lens[i] as usize)).unwrap_or_default()
        };
        // (Only sets with fields are kept there: equal lengths mean n > 0.)
        let slot = kind as usize;
        if let Some(last) = self.last[slot].as_ref() {
            if last.fields.len() == n
                && Arc::ptr_eq(&last.plugin, plugin)
                && last
                    .fields
                    .iter()
                    .enumerate()
                    .all(|(i, (key, value))| *key == keys[i] && value.as_bytes() == text(i))
            {
                return last.clone();
            }
        }
        // The key: the plugin, the count, the keys, the lengths, the texts.
        // A message's texts are usually one run in the arena (the SDK
        // writes them so): then they are copied at once.
        let key = &mut self.scratch;
        key.clear();
        key.extend_from_slice(&plugin.meta.id.to_le_bytes());
        key.extend_from_slice(&(n as u16).to_le_bytes());
        let mut one_run = true;
        for i in 0..n {
            key.extend_from_slice(&keys[i].to_le_bytes());
            key.extend_from_slice(&lens[i].to_le_bytes());
            one_run &= i == 0 || offsets[i] == offsets[i - 1].wrapping_add(lens[i - 1]);
        }
        let whole: Option<&[u8]> = if n == 0 {
            Some(b"")
        } else if one_run {
            let start = offsets[0] as usize;
            let end = offsets[n - 1] as usize + lens[n - 1] as usize;
            arena.get(start..end)
        } else {
            None
        };
        match whole {
            Some(t) => key.extend_from_slice(t),
            None => (0..n).for_each(|i| key.extend_from_slice(text(i))),
        }
        let set = match self.sets.get(&key[..]) {
            Some(set) => set.clone(),
            None => {
                if self.sets.len() >= Self::MAX {
                    self.sets.retain(|_, s| Rc::strong_count(s) > 1);
                }
                self.next_id += 1;
                let set = Rc::new(FieldSet {
                    id: self.next_id,
                    plugin: plugin.clone(),
                    fields: (0..n)
                        .map(|i| (keys[i], Arc::from(std::str::from_utf8(text(i)).unwrap_or_default())))
                        .collect(),
                });
                // Still full of sets in use: this one is not remembered (it
                // is counted correctly, only not shared).
                if self.sets.len() < 2 * Self::MAX {
                    self.sets.insert(self.scratch.clone().into_boxed_slice(), set.clone());
                }
                set
            }
        };
        if n == 0 {
            self.empty = Some(set.clone());
        } else {
            self.last[slot] = Some(set.clone());
        }
        set
    }

    /// [`FieldSets::intern`] of `(key, text)` pairs, for a request (tests).
    #[cfg(test)]
    pub fn intern_pairs(&mut self, plugin: &Arc<LoadedPlugin>, fields: &[(u16, &str)]) -> Rc<FieldSet> {
        let arena: String = fields.iter().map(|(_, v)| *v).collect();
        let keys: Vec<u16> = fields.iter().map(|(k, _)| *k).collect();
        let lens: Vec<u32> = fields.iter().map(|(_, v)| v.len() as u32).collect();
        let offsets: Vec<u32> = lens.iter().scan(0, |at, len| Some(std::mem::replace(at, *at + len))).collect();
        self.intern(MessageKind::Request, plugin, &keys, &offsets, &lens, arena.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::{Registry, Runtime, SandboxLimits};

    /// A registry with the built-in plugins loaded.
    fn builtins() -> Arc<Registry> {
        let registry = Registry::new(Runtime::new(SandboxLimits::default(), None).unwrap(), Default::default());
        registry.load_builtins();
        registry
    }

    /// The same plugin and fields are one set; any difference (a value, a
    /// key, where one value ends and the next begins, the plugin) another.
    #[test]
    fn same_fields_one_set() {
        let registry = builtins();
        let catalog = registry.catalog();
        let (http, redis) = (catalog.get("http").unwrap(), catalog.get("redis").unwrap());
        let mut sets = FieldSets::default();
        let mut id = |p, f: &[(u16, &str)]| sets.intern_pairs(p, f).id;
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

    /// Texts wherever they are in the arena (one run, out of order, apart)
    /// are the same set when keys and texts are the same.
    #[test]
    fn spans_anywhere_in_the_arena() {
        let registry = builtins();
        let http = registry.catalog().get("http").unwrap().clone();
        let mut sets = FieldSets::default();
        let run = sets.intern(MessageKind::Request, &http, &[0, 1], &[1, 4], &[3, 2], b"xGET/a").id;
        let reversed = sets.intern(MessageKind::Request, &http, &[0, 1], &[2, 0], &[3, 2], b"/aGET").id;
        let apart = sets.intern(MessageKind::Request, &http, &[0, 1], &[0, 5], &[3, 2], b"GET--/a").id;
        assert_eq!((run, reversed), (apart, apart));
        let set = sets.intern(MessageKind::Request, &http, &[0, 1], &[2, 0], &[3, 2], b"/aGET");
        assert_eq!(set.fields.iter().map(|(k, v)| (*k, &**v)).collect::<Vec<_>>(), [(0, "GET"), (1, "/a")]);
        // The same bytes split otherwise: another set.
        assert_ne!(sets.intern(MessageKind::Request, &http, &[0, 1], &[0, 2], &[2, 3], b"GET/a").id, run);
        // Texts of several bytes a character, taken from the arena's bytes;
        // the same again is the same set, one character otherwise is not.
        let arena = "GET/café/cafè".as_bytes();
        let cafe = sets.intern(MessageKind::Request, &http, &[0, 1], &[0, 3], &[3, 6], arena);
        assert_eq!(cafe.fields.iter().map(|(k, v)| (*k, &**v)).collect::<Vec<_>>(), [(0, "GET"), (1, "/café")]);
        assert_eq!(sets.intern(MessageKind::Request, &http, &[0, 1], &[0, 3], &[3, 6], arena).id, cafe.id);
        assert_ne!(sets.intern(MessageKind::Request, &http, &[0, 1], &[0, 9], &[3, 6], arena).id, cafe.id);
    }

    /// A message like the last one but for its plugin, a key or a value is
    /// another set, asked right after it (the last set is kept apart).
    #[test]
    fn the_last_set_is_reused_only_when_all_is_the_same() {
        let registry = builtins();
        let catalog = registry.catalog();
        let (http, redis) = (catalog.get("http").unwrap(), catalog.get("redis").unwrap());
        let mut sets = FieldSets::default();
        let get = sets.intern_pairs(http, &[(0, "GET"), (1, "/a")]);
        assert!(Rc::ptr_eq(&get, &sets.intern_pairs(http, &[(0, "GET"), (1, "/a")])));
        let mut seen = vec![get.id];
        for (plugin, fields) in [
            (redis, &[(0, "GET"), (1, "/a")][..]),
            (http, &[(0, "GET"), (1, "/a")]),
            (http, &[(0, "GET"), (2, "/a")]),
            (http, &[(0, "GET"), (1, "/b")]),
            (http, &[(0, "GET")]),
            (http, &[(0, "GET"), (1, "/b"), (2, "x")]),
        ] {
            let set = sets.intern_pairs(plugin, fields);
            assert_eq!(set.fields.iter().map(|(k, v)| (*k, &**v)).collect::<Vec<_>>(), fields);
            assert!(Arc::ptr_eq(&set.plugin, plugin));
            seen.push(set.id);
        }
        // Another kind of message with the same fields: the same set.
        let as_response = sets.intern(MessageKind::Response, http, &[0, 1], &[0, 3], &[3, 2], b"GET/a");
        assert_eq!(as_response.id, get.id);
        // The second is the first again (the redis set came between).
        assert_eq!(seen[2], seen[0]);
        seen.remove(2);
        let mut distinct = seen.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), seen.len(), "{seen:?}");
    }
}
