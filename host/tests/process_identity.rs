//! Process identity from the kernel (issue 21): command lines recorded at
//! exec and inherited across fork, so processes that live for milliseconds
//! and forked servers are described in full; processes keyed by pid and
//! start time, so a reused pid is a new process; secrets masked. Needs root.

mod common;

use std::process::Command;
use std::time::Duration;

use common::daemon::{config, remote, Daemon};
use common::servers::{calls, dnsmasq, free_port, http_server};
use serde_json::Value;

fn is_pid(r: &Value, pid: u32) -> bool {
    r["_process_pid_"].as_str().and_then(|s| s.parse::<u32>().ok()) == Some(pid)
}

fn client_of(r: &Value, port: u16) -> bool {
    r["role"] == "client" && remote(r)["remote_port"].as_str().and_then(|p| p.parse::<u16>().ok()) == Some(port)
}

/// 200 short-lived curl processes, each with its own query string: every
/// record of theirs carries the whole command line (they exit long before
/// the daemon could read /proc), and `IncludeCmdRegex` on part of an
/// argument keeps exactly the calls of the processes it names.
#[test]
fn short_lived_processes_keep_their_command_lines() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "hi\n").unwrap();
    let (mut server, port) = http_server(dir.path());
    let run_curls = |from: u32, to: u32| {
        for n in from..to {
            let ok = Command::new("curl")
                .args(["-s", "-o", "/dev/null", &format!("http://127.0.0.1:{port}/index.html?job={n}")])
                .status()
                .expect("curl (scripts/setup.sh installs it)");
            assert!(ok.success());
        }
    };
    let job = |r: &Value| -> Option<u32> { r["_process_cmd_"].as_str()?.split("?job=").nth(1)?.trim().parse().ok() };

    let daemon = Daemon::start(&config("DropLocalConnections: false\nFlushOutL7Interval: 1", "", ""));
    run_curls(0, 200);
    daemon.wait_for(Duration::from_secs(20), |rs| calls(rs, "http", |r| client_of(r, port)) >= 200);
    std::thread::sleep(Duration::from_millis(1500));
    let records = daemon.stop();
    let mine: Vec<&Value> = records
        .iter()
        .filter(|r| (r["type"] == "statistics" || r["type"] == "protocols") && client_of(r, port))
        .collect();
    let mut jobs: Vec<u32> = mine.iter().filter(|r| r["type"] == "protocols").filter_map(|r| job(r)).collect();
    jobs.sort_unstable();
    jobs.dedup();
    assert_eq!(jobs, (0..200).collect::<Vec<_>>(), "every curl's own command line on its calls");
    for r in &mine {
        let cmd = r["_process_cmd_"].as_str().unwrap();
        assert!(cmd.starts_with("curl -s -o /dev/null http://127.0.0.1:") && job(r).is_some(), "{r}");
    }
    assert_eq!(calls(&records, "http", |r| client_of(r, port)), 200);

    // Only the jobs 100-149, by their arguments.
    let include = "DropLocalConnections: false\nFlushOutL7Interval: 1\nIncludeCmdRegex: 'job=1[0-4][0-9]$'";
    let daemon = Daemon::start(&config(include, "", ""));
    run_curls(0, 200);
    daemon.wait_for(Duration::from_secs(20), |rs| calls(rs, "http", |r| client_of(r, port)) >= 50);
    std::thread::sleep(Duration::from_millis(2500));
    let records = daemon.stop();
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(calls(&records, "http", |r| client_of(r, port)), 50, "exactly the included jobs");
    for r in records.iter().filter(|r| r["type"] == "protocols" && client_of(r, port)) {
        assert!(job(r).is_some_and(|j| (100..150).contains(&j)), "{r}");
    }
}

/// dnsmasq answers DNS over TCP from a child it forks per connection, which
/// exits within milliseconds: the child's records carry dnsmasq's whole
/// command line (inherited at fork), not just `dnsmasq`.
#[test]
fn forked_children_carry_their_parents_command_line() {
    let port = free_port();
    let mut server = dnsmasq(port);
    let spid = server.id();
    std::thread::sleep(Duration::from_millis(300));
    let daemon = Daemon::start(&config("DropLocalConnections: false\nFlushOutL7Interval: 1", "", ""));
    let names: Vec<String> = (0..5).map(|i| format!("fork{i}-{port}.x.test")).collect();
    for name in &names {
        let out = Command::new("dig")
            .args(["+tcp", "+tries=1", "+time=2", "@127.0.0.1", "-p", &port.to_string(), name])
            .output()
            .expect("dig (scripts/setup.sh installs it)");
        assert!(String::from_utf8_lossy(&out.stdout).contains("1.2.3.4"));
    }
    let own = format!("--port={port}");
    let server_side = |r: &Value| {
        r["type"] == "protocols" && r["role"] == "server" && names.iter().any(|n| r["query_record"] == n.as_str())
    };
    daemon.wait_for(Duration::from_secs(15), |rs| rs.iter().filter(|r| server_side(r)).count() >= 5);
    std::thread::sleep(Duration::from_millis(1500));
    let records = daemon.stop();
    let _ = server.kill();
    let _ = server.wait();
    let answered: Vec<&Value> = records.iter().filter(|r| server_side(r)).collect();
    assert_eq!(answered.len(), 5, "each query answered once on the server side: {answered:#?}");
    for r in answered {
        assert!(!is_pid(r, spid), "answered by a forked child, not the parent: {r}");
        let cmd = r["_process_cmd_"].as_str().unwrap();
        assert!(cmd.starts_with("dnsmasq ") && cmd.contains(&own), "the parent's command line: {cmd}");
    }
}

/// A pid is reused: the first process (excluded by the filters, so denied
/// in the kernel) exits, and a second one is made to get the same pid. The
/// second gets its own command line and its own filter decision (its calls
/// are recorded), because processes are keyed by pid and start time and
/// the kernel denies a pid only while its start time is the denied one's.
/// The first life exits right after its calls, usually before the daemon's
/// denial reaches the kernel: a denial by pid alone would then stay on the
/// pid and keep the second life out.
#[test]
fn a_reused_pid_is_a_new_process() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "hi\n").unwrap();
    let (mut server, port) = http_server(dir.path());
    let exclude = "DropLocalConnections: false\nFlushOutL7Interval: 1\nExcludeCmdRegex: 'first-life'";
    let daemon = Daemon::start(&config(exclude, "", ""));
    let script = common::root().join("tests/e2e/pid_reuse.py");
    let out = Command::new("python3").arg(&script).arg(port.to_string()).output().expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    // "pid P" on both lines: the two lives had the same pid.
    let pids: Vec<u32> = stdout.lines().filter_map(|l| l.strip_prefix("pid ")?.trim().parse().ok()).collect();
    assert_eq!(pids.len(), 2, "{stdout}");
    assert_eq!(pids[0], pids[1], "the pid was reused: {stdout}");
    let pid = pids[0];
    daemon.wait_for(Duration::from_secs(15), |rs| calls(rs, "http", |r| is_pid(r, pid) && client_of(r, port)) >= 3);
    std::thread::sleep(Duration::from_millis(1500));
    let records = daemon.stop();
    let _ = server.kill();
    let _ = server.wait();
    let of_pid: Vec<&Value> = records.iter().filter(|r| r["type"] == "protocols" && is_pid(r, pid)).collect();
    assert!(!of_pid.is_empty(), "the second life's calls are recorded");
    for r in &of_pid {
        let cmd = r["_process_cmd_"].as_str().unwrap();
        assert!(cmd.contains("second-life") && !cmd.contains("first-life"), "{cmd}: {r}");
    }
    assert_eq!(
        calls(&records, "http", |r| is_pid(r, pid) && client_of(r, port)),
        3,
        "its three GETs, and only them: {of_pid:#?}"
    );
}

/// A command line longer than the kernel's copy (256 bytes; a JVM's class
/// path goes far past it) is read whole from /proc while its process
/// lives: a filter on its tail decides, and records carry all of it.
#[test]
fn a_long_command_line_is_whole() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "hi\n").unwrap();
    let (mut server, port) = http_server(dir.path());
    let include = "DropLocalConnections: false\nFlushOutL7Interval: 1\nIncludeCmdRegex: 'tail-marker$'";
    let daemon = Daemon::start(&config(include, "", ""));
    let code = "import sys, time, urllib.request\n\
                for i in range(2): urllib.request.urlopen('http://127.0.0.1:%s/index.html' % sys.argv[1]).read()\n\
                time.sleep(1)";
    let padding = format!("--class-path={}", "/opt/app/lib/x.jar:".repeat(20));
    let mut child = Command::new("python3")
        .args(["-c", code, &port.to_string(), &padding, "tail-marker"])
        .spawn()
        .expect("python3");
    let pid = child.id();
    assert!(child.wait().unwrap().success());
    daemon.wait_for(Duration::from_secs(15), |rs| calls(rs, "http", |r| is_pid(r, pid) && client_of(r, port)) >= 2);
    std::thread::sleep(Duration::from_millis(1500));
    let records = daemon.stop();
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(calls(&records, "http", |r| is_pid(r, pid) && client_of(r, port)), 2, "kept by a filter on the tail");
    for r in records.iter().filter(|r| r["type"] == "protocols" && is_pid(r, pid)) {
        let cmd = r["_process_cmd_"].as_str().unwrap();
        assert!(cmd.len() > 400 && cmd.ends_with(&format!("{padding} tail-marker")), "{cmd}");
    }
}
