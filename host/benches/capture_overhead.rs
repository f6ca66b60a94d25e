//! What capture costs the observed application: ns per socket write+read
//! (socketpair, 64 B and 4 KiB), and per pipe write+read (64 B: calls that
//! are not on a socket), with no daemon, with the daemon filtering to
//! another pid, and with the daemon capturing everything; the daemon's
//! own CPU at 20,000 captured calls per second; and what recording process
//! identity costs each process born (fork, exec and exit of /bin/true). One
//! run, ratios against the no-daemon baseline measured in the same run.
//! Needs root.
//!
//! Run: `cargo bench -p wirelens --bench capture_overhead`

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CALL_PAIRS: usize = 200_000;
const ROUNDS: usize = 7;

fn socketpair() -> (std::os::unix::net::UnixStream, std::os::unix::net::UnixStream) {
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid array of two ints.
    let rc = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) };
    assert_eq!(rc, 0);
    // SAFETY: fresh fds we own.
    unsafe {
        (
            std::os::unix::net::UnixStream::from(OwnedFd::from_raw_fd(fds[0])),
            std::os::unix::net::UnixStream::from(OwnedFd::from_raw_fd(fds[1])),
        )
    }
}

/// A pipe's two ends, as files.
fn pipe() -> (std::fs::File, std::fs::File) {
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid array of two ints.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: fresh fds we own.
    unsafe { (std::fs::File::from(OwnedFd::from_raw_fd(fds[1])), std::fs::File::from(OwnedFd::from_raw_fd(fds[0]))) }
}

/// What a measurement writes and reads through.
#[derive(Clone, Copy)]
enum Channel {
    Socketpair(usize),
    /// Not a socket: what capture costs every other call.
    Pipe(usize),
}

impl Channel {
    fn label(self) -> String {
        match self {
            Channel::Socketpair(n) => format!("{n}"),
            Channel::Pipe(n) => format!("pipe {n}"),
        }
    }
}

/// ns per write+read pair.
fn measure(channel: Channel, pairs: usize) -> f64 {
    match channel {
        Channel::Socketpair(size) => write_read(size, pairs),
        Channel::Pipe(size) => {
            let (a, b) = pipe();
            pump(a, b, size, pairs)
        }
    }
}

/// ns per write+read pair of `size` bytes over a socketpair.
fn write_read(size: usize, pairs: usize) -> f64 {
    let (a, b) = socketpair();
    pump(a, b, size, pairs)
}

fn pump(mut a: impl Write, mut b: impl std::io::Read, size: usize, pairs: usize) -> f64 {
    let buf = vec![7u8; size];
    let mut got = vec![0u8; size];
    let start = Instant::now();
    for _ in 0..pairs {
        a.write_all(&buf).unwrap();
        b.read_exact(&mut got).unwrap();
    }
    start.elapsed().as_nanos() as f64 / pairs as f64
}

struct Daemon(Child);

impl Daemon {
    fn start(ebpf_extra: &str) -> Self {
        let config = format!(
            "inputs:\n  - Type: observer_ilogtail_network_v1\n    Common:\n      FlushOutL4Interval: 1\n      DropUnixSocket: false\n    EBPF:\n      Enabled: true\n{ebpf_extra}flushers:\n  - Type: flusher_stdout\n"
        );
        let path = std::env::temp_dir().join(format!("wl-bench-{}.yaml", std::process::id()));
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_wirelens"))
            .args(["run", "-c"])
            .arg(&path)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while err.read_line(&mut line).unwrap() > 0 {
            if line.contains("running") {
                break;
            }
            line.clear();
        }
        std::thread::spawn(move || for _ in err.lines() {});
        Self(child)
    }

    /// utime + stime of the daemon, in seconds.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.0.id())).unwrap();
        let fields: Vec<&str> = stat.rsplit(") ").next().unwrap().split(' ').collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        ticks as f64 / 100.0
    }
}

/// The kernel's own accounting of time spent in the daemon's BPF programs
/// (`kernel.bpf_stats_enabled`), summed over its programs: (ns, runs) per
/// program, read from /proc/PID/fdinfo.
fn bpf_prog_stats(pid: u32) -> Vec<(u64, u64)> {
    let mut out = vec![];
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return out };
    let mut entries: Vec<_> = dir.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name().to_string_lossy().parse::<u64>().unwrap_or(0));
    for entry in entries {
        let Ok(text) = std::fs::read_to_string(entry.path()) else { continue };
        if !text.contains("prog_type") {
            continue;
        }
        let field = |name: &str| {
            text.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim().parse::<u64>().unwrap_or(0))).unwrap_or(0)
        };
        out.push((field("run_time_ns:"), field("run_cnt:")));
    }
    out
}

/// Time inside the kernel programs per syscall they ran on, for
/// write+read pairs of `size` bytes under the daemon `d`: measured with
/// the kernel's BPF run-time statistics switched on only for this (they
/// cost two clock reads per run), over every program run: the socket
/// send or receive program, once per call.
fn in_kernel_ns_per_call(d: &Daemon, channel: Channel) -> f64 {
    const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";
    std::fs::write(STATS, "1").expect("enabling kernel.bpf_stats_enabled");
    let before = bpf_prog_stats(d.0.id());
    measure(channel, CALL_PAIRS);
    let after = bpf_prog_stats(d.0.id());
    let _ = std::fs::write(STATS, "0");
    let ns: u64 = after.iter().zip(&before).map(|(a, b)| a.0 - b.0).sum();
    // Two calls (write and read) per pair.
    ns as f64 / (2 * CALL_PAIRS) as f64
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: signalling our child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let _ = self.0.wait();
    }
}

/// Processes born per exec measurement.
const EXECS: usize = 1000;

/// µs per fork+exec+exit of /bin/true, waited for.
fn spawn_true(n: usize) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        let ok = Command::new("/bin/true").status().unwrap();
        assert!(ok.success());
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// Time inside the kernel programs per process born (fork, exec, exit:
/// the process-identity programs; the socket ones do not run).
fn in_kernel_ns_per_exec(d: &Daemon) -> f64 {
    const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";
    std::fs::write(STATS, "1").expect("enabling kernel.bpf_stats_enabled");
    let before = bpf_prog_stats(d.0.id());
    spawn_true(EXECS);
    let after = bpf_prog_stats(d.0.id());
    let _ = std::fs::write(STATS, "0");
    let ns: u64 = after.iter().zip(&before).map(|(a, b)| a.0 - b.0).sum();
    ns as f64 / EXECS as f64
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn main() {
    // SAFETY: no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "the capture benchmark loads eBPF programs: run it as root");
    let sizes = [Channel::Socketpair(64), Channel::Socketpair(4096), Channel::Pipe(64)];
    // Modes take turns round by round (a fresh daemon each time), so drift
    // on this shared machine hits them alike.
    let mut base = vec![vec![]; sizes.len()];
    let mut filtered = vec![vec![]; sizes.len()];
    let mut captured = vec![vec![]; sizes.len()];
    for _ in 0..ROUNDS {
        for (i, &s) in sizes.iter().enumerate() {
            base[i].push(measure(s, CALL_PAIRS));
        }
        {
            let _d = Daemon::start("      Pid: [1]\n");
            for (i, &s) in sizes.iter().enumerate() {
                filtered[i].push(measure(s, CALL_PAIRS));
            }
        }
        {
            let _d = Daemon::start("");
            for (i, &s) in sizes.iter().enumerate() {
                captured[i].push(measure(s, CALL_PAIRS));
            }
        }
    }
    let cpu_pct = {
        let d = Daemon::start("");
        // 10,000 write+read pairs per second = 20,000 captured calls per second.
        let before = d.cpu_seconds();
        let start = Instant::now();
        let seconds = 5u32;
        for sec in 0..seconds {
            write_read(64, 10_000);
            let target = Duration::from_secs(u64::from(sec) + 1);
            if let Some(rest) = target.checked_sub(start.elapsed()) {
                std::thread::sleep(rest);
            }
        }
        100.0 * (d.cpu_seconds() - before) / start.elapsed().as_secs_f64()
    };
    // In-kernel time per call, separately from the
    // wall-clock rounds above so the statistics do not weigh on them.
    let kernel_ns: Vec<(f64, f64)> = sizes
        .iter()
        .map(|&s| {
            let filt = {
                let d = Daemon::start("      Pid: [1]\n");
                in_kernel_ns_per_call(&d, s)
            };
            let capt = {
                let d = Daemon::start("");
                in_kernel_ns_per_call(&d, s)
            };
            (filt, capt)
        })
        .collect();
    // Process birth: fork+exec+exit of /bin/true, alternating without and
    // with the daemon.
    let (mut exec_base, mut exec_daemon) = (vec![], vec![]);
    for _ in 0..ROUNDS {
        exec_base.push(spawn_true(EXECS));
        let _d = Daemon::start("");
        exec_daemon.push(spawn_true(EXECS));
    }
    let exec_kernel_ns = in_kernel_ns_per_exec(&Daemon::start(""));
    println!("write+read, ns per pair (min/median/max of {ROUNDS} rounds x {CALL_PAIRS} pairs; size in bytes)");
    println!(
        "{:>8}  {:>18}  {:>28}  {:>28}  {:>16}  {:>16}",
        "size", "no daemon", "filtered (other pid)", "capturing all", "added/call filt", "added/call capt"
    );
    for (i, size) in sizes.iter().enumerate() {
        let (b, f, c) = (median(base[i].clone()), median(filtered[i].clone()), median(captured[i].clone()));
        // Added cost per call: the median over rounds of each round's
        // difference to that round's own baseline (paired, so drift between
        // rounds cancels), over two calls (write and read) per pair.
        let added = |mode: &[f64]| median(mode.iter().zip(&base[i]).map(|(m, b)| (m - b) / 2.0).collect()).1;
        let (add_f, add_c) = (added(&filtered[i]), added(&captured[i]));
        println!(
            "{:>8}  {:>18}  {:>28}  {:>28}  {:>14.0}ns  {:>14.0}ns",
            size.label(),
            format!("{:.0}/{:.0}/{:.0}", b.0, b.1, b.2),
            format!("{:.0}/{:.0}/{:.0} ({:.2}x)", f.0, f.1, f.2, f.1 / b.1),
            format!("{:.0}/{:.0}/{:.0} ({:.2}x)", c.0, c.1, c.2, c.1 / b.1),
            add_f,
            add_c
        );
    }
    println!("time inside the kernel programs per call (kernel.bpf_stats_enabled, one run):");
    for (size, (filt, capt)) in sizes.iter().zip(&kernel_ns) {
        println!("{:>8}  filtered {filt:.0} ns  captured {capt:.0} ns", size.label());
    }
    println!("daemon CPU at 20,000 captured calls/s: {cpu_pct:.1}% of one core");
    let (b, d) = (median(exec_base.clone()), median(exec_daemon.clone()));
    let added = median(exec_daemon.iter().zip(&exec_base).map(|(d, b)| d - b).collect());
    println!(
        "process birth (fork+exec+exit of /bin/true, us, min/median/max of {ROUNDS} rounds x {EXECS}): \
         no daemon {:.0}/{:.0}/{:.0}, daemon {:.0}/{:.0}/{:.0}; added {:.1}/{:.1}/{:.1} us; in the programs {:.0} ns",
        b.0, b.1, b.2, d.0, d.1, d.2, added.0, added.1, added.2, exec_kernel_ns
    );
    std::io::stdout().flush().unwrap();
}
