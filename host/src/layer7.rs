//! The layer-7 path of the pipeline: captured chunks of kept connections go
//! to the protocol plugins (detection, parsing), parsed messages to the
//! stitcher, calls to the layer-7 window. What the plugins learn about a
//! connection goes back to the kernel as its wishes ([`SocketControl`]):
//! copy only what the protocol's fields need, never copy bodies a plugin
//! skips, count connections no plugin parses without a record per call.

use crate::fast_hash::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Result};

use crate::aggregate::l7::{Endpoint, L7Window};
use crate::capture::{Direction, Event, Mode, SocketControl, Transport};
use crate::config::closest;
use crate::connections::{Conn, Role};
use crate::metadata::ProcessCache;
use crate::protocols::bindings::{Direction as WireDirection, Role as WireRole};
use crate::protocols::reload::PluginDirWatcher;
use crate::protocols::{
    ChunkIn, ConnEvent, Parsed, PluginOptions, ProtocolWorker, Registry, Runtime, SandboxLimits, WorkerConfig,
};
use crate::records::Record;
use crate::stitch::{Call, Pending, Stitcher};

/// Requests waiting for a response, at most, per connection and on all
/// connections (32 bytes each). A client that pipelines deeply really has
/// this many: an open-loop redis client at 900k requests/s had over 100k
/// per connection in its socket buffers.
const MAX_PENDING: usize = 256 * 1024;
const MAX_PENDING_TOTAL: usize = 2 * 1024 * 1024;
/// Requests unanswered for this long are reported as failed calls.
const REQUEST_TIMEOUT_NS: u64 = 30_000_000_000;

/// How the layer-7 path is set up.
pub struct Layer7Config<'a> {
    /// `Common.IncludeProtocols` (empty: all).
    pub include: &'a [String],
    pub plugin_dir: Option<&'a PathBuf>,
    pub options: PluginOptions,
    /// `Wirelens.CaptureBytes`: bytes copied per call by protocol, over the
    /// plugins' own figures.
    pub capture_bytes: std::collections::BTreeMap<String, u32>,
    /// `Wirelens.PayloadBytes`: what the kernel copies at most.
    pub payload_bytes: u32,
    pub max_keys: usize,
    pub limits: SandboxLimits,
    /// Where compiled plugins are cached.
    pub cache_dir: Option<PathBuf>,
}

/// A connection the layer-7 path follows.
struct L7Conn {
    at: Endpoint,
    /// The socket's cookie (what the kernel knows it by).
    sock: u64,
    role: Role,
    /// What the kernel is asked to do with its calls.
    control: SocketControl,
    /// Its requests waiting for responses.
    pending: Pending,
    /// Where its stream is known up to, per direction (egress, ingress):
    /// a record that starts past it follows bytes the ring buffer lost.
    next_pos: [Option<u64>; 2],
    /// Open before the capture saw it begin.
    joined_midway: bool,
    /// Where its last call was counted in the window (see `L7Window::add`).
    window_place: usize,
    /// A byte stream (not datagrams).
    stream: bool,
    /// Its client pipelines (made a request before the last was answered,
    /// in first-in first-out order): it is copied whole from its next call
    /// on, whatever its protocol's budget. One read or write carries
    /// several messages there, and the heads after the first would lie in
    /// bytes not copied. Lost, they are a region of messages whose count
    /// nobody knows, which costs calls their outcomes and pairing
    /// (measured: an open-loop HTTP client at 100k requests/s reading
    /// several responses at once, 1.3-2.8% of its calls).
    pipelined: bool,
}

impl L7Conn {
    /// Wish `control` for the socket: a change is queued in `controls` for
    /// the kernel. (A TLS connection's plaintext has wishes of its own,
    /// under the socket's cookie with the TLS bit.)
    fn wish(&mut self, control: SocketControl, controls: &mut HashMap<u64, SocketControl>) {
        if control != self.control {
            self.control = control;
            controls.insert(self.sock, control);
        }
    }
}

pub struct Layer7 {
    registry: Arc<Registry>,
    worker: ProtocolWorker,
    stitcher: Stitcher,
    window: L7Window,
    conns: HashMap<u64, L7Conn>,
    capture_bytes: std::collections::BTreeMap<String, u32>,
    payload_bytes: u32,
    /// Sockets whose wishes changed since the last [`Layer7::take_controls`].
    controls: HashMap<u64, SocketControl>,
    /// Holes in connections' streams (records the ring buffer lost).
    stream_gaps: u64,
    /// Records that came after a newer record of their stream (from the
    /// other CPUs' ring, past the reader's grace): dropped, their bytes
    /// already reported as a hole.
    late_records: u64,
    /// Connections a plugin claimed whose beginning the capture missed.
    midway: u64,
    /// Streams seen pipelining (see `L7Conn::pipelined`).
    pipelined: u64,
    closing: Vec<u64>,
    parsed: Vec<Parsed>,
    events: Vec<ConnEvent>,
    calls: Vec<Call>,
    _watcher: Option<PluginDirWatcher>,
}

impl Layer7 {
    /// Load the built-in plugins (and those of the plugin directory,
    /// hot-reloaded) with their options. A built-in that rejects its
    /// options is an error (the config is wrong).
    pub fn new(config: Layer7Config<'_>) -> Result<Self> {
        let Layer7Config { include, plugin_dir, options, capture_bytes, payload_bytes, max_keys, limits, cache_dir } =
            config;
        let runtime = Runtime::new(limits, cache_dir)?;
        let configured: Vec<String> = options.keys().cloned().collect();
        let registry = Registry::new(runtime, options);
        registry.load_builtins();
        if let Some((name, err)) = registry.builtin_errors().into_iter().find(|(name, _)| configured.contains(name)) {
            bail!("Wirelens.PluginOptions.{name}: {err}");
        }
        let watcher = plugin_dir.map(|d| PluginDirWatcher::start(registry.clone(), d)).transpose()?;
        warn_unserved("Common.IncludeProtocols", include, &registry);
        warn_unserved("Wirelens.CaptureBytes", capture_bytes.keys(), &registry);
        let include = (!include.is_empty()).then(|| include.iter().map(|p| p.to_lowercase()).collect());
        let worker = ProtocolWorker::new(registry.clone(), WorkerConfig { include, ..WorkerConfig::default() });
        Ok(Self {
            registry,
            worker,
            stitcher: Stitcher::new(MAX_PENDING, MAX_PENDING_TOTAL, REQUEST_TIMEOUT_NS),
            window: L7Window::new(max_keys),
            conns: HashMap::default(),
            capture_bytes,
            payload_bytes,
            controls: HashMap::default(),
            stream_gaps: 0,
            late_records: 0,
            midway: 0,
            pipelined: 0,
            closing: Vec::new(),
            parsed: Vec::new(),
            events: Vec::new(),
            calls: Vec::new(),
            _watcher: watcher,
        })
    }

    /// A data event of a kept connection.
    pub fn on_data(&mut self, conn: &Conn, ev: &Event, payload: &[u8]) {
        let remote = if ev.remote.1 != 0 { ev.remote } else { conn.remote };
        // A server's calls aggregate per client address, not per client
        // connection (its ephemeral port would make a key per connection).
        let key_remote = if conn.role == Role::Server { (remote.0, 0) } else { remote };
        let l7 = self.conns.entry(conn.id).or_insert_with(|| L7Conn {
            at: Endpoint::new(conn.key.proc, conn.role, key_remote, conn.key.is_tls()),
            sock: conn.key.sock,
            role: conn.role,
            control: SocketControl::default(),
            pending: Pending::default(),
            next_pos: [None; 2],
            joined_midway: conn.joined_midway,
            window_place: 0,
            stream: ev.transport == Transport::Stream,
            pipelined: false,
        });
        let chunk = ChunkIn {
            conn: conn.id,
            direction: ev.direction.into(),
            role: WireRole::from(conn.role),
            // When the socket took or gave the bytes.
            timestamp_ns: ev.ts,
            data: payload,
            real_len: ev.real_len,
            port_hint: if conn.role == Role::Server { conn.local.1 } else { remote.1 },
            datagram: ev.transport == Transport::Datagram,
            stream_end: ev.pos + ev.real_len,
        };
        // Records the ring buffer lost (it was full) leave a hole in the
        // stream: the plugin is told those bytes are missing, as it is of
        // bytes not copied, so it keeps the calls around them (a lost
        // continuation of a long call, or whole calls).
        if ev.transport == Transport::Stream {
            let d = usize::from(ev.direction == Direction::Ingress);
            if l7.next_pos[d].is_some_and(|at| ev.pos < at) {
                self.late_records += 1;
                return;
            }
            if let Some(expected) = l7.next_pos[d].filter(|&at| ev.pos > at) {
                self.stream_gaps += 1;
                self.worker.push(ChunkIn { data: &[], real_len: ev.pos - expected, stream_end: ev.pos, ..chunk });
            }
            l7.next_pos[d] = Some(l7.next_pos[d].unwrap_or(0).max(chunk.stream_end));
        }
        self.worker.push(chunk);
    }

    /// Sockets whose wishes changed, by cookie, for the kernel.
    pub fn take_controls(&mut self, out: &mut Vec<(u64, SocketControl)>) {
        out.extend(self.controls.drain());
    }

    /// What the plugins learnt about a connection, for the kernel.
    fn learn(&mut self, e: &ConnEvent) {
        let (conn, budget) = match e {
            ConnEvent::Detected { conn, protocol } => (*conn, Some(self.budget(protocol))),
            ConnEvent::NoProtocol { conn } | ConnEvent::Dropped { conn, .. } | ConnEvent::Skip { conn, .. } => {
                (*conn, None)
            }
        };
        let Some(l7) = self.conns.get_mut(&conn) else { return };
        if matches!(e, ConnEvent::Detected { .. }) && l7.joined_midway {
            self.midway += 1;
        }
        let mut control = l7.control;
        match e {
            ConnEvent::Detected { .. } if l7.pipelined => control.budget = [0, 0],
            ConnEvent::Detected { .. } => control.budget = by_direction(budget.unwrap_or_default(), l7.role),
            // Nothing parses it any more: counted in the kernel.
            ConnEvent::NoProtocol { .. } | ConnEvent::Dropped { .. } => control.mode = Mode::L4,
            ConnEvent::Skip { direction, until, .. } => {
                let d = usize::from(*direction == WireDirection::Ingress);
                control.skip_until[d] = control.skip_until[d].max(*until);
            }
        }
        l7.wish(control, &mut self.controls);
    }

    /// (requests, responses) bytes copied per call for a protocol: the
    /// config's figure, else the plugin's, capped by the capture size (0:
    /// the capture size).
    fn budget(&self, protocol: &str) -> (u32, u32) {
        let plugin = self.registry.catalog().get(protocol).and_then(|p| p.meta.capture_bytes);
        let (req, resp) = match self.capture_bytes.get(protocol) {
            Some(&n) => (n, n),
            None => plugin.unwrap_or((0, 0)),
        };
        let cap = |n: u32| if n == 0 || n >= self.payload_bytes { 0 } else { n };
        (cap(req), cap(resp))
    }

    /// The connection closed (or expired).
    pub fn on_close(&mut self, conn_id: u64) {
        self.worker.close(conn_id);
        self.closing.push(conn_id);
    }

    /// Parse what is queued and stitch it into the window.
    pub fn poll(&mut self) {
        self.worker.poll(&mut self.parsed, &mut self.events);
        // A plugin's messages come in runs of one connection (a chunk's
        // worth, a pipeline's): one lookup per run, not per message.
        let mut messages = self.parsed.drain(..).peekable();
        while let Some(first) = messages.next() {
            let conn = first.conn;
            let Some(c) = self.conns.get_mut(&conn) else {
                while messages.next_if(|m| m.conn == conn).is_some() {}
                continue;
            };
            for m in std::iter::once(first).chain(std::iter::from_fn(|| messages.next_if(|m| m.conn == conn))) {
                let pipelining = self.stitcher.add(&mut c.pending, m, &mut self.calls);
                if pipelining && c.stream && !c.pipelined {
                    c.pipelined = true;
                    self.pipelined += 1;
                    c.wish(SocketControl { budget: [0, 0], ..c.control }, &mut self.controls);
                }
            }
            aggregate(&mut self.window, c.at, &mut c.window_place, &mut self.calls);
        }
        drop(messages);
        let events = std::mem::take(&mut self.events);
        for e in &events {
            if let ConnEvent::Dropped { conn, protocol, reason } = e {
                tracing::debug!(conn, %protocol, "layer 7 dropped: {reason}");
            }
            self.learn(e);
        }
        self.events = events;
        self.events.clear();
        for id in std::mem::take(&mut self.closing) {
            if let Some(mut c) = self.conns.remove(&id) {
                self.stitcher.close(c.pending, &mut self.calls);
                aggregate(&mut self.window, c.at, &mut c.window_place, &mut self.calls);
            }
        }
    }

    pub fn flush(&mut self, time: u64, procs: &ProcessCache) -> Vec<Record> {
        self.poll();
        let now = crate::clock::monotonic_ns();
        for c in self.conns.values_mut() {
            self.stitcher.expire(&mut c.pending, now, &mut self.calls);
            aggregate(&mut self.window, c.at, &mut c.window_place, &mut self.calls);
        }
        self.window.flush(time, procs)
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// CPU time spent inside plugin calls so far.
    pub fn plugin_cpu_ns(&self) -> u64 {
        self.worker.stats().plugin_cpu_ns
    }

    pub fn health(&self, r: &mut Record) {
        let catalog = self.registry.catalog();
        let quarantined = catalog.active.iter().filter(|p| p.quarantined_until().is_some()).count();
        let s = self.worker.stats();
        r.push("plugin_failures", s.plugin_failures);
        r.push("plugins_quarantined", quarantined);
        r.push("l7_connections", self.worker.connections());
        r.push("l7_messages", s.messages);
        r.push("l7_plugin_cpu_ns", s.plugin_cpu_ns);
        r.push("l7_plugin_calls", s.calls);
        r.push("l7_detect_calls", s.detect_calls);
        r.push("l7_no_protocol", s.no_protocol);
        r.push("l7_dropped_connections", s.dropped);
        r.push("l7_orphan_responses", self.stitcher.orphan_responses);
        r.push("l7_pending_evicted", self.stitcher.pending_evicted);
        r.push("l7_stream_gaps", self.stream_gaps);
        r.push("l7_late_records", self.late_records);
        r.push("l7_connections_midway", self.midway);
        r.push("l7_pipelined_connections", self.pipelined);
        r.push("l7_overflow", self.window.overflow);
    }
}

/// Count a connection's completed calls.
fn aggregate(window: &mut L7Window, at: Endpoint, place: &mut usize, calls: &mut Vec<Call>) {
    for call in calls.drain(..) {
        window.add(at, call, place);
    }
}

/// A protocol's (requests, responses) budget as [egress, ingress] for a
/// process in `role` (a client sends requests; a server receives them);
/// the larger of the two either way when the role is unknown.
fn by_direction((request, response): (u32, u32), role: Role) -> [u32; 2] {
    let either = if request == 0 || response == 0 { 0 } else { request.max(response) };
    match role {
        Role::Client => [request, response],
        Role::Server => [response, request],
        Role::Unknown => [either, either],
    }
}

/// `IncludeProtocols` names that no loaded plugin serves: likely typos
/// (a plugin of that name added to the plugin directory later still counts).
fn warn_unserved<'a>(key: &str, names: impl IntoIterator<Item = &'a String>, registry: &Registry) {
    let catalog = registry.catalog();
    let served: Vec<&str> = catalog.active.iter().map(|p| &*p.meta.name).collect();
    for name in names {
        let lower = name.to_lowercase();
        if served.contains(&lower.as_str()) {
            continue;
        }
        let hint =
            closest(&lower, served.iter().copied()).map(|n| format!(": did you mean `{n}`?")).unwrap_or_default();
        tracing::warn!(
            "{key} names `{name}`, which no loaded plugin serves{hint} \
             (a plugin of that name added to the plugin directory is used)"
        );
    }
}
