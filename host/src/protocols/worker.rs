//! Per-thread dispatch of captured chunks to plugins.
//!
//! A connection is offered to the active plugins (those allowed by
//! `IncludeProtocols`, port-hinted ones first: default ports, and ports
//! learnt from earlier claims) until one claims it; from
//! then on its chunks go to that plugin's instance only, in batches (one
//! component call per batch, bytes copied in once). Each worker owns one
//! instance per plugin version: a connection stays on the version it was
//! detected with until it closes, so a hot reload never cuts a parse short,
//! and new connections use the newest version.

use crate::fast_hash::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use super::bindings::{Batch, Chunks, Direction, Role};
use super::field_sets::{FieldSet, FieldSets};
use super::plugin::LoadedPlugin;
use super::sandbox::{Failure, Sandbox};
use super::wire::{
    self, MessageKind, CHUNK_INGRESS, CHUNK_TICK, MSG_HAS_PAIR_ID, MSG_INGRESS, MSG_SUCCESS, MSG_UNSEEN,
};
use super::Registry;

/// How a worker detects and batches.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Protocols allowed (`Common.IncludeProtocols`, lower case); `None`: all.
    pub include: Option<Vec<String>>,
    /// Lowest detection confidence that claims a connection.
    pub detect_threshold: u8,
    /// Chunks with data offered to detection before a connection is left to
    /// layer 4 only (datagrams: each is judged alone; streams: their first
    /// bytes are judged as they accumulate, so reads of any size detect).
    pub detect_attempts: u32,
    /// How many first bytes of each direction detection looks at.
    pub detect_bytes: usize,
    /// Bytes of the chunks seen while detecting kept per connection, to be
    /// parsed once a plugin claims it (beyond: their sizes only, which the
    /// plugin takes as lost bytes).
    pub detect_hold_bytes: usize,
    /// How often idle plugins are told the time (contract 1.1: they end
    /// waits for bytes that were lost).
    pub tick_every: std::time::Duration,
    /// A plugin's queued chunks are parsed when this many are waiting
    /// (a call costs about 25,000 instructions whatever it carries: 400
    /// per event at 64 chunks, a seventh of redis's plugin time)...
    pub batch_chunks: usize,
    /// ... or this many bytes.
    pub batch_bytes: usize,
    /// Most connections tracked; beyond it new ones are counted and skipped.
    pub max_connections: usize,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            include: None,
            detect_threshold: 50,
            detect_attempts: 32,
            detect_bytes: 512,
            detect_hold_bytes: 16 << 10,
            tick_every: std::time::Duration::from_millis(500),
            batch_chunks: 256,
            batch_bytes: 256 << 10,
            max_connections: 65_536,
        }
    }
}

/// One captured call's bytes on one connection.
#[derive(Clone, Copy, Debug)]
pub struct ChunkIn<'a> {
    pub conn: u64,
    pub direction: Direction,
    pub role: Role,
    pub timestamp_ns: u64,
    /// Captured bytes.
    pub data: &'a [u8],
    /// Bytes the call moved (>= `data.len()`).
    pub real_len: u64,
    /// The remote (or, for servers, local) port: a detection hint.
    pub port_hint: u16,
    /// One datagram (UDP): a message never continues into the next chunk.
    pub datagram: bool,
    /// Where this chunk's bytes end in the connection's stream in its
    /// direction: what the plugin's skips are counted from (see
    /// [`ConnEvent::Skip`]).
    pub stream_end: u64,
}

/// A message a plugin found.
#[derive(Clone, Debug)]
pub struct Parsed {
    pub conn: u64,
    pub kind: MessageKind,
    pub direction: Direction,
    pub start_ns: u64,
    pub end_ns: u64,
    pub size: u64,
    pub pair_id: Option<u64>,
    pub success: bool,
    /// Inferred by the plugin, its bytes lost (see the contract's `unseen`
    /// flag): a response's outcome is unknown.
    pub unseen: bool,
    /// The plugin and the message's fields, shared by every message with
    /// the same ones (see [`FieldSets`]).
    pub fields: Rc<FieldSet>,
}

impl Parsed {
    /// A field by name.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name)
    }

    /// The plugin that parsed it.
    pub fn plugin(&self) -> &Arc<LoadedPlugin> {
        &self.fields.plugin
    }
}

/// What happened to a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnEvent {
    /// A plugin claimed the connection.
    Detected { conn: u64, protocol: Arc<str> },
    /// No plugin claimed it: layer 4 only.
    NoProtocol { conn: u64 },
    /// Its plugin gave up on it or failed: layer 4 only from now on.
    Dropped { conn: u64, protocol: Arc<str>, reason: String },
    /// Its plugin will not look at the bytes of `direction` before stream
    /// position `until` (a body of known length): they need not be copied.
    Skip { conn: u64, direction: Direction, until: u64 },
}

/// Counters of one worker.
#[derive(Clone, Debug, Default)]
pub struct WorkerStats {
    pub chunks: u64,
    pub calls: u64,
    pub messages: u64,
    pub detected: u64,
    /// Plugins asked to detect a connection (each a call into a sandbox).
    pub detect_calls: u64,
    pub no_protocol: u64,
    pub dropped: u64,
    pub plugin_failures: u64,
    /// Connections not tracked because `max_connections` was reached.
    pub over_capacity: u64,
    /// CPU time of the calling thread inside plugin calls (feed and close,
    /// with their arguments' copy in and results' copy out): the daemon's
    /// own path is the rest of its CPU time.
    pub plugin_cpu_ns: u64,
}

enum Binding {
    Detecting(Box<Detecting>),
    Bound { plugin_id: u64 },
    Unparsed,
}

/// A connection no plugin has claimed yet: its first bytes per direction
/// (reads of any size add up: a server that reads a length prefix a byte
/// at a time is detected as if it read the message at once), and its chunks
/// so far, parsed by the plugin that claims it.
#[derive(Default)]
struct Detecting {
    /// Contiguous first bytes of each direction (egress, ingress).
    prefix: [Vec<u8>; 2],
    /// A direction's prefix stopped growing: bytes were missing, or it is
    /// as long as detection looks.
    prefix_done: [bool; 2],
    /// Chunks seen so far, in order.
    held: Vec<HeldChunk>,
    held_bytes: usize,
    /// Chunks with data seen.
    attempts: u32,
}

impl Detecting {
    /// Keep a chunk for the plugin that will claim the connection: its
    /// bytes while they fit in `limit`, past it its size only (lost bytes
    /// to the plugin).
    fn hold(&mut self, chunk: &ChunkIn<'_>, limit: usize) {
        let keep = self.held_bytes + chunk.data.len() <= limit;
        self.held.push(HeldChunk {
            direction: chunk.direction,
            role: chunk.role,
            timestamp_ns: chunk.timestamp_ns,
            data: if keep { chunk.data.to_vec() } else { Vec::new() },
            real_len: chunk.real_len.max(chunk.data.len() as u64),
            datagram: chunk.datagram,
            stream_end: chunk.stream_end,
        });
        if keep {
            self.held_bytes += chunk.data.len();
        }
    }
}

/// A chunk kept while its connection is being detected.
struct HeldChunk {
    direction: Direction,
    role: Role,
    timestamp_ns: u64,
    /// Captured bytes kept (empty past the hold budget).
    data: Vec<u8>,
    real_len: u64,
    datagram: bool,
    stream_end: u64,
}

/// One plugin version's instance in this worker, and its queued work.
struct Slot {
    plugin: Arc<LoadedPlugin>,
    sandbox: Option<Sandbox>,
    chunks: Chunks,
    data: Vec<u8>,
    closing: Vec<u64>,
    bound: usize,
    /// When the plugin was last fed (or told the time).
    last_fed: Instant,
    /// Where each queued chunk ends in its connection's stream (parallel
    /// to `chunks`; 0 for clock ticks).
    ends: Vec<u64>,
}

/// Detects, batches and parses for the connections of one thread.
pub struct ProtocolWorker {
    registry: Arc<Registry>,
    config: WorkerConfig,
    conns: HashMap<u64, Binding>,
    slots: HashMap<u64, Slot>,
    parsed: Vec<Parsed>,
    events: Vec<ConnEvent>,
    stats: WorkerStats,
    fields: FieldSets,
    /// Ports learnt from claims: the plugin that last claimed a connection
    /// on each port (a server on a port no plugin names, like redis on
    /// 16399, is then asked for first, as on a default port).
    learnt_ports: HashMap<u16, u64>,
}

impl ProtocolWorker {
    /// Most ports remembered (forgotten wholesale past it).
    const MAX_LEARNT_PORTS: usize = 4096;

    pub fn new(registry: Arc<Registry>, config: WorkerConfig) -> Self {
        Self {
            registry,
            config,
            conns: HashMap::default(),
            slots: HashMap::default(),
            parsed: Vec::new(),
            events: Vec::new(),
            stats: WorkerStats::default(),
            fields: FieldSets::default(),
            learnt_ports: HashMap::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> &WorkerStats {
        &self.stats
    }

    /// Connections tracked.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Offer one chunk. Parsing may happen now (a full batch) or at the
    /// next [`ProtocolWorker::poll`].
    pub fn push(&mut self, chunk: ChunkIn<'_>) {
        self.stats.chunks += 1;
        // One lookup for a bound connection (nearly every chunk).
        match self.conns.get(&chunk.conn) {
            Some(Binding::Bound { plugin_id }) => return self.enqueue(*plugin_id, &chunk),
            Some(Binding::Unparsed) => return,
            Some(Binding::Detecting(_)) => {}
            None => {
                if self.conns.len() >= self.config.max_connections {
                    self.stats.over_capacity += 1;
                    return;
                }
                self.conns.insert(chunk.conn, Binding::Detecting(Box::default()));
            }
        }
        let Some(Binding::Detecting(detecting)) = self.conns.get_mut(&chunk.conn) else { return };
        if chunk.data.is_empty() {
            detecting.hold(&chunk, self.config.detect_hold_bytes);
            return;
        }
        detecting.attempts += 1;
        // What detection looks at: a datagram alone; a stream's first bytes
        // (taken out of the connection while the plugins look: no copy).
        let d = usize::from(chunk.direction == Direction::Ingress);
        let mut prefix = Vec::new();
        let judged: &[u8] = if chunk.datagram {
            &chunk.data[..chunk.data.len().min(self.config.detect_bytes)]
        } else if !detecting.prefix_done[d] {
            prefix = std::mem::take(&mut detecting.prefix[d]);
            let room = self.config.detect_bytes - prefix.len();
            prefix.extend_from_slice(&chunk.data[..chunk.data.len().min(room)]);
            if prefix.len() >= self.config.detect_bytes || chunk.real_len > chunk.data.len() as u64 {
                detecting.prefix_done[d] = true;
            }
            &prefix
        } else {
            &[] // this direction's first bytes were judged already
        };
        let attempts = detecting.attempts;
        let exhausted = attempts >= self.config.detect_attempts
            || (detecting.prefix_done[0] && detecting.prefix_done[1])
            || (chunk.datagram && attempts >= 4);
        let claimed = if judged.is_empty() { None } else { self.detect(&chunk, judged) };
        let Some(plugin_id) = claimed else {
            let Some(Binding::Detecting(detecting)) = self.conns.get_mut(&chunk.conn) else { return };
            if !prefix.is_empty() {
                detecting.prefix[d] = prefix;
            }
            // Kept for the plugin that will claim the connection.
            detecting.hold(&chunk, self.config.detect_hold_bytes);
            if exhausted {
                self.stats.no_protocol += 1;
                self.events.push(ConnEvent::NoProtocol { conn: chunk.conn });
                self.conns.insert(chunk.conn, Binding::Unparsed);
            }
            return;
        };
        let Some(Binding::Detecting(detecting)) = self.conns.insert(chunk.conn, Binding::Bound { plugin_id }) else {
            unreachable!("detecting above")
        };
        let slot = self.slots.get_mut(&plugin_id).expect("detect returns a live slot");
        slot.bound += 1;
        self.stats.detected += 1;
        self.events.push(ConnEvent::Detected { conn: chunk.conn, protocol: slot.plugin.meta.name.clone() });
        // The chunks held so far, then this one (not held: most connections
        // are claimed by their first chunk).
        for held in &detecting.held {
            let replay = ChunkIn {
                conn: chunk.conn,
                direction: held.direction,
                role: held.role,
                timestamp_ns: held.timestamp_ns,
                data: &held.data,
                real_len: held.real_len,
                port_hint: chunk.port_hint,
                datagram: held.datagram,
                stream_end: held.stream_end,
            };
            self.enqueue(plugin_id, &replay);
        }
        self.enqueue(plugin_id, &chunk);
    }

    /// The connection closed: finish its messages and forget it.
    pub fn close(&mut self, conn: u64) {
        if let Some(Binding::Bound { plugin_id }) = self.conns.remove(&conn) {
            if let Some(slot) = self.slots.get_mut(&plugin_id) {
                slot.bound = slot.bound.saturating_sub(1);
                slot.closing.push(conn);
            }
        }
    }

    /// Parse everything queued and hand over what was found.
    pub fn poll(&mut self, parsed: &mut Vec<Parsed>, events: &mut Vec<ConnEvent>) {
        // Plugins of contract 1.1 with connections are told the time now
        // and then, so waits for bytes that were lost end even on a quiet
        // connection.
        let now = Instant::now();
        for slot in self.slots.values_mut() {
            if slot.bound > 0
                && slot.plugin.pre.takes_ticks()
                && now.duration_since(slot.last_fed) >= self.config.tick_every
            {
                slot.chunks.push_tick(crate::clock::monotonic_ns());
                slot.ends.push(0);
            }
        }
        let ids: Vec<u64> = self.slots.keys().copied().collect();
        for id in ids {
            self.flush_slot(id);
        }
        // Instances of replaced or removed versions go once their last
        // connection is done.
        let catalog = self.registry.catalog();
        self.slots.retain(|id, slot| {
            slot.bound > 0 || !slot.chunks.is_empty() || catalog.active.iter().any(|p| p.meta.id == *id)
        });
        // The caller's lists are usually empty (drained since the last
        // poll): the lists swap, with their room, where appending copied
        // every message (a tenth of a pipelined message's host work).
        hand_over(parsed, &mut self.parsed);
        hand_over(events, &mut self.events);
    }

    /// The plugin that claims a connection whose first bytes in `chunk`'s
    /// direction are `bytes`, if any: the most confident at or above the
    /// threshold. Plugins whose default ports include the connection's
    /// (or that claimed the last connection on its port) are asked first,
    /// and one of them that claims it ends the search: port and bytes
    /// agree, and each plugin asked is a call into its sandbox (about 3,600
    /// instructions: asking all eleven built-in plugins cost a new DNS
    /// socket about 40,000, as much as parsing 4 or 5 queries). Otherwise a
    /// claim of 95 or more ends it.
    fn detect(&mut self, chunk: &ChunkIn<'_>, bytes: &[u8]) -> Option<u64> {
        let catalog = self.registry.catalog();
        let now = Instant::now();
        let learnt = self.learnt_ports.get(&chunk.port_hint).copied();
        let mut best: Option<(u8, u64)> = None;
        // Hinted plugins first. (No list is built and sorted: this runs for
        // every new connection.)
        'passes: for hinted in [true, false] {
            // A claim among the hinted plugins is final.
            if best.is_some() {
                break;
            }
            for plugin in catalog.active.iter() {
                let by_port = plugin.meta.default_ports.contains(&chunk.port_hint) || learnt == Some(plugin.meta.id);
                if by_port != hinted
                    || self.config.include.as_ref().is_some_and(|inc| !inc.iter().any(|n| **n == *plugin.meta.name))
                    || !plugin.is_available(now)
                {
                    continue;
                }
                let id = plugin.meta.id;
                self.stats.detect_calls += 1;
                let Some(sandbox) = self.sandbox(plugin) else { continue };
                match sandbox.detect(chunk.direction, chunk.role, bytes) {
                    Ok(confidence) => {
                        if confidence >= self.config.detect_threshold && best.is_none_or(|(c, _)| confidence > c) {
                            best = Some((confidence, id));
                            if confidence >= 95 {
                                break 'passes;
                            }
                        }
                    }
                    Err(failure) => self.fail_slot(id, failure, &[]),
                }
            }
        }
        let (_, id) = best?;
        if chunk.port_hint != 0 && learnt != Some(id) {
            if self.learnt_ports.len() >= Self::MAX_LEARNT_PORTS {
                self.learnt_ports.clear();
            }
            self.learnt_ports.insert(chunk.port_hint, id);
        }
        Some(id)
    }

    /// The slot's instance, created if needed; `None` if that failed.
    fn sandbox(&mut self, plugin: &Arc<LoadedPlugin>) -> Option<&mut Sandbox> {
        let id = plugin.meta.id;
        let slot = self.slots.entry(id).or_insert_with(|| Slot {
            plugin: plugin.clone(),
            sandbox: None,
            chunks: Chunks::new(),
            data: Vec::new(),
            closing: Vec::new(),
            bound: 0,
            last_fed: Instant::now(),
            ends: Vec::new(),
        });
        if slot.sandbox.is_none() {
            let runtime = self.registry.runtime();
            let label: Arc<str> = Arc::from(plugin.meta.label());
            let created = Sandbox::instantiate(runtime, &plugin.pre, label).and_then(|mut s| {
                s.set_field_count(plugin.meta.field_names.len());
                s.configure(self.registry.options_for(&plugin.meta.name)).map(|()| s)
            });
            match created {
                Ok(s) => slot.sandbox = Some(s),
                Err(failure) => {
                    self.fail_slot(id, failure, &[]);
                    return None;
                }
            }
        }
        self.slots.get_mut(&id).and_then(|s| s.sandbox.as_mut())
    }

    fn enqueue(&mut self, plugin_id: u64, chunk: &ChunkIn<'_>) {
        let Some(slot) = self.slots.get_mut(&plugin_id) else { return };
        slot.chunks.push(
            chunk.conn,
            chunk.direction,
            chunk.role,
            chunk.timestamp_ns,
            chunk.data.len() as u32,
            chunk.real_len.max(chunk.data.len() as u64),
            chunk.datagram,
        );
        slot.data.extend_from_slice(chunk.data);
        slot.ends.push(chunk.stream_end);
        if slot.chunks.len() >= self.config.batch_chunks || slot.data.len() >= self.config.batch_bytes {
            self.flush_slot(plugin_id);
        }
    }

    /// Feed the slot's queued chunks, then close its closed connections.
    fn flush_slot(&mut self, id: u64) {
        let Some(slot) = self.slots.get_mut(&id) else { return };
        if slot.chunks.is_empty() && slot.closing.is_empty() {
            return;
        }
        let chunks = std::mem::take(&mut slot.chunks);
        let data = std::mem::take(&mut slot.data);
        let closing = std::mem::take(&mut slot.closing);
        let mut ends = std::mem::take(&mut slot.ends);
        let plugin = slot.plugin.clone();
        if self.sandbox(&plugin).is_none() {
            return;
        }
        let mut result = Ok(());
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.last_fed = Instant::now();
        }
        if !chunks.is_empty() {
            self.stats.calls += 1;
            plugin.stats.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let sandbox = self.slots.get_mut(&id).and_then(|s| s.sandbox.as_mut()).expect("created above");
            let fed = (&chunks, ends.as_slice());
            // (Two reads of the thread's CPU clock, a system call each, per
            // call of up to `batch_chunks` chunks.)
            let cpu_before = crate::clock::thread_cpu_ns();
            let batch = sandbox.feed(&chunks, &data);
            self.stats.plugin_cpu_ns += crate::clock::thread_cpu_ns().saturating_sub(cpu_before);
            result = batch.map(|batch| self.take_batch(&plugin, batch, Some(fed)));
        }
        if result.is_ok() && !closing.is_empty() {
            let Some(sandbox) = self.slots.get_mut(&id).and_then(|s| s.sandbox.as_mut()) else { return };
            let cpu_before = crate::clock::thread_cpu_ns();
            let batch = sandbox.close(&closing);
            self.stats.plugin_cpu_ns += crate::clock::thread_cpu_ns().saturating_sub(cpu_before);
            result = batch.map(|batch| self.take_batch(&plugin, batch, None));
        }
        if let Err(failure) = result {
            // Connections closed since their chunks were queued are no
            // longer bound, but lost their messages all the same.
            let mut closed: Vec<u64> = chunks.conn.iter().chain(closing.iter()).copied().collect();
            closed.sort_unstable();
            closed.dedup();
            closed.retain(|c| !self.conns.contains_key(c));
            self.fail_slot(id, failure, &closed);
        }
        // Give the buffers back to avoid reallocating each batch.
        if let Some(slot) = self.slots.get_mut(&id) {
            let (mut chunks, mut data) = (chunks, data);
            chunks.clear();
            data.clear();
            ends.clear();
            if slot.chunks.is_empty() {
                slot.chunks = chunks;
                slot.data = data;
                slot.ends = ends;
            }
        }
    }

    /// Turn a batch into [`Parsed`] messages and connection events; `fed`:
    /// the chunks fed and where each ended in its stream (skips are counted
    /// from a connection's last chunk in the call).
    fn take_batch(&mut self, plugin: &Arc<LoadedPlugin>, batch: Batch, fed: Option<(&Chunks, &[u64])>) {
        self.stats.messages += batch.conn.len() as u64;
        // Checked by the sandbox: the arena is UTF-8 and spans fall on
        // character boundaries (not validated again here: a set's texts
        // are made of it only when the set is new).
        let arena = batch.arena.as_slice();
        let mut field = 0usize;
        for i in 0..batch.conn.len() {
            let count = usize::from(batch.field_count[i]);
            let span = field..field + count;
            let flags = batch.flags[i];
            let kind = wire::kind(flags).unwrap_or(MessageKind::Oneway);
            let fields = self.fields.intern(
                kind,
                plugin,
                batch.field_key.get(span.clone()).unwrap_or_default(),
                batch.field_offset.get(span.clone()).unwrap_or_default(),
                batch.field_len.get(span).unwrap_or_default(),
                arena,
            );
            field += count;
            self.parsed.push(Parsed {
                conn: batch.conn[i],
                kind,
                direction: if flags & MSG_INGRESS != 0 { Direction::Ingress } else { Direction::Egress },
                start_ns: batch.start_ns[i],
                end_ns: batch.end_ns[i],
                size: batch.size[i],
                pair_id: (flags & MSG_HAS_PAIR_ID != 0).then_some(batch.pair_id[i]),
                success: flags & MSG_SUCCESS != 0,
                unseen: flags & MSG_UNSEEN != 0,
                fields,
            });
        }
        if let Some((chunks, ends)) = fed {
            for i in 0..batch.skip_conn.len().min(batch.skip_flags.len()).min(batch.skip_bytes.len()) {
                let (conn, ingress) = (batch.skip_conn[i], batch.skip_flags[i] & 1 != 0);
                let last = (0..chunks.conn.len().min(ends.len())).rev().find(|&c| {
                    let flags = chunks.flags[c];
                    chunks.conn[c] == conn && flags & CHUNK_TICK == 0 && (flags & CHUNK_INGRESS != 0) == ingress
                });
                if let Some(c) = last.filter(|&c| ends[c] > 0) {
                    let direction = if ingress { Direction::Ingress } else { Direction::Egress };
                    self.events.push(ConnEvent::Skip { conn, direction, until: ends[c] + batch.skip_bytes[i] });
                }
            }
        }
        for e in batch.errors {
            if let Some(Binding::Bound { plugin_id }) = self.conns.get(&e.conn) {
                if let Some(slot) = self.slots.get_mut(plugin_id) {
                    slot.bound = slot.bound.saturating_sub(1);
                }
                self.conns.insert(e.conn, Binding::Unparsed);
            }
            self.stats.dropped += 1;
            tracing::debug!(plugin = %plugin.meta.label(), conn = e.conn, "connection left to layer 4: {}", e.reason);
            self.events.push(ConnEvent::Dropped { conn: e.conn, protocol: plugin.meta.name.clone(), reason: e.reason });
        }
    }

    /// The slot's instance failed: count it (maybe quarantine the plugin),
    /// drop the instance, and leave its connections (those bound to it, and
    /// `closed` ones whose last chunks were in the failed call) to layer 4.
    fn fail_slot(&mut self, id: u64, failure: Failure, closed: &[u64]) {
        let Some(slot) = self.slots.get_mut(&id) else { return };
        let plugin = slot.plugin.clone();
        slot.sandbox = None;
        slot.chunks.clear();
        slot.data.clear();
        slot.closing.clear();
        slot.ends.clear();
        slot.bound = 0;
        self.stats.plugin_failures += 1;
        let limits = self.registry.runtime().limits().clone();
        let quarantine = plugin.record_failure(&failure, &limits);
        tracing::error!(plugin = %plugin.meta.label(), source = %plugin.meta.source, "plugin call failed: {failure}");
        if let Some(span) = quarantine {
            tracing::error!(plugin = %plugin.meta.label(), "plugin quarantined for {span:?} after repeated failures");
        }
        let reason = format!("plugin {} failed: {failure}", plugin.meta.label());
        for (conn, binding) in self.conns.iter_mut() {
            if matches!(binding, Binding::Bound { plugin_id } if *plugin_id == id) {
                *binding = Binding::Unparsed;
                self.stats.dropped += 1;
                self.events.push(ConnEvent::Dropped {
                    conn: *conn,
                    protocol: plugin.meta.name.clone(),
                    reason: reason.clone(),
                });
            }
        }
        for &conn in closed {
            self.stats.dropped += 1;
            self.events.push(ConnEvent::Dropped { conn, protocol: plugin.meta.name.clone(), reason: reason.clone() });
        }
    }
}

/// Move everything in `from` to the end of `to`.
fn hand_over<T>(to: &mut Vec<T>, from: &mut Vec<T>) {
    if to.is_empty() {
        std::mem::swap(to, from);
    } else {
        to.append(from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::{Runtime, SandboxLimits};

    fn worker() -> ProtocolWorker {
        let registry = Registry::new(Runtime::new(SandboxLimits::default(), None).unwrap(), Default::default());
        registry.load_builtins();
        ProtocolWorker::new(registry, WorkerConfig::default())
    }

    /// Detects one first chunk: the protocol claimed and plugins asked.
    fn detect(bytes: &[u8], port: u16, datagram: bool) -> (Option<Arc<str>>, u64) {
        detect_on(&mut worker(), 1, bytes, port, datagram)
    }

    fn detect_on(
        w: &mut ProtocolWorker,
        conn: u64,
        bytes: &[u8],
        port: u16,
        datagram: bool,
    ) -> (Option<Arc<str>>, u64) {
        let asked = w.stats.detect_calls;
        w.events.clear();
        w.push(ChunkIn {
            conn,
            direction: Direction::Egress,
            role: Role::Client,
            timestamp_ns: 1,
            data: bytes,
            real_len: bytes.len() as u64,
            port_hint: port,
            datagram,
            stream_end: bytes.len() as u64,
        });
        let claimed = w.events.iter().find_map(|e| match e {
            ConnEvent::Detected { protocol, .. } => Some(protocol.clone()),
            _ => None,
        });
        (claimed, w.stats.detect_calls - asked)
    }

    /// A plugin whose default port the connection uses and that claims it
    /// is the only one asked; without the port all are, and the most
    /// confident wins; a hinted plugin that does not claim it leaves the
    /// others to be asked.
    #[test]
    fn a_hinted_claim_ends_detection() {
        let active = worker().registry.catalog().active.len() as u64;
        assert!(active >= 11, "built-in plugins: {active}");
        let query = wirelens_plugin_dns::cases::message(7, false, 0, "svc.cluster.local", 1, 0);
        // DNS claims a lone query at 80: below the 95 that ends a search.
        assert_eq!(detect(&query, 53, true), (Some("dns".into()), 1));
        assert_eq!(detect(&query, 5300, true), (Some("dns".into()), active));
        // HTTP on DNS's port: DNS says no, the rest are asked (HTTP's 95
        // ends the search, wherever it is in the order).
        let (claimed, asked) = detect(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 53, false);
        assert_eq!(claimed.as_deref(), Some("http"));
        assert!(asked >= 2, "asked {asked}");
        // Redis on its port: its 95 claim, one call.
        assert_eq!(detect(b"*1\r\n$4\r\nPING\r\n", 6379, false), (Some("redis".into()), 1));
    }

    /// A port no plugin names is learnt from a claim: the next connection
    /// on it asks that plugin first, and its claim is final; bytes it does
    /// not claim still reach the others.
    #[test]
    fn ports_are_learnt_from_claims() {
        let mut w = worker();
        let active = w.registry.catalog().active.len() as u64;
        let query = wirelens_plugin_dns::cases::message(7, false, 0, "svc.cluster.local", 1, 0);
        assert_eq!(detect_on(&mut w, 1, &query, 5300, true), (Some("dns".into()), active));
        assert_eq!(detect_on(&mut w, 2, &query, 5300, true), (Some("dns".into()), 1));
        let (claimed, asked) = detect_on(&mut w, 3, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 5300, false);
        assert_eq!(claimed.as_deref(), Some("http"));
        assert!(asked >= 2, "asked {asked}");
        // The port now names HTTP.
        assert_eq!(detect_on(&mut w, 4, b"GET /b HTTP/1.1\r\n\r\n", 5300, false), (Some("http".into()), 1));
    }
}
