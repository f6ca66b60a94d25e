//! Bounded under abuse: what an observed workload can do to the daemon.
//! Needs root (CI runs as root).

mod common;

use std::time::Duration;

use common::daemon::{config, num, Daemon};
use common::servers::{calls, client_of, Nginx};
use serde_json::Value;

/// 100,000 distinct URLs (wrk with a script that numbers them): the
/// layer-7 keys per window stay under `MaxL7Keys`, the rest folds into one
/// `other` key per protocol and is counted, and memory stays bounded.
#[test]
fn high_cardinality_urls_stay_under_the_key_cap() {
    let root = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(root.path());
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("distinct.lua");
    std::fs::write(
        &script,
        "counter = 0\nrequest = function()\n  counter = counter + 1\n  return wrk.format(nil, \"/item/\" .. counter)\nend\n",
    )
    .unwrap();
    let max_keys = 2000;
    let daemon = Daemon::start(&config(
        "DropLocalConnections: false\nFlushOutL7Interval: 1",
        "",
        &format!("MaxL7Keys: {max_keys}"),
    ));
    // Bounded in time: at most 6 s of load (100,000 requests or more on this machine).
    let wrk = std::process::Command::new("wrk")
        .args(["-t1", "-c8", "-d6s", "-s"])
        .arg(&script)
        .arg(format!("http://127.0.0.1:{}/", nginx.port))
        .output()
        .expect("wrk (apt-get install wrk; scripts/setup.sh does it)");
    assert!(wrk.status.success(), "{}", String::from_utf8_lossy(&wrk.stderr));
    let sent: u64 = String::from_utf8_lossy(&wrk.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .find(|w| w[1] == "requests")
        .and_then(|w| w[0].parse().ok())
        .unwrap_or(0);
    assert!(sent >= 20_000, "wrk sent {sent} requests");
    std::thread::sleep(Duration::from_secs(2));
    let records = daemon.stop();
    // Per window (one `__time__`), the keys stay under the cap. The cap is
    // the daemon's, over every protocol: other processes' calls on this
    // machine (a background load's redis) take keys under it too, so every
    // layer-7 key counts here, not only this test's.
    let mut per_window = std::collections::BTreeMap::<String, u64>::new();
    for r in records.iter().filter(|r| r["type"] == "protocols") {
        *per_window.entry(r["__time__"].as_str().unwrap().to_string()).or_default() += 1;
    }
    // `__time__` is in seconds: the shutdown flush may share the last
    // periodic one's second, so a second holds at most two windows, each of
    // at most the cap plus the `other` keys (one per protocol and outcome).
    let widest = per_window.values().max().copied().unwrap_or(0);
    assert!(widest <= 2 * (max_keys + 8), "{widest} keys in one second (cap {max_keys} per window)");
    assert!(widest >= max_keys, "the cap was reached: {widest}");
    let folded = calls(&records, "http", |r| r["other"] == "true");
    assert!(folded > 0, "overflow folded into `other`");
    let health: Vec<&Value> = records.iter().filter(|r| r["type"] == "health").collect();
    let overflow: u64 = health.iter().map(|h| num(h, "l7_overflow")).max().unwrap();
    assert!(overflow > 0, "overflow counted");
    let client_calls = calls(&records, "http", |r| client_of(r, nginx.port) || r["other"] == "true");
    assert!(client_calls > 0);
    let rss = health.iter().map(|h| num(h, "rss_bytes")).max().unwrap();
    assert!(rss < 256 << 20, "peak RSS {rss} bytes");
}

/// 10,000 connections open at once, then 50,000 short ones: tracked
/// connections never pass `MaxConnections` (the excess is counted), memory
/// stays under 256 MiB, and the daemon keeps reporting.
#[test]
fn a_connection_flood_stays_under_the_caps() {
    let max_connections = 4000;
    let daemon = Daemon::start(&config(
        "DropLocalConnections: false\nProtocolProcess: false",
        "",
        &format!("MaxConnections: {max_connections}"),
    ));
    let out = std::process::Command::new("python3")
        .arg(common::root().join("tests/e2e/flood.py"))
        .args(["10000", "50000", "120"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("open 10000"), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("short 50000"), "{text}");
    std::thread::sleep(Duration::from_secs(2));
    let records = daemon.stop();
    let health: Vec<&Value> = records.iter().filter(|r| r["type"] == "health").collect();
    assert!(health.len() >= 3, "health kept coming");
    let peak_tracked = health.iter().map(|h| num(h, "connections")).max().unwrap();
    assert!(peak_tracked <= max_connections, "{peak_tracked} tracked (cap {max_connections})");
    let over = health.iter().map(|h| num(h, "connections_over_capacity")).max().unwrap();
    assert!(over > 0, "the excess is counted");
    let rss = health.iter().map(|h| num(h, "rss_bytes")).max().unwrap();
    assert!(rss < 256 << 20, "peak RSS {rss} bytes");
    let last = health.last().unwrap();
    println!(
        "flood: peak tracked {peak_tracked}, over capacity {over}, peak RSS {} MiB, kernel lost {}, events {}; {}",
        rss >> 20,
        last["kernel_lost"],
        last["events"],
        text.trim().replace('\n', ", ")
    );
}
