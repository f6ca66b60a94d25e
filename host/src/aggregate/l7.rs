//! Layer-7 calls per process, role, remote endpoint, protocol and the
//! protocol's fields, over one `FlushOutL7Interval` window: counts, total
//! latency and bytes, and latency percentiles from a mergeable sketch.
//! Keys are capped; calls past the cap fold into one `other` key per
//! protocol and are counted.

use crate::fast_hash::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use super::sketch::Sketch;
use crate::capture::ProcKey;
use crate::connections::Role;
use crate::metadata::ProcessCache;
use crate::records::{Kind, Record, Value};
use crate::stitch::Call;

/// Where a call happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub proc: ProcKey,
    pub role: Role,
    pub remote: (IpAddr, u16),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    at: Endpoint,
    protocol: Arc<str>,
    /// The field that says what a call does (the plugin's call field).
    call_field: Option<Arc<str>>,
    fields: Vec<(Arc<str>, Arc<str>)>,
    /// `None`: outcome unknown (its response's bytes were lost).
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

pub struct L7Window {
    stats: HashMap<Key, Stats>,
    max_keys: usize,
    /// Calls folded into an `other` key because the cap was reached.
    pub overflow: u64,
}

impl L7Window {
    pub fn new(max_keys: usize) -> Self {
        Self { stats: HashMap::default(), max_keys, overflow: 0 }
    }

    /// Count `call` (its fields move into the key: no copy per call).
    pub fn add(&mut self, at: Endpoint, call: Call) {
        let meta = &call.plugin.meta;
        let key = Key {
            at,
            protocol: meta.name.clone(),
            call_field: meta.call_field.clone(),
            fields: call.fields,
            success: call.success,
        };
        // Below the cap a key is hashed once; at the cap, a new key folds.
        let key = if self.stats.len() >= self.max_keys && !self.stats.contains_key(&key) {
            self.overflow += 1;
            Key {
                at: Endpoint {
                    proc: ProcKey::default(),
                    role: Role::Unknown,
                    remote: (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
                },
                protocol: key.protocol,
                call_field: None,
                fields: vec![(Arc::from("other"), Arc::from("true"))],
                success: key.success,
            }
        } else {
            key
        };
        let s = self.stats.entry(key).or_default();
        s.count += 1;
        s.latency += call.latency_ns;
        s.req_bytes += call.req_bytes;
        s.resp_bytes += call.resp_bytes;
        s.sketch.add(call.latency_ns);
    }

    /// The window's `type: protocols` records of the processes the filters
    /// keep, and a new empty window.
    pub fn flush(&mut self, time: u64, procs: &ProcessCache) -> Vec<Record> {
        let mut out = Vec::with_capacity(self.stats.len());
        for (k, s) in self.stats.drain() {
            // (`other` keys belong to no process.)
            if k.at.proc.pid != 0 && !procs.keep(k.at.proc) {
                continue;
            }
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
