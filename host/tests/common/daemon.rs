//! Runs the real daemon for end-to-end tests and collects its records.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Fails the test with what to do when a prerequisite is missing.
pub fn require_root() {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("this test loads eBPF programs: run it as root (CI does)");
    }
}

pub struct Daemon {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
    _config: tempfile::NamedTempFile,
}

impl Daemon {
    /// Start `wirelens run` on `config` (YAML) and wait until it captures.
    /// Its log level is `info`, or `WL_DAEMON_LOG` when set (debugging).
    pub fn start(config: &str) -> Self {
        Self::start_with_env(config, &[])
    }

    /// `start` with more environment variables.
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Self {
        require_root();
        let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        file.write_all(config.as_bytes()).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_wirelens"))
            .args(["run", "-c"])
            .arg(file.path())
            .env("RUST_LOG", std::env::var("WL_DAEMON_LOG").unwrap_or_else(|_| "info".into()))
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let out = child.stdout.take().unwrap();
            let lines = stdout.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
            let err = child.stderr.take().unwrap();
            let text = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    let mut t = text.lock().unwrap();
                    t.push_str(&line);
                    t.push('\n');
                }
            });
        }
        let mut d = Self { child, stdout, stderr, _config: file };
        let start = Instant::now();
        loop {
            if d.stderr.lock().unwrap().contains("running") {
                break;
            }
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("daemon exited ({status}) before running:\n{}", d.stderr());
            }
            assert!(start.elapsed() < Duration::from_secs(30), "daemon not running after 30 s:\n{}", d.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The config file the daemon runs on.
    pub fn config_path(&self) -> &std::path::Path {
        self._config.path()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Wait until the daemon's log holds `text` (up to `limit`).
    pub fn wait_for_log(&self, limit: Duration, text: &str) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.stderr().contains(text) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Records written so far.
    pub fn records(&self) -> Vec<Value> {
        self.stdout.lock().unwrap().iter().map(|l| serde_json::from_str(l).expect("stdout is JSON lines")).collect()
    }

    /// Wait until `cond` holds on the records so far (up to `limit`).
    pub fn wait_for(&self, limit: Duration, mut cond: impl FnMut(&[Value]) -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if cond(&self.records()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Wait until the daemon's health says at least `at_least` TLS
    /// libraries are hooked (the library scan runs beside the start: a
    /// short-lived client started before it is not seen), failing the test
    /// after 15 s.
    pub fn wait_for_tls_libraries(&self, at_least: u64) {
        let hooked = |rs: &[Value]| last_health(rs).map_or(0, |h| num(h, "tls_libraries"));
        assert!(
            self.wait_for(Duration::from_secs(15), |rs| hooked(rs) >= at_least),
            "fewer than {at_least} TLS libraries hooked within 15 s: {}",
            self.stderr()
        );
    }

    /// Send `signal` to the daemon.
    pub fn signal(&self, signal: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGINT, wait for the exit (pending windows are flushed), all records.
    pub fn stop(self) -> Vec<Value> {
        self.stop_with_log().0
    }

    /// As [`Daemon::stop`], with the daemon's log (for [`explain`]).
    pub fn stop_with_log(mut self) -> (Vec<Value>, String) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(200)); // let the readers drain
        assert!(status.success(), "daemon exit {status}:\n{}", self.stderr());
        (self.records(), self.stderr())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config for the capture tests: 1 s windows, and `extra` lines appended
/// under `Common` (indented by 6) or as whole sections.
pub fn config(common: &str, ebpf: &str, wirelens: &str) -> String {
    let indent = |s: &str| s.lines().map(|l| format!("      {l}\n")).collect::<String>();
    // The test's own capture size, else WIRELENS_TEST_PAYLOAD_BYTES (CI runs
    // the layer-7 tests again with 256: counts, outcomes, sizes and
    // latencies must not depend on it), else the default.
    let payload = if wirelens.contains("PayloadBytes") {
        String::new()
    } else {
        let bytes = std::env::var("WIRELENS_TEST_PAYLOAD_BYTES").unwrap_or_else(|_| "4096".into());
        format!("      PayloadBytes: {bytes}\n")
    };
    // Every test daemon has an admin endpoint, on a port of its own (tests
    // run side by side); tests of the endpoint choose theirs.
    let admin = if wirelens.contains("Admin") { "" } else { "      Admin: {Listen: '127.0.0.1:0'}\n" };
    format!(
        "enable: true\ninputs:\n  - Type: observer_ilogtail_network_v1\n    Common:\n      FlushOutL4Interval: 1\n{}    EBPF:\n      Enabled: true\n{}    Wirelens:\n{payload}{admin}{}flushers:\n  - Type: flusher_stdout\n",
        indent(common),
        indent(ebpf),
        indent(wirelens)
    )
}

/// Sum of a numeric string field over statistics records matching `pred`.
pub fn sum(records: &[Value], field: &str, pred: impl Fn(&Value) -> bool) -> u64 {
    records
        .iter()
        .filter(|r| r["type"] == "statistics" && pred(r))
        .map(|r| r[field].as_str().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// Sum of a numeric field over the layer-7 records of `protocol` matching `pred`.
pub fn l7_total(records: &[Value], protocol: &str, field: &str, pred: impl Fn(&Value) -> bool) -> u64 {
    records
        .iter()
        .filter(|r| r["type"] == "protocols" && r["protocol"] == protocol && pred(r))
        .map(|r| num(r, field))
        .sum()
}

/// The daemon's latest health record among `records`, if any.
pub fn last_health(records: &[Value]) -> Option<&Value> {
    records.iter().rev().find(|r| r["type"] == "health")
}

/// A record's numeric field (every value is a string), or a panic naming it.
pub fn num(r: &Value, field: &str) -> u64 {
    r[field].as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{field} in {r}"))
}

/// The parsed `remote_info` of a record.
pub fn remote(r: &Value) -> Value {
    serde_json::from_str(r["remote_info"].as_str().unwrap()).unwrap()
}

/// For a failed count: one side's calls of `protocol` per process and
/// operation (which client or backend lost calls, and which kind), the
/// daemon's last health record, and its warnings and errors (a plugin call
/// that failed, events lost in the kernel).
pub fn explain(protocol: &str, records: &[Value], side: &dyn Fn(&Value) -> bool, log: &str) {
    let mut by_process: std::collections::BTreeMap<String, (u64, u64, u64)> = Default::default();
    for r in records.iter().filter(|r| r["type"] == "protocols" && r["protocol"] == protocol && side(r)) {
        let key = format!("{} {} {}", r["_process_pid_"], r["_process_cmd_"], r["op"]);
        let e = by_process.entry(key).or_default();
        e.0 += num(r, "total_count");
        e.1 += u64::from(r["success"] == "0") * num(r, "total_count");
        e.2 += num(r, "total_req_bytes");
    }
    for (process, (calls, failed, req_bytes)) in by_process {
        eprintln!("  {process}: calls {calls}, failed {failed}, request bytes {req_bytes}");
    }
    if let Some(health) = last_health(records) {
        eprintln!("  health: {health}");
    }
    for line in log.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).take(20) {
        eprintln!("  daemon: {line}");
    }
}
