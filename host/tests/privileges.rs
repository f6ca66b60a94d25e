//! Least privilege: the daemon asks for capabilities, not uid 0, and each
//! capability the DaemonSet and the systemd unit keep is needed for
//! something this test sees break without it. Runs the daemon under
//! `capsh` with reduced bounding sets (as root: capsh drops them).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::require_root;
use common::servers::RedisServer;

/// The set deploy/ grants.
const KEPT: [&str; 5] = ["cap_bpf", "cap_perfmon", "cap_sys_admin", "cap_sys_ptrace", "cap_dac_read_search"];

struct Run {
    child: Child,
    _dir: tempfile::TempDir,
    out: std::path::PathBuf,
    err: std::path::PathBuf,
}

impl Run {
    /// `wirelens run` with only `keep` in its bounding set.
    fn start(keep: &[&str]) -> Self {
        require_root();
        let bounding = Command::new("capsh").arg("--print").output().expect("capsh (apt-get install libcap2-bin)");
        let text = String::from_utf8_lossy(&bounding.stdout);
        let all = text.lines().find_map(|l| l.strip_prefix("Bounding set =")).expect("capsh prints the bounding set");
        let drop: Vec<&str> = all.trim().split(',').filter(|c| !keep.contains(c)).collect();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        std::fs::write(
            &config,
            "inputs:\n  - Type: observer_ilogtail_network_v1\n    Common: {FlushOutL4Interval: 1, FlushOutL7Interval: 1, DropLocalConnections: false}\n    Wirelens: {Admin: {Listen: ''}}\n",
        )
        .unwrap();
        let (out, err) = (dir.path().join("out"), dir.path().join("err"));
        let command = format!(
            "exec {} --cache-dir {} run -c {} > {} 2> {}",
            env!("CARGO_BIN_EXE_wirelens"),
            dir.path().join("cache").display(),
            config.display(),
            out.display(),
            err.display()
        );
        let child = Command::new("capsh")
            .arg(format!("--drop={}", drop.join(",")))
            .args(["--", "-c", &command])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Self { child, _dir: dir, out, err }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Running (true) or exited (false), within 30 s.
    fn wait_running(&mut self) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if self.stderr().contains("daemon: running") {
                return true;
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("neither running nor exited after 30 s:\n{}", self.stderr());
    }

    /// Redis calls of this test's redis-cli reach the records, and a Python
    /// process with OpenSSL loaded is looked at: (layer 7 seen, a TLS
    /// library attached).
    fn exercise(&mut self, redis: &RedisServer) -> (bool, bool) {
        let mut python = Command::new("python3").args(["-c", "import ssl, time; time.sleep(4)"]).spawn().unwrap();
        let start = Instant::now();
        let mut seen = (false, false);
        while start.elapsed() < Duration::from_secs(10) && !(seen.0 && seen.1) {
            let out = Command::new("redis-cli").args(["-p", &redis.port.to_string(), "SET", "capkey", "v"]).output();
            assert!(out.unwrap().status.success());
            std::thread::sleep(Duration::from_millis(500));
            let port = format!("\"remote_port\\\":\\\"{}\\\"", redis.port);
            seen.0 = self.stdout().lines().any(|l| l.contains("\"protocol\":\"redis\"") && l.contains(&port));
            seen.1 = self.stderr().contains("TLS library attached");
        }
        let _ = python.kill();
        let _ = python.wait();
        seen
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = Command::new("pkill").args(["-INT", "-P", &self.child.id().to_string()]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn without(cap: &str) -> Vec<&'static str> {
    KEPT.iter().copied().filter(|c| *c != cap).collect()
}

#[test]
fn the_kept_capabilities_suffice_and_each_is_needed() {
    let redis = RedisServer::start();

    let mut run = Run::start(&KEPT);
    assert!(run.wait_running(), "{}", run.stderr());
    assert_eq!(run.exercise(&redis), (true, true), "layer 7 and TLS with the kept set:\n{}", run.stderr());
    drop(run);

    // Without CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN nothing can load: the
    // error names what to grant.
    let mut run = Run::start(&["cap_sys_ptrace", "cap_dac_read_search"]);
    assert!(!run.wait_running(), "ran without the BPF capabilities");
    let err = run.stderr();
    assert!(err.contains("capture needs CAP_BPF and CAP_PERFMON") && err.contains("grant"), "{err}");

    // Without CAP_SYS_ADMIN: TLS libraries cannot be probed (said once,
    // and none is tried), the rest works.
    let mut run = Run::start(&without("cap_sys_admin"));
    assert!(run.wait_running(), "{}", run.stderr());
    assert_eq!(run.exercise(&redis), (true, false), "{}", run.stderr());
    let err = run.stderr();
    assert!(err.contains("without CAP_SYS_ADMIN the TLS libraries cannot be probed"), "{err}");
    assert!(!err.contains("TLS library not attached"), "no library is tried: {err}");
    drop(run);

    // Without CAP_SYS_PTRACE other processes' libraries are out of sight.
    let mut run = Run::start(&without("cap_sys_ptrace"));
    assert!(run.wait_running(), "{}", run.stderr());
    assert_eq!(run.exercise(&redis), (true, false), "{}", run.stderr());
    assert!(run.stderr().contains("without CAP_SYS_PTRACE"), "{}", run.stderr());
    drop(run);

    // Without CAP_DAC_READ_SEARCH the daemon says what it may miss.
    let mut run = Run::start(&without("cap_dac_read_search"));
    assert!(run.wait_running(), "{}", run.stderr());
    assert!(run.stderr().contains("without CAP_DAC_READ_SEARCH"), "{}", run.stderr());
}
