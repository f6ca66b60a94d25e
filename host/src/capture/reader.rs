//! The thread that drains the ring buffers into [`EventBatch`]es for the
//! collector, describing each process the first time it shows up.
//!
//! The kernel writes to two rings, one for even CPUs and one for odd (two
//! producers sharing one ring contend for its lock and producer position).
//! A connection's calls move between CPUs, so the reader merges the rings
//! in time order: it takes the older of the two rings' first records, and
//! from one ring alone only records older than [`GRACE_NS`] (a record the
//! other ring shows later was timed when it was written, at most that long
//! before it could be seen). A record that still comes later than a newer
//! one of its connection is dropped as lost (`layer7`'s stream positions).

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use aya::maps::{HashMap as BpfHashMap, MapData, RingBuf};
use parking_lot::Mutex;

use super::event::{self, Event, EventBatch, EventKind};

/// Events handed to the pipeline per channel message (one hand-off per
/// event cost more than decoding it).
const BATCH: usize = 256;
/// Payload bytes a batch holds before it is handed over.
const BATCH_BYTES: usize = 256 << 10;

/// How long before it can be read a record may have been timed: the time a
/// program takes between reading the clock and committing the record (a
/// payload copy: microseconds), with room for an interrupt.
const GRACE_NS: u64 = 1_000_000;

/// How often the reader drains the ring buffer when not woken (the kernel
/// wakes it only when what is pending reaches `wakeup_bytes`, looked at on
/// every 16th record of a CPU: batched wake-ups).
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// How long the kernel's entry of an exited process is kept (its last events
/// may still be on their way through the reader).
const EXITED_LINGER_NS: u64 = 30_000_000_000;
/// How often exited processes' entries are removed.
const PROCS_SWEEP: Duration = Duration::from_secs(5);

/// The kernel's record of processes (map `procs`), shared by the reader
/// and the daemon's reads of the kernel's counts.
pub(super) type Procs = Arc<Mutex<BpfHashMap<MapData, u32, event::RawProc>>>;

pub(super) struct Reader {
    /// The even CPUs' ring and the odd CPUs' ring.
    pub rings: [RingBuf<MapData>; 2],
    pub procs: Procs,
    pub sink: SyncSender<EventBatch>,
    /// Batches the collector is done with, to refill (no allocation per batch).
    pub spare: Receiver<EventBatch>,
    pub stop: Arc<AtomicBool>,
    pub malformed: Arc<AtomicU64>,
}

impl Reader {
    pub fn run(self) {
        let Reader { mut rings, procs, sink, spare, stop, malformed } = self;
        let fresh_batch = || match spare.try_recv() {
            Ok(mut b) => {
                b.clear();
                b
            }
            Err(_) => EventBatch::with_capacity(BATCH, 64 << 10),
        };
        let wake = match Wakeups::new(&rings) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!("ring buffer reader: {e:#}");
                return;
            }
        };
        // A measurement mode (bench/run.py's "capture only"): records are
        // read and decoded, then dropped: the cost of the kernel's capture
        // and of taking records off the ring, without anything after it.
        let discard = std::env::var_os("WIRELENS_BENCH_DISCARD").is_some();
        let mut batch = fresh_batch();
        // Processes already described (bounded: forgotten wholesale when
        // large; describing one again costs a map lookup).
        let mut seen = Seen::default();
        let mut next_sweep = std::time::Instant::now() + PROCS_SWEEP;
        while !stop.load(Ordering::Relaxed) {
            // Records left for the grace wait for the next look (looking
            // sooner for them drained 3.8 times as often: the daemon's CPU
            // +38% at redis GET 20k/s).
            wake.wait(POLL_INTERVAL);
            let limit = crate::clock::monotonic_ns().saturating_sub(GRACE_NS);
            let [even, odd] = &mut rings;
            loop {
                let (a, b) = (even.next(), odd.next());
                let Some(take_even) = older(a.as_deref().map(record_ts), b.as_deref().map(record_ts), limit) else {
                    // Left in their rings (not consumed) for the next look.
                    std::mem::forget(a);
                    std::mem::forget(b);
                    break;
                };
                let item = if take_even {
                    std::mem::forget(b);
                    a.expect("older says it is there")
                } else {
                    std::mem::forget(a);
                    b.expect("older says it is there")
                };
                if batch.decode(&item) {
                    let ev = batch.events_mut().last_mut().expect("decoded");
                    seen.describe_once(ev, &procs);
                } else {
                    malformed.fetch_add(1, Ordering::Relaxed);
                }
                drop(item);
                if discard {
                    batch.clear();
                } else if batch.len() == BATCH || batch.payload_bytes() >= BATCH_BYTES {
                    let full = std::mem::replace(&mut batch, fresh_batch());
                    if !hand_over(&sink, full, &stop) {
                        return; // the pipeline is gone, or stopping: shutting down
                    }
                }
            }
            if !batch.is_empty() {
                let full = std::mem::replace(&mut batch, fresh_batch());
                if !hand_over(&sink, full, &stop) {
                    return;
                }
            }
            if std::time::Instant::now() >= next_sweep {
                sweep_exited(&procs);
                next_sweep = std::time::Instant::now() + PROCS_SWEEP;
            }
        }
    }
}

/// A record's kernel time (the first field of every record; 0 for one too
/// short, which decoding then counts as malformed).
fn record_ts(record: &[u8]) -> u64 {
    record.get(..8).map_or(0, |b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
}

/// Which ring's first record goes next, given each ring's first record's
/// time (`None`: nothing to read there): `Some(true)` the even ring's,
/// `Some(false)` the odd ring's, `None` neither yet. From one ring alone,
/// only a record timed no later than `limit` (the other ring may still
/// show an older one).
fn older(even: Option<u64>, odd: Option<u64>, limit: u64) -> Option<bool> {
    match (even, odd) {
        (Some(e), Some(o)) => Some(e <= o),
        (Some(e), None) => (e <= limit).then_some(true),
        (None, Some(o)) => (o <= limit).then_some(false),
        (None, None) => None,
    }
}

/// Processes described already, and the last few (events come in runs
/// from a few processes, a client and its server taking turns: those
/// need no hash lookup).
#[derive(Default)]
pub(super) struct Seen {
    described: crate::fast_hash::HashSet<event::ProcKey>,
    recent: crate::fast_hash::Recent<event::ProcKey>,
}

impl Seen {
    /// Describe the event's process if it is new (data, stats and close
    /// events name the process that used the socket).
    pub fn describe_once(&mut self, ev: &mut Event, procs: &Procs) {
        let proc = ev.proc;
        if proc.pid == 0
            || !matches!(ev.kind, EventKind::Data | EventKind::Stats)
            || self.recent.find(|p| *p == proc).is_some()
        {
            return;
        }
        self.recent.remember(proc);
        if self.described.len() > 65_536 {
            self.described.clear();
        }
        if self.described.insert(ev.proc) {
            describe(ev, procs);
        }
    }
}

/// The command line and cgroup of a process seen for the first time: the
/// kernel's record of it (made at exec or fork, so a process that already
/// exited is still described), else /proc (processes older than the daemon).
fn describe(ev: &mut Event, procs: &Procs) {
    let recorded = procs.lock().get(&ev.proc.pid, 0).ok().filter(|p| p.start_ns == ev.proc.start_ns);
    ev.cmdline =
        recorded.and_then(|p| p.cmdline_in_full(ev.proc.pid)).or_else(|| crate::metadata::cmdline(ev.proc.pid));
    ev.cgroup = crate::metadata::cgroup_text(ev.proc.pid);
}

/// Remove the entries of processes that exited a while ago.
fn sweep_exited(procs: &Procs) {
    let now = crate::clock::monotonic_ns();
    let mut procs = procs.lock();
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
/// (what is pending reached `wakeup_bytes`) end a wait early; otherwise the
/// reader drains once per poll interval.
struct Wakeups(std::os::fd::OwnedFd);

impl Wakeups {
    fn new(rings: &[RingBuf<MapData>]) -> Result<Self> {
        use std::os::fd::FromRawFd;
        // SAFETY: plain syscall; the fd is checked before it is owned.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epfd < 0 {
            return Err(std::io::Error::last_os_error()).context("epoll_create1");
        }
        // SAFETY: a fresh fd we own.
        let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(epfd) };
        for ring in rings {
            let mut ev = libc::epoll_event { events: (libc::EPOLLIN | libc::EPOLLET) as u32, u64: 0 };
            // SAFETY: valid fds and event struct.
            if unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, ring.as_raw_fd(), &mut ev) } != 0 {
                return Err(std::io::Error::last_os_error()).context("epoll_ctl on a ring buffer");
            }
        }
        Ok(Self(owned))
    }

    /// Until the kernel wakes the reader or `limit` passes.
    fn wait(&self, limit: Duration) {
        let mut ev = [libc::epoll_event { events: 0, u64: 0 }; 2];
        // SAFETY: two valid event slots.
        unsafe { libc::epoll_wait(self.0.as_raw_fd(), ev.as_mut_ptr(), 2, limit.as_millis() as i32) };
    }
}

/// Queue a batch for the pipeline, waiting while the queue is full (the
/// kernel ring buffer absorbs, and counts, what cannot wait) but never past
/// a stop request: a reader blocked on a full queue while its owner waits
/// for it to end would never end. False when the batch was not queued.
fn hand_over(sink: &SyncSender<EventBatch>, mut batch: EventBatch, stop: &AtomicBool) -> bool {
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

#[cfg(test)]
mod tests {
    use super::older;

    #[test]
    fn the_older_first_record_goes_first_and_one_ring_alone_waits_for_the_grace() {
        assert_eq!(older(Some(5), Some(7), 0), Some(true));
        assert_eq!(older(Some(9), Some(7), 0), Some(false));
        assert_eq!(older(Some(7), Some(7), 0), Some(true));
        // One ring alone: only what the other cannot undercut any more.
        assert_eq!(older(Some(5), None, 4), None);
        assert_eq!(older(Some(5), None, 5), Some(true));
        assert_eq!(older(None, Some(5), 4), None);
        assert_eq!(older(None, Some(3), 4), Some(false));
        assert_eq!(older(None, None, u64::MAX), None);
    }
}
