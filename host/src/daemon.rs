//! `wirelens run`: capture → connections → aggregation → pipeline
//! (processors, flushers), on one thread fed by the capture reader, until
//! SIGINT/SIGTERM (which flushes the pending windows, lets the flushers
//! deliver them, and detaches the kernel programs). A changed config file is
//! applied without a restart: processors, flushers, tags and intervals are
//! rebuilt while the capture keeps running; a bad edit is reported and the
//! running config stays.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use crate::aggregate::l4::L4Window;
use crate::capture::{Capture, CaptureConfig, CaptureStats, Event, EventKind};
use crate::config::Config;
use crate::config_watch::ConfigWatch;
use crate::connections::{local, sockdiag, Tracker, TrackerConfig};
use crate::layer7::Layer7;
use crate::metadata::containers::ContainerDirectory;
use crate::metadata::filter::Filter;
use crate::metadata::redact::Redactor;
use crate::metadata::runtime::{cri::Cri, docker::Docker, Runtime};
use crate::metadata::ProcessCache;
use crate::pipeline::Outputs;
use crate::records::Record;

/// Batches of events queued between the reader and the pipeline; when full,
/// the reader waits and the kernel ring buffer absorbs (and counts) the excess.
const QUEUE: usize = 256;

/// Run until a signal arrives. `cache_dir`: where compiled plugins are
/// cached (`--cache-dir`; `None`: no cache).
pub fn run(config: Config, cache_dir: Option<std::path::PathBuf>) -> Result<()> {
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

    let mut pipeline = Pipeline::new(&config, cache_dir)?;
    let mut outputs = Outputs::start(&config.processors, &config.flushers, config.wirelens.flusher_queue_batches)?;
    let watch =
        ConfigWatch::start(&config.path).map_err(|e| tracing::warn!("config changes will need a restart: {e:#}")).ok();
    let mut config = config;
    let mut timers = Timers::new(&config);
    tracing::info!(config = %config.path.display(), "running");
    while !stop.load(Ordering::Relaxed) {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(batch) => {
                pipeline.on_batch(&batch);
                // Take what is queued without waiting, bounded so flushes stay on time.
                for batch in rx.try_iter().take(16) {
                    pipeline.on_batch(&batch);
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
        if watch.as_ref().is_some_and(ConfigWatch::take_change) {
            if let Some(new) = reload(&config, &mut pipeline, &mut outputs) {
                config = new;
                timers.retime(&config);
            }
        }
        let now = Instant::now();
        if now >= timers.next_l7 {
            outputs.emit(pipeline.flush_l7());
            timers.next_l7 = now + timers.l7_every;
        }
        if now >= timers.next_netlink {
            pipeline.refresh_host_view();
            timers.next_netlink = now + timers.netlink_every;
        }
        if now >= timers.next_l4 {
            let stats = capture.as_ref().map(Capture::stats).unwrap_or_default();
            let mut records = pipeline.flush_l4(stats);
            add_output_health(&outputs, &mut records);
            outputs.emit(records);
            timers.next_l4 = now + timers.l4_every;
        }
        if now >= timers.next_kernel_filter {
            // (The kernel allows a pid again itself when its process exits.)
            let deny = pipeline.kernel_denials();
            if let Some(cap) = capture.as_mut() {
                if let Err(e) = cap.deny_pids(&deny) {
                    tracing::warn!("updating the kernel's pid filter: {e:#}");
                }
            }
            timers.next_kernel_filter = now + Duration::from_millis(200);
        }
    }
    tracing::info!("shutting down: flushing pending windows");
    if let Some(cap) = capture.as_ref() {
        cap.request_stop();
    }
    // Take what is queued until the reader lets go of the queue: it may be
    // blocked on a full one (joining it first would wait forever).
    let drain_until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < drain_until {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(batch) => pipeline.on_batch(&batch),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    if let Some(cap) = capture.as_mut() {
        cap.stop();
    }
    pipeline.poll_l7();
    let stats = capture.as_ref().map(Capture::stats).unwrap_or_default();
    let mut records = pipeline.flush_l7();
    records.extend(pipeline.flush_l4(stats));
    add_output_health(&outputs, &mut records);
    outputs.emit(records);
    outputs.shutdown(Duration::from_secs(10));
    Ok(())
}

fn add_output_health(outputs: &Outputs, records: &mut [Record]) {
    if let Some(health) = records.iter_mut().find(|r| r.get("type") == Some("health")) {
        outputs.health(health);
    }
}

/// When each periodic task runs next.
struct Timers {
    l4_every: Duration,
    l7_every: Duration,
    netlink_every: Duration,
    next_l4: Instant,
    next_l7: Instant,
    next_netlink: Instant,
    /// Filter decisions reach the kernel this often.
    next_kernel_filter: Instant,
}

impl Timers {
    fn new(config: &Config) -> Self {
        let c = &config.common;
        let (l4, l7, netlink) = (
            Duration::from_secs(c.flush_out_l4_interval),
            Duration::from_secs(c.flush_out_l7_interval),
            Duration::from_secs(c.flush_netlink_interval),
        );
        let now = Instant::now();
        Self {
            l4_every: l4,
            l7_every: l7,
            netlink_every: netlink,
            next_l4: now + l4,
            next_l7: now + l7,
            next_netlink: now + netlink,
            next_kernel_filter: now,
        }
    }

    /// After a reload: changed intervals apply from now (a shorter one at
    /// once); unchanged ones keep their schedule, so frequent edits of the
    /// file do not hold records back.
    fn retime(&mut self, config: &Config) {
        let new = Self::new(config);
        for (every, next, new_every) in [
            (&mut self.l4_every, &mut self.next_l4, new.l4_every),
            (&mut self.l7_every, &mut self.next_l7, new.l7_every),
            (&mut self.netlink_every, &mut self.next_netlink, new.netlink_every),
        ] {
            if *every != new_every {
                *every = new_every;
                *next = (*next).min(Instant::now() + new_every);
            }
        }
    }
}

/// Apply a changed config file: the new one if valid, else keep the old.
/// Settings the running capture was started with need a restart: they are
/// named in a warning and the running values stay.
fn reload(old: &Config, pipeline: &mut Pipeline, outputs: &mut Outputs) -> Option<Config> {
    let mut new = match Config::load(&old.path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("config change rejected, the running config stays: {e:#}");
            return None;
        }
    };
    let restart_needed = capture_keys_changed(old, &new);
    if !restart_needed.is_empty() {
        tracing::warn!(keys = ?restart_needed, "these settings take effect at the next restart; the running values stay");
        new.ebpf = old.ebpf.clone();
        new.pids = old.pids.clone();
        new.wirelens = old.wirelens.clone();
        // Of `Common`, only the tags and the flush intervals apply while running.
        new.common = crate::config::Common {
            tags: std::mem::take(&mut new.common.tags),
            flush_out_l4_interval: new.common.flush_out_l4_interval,
            flush_out_l7_interval: new.common.flush_out_l7_interval,
            flush_netlink_interval: new.common.flush_netlink_interval,
            ..old.common.clone()
        };
    }
    if new.processors == old.processors
        && new.flushers == old.flushers
        && new.wirelens.flusher_queue_batches == old.wirelens.flusher_queue_batches
    {
        // Unchanged outputs keep running (and keep what they buffer).
        pipeline.set_tags(&new.common.tags);
        tracing::info!(config = %new.path.display(), "config reloaded");
        return Some(new);
    }
    // The old flushers go first: a new one may need what they hold (the
    // Prometheus listening address, the file).
    std::mem::replace(outputs, Outputs::none()).shutdown(Duration::from_secs(5));
    match Outputs::start(&new.processors, &new.flushers, new.wirelens.flusher_queue_batches) {
        Ok(fresh) => *outputs = fresh,
        Err(e) => {
            tracing::error!("config change rejected (its outputs cannot start), the running config stays: {e:#}");
            *outputs = Outputs::start(&old.processors, &old.flushers, old.wirelens.flusher_queue_batches)
                .unwrap_or_else(|e| {
                    tracing::error!("restarting the previous outputs failed too: {e:#}");
                    Outputs::none()
                });
            return None;
        }
    }
    pipeline.set_tags(&new.common.tags);
    tracing::info!(config = %new.path.display(), "config reloaded");
    Some(new)
}

/// Keys whose change the running capture and connection tracking cannot take.
fn capture_keys_changed(old: &Config, new: &Config) -> Vec<&'static str> {
    let (a, b) = (&old.common, &new.common);
    let mut keys = Vec::new();
    let mut check = |changed: bool, key: &'static str| {
        if changed {
            keys.push(key);
        }
    };
    check(old.ebpf.enabled != new.ebpf.enabled, "EBPF.Enabled");
    check(old.pids != new.pids, "EBPF.Pid");
    check(a.sampling != b.sampling, "Common.Sampling");
    check(a.drop_unix_socket.on() != b.drop_unix_socket.on(), "Common.DropUnixSocket");
    check(a.drop_local_connections.on() != b.drop_local_connections.on(), "Common.DropLocalConnections");
    check(a.drop_unknown_socket.on() != b.drop_unknown_socket.on(), "Common.DropUnknownSocket");
    check(a.protocol_process.on() != b.protocol_process.on(), "Common.ProtocolProcess");
    check(a.include_protocols != b.include_protocols, "Common.IncludeProtocols");
    check(format!("{:?}", old.wirelens) != format!("{:?}", new.wirelens), "Wirelens.*");
    let filters = |c: &crate::config::Common| {
        format!(
            "{:?}",
            (
                &c.include_container_labels,
                &c.exclude_container_labels,
                &c.include_k8s_labels,
                &c.exclude_k8s_labels,
                &c.include_envs,
                &c.exclude_envs,
                [&c.include_cmd_regex, &c.exclude_cmd_regex, &c.include_container_name_regex],
                [&c.exclude_container_name_regex, &c.include_pod_name_regex, &c.exclude_pod_name_regex],
                [&c.include_namespace_name_regex, &c.exclude_namespace_name_regex],
                c.flush_meta_interval,
            )
        )
    };
    check(filters(a) != filters(b), "Common filters (Include*/Exclude*, FlushMetaInterval)");
    keys
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
            Some(Layer7::new(&c.include_protocols, w.plugin_dir.as_ref(), w.max_l7_keys, limits, cache_dir)?)
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

    /// Processes to deny in the kernel (newly excluded).
    pub fn kernel_denials(&mut self) -> Vec<u32> {
        self.procs.take_denied()
    }

    /// Replace `Common.Tags` (config reload).
    pub fn set_tags(&mut self, tags: &std::collections::BTreeMap<String, String>) {
        self.tags = tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
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

    /// A batch of events from the capture.
    pub fn on_batch(&mut self, batch: &[Event]) {
        // One clock read per batch (a few milliseconds of events at most):
        // connections only need it for idle expiry.
        self.tracker.set_clock(Instant::now());
        batch.iter().for_each(|ev| self.on_event(ev));
    }

    pub fn on_event(&mut self, ev: &Event) {
        if ev.kind == EventKind::Close {
            for conn in self.tracker.on_close(ev.sock) {
                if let Some(l7) = self.l7.as_mut() {
                    l7.on_close(conn.id);
                }
            }
            return;
        }
        let Some(conn) = self.tracker.on_event(ev) else { return };
        if !self.procs.observe(ev.proc, || ev.comm().into_owned(), ev.cmdline.as_deref(), ev.cgroup.as_deref()) {
            // Filtered out (and denied in the kernel from the next kernel
            // update on).
            return;
        }
        self.l4.add(conn, ev);
        if let Some(l7) = self.l7.as_mut() {
            l7.on_data(conn, ev);
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
        health.push("kernel_denied", capture.denied);
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

/// The container runtimes asked for metadata: Docker, then each CRI socket.
fn runtimes(w: &crate::config::Wirelens) -> Vec<Box<dyn Runtime>> {
    let mut runtimes: Vec<Box<dyn Runtime>> = vec![Box::new(Docker::new(w.docker_socket.clone()))];
    for socket in &w.cri_sockets {
        match Cri::new(socket.clone()) {
            Ok(cri) => runtimes.push(Box::new(cri)),
            Err(e) => tracing::warn!("CRI at {}: not followed: {e:#}", socket.display()),
        }
    }
    runtimes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(l4: u64, l7: u64) -> Config {
        let text = format!(
            "inputs: [{{Type: observer_ilogtail_network_v1, Common: {{FlushOutL4Interval: {l4}, FlushOutL7Interval: {l7}}}}}]"
        );
        Config::parse(&text, std::path::Path::new("test.yaml")).unwrap()
    }

    #[test]
    fn a_reload_keeps_the_flush_schedule_unless_an_interval_changed() {
        let mut t = Timers::new(&config(15, 60));
        let (l4, l7) = (t.next_l4, t.next_l7);
        std::thread::sleep(Duration::from_millis(20));
        t.retime(&config(15, 60));
        assert_eq!((t.next_l4, t.next_l7), (l4, l7), "unchanged intervals keep their schedule");
        t.retime(&config(15, 2));
        assert_eq!(t.next_l4, l4);
        assert!(
            t.next_l7 < l7 && t.next_l7 <= Instant::now() + Duration::from_secs(2),
            "a shorter interval applies now"
        );
        assert_eq!(t.l7_every, Duration::from_secs(2));
        let next = t.next_l7;
        t.retime(&config(15, 30));
        assert_eq!((t.next_l7, t.l7_every), (next, Duration::from_secs(30)), "a longer one from the next flush on");
    }
}
