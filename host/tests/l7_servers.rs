//! Layer-7 calls end to end against real servers from Debian, driven by
//! their real clients: the daemon's `protocols` records count exactly the
//! workload, name the statements and commands, count errors as failures,
//! and give latencies between 0 and what the client itself measured, on
//! both the client and the server side. Needs root (CI runs as root).

mod common;

use std::time::{Duration, Instant};

use common::daemon::{config, l7_total, last_health, num, Daemon};
use common::servers::{calls, client_of, cmd_has, MariaDb, Nginx, Postgres, RedisServer};
use serde_json::Value;

fn l7_daemon() -> Daemon {
    Daemon::start(&config("DropLocalConnections: false\nFlushOutL7Interval: 1", "", ""))
}

/// The `protocols` records of one protocol (for failure messages).
fn of(records: &[Value], protocol: &str) -> Vec<Value> {
    records.iter().filter(|r| r["protocol"] == protocol).cloned().collect()
}

/// Every record matching `pred` has a mean latency in (0, `limit_ns`).
fn latencies_plausible(records: &[Value], limit_ns: u64, what: &str, pred: impl Fn(&Value) -> bool) {
    let mut seen = 0;
    for r in records.iter().filter(|r| r["type"] == "protocols" && pred(r)) {
        let mean = num(r, "total_latency_ns") / num(r, "total_count");
        assert!(mean > 0 && mean < limit_ns, "{what}: mean latency {mean} ns outside (0, {limit_ns}): {r}");
        assert!(num(r, "latency_p99_ns") <= num(r, "latency_max_ns"), "{r}");
        seen += 1;
    }
    assert!(seen > 0, "{what}: no records");
}

/// Run a Python client script with its arguments; what it printed.
fn python_client(script: &str, args: &[String]) -> Vec<u8> {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 (scripts/setup.sh installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[test]
fn mysql_calls_from_the_mariadb_client_and_a_prepared_statement_client() {
    let db = MariaDb::start();
    let setup = db.sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, name VARCHAR(20)); INSERT INTO app.t VALUES (1, 'ann'), (2, 'bob')");
    assert!(setup.status.success(), "{}", String::from_utf8_lossy(&setup.stderr));
    let server_pid = db.child.id().to_string();
    let daemon = l7_daemon();

    let started = Instant::now();
    let selects: String = (1..=5).map(|i| format!("SELECT name FROM app.t WHERE id = {i}; ")).collect();
    let out = db.sql(&format!("{selects} INSERT INTO app.t VALUES (3, 'cy'); SELECT * FROM app.missing"));
    let client_time = started.elapsed().as_nanos() as u64;
    assert!(String::from_utf8_lossy(&out.stderr).contains("1146"), "the bad statement fails");
    let started = Instant::now();
    let perl = std::process::Command::new("perl")
        .arg(common::root().join("tests/e2e/mysql_prepared.pl"))
        .args([&db.port.to_string(), "20"])
        .output()
        .expect("perl (with libdbd-mariadb-perl; scripts/setup.sh installs it)");
    let perl_time = started.elapsed().as_nanos() as u64;
    assert!(perl.status.success(), "prepared-statement client: {}", String::from_utf8_lossy(&perl.stderr));

    let server = |r: &Value| r["_process_pid_"] == server_pid.as_str() && r["role"] == "server";
    let select_sql = "SELECT name FROM app.t WHERE id = ?";
    let stmt_sql = "SELECT name FROM t WHERE id = ?";
    daemon.wait_for(Duration::from_secs(20), |rs| {
        calls(rs, "mysql", |r| server(r) && r["command"] == "STMT_CLOSE") >= 1
            && calls(rs, "mysql", |r| server(r) && r["sql"] == select_sql) >= 5
    });
    std::thread::sleep(Duration::from_millis(1500));
    let records = daemon.stop();

    let mariadb = |r: &Value| client_of(r, db.port) && cmd_has(r, "mariadb");
    // (Its command line may be only `perl` when it exits before it is read.)
    let perl_side = |r: &Value| client_of(r, db.port) && cmd_has(r, "perl");
    for (side, name) in [(&server as &dyn Fn(&Value) -> bool, "server"), (&mariadb, "mariadb client")] {
        let ok = |r: &Value| side(r) && r["command"] == "QUERY" && r["sql"] == select_sql && r["success"] == "1";
        assert_eq!(calls(&records, "mysql", ok), 5, "{name}: five SELECTs: {:#?}", of(&records, "mysql"));
        let bad = |r: &Value| {
            side(r) && r["sql"] == "SELECT * FROM app.missing" && r["success"] == "0" && r["error_code"] == "1146"
        };
        assert_eq!(calls(&records, "mysql", bad), 1, "{name}: the missing table is a failure with its code");
        let insert = |r: &Value| side(r) && r["sql"] == "INSERT INTO app.t VALUES (?)" && r["success"] == "1";
        assert_eq!(
            calls(&records, "mysql", insert),
            1,
            "{name}: the INSERT, literals normalized: {:#?}",
            of(&records, "mysql")
        );
        latencies_plausible(&records, client_time, name, |r| r["protocol"] == "mysql" && ok(r));
    }
    for (side, name) in [(&server as &dyn Fn(&Value) -> bool, "server"), (&perl_side, "perl client")] {
        let stmt = |command: &'static str| {
            move |r: &Value| side(r) && r["command"] == command && r["sql"] == stmt_sql && r["success"] == "1"
        };
        assert_eq!(
            calls(&records, "mysql", stmt("STMT_PREPARE")),
            1,
            "{name}: one prepare: {:#?}",
            of(&records, "mysql")
        );
        assert_eq!(calls(&records, "mysql", stmt("STMT_EXECUTE")), 20, "{name}: twenty executions");
        assert_eq!(calls(&records, "mysql", stmt("STMT_CLOSE")), 1, "{name}: one close");
        latencies_plausible(&records, perl_time, name, |r| r["protocol"] == "mysql" && stmt("STMT_EXECUTE")(r));
    }
    assert!(calls(&records, "mysql", |r| server(r) && r["command"] == "CONNECT" && r["success"] == "1") >= 2);
}

#[test]
fn pgsql_calls_from_psql_and_pgbench_simple_and_extended() {
    let pg = Postgres::start();
    pg.init_pgbench();
    let daemon = l7_daemon();

    let started = Instant::now();
    pg.psql_sample();
    let psql_time = started.elapsed().as_nanos() as u64;
    let started = Instant::now();
    pg.pgbench_both_protocols();
    let bench_time = started.elapsed().as_nanos() as u64;

    // Backends are forked per connection and carry the postmaster's command
    // line (recorded by the kernel at its exec), which names this server's
    // port: other PostgreSQL servers on the machine do not count.
    let own_server = format!("-p {} ", pg.port);
    let server = |r: &Value| cmd_has(r, "postgres") && cmd_has(r, &own_server) && r["role"] == "server";
    let update_simple = "UPDATE pgbench_accounts SET abalance = abalance + ? WHERE aid = ?;";
    let update_extended = "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;";
    daemon.wait_for(Duration::from_secs(20), |rs| {
        calls(rs, "pgsql", |r| server(r) && r["sql"] == update_extended) >= 10
            && calls(rs, "pgsql", |r| server(r) && r["sql"] == update_simple) >= 10
    });
    std::thread::sleep(Duration::from_millis(1500));
    let records = daemon.stop();

    let psql_side = |r: &Value| client_of(r, pg.port) && cmd_has(r, "psql");
    let bench_side = |r: &Value| client_of(r, pg.port) && cmd_has(r, "pgbench");
    for (side, name) in [(&server as &dyn Fn(&Value) -> bool, "server"), (&psql_side, "psql")] {
        let count = |r: &Value| {
            side(r) && r["command"] == "QUERY" && r["sql"] == "SELECT count(*) FROM pgbench_branches WHERE bid = ?"
        };
        assert_eq!(
            calls(&records, "pgsql", |r| count(r) && r["success"] == "1"),
            2,
            "{name}: {:#?}",
            of(&records, "pgsql")
        );
        let bad = |r: &Value| {
            side(r) && r["sql"] == "SELECT * FROM missing_table" && r["success"] == "0" && r["error_code"] == "42P01"
        };
        assert_eq!(calls(&records, "pgsql", bad), 1, "{name}: the missing table fails with SQLSTATE 42P01");
        latencies_plausible(&records, psql_time, name, |r| r["protocol"] == "pgsql" && count(r));
    }
    for (side, name) in [(&server as &dyn Fn(&Value) -> bool, "server"), (&bench_side, "pgbench")] {
        let stmt = |command: &'static str, sql: &'static str| {
            move |r: &Value| side(r) && r["command"] == command && r["sql"] == sql && r["success"] == "1"
        };
        // Ten transactions per mode, each one UPDATE of pgbench_accounts.
        assert_eq!(
            calls(&records, "pgsql", stmt("QUERY", update_simple)),
            10,
            "{name}: simple: {:#?}",
            of(&records, "pgsql")
        );
        assert_eq!(calls(&records, "pgsql", stmt("EXECUTE", update_extended)), 10, "{name}: extended");
        assert_eq!(calls(&records, "pgsql", stmt("QUERY", "BEGIN;")), 10, "{name}: simple BEGINs");
        assert_eq!(calls(&records, "pgsql", stmt("EXECUTE", "END;")), 10, "{name}: extended ENDs");
        latencies_plausible(&records, bench_time, name, |r| {
            r["protocol"] == "pgsql" && stmt("EXECUTE", update_extended)(r)
        });
    }
    assert!(calls(&records, "pgsql", |r| server(r) && r["command"] == "STARTUP") >= 3);
}

#[test]
fn http_calls_from_curl_against_nginx() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("index.html"), "hello\n").unwrap();
    std::fs::write(root.path().join("big.txt"), "z".repeat(20_000)).unwrap();
    let nginx = Nginx::start(root.path());
    let server_pid = nginx.child.id().to_string();
    let daemon = l7_daemon();
    let base = format!("http://127.0.0.1:{}", nginx.port);
    let started = Instant::now();
    // One keep-alive connection: 3 GETs of the page, the big file, a 404, then a POST.
    let curl = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null"])
        .args([&format!("{base}/index.html?x=1"), &format!("{base}/index.html"), &format!("{base}/index.html")])
        .args([&format!("{base}/big.txt"), &format!("{base}/missing")])
        .args(["--next", "-s", "-o", "/dev/null", "-d", "a=1", &format!("{base}/echo")])
        .status()
        .expect("curl (scripts/setup.sh installs it)");
    let client_time = started.elapsed().as_nanos() as u64;
    assert!(curl.success());
    let server = |r: &Value| r["_process_pid_"] == server_pid.as_str() && r["role"] == "server";
    daemon.wait_for(Duration::from_secs(15), |rs| calls(rs, "http", |r| server(r) && r["method"] == "POST") >= 1);
    std::thread::sleep(Duration::from_millis(1500));
    let records = daemon.stop();
    let curl_side = |r: &Value| client_of(r, nginx.port) && cmd_has(r, "curl");
    for (side, name) in [(&server as &dyn Fn(&Value) -> bool, "nginx"), (&curl_side, "curl")] {
        let get = |url: &'static str, code: &'static str| {
            move |r: &Value| side(r) && r["method"] == "GET" && r["url"] == url && r["resp_code"] == code
        };
        assert_eq!(calls(&records, "http", get("/index.html", "200")), 3, "{name}: {:#?}", of(&records, "http"));
        assert_eq!(calls(&records, "http", get("/big.txt", "200")), 1, "{name}: the big file");
        let missing = |r: &Value| get("/missing", "404")(r) && r["success"] == "0";
        assert_eq!(calls(&records, "http", missing), 1, "{name}: 404 is a failure");
        let post = |r: &Value| side(r) && r["method"] == "POST" && r["url"] == "/echo" && r["resp_code"] == "201";
        assert_eq!(calls(&records, "http", post), 1, "{name}: the POST");
        let big = records.iter().find(|r| r["protocol"] == "http" && get("/big.txt", "200")(r)).unwrap();
        assert!(num(big, "total_resp_bytes") > 20_000, "{name}: response bytes include the body: {big}");
        latencies_plausible(&records, client_time, name, |r| r["protocol"] == "http" && side(r));
    }
}

/// Bodies of known length are not copied (the plugin tells the kernel
/// where the body ends): the calls, their outcome and their sizes stay
/// exact, and the health record counts the reads that were not copied.
#[test]
fn large_bodies_are_skipped_in_the_kernel_and_still_counted_exactly() {
    let root = tempfile::tempdir().unwrap();
    let body = 3_000_000u64;
    std::fs::write(root.path().join("big.bin"), "b".repeat(body as usize)).unwrap();
    let nginx = Nginx::start(root.path());
    let daemon = l7_daemon();
    let rounds = 4u64;
    // A keep-alive client that reads each body in 64 KiB reads 5 ms apart,
    // with a small receive buffer (curl reads a body from a full buffer in
    // a few milliseconds, before the plugin's word can reach the kernel).
    // Prints the response bytes it received.
    let client = r#"
import socket, sys, time
port, rounds = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
s.connect(("127.0.0.1", port))
total = 0
for _ in range(rounds):
    s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
    head, body = buf.split(b"\r\n\r\n", 1)
    length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0].split(b":")[1])
    got = len(body)
    while got < length:
        time.sleep(0.005)
        got += len(s.recv(65536))
    total += len(head) + 4 + length
print(total)
"#;
    let out = python_client(client, &[nginx.port.to_string(), rounds.to_string()]);
    let received: u64 = String::from_utf8_lossy(&out).trim().parse().unwrap();
    let headers = received - rounds * body;
    let (server, client_side) = nginx_and_python_ends(&nginx);
    let records = records_once_both_ends(daemon, [&server, &client_side], rounds);
    for (side, name) in [(&server as &dyn Fn(&Value) -> bool, "nginx"), (&client_side, "client")] {
        let ok = |r: &Value| side(r) && r["url"] == "/big.bin" && r["resp_code"] == "200" && r["success"] == "1";
        assert_eq!(calls(&records, "http", ok), rounds, "{name}: {:#?}", of(&records, "http"));
        let resp = l7_total(&records, "http", "total_resp_bytes", ok);
        assert_eq!(resp, rounds * body + headers, "{name}: response bytes are exact");
    }
    let health = last_health(&records).expect("a health record");
    // About 46 reads of 64 KiB a body, of which those before the plugin's
    // word reached the kernel (some tens of milliseconds) are copied.
    let skipped: u64 = health["kernel_skipped"].as_str().unwrap().parse().unwrap();
    eprintln!("reads not copied: {skipped}");
    assert!(skipped >= rounds * 10, "reads not copied: {health:#?}");
    assert_eq!(health["kernel_lost"], "0");
}

/// The two ends of a Python client's calls to nginx: nginx's process as
/// the server, and the client's connections to it.
fn nginx_and_python_ends(nginx: &Nginx) -> (impl Fn(&Value) -> bool, impl Fn(&Value) -> bool) {
    let (pid, port) = (nginx.child.id().to_string(), nginx.port);
    let server = move |r: &Value| r["_process_pid_"] == pid.as_str() && r["role"] == "server";
    (server, move |r: &Value| client_of(r, port) && cmd_has(r, "python3"))
}

/// The records, once the daemon has counted `expected` HTTP calls at each
/// of `ends` and flushed once more.
fn records_once_both_ends(daemon: Daemon, ends: [&dyn Fn(&Value) -> bool; 2], expected: u64) -> Vec<Value> {
    daemon.wait_for(Duration::from_secs(15), |rs| ends.iter().all(|end| calls(rs, "http", end) >= expected));
    std::thread::sleep(Duration::from_millis(1500));
    daemon.stop()
}

/// On one side (`side`, named `name`): `count` GETs of each `path`, each
/// with its status `code` and outcome (`success`), whose response bytes add
/// up to what the client read (`bytes[path]`).
fn http_gets_whole(
    records: &[Value],
    side: &dyn Fn(&Value) -> bool,
    name: &str,
    paths: &[(&str, &str, &str, u64)],
    bytes: &Value,
) {
    for &(path, code, success, count) in paths {
        let these = |r: &Value| {
            side(r) && r["method"] == "GET" && r["url"] == path && r["resp_code"] == code && r["success"] == success
        };
        assert_eq!(calls(records, "http", these), count, "{name} {path}: {:#?}", of(records, "http"));
        let total = l7_total(records, "http", "total_resp_bytes", these);
        assert_eq!(total, bytes[path].as_u64().unwrap(), "{name} {path}: response bytes are exact");
    }
}

/// Responses whose head is longer than what is copied of a response (the
/// HTTP plugin's 512 bytes; nginx's `/wide` adds an 800-byte header): the
/// fields past the cut and the head's framing are lost, never the call.
/// Each is counted and paired with its request, with its status (the first
/// line), outcome, exact size and a plausible latency, and so are the calls
/// after it on the same keep-alive connection, at both ends.
#[test]
fn response_heads_longer_than_the_budget_still_make_whole_calls() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("index.html"), "hello\n").unwrap();
    let nginx = Nginx::start(root.path());
    let daemon = l7_daemon();
    let rounds = 5u64;
    // One keep-alive connection; prints the response bytes per path and the
    // longest head seen.
    let client = r#"
import json, socket, sys
port, rounds = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket()
s.connect(("127.0.0.1", port))
got, longest, buf = {}, 0, b""
for _ in range(rounds):
    for path in ("/wide", "/index.html", "/wide", "/missing"):
        s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        while b"\r\n\r\n" not in buf:
            buf += s.recv(65536)
        head, buf = buf.split(b"\r\n\r\n", 1)
        length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0].split(b":")[1])
        while len(buf) < length:
            buf += s.recv(65536)
        buf = buf[length:]
        got[path] = got.get(path, 0) + len(head) + 4 + length
        longest = max(longest, len(head) + 4)
print(json.dumps({"bytes": got, "longest_head": longest}))
"#;
    let started = Instant::now();
    let out = python_client(client, &[nginx.port.to_string(), rounds.to_string()]);
    let client_time = started.elapsed().as_nanos() as u64;
    let report: Value = serde_json::from_slice(&out).unwrap();
    assert!(report["longest_head"].as_u64().unwrap() > 800, "the wide head is longer than the budget: {report}");
    let (server, client_side) = nginx_and_python_ends(&nginx);
    let expected = 4 * rounds;
    let records = records_once_both_ends(daemon, [&server, &client_side], expected);
    for (side, name) in [(&server as &dyn Fn(&Value) -> bool, "nginx"), (&client_side, "client")] {
        let paths =
            [("/wide", "200", "1", 2 * rounds), ("/index.html", "200", "1", rounds), ("/missing", "404", "0", rounds)];
        http_gets_whole(&records, side, name, &paths, &report["bytes"]);
        assert_eq!(calls(&records, "http", side), 4 * rounds, "{name}: no other call: {:#?}", of(&records, "http"));
        latencies_plausible(&records, client_time, name, |r| r["protocol"] == "http" && side(r));
    }
    let health = last_health(&records).expect("a health record");
    assert_eq!(health["kernel_lost"], "0");
}

/// A client that pipelines HTTP: it writes 16 requests at once and reads
/// their responses (1.7 KiB and 0.4 KiB) in reads of up to 64 KiB, so one
/// read carries many responses. The HTTP plugin's budget copies 512 bytes
/// of a response call: the heads after the first in a read would lie in
/// bytes not copied, and their calls lose their outcome and pairing (a
/// region of responses no one can count). A connection seen pipelining is
/// copied whole from its next call on, at both ends, so every call comes
/// out whole: method, URL, status, outcome and exact response bytes. The
/// client first makes two calls whose responses fit the budget together
/// (both whole either way), then waits for the daemon to widen the copy:
/// the calls it makes before the kernel hears of it are not asserted
/// against that.
#[test]
fn a_pipelining_http_client_gets_every_call_whole_at_both_ends() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("tiny"), "t\n").unwrap();
    std::fs::write(root.path().join("page.html"), "p".repeat(1500)).unwrap();
    let nginx = Nginx::start(root.path());
    let daemon = l7_daemon();
    let rounds = 60u64;
    let client = r#"
import json, socket, sys, time
port, rounds = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket()
s.connect(("127.0.0.1", port))
buf, got, most = b"", {}, 0
def pipeline(paths):
    global buf, most
    s.sendall(b"".join(b"GET " + p.encode() + b" HTTP/1.1\r\nHost: t\r\n\r\n" for p in paths))
    time.sleep(0.003)  # the responses pile up: one read takes many
    for p in paths:
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            most = max(most, len(chunk))
            buf += chunk
        head, buf = buf.split(b"\r\n\r\n", 1)
        length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0].split(b":")[1])
        while len(buf) < length:
            chunk = s.recv(65536)
            most = max(most, len(chunk))
            buf += chunk
        buf = buf[length:]
        got[p] = got.get(p, 0) + len(head) + 4 + length
pipeline(["/tiny", "/tiny"])
time.sleep(0.5)
for _ in range(rounds):
    pipeline(["/page.html"] * 12 + ["/missing"] * 4)
print(json.dumps({"bytes": got, "largest_read": most}))
"#;
    let out = python_client(client, &[nginx.port.to_string(), rounds.to_string()]);
    let report: Value = serde_json::from_slice(&out).unwrap();
    assert!(report["largest_read"].as_u64().unwrap() > 8192, "reads carried many responses: {report}");
    let (server, client_side) = nginx_and_python_ends(&nginx);
    let expected = 2 + 16 * rounds;
    let records = records_once_both_ends(daemon, [&server, &client_side], expected);
    let health = last_health(&records).expect("a health record");
    assert_eq!(health["kernel_lost"], "0", "the ring buffer lost records: this test cannot tell: {health}");
    for (side, name) in [(&server as &dyn Fn(&Value) -> bool, "nginx"), (&client_side, "client")] {
        let paths =
            [("/tiny", "200", "1", 2), ("/page.html", "200", "1", 12 * rounds), ("/missing", "404", "0", 4 * rounds)];
        http_gets_whole(&records, side, name, &paths, &report["bytes"]);
        assert_eq!(calls(&records, "http", side), expected, "{name}: no other call: {:#?}", of(&records, "http"));
    }
    let pipelined: u64 = health["l7_pipelined_connections"].as_str().unwrap().parse().unwrap();
    assert!(pipelined >= 2, "both ends were seen pipelining: {health}");
}

/// A pipelined client against a Redis server: one write or read carries
/// 200 commands or replies, 21 to 28 KiB, longer than one kernel record
/// (4 KiB). The rest of such a call follows in continuation records instead
/// of being cut, so every call is counted at both ends with its outcome
/// (cut, the commands and replies past the cut were never seen: the server
/// side once counted 5% of its calls). The client paces its batches (2 ms
/// apart) so the ring buffer keeps up: what it loses is another matter
/// (`kernel_lost`, asserted 0 here). Then 3000 commands go out in one write
/// before a reply is read, twice: the client's side has them all waiting at
/// once (past a bound of 1024 the oldest were once failed and their replies
/// orphaned).
#[test]
fn pipelined_calls_longer_than_a_record_are_all_counted_at_both_ends() {
    let redis = RedisServer::start();
    let server_pid = redis.child.id().to_string();
    let daemon = l7_daemon();
    let (batches, per_batch) = (100u64, 200u64);
    let client = r#"
import socket, sys, time
port, batches, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
s = socket.socket()
s.connect(("127.0.0.1", port))
value = b"v" * 100
def run(commands, reply_len):
    for b in range(batches):
        s.sendall(b"".join(commands(b * n + i) for i in range(n)))
        want, got = n * reply_len, 0
        while got < want:
            got += len(s.recv(16384))
        time.sleep(0.002)
run(lambda i: b"*3\r\n$3\r\nSET\r\n$8\r\nk:%06d\r\n$100\r\n%s\r\n" % (i, value), 5)
run(lambda i: b"*2\r\n$3\r\nGET\r\n$8\r\nk:%06d\r\n" % i, 107)
# Deep: thousands of commands written before a reply is read, so the
# client's side has them all waiting at once.
for _ in range(2):
    s.sendall(b"".join(b"*2\r\n$3\r\nGET\r\n$8\r\nk:%06d\r\n" % i for i in range(3000)))
    want, got = 3000 * 107, 0
    while got < want:
        got += len(s.recv(16384))
"#;
    python_client(client, &[redis.port.to_string(), batches.to_string(), per_batch.to_string()]);
    let n = batches * per_batch;
    let expected = |c: &str| if c == "GET" { n + 2 * 3000 } else { n };
    let server = |r: &Value| r["_process_pid_"] == server_pid.as_str() && r["role"] == "server";
    let client = |r: &Value| client_of(r, redis.port) && cmd_has(r, "python3");
    let command = |r: &Value, c: &str| r["command"] == c;
    daemon.wait_for(Duration::from_secs(20), |rs| {
        calls(rs, "redis", |r| server(r) && command(r, "GET")) >= expected("GET")
            && calls(rs, "redis", |r| client(r) && command(r, "GET")) >= expected("GET")
    });
    std::thread::sleep(Duration::from_millis(1500));
    let records = daemon.stop();
    let health = last_health(&records).expect("a health record");
    assert_eq!(health["kernel_lost"], "0", "the ring buffer lost records: this test cannot tell: {health}");
    for (side, name) in [(&server as &dyn Fn(&Value) -> bool, "redis-server"), (&client, "client")] {
        for c in ["SET", "GET"] {
            let all = calls(&records, "redis", |r| side(r) && command(r, c));
            let ok = calls(&records, "redis", |r| side(r) && command(r, c) && r["success"] == "1");
            let n = expected(c);
            assert_eq!(
                (all, ok),
                (n, n),
                "{name} {c}: every call, each a success: {:#?}\nhealth: {health}",
                of(&records, "redis")
            );
        }
    }
    // The counts above are what continuation records going through means
    // here: a read cut at 4 KiB loses the replies past the cut. (Health's
    // `truncated` is not asserted: it counts every process the daemon sees,
    // the other tests of this file running beside it included, and it once
    // failed here on 9 cuts while every call of this test was counted.)
}

/// Records the kernel could not queue (the ring buffer full: here the daemon
/// stopped while a client runs flat out) cost the calls inside them, and no
/// more: a connection that lost records in its middle, and one that lost
/// its very beginning, each count every later call, at both ends, with its
/// outcome. A small ring (`RingBufferBytes`) makes the loss certain; the
/// calls after it are paced to fit. The first call after the hole keeps its
/// command too: the host learns of each direction's hole only at that
/// direction's next record, and the SDK's fence (`sdk/src/stream.rs`)
/// keeps the hole of replies from answering a request made after it.
#[test]
fn calls_after_the_ring_buffer_overflowed_are_all_counted() {
    use std::io::{BufRead, BufReader, Write};
    let redis = RedisServer::start();
    let server_pid = redis.child.id().to_string();
    let client = r#"
import socket, sys, time
port = int(sys.argv[1])
def connect():
    s = socket.socket()
    s.connect(("127.0.0.1", port))
    return s
def call(s, cmd):
    s.sendall(cmd)
    reply = b""
    while not reply.endswith(b"\r\n"):
        reply += s.recv(4096)
ping = b"*1\r\n$4\r\nPING\r\n"
middle = connect()
print("connected", flush=True)
sys.stdin.readline()
for _ in range(200):
    call(middle, ping)
print("ready", flush=True)
sys.stdin.readline()
start = connect()  # opened while the daemon is stopped
for _ in range(10000):
    call(middle, ping)
    call(start, ping)
print("overflowed", flush=True)
sys.stdin.readline()
for i in range(3000):
    call(middle, b"*2\r\n$4\r\nINCR\r\n$7\r\nwl:loss\r\n")
    call(start, b"*2\r\n$4\r\nDECR\r\n$7\r\nwl:loss\r\n")
    if i % 5 == 4:
        time.sleep(0.001)
print("done", flush=True)
"#;
    let mut child = std::process::Command::new("python3")
        .arg("-c")
        .arg(client)
        .arg(redis.port.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (scripts/setup.sh installs it)");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut expect_line = |want: &str| {
        let got = lines.next().map(|l| l.unwrap()).unwrap_or_default();
        assert_eq!(got, want, "the client stopped early");
    };
    expect_line("connected");
    // Only this test's processes: the other tests' traffic would fill the
    // small ring at any time.
    let pids = format!("Pid: [{}, {}]", server_pid, child.id());
    let daemon =
        Daemon::start(&config("DropLocalConnections: false\nFlushOutL7Interval: 1", &pids, "RingBufferBytes: 262144"));
    writeln!(stdin, "go").unwrap();
    expect_line("ready");
    daemon.signal(libc::SIGSTOP);
    writeln!(stdin, "go").unwrap();
    expect_line("overflowed");
    daemon.signal(libc::SIGCONT);
    let lost = |rs: &[Value]| last_health(rs).map_or(0, |h| num(h, "kernel_lost"));
    // The loss is in a health record, and the reader has caught up.
    assert!(daemon.wait_for(Duration::from_secs(10), |rs| lost(rs) > 0), "the ring buffer never overflowed");
    std::thread::sleep(Duration::from_millis(1500));
    let lost_before = lost(&daemon.records());
    writeln!(stdin, "go").unwrap();
    expect_line("done");
    assert!(child.wait().unwrap().success());

    let server = |r: &Value| r["_process_pid_"] == server_pid.as_str() && r["role"] == "server";
    let client = |r: &Value| client_of(r, redis.port) && cmd_has(r, "python3");
    let command = |r: &Value, c: &str| r["command"] == c;
    daemon.wait_for(Duration::from_secs(20), |rs| {
        ["INCR", "DECR"].iter().all(|c| {
            calls(rs, "redis", |r| server(r) && command(r, c)) >= 3000
                && calls(rs, "redis", |r| client(r) && command(r, c)) >= 3000
        })
    });
    std::thread::sleep(Duration::from_millis(1500));
    let records = daemon.stop();
    let health = last_health(&records).expect("a health record");
    assert_eq!(
        lost(&records),
        lost_before,
        "records were lost after the overflow too (a busy machine?): this test cannot tell: {health}"
    );
    for (side, name) in [(&server as &dyn Fn(&Value) -> bool, "redis-server"), (&client, "client")] {
        for (c, conn) in [("INCR", "the connection that lost its middle"), ("DECR", "the one that lost its start")] {
            let all = calls(&records, "redis", |r| side(r) && command(r, c));
            let ok = calls(&records, "redis", |r| side(r) && command(r, c) && r["success"] == "1");
            assert!(
                all == 3000 && ok == all,
                "{name} {c} on {conn}: every call, each a success: {all} calls, {ok} successes: {:#?}\nhealth: \
                 {health}",
                of(&records, "redis")
            );
            // Each request's own size (27 bytes), none with the hole's bytes.
            let bytes = common::daemon::l7_total(&records, "redis", "total_req_bytes", |r| side(r) && command(r, c));
            assert_eq!(bytes, 3000 * 27, "{name} {c} on {conn}: request bytes: {:#?}", of(&records, "redis"));
        }
    }
}

/// `Common.IncludeProtocols` limits which plugins may claim a connection
/// (names as in the seed, any case); `Common.ProtocolProcess: false` turns
/// layer 7 off while layer-4 statistics go on.
#[test]
fn include_protocols_and_protocol_process() {
    let redis = common::servers::RedisServer::start();
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("index.html"), "hi\n").unwrap();
    let nginx = Nginx::start(root.path());
    let url = format!("http://127.0.0.1:{}/index.html", nginx.port);
    let curl = || {
        let ok = std::process::Command::new("curl").args(["-s", "-o", "/dev/null", &url]).status().unwrap();
        assert!(ok.success());
    };
    let redis_port = redis.port.to_string();
    let to_redis = |r: &Value| common::daemon::remote(r)["remote_port"] == redis_port.as_str();
    let to_nginx = |r: &Value| client_of(r, nginx.port);

    let only_http = "DropLocalConnections: false\nFlushOutL7Interval: 1\nIncludeProtocols: [HTTP]";
    let daemon = Daemon::start(&config(only_http, "", ""));
    assert_eq!(redis.cli(&["SET", "k", "v"]).trim(), "OK");
    curl();
    daemon.wait_for(Duration::from_secs(15), |rs| {
        calls(rs, "http", to_nginx) >= 1 && common::daemon::sum(rs, "send_bytes", to_redis) > 0
    });
    std::thread::sleep(Duration::from_millis(1500));
    let records = daemon.stop();
    assert_eq!(calls(&records, "http", to_nginx), 1, "HTTP is included");
    assert!(common::daemon::sum(&records, "send_bytes", to_redis) > 0, "redis traffic is seen at layer 4");
    assert!(!records.iter().any(|r| r["protocol"] == "redis"), "Redis is not included: {:#?}", of(&records, "redis"));

    let no_l7 = "DropLocalConnections: false\nFlushOutL7Interval: 1\nProtocolProcess: false";
    let daemon = Daemon::start(&config(no_l7, "", ""));
    curl();
    assert_eq!(redis.cli(&["GET", "k"]).trim(), "v");
    daemon.wait_for(Duration::from_secs(15), |rs| common::daemon::sum(rs, "send_bytes", to_nginx) > 0);
    std::thread::sleep(Duration::from_millis(1500));
    let records = daemon.stop();
    assert!(common::daemon::sum(&records, "recv_bytes", to_nginx) > 0, "layer 4 goes on");
    assert!(!records.iter().any(|r| r["type"] == "protocols"), "no layer 7 at all");
}
