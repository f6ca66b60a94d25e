//! A load at a fixed rate (requests due on a schedule, whatever the
//! replies), for `bench/run.py`: the clients Debian ships (redis-benchmark,
//! wrk) only run flat out, and a Python client cannot reach tens of
//! thousands of requests per second.
//!
//! ```text
//! wirelens-loadgen --proto redis|http --port P --rate R --seconds S [--conns 8] [--pipeline 1] [--open-loop]
//! wirelens-loadgen --proto redis --port P --seconds S --flat-out
//! ```
//!
//! Request k (a write of `pipeline` commands) is due at start + k * pipeline
//! / rate. Redis: it goes out then on connection k % conns, answered or not
//! (open loop: a slow server does not lower the rate; Redis clients do
//! pipeline). HTTP: it goes out on a connection with no request in flight,
//! waiting at the client while all are busy, as wrk2 and every common
//! HTTP/1.1 client do (they never pipeline; an observer copies a pipelining
//! connection's responses whole); `--open-loop` makes HTTP go out as Redis
//! does, a pipelining client. Its latency runs from its due time to the
//! last byte of its reply, so a client that fell behind shows in the
//! figures (no coordinated omission). Every reply has one
//! size (the same key, the same file), learnt from a first request, so
//! replies are counted by bytes. One thread, epoll with nanosecond
//! timeouts. `--flat-out` sends the next request on a connection as soon as
//! its reply is in (closed loop), for the maximum rate.
//!
//! Prints one JSON line: commands sent and answered, the answered rate,
//! p50, p99 and max latency (ms), and how late the client itself ran.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

struct Args {
    proto: String,
    port: u16,
    rate: f64,
    seconds: f64,
    conns: usize,
    pipeline: usize,
    flat_out: bool,
    /// HTTP too goes out on schedule, answered or not (it pipelines).
    open_loop: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        proto: String::new(),
        port: 0,
        rate: 0.0,
        seconds: 5.0,
        conns: 8,
        pipeline: 1,
        flat_out: false,
        open_loop: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match flag.as_str() {
            "--proto" => a.proto = value("--proto")?,
            "--port" => a.port = value("--port")?.parse().map_err(|e| format!("--port: {e}"))?,
            "--rate" => a.rate = value("--rate")?.parse().map_err(|e| format!("--rate: {e}"))?,
            "--seconds" => a.seconds = value("--seconds")?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--conns" => a.conns = value("--conns")?.parse().map_err(|e| format!("--conns: {e}"))?,
            "--pipeline" => a.pipeline = value("--pipeline")?.parse().map_err(|e| format!("--pipeline: {e}"))?,
            "--flat-out" => a.flat_out = true,
            "--open-loop" => a.open_loop = true,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if a.proto != "redis" && a.proto != "http" {
        return Err("--proto must be redis or http".into());
    }
    if a.port == 0 || a.conns == 0 || a.pipeline == 0 || !(0.1..=600.0).contains(&a.seconds) {
        return Err("--port, --conns and --pipeline must be positive, --seconds 0.1-600".into());
    }
    if !a.flat_out && !(1.0..=10_000_000.0).contains(&a.rate) {
        return Err("--rate must be 1-10000000 commands per second (or --flat-out)".into());
    }
    if a.proto == "http" && a.pipeline != 1 {
        return Err("--pipeline applies to redis only".into());
    }
    Ok(a)
}

/// One write's bytes (`pipeline` commands) and its reply's length.
fn request_and_reply_len(a: &Args) -> std::io::Result<(Vec<u8>, usize)> {
    let mut s = TcpStream::connect(("127.0.0.1", a.port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let one: Vec<u8> = match a.proto.as_str() {
        "redis" => {
            // A 32-byte value under a key of its own.
            s.write_all(b"*3\r\n$3\r\nSET\r\n$12\r\nloadgen:key1\r\n$32\r\n01234567890123456789012345678901\r\n")?;
            read_exactly(&mut s, 5)?; // +OK\r\n
            b"*2\r\n$3\r\nGET\r\n$12\r\nloadgen:key1\r\n".to_vec()
        }
        _ => b"GET / HTTP/1.1\r\nHost: loadgen\r\n\r\n".to_vec(),
    };
    s.write_all(&one)?;
    let reply_len = match a.proto.as_str() {
        "redis" => {
            read_exactly(&mut s, 5 + 32 + 2)?; // $32\r\n...\r\n
            5 + 32 + 2
        }
        _ => http_reply_len(&mut s)?,
    };
    Ok((one.repeat(a.pipeline), reply_len * a.pipeline))
}

fn read_exactly(s: &mut TcpStream, n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf)?;
    Ok(buf)
}

/// The whole length of one HTTP response (head and Content-Length body).
fn http_reply_len(s: &mut TcpStream) -> std::io::Result<usize> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::other("connection closed before a whole response"));
        }
        got.extend_from_slice(&buf[..n]);
        let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>()))
            .ok_or_else(|| std::io::Error::other("a response without Content-Length"))?
            .map_err(std::io::Error::other)?;
        let total = end + 4 + len;
        while got.len() < total {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Err(std::io::Error::other("connection closed inside a response"));
            }
            got.extend_from_slice(&buf[..n]);
        }
        return Ok(total);
    }
}

struct Conn {
    stream: TcpStream,
    /// Due times of the writes not yet answered, oldest first.
    waiting: std::collections::VecDeque<Instant>,
    /// Reply bytes in towards the oldest waiting write.
    reply_bytes: usize,
    /// Bytes of requests the socket did not take yet.
    out: Vec<u8>,
}

fn main() {
    let a = parse_args().unwrap_or_else(|e| {
        eprintln!("wirelens-loadgen: {e}");
        std::process::exit(2)
    });
    // Wake at the due time, not up to 50 us later (the default timer slack):
    // at tens of thousands of requests a second that is several intervals.
    // SAFETY: plain prctl on this thread.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1usize) };
    let (request, reply_len) = request_and_reply_len(&a).unwrap_or_else(|e| {
        eprintln!("wirelens-loadgen: the first request to 127.0.0.1:{} failed: {e}", a.port);
        std::process::exit(1)
    });
    // SAFETY: plain syscall; the fd is checked.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(ep >= 0, "epoll_create1");
    let mut conns: Vec<Conn> = (0..a.conns)
        .map(|i| {
            let stream = TcpStream::connect(("127.0.0.1", a.port)).expect("connect");
            stream.set_nodelay(true).unwrap();
            stream.set_nonblocking(true).unwrap();
            let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: i as u64 };
            // SAFETY: valid fds and event.
            assert_eq!(unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, stream.as_raw_fd(), &mut ev) }, 0);
            Conn { stream, waiting: Default::default(), reply_bytes: 0, out: Vec::new() }
        })
        .collect();

    let interval = Duration::from_secs_f64(a.pipeline as f64 / a.rate.max(1e-9));
    let writes_due = if a.flat_out { u64::MAX } else { (a.rate * a.seconds / a.pipeline as f64).round() as u64 };
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(a.seconds);
    let mut sent = 0u64;
    let mut answered = 0u64;
    let mut latencies: Vec<u32> = Vec::with_capacity((writes_due.min(50_000_000)) as usize);
    let mut max_behind = Duration::ZERO;
    // HTTP: one request in flight per connection; the due ones wait here.
    let one_in_flight = a.proto == "http" && !a.flat_out && !a.open_loop;
    let mut backlog: std::collections::VecDeque<Instant> = Default::default();
    // 16 KiB reads, as hiredis (and so most Redis clients) make them.
    let mut buf = vec![0u8; 16 * 1024];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 64];

    let send = |c: &mut Conn, due: Instant, request: &[u8]| {
        if c.out.is_empty() {
            match c.stream.write(request) {
                Ok(n) if n == request.len() => {}
                Ok(n) => c.out.extend_from_slice(&request[n..]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => c.out.extend_from_slice(request),
                Err(e) => panic!("write: {e}"),
            }
        } else {
            c.out.extend_from_slice(request);
        }
        c.waiting.push_back(due);
    };
    if a.flat_out {
        for c in conns.iter_mut() {
            send(c, Instant::now(), &request);
            sent += 1;
        }
    }
    loop {
        let now = Instant::now();
        if !a.flat_out {
            while sent + (backlog.len() as u64) < writes_due {
                let due = start + interval.mul_f64((sent + backlog.len() as u64) as f64);
                if due > now {
                    break;
                }
                max_behind = max_behind.max(now - due);
                if one_in_flight {
                    backlog.push_back(due);
                    continue;
                }
                let c = &mut conns[(sent % a.conns as u64) as usize];
                send(c, due, &request);
                sent += 1;
            }
            // Requests due while every connection was busy, to the idle ones.
            for c in conns.iter_mut().filter(|c| c.waiting.is_empty()) {
                let Some(due) = backlog.pop_front() else { break };
                send(c, due, &request);
                sent += 1;
            }
        }
        let idle = backlog.is_empty() && conns.iter().all(|c| c.waiting.is_empty());
        if (now >= end && (a.flat_out || sent >= writes_due) && idle) || now >= end + Duration::from_secs(5) {
            break;
        }
        // Until the next write is due (at most 10 ms).
        let queued = sent + backlog.len() as u64;
        let wait = if a.flat_out || queued >= writes_due {
            Duration::from_millis(10)
        } else {
            (start + interval.mul_f64(queued as f64)).saturating_duration_since(now).min(Duration::from_millis(10))
        };
        let ts = libc::timespec { tv_sec: 0, tv_nsec: wait.as_nanos() as libc::c_long };
        // SAFETY: valid epoll fd, buffer of events.len() events, timespec.
        let n = unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait2,
                ep,
                events.as_mut_ptr(),
                events.len() as libc::c_int,
                &ts as *const libc::timespec,
                std::ptr::null::<libc::sigset_t>(),
                0usize,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            panic!("epoll_pwait2: {e}");
        }
        for ev in &events[..n as usize] {
            let c = &mut conns[ev.u64 as usize];
            loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => panic!("the server closed a connection"),
                    Ok(got) => {
                        c.reply_bytes += got;
                        let done_at = Instant::now();
                        while c.reply_bytes >= reply_len {
                            let Some(due) = c.waiting.pop_front() else {
                                panic!("more reply bytes than requests: replies are not all {reply_len} bytes")
                            };
                            c.reply_bytes -= reply_len;
                            answered += 1;
                            latencies.push((done_at - due).as_micros().min(u32::MAX as u128) as u32);
                            if a.flat_out && done_at < end {
                                send(c, done_at, &request);
                                sent += 1;
                            } else if c.waiting.is_empty() {
                                if let Some(due) = backlog.pop_front() {
                                    send(c, due, &request);
                                    sent += 1;
                                }
                            }
                        }
                        if got < buf.len() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("read: {e}"),
                }
            }
            if !c.out.is_empty() {
                if let Ok(n) = c.stream.write(&c.out) {
                    c.out.drain(..n);
                }
            }
        }
        // Writes the sockets did not take at once.
        for c in conns.iter_mut().filter(|c| !c.out.is_empty()) {
            if let Ok(n) = c.stream.write(&c.out) {
                c.out.drain(..n);
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64().min(a.seconds.max(1e-9) + 5.0);
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        latencies[((latencies.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
    };
    let cmds = |writes: u64| writes * a.pipeline as u64;
    let run_seconds = if a.flat_out { a.seconds } else { elapsed.max(a.seconds) };
    println!(
        "{{\"sent\": {}, \"answered\": {}, \"per_second\": {:.1}, \"p50_ms\": {:.3}, \"p99_ms\": {:.3}, \"max_ms\": {:.3}, \"client_behind_ms\": {:.3}}}",
        cmds(sent),
        cmds(answered),
        cmds(answered) as f64 / run_seconds,
        pct(0.50),
        pct(0.99),
        pct(1.0),
        max_behind.as_secs_f64() * 1000.0
    );
}
