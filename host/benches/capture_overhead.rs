//! What capture costs the observed application per socket call: ns per
//! write+read pair over a TCP loopback connection and a unix socketpair
//! (64 B and 4 KiB writes; over TCP also 64 B written by writev in two
//! halves, as nginx writes a response's head and body), and over a pipe (not a socket), in each mode of
//! the daemon:
//! - filtered: the daemon runs for another pid only (EBPF.Pid), so every
//!   call is dropped at the programs' first check;
//! - layer 4 only (ProtocolProcess: false): TCP calls are counted in the
//!   socket's storage without a record, unix calls get records without
//!   payload;
//! - captured: every write is a whole HTTP request the HTTP plugin parses,
//!   so its head is copied (up to the plugin's budget);
//! - body skipped: after one request head announcing a body of 1 TB, each
//!   4 KiB write is body the plugin skips: its bytes are not copied.
//!
//! Also: the time inside the kernel programs per call (BPF run-time
//! statistics, switched on only for that), the daemon's own CPU at 20,000
//! captured calls per second, and what recording process identity costs
//! each process born (fork, exec and exit of /bin/true). Modes take turns
//! round by round; added costs are paired per round against that round's
//! run without the daemon. Needs root.
//!
//! Run: `cargo bench -p wirelens --bench capture_overhead`

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CALL_PAIRS: usize = 100_000;
const ROUNDS: usize = 7;

/// What the writes carry.
#[derive(Clone, Copy, PartialEq)]
enum Payload {
    /// Each write a whole HTTP request of the write's size.
    Requests,
    /// One request head announcing a huge body, then body writes.
    Body,
}

/// What a measurement writes and reads through.
#[derive(Clone, Copy, PartialEq)]
enum Channel {
    Tcp(usize),
    /// TCP, each request written with writev in two halves (as nginx
    /// writes a response: its head and its body).
    TcpWritev(usize),
    Unix(usize),
    /// Not a socket: what capture costs every other call.
    Pipe(usize),
}

impl Channel {
    fn label(self) -> String {
        match self {
            Channel::Tcp(n) => format!("tcp {n}"),
            Channel::TcpWritev(n) => format!("tcp writev {n}"),
            Channel::Unix(n) => format!("unix {n}"),
            Channel::Pipe(n) => format!("pipe {n}"),
        }
    }
}

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

/// A connected TCP pair over loopback.
fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (b, _) = listener.accept().unwrap();
    a.set_nodelay(true).unwrap();
    (a, b)
}

/// A pipe's two ends, as files.
fn pipe() -> (std::fs::File, std::fs::File) {
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid array of two ints.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: fresh fds we own.
    unsafe { (std::fs::File::from(OwnedFd::from_raw_fd(fds[1])), std::fs::File::from(OwnedFd::from_raw_fd(fds[0]))) }
}

/// An HTTP request of exactly `size` bytes (a header padded to fit).
fn request(size: usize) -> Vec<u8> {
    let head = b"GET /bench HTTP/1.1\r\nHost: bench\r\nX-Pad: ";
    let mut r = head.to_vec();
    r.resize(size.max(head.len() + 4) - 4, b'a');
    r.extend_from_slice(b"\r\n\r\n");
    r
}

/// ns per write+read pair.
fn measure(channel: Channel, payload: Payload, pairs: usize) -> f64 {
    match channel {
        Channel::Tcp(size) => {
            let (a, b) = tcp_pair();
            pump(a, b, size, payload, pairs)
        }
        Channel::TcpWritev(size) => {
            let (a, b) = tcp_pair();
            pump(Halves(a), b, size, payload, pairs)
        }
        Channel::Unix(size) => {
            let (a, b) = socketpair();
            pump(a, b, size, payload, pairs)
        }
        Channel::Pipe(size) => {
            let (a, b) = pipe();
            pump(a, b, size, payload, pairs)
        }
    }
}

/// A writer whose every write is one writev of the buffer's two halves.
struct Halves<W>(W);

impl<W: Write> Write for Halves<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let (head, body) = buf.split_at(buf.len() / 2);
        self.0.write_vectored(&[std::io::IoSlice::new(head), std::io::IoSlice::new(body)])
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

fn pump(mut a: impl Write, mut b: impl Read, size: usize, payload: Payload, pairs: usize) -> f64 {
    let buf = match payload {
        Payload::Requests => request(size),
        Payload::Body => {
            let head = b"POST /upload HTTP/1.1\r\nHost: bench\r\nContent-Length: 1000000000000\r\n\r\n";
            a.write_all(head).unwrap();
            let mut got = vec![0u8; head.len()];
            b.read_exact(&mut got).unwrap();
            vec![b'b'; size]
        }
    };
    let mut got = vec![0u8; buf.len()];
    // Warm up (the connection's detection, the kernel's first sight of it).
    for _ in 0..200 {
        a.write_all(&buf).unwrap();
        b.read_exact(&mut got).unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    for _ in 0..pairs {
        a.write_all(&buf).unwrap();
        b.read_exact(&mut got).unwrap();
    }
    start.elapsed().as_nanos() as f64 / pairs as f64
}

struct Daemon(Child, std::sync::mpsc::Receiver<String>);

impl Daemon {
    fn start(common_extra: &str, ebpf_extra: &str) -> Self {
        let config = format!(
            "inputs:\n  - Type: observer_ilogtail_network_v1\n    Common:\n      FlushOutL4Interval: 1\n      DropUnixSocket: false\n      DropLocalConnections: false\n{common_extra}    EBPF:\n      Enabled: true\n{ebpf_extra}flushers:\n  - Type: flusher_stdout\n"
        );
        let path = std::env::temp_dir().join(format!("wl-bench-{}.yaml", std::process::id()));
        std::fs::write(&path, config).unwrap();
        // `--against` runs alternate this build with another one.
        let binary = std::env::var("WL_BENCH_DAEMON").unwrap_or_else(|_| env!("CARGO_BIN_EXE_wirelens").to_string());
        let mut child = Command::new(binary)
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
        let (lines, log) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        Self(child, log)
    }

    /// Wait (at most 30 s) until the daemon has hooked a TLS library this
    /// process maps (`--tls-hooked`): it looks at processes it saw talk, so
    /// this one talks meanwhile.
    fn wait_tls_hooked(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            measure(Channel::Tcp(64), Payload::Requests, 10);
            while let Ok(line) = self.1.recv_timeout(Duration::from_millis(100)) {
                if line.contains("TLS library attached") {
                    return;
                }
            }
        }
        panic!("the daemon did not attach to libssl within 30 s (is Wirelens.Tls on?)");
    }

    /// utime + stime of the daemon, in seconds.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.0.id())).unwrap();
        let fields: Vec<&str> = stat.rsplit(") ").next().unwrap().split(' ').collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        ticks as f64 / 100.0
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: signalling our child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let _ = self.0.wait();
    }
}

/// The daemon's modes measured.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Filtered,
    Layer4,
    Captured,
    BodySkipped,
}

impl Mode {
    const ALL: [Mode; 4] = [Mode::Filtered, Mode::Layer4, Mode::Captured, Mode::BodySkipped];

    fn label(self) -> &'static str {
        match self {
            Mode::Filtered => "filtered",
            Mode::Layer4 => "layer 4 only",
            Mode::Captured => "captured",
            Mode::BodySkipped => "body skipped",
        }
    }

    fn daemon(self) -> Daemon {
        match self {
            Mode::Filtered => Daemon::start("", "      Pid: [1]\n"),
            Mode::Layer4 => Daemon::start("      ProtocolProcess: false\n", ""),
            Mode::Captured | Mode::BodySkipped => Daemon::start("", ""),
        }
    }

    fn payload(self) -> Payload {
        if self == Mode::BodySkipped {
            Payload::Body
        } else {
            Payload::Requests
        }
    }

    /// Body skipping applies to 4 KiB socket writes only.
    fn applies(self, c: Channel) -> bool {
        self != Mode::BodySkipped || matches!(c, Channel::Tcp(4096) | Channel::Unix(4096))
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

const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Time inside the kernel programs per call, for write+read pairs under the
/// daemon `d`: measured with the kernel's BPF run-time statistics switched
/// on only for this, over every program run (the socket send or receive
/// program once per call, and the data-ready one per packet delivered).
///
/// The statistics cost something themselves: two clock reads and a
/// per-CPU update around every run. That cost is measured in the same
/// reading as the time per run of the cheapest program that ran (in every
/// mode, `on_data_ready` on a TCP or unix socket: one load and a return),
/// and the second figure is the first less that much per run. It slightly
/// understates the programs (by that one load and return per run).
fn in_kernel_ns_per_call(d: &Daemon, channel: Channel, payload: Payload) -> KernelNs {
    std::fs::write(STATS, "1").expect("enabling kernel.bpf_stats_enabled");
    let before = bpf_prog_stats(d.0.id());
    measure(channel, payload, CALL_PAIRS);
    let after = bpf_prog_stats(d.0.id());
    let _ = std::fs::write(STATS, "0");
    let per_prog: Vec<(u64, u64)> = after.iter().zip(&before).map(|(a, b)| (a.0 - b.0, a.1 - b.1)).collect();
    let ns: u64 = per_prog.iter().map(|p| p.0).sum();
    let runs: u64 = per_prog.iter().map(|p| p.1).sum();
    // Programs that ran at least once per pair.
    let floor = per_prog
        .iter()
        .filter(|p| p.1 >= CALL_PAIRS as u64)
        .map(|p| p.0 as f64 / p.1 as f64)
        .fold(f64::INFINITY, f64::min);
    let floor = if floor.is_finite() { floor } else { 0.0 };
    // Two calls (write and read) per pair (plus the warm-up's, a few percent).
    let calls = (2 * CALL_PAIRS) as f64;
    KernelNs { raw: ns as f64 / calls, net: (ns as f64 - floor * runs as f64) / calls }
}

/// Time in the kernel programs per call: as the statistics measure it, and
/// without their own cost (see `in_kernel_ns_per_call`).
#[derive(Clone, Copy)]
struct KernelNs {
    raw: f64,
    net: f64,
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
    std::fs::write(STATS, "1").expect("enabling kernel.bpf_stats_enabled");
    let before = bpf_prog_stats(d.0.id());
    spawn_true(EXECS);
    let after = bpf_prog_stats(d.0.id());
    let _ = std::fs::write(STATS, "0");
    let ns: u64 = after.iter().zip(&before).map(|(a, b)| a.0 - b.0).sum();
    ns as f64 / EXECS as f64
}

/// `--tls-hooked`: this process maps OpenSSL's libssl, so a daemon that
/// parses protocols hooks it, as it would on any host where a client or
/// server uses OpenSSL (layer 4 only and filtered daemons never hook it).
fn map_libssl() {
    // SAFETY: a NUL-terminated name; the handle is kept for the process's life.
    let handle = unsafe { libc::dlopen(c"libssl.so.3".as_ptr(), libc::RTLD_NOW) };
    assert!(!handle.is_null(), "--tls-hooked needs libssl.so.3 (apt-get install libssl3)");
}

/// See `--kernel-only` in main.
fn kernel_only(channels: &[Channel], against: Option<&String>, tls_hooked: bool) {
    if tls_hooked {
        map_libssl();
    }
    let channels: Vec<Channel> = channels.iter().copied().filter(|&c| c != Channel::Pipe(64)).collect();
    let builds: Vec<Option<&String>> = std::iter::once(None).chain(against.map(Some)).collect();
    let rounds = if against.is_some() { 5 } else { 3 };
    for mode in Mode::ALL {
        // ns[build][channel][round]
        let mut ns = vec![vec![vec![]; channels.len()]; builds.len()];
        for _ in 0..rounds {
            for (b, build) in builds.iter().enumerate() {
                match build {
                    Some(path) => std::env::set_var("WL_BENCH_DAEMON", path),
                    None => std::env::remove_var("WL_BENCH_DAEMON"),
                }
                let d = mode.daemon();
                if tls_hooked && matches!(mode, Mode::Captured | Mode::BodySkipped) {
                    d.wait_tls_hooked();
                }
                for (i, &c) in channels.iter().enumerate().filter(|(_, &c)| mode.applies(c)) {
                    ns[b][i].push(in_kernel_ns_per_call(&d, c, mode.payload()));
                }
            }
        }
        std::env::remove_var("WL_BENCH_DAEMON");
        for (b, build) in builds.iter().enumerate() {
            print!("{:>14} {:>10}:", mode.label(), build.map_or("this build", |_| "against"));
            for (i, c) in channels.iter().enumerate().filter(|(_, &c)| mode.applies(c)) {
                let (lo, mid, hi) = mmm(ns[b][i].iter().map(|k: &KernelNs| k.raw).collect());
                let net = mmm(ns[b][i].iter().map(|k| k.net).collect()).1;
                print!("  {} {lo:.0}/{mid:.0}/{hi:.0} (net {net:.0})", c.label());
            }
            println!();
        }
        if builds.len() == 2 {
            print!("{:>14} {:>10}:", mode.label(), "difference");
            for (i, c) in channels.iter().enumerate().filter(|(_, &c)| mode.applies(c)) {
                let (lo, mid, hi) = mmm(ns[0][i].iter().zip(&ns[1][i]).map(|(a, b)| a.raw - b.raw).collect());
                print!("  {} {lo:.0}/{mid:.0}/{hi:.0}", c.label());
            }
            println!();
        }
    }
}

fn mmm(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn main() {
    // SAFETY: no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "the capture benchmark loads eBPF programs: run it as root");
    let channels = [
        Channel::Tcp(64),
        Channel::Tcp(4096),
        Channel::TcpWritev(64),
        Channel::Unix(64),
        Channel::Unix(4096),
        Channel::Pipe(64),
    ];
    // `-- --kernel-only [--against BINARY] [--tls-hooked]`: only the time
    // inside the programs (about 30 s), for trying a change to them; with
    // another daemon build, the two take turns round by round and each
    // round's difference is paired; `--tls-hooked`: with a TLS library
    // hooked (see `map_libssl`).
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--kernel-only") {
        let against = args.iter().position(|a| a == "--against").and_then(|i| args.get(i + 1));
        kernel_only(&channels, against, args.iter().any(|a| a == "--tls-hooked"));
        return;
    }
    // base[c][round]; added[mode][c][round]: ns added per call.
    let mut base = vec![vec![]; channels.len()];
    let mut with = vec![vec![vec![]; channels.len()]; Mode::ALL.len()];
    for _ in 0..ROUNDS {
        for (i, &c) in channels.iter().enumerate() {
            base[i].push(measure(c, Payload::Requests, CALL_PAIRS));
        }
        for (m, mode) in Mode::ALL.iter().enumerate() {
            let _d = mode.daemon();
            for (i, &c) in channels.iter().enumerate() {
                if mode.applies(c) {
                    with[m][i].push(measure(c, mode.payload(), CALL_PAIRS));
                }
            }
        }
    }
    // In-kernel time per call, apart from the rounds above so the
    // statistics do not weigh on them.
    let kernel_ns: Vec<Vec<Option<KernelNs>>> = Mode::ALL
        .iter()
        .map(|mode| {
            let d = mode.daemon();
            channels.iter().map(|&c| mode.applies(c).then(|| in_kernel_ns_per_call(&d, c, mode.payload()))).collect()
        })
        .collect();
    let cpu_pct = {
        let d = Mode::Captured.daemon();
        // 10,000 write+read pairs per second = 20,000 captured calls per second.
        let (a, b) = tcp_pair();
        let (mut a, mut b) = (a, b);
        let buf = request(64);
        let mut got = vec![0u8; buf.len()];
        let before = d.cpu_seconds();
        let start = Instant::now();
        let seconds = 5u32;
        for sec in 0..seconds {
            for _ in 0..10_000 {
                a.write_all(&buf).unwrap();
                b.read_exact(&mut got).unwrap();
            }
            let target = Duration::from_secs(u64::from(sec) + 1);
            if let Some(rest) = target.checked_sub(start.elapsed()) {
                std::thread::sleep(rest);
            }
        }
        100.0 * (d.cpu_seconds() - before) / start.elapsed().as_secs_f64()
    };
    // Process birth: fork+exec+exit of /bin/true, alternating without and
    // with the daemon.
    let (mut exec_base, mut exec_daemon) = (vec![], vec![]);
    for _ in 0..ROUNDS {
        exec_base.push(spawn_true(EXECS));
        let _d = Mode::Captured.daemon();
        exec_daemon.push(spawn_true(EXECS));
    }
    let exec_kernel_ns = in_kernel_ns_per_exec(&Mode::Captured.daemon());

    println!(
        "ns added per call (write or read), paired per round against no daemon: min/median/max of {ROUNDS} rounds x {CALL_PAIRS} pairs"
    );
    print!("{:>10}  {:>16}", "channel", "no daemon (pair)");
    for mode in Mode::ALL {
        print!("  {:>22}", mode.label());
    }
    println!();
    for (i, c) in channels.iter().enumerate() {
        let b = mmm(base[i].clone());
        print!("{:>10}  {:>16}", c.label(), format!("{:.0}/{:.0}/{:.0}", b.0, b.1, b.2));
        for (m, mode) in Mode::ALL.iter().enumerate() {
            if !mode.applies(*c) {
                print!("  {:>22}", "-");
                continue;
            }
            // Each round's difference to that round's own baseline, over
            // two calls per pair.
            let added = mmm(with[m][i].iter().zip(&base[i]).map(|(w, b)| (w - b) / 2.0).collect());
            print!("  {:>22}", format!("{:.0}/{:.0}/{:.0}", added.0, added.1, added.2));
        }
        println!();
    }
    println!(
        "time inside the kernel programs per call (kernel.bpf_stats_enabled, one run each; in brackets, less the \
         statistics' own cost per program run)"
    );
    for (i, c) in channels.iter().enumerate() {
        print!("{:>10}", c.label());
        for (m, mode) in Mode::ALL.iter().enumerate() {
            if let Some(ns) = kernel_ns[m][i] {
                print!("  {}: {:.0} ns ({:.0})", mode.label(), ns.raw, ns.net);
            }
        }
        println!();
    }
    println!("daemon CPU at 20,000 captured calls/s (TCP, 64 B HTTP requests): {cpu_pct:.1}% of one core");
    let (b, d) = (mmm(exec_base.clone()), mmm(exec_daemon.clone()));
    let added = mmm(exec_daemon.iter().zip(&exec_base).map(|(d, b)| d - b).collect());
    println!(
        "process birth (fork+exec+exit of /bin/true, us, min/median/max of {ROUNDS} rounds x {EXECS}): \
         no daemon {:.0}/{:.0}/{:.0}, daemon {:.0}/{:.0}/{:.0}; added {:.1}/{:.1}/{:.1} us; in the programs {:.0} ns",
        b.0, b.1, b.2, d.0, d.1, d.2, added.0, added.1, added.2, exec_kernel_ns
    );
    std::io::stdout().flush().unwrap();
}
