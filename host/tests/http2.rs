//! HTTP/2 and gRPC end to end: curl with prior knowledge against nginx's
//! `http2` listener, and grpcio's client and server (plaintext), watched by
//! the daemon with the built-in HTTP/2 plugin. Calls are selected by the
//! test's own ports; tshark decodes the same traffic and must count the
//! same calls and failures. Needs root, nginx-light, curl, tshark and
//! grpcio (scripts/setup.sh installs them).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::daemon::{config, l7_total, last_health, num, Daemon};
use common::servers::{client_of, free_port, self_signed, Nginx};
use common::tshark::{observed, Capture};
use serde_json::Value;

fn daemon() -> Daemon {
    Daemon::start(&config("DropLocalConnections: false\nFlushOutL7Interval: 1", "", ""))
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{:?}: {e}", cmd.get_program()));
    assert!(out.status.success(), "{:?}: {}", cmd.get_program(), String::from_utf8_lossy(&out.stderr));
    out
}

/// Calls of `records` matching `pred`, summed by the values of `field`.
fn calls_by(records: &[Value], pred: impl Fn(&Value) -> bool, field: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for r in records.iter().filter(|r| r["type"] == "protocols" && r["protocol"] == "http2" && pred(r)) {
        *out.entry(r[field].as_str().unwrap_or("-").to_string()).or_default() += num(r, "total_count");
    }
    out
}

fn server_pid(pid: u32) -> impl Fn(&Value) -> bool {
    let pid = pid.to_string();
    move |r: &Value| r["role"] == "server" && r["_process_pid_"] == pid.as_str()
}

#[test]
fn curl_to_nginx_with_prior_knowledge_counts_every_call() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("index.html"), "hello\n").unwrap();
    std::fs::write(root.path().join("big.bin"), "b".repeat(2 << 20)).unwrap();
    let nginx = Nginx::start_h2c(root.path());
    let port = nginx.port;
    let capture = Capture::start(port);
    let daemon = daemon();
    let base = format!("http://127.0.0.1:{port}");
    // One connection per request: curl 7.88 does not reuse a connection
    // opened with prior knowledge (its second transfer fails with "HTTP/2
    // framing layer"); several streams on one connection are curl over TLS
    // and grpcio below.
    for path in ["/index.html", "/big.bin", "/missing", "/index.html?again=1"] {
        let out = run(Command::new("curl")
            .args(["-s", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version} %{http_code}"])
            .arg(format!("{base}{path}")));
        let want = if path == "/missing" { "2 404" } else { "2 200" };
        assert_eq!(String::from_utf8_lossy(&out.stdout), want, "curl spoke HTTP/2 for {path}");
    }
    run(Command::new("curl").args(["-s", "--http2-prior-knowledge", "-I", &format!("{base}/big.bin")]));
    let decoder = capture.stop().http2(port);
    assert_eq!((decoder.calls, decoder.failed), (5, 1), "tshark decodes the workload");
    let client = client_of_port(port);
    let server = server_pid(nginx.child.id());
    daemon.wait_for(Duration::from_secs(20), |rs| {
        observed(rs, "http2", &client).calls >= 5 && observed(rs, "http2", &server).calls >= 5
    });
    std::thread::sleep(Duration::from_millis(1500));
    let records = daemon.stop();
    for (side, pred) in [("client", &client as &dyn Fn(&Value) -> bool), ("server", &server)] {
        let seen = observed(&records, "http2", pred);
        assert_eq!((seen.calls, seen.failed), (decoder.calls, decoder.failed), "{side}: calls and failures as tshark");
        let by_url = calls_by(&records, pred, "url");
        assert_eq!(
            by_url,
            BTreeMap::from([("/big.bin".into(), 2), ("/index.html".into(), 2), ("/missing".into(), 1)]),
            "{side}: calls by url"
        );
        let by_method = calls_by(&records, pred, "method");
        assert_eq!(by_method, BTreeMap::from([("GET".into(), 4), ("HEAD".into(), 1)]), "{side}: calls by method");
        // The 2 MiB body was mostly not copied: its size is whole all the same.
        let big_get: u64 = l7_total(&records, "http2", "total_resp_bytes", |r| {
            pred(r) && r["url"] == "/big.bin" && r["method"] == "GET"
        });
        assert!(big_get > 2 << 20, "{side}: the big response's size ({big_get} bytes)");
        assert!(
            records.iter().filter(|r| r["protocol"] == "http2" && pred(r)).all(|r| r["version"] == "2"),
            "{side}: version 2"
        );
    }
}

fn client_of_port(port: u16) -> impl Fn(&Value) -> bool {
    move |r: &Value| client_of(r, port)
}

/// The gRPC server of tests/e2e/grpc_calls.py on a free port, ready.
fn grpc_server(script: &std::path::Path) -> (std::process::Child, u16) {
    let port = free_port();
    let mut server =
        Command::new("python3").arg(script).args(["server", &port.to_string()]).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "the gRPC server did not start: python3 -m pip install grpcio (scripts/setup.sh)");
    (server, port)
}

/// A gRPC channel opened before the daemon started: its header tables
/// are unknown to the plugin. Every later call still counts (with the
/// fields that decode without the tables: the method, a path sent as a
/// literal), and the health record counts the connection.
#[test]
fn a_channel_older_than_the_daemon_counts_every_call() {
    use std::io::Write;
    const UNARY: u64 = 10;
    let script = common::root().join("tests/e2e/grpc_calls.py");
    let (mut server, port) = grpc_server(&script);
    let mut client = Command::new("python3")
        .arg(&script)
        .args(["hold", &port.to_string(), &UNARY.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(client.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "open");
    let daemon = daemon();
    assert!(daemon.wait_for(Duration::from_secs(15), |rs| rs.iter().any(|r| r["type"] == "health")));
    writeln!(client.stdin.as_mut().unwrap()).unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "done");
    let _ = client.wait();
    let calls = UNARY + 1;
    let cli = client_of_port(port);
    let srv = server_pid(server.id());
    daemon.wait_for(Duration::from_secs(20), |rs| {
        observed(rs, "http2", &cli).calls >= calls && observed(rs, "http2", &srv).calls >= calls
    });
    std::thread::sleep(Duration::from_millis(1500));
    let records = daemon.stop();
    let _ = server.kill();
    let _ = server.wait();
    for (side, pred) in [("client", &cli as &dyn Fn(&Value) -> bool), ("server", &srv)] {
        let seen = observed(&records, "http2", pred);
        assert_eq!(seen.calls, calls, "{side}: every call after the daemon started");
        // Missing failed: read as a failure, or unknown (its status may be
        // an entry from before), never as a success.
        assert!(seen.failed <= 1 && seen.failed + seen.unknown >= 1, "{side}: outcomes {seen:?}");
        assert_eq!(calls_by(&records, pred, "method"), BTreeMap::from([("POST".into(), calls)]), "{side}: methods");
        let urls = calls_by(&records, pred, "url");
        assert_eq!(urls.get("/demo.Store/Missing"), Some(&1), "{side}: a literal path decodes: {urls:?}");
    }
    let health = last_health(&records).unwrap();
    assert!(num(health, "l7_connections_midway") >= 2, "both ends of the channel joined midway: {health}");
}

/// grpcio's server and client in processes of their own, 24 streams on one
/// channel: unary calls, one NOT_FOUND, server, client and bidirectional
/// streaming.
#[test]
fn grpcio_calls_get_their_method_status_and_message_counts() {
    const UNARY: u64 = 20;
    let script = common::root().join("tests/e2e/grpc_calls.py");
    let (mut server, port) = grpc_server(&script);
    let capture = Capture::start(port);
    let daemon = daemon();
    let out = run(Command::new("python3").arg(&script).args(["client", &port.to_string(), &UNARY.to_string()]));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "done");
    let decoder = capture.stop().http2(port);
    let calls = UNARY + 4;
    assert_eq!((decoder.calls, decoder.failed), (calls, 1), "tshark decodes the workload");
    let client = client_of_port(port);
    let srv = server_pid(server.id());
    daemon.wait_for(Duration::from_secs(20), |rs| {
        observed(rs, "http2", &client).calls >= calls && observed(rs, "http2", &srv).calls >= calls
    });
    std::thread::sleep(Duration::from_millis(1500));
    let records = daemon.stop();
    let _ = server.kill();
    let _ = server.wait();
    for (side, pred) in [("client", &client as &dyn Fn(&Value) -> bool), ("server", &srv)] {
        let seen = observed(&records, "http2", pred);
        assert_eq!((seen.calls, seen.failed), (decoder.calls, decoder.failed), "{side}: calls and failures as tshark");
        assert_eq!(
            calls_by(&records, pred, "grpc_method"),
            BTreeMap::from([
                ("Chat".into(), 1),
                ("Get".into(), UNARY),
                ("Missing".into(), 1),
                ("Upload".into(), 1),
                ("Watch".into(), 1)
            ]),
            "{side}: calls by gRPC method: {:#?}",
            records.iter().filter(|r| r["protocol"] == "http2" && pred(r)).collect::<Vec<_>>()
        );
        let mine = |method: &str| {
            records
                .iter()
                .find(|r| r["protocol"] == "http2" && pred(r) && r["grpc_method"] == method)
                .unwrap_or_else(|| panic!("{side}: no {method} record"))
                .clone()
        };
        let missing = mine("Missing");
        assert_eq!((missing["grpc_status"].as_str(), missing["success"].as_str()), (Some("5"), Some("0")), "{side}");
        let get = mine("Get");
        assert_eq!((get["grpc_status"].as_str(), get["grpc_service"].as_str()), (Some("0"), Some("demo.Store")));
        for (method, req, resp) in [("Get", "1", "1"), ("Watch", "1", "3"), ("Upload", "4", "1"), ("Chat", "2", "2")] {
            let r = mine(method);
            assert_eq!(
                (r["request_messages"].as_str(), r["response_messages"].as_str()),
                (Some(req), Some(resp)),
                "{side}: {method}'s messages"
            );
        }
    }
}

/// A gRPC call the client gives up (its deadline passes: grpcio resets the
/// stream, as tshark sees) while nginx sleeps on it (the server sends no
/// reset in return, and no response): the call ends at the reset, a
/// failure, with the time to the reset as its latency, at both ends. It
/// once waited for a response that never came, and failed at the
/// connection's close with no latency (or 30 s later on a channel kept
/// open).
#[test]
fn a_call_the_client_cancels_ends_at_the_reset() {
    let root = tempfile::tempdir().unwrap();
    let nginx = Nginx::start_h2c_slow(root.path());
    let port = nginx.port;
    let script = common::root().join("tests/e2e/grpc_calls.py");
    let capture = Capture::start(port);
    let daemon = daemon();
    let out = run(Command::new("python3").arg(&script).args(["cancel", &port.to_string()]));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "done");
    let decoded = capture.stop();
    let resets = decoded.fields(&[format!("tcp.port=={port},http2")], "http2.type == 3", &["tcp.dstport"]);
    let from_client = resets.iter().filter(|r| r[0] == [port.to_string()]).count();
    assert_eq!((resets.len(), from_client), (1, 1), "tshark sees one RST_STREAM, the client's: {resets:?}");
    let client = client_of_port(port);
    let srv = server_pid(nginx.child.id());
    let slow = |rs: &[Value], pred: &dyn Fn(&Value) -> bool| -> Vec<Value> {
        rs.iter().filter(|r| r["protocol"] == "http2" && pred(r) && r["grpc_method"] == "Slow").cloned().collect()
    };
    daemon.wait_for(Duration::from_secs(10), |rs| !slow(rs, &client).is_empty() && !slow(rs, &srv).is_empty());
    std::thread::sleep(Duration::from_millis(1500));
    let records = daemon.stop();
    for (side, pred) in [("client", &client as &dyn Fn(&Value) -> bool), ("server", &srv)] {
        let calls: Vec<Value> = slow(&records, pred);
        assert_eq!(calls.len(), 1, "{side}: one record of the Slow call: {calls:#?}");
        let r = &calls[0];
        assert_eq!((num(r, "total_count"), r["success"].as_str()), (1, Some("0")), "{side}: a failed call: {r}");
        let latency_ms = num(r, "total_latency_ns") / 1_000_000;
        assert!((250..2500).contains(&latency_ms), "{side}: the time to the reset, 0.3 s: {latency_ms} ms: {r}");
    }
}

/// curl -> nginx over HTTPS, where ALPN chose h2: the plaintext read at
/// OpenSSL starts with the preface, and the calls are HTTP/2's, flagged
/// TLS; curl's three transfers are three streams on one connection.
#[test]
fn https_with_alpn_h2_is_parsed_from_the_plaintext() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("index.html"), "hello\n").unwrap();
    let cert = self_signed();
    let nginx = Nginx::start_tls_h2(root.path(), &cert);
    let daemon = daemon();
    daemon.wait_for_tls_libraries(1);
    let base = format!("https://127.0.0.1:{}", nginx.port);
    let out = run(Command::new("curl")
        .args(["-s", "-k", "--http2", "-w", "%{http_version} %{http_code}\n"])
        .args(["-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null"])
        .args([format!("{base}/index.html"), format!("{base}/missing"), format!("{base}/index.html?b=2")]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200\n2 404\n2 200\n", "curl chose h2 by ALPN");
    let client = client_of_port(nginx.port);
    let server = server_pid(nginx.child.id());
    daemon.wait_for(Duration::from_secs(20), |rs| {
        observed(rs, "http2", &client).calls >= 3 && observed(rs, "http2", &server).calls >= 3
    });
    std::thread::sleep(Duration::from_millis(1500));
    let records = daemon.stop();
    for (side, pred) in [("client", &client as &dyn Fn(&Value) -> bool), ("server", &server)] {
        let seen = observed(&records, "http2", pred);
        assert_eq!((seen.calls, seen.failed), (3, 1), "{side}: calls and failures");
        let mine: Vec<&Value> = records.iter().filter(|r| r["protocol"] == "http2" && pred(r)).collect();
        assert!(mine.iter().all(|r| r["tls"] == "1"), "{side}: flagged TLS: {mine:#?}");
        assert_eq!(
            calls_by(&records, pred, "url"),
            BTreeMap::from([("/index.html".into(), 2), ("/missing".into(), 1)])
        );
    }
}

/// curl --http2 to a server that accepts `Upgrade: h2c` (the `h2` package;
/// nginx offers none): the HTTP/1 plugin follows the connection into
/// HTTP/2. The upgraded request is answered on stream 1 and later
/// transfers reuse the connection; every call is counted on both sides as
/// tshark decodes them, as `http` records with the HTTP/2 answer's status.
#[test]
fn an_h2c_upgrade_is_followed_by_the_http_plugin() {
    let port = free_port();
    let mut server = Command::new("python3")
        .arg(common::root().join("tests/e2e/h2c_server.py"))
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "the h2c server did not start: python3 -m pip install h2 (scripts/setup.sh)");
    let capture = Capture::start(port);
    let daemon = daemon();
    let base = format!("http://127.0.0.1:{port}");
    let out = run(Command::new("curl")
        .args(["-s", "--http2", "-w", "%{http_version} %{http_code}\n", "-o", "/dev/null"])
        .arg(format!("{base}/index.html")));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200\n");
    let out = run(Command::new("curl")
        .args(["-s", "--http2", "-w", "%{http_version} %{http_code}\n", "-o", "/dev/null", "-o", "/dev/null"])
        .args([format!("{base}/missing"), format!("{base}/index.html?b=2")]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 404\n2 200\n", "the second transfer reuses the connection");
    let decoder = capture.stop().http_h2c(port);
    assert_eq!((decoder.calls, decoder.failed), (3, 1), "tshark decodes the workload");
    let cli = client_of_port(port);
    let srv = server_pid(server.id());
    daemon.wait_for(Duration::from_secs(20), |rs| {
        observed(rs, "http", &cli).calls >= 3 && observed(rs, "http", &srv).calls >= 3
    });
    std::thread::sleep(Duration::from_millis(1500));
    let records = daemon.stop();
    let _ = server.kill();
    let _ = server.wait();
    for (side, pred) in [("client", &cli as &dyn Fn(&Value) -> bool), ("server", &srv)] {
        let seen = observed(&records, "http", pred);
        assert_eq!((seen.calls, seen.failed), (decoder.calls, decoder.failed), "{side}: calls and failures as tshark");
        let codes: BTreeMap<String, u64> = {
            let mut m = BTreeMap::new();
            for r in records.iter().filter(|r| r["protocol"] == "http" && pred(r)) {
                *m.entry(format!("{} {}", r["url"].as_str().unwrap_or("-"), r["resp_code"].as_str().unwrap_or("-")))
                    .or_default() += num(r, "total_count");
            }
            m
        };
        assert_eq!(
            codes,
            BTreeMap::from([("/index.html 200".into(), 2), ("/missing 404".into(), 1)]),
            "{side}: each call with its url and the status HTTP/2 answered"
        );
    }
    assert!(observed(&records, "http2", &cli).calls == 0, "the upgraded connection stays the http plugin's");
}
