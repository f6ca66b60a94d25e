//! Plugins in C: the C SDK (`sdk/c`) and the NATS plugin written with it
//! (`plugins/nats-c`), built by `wirelens plugins build` (clang for wasm32,
//! wasm-ld, wit-component) and run in the sandbox.
//!
//! The C NATS plugin is a second implementation of `plugins/nats`: it is
//! fed the Rust plugin's own cases, its recordings from real servers,
//! random cuttings of both (one byte at a time too), the server's side of
//! each, and mutated inputs, and must give the lines the Rust plugin gives
//! natively (errors compare by connection only: the reasons' wording
//! differs). The guide's MiniKV template (`plugins new --lang c`) is built
//! and hot-loaded from a plugin directory. Needs clang and lld
//! (scripts/setup.sh installs them).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use wirelens::protocols::reload::PluginDirWatcher;
use wirelens::protocols::{LoadedPlugin, Registry, Runtime, SandboxLimits, Source};
use wirelens_plugin_nats::Nats;
use wirelens_sdk::testing::{self, Case, RingLoss, Rng, TestChunk};
use wirelens_sdk::{Direction, Role};

/// `wirelens ARGS`; its stdout, or the test fails with its stderr.
fn wirelens(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_wirelens")).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "wirelens {args:?}: {}\n(C plugins need clang and lld: scripts/setup.sh installs them)",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The C NATS plugin's component, built once for this test binary.
fn c_nats_component() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let out = common::target_dir().join("test-plugins").join("nats-c");
        let path = common::build_c_plugin(&common::root().join("plugins/nats-c"), &out);
        assert!(path.ends_with("nats-c.wasm"), "{}", path.display());
        path
    })
}

/// The C NATS plugin loaded in a runtime with these limits.
fn load_c_nats(limits: SandboxLimits) -> (Arc<Runtime>, Arc<LoadedPlugin>) {
    let path = c_nats_component();
    let runtime = common::runtime(limits);
    let bytes = std::fs::read(path).unwrap();
    let plugin = LoadedPlugin::load(&runtime, &bytes, Source::File(path.to_path_buf()), &Default::default())
        .unwrap_or_else(|e| panic!("loading the C plugin: {e:#}"));
    (runtime, plugin)
}

/// The C NATS plugin under the default limits, and its runtime.
fn c_nats() -> &'static (Arc<Runtime>, Arc<LoadedPlugin>) {
    static PLUGIN: OnceLock<(Arc<Runtime>, Arc<LoadedPlugin>)> = OnceLock::new();
    PLUGIN.get_or_init(|| load_c_nats(SandboxLimits::default()))
}

/// An error line's reason is the plugin's own wording: keep the connection.
fn errors_by_conn(lines: Vec<String>) -> Vec<String> {
    lines
        .into_iter()
        .map(|l| match l.split_once(" error: ") {
            Some((conn, _)) => format!("{conn} error"),
            None => l,
        })
        .collect()
}

/// The C plugin's lines for `chunks` against the Rust plugin's, natively.
fn same_as_rust(what: &str, chunks: &[TestChunk], close: &[u64]) {
    let (runtime, plugin) = c_nats();
    let c = errors_by_conn(common::sandbox_lines(plugin, runtime, chunks, close));
    let rust = errors_by_conn(testing::run::<Nats>(chunks, close));
    if c != rust {
        let summary: Vec<String> = chunks.iter().map(TestChunk::summary).collect();
        panic!("{what}: the C plugin differs from the Rust one\n C: {c:#?}\n Rust: {rust:#?}\nchunks:\n{}", summary.join("\n"));
    }
}

#[test]
fn the_c_plugin_describes_itself_like_the_rust_one() {
    let (_, plugin) = c_nats();
    let m = &plugin.meta;
    assert_eq!(&*m.name, "nats");
    assert_eq!(m.field_names.iter().map(|s| s.to_string()).collect::<Vec<_>>(), ["op", "subject"]);
    assert_eq!(m.default_ports, [4222]);
    assert_eq!(m.wit_version, wirelens_sdk::WIT_VERSION);
}

#[test]
fn the_nats_cases_give_the_same_messages_in_c() {
    let (runtime, plugin) = c_nats();
    let cases = wirelens_plugin_nats::cases::all();
    assert!(cases.len() >= 7);
    common::run_cases(plugin, runtime, &cases);
    let servers: Vec<Case> = cases.iter().map(testing::as_server).collect();
    for case in &servers {
        same_as_rust(&format!("{} (server side)", case.name), &case.chunks, &case.close);
    }
}

#[test]
fn random_cuttings_and_one_byte_reads_give_the_same_messages_in_c() {
    let cases = wirelens_plugin_nats::cases::all();
    let mut rng = Rng::new(0xc0de);
    for case in &cases {
        same_as_rust(&format!("{} one byte at a time", case.name), &testing::one_byte_reads(&case.chunks), &case.close);
        for round in 0..40 {
            let chunks = testing::rechunk(&case.chunks, &mut rng);
            same_as_rust(&format!("{} cut at random, round {round}", case.name), &chunks, &case.close);
        }
    }
}

#[test]
fn recordings_from_real_servers_give_the_same_messages_in_c() {
    let dir = common::root().join("tests/fixtures/nats");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "chunks") {
            continue;
        }
        let chunks = testing::load_fixture(&path);
        let mut conns: Vec<u64> = chunks.iter().map(|c| c.conn).collect();
        conns.sort_unstable();
        conns.dedup();
        same_as_rust(&path.display().to_string(), &chunks, &conns);
        same_as_rust(&format!("{}, one byte at a time", path.display()), &testing::one_byte_reads(&chunks), &conns);
        checked += 1;
    }
    assert!(checked >= 1, "no recordings in {}", dir.display());
}

/// Lost bytes: a PING whose bytes never came, cut payloads and lines, and
/// a capture that copied 16 bytes of each call: the C engine keeps calls
/// whole as the Rust one does.
#[test]
fn lost_and_uncopied_bytes_give_the_same_messages_in_c() {
    let lost_ping = vec![
        TestChunk::egress(1, "PING\r\n"),
        TestChunk::egress(2, b"").truncated(6),
        TestChunk::egress(3, "PING\r\n"),
        TestChunk::ingress(4, "PONG\r\nPONG\r\nPONG\r\n"),
    ];
    same_as_rust("a lost PING", &lost_ping, &[]);
    // Holes in the records of both directions, or of requests alone, found
    // at each direction's next record (the fence in sdk/src/stream.rs).
    for role in [Role::Client, Role::Server] {
        let (rq, rs) = if role == Role::Client {
            (Direction::Egress, Direction::Ingress)
        } else {
            (Direction::Ingress, Direction::Egress)
        };
        let at = |d: Direction, ts: u64, bytes: &[u8]| TestChunk::egress(ts, bytes).direction(d).role(role);
        let gap = |d: Direction, ts: u64, n: u64| at(d, ts, b"").truncated(n);
        let both = vec![
            at(rq, 1, b"PING\r\n"),
            at(rs, 2, b"PONG\r\n"),
            at(rq, 3, b"PING\r\n"),
            gap(rq, 10, 60),
            at(rq, 10, b"PING\r\nPING\r\n"),
            gap(rs, 11, 66),
            at(rs, 11, b"PONG\r\nPONG\r\n"),
            gap(rs, 13, 6),
            at(rs, 13, b"PONG\r\n"),
            at(rq, 14, b"PING\r\n"),
        ];
        same_as_rust(&format!("{role:?}: holes in both directions"), &both, &[1]);
        let answered_before = vec![
            at(rq, 1, b"PING\r\n"),
            at(rs, 2, b"PONG\r\n"),
            at(rs, 4, b"PONG\r\n"),
            gap(rq, 5, 12),
            at(rq, 5, b"PING\r\n"),
            at(rs, 6, b"PONG\r\nPONG\r\n"),
        ];
        same_as_rust(&format!("{role:?}: a hole of requests, answered before"), &answered_before, &[1]);
    }
    for case in wirelens_plugin_nats::cases::all() {
        let cut: Vec<TestChunk> = case
            .chunks
            .iter()
            .map(|c| {
                let real = c.real_len.unwrap_or(c.bytes.len() as u64);
                let mut short = c.clone();
                short.bytes.truncate(16);
                short.truncated(real)
            })
            .collect();
        same_as_rust(&format!("{}, 16 bytes copied per call", case.name), &cut, &[1]);
    }
}

/// Ring-buffer overflows with ragged edges (before and after each window
/// only the requests' records are lost, or only the responses', or some of
/// either), for a client that waits for each response and for one that
/// keeps three in flight, at both ends: the C engine pairs across the holes
/// as the Rust one does (a fence moved to each new hole; a response after a
/// hole on a connection seen answering one request at a time answers the
/// last request before it).
#[test]
fn ragged_overflows_give_the_same_messages_in_c() {
    let mut rng = Rng::new(41);
    for round in 0..60u64 {
        let role = if round % 2 == 0 { Role::Client } else { Role::Server };
        let (rq, rs) = match role {
            Role::Server => (Direction::Ingress, Direction::Egress),
            _ => (Direction::Egress, Direction::Ingress),
        };
        let in_flight = [1u64, 1, 3][(round % 3) as usize];
        let mut records: Vec<(u64, Direction, &[u8])> = (0..150u64)
            .flat_map(|i| {
                let at = 1000 + i * 100;
                [(at, rq, b"PING\r\n".as_slice()), (at + in_flight * 100 - 50, rs, b"PONG\r\n".as_slice())]
            })
            .collect();
        records.sort_by_key(|r| r.0);
        let mut loss = RingLoss { windows: vec![], edges: vec![], seed: round };
        for _ in 0..1 + rng.below(3) {
            let from = 1800 + rng.below(12_000) as u64;
            loss.edges.push((rng.below(400) as u64, rng.below(400) as u64, rng.below(4)));
            loss.windows.push((from, from + 300 + rng.below(1500) as u64));
        }
        let chunks = loss.chunks(&records, role, rq);
        same_as_rust(&format!("round {round}: {loss:?}"), &chunks, &[1]);
    }
}

/// Subjects that are not all ASCII: valid characters kept, bad bytes
/// replaced (U+FFFD) exactly as the Rust SDK replaces them.
#[test]
fn non_ascii_subjects_are_written_as_in_rust() {
    let subjects: [&[u8]; 8] = [
        b"caf\xc3\xa9",
        b"\xf0\x9f\x98\x80.smile",
        b"bad\xffbyte",
        b"cut\xe2\x82",
        b"\xe2\x82x",
        b"overlong\xc0\xaf",
        b"surrogate\xed\xa0\x80",
        b"\xf4\x90\x80\x80high",
    ];
    let mut chunks = Vec::new();
    for (i, subject) in subjects.iter().enumerate() {
        let mut line = b"PUB ".to_vec();
        line.extend_from_slice(subject);
        line.extend_from_slice(b" 1\r\nx\r\n");
        chunks.push(TestChunk::egress(i as u64 + 1, line));
    }
    let rust = testing::run::<Nats>(&chunks, &[1]);
    assert!(rust.iter().any(|l| l.contains("subject=café")) && rust.iter().any(|l| l.contains('\u{fffd}')), "{rust:?}");
    same_as_rust("non-ASCII subjects", &chunks, &[1]);
}

/// Mutated inputs (flipped, inserted, cut and random bytes, changed
/// directions, roles and lengths): no trap in the C code, and the same
/// lines as the Rust plugin.
#[test]
fn mutated_inputs_give_the_same_lines_in_c_and_never_trap() {
    let inputs = testing::fuzz_inputs(&wirelens_plugin_nats::cases::all(), 3000, 29);
    for (i, chunks) in inputs.iter().enumerate() {
        same_as_rust(&format!("mutated input {i}"), chunks, &[1]);
    }
}

/// 100,000 connections opened, used and closed in one sandbox capped at
/// 8 MiB: the C engine and allocator give the memory of a connection
/// (state, a buffered line, fields) back for reuse, and every call is
/// counted. A leak of 100 bytes per connection would pass the cap, as
/// would one of 100 bytes per call.
#[test]
fn a_hundred_thousand_connections_fit_in_eight_mib() {
    let (runtime, plugin) = load_c_nats(SandboxLimits { memory_bytes: 8 << 20, ..SandboxLimits::default() });
    let names: Vec<String> = plugin.meta.field_names.iter().map(|s| s.to_string()).collect();
    let mut sandbox = common::new_sandbox(&plugin, &runtime);
    let (mut requests, mut responses) = (0, 0);
    let payload = "x".repeat(600);
    for group in 0..1000u64 {
        let conns: Vec<u64> = (group * 100..group * 100 + 100).collect();
        let mut chunks = Vec::new();
        for &conn in &conns {
            // The line is cut inside its length: its head waits in a buffer.
            chunks.push(TestChunk::egress(1, "CONNECT {}\r\nPUB a.b 6").on(conn));
            chunks.push(TestChunk::egress(2, format!("00\r\n{payload}\r\nPING\r\n")).on(conn));
            chunks.push(TestChunk::ingress(3, "PONG\r\n").on(conn));
        }
        let (h, d) = common::host_chunks(&chunks);
        let batch = sandbox.feed(&h, &d).unwrap_or_else(|e| panic!("group {group}: {e:#}"));
        let mut lines = testing::render(&common::sdk_batch(batch), &names);
        lines.extend(testing::render(&common::sdk_batch(sandbox.close(&conns).unwrap()), &names));
        requests += lines.iter().filter(|l| l.contains(" req ")).count();
        responses += lines.iter().filter(|l| l.contains(" resp ") && l.contains(" ok ")).count();
        assert!(!lines.iter().any(|l| l.contains("error")), "{lines:?}");
    }
    assert_eq!((requests, responses), (100_000, 100_000));
    // 120,000 calls of one byte each: most give nothing back, and must
    // keep nothing either.
    let mut pings = 0;
    for (i, byte) in b"PING\r\n".iter().cycle().take(120_000).enumerate() {
        let (h, d) = common::host_chunks(&[TestChunk::egress(i as u64, [*byte]).on(7)]);
        let batch = sandbox.feed(&h, &d).unwrap_or_else(|e| panic!("byte {i}: {e:#}"));
        pings += batch.conn.len();
    }
    assert_eq!(pings, 20_000);
}

/// From nothing to a hot-loaded C plugin, as sdk/README-c.md tells it:
/// `plugins new --lang c`, `plugins build` into a watched plugin
/// directory, `plugins check`; the MiniKV cases of the Rust example give
/// the same lines through it.
#[test]
fn the_guides_template_builds_hot_loads_and_parses_minikv() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("minikv");
    let printed = wirelens(&["plugins".as_ref(), "new".as_ref(), project.as_os_str(), "--lang".as_ref(), "c".as_ref()]);
    assert!(printed.contains("minikv.c"), "{printed}");

    let plugin_dir = tmp.path().join("plugins");
    std::fs::create_dir(&plugin_dir).unwrap();
    let registry = Registry::new(common::runtime(SandboxLimits::default()), Default::default());
    let _watcher = PluginDirWatcher::start(registry.clone(), &plugin_dir).unwrap();
    let component = common::build_c_plugin(&project, &plugin_dir);
    assert_eq!(component, plugin_dir.join("minikv.wasm"));
    let live = common::wait_for(Duration::from_secs(5), || registry.catalog().get("minikv").is_some());
    assert!(live.is_some(), "the C plugin goes live from the plugin directory: {:?}", registry.catalog().entries);

    let checked = wirelens(&["plugins".as_ref(), "check".as_ref(), component.as_os_str()]);
    assert!(checked.contains("minikv") && checked.contains("fields: command, key"), "{checked}");

    let plugin = registry.catalog().get("minikv").unwrap().clone();
    for case in wirelens_plugin_minikv::cases::all() {
        let c = errors_by_conn(common::sandbox_lines(&plugin, registry.runtime(), &case.chunks, &case.close));
        assert_eq!(c, errors_by_conn(case.expect.clone()), "case `{}`", case.name);
    }
}
