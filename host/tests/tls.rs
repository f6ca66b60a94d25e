//! TLS plaintext through the uprobes on OpenSSL (issue 17): real clients and
//! servers linking Debian's libssl.so.3, exact counts on both sides, the
//! same fields as clear traffic plus `tls: "1"`; `Wirelens.Tls: false`
//! leaves layer 4 only; excluded processes are denied in the kernel.
//! Needs root.
//!
//! The tests take one lock: the kernel's TLS counters (health) are the
//! machine's, and each test reads them.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use common::daemon::{config, last_health, num, remote, sum, Daemon};
use common::servers::{
    calls, client_of, cmd_has, free_port, self_signed, Cert, DockerEngine, MariaDb, Nginx, Postgres, RedisServer,
};
use common::tshark;
use serde_json::Value;

static SERIAL: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A shared library of the system (Debian's multiarch directories), or a
/// panic naming the package.
fn system_library(name: &str, package: &str) -> std::path::PathBuf {
    ["x86_64-linux-gnu", "aarch64-linux-gnu"]
        .iter()
        .map(|arch| std::path::Path::new("/usr/lib").join(arch).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} (apt-get install {package})"))
}

/// The lock, a web root and a certificate: what most tests start with.
fn fixture() -> (std::sync::MutexGuard<'static, ()>, tempfile::TempDir, Cert) {
    (lock(), web_root(), self_signed())
}

fn is_pid(r: &Value, pid: u32) -> bool {
    r["_process_pid_"].as_str().and_then(|s| s.parse::<u32>().ok()) == Some(pid)
}

/// The server side of calls to `port` (the server's own local port is in
/// no field: its records are found by its pid).
fn server_of(r: &Value, pid: u32) -> bool {
    r["role"] == "server" && is_pid(r, pid)
}

fn protocols(records: &[Value]) -> impl Iterator<Item = &Value> {
    records.iter().filter(|r| r["type"] == "protocols")
}

/// Every key of a record but those whose value is per call (counts, sizes,
/// latencies, time, the process).
fn field_names(r: &Value) -> Vec<String> {
    let mut keys: Vec<String> = r
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| !k.starts_with("total_") && !k.starts_with("latency_") && !k.starts_with('_'))
        .cloned()
        .collect();
    keys.sort();
    keys
}

/// A web root: index.html, and big.bin (2 MiB, many TLS records).
fn web_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "<html>hello</html>\n").unwrap();
    std::fs::write(dir.path().join("big.bin"), vec![b'x'; 2 << 20]).unwrap();
    dir
}

/// One curl process fetching `urls` over one keep-alive connection.
fn curl(urls: &[String]) -> (u32, String) {
    curl_with_keys(urls, None)
}

/// The same, writing the TLS session keys to `keylog` (for tshark).
fn curl_with_keys(urls: &[String], keylog: Option<&std::path::Path>) -> (u32, String) {
    let mut cmd = Command::new("curl");
    if let Some(path) = keylog {
        cmd.env("SSLKEYLOGFILE", path);
    }
    let out = cmd
        // 1 MB/s: a large body takes long enough for the skip to reach the kernel.
        .args(["-sk", "--http1.1", "--limit-rate", "1M", "-w", "%{http_code} "])
        .args(urls.iter().flat_map(|u| ["-o", "/dev/null", u.as_str()]))
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl (scripts/setup.sh installs it)");
    let pid = out.id();
    let out = out.wait_with_output().unwrap();
    assert!(out.status.success(), "curl failed");
    (pid, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A field of the latest health record so far (0 before the first).
fn latest_health(records: &[Value], field: &str) -> u64 {
    last_health(records).map_or(0, |h| num(h, field))
}

fn health(records: &[Value]) -> &Value {
    last_health(records).expect("a health record")
}

/// curl -> nginx over HTTPS on one keep-alive connection: 5 pages, 2 not
/// found, a 2 MiB body. Each side counts exactly those calls, flagged TLS,
/// with the fields clear HTTP has, as tshark does decrypting the capture
/// with curl's session keys; the ciphertext is never parsed (no clear
/// record for the port) and still counts at layer 4.
#[test]
fn curl_to_nginx_over_https() {
    let (_serial, root, cert) = fixture();
    let nginx = Nginx::start_tls(root.path(), &cert);
    let clear = Nginx::start(root.path());
    let daemon = Daemon::start(&config("DropLocalConnections: false\nFlushOutL7Interval: 1", "", ""));
    daemon.wait_for_tls_libraries(1);
    let url = |port: u16, path: &str| format!("https://127.0.0.1:{port}{path}");
    let mut urls: Vec<String> = (0..5).map(|i| url(nginx.port, &format!("/index.html?i={i}"))).collect();
    urls.push(url(nginx.port, "/missing"));
    urls.push(url(nginx.port, "/big.bin"));
    urls.push(url(nginx.port, "/missing"));
    // tshark decodes the same traffic with the session keys curl writes.
    let keylog = tempfile::NamedTempFile::new().unwrap();
    let capture = tshark::Capture::start(nginx.port);
    let (cpid, codes) = curl_with_keys(&urls, Some(keylog.path()));
    assert_eq!(codes.trim(), "200 200 200 200 200 404 200 404");
    let decoded = capture.stop();
    let (_, codes) = curl(&[format!("http://127.0.0.1:{}/index.html", clear.port)]);
    assert_eq!(codes.trim(), "200");
    let npid = nginx.child.id();
    daemon.wait_for(Duration::from_secs(20), |rs| {
        calls(rs, "http", |r| client_of(r, nginx.port)) >= 8 && calls(rs, "http", |r| server_of(r, npid)) >= 8
    });
    std::thread::sleep(Duration::from_millis(2500));
    let records = daemon.stop();

    let client: Vec<&Value> = protocols(&records).filter(|r| client_of(r, nginx.port)).collect();
    let server: Vec<&Value> = protocols(&records).filter(|r| server_of(r, npid)).collect();
    for (side, rs) in [("client", &client), ("server", &server)] {
        let total: u64 = rs.iter().map(|r| num(r, "total_count")).sum();
        assert_eq!(total, 8, "{side}: every call once: {rs:#?}");
        for r in rs.iter() {
            assert_eq!(r["tls"], "1", "{side}: {r}");
            assert_eq!(r["protocol"], "http", "{side}: {r}");
        }
        let by_code =
            |code: &str| rs.iter().filter(|r| r["resp_code"] == code).map(|r| num(r, "total_count")).sum::<u64>();
        assert_eq!((by_code("200"), by_code("404")), (6, 2), "{side}: {rs:#?}");
        let big: Vec<&&Value> = rs.iter().filter(|r| r["url"] == "/big.bin").collect();
        assert_eq!(big.len(), 1, "{side}: {rs:#?}");
        assert!(num(big[0], "total_resp_bytes") > 2 << 20, "{side}: the whole body: {}", big[0]);
    }
    assert!(client.iter().all(|r| is_pid(r, cpid)), "the curl process");
    let tally = decoded.https(nginx.port, keylog.path());
    assert_eq!((tally.calls, tally.failed), (8, 2), "tshark decrypts and counts the same calls");
    for (side, pred) in [
        ("client", &(|r: &Value| client_of(r, nginx.port)) as &dyn Fn(&Value) -> bool),
        ("server", &|r: &Value| server_of(r, npid)),
    ] {
        let seen = tshark::observed(&records, "http", pred);
        assert_eq!((seen.calls, seen.failed), (tally.calls, tally.failed), "{side} against tshark");
    }
    // The same fields as clear HTTP, and `tls`.
    let plain = protocols(&records).find(|r| client_of(r, clear.port)).expect("the clear call");
    assert!(plain.get("tls").is_none(), "{plain}");
    let mut expected = field_names(plain);
    expected.push("tls".into());
    expected.sort();
    let tls_200 = client.iter().find(|r| r["resp_code"] == "200" && r["url"] == "/index.html").unwrap();
    assert_eq!(field_names(tls_200), expected);
    // Layer 4: the encrypted bytes (more than the plaintext).
    let l4_in = sum(&records, "recv_bytes", |r| {
        r["role"] == "client" && remote(r)["remote_port"] == nginx.port.to_string().as_str()
    });
    assert!(l4_in > 2 << 20, "layer 4 counts the ciphertext received: {l4_in}");
    let h = health(&records);
    assert!(num(h, "tls_libraries") >= 1, "{h}");
    assert!(num(h, "tls_calls") >= 16, "{h}");
    // The 2 MiB body (2 s at curl's 1 MB/s) is skipped by the HTTP plugin:
    // once the skip reaches the kernel, its SSL calls are recorded by size,
    // not copied (47 of about 256 here; 0 before TLS connections had
    // wishes of their own).
    assert!(num(h, "kernel_skipped") >= 20, "{h}");
}

/// A Python `ssl` server and client, both started before the daemon (so
/// the library is found in running processes and the connection is older
/// than the daemon): each side counts exactly its calls.
#[test]
fn python_ssl_pair_started_before_the_daemon() {
    let _serial = lock();
    let root = web_root();
    let cert: Cert = self_signed();
    let port = free_port();
    let mut server = python_server(port, &cert, root.path());
    let (mut client, mut out) = waiting_client(&["client", &port.to_string(), "10", "wait"], None);

    let daemon = Daemon::start(&config("DropLocalConnections: false\nFlushOutL7Interval: 1", "", ""));
    daemon.wait_for_tls_libraries(1);
    writeln!(client.stdin.as_mut().unwrap()).unwrap();
    assert_eq!(line_of(&mut out), format!("done {}404", "200 ".repeat(10)));
    let (cpid, spid) = (client.id(), server.id());
    daemon.wait_for(Duration::from_secs(20), |rs| {
        calls(rs, "http", |r| is_pid(r, cpid)) >= 11 && calls(rs, "http", |r| server_of(r, spid)) >= 11
    });
    std::thread::sleep(Duration::from_millis(2500));
    let records = daemon.stop();
    finish(&mut client);
    finish(&mut server);
    for (side, pred) in [
        ("client", Box::new(|r: &Value| is_pid(r, cpid)) as Box<dyn Fn(&Value) -> bool>),
        ("server", Box::new(move |r: &Value| server_of(r, spid))),
    ] {
        let rs: Vec<&Value> = protocols(&records).filter(|r| pred(r)).collect();
        let total: u64 = rs.iter().map(|r| num(r, "total_count")).sum();
        assert_eq!(total, 11, "{side}: {rs:#?}");
        assert!(rs.iter().all(|r| r["tls"] == "1" && r["protocol"] == "http"), "{side}: {rs:#?}");
        let not_found: u64 = rs.iter().filter(|r| r["resp_code"] == "404").map(|r| num(r, "total_count")).sum();
        assert_eq!(not_found, 1, "{side}: {rs:#?}");
    }
}

/// SSL calls in progress are counted machine-wide (a TCP call asks whether
/// it runs inside one only while any are): a client and a server waiting
/// inside SSL_read are counted, and a client killed there (its return
/// probe never runs) stops being counted when its thread ends, as the
/// server does when its read returns.
#[test]
fn ssl_calls_in_progress_end_with_their_threads() {
    let _serial = lock();
    let root = web_root();
    let cert: Cert = self_signed();
    let port = free_port();
    let mut server = python_server(port, &cert, root.path());
    let (mut client, mut out) = waiting_client(&["hang", &port.to_string()], None);
    let daemon = Daemon::start(&config("DropLocalConnections: false", "", ""));
    daemon.wait_for_tls_libraries(1);
    // Other processes of the machine may be inside SSL calls too.
    std::thread::sleep(Duration::from_millis(1500));
    let before = latest_health(&daemon.records(), "tls_calls_in_progress");
    writeln!(client.stdin.as_mut().unwrap()).unwrap();
    assert_eq!(line_of(&mut out), "hanging");
    let in_progress = |rs: &[Value]| latest_health(rs, "tls_calls_in_progress");
    let waiting = daemon.wait_for(Duration::from_secs(10), |rs| in_progress(rs) > before);
    assert!(waiting, "a client waiting in SSL_read is not counted: {} before, {}", before, health(&daemon.records()));
    client.kill().unwrap();
    let _ = client.wait();
    let ended = daemon.wait_for(Duration::from_secs(10), |rs| in_progress(rs) <= before);
    let records = daemon.stop();
    finish(&mut server);
    assert!(ended, "a thread killed inside SSL_read is still counted: {before} before, {}", health(&records));
}

/// The Python `ssl` HTTPS server of tests/e2e/tls_pair.py serving `root`, ready.
fn python_server(port: u16, cert: &Cert, root: &std::path::Path) -> Child {
    let mut server = Command::new("python3")
        .arg(common::root().join("tests/e2e/tls_pair.py"))
        .args(["server", &port.to_string()])
        .arg(&cert.cert)
        .arg(&cert.key)
        .current_dir(root)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut ready = String::new();
    BufReader::new(server.stdout.as_mut().unwrap()).read_line(&mut ready).unwrap();
    assert_eq!(ready.trim(), "ready");
    server
}

/// A line from a child's stdout.
fn line_of(out: &mut impl BufRead) -> String {
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    line.trim().to_string()
}

/// A client of tests/e2e/tls_pair.py (`client PORT N wait` or `late PORT
/// N`) that said "waiting": it goes on at each line written to its stdin.
/// `libs`: LD_LIBRARY_PATH.
fn waiting_client(args: &[&str], libs: Option<&std::path::Path>) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut cmd = Command::new("python3");
    cmd.arg(common::root().join("tests/e2e/tls_pair.py")).args(args);
    if let Some(dir) = libs {
        cmd.env("LD_LIBRARY_PATH", dir);
    }
    let mut client = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("python3");
    let mut out = BufReader::new(client.stdout.take().unwrap());
    assert_eq!(line_of(&mut out), "waiting");
    (client, out)
}

fn finish(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// `Wirelens.Tls: false`: the same HTTPS and Redis-over-TLS traffic gives
/// layer-4 records only.
#[test]
fn tls_off_leaves_layer_4_only() {
    let (_serial, root, cert) = fixture();
    let nginx = Nginx::start_tls(root.path(), &cert);
    let redis = RedisServer::start_tls(&cert);
    let daemon = Daemon::start(&config("DropLocalConnections: false\nFlushOutL7Interval: 1", "", "Tls: false"));
    std::thread::sleep(Duration::from_millis(1500));
    let urls: Vec<String> = (0..3).map(|i| format!("https://127.0.0.1:{}/index.html?i={i}", nginx.port)).collect();
    let (_, codes) = curl(&urls);
    assert_eq!(codes.trim(), "200 200 200");
    assert_eq!(redis.cli(&["SET", "k", "v"]).trim(), "OK");
    let ports = [nginx.port.to_string(), redis.port.to_string()];
    fn at(port: &str) -> impl Fn(&Value) -> bool + '_ {
        move |r: &Value| r["role"] == "client" && remote(r)["remote_port"] == port
    }
    daemon.wait_for(Duration::from_secs(20), |rs| ports.iter().all(|p| sum(rs, "recv_bytes", at(p)) > 0));
    std::thread::sleep(Duration::from_millis(2500));
    let records = daemon.stop();
    for p in &ports {
        assert!(sum(&records, "recv_bytes", at(p)) > 0, "layer 4 sees the connection to {p}");
    }
    let l7: Vec<&Value> =
        protocols(&records).filter(|r| client_of(r, nginx.port) || client_of(r, redis.port)).collect();
    assert!(l7.is_empty(), "no layer-7 call: {l7:#?}");
    let h = health(&records);
    assert_eq!((num(h, "tls_libraries"), num(h, "tls_calls")), (0, 0), "{h}");
}

/// Processes the filters exclude are denied in the kernel: after its first
/// calls (the daemon decides on the first event it sees of a process), an
/// excluded TLS client's calls are dropped at the uprobe, before anything
/// is read, and counted as denied.
#[test]
fn excluded_processes_are_denied_at_the_uprobe() {
    let (_serial, root, cert) = fixture();
    let port = free_port();
    let script = common::root().join("tests/e2e/tls_pair.py");
    // Everything is excluded.
    let filters = "DropLocalConnections: false\nFlushOutL7Interval: 1\nIncludeCmdRegex: '^no-such-program$'";
    let daemon = Daemon::start(&config(filters, "", ""));
    let mut server = python_server(port, &cert, root.path());
    daemon.wait_for_tls_libraries(1);
    // One call each, to be decided on; then 200 more, after the server's
    // denial landed (the new client's first calls may be read: its first
    // events decide it).
    let first = Command::new("python3").arg(&script).args(["client", &port.to_string(), "1"]).output().unwrap();
    assert!(first.status.success());
    std::thread::sleep(Duration::from_millis(1500));
    let before = daemon.records();
    let before = num(health(&before), "tls_calls");
    let (mut client, mut out) = waiting_client(&["client", &port.to_string(), "200", "wait"], None);
    writeln!(client.stdin.as_mut().unwrap()).unwrap();
    let line = line_of(&mut out);
    assert!(line.starts_with("done 200"), "{line}");
    std::thread::sleep(Duration::from_millis(2500));
    let records = daemon.stop();
    finish(&mut client);
    finish(&mut server);
    let l7: Vec<&Value> = protocols(&records).collect();
    assert!(l7.is_empty(), "excluded: {l7:#?}");
    let h = health(&records);
    // The server was denied after its first calls: its 2x201 calls of the
    // second client (and the client's own) never reached the uprobes' reads.
    let after = num(h, "tls_calls");
    assert!(after - before < 100, "TLS calls read after the denials: {} ({h})", after - before);
    assert!(num(h, "kernel_denied") >= 400, "{h}");
}

/// Calls matching `pred` by what they say (protocol, role, every field but
/// counts, sizes, latencies, process, peer and `tls`): TLS and clear runs
/// of one workload compare equal.
fn by_fields(records: &[Value], pred: impl Fn(&Value) -> bool) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for r in protocols(records).filter(|r| pred(r)) {
        let mut key: Vec<String> = r
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| {
                !k.starts_with("total_")
                    && !k.starts_with("latency_")
                    && !k.starts_with('_')
                    && !["remote_info", "tls", "__time__"].contains(&k.as_str())
            })
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect();
        key.sort();
        *out.entry(key.join(" ")).or_default() += num(r, "total_count");
    }
    out
}

/// (records flagged TLS, records) among those matching `pred`.
fn tls_flags(records: &[Value], pred: impl Fn(&Value) -> bool) -> (usize, usize) {
    let rs: Vec<&Value> = protocols(records).filter(|r| pred(r)).collect();
    (rs.iter().filter(|r| r["tls"] == "1").count(), rs.len())
}

/// A side of a connection: its name, its records in the clear run and in
/// the TLS run.
type Side<'a> = (&'a str, &'a dyn Fn(&Value) -> bool, &'a dyn Fn(&Value) -> bool);

/// The TLS run counts what the clear run of the same workload counts, call
/// for call and field for field, on each side (`sides`: name, the clear
/// run's records, the TLS run's), the clear run seen at least `least`
/// times; and every TLS call says so.
fn assert_as_in_the_clear(records: &[Value], least: u64, sides: [Side; 2]) {
    for (side, clear, tls) in sides {
        let (clear, tls) = (by_fields(records, clear), by_fields(records, tls));
        assert!(clear.values().sum::<u64>() >= least, "{side}: the clear run is seen: {clear:#?}");
        assert_eq!(tls, clear, "{side}: TLS calls as clear ones");
    }
    let (flagged, all) = tls_flags(records, |r| sides.iter().any(|(_, _, tls)| tls(r)));
    assert_eq!(flagged, all, "every TLS call says so");
    assert_eq!(tls_flags(records, |r| sides.iter().any(|(_, clear, _)| clear(r))).0, 0, "no clear call is TLS");
}

/// psql (sslmode=require: simple queries, an error) and pgbench (simple
/// and extended protocol) against PostgreSQL with `ssl=on`: every call is
/// counted as the same workload against a clear server is, on both sides,
/// flagged TLS.
#[test]
fn postgres_over_tls_counts_as_in_the_clear() {
    let _serial = lock();
    let cert = self_signed();
    let servers = [Postgres::start(), Postgres::start_tls(&cert)];
    for pg in &servers {
        pg.init_pgbench();
    }
    let daemon = Daemon::start(&config("DropLocalConnections: false\nFlushOutL7Interval: 1", "", ""));
    daemon.wait_for_tls_libraries(1);
    for pg in &servers {
        pg.psql_sample();
        pg.pgbench_both_protocols();
    }
    let server_of = |pg: &Postgres| {
        let own = format!("-p {} ", pg.port);
        move |r: &Value| r["role"] == "server" && cmd_has(r, "postgres") && cmd_has(r, &own)
    };
    let update = "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;";
    let (clear_server, tls_server) = (server_of(&servers[0]), server_of(&servers[1]));
    daemon.wait_for(Duration::from_secs(20), |rs| {
        calls(rs, "pgsql", |r| tls_server(r) && r["sql"] == update) >= 10
            && calls(rs, "pgsql", |r| client_of(r, servers[1].port) && r["sql"] == update) >= 10
    });
    std::thread::sleep(Duration::from_millis(2500));
    let records = daemon.stop();
    let (clear_port, tls_port) = (servers[0].port, servers[1].port);
    assert_as_in_the_clear(
        &records,
        30,
        [
            ("client", &|r| client_of(r, clear_port), &|r| client_of(r, tls_port)),
            ("server", &clear_server, &tls_server),
        ],
    );
}

/// redis-cli --tls (sets, gets, an error) and redis-benchmark --tls (plain
/// and pipelined) against a TLS-only redis-server: counted as the same
/// workload in the clear is, on both sides.
#[test]
fn redis_over_tls_counts_as_in_the_clear() {
    let _serial = lock();
    let cert = self_signed();
    let servers = [RedisServer::start(), RedisServer::start_tls(&cert)];
    let daemon = Daemon::start(&config("DropLocalConnections: false\nFlushOutL7Interval: 1", "", ""));
    daemon.wait_for_tls_libraries(1);
    for redis in &servers {
        assert_eq!(redis.cli(&["SET", "k", "v"]).trim(), "OK");
        assert_eq!(redis.cli(&["GET", "k"]).trim(), "v");
        assert!(redis.cli(&["INCR", "k"]).contains("not an integer"));
        for pipeline in ["1", "16"] {
            let out = Command::new("redis-benchmark")
                .args(redis.tls_args())
                .args(["-p", &redis.port.to_string(), "-q", "-n", "400", "-c", "2", "-P", pipeline, "-t", "set,get"])
                .output()
                .expect("redis-benchmark (scripts/setup.sh installs redis-server)");
            assert!(out.status.success(), "redis-benchmark: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let (clear_pid, tls_pid) = (servers[0].child.id(), servers[1].child.id());
    daemon.wait_for(Duration::from_secs(20), |rs| {
        calls(rs, "redis", |r| server_of(r, tls_pid)) >= 1603
            && calls(rs, "redis", |r| client_of(r, servers[1].port)) >= 1603
    });
    std::thread::sleep(Duration::from_millis(2500));
    let records = daemon.stop();
    let (clear_port, tls_port) = (servers[0].port, servers[1].port);
    assert_as_in_the_clear(
        &records,
        1603,
        [
            ("client", &|r| client_of(r, clear_port), &|r| client_of(r, tls_port)),
            ("server", &|r| server_of(r, clear_pid), &|r| server_of(r, tls_pid)),
        ],
    );
}

/// The mariadb client (`--ssl`) against MariaDB requiring TLS: DDL,
/// inserts, selects and an error, counted as the same statements against a
/// clear server are, on both sides.
#[test]
fn mariadb_over_tls_counts_as_in_the_clear() {
    let _serial = lock();
    let cert = self_signed();
    let servers = [MariaDb::start(), MariaDb::start_tls(&cert)];
    let daemon = Daemon::start(&config("DropLocalConnections: false\nFlushOutL7Interval: 1", "", ""));
    daemon.wait_for_tls_libraries(1);
    let script = "CREATE DATABASE shop; CREATE TABLE shop.items (id INT PRIMARY KEY, name TEXT); \
                  INSERT INTO shop.items VALUES (1, 'a'), (2, 'b'); SELECT name FROM shop.items WHERE id = 2; \
                  SELECT * FROM shop.missing; SELECT COUNT(*) FROM shop.items";
    for db in &servers {
        let out = db.sql(script);
        assert!(String::from_utf8_lossy(&out.stderr).contains("missing"), "the bad query fails");
        assert!(String::from_utf8_lossy(&out.stdout).contains('b'), "the select answers");
    }
    let (clear_pid, tls_pid) = (servers[0].child.id(), servers[1].child.id());
    let tls_port = servers[1].port;
    daemon.wait_for(Duration::from_secs(20), |rs| {
        calls(rs, "mysql", |r| server_of(r, tls_pid)) >= 6 && calls(rs, "mysql", |r| client_of(r, tls_port)) >= 6
    });
    std::thread::sleep(Duration::from_millis(2500));
    let records = daemon.stop();
    let clear_port = servers[0].port;
    assert_as_in_the_clear(
        &records,
        6,
        [
            ("client", &|r| client_of(r, clear_port), &|r| client_of(r, tls_port)),
            ("server", &|r| server_of(r, clear_pid), &|r| server_of(r, tls_pid)),
        ],
    );
}

/// A process loads a libssl file that no process mapped before, after the
/// daemon first looked at it (Python imports `ssl` late; LD_LIBRARY_PATH
/// names a copy of libssl.so.3, another file): the daemon finds it while
/// the process talks and attaches to it. The calls made after that on the
/// same connection are all counted.
#[test]
fn a_library_loaded_late_is_found() {
    let (_serial, root, cert) = fixture();
    let port = free_port();
    let copy = tempfile::tempdir().unwrap();
    let lib = system_library("libssl.so.3", "libssl3");
    std::fs::copy(lib, copy.path().join("libssl.so.3")).unwrap();
    let daemon = Daemon::start(&config("DropLocalConnections: false\nFlushOutL7Interval: 1", "", ""));
    let mut server = python_server(port, &cert, root.path());
    let (mut client, mut out) = waiting_client(&["late", &port.to_string(), "10"], Some(copy.path()));
    std::thread::sleep(Duration::from_millis(2500)); // looked at: no libssl yet
    writeln!(client.stdin.as_mut().unwrap()).unwrap();
    assert_eq!(line_of(&mut out), "connected");
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", client.id())).unwrap();
    assert!(maps.contains(&format!("{}/libssl.so.3", copy.path().display())), "the client maps the copy");
    daemon.wait_for_tls_libraries(2);
    writeln!(client.stdin.as_mut().unwrap()).unwrap();
    assert_eq!(line_of(&mut out), format!("done {}404", "200 ".repeat(10)));
    let cpid = client.id();
    daemon.wait_for(Duration::from_secs(20), |rs| calls(rs, "http", |r| is_pid(r, cpid)) >= 11);
    std::thread::sleep(Duration::from_millis(2500));
    let records = daemon.stop();
    finish(&mut client);
    finish(&mut server);
    let rs: Vec<&Value> = protocols(&records).filter(|r| is_pid(r, cpid)).collect();
    assert_eq!(rs.iter().map(|r| num(r, "total_count")).sum::<u64>(), 11, "{rs:#?}");
    assert!(rs.iter().all(|r| r["tls"] == "1"), "{rs:#?}");
}

/// curl inside a container, with the container's own libssl (another file
/// than the host's, reached through /proc/PID/root): attached when the
/// daemon finds the container's process, and the calls made after that are
/// counted, flagged TLS, with the container's metadata.
#[test]
fn a_container_with_its_own_libssl() {
    let (_serial, root, cert) = fixture();
    let nginx = Nginx::start_tls(root.path(), &cert);
    let mut docker = DockerEngine::start();
    docker.import_with("wirelens-curl:test", &["curl"]);
    let daemon = Daemon::start(&config("DropLocalConnections: false\nFlushOutL7Interval: 1", "", ""));
    let libraries = |rs: &[Value]| latest_health(rs, "tls_libraries");
    daemon.wait_for(Duration::from_secs(10), |rs| libraries(rs) >= 1);
    let host_libraries = libraries(&daemon.records());
    // curl's first transfer is from a clear server that answers after 4 s:
    // the process lives long enough for the daemon to find its library. Then
    // 5 GETs over TLS on one keep-alive connection.
    let slow = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let slow_port = slow.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut conn, _)) = slow.accept() {
            std::thread::sleep(Duration::from_secs(4));
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    let url = |path: &str| format!("https://127.0.0.1:{}{path}", nginx.port);
    let pages: Vec<String> = (0..5).map(|i| format!("-o /dev/null {}", url(&format!("/index.html?c={i}")))).collect();
    let script =
        format!("curl -sS -m 20 -o /dev/null http://127.0.0.1:{slow_port}/ --next -sSk {}; sleep 600", pages.join(" "));
    docker.run_image("wirelens-curl:test", &["--name", "tls-curl"], &script);
    let from_container = |r: &Value| client_of(r, nginx.port) && r["_running_mode_"] == "container";
    daemon.wait_for(Duration::from_secs(30), |rs| calls(rs, "http", from_container) >= 5);
    std::thread::sleep(Duration::from_millis(2500));
    let log: Vec<String> = daemon.stderr().lines().filter(|l| l.contains("TLS library")).map(str::to_string).collect();
    let records = daemon.stop();
    let h = health(&records);
    let curl_log = Command::new("docker").args(["logs", "tls-curl"]).output().unwrap();
    assert_eq!(
        num(h, "tls_libraries"),
        host_libraries + 1,
        "the container's libssl attached: {log:#?}; curl in the container said: {}{}",
        String::from_utf8_lossy(&curl_log.stdout),
        String::from_utf8_lossy(&curl_log.stderr)
    );
    let rs: Vec<&Value> = protocols(&records).filter(|r| from_container(r)).collect();
    assert_eq!(rs.iter().map(|r| num(r, "total_count")).sum::<u64>(), 5, "{rs:#?}");
    for r in &rs {
        assert_eq!((r["tls"].as_str(), r["url"].as_str()), (Some("1"), Some("/index.html")), "{r}");
        assert!(r["_container_name_"] == "tls-curl", "{r}");
    }
}

/// A file named like OpenSSL's library that is not (no `SSL_write`):
/// logged once with its path and the reason, counted as failed, however
/// many processes map it.
#[test]
fn a_library_that_cannot_be_attached_is_reported_once() {
    let _serial = lock();
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("libssl.so.99");
    let libz = system_library("libz.so.1", "zlib1g");
    std::fs::copy(libz, &fake).unwrap();
    let daemon = Daemon::start(&config("FlushOutL7Interval: 1", "", ""));
    let mut sleepers: Vec<Child> =
        (0..2).map(|_| Command::new("sleep").arg("5").env("LD_PRELOAD", &fake).spawn().expect("sleep")).collect();
    let failed = |rs: &[Value]| latest_health(rs, "tls_libraries_failed");
    daemon.wait_for(Duration::from_secs(10), |rs| failed(rs) >= 1);
    std::thread::sleep(Duration::from_millis(2500));
    let log = daemon.stderr();
    let records = daemon.stop();
    for s in &mut sleepers {
        finish(s);
    }
    assert_eq!(failed(&records), 1, "{}", health(&records));
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("TLS library not attached")).collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0].contains("libssl.so.99") && warnings[0].contains("SSL_write"), "{}", warnings[0]);
}
