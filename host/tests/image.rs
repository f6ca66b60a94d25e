//! The container image: `scripts/image.sh` builds it offline with the local
//! Docker engine, and the image runs on a real engine the way the
//! DaemonSet runs it (host PID and network, the DaemonSet's capabilities
//! only, BTF and the config mounted) until its admin endpoint says ready.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::servers::{free_port, http_get as get, DockerEngine};

const TAG: &str = "wirelens:test";

#[test]
fn the_image_builds_offline_and_becomes_ready() {
    common::daemon::require_root();
    let mut docker = DockerEngine::start();
    let out = Command::new(common::root().join("scripts/image.sh"))
        .arg(TAG)
        .env("WIRELENS_BIN", env!("CARGO_BIN_EXE_wirelens"))
        .output()
        .unwrap();
    assert!(out.status.success(), "scripts/image.sh: {}", String::from_utf8_lossy(&out.stderr));

    let admin = free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("wirelens.yaml"),
        format!("inputs:\n  - Type: observer_ilogtail_network_v1\n    Wirelens: {{Admin: {{Listen: '127.0.0.1:{admin}'}}}}\n"),
    )
    .unwrap();
    let config = format!("{}:/etc/wirelens:ro", dir.path().display());
    // As deploy/daemonset.yaml runs it, but for BPF and PERFMON: Debian's
    // Docker 20.10 refuses their names ("invalid CapAdd: unknown
    // capability"), and SYS_ADMIN grants what they do.
    let args = [
        "--pid=host",
        "--cap-drop=ALL",
        "--cap-add=SYS_ADMIN",
        "--cap-add=SYS_PTRACE",
        "--cap-add=DAC_READ_SEARCH",
        "-v",
        "/sys/kernel/btf:/sys/kernel/btf:ro",
        "-v",
        &config,
    ];
    let id = docker.run_command(TAG, &args, &[]);
    let start = Instant::now();
    loop {
        if let Some((200, body)) = get(admin, "/readyz") {
            assert_eq!(body, "ready\n");
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let logs = Command::new("docker").args(["logs", &id]).output().unwrap();
            panic!("not ready after 60 s:\n{}", String::from_utf8_lossy(&logs.stderr));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, metrics) = get(admin, "/metrics").expect("metrics");
    let version = Command::new(env!("CARGO_BIN_EXE_wirelens")).arg("--version").output().unwrap();
    let commit = String::from_utf8_lossy(&version.stdout)
        .split("commit ")
        .nth(1)
        .unwrap()
        .trim_end_matches([')', '\n'])
        .to_string();
    assert!(metrics.contains(&format!("commit=\"{commit}\"")), "the image runs this build");
}
