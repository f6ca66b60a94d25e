//! Capture: the kernel programs (`ebpf/capture.bpf.c`, built by the build
//! script and embedded; BTF tracepoints of the socket layer), their set-up,
//! and the thread that drains the ring buffer into decoded [`Event`]s.

pub mod event;
mod setup;

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::BtfTracePoint;
use aya::{Btf, Ebpf, EbpfLoader};

pub use event::{Direction, Event, EventKind, ProcKey, Role, SocketType, Transport};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/capture.bpf.o"));

/// How often the reader drains the ring buffer when not woken (the kernel
/// wakes it only when what is pending crosses `wakeup_bytes`: batched
/// wake-ups).
const POLL_INTERVAL: Duration = Duration::from_millis(10);

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

/// How long the kernel's entry of an exited process is kept (its last events
/// may still be on their way through the reader).
const EXITED_LINGER_NS: u64 = 30_000_000_000;
/// How often exited processes' entries are removed.
const PROCS_SWEEP: Duration = Duration::from_secs(5);

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
    /// Network calls of processes the filters excluded, dropped in the
    /// kernel before anything was read.
    pub denied: u64,
    /// Records the reader could not decode.
    pub malformed: u64,
}

/// Attached programs and the reader thread; dropping it detaches everything.
pub struct Capture {
    ebpf: Option<Ebpf>,
    counters: PerCpuArray<MapData, u64>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
    malformed: Arc<AtomicU64>,
}

impl Capture {
    /// Check the machine, load and attach the programs, and start sending
    /// events to `sink`.
    pub fn start(config: &CaptureConfig, sink: SyncSender<Vec<Event>>) -> Result<Self> {
        setup::prepare()?;
        let btf = Btf::from_sys_fs().context("reading the kernel's BTF")?;
        let mut ebpf = load(config, &btf)?;
        add_pids(&mut ebpf, "allow_pids", &config.pids)?;
        for (program, tracepoint) in PROGRAMS {
            attach(&mut ebpf, program, tracepoint)?;
        }
        let ring = RingBuf::try_from(ebpf.take_map("events").context("events map")?)?;
        let procs: BpfHashMap<MapData, u32, event::RawProc> =
            BpfHashMap::try_from(ebpf.take_map("procs").context("procs map")?)?;
        let counters = PerCpuArray::try_from(ebpf.take_map("counters").context("counters map")?)?;
        let stop = Arc::new(AtomicBool::new(false));
        let malformed = Arc::new(AtomicU64::new(0));
        let reader = {
            let (stop, malformed) = (stop.clone(), malformed.clone());
            std::thread::Builder::new()
                .name("capture-reader".into())
                .spawn(move || read_loop(ring, procs, sink, stop, malformed))
                .context("spawning the capture reader")?
        };
        tracing::info!(programs = PROGRAMS.len(), payload_bytes = config.payload_bytes, "capture attached");
        Ok(Self { ebpf: Some(ebpf), counters, stop, reader: Some(reader), malformed })
    }

    /// Counters so far.
    pub fn stats(&self) -> CaptureStats {
        let sum = |slot: u32| -> u64 { self.counters.get(&slot, 0).map(|v| v.iter().sum()).unwrap_or(0) };
        CaptureStats {
            events: sum(event::CNT_EVENTS),
            lost: sum(event::CNT_LOST),
            filtered: sum(event::CNT_FILTERED),
            truncated: sum(event::CNT_TRUNCATED),
            denied: sum(event::CNT_DENIED),
            malformed: self.malformed.load(Ordering::Relaxed),
        }
    }

    /// Keep these processes out in the kernel from now on (filters that
    /// exclude a process push it here once known).
    pub fn deny_pids(&mut self, pids: &[u32]) -> Result<()> {
        add_pids(self.ebpf.as_mut().expect("capture running"), "deny_pids", pids)
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
    let mut ebpf = EbpfLoader::new()
        .override_global("payload_max", &payload, true)
        .override_global("self_pid", &self_pid, true)
        .override_global("sampling", &sampling, true)
        .override_global("filter_pids", &filter_pids, true)
        .override_global("drop_unix", &drop_unix, true)
        .override_global("drop_unknown", &drop_unknown, true)
        .override_global("drop_loopback", &drop_loopback, true)
        .override_global("wakeup_bytes", &config.wakeup_bytes, true)
        .map_max_entries("events", config.ring_bytes)
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

/// Events handed to the pipeline per channel message (one hand-off per
/// event cost more than decoding it).
const BATCH: usize = 256;

fn read_loop(
    mut ring: RingBuf<MapData>,
    mut procs: BpfHashMap<MapData, u32, event::RawProc>,
    sink: SyncSender<Vec<Event>>,
    stop: Arc<AtomicBool>,
    malformed: Arc<AtomicU64>,
) {
    let wake = match Wakeups::new(ring.as_raw_fd()) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!("ring buffer reader: {e:#}");
            return;
        }
    };
    let mut batch = Vec::with_capacity(BATCH);
    // Processes already described (bounded: forgotten wholesale when large;
    // describing one again costs a map lookup).
    let mut seen = crate::fast_hash::HashSet::default();
    let mut next_sweep = std::time::Instant::now() + PROCS_SWEEP;
    while !stop.load(Ordering::Relaxed) {
        wake.wait(POLL_INTERVAL);
        while let Some(item) = ring.next() {
            match Event::decode(&item) {
                Some(mut ev) => {
                    if seen.len() > 65_536 {
                        seen.clear();
                    }
                    if ev.kind == EventKind::Data && seen.insert(ev.proc) {
                        describe(&mut ev, &procs);
                    }
                    batch.push(ev)
                }
                None => {
                    malformed.fetch_add(1, Ordering::Relaxed);
                }
            }
            drop(item);
            if batch.len() == BATCH
                && !hand_over(&sink, std::mem::replace(&mut batch, Vec::with_capacity(BATCH)), &stop)
            {
                return; // the pipeline is gone, or stopping: shutting down
            }
        }
        if !batch.is_empty() && !hand_over(&sink, std::mem::replace(&mut batch, Vec::with_capacity(BATCH)), &stop) {
            return;
        }
        if std::time::Instant::now() >= next_sweep {
            sweep_exited(&mut procs);
            next_sweep = std::time::Instant::now() + PROCS_SWEEP;
        }
    }
}

/// The command line and cgroup of a process seen for the first time: the
/// kernel's record of it (made at exec or fork, so a process that already
/// exited is still described), else /proc (processes older than the daemon).
fn describe(ev: &mut Event, procs: &BpfHashMap<MapData, u32, event::RawProc>) {
    let recorded = procs.get(&ev.proc.pid, 0).ok().filter(|p| p.start_ns == ev.proc.start_ns);
    ev.cmdline = recorded.and_then(|p| p.cmdline()).or_else(|| crate::metadata::cmdline(ev.proc.pid));
    ev.cgroup = crate::metadata::cgroup_text(ev.proc.pid);
}

/// Remove the entries of processes that exited a while ago.
fn sweep_exited(procs: &mut BpfHashMap<MapData, u32, event::RawProc>) {
    let now = crate::clock::monotonic_ns();
    let gone: Vec<u32> = procs
        .iter()
        .filter_map(Result::ok)
        .filter(|(_, p)| p.exited_ns != 0 && now.saturating_sub(p.exited_ns) > EXITED_LINGER_NS)
        .map(|(pid, _)| pid)
        .collect();
    for pid in gone {
        let _ = procs.remove(&pid);
    }
}

/// The kernel's wake-ups of the ring buffer's reader, edge-triggered: a
/// plain poll() reports the ring readable whenever anything is pending, so
/// under steady traffic the reader would wake for every few events (each
/// wake-up costing the observed applications a context switch and the
/// daemon a small batch). With EPOLLET only the kernel's explicit wake-ups
/// (what is pending crossed `wakeup_bytes`) end a wait early; otherwise the
/// reader drains once per poll interval.
struct Wakeups(std::os::fd::OwnedFd);

impl Wakeups {
    fn new(ring_fd: std::os::fd::RawFd) -> Result<Self> {
        use std::os::fd::FromRawFd;
        // SAFETY: plain syscall; the fd is checked before it is owned.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epfd < 0 {
            return Err(std::io::Error::last_os_error()).context("epoll_create1");
        }
        // SAFETY: a fresh fd we own.
        let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(epfd) };
        let mut ev = libc::epoll_event { events: (libc::EPOLLIN | libc::EPOLLET) as u32, u64: 0 };
        // SAFETY: valid fds and event struct.
        if unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, ring_fd, &mut ev) } != 0 {
            return Err(std::io::Error::last_os_error()).context("epoll_ctl on the ring buffer");
        }
        Ok(Self(owned))
    }

    /// Until the kernel wakes the reader or `limit` passes.
    fn wait(&self, limit: Duration) {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: one valid event slot.
        unsafe { libc::epoll_wait(self.0.as_raw_fd(), &mut ev, 1, limit.as_millis() as i32) };
    }
}

/// Queue a batch for the pipeline, waiting while the queue is full (the
/// kernel ring buffer absorbs, and counts, what cannot wait) but never past
/// a stop request: a reader blocked on a full queue while its owner waits
/// for it to end would never end. False when the batch was not queued.
fn hand_over(sink: &SyncSender<Vec<Event>>, mut batch: Vec<Event>, stop: &AtomicBool) -> bool {
    loop {
        match sink.try_send(batch) {
            Ok(()) => return true,
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return false,
            Err(std::sync::mpsc::TrySendError::Full(b)) => {
                if stop.load(Ordering::Relaxed) {
                    return false;
                }
                batch = b;
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
    }
}
