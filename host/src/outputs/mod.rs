//! The outputs: records from the aggregation windows go through the
//! configured processors, then to every flusher. Each flusher runs on its
//! own thread behind a bounded queue, so a slow or failing flusher never
//! blocks the capture or the other flushers: when its queue is full, the
//! batch is dropped for that flusher and counted (`flusher_dropped` in the
//! health record, and the log).

pub mod exposition;
pub mod file;
pub mod kafka;
pub mod otlp;
pub mod processors;
pub mod prometheus;
pub mod stdout;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::config::{FlusherSettings, ProcessorSettings};
use crate::records::Record;
pub use processors::Processor;

/// One batch of records, shared by every flusher.
type Batch = Arc<[Record]>;

/// A destination for records. Runs on its own thread: it may block.
pub trait Flusher: Send {
    /// Deliver one batch. An error is logged and counted; the batch is not
    /// retried here (a flusher that can retry, like Kafka, does it inside).
    fn flush(&mut self, records: &[Record]) -> Result<()>;

    /// Deliver what is still buffered; called once at shutdown.
    fn close(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Counters of one flusher, shared with its thread.
#[derive(Default)]
pub struct FlusherCounters {
    /// Records dropped because the flusher's queue was full.
    pub dropped: AtomicU64,
    /// Batches whose delivery failed.
    pub failures: AtomicU64,
    /// Records handed over successfully.
    pub delivered: AtomicU64,
}

/// Append `items` to a flusher's retry buffer, which holds at most `cap`
/// (at least 1): beyond it the oldest are dropped and counted (Kafka and
/// OTLP keep records this way while their destination is away).
pub(crate) fn buffer_bounded<T>(
    buffer: &mut std::collections::VecDeque<T>,
    cap: usize,
    counters: &FlusherCounters,
    items: impl IntoIterator<Item = T>,
) {
    for item in items {
        if buffer.len() >= cap.max(1) {
            buffer.pop_front();
            counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
        buffer.push_back(item);
    }
}

struct Running {
    name: String,
    tx: Option<SyncSender<Batch>>,
    counters: Arc<FlusherCounters>,
    thread: Option<JoinHandle<()>>,
}

/// Processors and flushers of one configuration.
pub struct Outputs {
    processors: Vec<Processor>,
    flushers: Vec<Running>,
}

impl Outputs {
    /// Start the flushers, each with a queue of `queue_batches` batches.
    pub fn start(processors: &[ProcessorSettings], flushers: &[FlusherSettings], queue_batches: usize) -> Result<Self> {
        let processors = processors.iter().map(Processor::new).collect::<Result<Vec<_>>>()?;
        let mut running = Vec::new();
        for (i, settings) in flushers.iter().enumerate() {
            let name = format!("{}#{i}", settings.kind());
            let counters = Arc::new(FlusherCounters::default());
            let flusher = build(settings, counters.clone())?;
            running.push(spawn(name, flusher, counters, queue_batches));
        }
        Ok(Self { processors, flushers: running })
    }

    /// No processors, no flushers.
    pub fn none() -> Self {
        Self { processors: Vec::new(), flushers: Vec::new() }
    }

    /// Process `records` and queue them for every flusher, without waiting.
    pub fn emit(&self, mut records: Vec<Record>) {
        for p in &self.processors {
            p.apply(&mut records);
        }
        if records.is_empty() {
            return;
        }
        let batch: Arc<[Record]> = records.into();
        for f in &self.flushers {
            let Some(tx) = &f.tx else { continue };
            match tx.try_send(batch.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(b)) | Err(TrySendError::Disconnected(b)) => {
                    let before = f.counters.dropped.fetch_add(b.len() as u64, Ordering::Relaxed);
                    if before == 0 {
                        tracing::warn!(flusher = %f.name, "flusher queue full: dropping records (counted as flusher_dropped)");
                    }
                }
            }
        }
    }

    /// Add the flushers' counters to a health record.
    pub fn health(&self, record: &mut Record) {
        let sum = |get: fn(&FlusherCounters) -> u64| self.flushers.iter().map(|f| get(&f.counters)).sum::<u64>();
        record.push("flusher_dropped", sum(|c| c.dropped.load(Ordering::Relaxed)));
        record.push("flusher_failures", sum(|c| c.failures.load(Ordering::Relaxed)));
    }

    /// Stop taking records, let each flusher deliver its queue and close,
    /// waiting up to `limit` in all.
    pub fn shutdown(mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        for f in &mut self.flushers {
            f.tx = None;
        }
        for f in &mut self.flushers {
            let Some(thread) = f.thread.take() else { continue };
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if thread.is_finished() {
                let _ = thread.join();
            } else {
                tracing::warn!(flusher = %f.name, "flusher did not finish in time; leaving it");
            }
        }
    }
}

/// The running flusher of `settings` (it may count its own drops in `counters`).
fn build(settings: &FlusherSettings, counters: Arc<FlusherCounters>) -> Result<Box<dyn Flusher>> {
    Ok(match settings {
        FlusherSettings::Stdout => Box::new(stdout::Stdout),
        FlusherSettings::File(s) => Box::new(file::FileFlusher::open(s)?),
        FlusherSettings::Prometheus(s) => Box::new(prometheus::PrometheusFlusher::start(s)?),
        FlusherSettings::Kafka(s) => Box::new(kafka::KafkaFlusher::start(s, counters)?),
        FlusherSettings::Otlp(s) => Box::new(otlp::OtlpFlusher::start(s, counters)?),
    })
}

/// How often a flusher with nothing new is called anyway (with no records),
/// so one that buffers (Kafka) retries while the pipeline is quiet.
const IDLE_CALL: Duration = Duration::from_secs(1);

fn spawn(name: String, mut flusher: Box<dyn Flusher>, counters: Arc<FlusherCounters>, queue: usize) -> Running {
    let (tx, rx) = sync_channel::<Batch>(queue.max(1));
    let c = counters.clone();
    let thread_name = name.clone();
    let thread = std::thread::Builder::new()
        .name(format!("flusher {name}"))
        .spawn(move || {
            let mut last_error = None::<Instant>;
            let empty: Arc<[Record]> = Arc::from(Vec::new());
            loop {
                let batch = match rx.recv_timeout(IDLE_CALL) {
                    Ok(batch) => batch,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => empty.clone(),
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                };
                match flusher.flush(&batch) {
                    Ok(()) => {
                        c.delivered.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    }
                    Err(e) => {
                        c.failures.fetch_add(1, Ordering::Relaxed);
                        // At most one log line per 10 s per flusher.
                        if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                            tracing::error!(flusher = %thread_name, "delivering records failed: {e:#}");
                            last_error = Some(Instant::now());
                        }
                    }
                }
            }
            if let Err(e) = flusher.close() {
                tracing::error!(flusher = %thread_name, "closing: {e:#}");
            }
        })
        .expect("spawning a flusher thread");
    Running { name, tx: Some(tx), counters, thread: Some(thread) }
}
