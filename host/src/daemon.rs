//! `wirelens run`: capture → collector (connections, metadata, windows) →
//! outputs (processors, flushers), on one thread fed by the capture reader, until
//! SIGINT/SIGTERM (which flushes the pending windows, lets the flushers
//! deliver them, and detaches the kernel programs). A changed config file is
//! applied without a restart: processors, flushers, tags and intervals are
//! rebuilt while the capture keeps running; a bad edit is reported and the
//! running config stays. SIGHUP reloads the file too (systemd's
//! `ExecReload`). The admin endpoint (`crate::admin`) shows readiness,
//! liveness and the daemon's own metrics throughout.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::admin::{systemd, Admin};
use crate::capture::{Capture, CaptureConfig, EventBatch};
use crate::collector::Collector;
use crate::config::Config;
use crate::config_watch::ConfigWatch;
use crate::outputs::exposition::health_values;
use crate::outputs::Outputs;
use crate::records::Record;

/// Batches of events queued between the reader and the collector; when full,
/// the reader waits and the kernel ring buffer absorbs (and counts) the excess.
const QUEUE: usize = 256;

/// Run until a signal arrives. `cache_dir`: where compiled plugins are
/// cached (`--cache-dir`; `None`: no cache).
pub fn run(config: Config, cache_dir: Option<std::path::PathBuf>) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    let hangup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hangup.clone()).context("installing signal handlers")?;
    if !config.enable {
        tracing::warn!(config = %config.path.display(), "`enable: false`: nothing to do");
        return Ok(());
    }
    // First, so probes get answers while the programs load. A port in use
    // is reported and the daemon observes without it: the endpoint serves
    // the operators, the observation serves everyone.
    let admin = config.wirelens.admin.address().and_then(|addr| {
        Admin::start(addr).map_err(|e| tracing::error!("{e:#}; running without the admin endpoint")).ok()
    });
    let starting = |what| {
        if let Some(a) = &admin {
            a.starting(what)
        }
    };
    starting("attaching the kernel programs");
    let (tx, rx) = sync_channel::<EventBatch>(QUEUE);
    // Batches go back to the reader to be refilled.
    let (spare_tx, spare_rx) = sync_channel::<EventBatch>(QUEUE);
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
            // Nothing needs a TCP call's bytes: counted in the kernel.
            l4_default: !c.protocol_process.on(),
            // Plaintext is for the layer-7 plugins only.
            tls: config.wirelens.tls && c.protocol_process.on(),
            ..CaptureConfig::default()
        };
        Some(Capture::start(&cc, tx, spare_rx)?)
    } else {
        tracing::warn!("EBPF.Enabled is false: running without capture");
        drop(tx);
        None
    };

    starting("loading plugins");
    let mut collector = Collector::new(&config, cache_dir)?;
    let mut outputs = Outputs::start(&config.processors, &config.flushers, config.wirelens.flusher_queue_batches)?;
    let watch =
        ConfigWatch::start(&config.path).map_err(|e| tracing::warn!("config changes will need a restart: {e:#}")).ok();
    let mut config = config;
    let mut timers = Timers::new(&config);
    if let Some(a) = &admin {
        a.ready(collector.registry());
    }
    systemd::notify("READY=1");
    tracing::info!(config = %config.path.display(), "running");
    while !stop.load(Ordering::Relaxed) {
        if let Some(a) = &admin {
            a.beat();
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(batch) => {
                collector.on_batch(&batch);
                let _ = spare_tx.try_send(batch);
                // Take what is queued without waiting, bounded so flushes stay on time.
                for batch in rx.try_iter().take(16) {
                    collector.on_batch(&batch);
                    let _ = spare_tx.try_send(batch);
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
        collector.poll_l7();
        if let Some(cap) = capture.as_mut() {
            if let Err(e) = cap.control(&collector.take_controls()) {
                tracing::warn!("telling the kernel what to copy: {e:#}");
            }
        }
        let asked = hangup.swap(false, Ordering::Relaxed);
        if watch.as_ref().is_some_and(ConfigWatch::take_change) || asked {
            if asked {
                systemd::notify("RELOADING=1");
            }
            let cause = if asked { "SIGHUP" } else { "file changed" };
            if let Some(new) = reload(&config, &mut collector, &mut outputs, cause) {
                config = new;
                timers.retime(&config);
            }
            if asked {
                systemd::notify("READY=1");
            }
        }
        let now = Instant::now();
        if now >= timers.next_l7 {
            outputs.emit(collector.flush_l7());
            timers.next_l7 = now + timers.l7_every;
        }
        if now >= timers.next_netlink {
            collector.refresh_host_view();
            timers.next_netlink = now + timers.netlink_every;
        }
        if now >= timers.next_l4 {
            read_kernel_counts(&mut capture, &mut collector);
            let stats = capture.as_ref().map(Capture::stats).unwrap_or_default();
            let mut records = collector.flush_l4(stats);
            add_output_health(&outputs, &mut records);
            outputs.emit(records);
            timers.next_l4 = now + timers.l4_every;
        }
        if now >= timers.next_admin {
            if let Some(a) = &admin {
                let stats = capture.as_ref().map(Capture::stats).unwrap_or_default();
                let mut health = collector.health(&stats);
                outputs.health(&mut health);
                a.set_health(health_values(&health));
            }
            timers.next_admin = now + Duration::from_secs(1);
        }
        if now >= timers.next_tls_scan {
            if let Some(cap) = capture.as_mut() {
                cap.scan_tls(collector.talking_pids());
            }
            timers.next_tls_scan = now + Duration::from_secs(1);
        }
        if now >= timers.next_kernel_filter {
            // (The kernel allows a pid again itself when its process exits.)
            let deny = collector.kernel_denials();
            if let Some(cap) = capture.as_mut() {
                if let Err(e) = cap.deny_processes(&deny) {
                    tracing::warn!("updating the kernel's pid filter: {e:#}");
                }
            }
            timers.next_kernel_filter = now + Duration::from_millis(200);
        }
    }
    systemd::notify("STOPPING=1");
    if let Some(a) = &admin {
        a.starting("shutting down");
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
            Ok(batch) => collector.on_batch(&batch),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    read_kernel_counts(&mut capture, &mut collector);
    if let Some(cap) = capture.as_mut() {
        cap.stop();
    }
    collector.poll_l7();
    let stats = capture.as_ref().map(Capture::stats).unwrap_or_default();
    let mut records = collector.flush_l7();
    records.extend(collector.flush_l4(stats));
    add_output_health(&outputs, &mut records);
    outputs.emit(records);
    outputs.shutdown(Duration::from_secs(10));
    Ok(())
}

/// What the sockets counted in the kernel moved since the last read, into
/// the windows (before they flush).
fn read_kernel_counts(capture: &mut Option<Capture>, collector: &mut Collector) {
    let Some(cap) = capture.as_mut() else { return };
    let mut batch = EventBatch::default();
    match cap.read_counts(&mut batch) {
        Ok(()) => collector.on_batch(&batch),
        Err(e) => tracing::warn!("reading the kernel's layer-4 counts: {e:#}"),
    }
}

fn add_output_health(outputs: &Outputs, records: &mut [Record]) {
    if let Some(health) = records.iter_mut().find(|r| r.kind == crate::records::Kind::Health) {
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
    /// New processes are looked at for TLS libraries this often.
    next_tls_scan: Instant,
    /// The admin endpoint's health values are renewed this often.
    next_admin: Instant,
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
            next_tls_scan: now,
            next_admin: now,
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
fn reload(old: &Config, collector: &mut Collector, outputs: &mut Outputs, cause: &str) -> Option<Config> {
    let mut new = match Config::load(&old.path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(cause, "config change rejected, the running config stays: {e:#}");
            return None;
        }
    };
    let live = old.with_live_keys_of(&new);
    if live != new {
        let keys = live.differing_keys(&new);
        tracing::warn!(?keys, "these settings take effect at the next restart; the running values stay");
        new = live;
    }
    if new.processors == old.processors
        && new.flushers == old.flushers
        && new.wirelens.flusher_queue_batches == old.wirelens.flusher_queue_batches
    {
        // Unchanged outputs keep running (and keep what they buffer).
        collector.set_tags(&new.common.tags);
        tracing::info!(config = %new.path.display(), cause, "config reloaded");
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
    collector.set_tags(&new.common.tags);
    tracing::info!(config = %new.path.display(), cause, "config reloaded");
    Some(new)
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
