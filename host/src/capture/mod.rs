//! Capture: the kernel programs (`ebpf/capture.bpf.c`, built by the build
//! script and embedded; BTF tracepoints of the socket layer), their set-up,
//! the thread that drains the ring buffer into decoded [`Event`]s
//! (`reader.rs`), what the daemon asks of sockets in the kernel, and the
//! counts of sockets counted there (layer 4 only), read by an iterator.

pub mod event;
mod reader;
mod setup;
mod tls;

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::{BtfTracePoint, Iter};
use aya::{Btf, Ebpf, EbpfLoader};
use parking_lot::Mutex;

pub use event::{
    Counts, Direction, Event, EventBatch, EventKind, Mode, ProcKey, Role, SocketControl, SocketType, Transport,
};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/capture.bpf.o"));

/// `(program, kernel tracepoint)` pairs: every send and receive on a socket,
/// TCP state changes (roles, closes), datagrams queued on sockets (peers of
/// unconnected UDP sockets), and processes born and ended (their command
/// lines). See `ebpf/capture.bpf.c`.
pub const PROGRAMS: &[(&str, &str)] = &[
    ("on_send", "sock_send_length"),
    ("on_recv", "sock_recv_length"),
    ("on_state", "inet_sock_set_state"),
    ("on_data_ready", "sk_data_ready"),
    ("on_exec", "sched_process_exec"),
    ("on_fork", "sched_process_fork"),
    ("on_exit", "sched_process_exit"),
];

/// The iterator over TCP sockets that reads (and resets) the counts of
/// those counted in the kernel, at each flush.
const COUNTS_ITERATOR: &str = "dump_tcp_counts";
/// One record of it: an event header and its counts (`struct stats_record`).
const COUNTS_RECORD: usize = std::mem::size_of::<event::RawEvent>() + std::mem::size_of::<Counts>();

/// What the kernel side filters and copies.
#[derive(Clone, Debug)]
pub struct CaptureConfig {
    /// Payload bytes copied per call (at most 8 KiB).
    pub payload_bytes: u32,
    /// Percent of connections captured (decided per connection).
    pub sampling: u32,
    /// Only these processes (`EBPF.Pid`); empty: all.
    pub pids: Vec<u32>,
    pub drop_unix: bool,
    pub drop_unknown: bool,
    /// Drop loopback peers in the kernel (part of `DropLocalConnections`;
    /// other local addresses are dropped by connection tracking).
    pub drop_loopback: bool,
    /// Ring buffer size in bytes (a power of two, multiple of the page size).
    pub ring_bytes: u32,
    /// Wake the reader when this much is pending.
    pub wakeup_bytes: u64,
    /// TCP sockets start counted in the kernel, without a record per call
    /// (`ProtocolProcess: false`: nothing needs their bytes).
    pub l4_default: bool,
    /// Read TLS plaintext at the libraries (`Wirelens.Tls`).
    pub tls: bool,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            payload_bytes: 4096,
            sampling: 100,
            pids: vec![],
            drop_unix: true,
            drop_unknown: true,
            drop_loopback: true,
            ring_bytes: 8 << 20,
            wakeup_bytes: 256 << 10,
            l4_default: false,
            tls: true,
        }
    }
}

/// Kernel and reader counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Events the kernel wrote to the ring buffer.
    pub events: u64,
    /// Events lost in the kernel (ring buffer full).
    pub lost: u64,
    /// Socket calls skipped in the kernel by pid, sampling or drop rules.
    pub filtered: u64,
    /// Events whose payload was cut to the capture size.
    pub truncated: u64,
    /// Calls counted in the kernel without a record (layer 4 only).
    pub counted: u64,
    /// Calls not copied: wholly inside bodies plugins skip.
    pub skipped: u64,
    /// Network calls of processes the filters excluded, dropped in the
    /// kernel before anything was read.
    pub denied: u64,
    /// Records the reader could not decode.
    pub malformed: u64,
    /// TLS libraries the uprobes are attached to, and those that could not
    /// be attached (logged with the reason).
    pub tls_libraries: u64,
    pub tls_libraries_failed: u64,
    /// SSL_write/SSL_read calls that moved plaintext, and of those, calls
    /// whose socket was unknown (not recorded).
    pub tls_calls: u64,
    pub tls_no_socket: u64,
    /// SSL calls in progress on the machine now (entered, not returned):
    /// while there are any, every TCP call asks whether it runs inside one.
    pub tls_calls_in_progress: u64,
}

/// Attached programs and the reader thread; dropping it detaches everything.
pub struct Capture {
    ebpf: Option<Ebpf>,
    counters: PerCpuArray<MapData, u64>,
    conn_ctl: BpfHashMap<MapData, u64, event::RawCtl>,
    /// Closes that found the ring buffer full, with their counts.
    closed_counts: BpfHashMap<MapData, u64, [u8; COUNTS_RECORD]>,
    ctl_gen: Array<MapData, u32>,
    generation: u32,
    ssl_in_flight: Array<MapData, i64>,
    procs: reader::Procs,
    /// Processes the daemon's reads of the kernel's counts described.
    seen: reader::Seen,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
    malformed: Arc<AtomicU64>,
    /// TLS libraries attached (`None`: TLS capture off).
    tls: Option<tls::TlsLibraries>,
}

impl Capture {
    /// Check the machine, load and attach the programs, and start sending
    /// events to `sink`; batches the collector is done with come back on
    /// `spare` to be refilled.
    pub fn start(config: &CaptureConfig, sink: SyncSender<EventBatch>, spare: Receiver<EventBatch>) -> Result<Self> {
        // Uprobes need CAP_SYS_ADMIN: without it, no library is tried.
        let tls = setup::prepare(config.tls)?;
        let btf = Btf::from_sys_fs().context("reading the kernel's BTF")?;
        let mut ebpf = load(config, &btf)?;
        add_pids(&mut ebpf, "allow_pids", &config.pids)?;
        for (program, tracepoint) in PROGRAMS {
            attach(&mut ebpf, program, tracepoint)?;
        }
        let mut ring = |name: &str| -> Result<RingBuf<MapData>> {
            Ok(RingBuf::try_from(ebpf.take_map(name).with_context(|| format!("{name} map"))?)?)
        };
        let rings = [ring("events_even")?, ring("events_odd")?];
        let procs: reader::Procs =
            Arc::new(Mutex::new(BpfHashMap::try_from(ebpf.take_map("procs").context("procs map")?)?));
        let counters = PerCpuArray::try_from(ebpf.take_map("counters").context("counters map")?)?;
        let conn_ctl = BpfHashMap::try_from(ebpf.take_map("conn_ctl").context("conn_ctl map")?)?;
        let closed_counts = BpfHashMap::try_from(ebpf.take_map("closed_counts").context("closed_counts map")?)?;
        let ctl_gen = Array::try_from(ebpf.take_map("ctl_gen").context("ctl_gen map")?)?;
        let ssl_in_flight = Array::try_from(ebpf.take_map("ssl_in_flight").context("ssl_in_flight map")?)?;
        let stop = Arc::new(AtomicBool::new(false));
        let malformed = Arc::new(AtomicU64::new(0));
        let reader = {
            let reader = reader::Reader {
                rings,
                procs: procs.clone(),
                sink,
                spare,
                stop: stop.clone(),
                malformed: malformed.clone(),
            };
            std::thread::Builder::new()
                .name("capture-reader".into())
                .spawn(move || reader.run())
                .context("spawning the capture reader")?
        };
        tracing::info!(programs = PROGRAMS.len(), payload_bytes = config.payload_bytes, "capture attached");
        Ok(Self {
            ebpf: Some(ebpf),
            counters,
            conn_ctl,
            closed_counts,
            ctl_gen,
            generation: 0,
            ssl_in_flight,
            procs,
            seen: reader::Seen::default(),
            stop,
            reader: Some(reader),
            malformed,
            tls: tls.then(tls::TlsLibraries::default),
        })
    }

    /// Tell sockets (by cookie) how to treat their calls from their next
    /// call on. Each entry carries the socket's whole wish (the last one
    /// written wins).
    pub fn control(&mut self, sockets: &[(u64, SocketControl)]) -> Result<()> {
        if sockets.is_empty() {
            return Ok(());
        }
        for (cookie, ctl) in sockets {
            tracing::debug!(cookie, ?ctl, generation = self.generation.wrapping_add(1), "socket control");
            self.conn_ctl.insert(cookie, event::RawCtl::from(*ctl), 0).context("writing conn_ctl")?;
        }
        // Sockets look at conn_ctl once the generation moved.
        self.generation = self.generation.wrapping_add(1);
        self.ctl_gen.set(0, self.generation, 0).context("writing ctl_gen")?;
        Ok(())
    }

    /// The counts of TCP sockets counted in the kernel since they were last
    /// read (each socket's counts are reset as they are read), and of the
    /// closes that found the ring buffer full, as events appended to `batch`.
    pub fn read_counts(&mut self, batch: &mut EventBatch) -> Result<()> {
        let ebpf = self.ebpf.as_mut().context("capture stopped")?;
        let prog: &mut Iter =
            ebpf.program_mut(COUNTS_ITERATOR).context("the counts iterator is missing")?.try_into()?;
        let link = prog.attach().context("attaching the counts iterator")?;
        let link = prog.take_link(link)?;
        let mut file = link.into_file().context("opening the counts iterator")?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).context("reading the counts iterator")?;
        // Then the closes that found the ring buffer full (taken out of the
        // map as they are read).
        let cookies: Vec<u64> = self.closed_counts.keys().filter_map(|k| k.ok()).collect();
        for cookie in cookies {
            if let Ok(record) = self.closed_counts.get(&cookie, 0) {
                bytes.extend_from_slice(&record);
            }
            let _ = self.closed_counts.remove(&cookie);
        }
        for record in bytes.chunks(COUNTS_RECORD) {
            if record.len() != COUNTS_RECORD || !batch.decode(record) {
                self.malformed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let ev = batch.events_mut().last_mut().expect("decoded");
            self.seen.describe_once(ev, &self.procs);
        }
        Ok(())
    }

    /// Attach the TLS probes to libraries that processes started mapping
    /// (new processes; `talking`, the processes using the network, again
    /// every few seconds). Nothing when TLS capture is off.
    pub fn scan_tls(&mut self, talking: impl IntoIterator<Item = u32>) {
        if let (Some(tls), Some(ebpf)) = (self.tls.as_mut(), self.ebpf.as_mut()) {
            tls.scan(ebpf, talking);
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> CaptureStats {
        let sum = |slot: u32| -> u64 { self.counters.get(&slot, 0).map(|v| v.iter().sum()).unwrap_or(0) };
        CaptureStats {
            events: sum(event::CNT_EVENTS),
            lost: sum(event::CNT_LOST),
            filtered: sum(event::CNT_FILTERED),
            truncated: sum(event::CNT_TRUNCATED),
            counted: sum(event::CNT_COUNTED),
            skipped: sum(event::CNT_SKIPPED),
            denied: sum(event::CNT_DENIED),
            malformed: self.malformed.load(Ordering::Relaxed),
            tls_libraries: self.tls.as_ref().map_or(0, |t| t.attached),
            tls_libraries_failed: self.tls.as_ref().map_or(0, |t| t.failed),
            tls_calls: sum(event::CNT_TLS),
            tls_no_socket: sum(event::CNT_TLS_NO_SOCKET),
            tls_calls_in_progress: self.ssl_in_flight.get(&0, 0).map_or(0, |n| n.max(0) as u64),
        }
    }

    /// Keep these processes out in the kernel from now on (filters that
    /// exclude a process push it here once known). Each is denied by pid
    /// and start time: one that exited before this lands leaves a stale
    /// bit, which the kernel clears when its pid's next process calls.
    pub fn deny_processes(&mut self, procs: &[ProcKey]) -> Result<()> {
        if procs.is_empty() {
            return Ok(());
        }
        let ebpf = self.ebpf.as_mut().expect("capture running");
        let mut starts: BpfHashMap<_, u32, u64> =
            BpfHashMap::try_from(ebpf.map_mut("deny_starts").context("deny_starts map")?)?;
        let mut pids = Vec::with_capacity(procs.len());
        for p in procs {
            // The start before the bit, so the kernel never sees a bit without it.
            match starts.insert(p.pid, p.start_ns, 0) {
                Ok(()) => pids.push(p.pid),
                // Still filtered in the daemon.
                Err(e) => tracing::debug!("denying pid {} in the kernel: {e}", p.pid),
            }
        }
        add_pids(ebpf, "deny_pids", &pids)
    }

    /// Ask the reader to stop, without waiting: it ends within one poll
    /// interval, or as soon as its last batch is taken off the queue (the
    /// caller keeps draining until the queue disconnects, else a reader
    /// blocked on a full queue never ends).
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Detach and stop the reader (also done on drop).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        if self.ebpf.take().is_some() {
            tracing::info!("capture detached");
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Set the bits of `pids` in one of the kernel's pid bitmaps.
fn add_pids(ebpf: &mut Ebpf, map: &str, pids: &[u32]) -> Result<()> {
    if pids.is_empty() {
        return Ok(());
    }
    let mut bits: Array<_, u64> = Array::try_from(ebpf.map_mut(map).with_context(|| format!("{map} map"))?)?;
    for &pid in pids {
        let word = pid >> 6;
        if word >= bits.len() {
            anyhow::bail!("pid {pid} is beyond the {} pids the kernel filter holds", bits.len() * 64);
        }
        let old = bits.get(&word, 0)?;
        bits.set(word, old | (1u64 << (pid & 63)), 0).with_context(|| format!("adding pid {pid} to {map}"))?;
    }
    Ok(())
}

/// What pending in the ring wakes the reader: `wakeup_bytes`, but at most a
/// quarter of the ring. A ring no larger than the mark (`RingBufferBytes`
/// of 256 KiB or less) never reached it: the reader drained only once per
/// poll interval, and a 64 KiB ring lost records at 15k calls/s.
fn wakeup_mark(config: &CaptureConfig) -> u64 {
    config.wakeup_bytes.min(u64::from(config.ring_bytes) / 4)
}

/// Load the object and every program into the kernel (the verifier runs
/// here), without attaching anything. A rejection names the program and
/// ends with the verifier's last lines.
pub fn load(config: &CaptureConfig, btf: &Btf) -> Result<Ebpf> {
    // The load-time constants (the verifier sees them as constants, so each
    // combination is a program of its own: see tests/kernel_variants.rs).
    let payload = config.payload_bytes.min(event::MAX_PAYLOAD as u32);
    let self_pid = std::process::id();
    let filter_pids = u8::from(!config.pids.is_empty());
    let (drop_unix, drop_unknown, drop_loopback) =
        (u8::from(config.drop_unix), u8::from(config.drop_unknown), u8::from(config.drop_loopback));
    let sampling = config.sampling.min(100);
    let l4_default = u8::from(config.l4_default);
    let mut ebpf = EbpfLoader::new()
        .override_global("payload_max", &payload, true)
        .override_global("self_pid", &self_pid, true)
        .override_global("sampling", &sampling, true)
        .override_global("filter_pids", &filter_pids, true)
        .override_global("drop_unix", &drop_unix, true)
        .override_global("drop_unknown", &drop_unknown, true)
        .override_global("drop_loopback", &drop_loopback, true)
        .override_global("l4_default", &l4_default, true)
        .override_global("wakeup_bytes", &wakeup_mark(config), true)
        .map_max_entries("events_even", config.ring_bytes)
        .map_max_entries("events_odd", config.ring_bytes)
        // `thread_infos` is task-local storage, which aya has no Rust
        // type for; only the kernel uses it.
        .allow_unsupported_maps()
        .load(OBJECT)
        .context("loading the capture programs into the kernel")?;
    for (program, tracepoint) in PROGRAMS {
        let prog: &mut BtfTracePoint = ebpf
            .program_mut(program)
            .with_context(|| format!("program {program} missing from the object"))?
            .try_into()?;
        if let Err(e) = prog.load(tracepoint, btf) {
            anyhow::bail!(
                "the kernel's verifier rejected {program} (tracepoint {tracepoint}): {}",
                verifier_tail(&e, 25)
            );
        }
    }
    for (program, function) in tls::PROBES {
        let prog: &mut aya::programs::UProbe = ebpf
            .program_mut(program)
            .with_context(|| format!("program {program} missing from the object"))?
            .try_into()?;
        if let Err(e) = prog.load() {
            anyhow::bail!("the kernel's verifier rejected {program} (uprobe on {function}): {}", verifier_tail(&e, 25));
        }
    }
    let iter: &mut Iter = ebpf
        .program_mut(COUNTS_ITERATOR)
        .with_context(|| format!("program {COUNTS_ITERATOR} missing from the object"))?
        .try_into()?;
    if let Err(e) = iter.load("tcp", btf) {
        anyhow::bail!("the kernel's verifier rejected {COUNTS_ITERATOR} (iter/tcp): {}", verifier_tail(&e, 25));
    }
    Ok(ebpf)
}

/// The error of a refused program load with the last `lines` lines of the
/// verifier's log (the whole log can run to thousands of lines; the reason
/// is at its end).
fn verifier_tail(e: &aya::programs::ProgramError, lines: usize) -> String {
    match e {
        aya::programs::ProgramError::LoadError { io_error, verifier_log } => {
            let log = verifier_log.to_string();
            let all: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = &all[all.len().saturating_sub(lines)..];
            format!("{io_error}; the verifier's last lines:\n{}", tail.join("\n"))
        }
        other => other.to_string(),
    }
}

fn attach(ebpf: &mut Ebpf, program: &str, tracepoint: &str) -> Result<()> {
    let prog: &mut BtfTracePoint =
        ebpf.program_mut(program).with_context(|| format!("program {program} missing from the object"))?.try_into()?;
    prog.attach().with_context(|| format!("attaching {program} to the tracepoint {tracepoint}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reader_is_woken_before_a_small_ring_fills() {
        let at = |ring_bytes| wakeup_mark(&CaptureConfig { ring_bytes, ..CaptureConfig::default() });
        assert_eq!(at(8 << 20), 256 << 10, "the default ring wakes at the default mark");
        assert_eq!(at(1 << 20), 256 << 10);
        assert_eq!(at(256 << 10), 64 << 10, "a ring the size of the mark wakes at a quarter");
        assert_eq!(at(4096), 1024);
    }
}
