//! The layer-7 path of the pipeline: captured chunks of kept connections go
//! to the protocol plugins (detection, parsing), parsed messages to the
//! stitcher, calls to the layer-7 window.

use crate::fast_hash::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Result};

use crate::aggregate::l7::{Endpoint, L7Window};
use crate::capture::{Event, Transport};
use crate::config::closest;
use crate::connections::{Conn, Role};
use crate::metadata::ProcessCache;
use crate::protocols::bindings::Role as WireRole;
use crate::protocols::reload::PluginDirWatcher;
use crate::protocols::{
    ChunkIn, ConnEvent, Parsed, PluginOptions, ProtocolWorker, Registry, Runtime, SandboxLimits, WorkerConfig,
};
use crate::records::Record;
use crate::stitch::{Call, Stitcher};

/// Requests waiting for a response per connection, at most.
const MAX_PENDING: usize = 1024;
/// Requests unanswered for this long are reported as failed calls.
const REQUEST_TIMEOUT_NS: u64 = 30_000_000_000;

pub struct Layer7 {
    registry: Arc<Registry>,
    worker: ProtocolWorker,
    stitcher: Stitcher,
    window: L7Window,
    conns: HashMap<u64, Endpoint>,
    closing: Vec<u64>,
    parsed: Vec<Parsed>,
    events: Vec<ConnEvent>,
    calls: Vec<Call>,
    _watcher: Option<PluginDirWatcher>,
}

impl Layer7 {
    /// Load the built-in plugins (and those of `plugin_dir`, hot-reloaded)
    /// with their `options`; compiled plugins are cached in `cache_dir`. A
    /// built-in that rejects its options is an error (the config is wrong).
    pub fn new(
        include: &[String],
        plugin_dir: Option<&PathBuf>,
        options: PluginOptions,
        max_keys: usize,
        limits: SandboxLimits,
        cache_dir: Option<PathBuf>,
    ) -> Result<Self> {
        let runtime = Runtime::new(limits, cache_dir)?;
        let configured: Vec<String> = options.keys().cloned().collect();
        let registry = Registry::new(runtime, options);
        registry.load_builtins();
        if let Some((name, err)) = registry.builtin_errors().into_iter().find(|(name, _)| configured.contains(name)) {
            bail!("Wirelens.PluginOptions.{name}: {err}");
        }
        let watcher = plugin_dir.map(|d| PluginDirWatcher::start(registry.clone(), d)).transpose()?;
        warn_unserved(include, &registry);
        let include = (!include.is_empty()).then(|| include.iter().map(|p| p.to_lowercase()).collect());
        let worker = ProtocolWorker::new(registry.clone(), WorkerConfig { include, ..WorkerConfig::default() });
        Ok(Self {
            registry,
            worker,
            stitcher: Stitcher::new(MAX_PENDING, REQUEST_TIMEOUT_NS),
            window: L7Window::new(max_keys),
            conns: HashMap::default(),
            closing: Vec::new(),
            parsed: Vec::new(),
            events: Vec::new(),
            calls: Vec::new(),
            _watcher: watcher,
        })
    }

    /// A data event of a kept connection.
    pub fn on_data(&mut self, conn: &Conn, ev: &Event) {
        let remote = if ev.remote.1 != 0 { ev.remote } else { conn.remote };
        // A server's calls aggregate per client address, not per client
        // connection (its ephemeral port would make a key per connection).
        let key_remote = if conn.role == Role::Server { (remote.0, 0) } else { remote };
        self.conns.entry(conn.id).or_insert(Endpoint { proc: conn.key.proc, role: conn.role, remote: key_remote });
        let role = WireRole::from(conn.role);
        let port_hint = if conn.role == Role::Server { conn.local.1 } else { remote.1 };
        self.worker.push(ChunkIn {
            conn: conn.id,
            direction: ev.direction.into(),
            role,
            // When the socket took or gave the bytes.
            timestamp_ns: ev.ts,
            data: &ev.payload,
            real_len: ev.real_len,
            port_hint,
            datagram: ev.transport == Transport::Datagram,
        });
    }

    /// The connection closed (or expired).
    pub fn on_close(&mut self, conn_id: u64) {
        self.worker.close(conn_id);
        self.closing.push(conn_id);
    }

    /// Parse what is queued and stitch it into the window.
    pub fn poll(&mut self) {
        self.worker.poll(&mut self.parsed, &mut self.events);
        for m in self.parsed.drain(..) {
            self.stitcher.add(m, &mut self.calls);
        }
        for e in self.events.drain(..) {
            if let ConnEvent::Dropped { conn, protocol, reason } = e {
                tracing::debug!(conn, %protocol, "layer 7 dropped: {reason}");
            }
        }
        let closed = std::mem::take(&mut self.closing);
        for &id in &closed {
            self.stitcher.close(id, &mut self.calls);
        }
        self.aggregate_calls();
        for id in closed {
            self.conns.remove(&id);
        }
    }

    fn aggregate_calls(&mut self) {
        for call in self.calls.drain(..) {
            if let Some(at) = self.conns.get(&call.conn) {
                self.window.add(*at, call);
            }
        }
    }

    /// The window's records; requests past their timeout become failures.
    pub fn flush(&mut self, time: u64, procs: &ProcessCache) -> Vec<Record> {
        self.poll();
        self.stitcher.expire(crate::clock::monotonic_ns(), &mut self.calls);
        self.aggregate_calls();
        self.window.flush(time, procs)
    }

    /// Health figures: plugin failures (since start, every version: the
    /// worker counts them, so replacing a plugin does not reset the figure),
    /// quarantined plugins, overflow.
    pub fn health(&self, r: &mut Record) {
        let catalog = self.registry.catalog();
        let quarantined = catalog.active.iter().filter(|p| p.quarantined_until().is_some()).count();
        let s = self.worker.stats();
        r.push("plugin_failures", s.plugin_failures);
        r.push("plugins_quarantined", quarantined);
        r.push("l7_connections", self.worker.connections());
        r.push("l7_messages", s.messages);
        r.push("l7_dropped_connections", s.dropped);
        r.push("l7_orphan_responses", self.stitcher.orphan_responses);
        r.push("l7_overflow", self.window.overflow);
    }
}

/// `IncludeProtocols` names that no loaded plugin serves: likely typos
/// (a plugin of that name added to the plugin directory later still counts).
fn warn_unserved(include: &[String], registry: &Registry) {
    let catalog = registry.catalog();
    let served: Vec<&str> = catalog.active.iter().map(|p| &*p.meta.name).collect();
    for name in include {
        let lower = name.to_lowercase();
        if served.contains(&lower.as_str()) {
            continue;
        }
        let hint =
            closest(&lower, served.iter().copied()).map(|n| format!(": did you mean `{n}`?")).unwrap_or_default();
        tracing::warn!(
            "Common.IncludeProtocols names `{name}`, which no loaded plugin serves{hint} \
             (a plugin of that name added to the plugin directory is used)"
        );
    }
}
