//! Everything between the capture and the outputs: connections, process
//! metadata and filters, the layer-4 window and the layer-7 path, fed with
//! the capture's events, flushed into records at each interval.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use crate::aggregate::l4::L4Window;
use crate::capture::{CaptureStats, Event, EventBatch, EventKind, Mode, SocketControl};
use crate::config::Config;
use crate::connections::{local, sockdiag, Tracker, TrackerConfig};
use crate::layer7::{Layer7, Layer7Config};
use crate::metadata::containers::ContainerDirectory;
use crate::metadata::filter::Filter;
use crate::metadata::redact::Redactor;
use crate::metadata::runtime::{cri::Cri, docker::Docker, ContainerRuntime};
use crate::metadata::ProcessCache;
use crate::records::{Kind, Record};

/// Everything between the capture and the flushers.
pub struct Collector {
    tracker: Tracker,
    procs: ProcessCache,
    l4: L4Window,
    l7: Option<Layer7>,
    tags: Vec<(String, String)>,
    last_capture: CaptureStats,
}

impl Collector {
    pub fn new(config: &Config, cache_dir: Option<std::path::PathBuf>) -> Result<Self> {
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
            let w = &config.wirelens;
            let limits = crate::protocols::SandboxLimits {
                deadline: Duration::from_millis(w.plugin_deadline_ms),
                memory_bytes: w.plugin_memory_bytes,
                ..Default::default()
            };
            let options = w
                .plugin_options
                .iter()
                .map(|(plugin, opts)| (plugin.clone(), opts.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect()))
                .collect();
            Some(Layer7::new(Layer7Config {
                include: &c.include_protocols,
                plugin_dir: w.plugin_dir.as_ref(),
                options,
                capture_bytes: w.capture_bytes.clone(),
                payload_bytes: w.payload_bytes,
                max_keys: w.max_l7_keys,
                limits,
                cache_dir,
            })?)
        } else {
            None
        };
        Ok(Self {
            tracker,
            procs: ProcessCache::new(
                ContainerDirectory::start(runtimes(&config.wirelens), Duration::from_secs(c.flush_meta_interval)),
                Filter::new(c)?,
                Redactor::new(config.wirelens.redact_cmdline, &config.wirelens.redact_patterns)
                    .context("Wirelens.RedactPatterns")?,
                // Exited processes stay described until every window that
                // may hold their calls has flushed.
                Duration::from_secs(2 * c.flush_out_l4_interval.max(c.flush_out_l7_interval) + 5),
            ),
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

    /// The processes whose network calls were seen (and not yet forgotten).
    pub fn talking_pids(&self) -> Vec<u32> {
        self.procs.pids()
    }

    /// Processes to deny in the kernel (newly excluded).
    pub fn kernel_denials(&mut self) -> Vec<crate::capture::ProcKey> {
        self.procs.take_denied()
    }

    /// Replace `Common.Tags` (config reload).
    pub fn set_tags(&mut self, tags: &std::collections::BTreeMap<String, String>) {
        self.tags = tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    }

    fn tag(&self, records: &mut [Record]) {
        for r in records {
            for (k, v) in &self.tags {
                r.push_named(k, v.as_str());
            }
        }
    }

    pub fn refresh_host_view(&mut self) {
        match sockdiag::listening() {
            Ok(l) => self.tracker.refresh_host_view(l, local::addresses()),
            Err(e) => tracing::warn!("sock_diag dump failed: {e}"),
        }
    }

    /// A batch of events from the capture.
    pub fn on_batch(&mut self, batch: &EventBatch) {
        // One clock read per batch (a few milliseconds of events at most):
        // connections only need it for idle expiry.
        self.tracker.set_clock(Instant::now());
        for ev in batch.events() {
            self.on_event(ev, batch.payload(ev));
        }
    }

    fn on_event(&mut self, ev: &Event, payload: &[u8]) {
        // Close and stats events carry what a socket counted in the kernel
        // moved (close: since the last read).
        if ev.kind != EventKind::Data && !ev.counts.is_empty() {
            if let Some(conn) = self.tracker.on_event(ev) {
                if self.procs.observe(ev.proc, || ev.comm().into_owned(), ev.cmdline.as_deref(), ev.cgroup.as_deref()) {
                    self.l4.add_counts(conn, ev, &ev.counts);
                }
            }
        }
        match ev.kind {
            EventKind::Close => {
                for conn in self.tracker.on_close(ev.sock) {
                    if let Some(l7) = self.l7.as_mut() {
                        l7.on_close(conn.id);
                    }
                }
            }
            EventKind::Stats => {}
            EventKind::Data => {
                let Some(conn) = self.tracker.on_event(ev) else { return };
                if !self.procs.observe(ev.proc, || ev.comm().into_owned(), ev.cmdline.as_deref(), ev.cgroup.as_deref())
                {
                    // Filtered out (and denied in the kernel from the next
                    // kernel update on).
                    return;
                }
                // A TLS socket's layer 4 is its own bytes (ciphertext),
                // counted in the kernel; its plaintext is layer 7 only.
                if !ev.tls {
                    self.l4.add(conn, ev);
                }
                if let Some(l7) = self.l7.as_mut() {
                    l7.on_data(conn, ev, payload);
                }
            }
        }
    }

    /// What to ask of sockets in the kernel since the last call, by cookie:
    /// drop those a drop rule applies to, copy what plugins need.
    pub fn take_controls(&mut self) -> Vec<(u64, SocketControl)> {
        let mut out: Vec<(u64, SocketControl)> = self
            .tracker
            .take_dropped()
            .into_iter()
            .map(|sock| (sock, SocketControl { mode: Mode::Drop, ..SocketControl::default() }))
            .collect();
        if let Some(l7) = self.l7.as_mut() {
            l7.take_controls(&mut out);
        }
        out
    }

    /// The layer-4 window's records, plus the daemon's own health record.
    pub fn flush_l4(&mut self, capture: CaptureStats) -> Vec<Record> {
        let time = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let mut records = self.l4.flush(time, &self.procs);
        let lost_now = capture.lost - self.last_capture.lost;
        if lost_now > 0 {
            tracing::warn!(lost = lost_now, total = capture.lost, "events lost in the kernel (ring buffer full)");
        }
        let mut health = self.health(&capture);
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

    /// The daemon's own numbers as a health record (without its time),
    /// for the flush and for the admin endpoint.
    pub fn health(&self, capture: &CaptureStats) -> Record {
        let t = self.tracker.stats();
        let mut health = Record::new(Kind::Health);
        health.push("events", capture.events);
        health.push("kernel_lost", capture.lost);
        health.push("kernel_filtered", capture.filtered);
        health.push("truncated", capture.truncated);
        health.push("kernel_denied", capture.denied);
        health.push("kernel_counted", capture.counted);
        health.push("kernel_skipped", capture.skipped);
        health.push("malformed", capture.malformed);
        health.push("tls_libraries", capture.tls_libraries);
        health.push("tls_libraries_failed", capture.tls_libraries_failed);
        health.push("tls_calls", capture.tls_calls);
        health.push("tls_no_socket", capture.tls_no_socket);
        health.push("tls_calls_in_progress", capture.tls_calls_in_progress);
        health.push("connections", self.tracker.len());
        health.push("connections_over_capacity", t.over_capacity);
        health.push("connections_expired", t.expired);
        health.push("l4_overflow", self.l4.overflow);
        health.push("rss_bytes", rss_bytes());
        if let Some(l7) = &self.l7 {
            l7.health(&mut health);
        }
        health
    }

    /// CPU time spent inside plugin calls so far (0 without layer 7): for
    /// measuring the host path apart from the plugins.
    pub fn l7_plugin_cpu_ns(&self) -> u64 {
        self.l7.as_ref().map_or(0, |l7| l7.plugin_cpu_ns())
    }

    /// The plugin registry, when layer 7 runs.
    pub fn registry(&self) -> Option<std::sync::Arc<crate::protocols::Registry>> {
        self.l7.as_ref().map(|l7| l7.registry().clone())
    }
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

/// The container runtimes asked for metadata: Docker, then each CRI socket.
fn runtimes(w: &crate::config::Wirelens) -> Vec<Box<dyn ContainerRuntime>> {
    let mut runtimes: Vec<Box<dyn ContainerRuntime>> = vec![Box::new(Docker::new(w.docker_socket.clone()))];
    for socket in &w.cri_sockets {
        match Cri::new(socket.clone()) {
            Ok(cri) => runtimes.push(Box::new(cri)),
            Err(e) => tracing::warn!("CRI at {}: not followed: {e:#}", socket.display()),
        }
    }
    runtimes
}
