//! The daemon's always-on admin endpoint (`Wirelens.Admin.Listen`, default
//! `127.0.0.1:9465`), for the people and probes that operate it:
//! - `/metrics`: the daemon's own metrics in the Prometheus text format
//!   (`metrics.rs`), whether or not a Prometheus flusher is configured;
//! - `/healthz`: the main loop is turning (liveness);
//! - `/readyz`: capture is attached and plugins are loaded (readiness);
//! - `/plugins`: what `wirelens plugins list` shows, from the running daemon.
//!
//! The main loop publishes what the endpoint shows (`Admin::beat`,
//! `Admin::set_health`); plugin state is read live from the registry.

mod metrics;
pub mod systemd;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use crate::protocols::Registry;

/// `/healthz` fails when the main loop has not turned for this long (it
/// turns at least every 50 ms; a flush to a slow flusher never blocks it).
const STALLED: Duration = Duration::from_secs(30);

/// What the endpoint shows, shared with the daemon's main loop.
pub(crate) struct Shared {
    started: Instant,
    /// Empty once ready; otherwise what the daemon is doing.
    starting: Mutex<&'static str>,
    /// Milliseconds since `started` at the main loop's last turn.
    beat_ms: AtomicU64,
    health: Mutex<Vec<(String, u64)>>,
    registry: OnceLock<Arc<Registry>>,
}

/// The running admin endpoint.
pub struct Admin {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Admin {
    /// Listen on `addr` (the error names it).
    pub fn start(addr: SocketAddr) -> Result<Self> {
        let server = tiny_http::Server::http(addr)
            .map_err(|e| anyhow!("Wirelens.Admin.Listen: cannot listen on {addr}: {e}"))?;
        // The bound address (port 0 picks one).
        let listen = server.server_addr().to_ip().map_or_else(|| addr.to_string(), |a| a.to_string());
        let shared = Arc::new(Shared {
            started: Instant::now(),
            starting: Mutex::new("starting"),
            beat_ms: AtomicU64::new(0),
            health: Mutex::new(Vec::new()),
            registry: OnceLock::new(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (sh, st) = (shared.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("admin http".into())
            .spawn(move || serve(server, sh, st))
            .expect("spawning the admin endpoint");
        tracing::info!(%listen, "admin endpoint: /metrics /healthz /readyz /plugins");
        Ok(Self { shared, stop, thread: Some(thread) })
    }

    /// What the daemon is doing while not ready (`/readyz` says it).
    pub fn starting(&self, what: &'static str) {
        *lock(&self.shared.starting) = what;
    }

    /// Capture attached, plugins loaded.
    pub fn ready(&self, registry: Option<Arc<Registry>>) {
        if let Some(r) = registry {
            let _ = self.shared.registry.set(r);
        }
        *lock(&self.shared.starting) = "";
    }

    /// The main loop turned.
    pub fn beat(&self) {
        self.shared.beat_ms.store(self.shared.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// The latest health values.
    pub fn set_health(&self, values: Vec<(String, u64)>) {
        *lock(&self.shared.health) = values;
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn serve(server: tiny_http::Server, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(Some(request)) = server.recv_timeout(Duration::from_millis(200)) else { continue };
        let path = request.url().split('?').next().unwrap_or("").to_string();
        let (status, content_type, body) = respond(&shared, &path);
        let header = tiny_http::Header::from_bytes("Content-Type", content_type).expect("static header");
        let _ = request.respond(tiny_http::Response::from_string(body).with_status_code(status).with_header(header));
    }
}

const TEXT: &str = "text/plain; charset=utf-8";

/// Status, content type and body for a path.
fn respond(shared: &Shared, path: &str) -> (u16, &'static str, String) {
    match path {
        "/metrics" => (200, crate::outputs::exposition::CONTENT_TYPE, metrics::render(shared)),
        "/healthz" => {
            let since =
                shared.started.elapsed().saturating_sub(Duration::from_millis(shared.beat_ms.load(Ordering::Relaxed)));
            if since < STALLED {
                (200, TEXT, "ok\n".into())
            } else {
                (503, TEXT, format!("the main loop has not turned for {} s\n", since.as_secs()))
            }
        }
        "/readyz" => match *lock(&shared.starting) {
            "" => (200, TEXT, "ready\n".into()),
            what => (503, TEXT, format!("not ready: {what}\n")),
        },
        "/plugins" => (200, "application/json", plugins_json(shared)),
        _ => (404, TEXT, "not found: the admin endpoint serves /metrics, /healthz, /readyz and /plugins\n".into()),
    }
}

/// One plugin as `/plugins` and `/metrics` show it: the catalog's entry
/// and, for a loaded plugin, its counters.
pub(crate) struct PluginRow {
    pub entry: crate::protocols::registry::Entry,
    pub loaded: Option<Arc<crate::protocols::LoadedPlugin>>,
}

pub(crate) fn plugin_rows(shared: &Shared) -> Vec<PluginRow> {
    let Some(registry) = shared.registry.get() else { return Vec::new() };
    let catalog = registry.catalog();
    catalog
        .entries
        .iter()
        .map(|e| PluginRow {
            entry: e.clone(),
            loaded: catalog
                .active
                .iter()
                .find(|p| {
                    *p.meta.name == *e.name && p.meta.version == e.version && p.meta.source.to_string() == e.source
                })
                .cloned(),
        })
        .collect()
}

fn plugins_json(shared: &Shared) -> String {
    let rows: Vec<serde_json::Value> = plugin_rows(shared)
        .into_iter()
        .map(|r| {
            let mut v = serde_json::json!({
                "name": r.entry.name,
                "version": r.entry.version,
                "wit_version": r.entry.wit_version,
                "source": r.entry.source,
                "state": r.entry.state,
            });
            if let Some(p) = r.loaded {
                let s = &p.stats;
                v["calls"] = s.calls.load(Ordering::Relaxed).into();
                v["failures"] = s.failures().into();
                v["quarantines"] = s.quarantines.load(Ordering::Relaxed).into();
                v["quarantined"] = p.quarantined_until().is_some().into();
            }
            v
        })
        .collect();
    let mut text = serde_json::to_string_pretty(&rows).expect("JSON of plain values");
    text.push('\n');
    text
}
