//! The daemon's main path without the kernel (runs unprivileged): events
//! built by hand go through the same `Collector` the daemon runs
//! (connections, process metadata and filters, the protocol plugins, the
//! stitcher, both windows) and come out as typed records.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use serde_json::Value;
use wirelens::capture::{Direction, EventBatch, Mode, ProcKey, Role, SocketControl};
use wirelens::collector::Collector;
use wirelens::config::Config;
use wirelens::records::Record;

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
const SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

fn collector(common: &str) -> Collector {
    let text = format!(
        "inputs:\n  - Type: observer_ilogtail_network_v1\n    Common:\n      ProtocolProcess: true\n{common}flushers:\n  - Type: flusher_stdout\n"
    );
    let config = Config::parse(&text, Path::new("collector-test.yaml")).unwrap();
    Collector::new(&config, None).unwrap()
}

fn json(records: &[Record]) -> Vec<Value> {
    records.iter().map(|r| serde_json::from_str(&r.to_json()).unwrap()).collect()
}

fn num(r: &Value, field: &str) -> u64 {
    r[field].as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{field} in {r}"))
}

const HTTP_REQUEST: &[u8] = b"GET /items/42 HTTP/1.1\r\nHost: shop\r\n\r\n";
const HTTP_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";

/// This test's own process (metadata comes from /proc as for any process).
fn me() -> ProcKey {
    ProcKey { pid: std::process::id(), start_ns: 1 }
}

/// `calls` HTTP calls on `conns` client connections, 1 ms apart each, then
/// each connection closes.
fn http_calls(c: &mut Collector, conns: u64, calls: u64) {
    let (req, resp) = (HTTP_REQUEST, HTTP_RESPONSE);
    let mut ts = 1_000_000_000;
    let mut batch = EventBatch::default();
    for i in 0..calls {
        let sock = 100 + i % conns;
        let local = (LOCAL, 40_000 + (i % conns) as u16);
        batch.data(me(), sock, ts, Direction::Egress, Role::Client, local, (SERVER, 8080), req);
        batch.data(me(), sock, ts + 1_000_000, Direction::Ingress, Role::Client, local, (SERVER, 8080), resp);
        ts += 2_000_000;
    }
    for i in 0..conns {
        batch.close(100 + i, ts);
    }
    c.on_batch(&batch);
}

#[test]
fn events_become_layer_4_and_layer_7_records() {
    let mut c = collector("");
    http_calls(&mut c, 4, 100);
    c.poll_l7();
    let l7 = json(&c.flush_l7());
    let http: Vec<&Value> = l7.iter().filter(|r| r["protocol"] == "http").collect();
    assert_eq!(http.len(), 1, "one key (same process, remote, method, path, status): {l7:?}");
    let r = http[0];
    assert_eq!(r["type"], "protocols");
    assert_eq!(r["_process_pid_"], std::process::id().to_string());
    assert!(r["_process_cmd_"].as_str().unwrap().contains("collector"), "the command line from /proc: {r}");
    assert_eq!(r["success"], "1");
    assert_eq!(r["role"], "client");
    assert_eq!(num(r, "total_count"), 100);
    // Every call took exactly 1 ms, send to receive.
    assert_eq!(num(r, "total_latency_ns"), 100 * 1_000_000);
    assert_eq!(num(r, "total_req_bytes"), 100 * HTTP_REQUEST.len() as u64);
    assert_eq!(num(r, "total_resp_bytes"), 100 * HTTP_RESPONSE.len() as u64);
    let remote: Value = serde_json::from_str(r["remote_info"].as_str().unwrap()).unwrap();
    assert_eq!(remote["remote_ip"], "10.0.0.2");
    assert_eq!(remote["remote_type"], "server");

    let l4 = json(&c.flush_l4(Default::default()));
    let stats: Vec<&Value> = l4.iter().filter(|r| r["type"] == "statistics").collect();
    assert_eq!(stats.iter().map(|r| num(r, "send_packets")).sum::<u64>(), 100);
    assert_eq!(stats.iter().map(|r| num(r, "recv_bytes")).sum::<u64>(), 100 * HTTP_RESPONSE.len() as u64);
    let health = l4.iter().find(|r| r["type"] == "health").expect("a health record");
    assert_eq!(num(health, "connections"), 0, "every connection closed: {health}");
}

/// Two connections to two servers whose calls interleave, each side
/// pipelining two requests in one write: every message is stitched on its
/// own connection and counted under its own server, whatever order the
/// messages of the two come in.
#[test]
fn interleaved_connections_keep_their_own_calls() {
    let mut c = collector("");
    let other = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3));
    let two: Vec<u8> = [HTTP_REQUEST, HTTP_REQUEST].concat();
    let mut batch = EventBatch::default();
    let mut ts = 1_000_000_000;
    for _ in 0..10 {
        let (a, b) = ((LOCAL, 40_001), (LOCAL, 40_002));
        batch.data(me(), 1, ts, Direction::Egress, Role::Client, a, (SERVER, 8080), &two);
        batch.data(me(), 2, ts, Direction::Egress, Role::Client, b, (other, 8080), HTTP_REQUEST);
        // Server A answers in 1 ms, server B in 3 ms.
        batch.data(me(), 1, ts + 1_000_000, Direction::Ingress, Role::Client, a, (SERVER, 8080), HTTP_RESPONSE);
        batch.data(me(), 1, ts + 1_000_000, Direction::Ingress, Role::Client, a, (SERVER, 8080), HTTP_RESPONSE);
        batch.data(me(), 2, ts + 3_000_000, Direction::Ingress, Role::Client, b, (other, 8080), HTTP_RESPONSE);
        ts += 10_000_000;
    }
    c.on_batch(&batch);
    c.poll_l7();
    let l7 = json(&c.flush_l7());
    let by_server = |ip: &str| -> &Value {
        l7.iter()
            .find(|r| r["protocol"] == "http" && r["remote_info"].as_str().unwrap().contains(ip))
            .unwrap_or_else(|| panic!("no call to {ip}: {l7:?}"))
    };
    let (a, b) = (by_server("10.0.0.2"), by_server("10.0.0.3"));
    assert_eq!((num(a, "total_count"), num(b, "total_count")), (20, 10), "{l7:?}");
    assert_eq!(num(a, "total_latency_ns"), 20 * 1_000_000);
    assert_eq!(num(b, "total_latency_ns"), 10 * 3_000_000);
    assert_eq!(c.flush_l7().len(), 0, "every call was counted in the first window");
}

#[test]
fn a_process_the_filters_exclude_yields_nothing() {
    let mut c = collector("      IncludeCmdRegex: '^no-such-program'\n");
    http_calls(&mut c, 1, 10);
    c.poll_l7();
    assert!(json(&c.flush_l7()).is_empty());
    let l4 = json(&c.flush_l4(Default::default()));
    assert!(l4.iter().all(|r| r["type"] == "health"), "{l4:?}");
    assert_eq!(c.kernel_denials(), vec![me()], "denied in the kernel from now on (by pid and start)");
}

#[test]
fn a_request_without_its_response_fails_when_its_connection_closes() {
    let mut c = collector("");
    let local = (LOCAL, 40_001);
    let req = b"*1\r\n$4\r\nPING\r\n";
    let mut batch = EventBatch::default();
    batch.data(me(), 7, 1_000, Direction::Egress, Role::Client, local, (SERVER, 6379), req);
    batch.close(7, 2_000);
    c.on_batch(&batch);
    c.poll_l7();
    let l7 = json(&c.flush_l7());
    let redis: Vec<&Value> = l7.iter().filter(|r| r["protocol"] == "redis").collect();
    assert_eq!(redis.len(), 1, "{l7:?}");
    assert_eq!(num(redis[0], "total_count"), 1);
    assert_eq!(redis[0]["success"], "0");
}

#[test]
fn plugin_options_reach_the_plugin() {
    let text = |options: &str| {
        format!(
            "inputs:\n  - Type: observer_ilogtail_network_v1\n    Wirelens:\n      PluginOptions:\n{options}flushers:\n  - Type: flusher_stdout\n"
        )
    };
    let url = |options: &str| {
        let config = Config::parse(&text(options), Path::new("options.yaml")).unwrap();
        let mut c = Collector::new(&config, None).unwrap();
        let local = (LOCAL, 40_002);
        let req = b"GET /search?q=shoes HTTP/1.1\r\nHost: shop\r\n\r\n";
        let mut batch = EventBatch::default();
        batch.data(me(), 9, 1_000, Direction::Egress, Role::Client, local, (SERVER, 80), req);
        batch.data(me(), 9, 2_000, Direction::Ingress, Role::Client, local, (SERVER, 80), HTTP_RESPONSE);
        c.on_batch(&batch);
        c.poll_l7();
        let l7 = json(&c.flush_l7());
        l7.iter().find(|r| r["protocol"] == "http").map(|r| r["url"].as_str().unwrap().to_string()).unwrap()
    };
    assert_eq!(url("        http: {keep_query: false}\n"), "/search");
    assert_eq!(url("        http: {keep_query: true}\n"), "/search?q=shoes");

    // A value or key the plugin refuses stops the daemon at start, naming
    // the plugin, the key and why.
    for (options, expect) in [
        ("        http: {keep_query: maybe}\n", "option `keep_query`: must be true or false, not `maybe`"),
        ("        http: {keep_qurey: true}\n", "option `keep_qurey`: unknown option (known: keep_query)"),
        ("        redis: {depth: 3}\n", "option `depth`: unknown option (this protocol takes none)"),
    ] {
        let config = Config::parse(&text(options), Path::new("options.yaml")).unwrap();
        let err = format!("{:#}", Collector::new(&config, None).err().expect(options));
        assert!(err.contains("Wirelens.PluginOptions.") && err.contains(expect), "{err}");
    }
}

/// What the plugins learn reaches the kernel as socket controls: a claimed
/// connection gets its plugin's copy budget, a body of known length a skip
/// to its end, and a connection no plugin claims is left to the kernel's
/// counting.
#[test]
fn plugins_tell_the_kernel_what_to_copy() {
    let mut c = collector("");
    let local = (LOCAL, 40_001);
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 3000000\r\n\r\n";
    let mut first = head.to_vec();
    first.resize(4096, b'b');
    let mut batch = EventBatch::default();
    batch.data(me(), 7, 1_000, Direction::Egress, Role::Client, local, (SERVER, 8080), HTTP_REQUEST);
    batch.data(me(), 7, 2_000, Direction::Ingress, Role::Client, local, (SERVER, 8080), &first);
    // The server's side of the same (its response head written alone, as
    // nginx does before sendfile).
    batch.data(me(), 9, 1_000, Direction::Ingress, Role::Server, (SERVER, 8080), (LOCAL, 40_003), HTTP_REQUEST);
    batch.data(me(), 9, 2_000, Direction::Egress, Role::Server, (SERVER, 8080), (LOCAL, 40_003), head);
    // Not a protocol any plugin knows: judged once both directions' first
    // bytes were seen.
    for (ts, direction) in [(3_000, Direction::Egress), (4_000, Direction::Ingress)] {
        batch.data(me(), 8, ts, direction, Role::Client, (LOCAL, 40_002), (SERVER, 9), &[0xfe; 8192]);
    }
    c.on_batch(&batch);
    let mut controls = vec![];
    for _ in 0..200 {
        c.poll_l7();
        controls.extend(c.take_controls());
        let skips = |sock: u64, d: usize| controls.iter().any(|(s, k)| *s == sock && k.skip_until[d] > 0);
        if skips(7, 1) && skips(9, 0) && controls.iter().any(|(s, _)| *s == 8) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let last = |sock| controls.iter().rev().find(|(s, _)| *s == sock).map(|(_, k)| *k);
    let http = last(7).unwrap_or_else(|| panic!("a control for the HTTP connection: {controls:?}"));
    assert_eq!(http.mode, Mode::Copy);
    assert_eq!(http.budget, [1024, 512], "the HTTP plugin's budget (requests out, responses in)");
    assert_eq!(http.skip_until, [0, (head.len() + 3_000_000) as u64], "the body is skipped to its end");
    let server = last(9).unwrap_or_else(|| panic!("a control for the server's side: {controls:?}"));
    assert_eq!(server.skip_until, [(head.len() + 3_000_000) as u64, 0], "the server's response body");
    let other = last(8).unwrap_or_else(|| panic!("a control for the unknown connection: {controls:?}"));
    assert_eq!(other.mode, Mode::L4, "left to the kernel's counting");
    let l4 = json(&c.flush_l4(Default::default()));
    let health = l4.iter().find(|r| r["type"] == "health").expect("a health record");
    assert_eq!(num(health, "l7_no_protocol"), 1, "the unknown connection, counted in health: {health}");
}

/// A client that makes a request before the last is answered (pipelining)
/// reads and writes several messages per call: from then on its connection
/// is copied whole, in both directions (the heads after the first in a
/// call would lie past the budget). A client that waits for each response
/// keeps its plugin's budget.
#[test]
fn a_pipelining_connection_is_copied_whole() {
    let mut c = collector("");
    let (pipelining, waiting) = ((LOCAL, 40_021), (LOCAL, 40_022));
    let two = [HTTP_REQUEST, HTTP_REQUEST].concat();
    let mut batch = EventBatch::default();
    batch.data(me(), 21, 1_000, Direction::Egress, Role::Client, pipelining, (SERVER, 8080), &two);
    batch.data(me(), 21, 2_000, Direction::Ingress, Role::Client, pipelining, (SERVER, 8080), HTTP_RESPONSE);
    batch.data(me(), 21, 3_000, Direction::Ingress, Role::Client, pipelining, (SERVER, 8080), HTTP_RESPONSE);
    for ts in [1_000, 3_000] {
        batch.data(me(), 22, ts, Direction::Egress, Role::Client, waiting, (SERVER, 8080), HTTP_REQUEST);
        batch.data(me(), 22, ts + 1_000, Direction::Ingress, Role::Client, waiting, (SERVER, 8080), HTTP_RESPONSE);
    }
    c.on_batch(&batch);
    let mut controls = vec![];
    for _ in 0..200 {
        c.poll_l7();
        controls.extend(c.take_controls());
        if controls.iter().any(|(s, _)| *s == 22) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let last = |controls: &[(u64, SocketControl)], sock| {
        controls.iter().rev().find(|(s, _)| *s == sock).map(|(_, k)| k.budget)
    };
    // Seen pipelining as it was detected: never given the budget (a
    // socket's default is whole calls).
    assert_eq!(last(&controls, 21).unwrap_or([0, 0]), [0, 0], "whole calls once pipelining: {controls:?}");
    assert_eq!(last(&controls, 22), Some([1024, 512]), "the plugin's budget: {controls:?}");
    // The waiting client starts pipelining later: its budget goes.
    let mut batch = EventBatch::default();
    batch.data(me(), 22, 5_000, Direction::Egress, Role::Client, waiting, (SERVER, 8080), &two);
    batch.data(me(), 22, 6_000, Direction::Ingress, Role::Client, waiting, (SERVER, 8080), HTTP_RESPONSE);
    batch.data(me(), 22, 7_000, Direction::Ingress, Role::Client, waiting, (SERVER, 8080), HTTP_RESPONSE);
    c.on_batch(&batch);
    for _ in 0..200 {
        c.poll_l7();
        controls.extend(c.take_controls());
        if last(&controls, 22) == Some([0, 0]) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(last(&controls, 22), Some([0, 0]), "whole calls from the pipelining on: {controls:?}");
    let l4 = json(&c.flush_l4(Default::default()));
    let health = l4.iter().find(|r| r["type"] == "health").expect("a health record");
    assert_eq!(num(health, "l7_pipelined_connections"), 2, "{health}");
    let l7 = json(&c.flush_l7());
    let http: u64 = l7.iter().filter(|r| r["protocol"] == "http").map(|r| num(r, "total_count")).sum();
    assert_eq!(http, 6, "every call counted: {l7:?}");
}

/// As curl sees a large response: the request and the response's first
/// read in one batch (the connection is still being detected when the
/// response arrives), that read cut at the capture size; then the next
/// reads. The skip reaches the kernel as the end of the body.
#[test]
fn a_cut_first_read_of_a_large_body_still_gives_its_end() {
    let mut c = collector("");
    let local = (LOCAL, 40_011);
    let head = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 3000000\r\n\r\n";
    let mut first = head.to_vec();
    first.resize(4096, b'b');
    let mut batch = EventBatch::default();
    batch.data(me(), 17, 1_000, Direction::Egress, Role::Client, local, (SERVER, 8080), HTTP_REQUEST);
    let ev = batch.data(me(), 17, 2_000, Direction::Ingress, Role::Client, local, (SERVER, 8080), &first);
    ev.real_len = 102_400;
    c.on_batch(&batch);
    let mut controls = vec![];
    for _ in 0..200 {
        c.poll_l7();
        controls.extend(c.take_controls());
        if controls.iter().any(|(s, k)| *s == 17 && k.skip_until[1] > 0) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let skip = controls.iter().rev().find(|(s, _)| *s == 17).map(|(_, k)| k.skip_until[1]);
    assert_eq!(skip, Some((head.len() + 3_000_000) as u64), "{controls:?}");
}
