//! Hostile plugins are contained: an infinite loop, a memory bomb, a trap and
//! an oversized result each stop within the deadline, are counted against
//! the plugin, and leave the daemon and the other plugins working.

mod common;

use common::chunk;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use wirelens::protocols::bindings::{Direction, Role};
use wirelens::protocols::{
    ConnEvent, LoadedPlugin, Parsed, ProtocolWorker, Registry, SandboxLimits, Source, WorkerConfig,
};

struct Harness {
    registry: std::sync::Arc<Registry>,
    worker: ProtocolWorker,
    next_conn: u64,
}

impl Harness {
    fn new(limits: SandboxLimits) -> Self {
        let registry = common::registry_with_builtins(limits);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("testproto.wasm");
        std::fs::write(&path, common::build_plugin("tests/plugins/testproto", &[])).unwrap();
        registry.load_file(&path).unwrap();
        let worker = ProtocolWorker::new(registry.clone(), WorkerConfig::default());
        Self { registry, worker, next_conn: 1 }
    }

    /// One request/response exchange on a new connection.
    fn exchange(&mut self, request: &[u8], response: &[u8]) -> (Vec<Parsed>, Vec<ConnEvent>, Duration) {
        let conn = self.next_conn;
        self.next_conn += 1;
        let start = Instant::now();
        self.worker.push(chunk(conn, Direction::Egress, request));
        self.worker.push(chunk(conn, Direction::Ingress, response));
        self.worker.close(conn);
        let (mut parsed, mut events) = (Vec::new(), Vec::new());
        self.worker.poll(&mut parsed, &mut events);
        (parsed, events, start.elapsed())
    }

    /// HTTP keeps answering correctly.
    fn http_still_works(&mut self) {
        let (parsed, _, _) =
            self.exchange(b"GET /ok HTTP/1.1\r\nHost: h\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(parsed.len(), 2, "http request and response: {parsed:?}");
        assert_eq!(parsed[0].field("url").unwrap().to_string(), "/ok");
        assert_eq!(parsed[1].field("resp_code").unwrap().to_string(), "200");
    }

    fn testproto(&self) -> std::sync::Arc<wirelens::protocols::LoadedPlugin> {
        self.registry.catalog().get("testproto").unwrap().clone()
    }
}

#[test]
fn hostile_calls_are_contained_and_counted() {
    let limits = SandboxLimits { failure_threshold: 100, max_output_bytes: 1 << 20, ..SandboxLimits::default() };
    let deadline = limits.deadline;
    let mut h = Harness::new(limits);
    h.http_still_works();

    let hostile: [(&[u8], &str); 4] = [
        (b"REQ LOOP\n", "deadline exceeded"),
        (b"REQ BOMB\n", "memory limit of 67108864 bytes exceeded"),
        (b"REQ TRAP\n", "trap:"),
        (b"REQ HUGE\n", "bytes of output in one call (limit 1048576)"),
    ];
    for (request, expected) in hostile {
        let (parsed, events, took) = h.exchange(request, b"RES ok\n");
        let what = String::from_utf8_lossy(request);
        eprintln!("{}: contained in {took:?} (deadline {deadline:?})", what.trim());
        assert!(parsed.is_empty(), "{what}: nothing parsed: {parsed:?}");
        let dropped = events.iter().find_map(|e| match e {
            ConnEvent::Dropped { reason, .. } => Some(reason.clone()),
            _ => None,
        });
        let reason = dropped.unwrap_or_else(|| panic!("{what}: connection dropped to L4, events: {events:?}"));
        assert!(reason.contains(expected), "{what}: reason `{reason}` names `{expected}`");
        assert!(reason.contains("testproto@1.0.0"), "reason names plugin and version: {reason}");
        // Stopped promptly: a loop is interrupted at the deadline, not left running.
        assert!(took < Duration::from_secs(2), "{what} took {took:?}");
        // The other plugin, and the hostile one on a fresh instance, still work.
        h.http_still_works();
        let (parsed, events, _) = h.exchange(b"REQ hello\n", b"RES world\n");
        assert_eq!(parsed.len(), 2, "testproto recovers on a new instance: {events:?}");
        assert_eq!(parsed[0].field("text").unwrap().to_string(), "hello");
    }
    let stats = &h.testproto().stats;
    assert_eq!(stats.timeouts.load(Ordering::Relaxed), 1);
    assert_eq!(stats.memory_limits.load(Ordering::Relaxed), 1);
    assert_eq!(stats.traps.load(Ordering::Relaxed), 1);
    assert_eq!(stats.bad_outputs.load(Ordering::Relaxed), 1);
    assert_eq!(stats.quarantines.load(Ordering::Relaxed), 0);
    assert_eq!(h.worker.stats().plugin_failures, 4);
}

#[test]
fn the_time_inside_plugin_calls_is_counted() {
    // What the health record's `l7_plugin_cpu_ns` shows: the daemon's CPU
    // less this is its own path. (The deadline is CPU time too.)
    let limits = SandboxLimits::default();
    let deadline = limits.deadline;
    let mut h = Harness::new(limits);
    let before = h.worker.stats().plugin_cpu_ns;
    let (_, events, took) = h.exchange(b"REQ LOOP\n", b"RES ok\n");
    assert!(format!("{events:?}").contains("deadline exceeded"), "{events:?}");
    let looped = Duration::from_nanos(h.worker.stats().plugin_cpu_ns - before);
    // The loop ran inside the call until it was stopped, and the call is
    // all of it that was counted. (The ticker that stops it reads the
    // thread's clock on its own: a CI run counted 9.994 ms of 10, so a
    // millisecond of slack below the deadline.)
    assert!(
        looped + Duration::from_millis(1) >= deadline && looped <= took,
        "counted {looped:?}, deadline {deadline:?}, exchange {took:?}"
    );
    let before = h.worker.stats().plugin_cpu_ns;
    let (parsed, _, took) = h.exchange(b"REQ hello\n", b"RES world\n");
    assert_eq!(parsed.len(), 2);
    let parsed_in = Duration::from_nanos(h.worker.stats().plugin_cpu_ns - before);
    assert!(parsed_in > Duration::ZERO && parsed_in <= took, "counted {parsed_in:?}, exchange {took:?}");
}

#[test]
fn a_loop_after_an_idle_spell_is_still_stopped() {
    // The epoch ticker sleeps while no call runs; a call must wake it, or a
    // plugin that loops would never be interrupted.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // (Building the test plugin may take a while on a cold build: only
        // the looping call is timed.)
        let mut h = Harness::new(SandboxLimits::default());
        h.http_still_works();
        let _ = ready_tx.send(());
        std::thread::sleep(Duration::from_millis(50)); // long enough for the ticker to sleep
        let (parsed, events, took) = h.exchange(b"REQ LOOP\n", b"RES ok\n");
        let _ = done_tx.send((parsed.len(), format!("{events:?}"), took));
    });
    ready_rx.recv_timeout(Duration::from_secs(600)).expect("the harness was built");
    let (parsed, events, took) =
        done_rx.recv_timeout(Duration::from_secs(20)).expect("the looping call was never interrupted");
    assert_eq!(parsed, 0);
    assert!(events.contains("deadline exceeded"), "{events}");
    assert!(took < Duration::from_secs(2), "interrupted after {took:?}");
}

#[test]
fn repeated_failures_quarantine_with_backoff() {
    let limits = SandboxLimits {
        failure_threshold: 3,
        failure_window: Duration::from_millis(800),
        quarantine_base: Duration::from_millis(300),
        ..SandboxLimits::default()
    };
    let mut h = Harness::new(limits);
    for _ in 0..3 {
        h.exchange(b"REQ TRAP\n", b"RES x\n");
    }
    let plugin = h.testproto();
    assert_eq!(plugin.stats.quarantines.load(Ordering::Relaxed), 1);
    let until = plugin.quarantined_until().expect("quarantined");
    let span = until - Instant::now();
    assert!(span <= Duration::from_millis(300) && span > Duration::from_millis(100), "first quarantine {span:?}");
    // While quarantined, connections are not given to it (layer 4 only).
    let (parsed, events, _) = h.exchange(b"REQ hello\n", b"RES world\n");
    assert!(parsed.is_empty(), "{parsed:?}");
    assert!(!events.iter().any(|e| matches!(e, ConnEvent::Detected { .. })), "{events:?}");
    h.http_still_works();
    // After the quarantine it is tried again...
    std::thread::sleep(until - Instant::now() + Duration::from_millis(20));
    let (parsed, _, _) = h.exchange(b"REQ hello\n", b"RES world\n");
    assert_eq!(parsed.len(), 2);
    // ... on probation: successes (every new connection's detect is one)
    // do not end it, and a single failure quarantines again, twice as long.
    h.exchange(b"REQ TRAP\n", b"RES x\n");
    assert_eq!(plugin.stats.quarantines.load(Ordering::Relaxed), 2);
    let until = plugin.quarantined_until().unwrap();
    let span = until - Instant::now();
    assert!(span > Duration::from_millis(400) && span <= Duration::from_millis(600), "second quarantine {span:?}");
    // Clean through the probation (one failure window after the quarantine):
    // a failure no longer quarantines, and the next quarantine is short again.
    std::thread::sleep(until - Instant::now() + Duration::from_millis(850));
    h.exchange(b"REQ TRAP\n", b"RES x\n");
    assert_eq!(plugin.stats.quarantines.load(Ordering::Relaxed), 2, "past probation, one failure is one failure");
    h.exchange(b"REQ TRAP\n", b"RES x\n");
    h.exchange(b"REQ TRAP\n", b"RES x\n");
    assert_eq!(plugin.stats.quarantines.load(Ordering::Relaxed), 3);
    let span = plugin.quarantined_until().unwrap() - Instant::now();
    assert!(span <= Duration::from_millis(300) && span > Duration::from_millis(100), "strikes start afresh: {span:?}");
}

/// The deadline is the calling thread's CPU time, not wall-clock time: on a
/// CPU shared with busy threads, a call that needs a third of its deadline
/// in CPU takes several deadlines of wall-clock time and still completes,
/// while a call that needs more CPU than its deadline is stopped.
#[test]
fn the_deadline_is_cpu_time_not_wall_clock_time() {
    // The CPU time SPIN takes (the plugin runs on the calling thread; CPU
    // time, so other load on the machine does not stretch it).
    let thread_cpu = || {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: a valid timespec for the calling thread's CPU clock.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    };
    let mut h = Harness::new(SandboxLimits { deadline: Duration::from_secs(5), ..SandboxLimits::default() });
    let mut alone = Duration::MAX;
    for _ in 0..3 {
        let before = thread_cpu();
        let (parsed, _, _) = h.exchange(b"REQ SPIN20\n", b"RES x\n");
        assert_eq!(parsed.len(), 2, "SPIN answers");
        alone = alone.min(thread_cpu() - before);
    }
    // Margins wide enough for this VM, whose speed swings by 2x within
    // minutes (thread CPU time stretches with it): a cheap call has 4x its
    // CPU, an expensive one needs 5x the deadline.
    let deadline = alone * 4;
    let mut h = Harness::new(SandboxLimits { deadline, failure_threshold: 100, ..SandboxLimits::default() });
    // This thread and six busy ones share CPU 0: each runs ~1/7 of the time.
    let cpu0 = || {
        // SAFETY: a zeroed cpu_set_t with CPU 0 set, for the calling thread.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            assert_eq!(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set), 0);
        }
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy: Vec<_> = (0..6)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                cpu0();
                let start = Instant::now();
                while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(30) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    cpu0();
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let (parsed, _, took) = h.exchange(b"REQ SPIN20\n", b"RES x\n");
        assert_eq!(parsed.len(), 2, "a starved but cheap call completes (deadline {deadline:?}, took {took:?})");
        slowest = slowest.max(took);
    }
    // A call needing ~5x its deadline in CPU is still stopped.
    let (parsed, _, _) = h.exchange(b"REQ SPIN400\n", b"RES x\n");
    stop.store(true, Ordering::Relaxed);
    for b in busy {
        b.join().unwrap();
    }
    assert!(slowest > deadline, "the CPU was shared: slowest call {slowest:?}, deadline {deadline:?}");
    assert!(parsed.is_empty(), "an expensive call is stopped: {parsed:?}");
    assert_eq!(h.testproto().stats.timeouts.load(Ordering::Relaxed), 1);
}

#[test]
fn plugin_logs_are_rate_limited() {
    let runtime = common::runtime(SandboxLimits::default());
    let plugin = wirelens::protocols::LoadedPlugin::load(
        &runtime,
        &common::build_plugin("tests/plugins/testproto", &[]),
        Source::Builtin,
        &Default::default(),
    )
    .unwrap();
    let mut sandbox = wirelens::protocols::Sandbox::instantiate(&runtime, plugin.pre(), "t".into()).unwrap();
    sandbox.set_field_count(1);
    let (h, d) = common::host_chunks(&[wirelens_sdk::testing::TestChunk::egress(1, "REQ LOGS\n")]);
    let batch = sandbox.feed(&h, &d).unwrap();
    assert_eq!(batch.conn.len(), 1);
    assert_eq!(sandbox.logs_suppressed(), 10_000 - u64::from(SandboxLimits::default().log_lines_per_second));
}

#[test]
fn plugins_have_no_capabilities() {
    // A component importing WASI (what a wasm32-wasip2 build needs) is refused
    // before it runs: the sandbox offers nothing but `host.log`.
    let wat = r#"(component
        (import "wasi:cli/environment@0.2.0" (instance))
        (core module $m (func (export "f") (result i32) i32.const 0))
        (core instance $i (instantiate $m))
        (func $f (result u8) (canon lift (core func $i "f")))
        (instance $p (export "info" (func $f)))
        (export "wirelens:protocol/parser@1.0.0" (instance $p)))"#;
    let runtime = common::runtime(SandboxLimits::default());
    let err = wirelens::protocols::LoadedPlugin::load(
        &runtime,
        &wat::parse_str(wat).unwrap(),
        Source::Builtin,
        &Default::default(),
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("imports `wasi:cli/environment@0.2.0`") && msg.contains("no WASI"), "{msg}");
}

#[test]
fn another_major_version_is_refused() {
    let wat = r#"(component
        (core module $m (func (export "f") (result i32) i32.const 0))
        (core instance $i (instantiate $m))
        (func $f (result u8) (canon lift (core func $i "f")))
        (instance $p (export "info" (func $f)))
        (export "wirelens:protocol/parser@2.0.0" (instance $p)))"#;
    let runtime = common::runtime(SandboxLimits::default());
    let err = wirelens::protocols::LoadedPlugin::load(
        &runtime,
        &wat::parse_str(wat).unwrap(),
        Source::Builtin,
        &Default::default(),
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("built against wirelens:protocol@2.0.0") && msg.contains("speaks wirelens:protocol@1.2.0"),
        "{msg}"
    );
}

#[test]
fn host_and_sdk_agree_on_the_wire_layout() {
    use wirelens::protocols::wire as h;
    use wirelens_sdk::wire as s;
    assert_eq!(
        (h::CHUNK_INGRESS, h::CHUNK_ROLE_SHIFT, h::MSG_KIND_MASK, h::MSG_INGRESS, h::MSG_SUCCESS, h::MSG_HAS_PAIR_ID),
        (s::CHUNK_INGRESS, s::CHUNK_ROLE_SHIFT, s::MSG_KIND_MASK, s::MSG_INGRESS, s::MSG_SUCCESS, s::MSG_HAS_PAIR_ID)
    );
    assert_eq!((h::CHUNK_DATAGRAM, h::CHUNK_TICK, h::MSG_UNSEEN), (s::CHUNK_DATAGRAM, s::CHUNK_TICK, s::MSG_UNSEEN));
    for (hd, sd) in
        [(Direction::Egress, wirelens_sdk::Direction::Egress), (Direction::Ingress, wirelens_sdk::Direction::Ingress)]
    {
        for (hr, sr) in [
            (Role::Client, wirelens_sdk::Role::Client),
            (Role::Server, wirelens_sdk::Role::Server),
            (Role::Unknown, wirelens_sdk::Role::Unknown),
        ] {
            assert_eq!(h::chunk_flags(hd, hr), s::chunk_flags(sd, sr));
        }
    }
    for kind in
        [wirelens_sdk::MessageKind::Request, wirelens_sdk::MessageKind::Response, wirelens_sdk::MessageKind::Oneway]
    {
        let host_kind = h::kind(kind as u8).unwrap();
        assert_eq!(format!("{host_kind:?}"), format!("{kind:?}"));
    }
}

/// A plugin built against contract 1.0 (before 1.1 added the call field,
/// skips, datagrams and clock ticks) still loads and parses: its calls go
/// through the 1.0 bindings and its results are converted.
#[test]
fn a_plugin_of_contract_1_0_still_loads_and_parses() {
    let (plugin, lines) = feed_fixture(
        "http-wit-1.0.wasm",
        &[
            wirelens_sdk::testing::TestChunk::egress(1, "GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\n"),
            wirelens_sdk::testing::TestChunk::ingress(2, "HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno\n"),
        ],
    );
    assert_eq!(plugin.meta.wit_version, "1.0.0");
    assert_eq!(plugin.meta.call_field, None, "1.0 has no call field");
    assert!(!plugin.pre().takes_ticks());
    assert_eq!(
        lines,
        [
            "1 req out 1-1 size=32 ok version=1 method=GET url=/a host=h",
            "1 resp in 2-2 size=48 fail version=1 resp_code=404"
        ]
    );
}

/// A plugin built against contract 1.1 (before 1.2 added capture-bytes)
/// still loads and parses, with its call field and the capture size.
#[test]
fn a_plugin_of_contract_1_1_still_loads_and_parses() {
    let (plugin, lines) = feed_fixture(
        "http-wit-1.1.wasm",
        &[
            wirelens_sdk::testing::TestChunk::egress(1, "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"),
            wirelens_sdk::testing::TestChunk::ingress(2, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        ],
    );
    assert_eq!(plugin.meta.wit_version, "1.1.0");
    assert_eq!(plugin.meta.call_field.as_deref(), Some("method"));
    assert_eq!(plugin.meta.capture_bytes, None, "1.1 has no capture budget: the capture size");
    assert!(plugin.pre().takes_ticks());
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("1 req out 1-1 size=28 ok") && lines[0].contains("method=GET url=/a"), "{lines:?}");
    assert!(lines[1].starts_with("1 resp in 2-2 size=40 ok") && lines[1].contains("resp_code=200"), "{lines:?}");
}

/// A plugin built against an older contract (`tests/fixtures/plugins/`),
/// loaded and fed `chunks`: the plugin and its messages, rendered.
fn feed_fixture(
    file: &str,
    chunks: &[wirelens_sdk::testing::TestChunk],
) -> (std::sync::Arc<LoadedPlugin>, Vec<String>) {
    let bytes = std::fs::read(common::root().join("tests/fixtures/plugins").join(file)).unwrap();
    let runtime = common::runtime(SandboxLimits::default());
    let plugin = LoadedPlugin::load(&runtime, &bytes, Source::File(file.into()), &Default::default()).unwrap();
    let mut sandbox = wirelens::protocols::Sandbox::instantiate(&runtime, plugin.pre(), file.into()).unwrap();
    sandbox.set_field_count(plugin.meta.field_names.len());
    let (h, d) = common::host_chunks(chunks);
    let names: Vec<String> = plugin.meta.field_names.iter().map(|s| s.to_string()).collect();
    let lines = wirelens_sdk::testing::render(&common::sdk_batch(sandbox.feed(&h, &d).unwrap()), &names);
    drop(sandbox);
    (plugin, lines)
}

/// A server that reads a DNS-over-TCP length prefix a byte at a time (as
/// dnsmasq does), then the message: the worker judges the connection's
/// first bytes as they add up, claims it for DNS, and the plugin parses the
/// bytes it held while detecting, so every query counts with its real size.
#[test]
fn detection_sees_first_bytes_across_reads_of_any_size() {
    let registry = common::registry_with_builtins(SandboxLimits::default());
    let mut worker = ProtocolWorker::new(registry, WorkerConfig::default());
    let query = wirelens_plugin_dns::cases::tcp(&wirelens_plugin_dns::cases::message(7, false, 0, "a.x.test", 1, 0));
    let answer = wirelens_plugin_dns::cases::tcp(&wirelens_plugin_dns::cases::message(7, true, 0, "a.x.test", 1, 1));
    let mut ts = 1;
    for _ in 0..3 {
        for piece in [&query[..1], &query[1..2], &query[2..]] {
            worker.push(wirelens::protocols::ChunkIn {
                role: Role::Server,
                timestamp_ns: ts,
                ..chunk(5, Direction::Ingress, piece)
            });
            ts += 1;
        }
        worker.push(wirelens::protocols::ChunkIn {
            role: Role::Server,
            timestamp_ns: ts,
            ..chunk(5, Direction::Egress, &answer)
        });
        ts += 1;
    }
    let (mut parsed, mut events) = (Vec::new(), Vec::new());
    worker.poll(&mut parsed, &mut events);
    assert!(
        events.iter().any(|e| matches!(e, ConnEvent::Detected { protocol, .. } if &**protocol == "dns")),
        "{events:?}"
    );
    let requests: Vec<&Parsed> =
        parsed.iter().filter(|p| p.kind == wirelens::protocols::MessageKind::Request).collect();
    assert_eq!(requests.len(), 3, "{parsed:#?}");
    assert!(requests.iter().all(|r| r.size == query.len() as u64 && r.field("query_record") == Some("a.x.test")));
    assert_eq!(parsed.len(), 6);
}
