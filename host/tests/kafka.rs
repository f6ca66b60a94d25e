//! Kafka end to end: kafka-python 3.0 (an acks=1 producer with a 100 KB
//! message, an acks=0 producer, a last acks=1 message `end`, a consumer
//! without a group reading from the beginning up to `end`;
//! tests/e2e/kafka_calls.py) against the Tansu broker,
//! watched by the daemon with the built-in Kafka plugin. Calls are
//! selected by the test's own port and broker pid, on both ends; tshark
//! decodes the same traffic and must count the same calls, calls per API
//! and bytes. Needs root, tansu, kafka-python and tshark (scripts/setup.sh
//! installs them).

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::daemon::{config, last_health, num, Daemon};
use common::servers::{client_of, Tansu};
use common::tshark::{assert_agree, observed, Capture};
use serde_json::Value;

const N: u64 = 20;

/// API names by key, for the ones this workload uses.
const NAMES: [(&str, &str); 6] =
    [("0", "Produce"), ("1", "Fetch"), ("2", "ListOffsets"), ("3", "Metadata"), ("18", "ApiVersions"), ("10", "FindCoordinator")];

fn by_api(records: &[Value], side: &dyn Fn(&Value) -> bool) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for r in records.iter().filter(|r| r["type"] == "protocols" && r["protocol"] == "kafka" && side(r)) {
        *out.entry(r["api"].as_str().unwrap_or("-").to_string()).or_default() += num(r, "total_count");
    }
    out
}

#[test]
fn producers_and_a_consumer_are_counted_on_both_ends() {
    let broker = Tansu::start();
    let port = broker.port;
    let capture = Capture::start(port);
    let daemon = Daemon::start(&config("DropLocalConnections: false\nFlushOutL7Interval: 1", "", ""));
    let script = common::root().join("tests/e2e/kafka_calls.py");
    let out = Command::new("python3").arg(script).args([&port.to_string(), &N.to_string()]).output().unwrap();
    assert!(
        out.status.success(),
        "kafka_calls.py: {} (kafka-python: scripts/setup.sh installs it)",
        String::from_utf8_lossy(&out.stderr)
    );
    // The N+2 acknowledged messages at least are consumed, up to `end`; the
    // N acks=0 ones are not guaranteed to be stored (a CI run beside other
    // tests consumed 22 of 41: Tansu kept none of them), and the counts
    // below come from tshark, whatever was sent. (The consumer once waited
    // for all of them: it then closed with a Fetch in flight, whose answer
    // came after its FIN. tshark counted it answered; the client never read
    // it, and the daemon counted the call failed at the client's close.)
    let said = String::from_utf8_lossy(&out.stdout);
    let consumed: Option<u64> =
        said.trim().strip_prefix("consumed ").and_then(|s| s.strip_suffix(" through the end")?.parse().ok());
    assert!(
        consumed.is_some_and(|n| (N + 2..=2 * N + 2).contains(&n)),
        "kafka_calls.py: {said} (want {} to {} messages, through `end`)",
        N + 2,
        2 * N + 2
    );
    std::thread::sleep(Duration::from_millis(1000));
    let (decoded, keys) = capture.stop().kafka(port);
    let want_apis: BTreeMap<String, u64> = keys
        .iter()
        .map(|(k, n)| (NAMES.iter().find(|(key, _)| key == k).map_or(k.as_str(), |(_, name)| name).to_string(), *n))
        .collect();
    // N+2 acknowledged produces, and the unanswered ones of acks=0 (their
    // number is the client's batching: at least one).
    assert!(want_apis.get("Produce").is_some_and(|&n| n > N + 2), "tshark decodes the produces: {want_apis:?}");
    assert_eq!(decoded.failed, 0, "tshark: no refusal");

    let client = move |r: &Value| client_of(r, port);
    let pid = broker.child.id().to_string();
    let server = move |r: &Value| r["role"] == "server" && r["_process_pid_"] == pid.as_str();
    daemon.wait_for(Duration::from_secs(20), |rs| {
        observed(rs, "kafka", &client).calls >= decoded.calls && observed(rs, "kafka", &server).calls >= decoded.calls
    });
    std::thread::sleep(Duration::from_millis(1500));
    let records = daemon.stop();
    for (what, side) in [("client", &client as &dyn Fn(&Value) -> bool), ("server", &server)] {
        let seen = observed(&records, "kafka", side);
        if (seen.calls, seen.failed, seen.req_bytes, seen.resp_bytes)
            != (decoded.calls, decoded.failed, decoded.req_bytes, decoded.resp_bytes)
        {
            // (Which API disagreed is the first thing to know: this found
            // the Fetch in flight at the consumer's close, above.)
            let mine: Vec<&Value> = records.iter().filter(|r| r["protocol"] == "kafka" && side(r)).collect();
            eprintln!("{what}: daemon {seen:?}, tshark {decoded:?}\n{mine:#?}\nhealth: {:?}", last_health(&records));
        }
        assert_eq!(seen.unknown, 0, "{what}: no outcome unknown");
        assert_agree(what, seen, decoded);
        assert_eq!(by_api(&records, side), want_apis, "{what}: calls by API");
        let big: u64 = records
            .iter()
            .filter(|r| r["protocol"] == "kafka" && side(r) && r["api"] == "Produce")
            .map(|r| num(r, "total_req_bytes"))
            .max()
            .unwrap_or(0);
        assert!(big > 100_000, "{what}: the 100 KB produce's size is whole ({big} bytes in its record)");
    }
}
