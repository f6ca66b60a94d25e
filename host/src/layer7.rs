//! The layer-7 path of the pipeline: captured chunks of kept connections go
//! to the protocol plugins (detection, parsing), parsed messages to the
//! stitcher, calls to the layer-7 window.

use crate::fast_hash::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;

use crate::aggregate::l7::{Endpoint, L7Window};
use crate::capture::event::INGRESS;
use crate::capture::Event;
use crate::connections::{Conn, Role};
use crate::metadata::ProcessCache;
use crate::protocols::bindings::{Direction, Role as WireRole};
use crate::protocols::reload::PluginDirWatcher;
use crate::protocols::{ChunkIn, ConnEvent, Parsed, ProtocolWorker, Registry, Runtime, SandboxLimits, WorkerConfig};
use crate::records::Record;
use crate::stitch::{Call, Stitcher};

/// `SOCK_DGRAM`: datagram sockets, whose chunks are whole messages.
const SOCK_DGRAM: u16 = 2;

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
    /// Load the built-in plugins (and those of `plugin_dir`, hot-reloaded);
    /// compiled plugins are cached in `cache_dir`.
    pub fn new(
        include: &[String],
        plugin_dir: Option<&PathBuf>,
        max_keys: usize,
        limits: SandboxLimits,
        cache_dir: Option<PathBuf>,
    ) -> Result<Self> {
        let runtime = Runtime::new(limits, cache_dir)?;
        let registry = Registry::new(runtime, Default::default());
        registry.load_builtins();
        let watcher = plugin_dir.map(|d| PluginDirWatcher::start(registry.clone(), d)).transpose()?;
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
        let ingress = ev.direction == INGRESS;
        let role = match conn.role {
            Role::Client => WireRole::Client,
            Role::Server => WireRole::Server,
            Role::Unknown => WireRole::Unknown,
        };
        let port_hint = if conn.role == Role::Server { conn.local.1 } else { remote.1 };
        self.worker.push(ChunkIn {
            conn: conn.id,
            direction: if ingress { Direction::Ingress } else { Direction::Egress },
            role,
            // When the socket took or gave the bytes.
            timestamp_ns: ev.ts,
            data: &ev.payload,
            real_len: ev.real_len,
            port_hint,
            datagram: ev.sock_type == SOCK_DGRAM,
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
