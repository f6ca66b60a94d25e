//! End to end on real traffic: the daemon's layer-4 statistics report
//! exactly the bytes each side sent and received, with the right pid,
//! command line, role and remote address; drop rules, EBPF.Pid, sampling
//! and kernel losses behave as configured. Needs root (CI runs as root).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::daemon::{config, last_health, remote, sum, Daemon};
use common::servers::{calls, dnsmasq, free_port, http_server, RedisServer};
use serde_json::Value;

fn echo_py() -> String {
    common::root().join("tests/e2e/echo.py").display().to_string()
}

/// Start a process and read the first line it prints.
fn spawn_line(mut cmd: Command) -> (Child, String) {
    let mut child = cmd.stdout(Stdio::piped()).stdin(Stdio::piped()).spawn().expect("spawning a test process");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    (child, line.trim().to_string())
}

fn python(args: &[&str]) -> Command {
    let mut c = Command::new("python3");
    c.arg(echo_py()).args(args);
    c
}

fn wait_ok(mut c: Child, what: &str) {
    let status = c.wait().unwrap();
    assert!(status.success(), "{what} failed: {status}");
}

fn is_pid(r: &Value, pid: u32) -> bool {
    r["_process_pid_"].as_str().and_then(|s| s.parse::<u32>().ok()) == Some(pid)
}

/// An exchange over loopback TCP: `up` bytes client to server, `down` back.
/// Returns (server pid, client pid, server port, client port).
fn tcp_exchange(up: u64, down: u64) -> (u32, u32, u16, u16) {
    let (server, port) = spawn_line(python(&["server", "127.0.0.1:0", &up.to_string(), &down.to_string()]));
    let addr = format!("127.0.0.1:{port}");
    let (client, cport) = spawn_line(python(&["client", &addr, &up.to_string(), &down.to_string()]));
    let (spid, cpid) = (server.id(), client.id());
    wait_ok(client, "client");
    wait_ok(server, "server");
    (spid, cpid, port.parse().unwrap(), cport.parse().unwrap())
}

#[test]
fn tcp_bytes_are_exact_on_both_sides() {
    let daemon = Daemon::start(&config("DropLocalConnections: false", "", ""));
    let (up, down) = (123_457u64, 54_321u64);
    let (spid, cpid, port, cport) = tcp_exchange(up, down);
    let done = daemon.wait_for(Duration::from_secs(10), |rs| {
        sum(rs, "recv_bytes", |r| is_pid(r, spid)) >= up && sum(rs, "recv_bytes", |r| is_pid(r, cpid)) >= down
    });
    let records = daemon.stop();
    assert!(done, "statistics for both ends within 10 s: {records:#?}");
    let client = |r: &Value| is_pid(r, cpid) && r["role"] == "client";
    let server = |r: &Value| is_pid(r, spid) && r["role"] == "server";
    assert_eq!(sum(&records, "send_bytes", client), up);
    assert_eq!(sum(&records, "recv_bytes", client), down);
    assert_eq!(sum(&records, "send_bytes", server), down);
    assert_eq!(sum(&records, "recv_bytes", server), up);
    assert_eq!(sum(&records, "send_packets", client), up.div_ceil(1000), "one write per 1000 bytes");
    let c = records.iter().find(|r| client(r)).unwrap();
    assert_eq!(remote(c)["remote_ip"], "127.0.0.1");
    assert_eq!(remote(c)["remote_port"], port.to_string());
    assert_eq!(remote(c)["remote_type"], "server");
    assert_eq!(c["socket_type"], "inet_socket");
    assert_eq!(c["_running_mode_"], "host");
    let cmd = c["_process_cmd_"].as_str().unwrap();
    assert!(cmd.contains("echo.py client 127.0.0.1"), "{cmd}");
    let s = records.iter().find(|r| server(r)).unwrap();
    assert_eq!(remote(s)["remote_port"], cport.to_string());
    // Seen at the socket layer as each call completes: no time inside the
    // call is measured (0, as in iLogtail's own records).
    assert_eq!(sum(&records, "send_total_latency", client), 0);
    // Not asserted: the health record's kernel_lost. It is the whole
    // machine's (a CI run beside scripts/with-background-load.sh lost
    // 224,645 records of the load's own redis calls here while this test's
    // bytes were exact). A loss that touched this test's own connection
    // fails the exact counts above.
}

/// With ProtocolProcess off every TCP socket is counted in the kernel and
/// no bytes are copied: an idle kept-open connection's counts are read at
/// each flush (by the kernel's socket iterator), a closed one's arrive with
/// its close, and neither is counted twice.
#[test]
fn layer_4_only_counts_in_the_kernel_for_idle_and_closed_connections() {
    let daemon = Daemon::start(&config("DropLocalConnections: false\nProtocolProcess: false", "", ""));
    let (up, down) = (45_678u64, 23_456u64);
    let (server, port) = spawn_line(python(&["server", "127.0.0.1:0", &up.to_string(), &down.to_string()]));
    let addr = format!("127.0.0.1:{port}");
    let mut client = python(&["client", &addr, &up.to_string(), &down.to_string(), "--hold"])
        .stdout(Stdio::piped())
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(client.stdout.take().unwrap()).lines();
    let cport = out.next().unwrap().unwrap();
    assert_eq!(out.next().unwrap().unwrap(), "exchanged");
    let (spid, cpid) = (server.id(), client.id());
    wait_ok(server, "server");
    let client_rec = |r: &Value| is_pid(r, cpid) && r["role"] == "client";
    let server_rec = |r: &Value| is_pid(r, spid) && r["role"] == "server";
    // The client's connection is open and idle: only the iterator sees it.
    let seen = daemon.wait_for(Duration::from_secs(10), |rs| {
        sum(rs, "send_bytes", client_rec) >= up && sum(rs, "recv_bytes", client_rec) >= down
    });
    assert!(seen, "an idle connection's counts within 10 s: {:#?}", daemon.records());
    std::thread::sleep(Duration::from_millis(2500)); // two more flushes: nothing new
    let open = daemon.records();
    assert_eq!(sum(&open, "send_bytes", client_rec), up, "counted once while open");
    assert_eq!(sum(&open, "recv_bytes", client_rec), down);
    writeln!(client.stdin.as_mut().unwrap()).unwrap();
    wait_ok(client, "client");
    std::thread::sleep(Duration::from_millis(1500));
    let records = daemon.stop();
    assert_eq!(sum(&records, "send_bytes", client_rec), up, "not counted again at close");
    assert_eq!(sum(&records, "recv_bytes", client_rec), down);
    assert_eq!(sum(&records, "send_packets", client_rec), up.div_ceil(1000), "one write per 1000 bytes");
    assert_eq!(sum(&records, "send_bytes", server_rec), down, "the server's counts came with its close");
    assert_eq!(sum(&records, "recv_bytes", server_rec), up);
    let c = records.iter().find(|r| client_rec(r)).unwrap();
    assert_eq!(remote(c)["remote_port"], port.to_string());
    assert!(c["_process_cmd_"].as_str().unwrap().contains("echo.py client"), "{c:#?}");
    let s = records.iter().find(|r| server_rec(r)).unwrap();
    assert_eq!(remote(s)["remote_port"], cport);
    // (kernel_lost is the whole machine's: see tcp_bytes_are_exact_on_both_sides.)
    let health = last_health(&records).expect("a health record");
    assert_ne!(health["kernel_counted"], "0", "{health:#?}");
    assert!(!records.iter().any(|r| r.get("protocol").is_some()), "no layer-7 records with ProtocolProcess off");
}

#[test]
fn http_server_and_curl() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "x".repeat(10_000)).unwrap();
    let daemon = Daemon::start(&config("DropLocalConnections: false", "", ""));
    let (mut server, port) = http_server(dir.path());
    let curl = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{size_download} %{size_header} %{size_request}"])
        .arg(format!("http://127.0.0.1:{port}/index.html"))
        .output()
        .expect("curl (apt-get install curl; scripts/setup.sh does it)");
    let sizes: Vec<u64> = String::from_utf8_lossy(&curl.stdout).split(' ').map(|s| s.parse().unwrap()).collect();
    let (body, headers, request) = (sizes[0], sizes[1], sizes[2]);
    assert_eq!(body, 10_000);
    let spid = server.id();
    daemon.wait_for(Duration::from_secs(10), |rs| sum(rs, "send_bytes", |r| is_pid(r, spid)) >= body + headers);
    let records = daemon.stop();
    let _ = server.kill();
    let _ = server.wait();
    // curl exits at once (its command line may be gone from /proc by the
    // time the daemon looks): its record is the client side of the port.
    let curl_rec = |r: &Value| {
        r["role"] == "client"
            && remote(r)["remote_port"].as_str().and_then(|s| s.parse::<u16>().ok()) == Some(port)
            && r["_process_cmd_"].as_str().unwrap_or("").starts_with("curl")
    };
    assert_eq!(sum(&records, "send_bytes", curl_rec), request, "curl's request bytes");
    assert_eq!(sum(&records, "recv_bytes", curl_rec), body + headers, "curl's response bytes");
    let server_rec = |r: &Value| is_pid(r, spid) && r["role"] == "server";
    assert_eq!(sum(&records, "recv_bytes", server_rec), request);
    assert_eq!(sum(&records, "send_bytes", server_rec), body + headers);
    let c = records.iter().find(|r| curl_rec(r)).unwrap();
    assert_eq!(c["role"], "client");
}

#[test]
fn unix_sockets_follow_drop_unix_socket() {
    for (drop, expect) in [(false, true), (true, false)] {
        let daemon = Daemon::start(&config(&format!("DropUnixSocket: {drop}"), "", ""));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock").display().to_string();
        let (server, _) = spawn_line(python(&["server", &path, "7000", "3000"]));
        let (client, _) = spawn_line(python(&["client", &path, "7000", "3000"]));
        let cpid = client.id();
        wait_ok(client, "unix client");
        wait_ok(server, "unix server");
        if expect {
            daemon.wait_for(Duration::from_secs(10), |rs| sum(rs, "recv_bytes", |r| is_pid(r, cpid)) >= 3000);
        } else {
            std::thread::sleep(Duration::from_millis(2500));
        }
        let records = daemon.stop();
        let mine = |r: &Value| is_pid(r, cpid);
        if expect {
            assert_eq!(sum(&records, "send_bytes", mine), 7000);
            assert_eq!(sum(&records, "recv_bytes", mine), 3000);
            let r = records.iter().find(|r| r["type"] == "statistics" && mine(r)).unwrap();
            assert_eq!(r["socket_type"], "unix_socket");
        } else {
            assert_eq!(sum(&records, "send_bytes", mine), 0, "DropUnixSocket: true drops it");
        }
    }
}

#[test]
fn ebpf_pid_keeps_only_that_process() {
    // The listed client exists before the daemon starts; an identical one does not.
    let (server, port) = spawn_line(python(&["server", "127.0.0.1:0", "2000", "1000"]));
    let addr = format!("127.0.0.1:{port}");
    let (mut listed, pid) = spawn_line(python(&["client", &addr, "2000", "1000", "--wait"]));
    let pid: u32 = pid.parse().unwrap();
    let daemon = Daemon::start(&config("DropLocalConnections: false", &format!("Pid: [{pid}]"), ""));
    listed.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    wait_ok(listed, "listed client");
    wait_ok(server, "server");
    let (other_server, other_client, _, _) = tcp_exchange(500, 400);
    daemon.wait_for(Duration::from_secs(10), |rs| sum(rs, "send_bytes", |r| is_pid(r, pid)) >= 2000);
    std::thread::sleep(Duration::from_millis(1500));
    let records = daemon.stop();
    assert_eq!(sum(&records, "send_bytes", |r| is_pid(r, pid)), 2000);
    assert_eq!(sum(&records, "recv_bytes", |r| is_pid(r, pid)), 1000);
    for other in [other_server, other_client] {
        assert_eq!(sum(&records, "send_bytes", |r| is_pid(r, other)), 0, "pid {other} is not in EBPF.Pid");
    }
}

#[test]
fn sampling_zero_and_hundred() {
    for (sampling, expect) in [(0u32, false), (100, true)] {
        let daemon = Daemon::start(&config(&format!("DropLocalConnections: false\nSampling: {sampling}"), "", ""));
        let (_, cpid, _, _) = tcp_exchange(3000, 2000);
        if expect {
            daemon.wait_for(Duration::from_secs(10), |rs| sum(rs, "recv_bytes", |r| is_pid(r, cpid)) >= 2000);
        } else {
            std::thread::sleep(Duration::from_millis(2500));
        }
        let records = daemon.stop();
        let got = sum(&records, "send_bytes", |r| is_pid(r, cpid));
        assert_eq!(got, if expect { 3000 } else { 0 }, "Sampling: {sampling}");
    }
}

#[test]
fn a_burst_larger_than_the_ring_buffer_is_counted_as_lost() {
    // 16 KiB of ring buffer holds three 4 KiB events; the burst writes far more.
    let daemon = Daemon::start(&config("DropLocalConnections: false", "", "RingBufferBytes: 16384"));
    let (_, _, _, _) = tcp_exchange(4_000_000, 10);
    let lost = daemon.wait_for(Duration::from_secs(10), |rs| {
        rs.iter().any(|r| r["type"] == "health" && r["kernel_lost"].as_str().unwrap().parse::<u64>().unwrap() > 0)
    });
    assert!(lost, "loss reported: {}", daemon.stderr());
    // Still capturing afterwards. (Other load on the machine can fill so
    // small a ring too: a few tries, each exchange judged by its own pid.)
    let after = (0..10).any(|_| {
        let (_, cpid, _, _) = tcp_exchange(1000, 1000);
        daemon.wait_for(Duration::from_secs(3), |rs| sum(rs, "send_bytes", |r| is_pid(r, cpid)) == 1000)
    });
    let stderr = daemon.stderr();
    daemon.stop();
    assert!(after, "capture resumes after the loss");
    assert!(stderr.contains("events lost in the kernel"), "{stderr}");
}

/// Two network namespaces made by the test, joined by a veth pair; both ends
/// of the traffic stay inside them. Deleted on drop.
struct Netns {
    a: String,
    b: String,
}

impl Netns {
    fn new() -> Self {
        let id = std::process::id();
        let (a, b) = (format!("wl-a-{id}"), format!("wl-b-{id}"));
        let run = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("ip (iproute2; scripts/setup.sh installs it)");
            assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        run(&["netns", "add", &a]);
        run(&["netns", "add", &b]);
        let ns = Self { a, b };
        run(&["link", "add", "wlva", "netns", &ns.a, "type", "veth", "peer", "name", "wlvb", "netns", &ns.b]);
        run(&["-n", &ns.a, "addr", "add", "10.77.0.1/24", "dev", "wlva"]);
        run(&["-n", &ns.b, "addr", "add", "10.77.0.2/24", "dev", "wlvb"]);
        for (n, dev) in [(&ns.a, "wlva"), (&ns.b, "wlvb")] {
            run(&["-n", n, "link", "set", dev, "up"]);
            run(&["-n", n, "link", "set", "lo", "up"]);
        }
        ns
    }

    fn exec(&self, ns: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, "python3", &echo_py()]).args(args);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

#[test]
fn across_namespaces_non_local_traffic_is_kept_and_loopback_dropped() {
    let ns = Netns::new();
    let daemon = Daemon::start(&config("DropLocalConnections: true", "", ""));
    let (server, port) = spawn_line(ns.exec(&ns.a, &["server", "10.77.0.1:0", "4321", "8765"]));
    let (client, _) = spawn_line(ns.exec(&ns.b, &["client", &format!("10.77.0.1:{port}"), "4321", "8765"]));
    let (spid, cpid) = (server.id(), client.id());
    wait_ok(client, "client in namespace B");
    wait_ok(server, "server in namespace A");
    // Loopback traffic, inside namespace B and in the daemon's own.
    let (lserver, lport) = spawn_line(ns.exec(&ns.b, &["server", "127.0.0.1:0", "100", "100"]));
    let (lclient, _) = spawn_line(ns.exec(&ns.b, &["client", &format!("127.0.0.1:{lport}"), "100", "100"]));
    let loop_pid = lclient.id();
    wait_ok(lclient, "loopback client");
    wait_ok(lserver, "loopback server");
    let (_, root_loop_pid, _, _) = tcp_exchange(100, 100);
    daemon.wait_for(Duration::from_secs(10), |rs| {
        sum(rs, "recv_bytes", |r| is_pid(r, cpid)) >= 8765 && sum(rs, "recv_bytes", |r| is_pid(r, spid)) >= 4321
    });
    std::thread::sleep(Duration::from_millis(1200));
    let records = daemon.stop();
    let client = |r: &Value| is_pid(r, cpid) && r["role"] == "client";
    assert_eq!(sum(&records, "send_bytes", client), 4321);
    assert_eq!(sum(&records, "recv_bytes", client), 8765);
    let c = records.iter().find(|r| client(r)).unwrap();
    assert_eq!(remote(c)["remote_ip"], "10.77.0.1");
    assert_eq!(remote(c)["remote_port"], port);
    let server = |r: &Value| is_pid(r, spid) && r["role"] == "server";
    assert_eq!(sum(&records, "recv_bytes", server), 4321);
    assert_eq!(remote(records.iter().find(|r| server(r)).unwrap())["remote_ip"], "10.77.0.2");
    for pid in [loop_pid, root_loop_pid] {
        assert_eq!(sum(&records, "send_bytes", |r| is_pid(r, pid)), 0, "loopback traffic of {pid} dropped");
    }
}

#[test]
fn roles_of_connections_older_than_the_daemon_come_from_sock_diag() {
    let (server, port) = spawn_line(python(&["server", "127.0.0.1:0", "1500", "2500"]));
    let addr = format!("127.0.0.1:{port}");
    // Connected before the daemon starts: no connect/accept event is seen.
    let (mut client, _) = spawn_line(python(&["client", &addr, "1500", "2500", "--wait-connected"]));
    let (spid, cpid) = (server.id(), client.id());
    let daemon = Daemon::start(&config("DropLocalConnections: false\nFlushNetlinkInterval: 1", "", ""));
    client.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    wait_ok(client, "client");
    wait_ok(server, "server");
    daemon.wait_for(Duration::from_secs(10), |rs| sum(rs, "recv_bytes", |r| is_pid(r, cpid)) >= 2500);
    let records = daemon.stop();
    assert_eq!(sum(&records, "send_bytes", |r| is_pid(r, spid) && r["role"] == "server"), 2500, "{records:#?}");
    assert_eq!(sum(&records, "send_bytes", |r| is_pid(r, cpid) && r["role"] == "client"), 1500);
}

#[test]
fn clear_errors_without_root_and_runs_without_capture() {
    // A copy of the binary that the unprivileged user can execute.
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("wirelens");
    std::fs::copy(env!("CARGO_BIN_EXE_wirelens"), &bin).unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(&cfg, config("", "", "")).unwrap();
    let cfg_off = dir.path().join("off.yaml");
    std::fs::write(&cfg_off, config("", "", "").replace("Enabled: true", "Enabled: false")).unwrap();
    let mut perms = std::fs::metadata(dir.path()).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(dir.path(), perms).unwrap();
    use std::os::unix::process::CommandExt;
    let nobody = |c: &mut Command| {
        c.uid(65534).gid(65534);
    };
    let mut cmd = Command::new(&bin);
    cmd.args(["run", "-c"]).arg(&cfg);
    nobody(&mut cmd);
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("capture needs CAP_BPF and CAP_PERFMON") && err.contains("EBPF.Enabled: false"), "{err}");
    // EBPF.Enabled: false runs (as nobody) without capture and stops cleanly on SIGTERM.
    let mut cmd = Command::new(&bin);
    cmd.args(["run", "-c"]).arg(&cfg_off).stdout(Stdio::piped()).stderr(Stdio::piped());
    nobody(&mut cmd);
    let child = cmd.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: signalling our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("running without capture"), "{err}");
    let health = String::from_utf8_lossy(&out.stdout);
    assert!(health.lines().any(|l| l.contains("\"type\":\"health\"")), "a final health record: {health}");
}

#[test]
fn unconnected_udp_peers_come_from_the_call_addresses() {
    let script = r#"
import socket, sys
role = sys.argv[1]
if role == "server":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1], flush=True)
    sys.stdin.readline()  # bound before the daemon starts; receives after
    data, peer = s.recvfrom(2000)
    s.sendto(b"r" * 700, peer)
else:
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.sendto(b"q" * 300, ("127.0.0.1", int(sys.argv[2])))
    print(c.getsockname()[1], flush=True)
    c.recvfrom(2000)
"#;
    let (mut server, port) = spawn_line({
        let mut c = Command::new("python3");
        c.args(["-c", script, "server"]);
        c
    });
    let daemon = Daemon::start(&config("DropLocalConnections: false", "", ""));
    server.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let (client, cport) = spawn_line({
        let mut c = Command::new("python3");
        c.args(["-c", script, "client", &port]);
        c
    });
    let (spid, cpid) = (server.id(), client.id());
    wait_ok(client, "udp client");
    wait_ok(server, "udp server");
    daemon.wait_for(Duration::from_secs(10), |rs| sum(rs, "recv_bytes", |r| is_pid(r, cpid)) >= 700);
    let records = daemon.stop();
    let c = records.iter().find(|r| r["type"] == "statistics" && is_pid(r, cpid)).expect("client record");
    assert_eq!((c["send_bytes"].as_str(), c["recv_bytes"].as_str()), (Some("300"), Some("700")));
    assert_eq!(c["role"], "client");
    assert_eq!(remote(c)["remote_port"], port);
    let s = records.iter().find(|r| r["type"] == "statistics" && is_pid(r, spid)).expect("server record");
    assert_eq!((s["send_bytes"].as_str(), s["recv_bytes"].as_str()), (Some("700"), Some("300")));
    assert_eq!(s["role"], "server", "a bound UDP port seen by sock_diag");
    assert_eq!(remote(s)["remote_port"], cport);
}

#[test]
fn http_calls_through_the_wasm_plugin() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "y".repeat(3000)).unwrap();
    let daemon = Daemon::start(&config("DropLocalConnections: false\nFlushOutL7Interval: 1", "", ""));
    let (mut server, port) = http_server(dir.path());
    let spid = server.id();
    let started = std::time::Instant::now();
    let ok = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null"])
        .arg(format!("http://127.0.0.1:{port}/index.html?a=1"))
        .arg(format!("http://127.0.0.1:{port}/index.html?a=2"))
        .arg(format!("http://127.0.0.1:{port}/nope"))
        .status()
        .unwrap();
    let client_time = started.elapsed().as_nanos() as u64;
    assert!(ok.success());
    let is_http = |r: &Value| r["type"] == "protocols" && r["protocol"] == "http";
    let count = |rs: &[Value], pred: &dyn Fn(&Value) -> bool| calls(rs, "http", pred);
    let server_side = |r: &Value| is_pid(r, spid) && r["role"] == "server";
    daemon.wait_for(Duration::from_secs(10), |rs| count(rs, &server_side) >= 3);
    let records = daemon.stop();
    let _ = server.kill();
    let _ = server.wait();
    let client_side = |r: &Value| {
        r["role"] == "client" && remote(r)["remote_port"].as_str().and_then(|p| p.parse::<u16>().ok()) == Some(port)
    };
    for (side, name) in [(&client_side as &dyn Fn(&Value) -> bool, "client"), (&server_side, "server")] {
        let ok = |r: &Value| side(r) && r["url"] == "/index.html" && r["resp_code"] == "200" && r["success"] == "1";
        let missing = |r: &Value| side(r) && r["url"] == "/nope" && r["resp_code"] == "404" && r["success"] == "0";
        assert_eq!(count(&records, &ok), 2, "{name}: two successful GETs, query dropped: {records:#?}");
        assert_eq!(count(&records, &missing), 1, "{name}: one failed call");
        let r = records.iter().find(|r| is_http(r) && ok(r)).unwrap();
        assert_eq!((r["method"].as_str(), r["version"].as_str()), (Some("GET"), Some("1")));
        assert_eq!(r["host"], format!("127.0.0.1:{port}"));
        let latency: u64 = r["total_latency_ns"].as_str().unwrap().parse().unwrap();
        assert!(latency > 0 && latency < client_time, "{name}: latency {latency} within the client's {client_time}");
        let p99: u64 = r["latency_p99_ns"].as_str().unwrap().parse().unwrap();
        assert!(p99 > 0 && p99 <= r["latency_max_ns"].as_str().unwrap().parse().unwrap());
        assert!(r["total_resp_bytes"].as_str().unwrap().parse::<u64>().unwrap() > 2 * 3000);
    }
}

#[test]
fn redis_calls_from_redis_cli_and_pipelined_redis_benchmark() {
    let server = RedisServer::start();
    let spid = server.child.id();
    let daemon = Daemon::start(&config("DropLocalConnections: false\nFlushOutL7Interval: 1", "", ""));
    // redis-cli sends one command per process (plus nothing else with a command given).
    assert_eq!(server.cli(&["SET", "k", "v"]).trim(), "OK");
    assert_eq!(server.cli(&["GET", "k"]).trim(), "v");
    let err = server.cli(&["INCR", "k"]);
    assert!(err.contains("ERR"), "{err}");
    // Pipelined: 2000 SETs, 16 per round trip.
    let bench = Command::new("redis-benchmark")
        .args(["-p", &server.port.to_string(), "-t", "set", "-n", "2000", "-P", "16", "-c", "2", "-q"])
        .output()
        .unwrap();
    assert!(bench.status.success());
    let calls = |rs: &[Value], pred: &dyn Fn(&Value) -> bool| common::servers::calls(rs, "redis", pred);
    // With a small capture (WIRELENS_TEST_PAYLOAD_BYTES=256), the later SETs
    // of each 16-command write were never copied: they count, with no
    // command (their fields were in the lost bytes). With 4 KiB, every one
    // has its command.
    let small_capture = std::env::var("WIRELENS_TEST_PAYLOAD_BYTES").is_ok_and(|b| b.parse::<u32>().unwrap() < 1024);
    let set_or_unseen = |r: &Value| r["command"] == "SET" || (small_capture && r["command"].is_null());
    let server_sets = |r: &Value| is_pid(r, spid) && r["role"] == "server" && set_or_unseen(r);
    daemon.wait_for(Duration::from_secs(15), |rs| calls(rs, &server_sets) >= 2001);
    let records = daemon.stop();
    // Our own benchmark only: the client side of this server's port (other
    // redis-benchmark runs on the machine must not count).
    let bench_sets = |r: &Value| {
        r["_process_cmd_"].as_str().unwrap_or("").contains("redis-benchmark")
            && set_or_unseen(r)
            && r["role"] == "client"
            && remote(r)["remote_port"] == server.port.to_string().as_str()
    };
    assert_eq!(calls(&records, &bench_sets), 2000, "redis-benchmark's pipelined SETs");
    assert_eq!(calls(&records, &server_sets), 2001, "the server saw them and redis-cli's");
    assert_eq!(
        calls(&records, &|r: &Value| (bench_sets(r) || server_sets(r)) && r["success"] != "1"),
        0,
        "every SET succeeded (no failure, no unknown outcome: the replies were copied)"
    );
    let failed_incr = |r: &Value| is_pid(r, spid) && r["command"] == "INCR" && r["success"] == "0";
    assert_eq!(calls(&records, &failed_incr), 1, "the error reply is a failed call");
    let get = records
        .iter()
        .find(|r| {
            r["protocol"] == "redis"
                && r["command"] == "GET"
                && r["role"] == "client"
                && remote(r)["remote_port"] == server.port.to_string().as_str()
        })
        .unwrap();
    assert_eq!(get["key_count"], "1");
    assert_eq!(remote(get)["remote_port"], server.port.to_string());
}

#[test]
fn dns_over_udp_and_tcp_from_dig_against_dnsmasq() {
    let port = free_port();
    let mut dnsmasq = dnsmasq(port);
    let spid = dnsmasq.id();
    std::thread::sleep(Duration::from_millis(300));
    let daemon = Daemon::start(&config("DropLocalConnections: false\nFlushOutL7Interval: 1", "", ""));
    let dig = |name: &str, tcp: bool| {
        let mut c = Command::new("dig");
        c.args(["+tries=1", "+time=2", "@127.0.0.1", "-p", &port.to_string(), name]);
        if tcp {
            c.arg("+tcp");
        }
        let out = c.output().expect("dig (apt-get install bind9-dnsutils; scripts/setup.sh does it)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Names of this test's own (other tests and other load on the machine
    // may query dnsmasq servers of theirs at the same time).
    let (a, b, nope) = (format!("a{port}.x.test"), format!("b{port}.x.test"), format!("nope{port}.invalid"));
    for _ in 0..3 {
        assert!(dig(&a, false).contains("1.2.3.4"));
    }
    for _ in 0..2 {
        assert!(dig(&b, true).contains("1.2.3.4"));
    }
    assert!(dig(&nope, false).contains("REFUSED"));
    let calls = |rs: &[Value], pred: &dyn Fn(&Value) -> bool| common::servers::calls(rs, "dns", pred);
    // dnsmasq answers TCP from a forked child, which carries its parent's
    // command line (and this server's port in it).
    let own = format!("--port={port}");
    let server = |r: &Value| r["_process_cmd_"].as_str().unwrap_or("").contains(&own) && r["role"] == "server";
    daemon.wait_for(Duration::from_secs(15), |rs| calls(rs, &|r| server(r) && is_pid(r, spid)) >= 4);
    std::thread::sleep(Duration::from_millis(1500));
    let records = daemon.stop();
    let _ = dnsmasq.kill();
    let _ = dnsmasq.wait();
    // dig exits at once: its record is the client side of dnsmasq's port.
    let dig_side = |r: &Value| {
        r["role"] == "client" && remote(r)["remote_port"].as_str().and_then(|p| p.parse::<u16>().ok()) == Some(port)
    };
    for (side, name) in [(&server as &dyn Fn(&Value) -> bool, "dnsmasq"), (&dig_side, "dig")] {
        let q = |rec: &str, ok: &'static str| {
            let rec = rec.to_string();
            move |r: &Value| {
                side(r) && r["query_record"] == rec.as_str() && r["query_type"] == "A" && r["success"] == ok
            }
        };
        assert_eq!(calls(&records, &q(&a, "1")), 3, "{name}: UDP queries: {records:#?}");
        assert_eq!(calls(&records, &q(&b, "1")), 2, "{name}: TCP queries");
        assert_eq!(calls(&records, &q(&nope, "0")), 1, "{name}: REFUSED is a failure");
    }
    let r = records.iter().find(|r| r["protocol"] == "dns" && dig_side(r) && r["query_record"] == a.as_str()).unwrap();
    assert_eq!(remote(r)["remote_port"], port.to_string());
    assert_eq!(r["rcode"], "NOERROR");
}

#[test]
fn every_send_and_receive_family_is_counted_and_mmsg_messages_are_told_apart() {
    let port = free_port();
    let mut dnsmasq = dnsmasq(port);
    std::thread::sleep(Duration::from_millis(300));
    let daemon = Daemon::start(&config("DropLocalConnections: false\nFlushOutL7Interval: 1", "", ""));
    let script = common::root().join("tests/e2e/socket_calls.py");
    // Matched by pid: the script may exit before the daemon reads its
    // command line (records then carry the process name, `python3`).
    let child = Command::new("python3")
        .arg(&script)
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let pid = child.id();
    let out = child.wait_with_output().expect("python3");
    let _ = dnsmasq.kill();
    let _ = dnsmasq.wait();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let line = |what: &str| -> String {
        stdout.lines().find_map(|l| l.strip_prefix(what)).unwrap_or_else(|| panic!("{what}: {stdout}")).to_string()
    };
    let tcp_port = line("tcp ");
    line("udp "); // the mmsg part ran
    let on_tcp = |r: &Value, role: &str| {
        r["type"] == "statistics" && r["role"] == role && is_pid(r, pid) && {
            let rem = remote(r);
            (role == "client" && rem["remote_port"] == tcp_port.as_str())
                || (role == "server" && rem["remote_port"] != "0")
        }
    };
    let dns = |r: &Value, name: &str| {
        r["type"] == "protocols" && r["protocol"] == "dns" && r["query_record"] == name && is_pid(r, pid)
    };
    daemon.wait_for(Duration::from_secs(10), |rs| {
        sum(rs, "recv_bytes", |r| on_tcp(r, "client")) >= 1800 && rs.iter().any(|r| dns(r, "two.x.test"))
    });
    let records = daemon.stop();
    for role in ["client", "server"] {
        let mine = |r: &Value| on_tcp(r, role);
        assert_eq!(sum(&records, "send_bytes", mine), 1800, "{role}: {records:#?}");
        assert_eq!(sum(&records, "recv_bytes", mine), 1800, "{role}");
        assert_eq!(sum(&records, "send_packets", mine), 5, "{role}: five sending calls");
    }
    // Both messages of the sendmmsg call and both answers of recvmmsg,
    // each read from its own place in the vectors.
    for name in ["one.x.test", "two.x.test"] {
        let r = records.iter().find(|r| dns(r, name)).unwrap_or_else(|| panic!("{name}: {records:#?}"));
        assert_eq!(
            (r["role"].as_str(), r["success"].as_str(), r["total_count"].as_str()),
            (Some("client"), Some("1"), Some("1"))
        );
        assert_eq!(remote(r)["remote_port"], port.to_string());
    }
}

/// Messages gathered from many iovecs, cut inside their tokens, arrive
/// whole: the kernel programs read a call's iovec headers 32 at a time, and
/// one request has 40, on sendmsg, readv, writev and recvmsg_into alike.
#[test]
fn http_fields_survive_messages_cut_across_many_iovecs() {
    let daemon = Daemon::start(&config("DropLocalConnections: false\nFlushOutL7Interval: 1", "", ""));
    let script = common::root().join("tests/e2e/iov_http.py");
    let child = Command::new("python3").arg(&script).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let is_call = |r: &Value, role: &str| {
        r["type"] == "protocols" && r["protocol"] == "http" && is_pid(r, pid) && r["role"] == role
    };
    let total = |rs: &[Value], role: &str| calls(rs, "http", |r| is_pid(r, pid) && r["role"] == role);
    daemon.wait_for(Duration::from_secs(10), |rs| total(rs, "client") >= 3 && total(rs, "server") >= 3);
    let records = daemon.stop();
    for role in ["client", "server"] {
        assert_eq!(total(&records, role), 3, "{role}: {records:#?}");
        let r = records.iter().find(|r| is_call(r, role)).unwrap();
        let fields =
            ["method", "url", "resp_code", "success", "total_count", "total_resp_bytes"].map(|f| r[f].as_str());
        assert_eq!(
            fields,
            [Some("GET"), Some("/split/path"), Some("201"), Some("1"), Some("3"), Some("144")],
            "{role}: one record of three calls: {r:#?}"
        );
    }
}
