//! AMQP 0-9-1 end to end: pika (tests/e2e/amqp_calls.py: declares, a
//! binding, publisher confirms, publishes up to 100 KB, basic.get, a
//! consumer acking, a passive declare the broker refuses, deletes) against
//! a RabbitMQ node of the test's own, watched by the daemon with the
//! built-in AMQP plugin. Calls are selected by the test's own port and the
//! broker's pid, on both ends; tshark decodes the same traffic and must
//! count the same calls and failures. Needs root, rabbitmq-server, pika
//! and tshark (scripts/setup.sh installs them).

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::daemon::{config, l7_total, num, Daemon};
use common::servers::{client_of, RabbitMq};
use common::tshark::{observed, Capture};
use serde_json::Value;

const N: u64 = 20;

fn by_method(records: &[Value], side: &dyn Fn(&Value) -> bool) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for r in records.iter().filter(|r| r["type"] == "protocols" && r["protocol"] == "amqp" && side(r)) {
        *out.entry(r["class_method"].as_str().unwrap_or("-").to_string()).or_default() += num(r, "total_count");
    }
    out
}

#[test]
fn publishes_deliveries_and_synchronous_methods_are_counted_on_both_ends() {
    let broker = RabbitMq::start();
    let port = broker.port;
    let capture = Capture::start(port);
    let daemon = Daemon::start(&config("DropLocalConnections: false\nFlushOutL7Interval: 1", "", ""));
    let script = common::root().join("tests/e2e/amqp_calls.py");
    let out = Command::new("python3").arg(script).args([&port.to_string(), &N.to_string()]).output().unwrap();
    assert!(out.status.success(), "amqp_calls.py: {} (pika: scripts/setup.sh installs it)", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("received {} empty True refused True", N + 1));
    std::thread::sleep(Duration::from_millis(1000));
    let decoded = capture.stop().amqp(port);
    // Handshake (start, tune, open), two channel opens, declares, bind,
    // confirm.select, N+1 publishes each confirmed, get, consume, N
    // deliveries each acked, cancel, get-empty, the refused declare, the
    // deletes and the closes.
    assert_eq!(decoded.failed, 1, "tshark sees the refusal");
    assert!(decoded.calls >= 4 * N, "tshark decodes the workload ({} calls)", decoded.calls);

    let client = move |r: &Value| client_of(r, port);
    let pid = broker.broker_pid().to_string();
    let server = move |r: &Value| r["role"] == "server" && r["_process_pid_"] == pid.as_str();
    daemon.wait_for(Duration::from_secs(20), |rs| {
        observed(rs, "amqp", &client).calls >= decoded.calls && observed(rs, "amqp", &server).calls >= decoded.calls
    });
    std::thread::sleep(Duration::from_millis(1500));
    let records = daemon.stop();
    for (what, side) in [("client", &client as &dyn Fn(&Value) -> bool), ("server", &server)] {
        let seen = observed(&records, "amqp", side);
        assert_eq!((seen.calls, seen.failed, seen.unknown), (decoded.calls, decoded.failed, 0), "{what}: calls, failures, unknown");
        let methods = by_method(&records, side);
        assert_eq!(methods.get("basic.publish"), Some(&(N + 1)), "{what}: {methods:?}");
        assert_eq!(methods.get("basic.deliver"), Some(&N), "{what}: {methods:?}");
        assert_eq!(methods.get("basic.get"), Some(&2), "{what}: {methods:?}");
        assert_eq!(methods.get("queue.declare"), Some(&2), "{what}: {methods:?}");
        let publish_bytes: u64 =
            l7_total(&records, "amqp", "total_req_bytes", |r| side(r) && r["class_method"] == "basic.publish");
        assert!(publish_bytes > 100_000, "{what}: the 100 KB publish's size is whole ({publish_bytes} bytes)");
    }
}
