//! MQTT end to end: mosquitto_sub and mosquitto_pub (3.1.1 and 5.0, every
//! QoS, several messages on one connection, a 100 KB payload, clients the
//! broker refuses) against mosquitto, watched by the daemon with the
//! built-in MQTT plugin. Calls are selected by the test's own ports, on
//! both ends; tshark decodes the same traffic and must count the same
//! calls and failures. Needs root, mosquitto, mosquitto-clients and tshark
//! (scripts/setup.sh installs them).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::daemon::{config, l7_total, num, Daemon};
use common::servers::{client_of, Mosquitto};
use common::tshark::{observed, Capture};
use serde_json::Value;

fn publish(port: u16, args: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub (apt-get install mosquitto-clients; scripts/setup.sh does it)");
    if let Some(bytes) = stdin {
        child.stdin.take().unwrap().write_all(bytes).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn by_type(records: &[Value], side: &dyn Fn(&Value) -> bool) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for r in records.iter().filter(|r| r["type"] == "protocols" && r["protocol"] == "mqtt" && side(r)) {
        *out.entry(r["packet_type"].as_str().unwrap_or("-").to_string()).or_default() += num(r, "total_count");
    }
    out
}

#[test]
fn publishes_at_every_qos_subscriptions_and_refusals_are_counted_on_both_ends() {
    let broker = Mosquitto::start();
    let (port, closed) = (broker.port, broker.closed_port);
    let (capture, closed_capture) = (Capture::start(port), Capture::start(closed));
    let daemon = Daemon::start(&config("DropLocalConnections: false\nFlushOutL7Interval: 1", "", ""));
    // The subscriber takes the 8 messages below at QoS 2 (each delivered at
    // the QoS it was published with).
    let sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "wl/#", "-q", "2", "-C", "8", "-V", "mqttv5"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub (apt-get install mosquitto-clients; scripts/setup.sh does it)");
    std::thread::sleep(Duration::from_millis(500));
    for (topic, qos, version) in [("wl/zero", "0", "mqttv311"), ("wl/one", "1", "mqttv311"), ("wl/two", "2", "mqttv5")] {
        let out = publish(port, &["-t", topic, "-m", "hello", "-q", qos, "-V", version], None);
        assert!(out.status.success(), "mosquitto_pub: {}", String::from_utf8_lossy(&out.stderr));
    }
    // Four lines, four publishes on one connection.
    let out = publish(port, &["-t", "wl/lines", "-l", "-q", "1", "-V", "mqttv5"], Some(b"a\nb\nc\nd\n"));
    assert!(out.status.success(), "mosquitto_pub -l: {}", String::from_utf8_lossy(&out.stderr));
    let big = vec![b'x'; 100_000];
    let out = publish(port, &["-t", "wl/big", "-s", "-q", "1", "-V", "mqttv5"], Some(&big));
    assert!(out.status.success(), "mosquitto_pub -s: {}", String::from_utf8_lossy(&out.stderr));
    let got = sub.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&got.stdout).lines().count(), 8, "the subscriber got every message");
    // Refused: anonymous clients on the closed listener, in both versions.
    for version in ["mqttv311", "mqttv5"] {
        let out = publish(closed, &["-t", "wl/no", "-m", "x", "-V", version], None);
        assert!(!out.status.success(), "the closed listener refuses anonymous clients");
    }
    std::thread::sleep(Duration::from_millis(1000));
    let decoded = capture.stop().mqtt(port);
    let closed_decoded = closed_capture.stop().mqtt(closed);
    // 6 connections: CONNECT each, DISCONNECT each publisher; the
    // subscriber's SUBSCRIBE and its DISCONNECT; 8 PUBLISH, 1 PUBREL out;
    // 8 deliveries in.
    assert_eq!((decoded.calls, decoded.failed), (6 + 5 + 2 + 8 + 1 + 8, 0), "tshark decodes the workload");
    assert_eq!((closed_decoded.calls, closed_decoded.failed), (2, 2), "tshark decodes the refusals");

    let client = move |r: &Value| client_of(r, port);
    let closed_client = move |r: &Value| client_of(r, closed);
    // Both listeners are the one broker process.
    let pid = broker.child.id().to_string();
    let server = move |r: &Value| r["role"] == "server" && r["_process_pid_"] == pid.as_str();
    daemon.wait_for(Duration::from_secs(20), |rs| {
        observed(rs, "mqtt", &client).calls >= decoded.calls
            && observed(rs, "mqtt", &closed_client).calls >= closed_decoded.calls
            && observed(rs, "mqtt", &server).calls >= decoded.calls + closed_decoded.calls
    });
    std::thread::sleep(Duration::from_millis(1500));
    let records = daemon.stop();
    let want = (decoded.calls + closed_decoded.calls, decoded.failed + closed_decoded.failed);
    for (what, side) in [("client", &client as &dyn Fn(&Value) -> bool), ("server", &server)] {
        let mut seen = observed(&records, "mqtt", side);
        if what == "client" {
            let closed_seen = observed(&records, "mqtt", &closed_client);
            seen.calls += closed_seen.calls;
            seen.failed += closed_seen.failed;
            seen.unknown += closed_seen.unknown;
        }
        assert_eq!((seen.calls, seen.failed, seen.unknown), (want.0, want.1, 0), "{what}: calls, failures, unknown");
        let types = by_type(&records, side);
        assert_eq!(types.get("PUBLISH"), Some(&16), "{what}: {types:?}");
        assert_eq!(types.get("PUBREL"), Some(&1), "{what}: {types:?}");
        assert_eq!(types.get("SUBSCRIBE"), Some(&1), "{what}: {types:?}");
    }
    // The 100 KB publish was mostly not copied; its size is whole.
    let big_bytes: u64 = l7_total(&records, "mqtt", "total_req_bytes", |r| client(r) && r["topic"] == "wl/big");
    assert!(big_bytes > 100_000, "the large publish's size ({big_bytes} bytes)");
}
