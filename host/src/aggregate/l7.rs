//! Layer-7 calls per process, role, remote endpoint, protocol and the
//! protocol's fields, over one `FlushOutL7Interval` window: counts, total
//! latency and bytes, and latency percentiles from a mergeable sketch.
//! Keys are capped; calls past the cap fold into one `other` key per
//! protocol and are counted.

use crate::fast_hash::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use super::keyed::KeyedEntries;
use super::sketch::Sketch;
use crate::capture::ProcKey;
use crate::connections::Role;
use crate::metadata::ProcessCache;
use crate::records::{Kind, Record, Value};
use crate::stitch::Call;

/// Where a call happened. Hashed once, when made (a connection keeps its
/// endpoint): the window hashes its key for every call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub proc: ProcKey,
    pub role: Role,
    pub remote: (IpAddr, u16),
    /// Plaintext read at the TLS library.
    pub tls: bool,
    hash: u64,
}

impl Endpoint {
    pub fn new(proc: ProcKey, role: Role, remote: (IpAddr, u16), tls: bool) -> Self {
        let hash = crate::fast_hash::hash_once((proc, role, remote, tls));
        Self { proc, role, remote, tls, hash }
    }
}

impl std::hash::Hash for Endpoint {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// What calls are counted under in the window: numbers only, so a call
/// costs one cheap hash (the fields are interned sets, see `FieldSets`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    at: Endpoint,
    /// The request's field set, or 0 for the protocol's `other` key.
    request: u64,
    /// The response's field set (0: none), or for `other` the plugin.
    response: u64,
    /// `None`: outcome unknown (its response's bytes were lost).
    success: Option<bool>,
}

/// What the same calls are reported under: the keys above resolved to
/// names. Two keys can resolve alike (a plugin reloaded within the window);
/// their figures merge.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Labels {
    at: Endpoint,
    protocol: Arc<str>,
    /// The field that says what a call does (the plugin's call field).
    call_field: Option<Arc<str>>,
    fields: Vec<(Arc<str>, Arc<str>)>,
    success: Option<bool>,
}

#[derive(Default)]
struct Stats {
    count: u64,
    latency: u64,
    req_bytes: u64,
    resp_bytes: u64,
    sketch: Sketch,
}

impl Stats {
    fn merge(&mut self, other: &Stats) {
        self.count += other.count;
        self.latency += other.latency;
        self.req_bytes += other.req_bytes;
        self.resp_bytes += other.resp_bytes;
        self.sketch.merge(&other.sketch);
    }
}

struct Entry {
    /// The first call counted under the key (for its names).
    call: Call,
    stats: Stats,
}

pub struct L7Window {
    /// A connection keeps its last key's place (`add`'s hint), so a run of
    /// calls of the same kind on it is counted without hashing.
    keys: KeyedEntries<Key, Entry>,
    max_keys: usize,
    /// Calls folded into an `other` key because the cap was reached.
    pub overflow: u64,
}

impl L7Window {
    pub fn new(max_keys: usize) -> Self {
        Self { keys: KeyedEntries::default(), max_keys, overflow: 0 }
    }

    /// Count `call`, made at `at`. `hint` is where the connection's last
    /// call was counted (any value at first): checked against the key,
    /// then set to this call's place.
    pub fn add(&mut self, at: Endpoint, call: Call, hint: &mut usize) {
        let key = Key {
            at,
            request: call.request.id,
            response: call.response.as_ref().map_or(0, |r| r.id),
            success: call.success,
        };
        let (latency, req_bytes, resp_bytes) = (call.latency_ns, call.req_bytes, call.resp_bytes);
        let entry = |call| Entry { call, stats: Stats::default() };
        let place = if let Some(place) = self.keys.find(&key, *hint) {
            place
        } else if self.keys.len() < self.max_keys {
            self.keys.insert(key, entry(call))
        } else {
            // At the cap, a new key folds into its protocol's `other` key.
            self.overflow += 1;
            let other = Key {
                at: Endpoint::new(ProcKey::default(), Role::Unknown, (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0), false),
                request: 0,
                response: call.plugin().meta.id,
                success: call.success,
            };
            match self.keys.find(&other, *hint) {
                Some(place) => place,
                None => self.keys.insert(other, entry(call)),
            }
        };
        *hint = place;
        let s = &mut self.keys.value_mut(place).stats;
        s.count += 1;
        s.latency += latency;
        s.req_bytes += req_bytes;
        s.resp_bytes += resp_bytes;
        s.sketch.add(latency);
    }

    /// The window's `type: protocols` records of the processes the filters
    /// keep, and a new empty window.
    pub fn flush(&mut self, time: u64, procs: &ProcessCache) -> Vec<Record> {
        let mut merged: HashMap<Labels, Stats> = HashMap::default();
        for (k, e) in self.keys.drain() {
            // (`other` keys belong to no process.)
            if k.at.proc.pid != 0 && !procs.keep(k.at.proc) {
                continue;
            }
            let meta = &e.call.plugin().meta;
            let fields = if k.request == 0 { vec![(Arc::from("other"), Arc::from("true"))] } else { e.call.fields() };
            let labels = Labels {
                at: k.at,
                protocol: meta.name.clone(),
                call_field: meta.call_field.clone(),
                fields,
                success: k.success,
            };
            merged.entry(labels).or_default().merge(&e.stats);
        }
        let mut out = Vec::with_capacity(merged.len());
        for (k, s) in merged {
            let mut r = Record::new(Kind::Protocols);
            procs.describe(k.at.proc, &mut r);
            r.push("protocol", &k.protocol);
            for (name, value) in &k.fields {
                let value = if k.call_field.as_ref() == Some(name) {
                    Value::Call(value.clone())
                } else {
                    Value::Text(value.clone())
                };
                r.push_named(name, value);
            }
            r.push(
                "success",
                match k.success {
                    Some(true) => "1",
                    Some(false) => "0",
                    None => "unknown",
                },
            );
            r.push("role", k.at.role.as_str());
            if k.at.tls {
                r.push("tls", "1");
            }
            r.push("remote_info", Value::Remote { ip: k.at.remote.0, port: k.at.remote.1, kind: k.at.role.peer() });
            r.push("total_count", s.count);
            r.push("total_latency_ns", s.latency);
            r.push("total_req_bytes", s.req_bytes);
            r.push("total_resp_bytes", s.resp_bytes);
            r.push("latency", Value::Latency(Box::new(s.sketch)));
            r.push("__time__", time);
            out.push(r);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::{FieldSets, LoadedPlugin, Registry, Runtime, SandboxLimits};

    /// The built-in redis plugin, loaded afresh (each load has its own id,
    /// as after a hot reload).
    fn redis(runtime: &Arc<Runtime>) -> Arc<LoadedPlugin> {
        let registry = Registry::new(runtime.clone(), Default::default());
        registry.load_builtins();
        let p = registry.catalog().get("redis").unwrap().clone();
        p
    }

    fn call(sets: &mut FieldSets, plugin: &Arc<LoadedPlugin>, command: &str, latency_ns: u64) -> Call {
        Call {
            request: sets.intern_pairs(plugin, &[(0, command)]),
            response: Some(sets.intern_pairs(plugin, &[])),
            latency_ns,
            req_bytes: 10,
            resp_bytes: 5,
            success: Some(true),
        }
    }

    fn summary(records: &[Record]) -> Vec<(String, u64, u64)> {
        let mut out: Vec<_> = records
            .iter()
            .map(|r| {
                let what = match r.text("command") {
                    Some(c) => c.to_string(),
                    None => format!("other={}", r.text("other").unwrap_or_default()),
                };
                (what, r.int("total_count").unwrap(), r.int("total_latency_ns").unwrap())
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn same_labels_merge_across_plugin_loads_and_the_cap_folds_into_other() {
        let runtime = Runtime::new(SandboxLimits::default(), None).unwrap();
        let (old, new) = (redis(&runtime), redis(&runtime));
        assert_ne!(old.meta.id, new.meta.id);
        let mut sets = FieldSets::default();
        let at = Endpoint::new(
            ProcKey { pid: 7, start_ns: 1 },
            Role::Client,
            (IpAddr::V4(Ipv4Addr::LOCALHOST), 6379),
            false,
        );
        let mut w = L7Window::new(3);
        // One connection's place in the window, through every step below.
        let mut hint = 0;
        // GET through the plugin before and after a reload: two keys in the
        // window, one record.
        w.add(at, call(&mut sets, &old, "GET", 100), &mut hint);
        w.add(at, call(&mut sets, &new, "GET", 300), &mut hint);
        w.add(at, call(&mut sets, &new, "GET", 500), &mut hint);
        w.add(at, call(&mut sets, &old, "SET", 50), &mut hint);
        // Past the cap of 3 keys: counted under `other`.
        w.add(at, call(&mut sets, &new, "DEL", 7), &mut hint);
        w.add(at, call(&mut sets, &new, "INCR", 8), &mut hint);
        assert_eq!(w.overflow, 2);
        let records = w.flush(1, &ProcessCache::default());
        assert_eq!(
            summary(&records),
            vec![("GET".to_string(), 3, 900), ("SET".to_string(), 1, 50), ("other=true".to_string(), 2, 15),]
        );
        // The window starts afresh.
        assert!(w.flush(2, &ProcessCache::default()).is_empty());
        // The place kept from the last window names nothing (or another
        // key) now: each call still counts under its own key.
        for (command, latency) in [("SET", 1), ("GET", 2), ("GET", 4), ("SET", 8), ("GET", 16)] {
            w.add(at, call(&mut sets, &new, command, latency), &mut hint);
        }
        let other = Endpoint::new(ProcKey { pid: 8, start_ns: 1 }, Role::Client, at.remote, false);
        w.add(other, call(&mut sets, &new, "GET", 32), &mut hint);
        w.add(at, call(&mut sets, &new, "GET", 64), &mut hint);
        let records = w.flush(3, &ProcessCache::default());
        let mut by_pid: Vec<_> = records
            .iter()
            .map(|r| {
                (
                    r.int("_process_pid_").unwrap(),
                    r.text("command").unwrap().to_string(),
                    r.int("total_latency_ns").unwrap(),
                )
            })
            .collect();
        by_pid.sort();
        assert_eq!(by_pid, vec![(7, "GET".into(), 86), (7, "SET".into(), 9), (8, "GET".into(), 32)], "{records:?}");
    }
}
