//! memcached end to end: libmemcached's tools (memccp, memccat, memcexist,
//! memctouch, memcrm, memcstat) and a Python client on one connection
//! (tests/e2e/memcached_calls.py: noreply, errors, misses, 200 KB values),
//! in the text protocol against one memcached and the binary protocol
//! against another, watched by the daemon with the built-in memcached
//! plugin. Calls are selected by the test's own ports, on both ends; tshark
//! decodes the same traffic and must count the same calls and failures.
//! Needs root, memcached, libmemcached-tools and tshark (scripts/setup.sh
//! installs them).

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::daemon::{config, l7_total, num, Daemon};
use common::servers::{client_of, Memcached};
use common::tshark::{assert_agree, observed, Capture};
use serde_json::Value;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{:?}: {e} (apt-get install libmemcached-tools; scripts/setup.sh does it)", cmd.get_program())
    });
    assert!(out.status.success(), "{:?}: {}", cmd.get_program(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every libmemcached tool once (memcrm twice: found, then not), each its
/// own connection ending with quit.
fn libmemcached_tools(port: u16, binary: bool, dir: &std::path::Path) {
    let file = dir.join("greeting.txt");
    std::fs::write(&file, "hello\n").unwrap();
    let servers = format!("--servers=127.0.0.1:{port}");
    let tool = |name: &str| {
        let mut c = Command::new(name);
        c.current_dir(dir).arg(&servers);
        if binary {
            c.arg("--binary");
        }
        c
    };
    run(tool("memccp").arg("greeting.txt"));
    let got = run(tool("memccat").arg("greeting.txt"));
    assert_eq!(got.trim(), "hello");
    // A miss: memccat says so and fails.
    let _ = tool("memccat").arg("not-there").output().unwrap();
    let _ = tool("memcexist").arg("greeting.txt").output().unwrap();
    run(tool("memctouch").args(["--expire=100", "greeting.txt"]));
    run(tool("memcrm").arg("greeting.txt"));
    let _ = tool("memcrm").arg("greeting.txt").output().unwrap();
    assert!(run(&mut tool("memcstat")).contains("pid"), "memcstat lists the statistics");
}

fn python_client(mode: &str, port: u16) {
    let script = common::root().join("tests/e2e/memcached_calls.py");
    run(Command::new("python3").arg(script).args([mode, &port.to_string()]));
}

/// Calls matching `pred`, summed by command.
fn by_command(records: &[Value], pred: &dyn Fn(&Value) -> bool) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for r in records.iter().filter(|r| r["type"] == "protocols" && r["protocol"] == "memcached" && pred(r)) {
        *out.entry(r["command"].as_str().unwrap_or("-").to_string()).or_default() += num(r, "total_count");
    }
    out
}

#[test]
fn text_and_binary_calls_are_counted_on_both_ends() {
    let dir = tempfile::tempdir().unwrap();
    let text = Memcached::start();
    let binary = Memcached::start();
    let (text_capture, binary_capture) = (Capture::start(text.port), Capture::start(binary.port));
    let daemon = Daemon::start(&config("DropLocalConnections: false\nFlushOutL7Interval: 1", "", ""));
    libmemcached_tools(text.port, false, dir.path());
    python_client("text", text.port);
    libmemcached_tools(binary.port, true, dir.path());
    python_client("binary", binary.port);
    std::thread::sleep(Duration::from_millis(1000));
    let text_decoded = text_capture.stop().memcached(text.port);
    let binary_decoded = binary_capture.stop().memcached(binary.port);

    let sides = |server: &Memcached| {
        let (port, pid) = (server.port, server.child.id().to_string());
        let client = move |r: &Value| client_of(r, port);
        let server = move |r: &Value| r["role"] == "server" && r["_process_pid_"] == pid.as_str();
        (client, server)
    };
    let (text_client, text_server) = sides(&text);
    let (binary_client, binary_server) = sides(&binary);
    daemon.wait_for(Duration::from_secs(20), |rs| {
        [&text_client as &dyn Fn(&Value) -> bool, &text_server, &binary_client, &binary_server]
            .iter()
            .zip([text_decoded.calls, text_decoded.calls, binary_decoded.calls, binary_decoded.calls])
            .all(|(side, want)| observed(rs, "memcached", side).calls >= want)
    });
    std::thread::sleep(Duration::from_millis(1500));
    let records = daemon.stop();

    // What tshark decoded is the workload: 8 tool connections (each
    // ending with quit; memcstat asks version and stats) and the Python
    // client's 11 commands; failures: memccat's miss is no failure, incr of
    // a non-number and the unknown command are.
    assert_eq!((text_decoded.calls, text_decoded.failed), (8 + 9 + 11, 2), "tshark decodes the text workload");
    assert_eq!((binary_decoded.calls, binary_decoded.failed), (8 + 9 + 8, 1), "tshark decodes the binary workload");
    // Text: memccat's two gets and the client's; binary: memccat's two
    // (`getk`) and the client's hit and miss.
    for (what, side, decoded, text, want_gets) in [
        ("text client", &text_client as &dyn Fn(&Value) -> bool, text_decoded, true, 3),
        ("text server", &text_server, text_decoded, true, 3),
        ("binary client", &binary_client, binary_decoded, false, 4),
        ("binary server", &binary_server, binary_decoded, false, 4),
    ] {
        let seen = observed(&records, "memcached", side);
        assert_eq!(seen.unknown, 0, "{what}: no outcome unknown");
        if text {
            assert_agree(what, seen, decoded);
        } else {
            assert_eq!((seen.calls, seen.failed), (decoded.calls, decoded.failed), "{what}: calls and failures");
        }
        let commands = by_command(&records, side);
        assert_eq!(commands.get("quit"), Some(&9), "{what}: every connection's quit, one-way: {commands:?}");
        assert_eq!(commands.get("stats"), Some(&1), "{what}: {commands:?}");
        let gets: u64 = ["get", "getk"].iter().filter_map(|c| commands.get(*c)).sum();
        assert_eq!(gets, want_gets, "{what}: {commands:?}");
    }
    // The 200 KB values were mostly not copied; their sizes are whole.
    for side in [&text_client as &dyn Fn(&Value) -> bool, &text_server] {
        let set_bytes: u64 = l7_total(&records, "memcached", "total_req_bytes", |r| side(r) && r["command"] == "set");
        assert!(set_bytes > 200_000, "the large set's size ({set_bytes} bytes)");
    }
}
