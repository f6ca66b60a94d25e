//! `flusher_otlp`: records as OpenTelemetry metrics to an OTLP receiver (an
//! OpenTelemetry Collector, or any backend that takes OTLP), over gRPC or
//! HTTP/protobuf. `encode` says what the metrics are.
//!
//! Like the Kafka flusher, records are buffered (bounded by
//! `BufferRecords`; when full the oldest are dropped and counted) and sent
//! in requests of at most `BatchRecords` records. A failure worth a retry
//! (receiver away, busy, timed out) keeps the records and waits 1 s, then
//! twice as long each time up to 16 s; a request refused for good drops its
//! records, counted.

mod encode;
mod transport;

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use super::{Flusher, FlusherCounters};
use crate::config::OtlpSettings;
use crate::records::Record;
pub use encode::Encoder;
use transport::{Outcome, Transport};

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(16);

pub struct OtlpFlusher {
    settings: OtlpSettings,
    url: String,
    encoder: Encoder,
    transport: Transport,
    buffer: VecDeque<Record>,
    counters: Arc<FlusherCounters>,
    /// No attempt before this (backoff after a failure).
    next_attempt: Instant,
    backoff: Duration,
    /// When a partial success was last logged.
    last_rejection_log: Option<Instant>,
}

impl OtlpFlusher {
    pub fn start(settings: &OtlpSettings, counters: Arc<FlusherCounters>) -> Result<Self> {
        Ok(Self {
            url: settings.url(),
            encoder: Encoder::new(settings.window_secs),
            transport: Transport::new(settings)?,
            settings: settings.clone(),
            buffer: VecDeque::new(),
            counters,
            next_attempt: Instant::now(),
            backoff: FIRST_BACKOFF,
            last_rejection_log: None,
        })
    }

    /// Send what is buffered, request by request; stop at the first
    /// failure worth a retry.
    fn send_buffered(&mut self) -> Result<()> {
        let timeout = Duration::from_secs(self.settings.timeout_secs.max(1));
        let mut refused = None;
        while !self.buffer.is_empty() {
            if Instant::now() < self.next_attempt {
                return Err(anyhow!("{} unreachable; {} records buffered", self.url, self.buffer.len()));
            }
            let n = self.buffer.len().min(self.settings.batch_records.max(1));
            let request = self.encoder.encode(&self.buffer.make_contiguous()[..n]);
            match self.transport.send(&self.url, request, timeout) {
                Outcome::Sent { rejected, message } => {
                    self.buffer.drain(..n);
                    self.backoff = FIRST_BACKOFF;
                    if rejected > 0 && self.last_rejection_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(url = %self.url, rejected, "the receiver refused some data points: {message}");
                        self.last_rejection_log = Some(Instant::now());
                    }
                }
                Outcome::Retry(e) => {
                    self.next_attempt = Instant::now() + self.backoff;
                    let waited = self.backoff;
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    return Err(e.context(format!(
                        "{} records kept, next try in {} s",
                        self.buffer.len(),
                        waited.as_secs()
                    )));
                }
                Outcome::Drop(e) => {
                    self.buffer.drain(..n);
                    self.counters.dropped.fetch_add(n as u64, Ordering::Relaxed);
                    refused = Some(e.context(format!("{n} records dropped")));
                }
            }
        }
        refused.map_or(Ok(()), Err)
    }
}

impl Flusher for OtlpFlusher {
    fn flush(&mut self, records: &[Record]) -> Result<()> {
        let items = records.iter().map(|r| r.clone());
        super::buffer_bounded(&mut self.buffer, self.settings.buffer_records, &self.counters, items);
        self.send_buffered()
    }

    fn close(&mut self) -> Result<()> {
        // One last try, whatever the backoff.
        self.next_attempt = Instant::now();
        self.send_buffered()
    }
}
