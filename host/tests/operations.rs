//! Operating the daemon: the admin endpoint (`/metrics` scraped by a real
//! Prometheus, `/healthz`, `/readyz`, `/plugins`), SIGHUP and systemd's
//! readiness protocol. Needs root (the daemon loads its eBPF programs).

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::{config, Daemon};
use common::prometheus::Prometheus;
use common::servers::{free_port, http_get, RedisServer};

/// `GET path` on the admin endpoint: status and body.
fn get(port: u16, path: &str) -> (u16, String) {
    http_get(port, path).unwrap_or_else(|| panic!("the admin endpoint answers {path}"))
}

fn head_commit() -> String {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(common::root())
        .output()
        .expect("git (apt-get install git)");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn the_admin_endpoint_serves_metrics_health_readiness_and_plugins() {
    let port = free_port();
    // Loopback kept: the test's redis calls are.
    let common = "DropLocalConnections: false\n";
    let daemon = Daemon::start(&config(common, "", &format!("Admin: {{Listen: '127.0.0.1:{port}'}}\n")));
    // "running" is logged once ready.
    assert_eq!(get(port, "/readyz"), (200, "ready\n".into()));
    assert_eq!(get(port, "/healthz"), (200, "ok\n".into()));
    let (status, body) = get(port, "/nothing");
    assert_eq!(status, 404);
    assert!(body.contains("/metrics") && body.contains("/readyz"), "{body}");

    let (status, body) = get(port, "/plugins");
    assert_eq!(status, 200);
    let plugins: serde_json::Value = serde_json::from_str(&body).unwrap();
    let active: Vec<&str> = plugins
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["state"] == "active" && p["source"] == "builtin")
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for name in ["dns", "http", "mysql", "pgsql", "redis"] {
        assert!(active.contains(&name), "{name} in {body}");
    }

    // Redis calls reach the redis plugin: its call counter moves.
    let redis = RedisServer::start();
    let prometheus = Prometheus::start(&format!("127.0.0.1:{port}"));
    for i in 0..20 {
        let out = Command::new("redis-cli")
            .args(["-p", &redis.port.to_string(), "SET", &format!("k{i}"), "v"])
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let commit = head_commit();
    let queries = [
        format!(r#"wirelens_build_info{{commit="{commit}",version="{}"}}"#, env!("CARGO_PKG_VERSION")),
        "wirelens_ready".to_string(),
        r#"wirelens_plugin_calls_total{plugin="redis",version="1.0.0"}"#.to_string(),
        "wirelens_health_events_total".to_string(),
        r#"wirelens_plugin_info{plugin="http",source="builtin",state="active"}"#.to_string(),
    ];
    let start = Instant::now();
    let mut values = vec![None; queries.len()];
    while start.elapsed() < Duration::from_secs(30) {
        values = queries.iter().map(|q| prometheus.query(q)).collect();
        if values.iter().all(|v| v.is_some_and(|v| v > 0.0)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for (q, v) in queries.iter().zip(&values) {
        assert!(
            v.is_some_and(|v| v > 0.0),
            "Prometheus scraped {q}: {v:?}; /metrics has:\n{}",
            get(port, "/metrics").1.lines().filter(|l| l.contains("plugin_calls")).collect::<Vec<_>>().join("\n")
        );
    }
    assert_eq!(
        prometheus.query(r#"wirelens_plugin_failures_total{plugin="redis",kind="trap"}"#),
        Some(0.0),
        "failures by kind, zero when none"
    );

    // Conventions: a counter's name ends in _total and a name ending in
    // _total is a counter; every family is typed.
    let (_, metrics) = get(port, "/metrics");
    let mut typed = 0;
    for line in metrics.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut parts = line.split_whitespace().skip(2);
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        assert_eq!(name.ends_with("_total"), kind == "counter", "{line}");
        typed += 1;
    }
    assert!(typed > 20, "{metrics}");
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap();
        assert!(metrics.contains(&format!("# TYPE {name} ")), "{name} has no TYPE");
    }
    drop(daemon);
}

/// Receives systemd notifications as the service manager would.
struct NotifySocket {
    socket: UnixDatagram,
    _dir: tempfile::TempDir,
    path: String,
}

impl NotifySocket {
    fn bind() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Self { socket, path: path.to_str().unwrap().to_string(), _dir: dir }
    }

    fn next(&self) -> String {
        let mut buf = [0u8; 256];
        let n = self.socket.recv(&mut buf).expect("a notification within 30 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

/// SIGHUP reloads the configuration (it used to kill the daemon), and
/// systemd hears READY, RELOADING, READY again and STOPPING.
#[test]
fn sighup_reloads_and_systemd_hears_each_state() {
    let notify = NotifySocket::bind();
    let mut daemon = Daemon::start_with_env(&config("", "", ""), &[("NOTIFY_SOCKET", &notify.path)]);
    assert_eq!(notify.next(), "READY=1");
    daemon.signal(libc::SIGHUP);
    assert_eq!(notify.next(), "RELOADING=1");
    assert_eq!(notify.next(), "READY=1");
    let start = Instant::now();
    while !daemon.stderr().lines().any(|l| l.contains("config reloaded") && l.contains("SIGHUP")) {
        assert!(start.elapsed() < Duration::from_secs(10), "no reload logged:\n{}", daemon.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(daemon.alive(), "SIGHUP stopped the daemon:\n{}", daemon.stderr());
    // Records keep coming after the reload.
    let seen = daemon.records().len();
    assert!(daemon.wait_for(Duration::from_secs(10), |r| r.len() > seen), "no records after the reload");
    let _ = daemon.stop();
    assert_eq!(notify.next(), "STOPPING=1");
}

/// Every PromQL expression of the Grafana dashboard and the alert rules,
/// with where it comes from.
fn shipped_expressions() -> Vec<(String, String)> {
    let root = common::root();
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("deploy/grafana/wirelens.json")).unwrap()).unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            // Grafana's own variable, as Grafana would fill it.
            exprs.push((format!("panel `{}`", panel["title"]), expr.replace("$__rate_interval", "1m")));
        }
    }
    let rules = std::fs::read_to_string(root.join("deploy/prometheus/wirelens-rules.yaml")).unwrap();
    for line in rules.lines() {
        if let Some(expr) = line.trim().strip_prefix("expr: ") {
            exprs.push(("alert rule".into(), expr.to_string()));
        }
    }
    exprs
}

/// The `wirelens_*` metric names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("wirelens_") {
        let tail = &rest[at..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The dashboard and the alert rules work against what the daemon really
/// exports: a real Prometheus scrapes its admin endpoint and its Prometheus
/// flusher while Redis calls flow, and runs every expression; the rules
/// pass `promtool check rules`.
#[test]
fn the_dashboard_and_alert_rules_run_against_real_metrics() {
    let rules = common::root().join("deploy/prometheus/wirelens-rules.yaml");
    let out = Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&rules)
        .output()
        .expect("promtool (apt-get install prometheus)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    let (admin, flusher) = (free_port(), free_port());
    let text = config(
        "DropLocalConnections: false\nFlushOutL7Interval: 1\n",
        "",
        &format!("Admin: {{Listen: '127.0.0.1:{admin}'}}\n"),
    )
    .replace(
        "flushers:\n  - Type: flusher_stdout\n",
        &format!(
            "flushers:\n  - Type: flusher_stdout\n  - Type: flusher_prometheus\n    Listen: 127.0.0.1:{flusher}\n"
        ),
    );
    let daemon = Daemon::start(&text);
    let prometheus = Prometheus::start_targets(&[&format!("127.0.0.1:{admin}"), &format!("127.0.0.1:{flusher}")]);
    let redis = RedisServer::start();
    let exprs = shipped_expressions();
    assert!(exprs.len() >= 15, "{exprs:?}");
    // Calls for a minute's rate window to see, in two scrapes at least, and
    // a scrape of the admin endpoint since the plugins loaded (from a fresh
    // clone their first compile can outlast several 1 s scrapes).
    let calls = r#"sum(wirelens_l7_calls_total{protocol="redis"})"#;
    let plugin_calls = r#"sum(wirelens_plugin_calls_total{plugin="redis"})"#;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30)
        && (prometheus.query(calls).is_none_or(|c| c < 40.0) || prometheus.query(plugin_calls).is_none_or(|c| c < 1.0))
    {
        for i in 0..10 {
            let out = Command::new("redis-cli").args(["-p", &redis.port.to_string(), "GET", &format!("k{i}")]).output();
            assert!(out.unwrap().status.success());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for (from, expr) in &exprs {
        let answer = prometheus.query_raw(expr).expect("Prometheus answers");
        assert_eq!(answer["status"], "success", "{from}: {expr}: {answer}");
        // Every metric it names is one the daemon exports (a misspelt name
        // would only ever give an empty graph).
        for name in metric_names(expr) {
            let exported = prometheus.query(&format!("count({{__name__=\"{name}\"}})"));
            assert!(exported.is_some(), "{from}: {expr}: nothing exports {name}");
        }
    }
    // (A rate needs two scrapes of the series.)
    let panel = "sum by (protocol) (rate(wirelens_l7_calls_total[1m]))";
    let has_redis = || prometheus.query_raw(panel).unwrap().to_string().contains(r#""protocol":"redis""#);
    assert!(common::wait_for(Duration::from_secs(15), has_redis).is_some(), "the calls panel shows Redis");
    drop(daemon);
}
