//! `wirelens run`: capture → connections → aggregation → flushers, on one
//! thread fed by the capture reader, until SIGINT/SIGTERM (which flushes the
//! pending windows and detaches the kernel programs).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use crate::aggregate::l4::L4Window;
use crate::capture::{Capture, CaptureConfig, CaptureStats, Event, EventKind};
use crate::config::Config;
use crate::connections::{local, sockdiag, Outcome, Tracker, TrackerConfig};
use crate::layer7::Layer7;
use crate::metadata::ProcessCache;
use crate::records::{write_lines, Record};

/// Batches of events queued between the reader and the pipeline; when full,
/// the reader waits and the kernel ring buffer absorbs (and counts) the excess.
const QUEUE: usize = 256;

/// Run until a signal arrives.
pub fn run(config: Config) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    if !config.enable {
        tracing::warn!(config = %config.path.display(), "`enable: false`: nothing to do");
        return Ok(());
    }
    let (tx, rx) = sync_channel::<Vec<Event>>(QUEUE);
    let c = &config.common;
    let mut capture = if config.ebpf.enabled {
        let cc = CaptureConfig {
            payload_bytes: config.wirelens.payload_bytes,
            sampling: c.sampling,
            pids: config.pids.clone(),
            drop_unix: c.drop_unix_socket.on(),
            drop_unknown: c.drop_unknown_socket.on(),
            drop_loopback: c.drop_local_connections.on(),
            ring_bytes: config.wirelens.ring_buffer_bytes,
            ..CaptureConfig::default()
        };
        Some(Capture::start(&cc, tx)?)
    } else {
        tracing::warn!("EBPF.Enabled is false: running without capture");
        drop(tx);
        None
    };

    let mut pipeline = Pipeline::new(&config)?;
    let l4_every = Duration::from_secs(c.flush_out_l4_interval);
    let l7_every = Duration::from_secs(c.flush_out_l7_interval);
    let mut next_l7 = Instant::now() + l7_every;
    let netlink_every = Duration::from_secs(c.flush_netlink_interval);
    let mut next_l4 = Instant::now() + l4_every;
    let mut next_netlink = Instant::now() + netlink_every;
    let mut stdout = std::io::stdout().lock();
    tracing::info!(config = %config.path.display(), "running");
    while !stop.load(Ordering::Relaxed) {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(batch) => {
                batch.iter().for_each(|ev| pipeline.on_event(ev));
                // Take what is queued without waiting, bounded so flushes stay on time.
                for batch in rx.try_iter().take(16) {
                    batch.iter().for_each(|ev| pipeline.on_event(ev));
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                if capture.is_some() {
                    tracing::error!("capture reader stopped");
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        pipeline.poll_l7();
        let now = Instant::now();
        if now >= next_l7 {
            write_lines(&mut stdout, &pipeline.flush_l7()).context("writing records to stdout")?;
            next_l7 = now + l7_every;
        }
        if now >= next_netlink {
            pipeline.refresh_host_view();
            next_netlink = now + netlink_every;
        }
        if now >= next_l4 {
            let stats = capture.as_ref().map(Capture::stats).unwrap_or_default();
            let records = pipeline.flush_l4(stats);
            write_lines(&mut stdout, &records).context("writing records to stdout")?;
            next_l4 = now + l4_every;
        }
    }
    tracing::info!("shutting down: flushing pending windows");
    if let Some(cap) = capture.as_mut() {
        cap.stop();
    }
    for batch in rx.try_iter() {
        batch.iter().for_each(|ev| pipeline.on_event(ev));
    }
    let stats = capture.as_ref().map(Capture::stats).unwrap_or_default();
    let mut records = pipeline.flush_l7();
    records.extend(pipeline.flush_l4(stats));
    write_lines(&mut stdout, &records)?;
    stdout.flush()?;
    Ok(())
}

/// Everything between the capture and the flushers.
pub struct Pipeline {
    tracker: Tracker,
    procs: ProcessCache,
    l4: L4Window,
    l7: Option<Layer7>,
    tags: Vec<(String, String)>,
    last_capture: CaptureStats,
}

impl Pipeline {
    pub fn new(config: &Config) -> Result<Self> {
        let c = &config.common;
        let mut tracker = Tracker::new(TrackerConfig {
            drop_unix: c.drop_unix_socket.on(),
            drop_local: c.drop_local_connections.on(),
            drop_unknown: c.drop_unknown_socket.on(),
            max_connections: config.wirelens.max_connections,
            ..TrackerConfig::default()
        });
        tracker.refresh_host_view(sockdiag::listening().unwrap_or_default(), local::addresses());
        let l7 = if c.protocol_process.on() {
            Some(Layer7::new(&c.include_protocols, config.wirelens.plugin_dir.as_ref(), config.wirelens.max_l7_keys)?)
        } else {
            None
        };
        Ok(Self {
            tracker,
            procs: ProcessCache::default(),
            l4: L4Window::new(config.wirelens.max_l4_keys),
            l7,
            tags: c.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            last_capture: CaptureStats::default(),
        })
    }

    /// Parse and stitch what is queued for layer 7.
    pub fn poll_l7(&mut self) {
        if let Some(l7) = self.l7.as_mut() {
            l7.poll();
        }
    }

    /// The layer-7 window's records.
    pub fn flush_l7(&mut self) -> Vec<Record> {
        let time = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let mut records = match self.l7.as_mut() {
            Some(l7) => l7.flush(time, &self.procs),
            None => vec![],
        };
        self.tag(&mut records);
        records
    }

    fn tag(&self, records: &mut [Record]) {
        for r in records {
            for (k, v) in &self.tags {
                r.push(k, v);
            }
        }
    }

    pub fn refresh_host_view(&mut self) {
        match sockdiag::listening() {
            Ok(l) => self.tracker.refresh_host_view(l, local::addresses()),
            Err(e) => tracing::warn!("sock_diag dump failed: {e}"),
        }
    }

    pub fn on_event(&mut self, ev: &Event) {
        match self.tracker.on_event(ev) {
            Outcome::Keep(conn) => {
                self.procs.observe(ev.pid, &ev.comm, ev.cmdline.as_deref());
                if ev.kind == EventKind::Data {
                    self.l4.add(conn, ev);
                    if let Some(l7) = self.l7.as_mut() {
                        l7.on_data(conn, ev);
                    }
                }
            }
            Outcome::Closed(conn) => {
                if let Some(l7) = self.l7.as_mut() {
                    l7.on_close(conn.id);
                }
            }
            Outcome::Ignore => {}
        }
    }

    /// The layer-4 window's records, plus the daemon's own health record.
    pub fn flush_l4(&mut self, capture: CaptureStats) -> Vec<Record> {
        let time = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let mut records = self.l4.flush(time, &self.procs);
        let lost_now = capture.lost - self.last_capture.lost;
        if lost_now > 0 {
            tracing::warn!(lost = lost_now, total = capture.lost, "events lost in the kernel (ring buffer full)");
        }
        let t = self.tracker.stats();
        let mut health = Record::new("health");
        health.push("events", capture.events);
        health.push("kernel_lost", capture.lost);
        health.push("kernel_filtered", capture.filtered);
        health.push("truncated", capture.truncated);
        health.push("malformed", capture.malformed);
        health.push("connections", self.tracker.len());
        health.push("connections_over_capacity", t.over_capacity);
        health.push("connections_expired", t.expired);
        health.push("l4_overflow", self.l4.overflow);
        health.push("rss_bytes", rss_bytes());
        if let Some(l7) = &self.l7 {
            l7.health(&mut health);
        }
        health.push("__time__", time);
        records.push(health);
        self.last_capture = capture;
        self.tag(&mut records);
        for gone in self.tracker.expire() {
            if let Some(l7) = self.l7.as_mut() {
                l7.on_close(gone.id);
            }
        }
        self.procs.expire();
        records
    }
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}
