//! `flusher_otlp` against a receiver built on the OpenTelemetry project's
//! own Python messages and gRPC (`tests/e2e/otlp_receiver.py`): over gRPC
//! and HTTP/protobuf at once, through a receiver that fails its first
//! requests, every call, byte and latency bucket arrives, equal to the
//! stdout flusher's records of the same run. Needs root (CI runs as root).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{config, last_health, num, remote, Daemon};
use common::servers::{client_of, free_port, RedisServer};
use serde_json::Value;

/// The receiver on two free ports, writing what it got to `out`.
struct Receiver {
    child: Child,
    grpc_port: u16,
    http_port: u16,
    out: PathBuf,
}

impl Receiver {
    fn start(dir: &Path, args: &[&str]) -> Self {
        let (grpc_port, http_port) = (free_port(), free_port());
        let out = dir.join("received.jsonl");
        let script = common::root().join("tests/e2e/otlp_receiver.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .args(["--grpc-port", &grpc_port.to_string(), "--http-port", &http_port.to_string()])
            .arg("--out")
            .arg(&out)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 (apt-get install python3)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(
            line.trim(),
            "ready",
            "the OTLP receiver did not start: python3 -m pip install grpcio opentelemetry-proto (scripts/setup.sh)"
        );
        Self { child, grpc_port, http_port, out }
    }

    /// Every request so far, as the receiver logged it (a last line still
    /// being written, with no newline yet, is left for the next read).
    fn requests(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let whole = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
        whole.lines().map(|l| serde_json::from_str(l).expect("the receiver writes JSON lines")).collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An attribute's value in protobuf's JSON (`{"key", "value": {"string_value"}}`).
fn attr(attrs: &Value, key: &str) -> Option<String> {
    let kv = attrs.as_array()?.iter().find(|kv| kv["key"] == key)?;
    let v = &kv["value"];
    ["string_value", "int_value", "bool_value"].iter().find_map(|t| match &v[t] {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    })
}

/// One data point with its metric name and its resource's attributes.
struct Point<'a> {
    metric: &'a str,
    resource: &'a Value,
    point: &'a Value,
}

/// The points of the requests a transport got and took.
fn points<'a>(requests: &'a [Value], transport: &str) -> Vec<Point<'a>> {
    points_of(requests, transport, "taken")
}

/// The points of the requests a transport got and answered with `status`.
fn points_of<'a>(requests: &'a [Value], transport: &str, status: &str) -> Vec<Point<'a>> {
    let mut out = Vec::new();
    for req in requests.iter().filter(|r| r["transport"] == transport && r["status"] == status) {
        for rm in req["request"]["resource_metrics"].as_array().into_iter().flatten() {
            let resource = &rm["resource"]["attributes"];
            for sm in rm["scope_metrics"].as_array().into_iter().flatten() {
                assert_eq!(sm["scope"]["name"], "wirelens");
                for m in sm["metrics"].as_array().into_iter().flatten() {
                    let data = ["sum", "gauge", "exponential_histogram"].iter().find_map(|k| m.get(*k)).unwrap();
                    for p in data["data_points"].as_array().into_iter().flatten() {
                        out.push(Point { metric: m["name"].as_str().unwrap(), resource, point: p });
                    }
                }
            }
        }
    }
    out
}

fn int(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap(),
        Value::Number(n) => n.as_u64().unwrap(),
        Value::Null => 0,
        other => panic!("not an integer: {other}"),
    }
}

/// The point is a redis client's, talking to our server on `port`.
fn client_of_port(p: &Point, port: u16) -> bool {
    attr(&p.point["attributes"], "wirelens.role").as_deref() == Some("client")
        && attr(&p.point["attributes"], "server.port") == Some(port.to_string())
}

#[test]
fn grpc_and_http_receivers_get_every_call_byte_and_bucket_through_failures() {
    const SETS: u64 = 20;
    let dir = tempfile::tempdir().unwrap();
    // Each transport's first 2 requests fail (UNAVAILABLE, 503): the records
    // stay buffered and go out on a later try.
    let receiver = Receiver::start(dir.path(), &["--fail-first", "2"]);
    let redis = RedisServer::start();
    let flushers = format!(
        "  - Type: flusher_otlp\n    Endpoint: http://127.0.0.1:{}\n  - Type: flusher_otlp\n    Protocol: http/protobuf\n    Endpoint: http://127.0.0.1:{}\n    BatchRecords: 7\n    Headers: {{X-Api-Key: test}}\n",
        receiver.grpc_port, receiver.http_port
    );
    let daemon = Daemon::start(&(config("DropLocalConnections: false\nFlushOutL7Interval: 1", "", "") + &flushers));
    assert!(
        daemon.wait_for(Duration::from_secs(15), |rs| rs.iter().any(|r| r["type"] == "health")),
        "{}",
        daemon.stderr()
    );
    for i in 0..SETS {
        assert_eq!(redis.cli(&["SET", &format!("k{i}"), "v"]).trim(), "OK");
    }
    let port = redis.port;
    let sets = |rs: &[Value]| common::servers::calls(rs, "redis", |r| client_of(r, port) && r["command"] == "SET");
    assert!(daemon.wait_for(Duration::from_secs(20), |rs| sets(rs) >= SETS), "{:?}", {
        let rs = daemon.records();
        rs.iter().filter(|r| r["type"] == "protocols").cloned().collect::<Vec<_>>()
    });
    // Past the backoff (1 s, then 2 s) of both transports.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        let taken =
            |t: &str| receiver.requests().iter().filter(|r| r["transport"] == t && r["status"] == "taken").count();
        if taken("grpc") >= 2 && taken("http") >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let records = daemon.stop();
    let requests = receiver.requests();

    // What the stdout flusher saw of our clients: the reference.
    let ours: Vec<&Value> = records.iter().filter(|r| r["type"] == "protocols" && client_of(r, port)).collect();
    let calls: u64 = ours.iter().filter(|r| r["command"] == "SET").map(|r| num(r, "total_count")).sum();
    assert_eq!(calls, SETS, "stdout: every SET");
    let l4_sent: u64 = records
        .iter()
        .filter(|r| r["type"] == "statistics" && r["role"] == "client" && remote(r)["remote_port"] == port.to_string())
        .map(|r| num(r, "send_bytes"))
        .sum();
    assert!(l4_sent > 0);

    for transport in ["grpc", "http"] {
        let of_transport: Vec<&Value> = requests.iter().filter(|r| r["transport"] == transport).collect();
        let failed = of_transport.iter().filter(|r| r["status"] == "failed").count();
        assert_eq!(failed, 2, "{transport}: the first two requests failed and were retried");
        for r in &of_transport {
            assert_eq!(r["problems"], serde_json::json!([]), "{transport}: the receiver found the request malformed");
        }
        let points = points(&requests, transport);
        // What the failed requests carried came again, whole, in later ones.
        let failed_points = points_of(&requests, transport, "failed");
        assert!(!failed_points.is_empty());
        for f in &failed_points {
            let again = points.iter().any(|p| p.metric == f.metric && p.resource == f.resource && p.point == f.point);
            assert!(again, "{transport}: a point of a failed request was not sent again: {} {}", f.metric, f.point);
        }
        let ours: Vec<&Point> = points.iter().filter(|p| client_of_port(p, port)).collect();
        let set_calls: u64 = ours
            .iter()
            .filter(|p| {
                p.metric == "wirelens.l7.calls"
                    && attr(&p.point["attributes"], "wirelens.call").as_deref() == Some("SET")
                    && attr(&p.point["attributes"], "network.protocol.name").as_deref() == Some("redis")
                    && attr(&p.point["attributes"], "wirelens.success").as_deref() == Some("true")
            })
            .map(|p| int(&p.point["as_int"]))
            .sum();
        assert_eq!(set_calls, SETS, "{transport}: every SET, nothing lost to the failed requests");

        // Per window and process, the histogram is the sketch of the
        // stdout record: same count, same max, and the max in the top bucket.
        for r in records.iter().filter(|r| r["type"] == "protocols" && client_of(r, port)) {
            let (pid, time) = (r["_process_pid_"].as_str().unwrap(), num(r, "__time__") * 1_000_000_000);
            let h = ours
                .iter()
                .find(|p| {
                    p.metric == "wirelens.l7.duration"
                        && attr(p.resource, "process.pid").as_deref() == Some(pid)
                        && int(&p.point["time_unix_nano"]) == time
                        && attr(&p.point["attributes"], "wirelens.call") == r["command"].as_str().map(String::from)
                })
                .unwrap_or_else(|| panic!("{transport}: no histogram for {r}"));
            let hp = h.point;
            assert_eq!(int(&hp["count"]), num(r, "total_count"), "{transport}: count of {r}");
            assert_eq!(hp["sum"].as_f64().unwrap() as u64, num(r, "total_latency_ns"), "{transport}: sum of {r}");
            let max = num(r, "latency_max_ns");
            assert_eq!(hp["max"].as_f64().unwrap() as u64, max, "{transport}: max of {r}");
            let counts: Vec<u64> = hp["positive"]["bucket_counts"].as_array().unwrap().iter().map(int).collect();
            let top = hp["positive"]["offset"].as_i64().unwrap_or(0) + counts.len() as i64 - 1;
            let (low, high) = (2f64.powf(top as f64 / 32.0), 2f64.powf((top + 1) as f64 / 32.0));
            assert!(low < max as f64 && max as f64 <= high, "{transport}: max {max} in the top bucket ({low}, {high}]");
            assert_eq!(counts.iter().sum::<u64>(), num(r, "total_count"));
            assert_eq!(attr(h.resource, "process.executable.name").as_deref(), Some("redis-cli"));
            assert_eq!(attr(h.resource, "service.name").as_deref(), Some("redis-cli"));
        }

        let sent: u64 = ours
            .iter()
            .filter(|p| {
                p.metric == "wirelens.l4.bytes"
                    && attr(&p.point["attributes"], "network.io.direction").as_deref() == Some("transmit")
            })
            .map(|p| int(&p.point["as_int"]))
            .sum();
        assert_eq!(sent, l4_sent, "{transport}: layer-4 bytes sent to the server");

        let health: BTreeMap<&str, &Value> = points
            .iter()
            .filter(|p| {
                p.metric.starts_with("wirelens.health.")
                    && attr(p.resource, "service.name").as_deref() == Some("wirelens")
            })
            .map(|p| (p.metric, p.point))
            .collect();
        assert!(health.get("wirelens.health.events").is_some_and(|p| int(&p["as_int"]) > 0), "{transport}: health");
        assert!(health.contains_key("wirelens.health.connections"), "{transport}: health levels");
    }
    let last = last_health(&records).unwrap();
    assert_eq!(num(last, "flusher_dropped"), 0, "nothing dropped");
}

/// A receiver that refuses every request for good (HTTP 400, gRPC
/// INVALID_ARGUMENT): the records are dropped, not retried forever, and
/// every one is counted in the health record.
#[test]
fn a_final_refusal_drops_and_counts_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path(), &["--refuse"]);
    let flushers = format!(
        "  - Type: flusher_otlp\n    Protocol: http/protobuf\n    Endpoint: http://127.0.0.1:{}\n  - Type: flusher_otlp\n    Endpoint: http://127.0.0.1:{}\n",
        receiver.http_port, receiver.grpc_port
    );
    let daemon = Daemon::start(&(config("", "", "") + &flushers));
    let dropped = |rs: &[Value]| last_health(rs).map_or(0, |h| num(h, "flusher_dropped"));
    assert!(daemon.wait_for(Duration::from_secs(20), |rs| dropped(rs) >= 4), "{}", daemon.stderr());
    let stderr = daemon.stderr();
    assert!(stderr.contains("HTTP 400") && stderr.contains("InvalidArgument"), "the refusals are logged:\n{stderr}");
    let records = daemon.stop();
    let requests = receiver.requests();
    for transport in ["grpc", "http"] {
        let n = requests.iter().filter(|r| r["transport"] == transport).count();
        assert!(n >= 2, "{transport}: requests went on being sent after a refusal ({n})");
        assert!(requests.iter().all(|r| r["status"] == "refused"));
    }
    assert!(dropped(&records) >= 4);
}
