//! Layer-7 calls per process, role, remote endpoint, protocol and the
//! protocol's fields, over one `FlushOutL7Interval` window: counts, total
//! latency and bytes, and latency percentiles from a mergeable sketch.
//! Keys are capped; calls past the cap fold into one `other` key per
//! protocol and are counted.

use crate::fast_hash::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use super::l4::remote_info;
use super::sketch::Sketch;
use crate::capture::ProcKey;
use crate::connections::Role;
use crate::metadata::ProcessCache;
use crate::records::{Record, LATENCY_BOUNDS_NS};
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
        let key = Key { at, protocol: call.plugin.meta.name.clone(), fields: call.fields, success: call.success };
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
            let mut r = Record::new("protocols");
            procs.describe(k.at.proc, &mut r);
            r.push("protocol", &k.protocol);
            for (name, value) in &k.fields {
                r.push(name, value);
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
            r.push("remote_info", remote_info(k.at.remote.0, k.at.remote.1, k.at.role.peer()));
            r.push("total_count", s.count);
            r.push("total_latency_ns", s.latency);
            r.push("total_req_bytes", s.req_bytes);
            r.push("total_resp_bytes", s.resp_bytes);
            r.push("latency_p50_ns", s.sketch.quantile(0.5));
            r.push("latency_p90_ns", s.sketch.quantile(0.9));
            r.push("latency_p99_ns", s.sketch.quantile(0.99));
            r.push("latency_max_ns", s.sketch.max());
            r.push("__time__", time);
            r.latency_buckets = Some(LATENCY_BOUNDS_NS.iter().map(|&b| s.sketch.count_at_most(b)).collect());
            out.push(r);
        }
        out
    }
}
