//! The output side end to end: several flushers at once (stdout, file with
//! rotation), processors and `Common.Tags`, a blocked flusher that must not
//! stall the rest, live config reload, and the Prometheus and Kafka
//! flushers against a real Prometheus server and a real Kafka-compatible
//! broker (Tansu). Needs root (CI runs as root).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::{num, remote, Daemon};
use common::prometheus::Prometheus;
use common::servers::{free_port, RedisServer, Tansu};
use serde_json::Value;

/// A config with 1 s windows: `common` lines under Common (indented by 6),
/// then `rest` (processors, flushers) as written.
fn config(common: &str, wirelens: &str, rest: &str) -> String {
    let indent = |s: &str, n: usize| s.lines().map(|l| format!("{}{l}\n", " ".repeat(n))).collect::<String>();
    format!(
        "enable: true\ninputs:\n  - Type: observer_ilogtail_network_v1\n    Common:\n      FlushOutL4Interval: 1\n      FlushOutL7Interval: 1\n      DropLocalConnections: false\n{}    EBPF:\n      Enabled: true\n    Wirelens:\n      PayloadBytes: 512\n      Admin: {{Listen: '127.0.0.1:0'}}\n{}{rest}",
        indent(common, 6),
        indent(wirelens, 6),
    )
}

fn healths(records: &[Value]) -> Vec<&Value> {
    records.iter().filter(|r| r["type"] == "health").collect()
}

/// `redis-cli PING` every 100 ms for `d`.
fn ping_for(redis: &RedisServer, d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        assert_eq!(redis.cli(&["PING"]).trim(), "PONG");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn stdout_and_file_at_once_with_tags_processor_and_rotation() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out/records.jsonl");
    let rest = format!(
        "processors:\n  - Type: processor_filter_regex\n    Include:\n      type: ^(statistics|health)$\nflushers:\n  - Type: flusher_stdout\n  - Type: flusher_file\n    FilePath: {}\n    MaxBytes: 4000\n    MaxFiles: 2\n",
        file.display()
    );
    let daemon = Daemon::start(&config("Tags:\n  team: net\n  env: test", "", &rest));
    ping_for(&redis, Duration::from_secs(4));
    let port = redis.port.to_string();
    let to_redis = |r: &Value| r["type"] == "statistics" && remote(r)["remote_port"] == port.as_str();
    daemon.wait_for(Duration::from_secs(10), |rs| rs.iter().any(to_redis));
    let records = daemon.stop();
    assert!(records.iter().any(to_redis), "stdout has the redis statistics");
    assert!(records.iter().all(|r| r["team"] == "net" && r["env"] == "test"), "Tags on every record");
    assert!(records.iter().all(|r| r["type"] != "protocols"), "the processor keeps statistics and health only");
    // The same records went to the file, rotated at 4000 bytes.
    let rotated = dir.path().join("out/records.jsonl.1");
    assert!(rotated.exists(), "rotated at MaxBytes");
    assert!(!dir.path().join("out/records.jsonl.3").exists(), "at most MaxFiles rotated files");
    let mut lines = Vec::new();
    for p in [&rotated, &file] {
        let text = std::fs::read_to_string(p).unwrap();
        assert!(text.len() <= 4000, "{}: {} bytes", p.display(), text.len());
        lines.extend(text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()));
    }
    assert!(lines.iter().all(|r| r["team"] == "net" && r["type"] != "protocols"));
    let last_health = healths(&records).last().copied().cloned().unwrap();
    assert!(lines.contains(&last_health), "the file holds the last health record too");
}

#[test]
fn a_blocked_flusher_does_not_stall_capture_or_other_flushers() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("blocked");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    // A reader that never reads, with the smallest pipe: the file flusher
    // blocks on its first few kilobytes.
    let reader = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&fifo).unwrap();
    // SAFETY: fcntl on a descriptor we own.
    unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&reader), libc::F_SETPIPE_SZ, 4096) };
    let rest =
        format!("flushers:\n  - Type: flusher_file\n    FilePath: {}\n  - Type: flusher_stdout\n", fifo.display());
    let daemon = Daemon::start(&config("", "FlusherQueueBatches: 2", &rest));
    ping_for(&redis, Duration::from_secs(6));
    let port = redis.port.to_string();
    daemon.wait_for(Duration::from_secs(10), |rs| {
        healths(rs).last().is_some_and(|h| num(h, "flusher_dropped") > 0) && healths(rs).len() >= 5
    });
    let records = daemon.records();
    drop(reader); // unblocks the writer (EPIPE) so the daemon can stop
    let _ = daemon.stop();
    let hs = healths(&records);
    assert!(hs.len() >= 5, "stdout kept getting a health record every second: {}", hs.len());
    let last = hs.last().unwrap();
    assert!(num(last, "flusher_dropped") > 0, "the blocked flusher's drops are counted: {last}");
    assert!(num(last, "events") > num(hs[0], "events"), "capture went on");
    let pings = records
        .iter()
        .filter(|r| r["type"] == "protocols" && r["command"] == "PING" && r["role"] == "client")
        .filter(|r| remote(r)["remote_port"] == port.as_str())
        .map(|r| num(r, "total_count"))
        .sum::<u64>();
    assert!(pings >= 20, "layer 7 went on too: {pings} PINGs");
}

use std::os::unix::fs::OpenOptionsExt;

#[test]
fn config_changes_apply_without_restart_and_bad_edits_are_rejected() {
    let tagged = |v: &str| config(&format!("Tags:\n  version: {v}"), "", "flushers:\n  - Type: flusher_stdout\n");
    let daemon = Daemon::start(&tagged("one"));
    let path = daemon.config_path().to_path_buf();
    // Editors replace the file: write a new one and rename it over.
    let replace = |text: &str| {
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    };
    let has = |v: &'static str| move |rs: &[Value]| rs.iter().any(|r| r["type"] == "health" && r["version"] == v);
    assert!(daemon.wait_for(Duration::from_secs(10), has("one")));
    replace(&tagged("two"));
    assert!(daemon.wait_for(Duration::from_secs(10), has("two")), "the new tag applies: {}", daemon.stderr());
    assert!(daemon.stderr().contains("config reloaded"));
    let before_bad = daemon.records().len();
    replace(&tagged("three").replace("FlushOutL7Interval", "FlushOutL7Intervall"));
    let rejected = |d: &Daemon| d.stderr().contains("config change rejected");
    let start = Instant::now();
    while !rejected(&daemon) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let stderr = daemon.stderr();
    assert!(
        stderr.contains("FlushOutL7Intervall") && stderr.contains("did you mean `FlushOutL7Interval`?"),
        "{stderr}"
    );
    // The running config stays: records keep coming, still tagged `two`.
    assert!(daemon.wait_for(Duration::from_secs(10), |rs| rs.len() > before_bad + 2));
    let records = daemon.stop();
    let after: Vec<&Value> = records[before_bad..].iter().filter(|r| r["type"] == "health").collect();
    assert!(!after.is_empty() && after.iter().all(|r| r["version"] == "two"), "{after:?}");
}

#[test]
fn prometheus_scrapes_counters_histograms_and_health() {
    let redis = RedisServer::start();
    let metrics_port = free_port();
    let rest = format!(
        "flushers:\n  - Type: flusher_stdout\n  - Type: flusher_prometheus\n    Listen: 127.0.0.1:{metrics_port}\n"
    );
    let daemon = Daemon::start(&config("", "", &rest));
    let prometheus = Prometheus::start(&format!("127.0.0.1:{metrics_port}"));
    // redis-cli under a name of this test's own: the L7 series carry the
    // process name, not the server port, and other redis-cli runs on the
    // machine must not count.
    let (_bin, cli, name) = own_name("wlcli", &which("redis-cli"));
    for i in 0..25 {
        let out =
            Command::new(&cli).args(["-p", &redis.port.to_string(), "SET", &format!("k{i}"), "v"]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK");
    }
    let sets = format!(r#"wirelens_l7_calls_total{{protocol="redis",call="SET",role="client",process="{name}"}}"#);
    let start = Instant::now();
    let mut seen = None;
    while start.elapsed() < Duration::from_secs(30) {
        seen = prometheus.query(&format!("sum({sets})"));
        if seen == Some(25.0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(seen, Some(25.0), "Prometheus sees the 25 SETs");
    let hist = format!(
        r#"sum(wirelens_l7_latency_seconds_count{{protocol="redis",call="SET",role="client",process="{name}"}})"#
    );
    assert_eq!(prometheus.query(&hist), Some(25.0), "the latency histogram counts them");
    let p99 = format!(
        r#"histogram_quantile(0.99, sum by (le) (wirelens_l7_latency_seconds_bucket{{protocol="redis",call="SET",role="client",process="{name}"}}))"#
    );
    let q = prometheus.query(&p99).expect("a p99 from the buckets");
    assert!(q > 0.0 && q < 1.0, "p99 {q} s");
    let port = redis.port;
    let bytes = format!(r#"sum(wirelens_l4_send_bytes_total{{role="client",remote_port="{port}"}})"#);
    assert!(prometheus.query(&bytes).is_some_and(|b| b > 0.0), "layer-4 counters");
    assert!(prometheus.query("wirelens_health_events_total").is_some_and(|e| e > 0.0), "health gauges");
    let _ = daemon.stop();
}

/// 50,000 clients, each from its own port, against one server: the
/// server's series do not multiply with the clients' ephemeral ports (they
/// filled `MaxSeries` within seconds), and once the traffic stops its
/// series expire after `ExpireWindows` windows. A real Prometheus scrapes.
#[test]
fn prometheus_series_stay_bounded_across_client_ports_and_expire() {
    const CLIENTS: u32 = 50_000;
    let metrics_port = free_port();
    let rest = format!(
        "flushers:\n  - Type: flusher_prometheus\n    Listen: 127.0.0.1:{metrics_port}\n    ExpireWindows: 5\n"
    );
    // The records keep each client's port (iLogtail's remote_info): the
    // windows are given room for every one of them.
    let daemon = Daemon::start(&config("", "MaxL4Keys: 200000", &rest));
    let prometheus = Prometheus::start(&format!("127.0.0.1:{metrics_port}"));
    // One process, named for this test, serves and connects: each client
    // binds its own port (10000 up, past the kernel's ephemeral range).
    // Debian's interpreter itself (a pyenv shim on PATH would look for a
    // program of the link's name).
    let python = std::fs::canonicalize("/usr/bin/python3").expect("/usr/bin/python3 (apt-get install python3)");
    let (_bin, program, name) = own_name("wlports", &python);
    let script = r#"
import socket, sys, threading
n = int(sys.argv[1])
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1024)
served = threading.Semaphore(0)
def serve():
    while True:
        c, _ = srv.accept()
        while c.recv(64): pass
        c.close(); served.release()
threading.Thread(target=serve, daemon=True).start()
done, got, port = 0, 0, 10000
while done < n and port < 65535:
    c = socket.socket(); c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        c.bind(("127.0.0.1", port)); c.connect(srv.getsockname())
    except OSError:
        c.close(); port += 1; continue
    c.sendall(b"hello"); c.close(); done += 1; port += 1
    # At most 512 connections ahead of the server, so its accept queue
    # (1024) never overflows (a connection lost there was once never served).
    if done - got >= 512:
        got += served.acquire(timeout=30)
# The server reads every connection before the process ends.
print(got + sum(served.acquire(timeout=30) for _ in range(done - got)), flush=True)
"#;
    let out = Command::new(&program).arg("-c").arg(script).arg(CLIENTS.to_string()).output().unwrap();
    let done: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or_else(|_| {
        panic!("the client script failed: {}", String::from_utf8_lossy(&out.stderr));
    });
    assert_eq!(done, u64::from(CLIENTS), "distinct client ports");
    let server = format!(r#"wirelens_l4_recv_bytes_total{{process="{name}",role="server"}}"#);
    let start = Instant::now();
    let mut received = None;
    while start.elapsed() < Duration::from_secs(60) {
        received = prometheus.query(&format!("sum({server})"));
        if received == Some(5.0 * f64::from(CLIENTS)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(received, Some(5.0 * f64::from(CLIENTS)), "every client's bytes, on the server's side");
    assert_eq!(
        prometheus.query(&format!("count({server})")),
        Some(1.0),
        "one server series for {CLIENTS} client ports"
    );
    assert_eq!(prometheus.query(r#"count(wirelens_l4_recv_bytes_total{process="other"})"#), None, "nothing folded");
    let all = prometheus.query("count(wirelens_l4_recv_bytes_total)").unwrap_or(0.0);
    assert!(all < 2000.0, "{all} layer-4 series");
    // Quiet from now on: gone after 5 windows of 1 s (Prometheus marks a
    // series stale once a scrape no longer has it).
    let start = Instant::now();
    while prometheus.query(&format!("count({server})")).is_some() {
        assert!(start.elapsed() < Duration::from_secs(30), "the idle series never expired");
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = daemon.stop();
}

/// Every message on partition 0 of `topic`, as JSON.
fn consume(port: u16, topic: &str) -> Vec<Value> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = rskafka::client::ClientBuilder::new(vec![format!("127.0.0.1:{port}")]).build().await.unwrap();
        let partition =
            client.partition_client(topic, 0, rskafka::client::partition::UnknownTopicHandling::Error).await.unwrap();
        let mut out = Vec::new();
        let mut offset = 0;
        loop {
            let (records, high) = partition.fetch_records(offset, 1..5_000_000, 1_000).await.unwrap();
            for r in &records {
                out.push(serde_json::from_slice(r.record.value.as_deref().unwrap_or_default()).unwrap());
                offset = r.offset + 1;
            }
            if records.is_empty() || offset >= high {
                break;
            }
        }
        out
    })
}

#[test]
fn kafka_gets_every_record_even_when_the_broker_starts_late() {
    let port = free_port();
    let rest = format!(
        "flushers:\n  - Type: flusher_stdout\n  - Type: flusher_kafka\n    Brokers: ['127.0.0.1:{port}']\n    Topic: wirelens\n    BatchRecords: 50\n"
    );
    // The broker is not up yet: records wait in the flusher's buffer.
    let daemon = Daemon::start(&config("", "", &rest));
    daemon.wait_for(Duration::from_secs(10), |rs| healths(rs).len() >= 3);
    let broker = Tansu::start_on(port);
    let start = Instant::now();
    let mut consumed = Vec::new();
    while start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(500));
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            continue;
        }
        let stdout_healths = healths(&daemon.records()).len();
        let got = std::panic::catch_unwind(|| consume(port, "wirelens")).unwrap_or_default();
        if healths(&got).len() >= stdout_healths && stdout_healths >= 5 {
            consumed = got;
            break;
        }
    }
    let records = daemon.stop();
    drop(broker);
    let first_healths: Vec<&Value> = healths(&records).into_iter().take(3).collect();
    let kafka_healths = healths(&consumed);
    for h in &first_healths {
        assert!(kafka_healths.contains(h), "a health record from before the broker started reached Kafka: {h}");
    }
    assert!(consumed.iter().any(|r| r["type"] == "statistics"), "statistics reached Kafka");
    let last = kafka_healths.last().expect("health records in Kafka");
    assert_eq!(num(last, "flusher_dropped"), 0, "nothing dropped");
}

/// The seed document's example, unchanged, runs: records (health at least)
/// every 5 seconds on stdout, and a clean exit on SIGINT.
#[test]
fn the_seed_example_runs_unchanged() {
    let text = std::fs::read_to_string(common::root().join("configs/seed-example.yaml")).unwrap();
    let daemon = Daemon::start(&text);
    assert!(daemon.wait_for(Duration::from_secs(15), |rs| !healths(rs).is_empty()), "{}", daemon.stderr());
    let records = daemon.stop();
    assert!(records.iter().all(|r| r["__time__"].is_string()), "every record is timed");
}

/// `program` under a name of this test run's own (`prefix` and the pid):
/// the link's directory (kept while the link is used), the link and the
/// name. Records name processes by their program, so other runs of the
/// same program on the machine never count.
fn own_name(prefix: &str, program: &std::path::Path) -> (tempfile::TempDir, std::path::PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("{prefix}{}", std::process::id() % 100_000);
    let link = dir.path().join(&name);
    std::os::unix::fs::symlink(program, &link).unwrap();
    (dir, link, name)
}

/// The full path of a program on PATH.
fn which(program: &str) -> std::path::PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(program)).find(|p| p.exists()))
        .unwrap_or_else(|| panic!("{program} not on PATH (scripts/setup.sh installs it)"))
}

/// Secrets on a command line are masked before any processor or flusher
/// sees them: stdout, file and Kafka records all carry `***` for each
/// default pattern, never the secret.
#[test]
fn command_line_secrets_are_masked_in_every_output() {
    let redis = RedisServer::start();
    let broker_port = free_port();
    let broker = Tansu::start_on(broker_port);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("records.jsonl");
    let rest = format!(
        "flushers:\n  - Type: flusher_stdout\n  - Type: flusher_file\n    FilePath: {}\n  - Type: flusher_kafka\n    Brokers: ['127.0.0.1:{broker_port}']\n    Topic: masked\n    BatchRecords: 10\n",
        file.display()
    );
    let daemon = Daemon::start(&config("", "", &rest));
    // A client whose arguments carry one secret of each default kind (the
    // script ignores them) talks to redis.
    let secrets = ["hunter2a", "hunter2b", "hunter2c", "hunter2d", "hunter2e", "hunter2f"];
    let script = "import socket,sys\ns=socket.create_connection(('127.0.0.1',int(sys.argv[1])))\ns.sendall(b'PING\\r\\n')\ns.recv(64)\n";
    let script_file = dir.path().join("c.py");
    std::fs::write(&script_file, script).unwrap();
    let out = Command::new("python3")
        .arg(&script_file)
        .arg(redis.port.to_string())
        .arg(format!("DB_PASSWORD={}", secrets[0]))
        .arg(format!("API_TOKEN={}", secrets[1]))
        .arg(format!("--password={}", secrets[2]))
        .args(["--token", secrets[3]])
        .arg(format!("postgresql://app:{}@db/shop", secrets[4]))
        .arg(format!("--secret={}", secrets[5]))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let port = redis.port.to_string();
    let mine =
        |r: &Value| r["type"] == "statistics" && remote(r)["remote_port"] == port.as_str() && r["role"] == "client";
    daemon.wait_for(Duration::from_secs(15), |rs| rs.iter().any(mine));
    std::thread::sleep(Duration::from_millis(1500));
    let records = daemon.stop();
    let from_kafka = {
        let start = Instant::now();
        let mut got = Vec::new();
        while start.elapsed() < Duration::from_secs(20) && !got.iter().any(|r: &Value| mine(r)) {
            got = std::panic::catch_unwind(|| consume(broker_port, "masked")).unwrap_or_default();
            std::thread::sleep(Duration::from_millis(300));
        }
        got
    };
    drop(broker);
    let from_file: Vec<Value> =
        std::fs::read_to_string(&file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for (name, rs) in [("stdout", &records), ("file", &from_file), ("kafka", &from_kafka)] {
        let r = rs.iter().find(|r| mine(r)).unwrap_or_else(|| panic!("{name}: the client's statistics"));
        let cmd = r["_process_cmd_"].as_str().unwrap();
        for s in secrets {
            assert!(!cmd.contains(s), "{name}: {s} in {cmd}");
        }
        for masked in
            ["DB_PASSWORD=***", "API_TOKEN=***", "--password=***", "--token ***", "app:***@db", "--secret=***"]
        {
            assert!(cmd.contains(masked), "{name}: {masked} in {cmd}");
        }
        let text: String = rs.iter().map(|r| r.to_string()).collect();
        assert!(!secrets.iter().any(|s| text.contains(s)), "{name}: no secret anywhere");
    }
}
