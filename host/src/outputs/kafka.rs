//! `flusher_kafka`: records as JSON messages on a topic (partition 0), with
//! rskafka (a pure-Rust Kafka client, so no librdkafka to build or match).
//!
//! Records are buffered (bounded by `BufferRecords`; when full the oldest
//! are dropped and counted) and sent in batches of `BatchRecords`. When the
//! broker cannot be reached or a produce fails, the records stay buffered
//! and the flusher reconnects and retries every second, so a broker that is
//! briefly away loses nothing. The topic is created if it does not exist.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::ClientBuilder;

use super::{Flusher, FlusherCounters};
use crate::config::KafkaSettings;
use crate::records::Record;

pub struct KafkaFlusher {
    settings: KafkaSettings,
    runtime: tokio::runtime::Runtime,
    client: Option<PartitionClient>,
    buffer: VecDeque<Vec<u8>>,
    counters: Arc<FlusherCounters>,
    /// No connection attempt before this (backoff after a failure).
    next_attempt: Instant,
}

impl KafkaFlusher {
    pub fn start(settings: &KafkaSettings, counters: Arc<FlusherCounters>) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("flusher_kafka: starting its runtime")?;
        Ok(Self {
            settings: settings.clone(),
            runtime,
            client: None,
            buffer: VecDeque::new(),
            counters,
            next_attempt: Instant::now(),
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.settings.timeout_secs.max(1))
    }

    async fn connect(settings: &KafkaSettings) -> Result<PartitionClient> {
        let client = ClientBuilder::new(settings.brokers.clone())
            .build()
            .await
            .map_err(|e| anyhow!("connecting to {:?}: {e}", settings.brokers))?;
        let topics = client.list_topics().await.map_err(|e| anyhow!("listing topics: {e}"))?;
        if !topics.iter().any(|t| t.name == settings.topic) {
            let controller = client.controller_client().map_err(|e| anyhow!("controller: {e}"))?;
            controller
                .create_topic(&settings.topic, 1, 1, 5_000)
                .await
                .map_err(|e| anyhow!("creating topic {}: {e}", settings.topic))?;
        }
        client
            .partition_client(&settings.topic, 0, UnknownTopicHandling::Retry)
            .await
            .map_err(|e| anyhow!("topic {} partition 0: {e}", settings.topic))
    }

    /// Send what is buffered, batch by batch; stop at the first failure.
    fn send_buffered(&mut self) -> Result<()> {
        while !self.buffer.is_empty() {
            if self.client.is_none() {
                if Instant::now() < self.next_attempt {
                    return Err(anyhow!("broker unreachable; {} records buffered", self.buffer.len()));
                }
                let connected = self
                    .runtime
                    .block_on(async { tokio::time::timeout(self.timeout(), Self::connect(&self.settings)).await });
                match connected {
                    Ok(Ok(c)) => {
                        tracing::info!(brokers = ?self.settings.brokers, topic = %self.settings.topic, "connected to Kafka");
                        self.client = Some(c);
                    }
                    Ok(Err(e)) => return Err(self.failed(e)),
                    Err(_) => return Err(self.failed(anyhow!("connecting timed out"))),
                }
            }
            let n = self.buffer.len().min(self.settings.batch_records.max(1));
            let now = chrono::Utc::now();
            let batch: Vec<rskafka::record::Record> = self
                .buffer
                .iter()
                .take(n)
                .map(|value| rskafka::record::Record {
                    key: None,
                    value: Some(value.clone()),
                    headers: Default::default(),
                    timestamp: now,
                })
                .collect();
            let client = self.client.as_ref().expect("connected above");
            let produced = self.runtime.block_on(async {
                tokio::time::timeout(self.timeout(), client.produce(batch, Compression::NoCompression)).await
            });
            match produced {
                Ok(Ok(_offsets)) => {
                    self.buffer.drain(..n);
                }
                Ok(Err(e)) => return Err(self.failed(anyhow!("producing: {e}"))),
                Err(_) => return Err(self.failed(anyhow!("producing timed out"))),
            }
        }
        Ok(())
    }

    /// Forget the connection and wait a second before the next attempt.
    fn failed(&mut self, e: anyhow::Error) -> anyhow::Error {
        self.client = None;
        self.next_attempt = Instant::now() + Duration::from_secs(1);
        e.context(format!("{} records kept for retry", self.buffer.len()))
    }
}

impl Flusher for KafkaFlusher {
    fn flush(&mut self, records: &[Record]) -> Result<()> {
        let items = records.iter().map(|r| r.to_json().into_bytes());
        super::buffer_bounded(&mut self.buffer, self.settings.buffer_records, &self.counters, items);
        self.send_buffered()
    }

    fn close(&mut self) -> Result<()> {
        // One last try, with a fresh connection if needed.
        self.next_attempt = Instant::now();
        self.send_buffered()
    }
}
