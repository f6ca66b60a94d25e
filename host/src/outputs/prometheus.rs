//! `flusher_prometheus`: an HTTP `/metrics` endpoint in the Prometheus text
//! exposition format. Window records are accumulated into counters since
//! the daemon started:
//! - `wirelens_l4_{send,recv}_{bytes,packets}_total` by process, role,
//!   socket type and remote endpoint (the records' latency fields are
//!   always 0, so they have no metric);
//! - `wirelens_l7_calls_total`, `wirelens_l7_{request,response}_bytes_total`
//!   and the `wirelens_l7_latency_seconds` histogram by protocol, process,
//!   role, call (HTTP method, Redis/SQL command, DNS query type) and
//!   success;
//! - every series also by pod, namespace and container (empty, so absent,
//!   for processes outside Kubernetes).
//!
//! A server's layer-4 series are keyed by the client's address without its
//! ephemeral port (every new connection would be a new series), and series
//! no window updated for `ExpireWindows` windows are dropped.
//! - the latest health record: counts as `wirelens_health_*_total`
//!   counters, levels as `wirelens_health_*` gauges (`super::exposition`).
//!
//! Label sets are bounded: past `MaxSeries` per family, new ones fold into
//! one set whose labels are all `other`. The exposition text is written
//! here rather than with prometheus-client because the histograms arrive
//! pre-aggregated (bucket counts from the layer-7 sketch), which that
//! crate's `Histogram` (one observation at a time) cannot take.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use super::exposition::{escape, header, health_values, write_health, CONTENT_TYPE};
use super::Flusher;
use crate::config::PrometheusSettings;
use crate::records::{Kind, Record, Value};

/// Upper bounds of the latency histogram buckets, in nanoseconds.
pub const LATENCY_BOUNDS_NS: [u64; 18] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    10_000_000_000,
];

type Labels = Vec<(&'static str, String)>;

const L4_LABELS: [&str; 8] =
    ["process", "role", "socket_type", "remote_ip", "remote_port", "pod", "namespace", "container"];
const L7_LABELS: [&str; 8] = ["protocol", "process", "role", "call", "success", "pod", "namespace", "container"];
/// Record fields of the Kubernetes labels, in the labels' order.
const K8S_FIELDS: [&str; 3] = ["_pod_name_", "_namespace_", "_container_name_"];
/// L4 counters: record field, metric name, help, scale to the unit.
const L4_COUNTERS: [(&str, &str, &str, f64); 4] = [
    ("send_bytes", "wirelens_l4_send_bytes_total", "Bytes sent.", 1.0),
    ("recv_bytes", "wirelens_l4_recv_bytes_total", "Bytes received.", 1.0),
    ("send_packets", "wirelens_l4_send_packets_total", "Send calls.", 1.0),
    ("recv_packets", "wirelens_l4_recv_packets_total", "Receive calls.", 1.0),
];

impl L7Series {
    fn new(now: Instant) -> Self {
        Self { updated: now, calls: 0, req_bytes: 0, resp_bytes: 0, latency_ns: 0, buckets: Vec::new() }
    }
}

struct L4Series {
    sums: [u64; L4_COUNTERS.len()],
    /// When a window last added to it.
    updated: Instant,
}

struct L7Series {
    updated: Instant,
    calls: u64,
    req_bytes: u64,
    resp_bytes: u64,
    latency_ns: u64,
    buckets: Vec<u64>,
}

#[derive(Default)]
struct State {
    l4: HashMap<Labels, L4Series>,
    l7: HashMap<Labels, L7Series>,
    health: Vec<(String, u64)>,
}

pub struct PrometheusFlusher {
    state: Arc<Mutex<State>>,
    max_series: usize,
    /// How long a series may go without an update, layer 4 then layer 7
    /// (`None`: forever).
    expire_after: [Option<Duration>; 2],
    stop: Arc<AtomicBool>,
    server: Option<JoinHandle<()>>,
}

impl PrometheusFlusher {
    pub fn start(s: &PrometheusSettings) -> Result<Self> {
        // A config reload restarts this flusher: the previous one's listener
        // may take a moment to close.
        let mut attempt = 0;
        let server = loop {
            match tiny_http::Server::http(&s.listen) {
                Ok(server) => break server,
                Err(e) if attempt < 20 => {
                    attempt += 1;
                    tracing::debug!("flusher_prometheus: {} busy ({e}), retrying", s.listen);
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(anyhow!("flusher_prometheus: cannot listen on {}: {e}", s.listen)),
            }
        };
        tracing::info!(listen = %s.listen, "Prometheus metrics at /metrics");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, stp) = (state.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("prometheus http".into())
            .spawn(move || serve(server, st, stp))
            .expect("spawning the metrics server");
        let expire_after = s
            .window_secs
            .map(|secs| (s.expire_windows > 0).then(|| Duration::from_secs(secs * u64::from(s.expire_windows))));
        Ok(Self { state, max_series: s.max_series, expire_after, stop, server: Some(thread) })
    }
}

fn serve(server: tiny_http::Server, state: Arc<Mutex<State>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(Some(request)) = server.recv_timeout(Duration::from_millis(200)) else { continue };
        let response = if request.url() == "/metrics" || request.url().starts_with("/metrics?") {
            let body = render(&state.lock().unwrap_or_else(|e| e.into_inner()));
            let header = tiny_http::Header::from_bytes("Content-Type", CONTENT_TYPE).expect("static header");
            tiny_http::Response::from_string(body).with_header(header)
        } else {
            tiny_http::Response::from_string("not found: metrics are at /metrics\n").with_status_code(404)
        };
        let _ = request.respond(response);
    }
}

/// The process name for labels: the command's program, without its path.
fn process(r: &Record) -> String {
    let cmd = r.text("_process_cmd_").unwrap_or_default();
    let program = cmd.split_whitespace().next().unwrap_or("");
    let base = program.rsplit('/').next().unwrap_or(program);
    base.chars().take(64).collect()
}

/// What the call did: the field its plugin names as its call field.
fn call(r: &Record) -> String {
    r.fields
        .iter()
        .find_map(|(_, v)| if let Value::Call(c) = v { Some(c.to_string()) } else { None })
        .unwrap_or_default()
}

fn text(r: &Record, field: &str) -> String {
    r.text(field).map(|t| t.into_owned()).unwrap_or_default()
}

fn num(r: &Record, field: &str) -> u64 {
    r.int(field).unwrap_or(0)
}

/// The series' labels, or the `other` set when the family is full.
fn bounded<V>(map: &HashMap<Labels, V>, labels: Labels, max: usize) -> Labels {
    if map.len() < max || map.contains_key(&labels) {
        labels
    } else {
        labels.into_iter().map(|(k, _)| (k, "other".to_string())).collect()
    }
}

impl Flusher for PrometheusFlusher {
    fn flush(&mut self, records: &[Record]) -> Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        for r in records {
            match r.kind {
                Kind::Statistics => {
                    let (ip, port) = match r.value("remote_info") {
                        Some(Value::Remote { ip, port, .. }) if !ip.is_unspecified() => {
                            (ip.to_string(), port.to_string())
                        }
                        Some(Value::Remote { port, .. }) => (String::new(), port.to_string()),
                        _ => (String::new(), String::new()),
                    };
                    let role = text(r, "role");
                    // A server's remote port is the client's ephemeral one.
                    let port = if role == "server" { String::new() } else { port };
                    let [pod, namespace, container] = K8S_FIELDS.map(|f| text(r, f));
                    let values = [process(r), role, text(r, "socket_type"), ip, port, pod, namespace, container];
                    let labels = L4_LABELS.iter().copied().zip(values).collect();
                    let labels = bounded(&state.l4, labels, self.max_series);
                    let series =
                        state.l4.entry(labels).or_insert_with(|| L4Series { sums: Default::default(), updated: now });
                    series.updated = now;
                    for (i, (field, ..)) in L4_COUNTERS.iter().enumerate() {
                        series.sums[i] += num(r, field);
                    }
                }
                Kind::Protocols => {
                    let [pod, namespace, container] = K8S_FIELDS.map(|f| text(r, f));
                    let values = [
                        text(r, "protocol"),
                        process(r),
                        text(r, "role"),
                        call(r),
                        text(r, "success"),
                        pod,
                        namespace,
                        container,
                    ];
                    let labels = L7_LABELS.iter().copied().zip(values).collect();
                    let labels = bounded(&state.l7, labels, self.max_series);
                    let s = state.l7.entry(labels).or_insert_with(|| L7Series::new(now));
                    s.updated = now;
                    s.calls += num(r, "total_count");
                    s.req_bytes += num(r, "total_req_bytes");
                    s.resp_bytes += num(r, "total_resp_bytes");
                    s.latency_ns += num(r, "total_latency_ns");
                    if let Some(Value::Latency(sketch)) = r.value("latency") {
                        s.buckets.resize(LATENCY_BOUNDS_NS.len(), 0);
                        for (sum, bound) in s.buckets.iter_mut().zip(LATENCY_BOUNDS_NS) {
                            *sum += sketch.count_at_most(bound);
                        }
                    }
                }
                Kind::Health => {
                    state.health = health_values(r);
                }
            }
        }
        // (A window's records arrive within its flush; a series idle for
        // whole windows has had no calls in them.)
        if let Some(limit) = self.expire_after[0] {
            state.l4.retain(|_, s| now.duration_since(s.updated) <= limit);
        }
        if let Some(limit) = self.expire_after[1] {
            state.l7.retain(|_, s| now.duration_since(s.updated) <= limit);
        }
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.server.take() {
            let _ = t.join();
        }
        Ok(())
    }
}

fn label_text(labels: &Labels, extra: Option<(&str, &str)>) -> String {
    // An empty label is an absent one to Prometheus: not written.
    let mut parts: Vec<String> =
        labels.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    format!("{{{}}}", parts.join(","))
}

fn render(state: &State) -> String {
    let mut out = String::new();
    for (i, (_, name, help, scale)) in L4_COUNTERS.iter().enumerate() {
        header(&mut out, name, "counter", help);
        for (labels, series) in &state.l4 {
            let v = series.sums[i] as f64 * scale;
            let _ = writeln!(out, "{name}{} {v}", label_text(labels, None));
        }
    }
    type Counter = (&'static str, &'static str, fn(&L7Series) -> u64);
    let l7_counters: [Counter; 3] = [
        ("wirelens_l7_calls_total", "Layer-7 calls (request and response paired).", |s| s.calls),
        ("wirelens_l7_request_bytes_total", "Bytes of layer-7 requests.", |s| s.req_bytes),
        ("wirelens_l7_response_bytes_total", "Bytes of layer-7 responses.", |s| s.resp_bytes),
    ];
    for (name, help, get) in l7_counters {
        header(&mut out, name, "counter", help);
        for (labels, s) in &state.l7 {
            let _ = writeln!(out, "{name}{} {}", label_text(labels, None), get(s));
        }
    }
    let name = "wirelens_l7_latency_seconds";
    header(&mut out, name, "histogram", "Layer-7 call latency, first request byte to last response byte.");
    for (labels, s) in &state.l7 {
        for (bound, n) in LATENCY_BOUNDS_NS.iter().zip(&s.buckets) {
            let le = format!("{}", *bound as f64 / 1e9);
            let _ = writeln!(out, "{name}_bucket{} {n}", label_text(labels, Some(("le", &le))));
        }
        let _ = writeln!(out, "{name}_bucket{} {}", label_text(labels, Some(("le", "+Inf"))), s.calls);
        let _ = writeln!(out, "{name}_sum{} {}", label_text(labels, None), s.latency_ns as f64 / 1e9);
        let _ = writeln!(out, "{name}_count{} {}", label_text(labels, None), s.calls);
    }
    write_health(&mut out, &state.health);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_series: usize, expire_windows: u32) -> PrometheusSettings {
        PrometheusSettings { listen: "127.0.0.1:0".into(), max_series, expire_windows, window_secs: [0, 0] }
    }

    fn statistics(role: &str, port: u16, pod: &str) -> Record {
        let mut r = Record::new(Kind::Statistics);
        r.push("_process_cmd_", "app");
        if !pod.is_empty() {
            r.push("_pod_name_", pod);
            r.push("_namespace_", "shop");
            r.push("_container_name_", "web");
        }
        r.push("role", role);
        r.push("socket_type", "inet_socket");
        let ip = std::net::IpAddr::from([10, 0, 0, 9]);
        r.push("remote_info", Value::Remote { ip, port, kind: "unknown" });
        r.push("send_bytes", 10u64);
        r
    }

    /// A server's series do not multiply with its clients' ephemeral ports,
    /// pods' series carry their Kubernetes labels, and a series no window
    /// updated for `ExpireWindows` windows goes.
    #[test]
    fn server_series_ignore_client_ports_and_idle_series_expire() {
        let mut f = PrometheusFlusher::start(&settings(2000, 1)).unwrap();
        let clients: Vec<Record> = (40_000..41_000).map(|port| statistics("server", port, "web-1")).collect();
        f.flush(&clients).unwrap();
        let text = render(&f.state.lock().unwrap());
        let server = r#"wirelens_l4_send_bytes_total{process="app",role="server",socket_type="inet_socket",remote_ip="10.0.0.9",pod="web-1",namespace="shop",container="web"} 10000"#;
        assert!(text.contains(server), "{text}");
        assert_eq!(f.state.lock().unwrap().l4.len(), 1, "one series for 1000 client ports");
        std::thread::sleep(Duration::from_millis(5));
        // Windows of 0 s here: the server's series, not in this flush, goes.
        f.flush(&[statistics("client", 6379, "")]).unwrap();
        let text = render(&f.state.lock().unwrap());
        let client = r#"wirelens_l4_send_bytes_total{process="app",role="client",socket_type="inet_socket",remote_ip="10.0.0.9",remote_port="6379"} 10"#;
        assert!(text.contains(client), "{text}");
        assert!(!text.contains(r#"role="server""#), "{text}");
        f.close().unwrap();
    }

    #[test]
    fn records_become_bounded_counters_and_histograms() {
        let mut f = PrometheusFlusher::start(&settings(2, 0)).unwrap();
        let call = |cmd: &str, process: &str| {
            let mut r = Record::new(Kind::Protocols);
            r.push("_process_cmd_", process);
            r.push("protocol", "redis");
            r.push("command", Value::Call(Arc::from(cmd)));
            r.push("success", "1");
            r.push("role", "client");
            r.push("total_count", 3u64);
            r.push("total_latency_ns", 300_000u64);
            r.push("total_req_bytes", 30u64);
            r.push("total_resp_bytes", 15u64);
            let mut sketch = crate::aggregate::sketch::Sketch::default();
            (0..3).for_each(|_| sketch.add(100_000));
            r.push("latency", Value::Latency(Box::new(sketch)));
            r
        };
        let mut health = Record::new(Kind::Health);
        health.push("kernel_lost", 4u64);
        health.push_named("cluster-id", "7"); // a tag: not a metric
        health.push_named("kernel_lost", "9"); // a tag repeating a field
        f.flush(&[call("GET", "/usr/bin/redis-cli -p 1"), call("GET", "redis-cli"), call("SET", "x \"y")]).unwrap();
        f.flush(&[call("DEL", "z"), health]).unwrap();
        let text = render(&f.state.lock().unwrap());
        f.close().unwrap();
        let get = r#"{protocol="redis",process="redis-cli",role="client",call="GET",success="1"}"#;
        assert!(text.contains(&format!("wirelens_l7_calls_total{get} 6")), "{text}");
        let other = r#"{protocol="other",process="other",role="other",call="other",success="other",pod="other",namespace="other",container="other"}"#;
        assert!(text.contains(&format!("wirelens_l7_calls_total{other} 3")), "third set folds: {text}");
        assert!(text.contains(r#"process="x",role="client",call="SET""#), "{text}");
        assert!(text.contains(r#"wirelens_l7_latency_seconds_bucket{protocol="redis",process="redis-cli",role="client",call="GET",success="1",le="0.0001"} 6"#), "{text}");
        assert!(text.contains(&format!("wirelens_l7_latency_seconds_sum{get} 0.0006")), "{text}");
        assert!(text.contains("wirelens_health_kernel_lost_total 4"), "{text}");
        assert!(!text.contains("cluster") && !text.contains("kernel_lost 9"), "{text}");
    }
}
