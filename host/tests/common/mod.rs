//! Helpers shared by the daemon's integration tests.
#![allow(dead_code)]

pub mod cri;
pub mod daemon;
pub mod prometheus;
pub mod servers;
pub mod tshark;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use wirelens::protocols::bindings as host;
use wirelens::protocols::{Registry, Runtime, SandboxLimits};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The cargo target dir this test runs from (`<target>/<profile>/deps/test-bin`).
pub fn target_dir() -> PathBuf {
    std::env::current_exe().unwrap().ancestors().nth(3).unwrap().to_path_buf()
}

static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// Build a plugin crate (relative to the workspace root) into a component,
/// with `features`; returns its bytes. Built in the same wasm target dir as
/// the built-in plugins, so only the crate itself compiles.
pub fn build_plugin(crate_rel: &str, features: &[&str]) -> Vec<u8> {
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let out = target_dir().join("test-plugins").join(format!("{}-{}", crate_rel.replace('/', "_"), features.join("_")));
    let mut build = wirelens_plugin_builder::Build::new(root().join(crate_rel), &out);
    build.target_dir = target_dir().join("wasm-plugins");
    build.features = features.iter().map(|s| s.to_string()).collect();
    let path = build.run().unwrap_or_else(|e| panic!("building {crate_rel}: {e:#}"));
    std::fs::read(path).unwrap()
}

/// A runtime with these limits and no artifact cache.
pub fn runtime(limits: SandboxLimits) -> Arc<Runtime> {
    Runtime::new(limits, None).unwrap()
}

/// A registry with the built-in plugins loaded.
pub fn registry_with_builtins(limits: SandboxLimits) -> Arc<Registry> {
    let registry = Registry::new(runtime(limits), Default::default());
    registry.load_builtins();
    registry
}

/// The host's chunk columns from SDK test chunks.
pub fn host_chunks(chunks: &[wirelens_sdk::testing::TestChunk]) -> (host::Chunks, Vec<u8>) {
    let (c, data) = wirelens_sdk::testing::to_wire(chunks);
    let chunks = host::Chunks {
        conn: c.conn,
        timestamp_ns: c.timestamp_ns,
        captured: c.captured,
        real_len: c.real_len,
        flags: c.flags,
    };
    (chunks, data)
}

/// The SDK's form of a batch the host received, so both paths render alike.
pub fn sdk_batch(b: host::Batch) -> wirelens_sdk::Batch {
    wirelens_sdk::Batch {
        conn: b.conn,
        start_ns: b.start_ns,
        end_ns: b.end_ns,
        size: b.size,
        pair_id: b.pair_id,
        flags: b.flags,
        field_count: b.field_count,
        field_key: b.field_key,
        field_offset: b.field_offset,
        field_len: b.field_len,
        arena: b.arena,
        errors: b.errors.into_iter().map(|e| wirelens_sdk::ConnError { conn: e.conn, reason: e.reason }).collect(),
        skip_conn: b.skip_conn,
        skip_flags: b.skip_flags,
        skip_bytes: b.skip_bytes,
    }
}

/// Write a file the way plugin writers should: temp file, then rename.
pub fn drop_plugin(dir: &Path, name: &str, bytes: &[u8]) {
    wirelens_plugin_builder::write_atomically(&dir.join(name), bytes).unwrap();
}

/// Wait until `cond` holds, up to `limit`; returns the time it took.
pub fn wait_for(limit: std::time::Duration, mut cond: impl FnMut() -> bool) -> Option<std::time::Duration> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Some(start.elapsed());
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    None
}

/// A chunk of a client connection at timestamp 1, all bytes captured.
pub fn chunk(conn: u64, direction: host::Direction, data: &[u8]) -> wirelens::protocols::ChunkIn<'_> {
    wirelens::protocols::ChunkIn {
        conn,
        direction,
        role: host::Role::Client,
        timestamp_ns: 1,
        data,
        real_len: data.len() as u64,
        port_hint: 0,
        datagram: false,
        stream_end: 0,
    }
}

/// `wirelens plugins build PROJECT --out OUT` for a C plugin project
/// (clang and lld: scripts/setup.sh installs them); the component's path,
/// as the command prints it.
pub fn build_c_plugin(project: &Path, out: &Path) -> PathBuf {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_wirelens"))
        .args(["plugins", "build"])
        .arg(project)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "building {} (C plugins need clang and lld: scripts/setup.sh installs them): {}",
        project.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8_lossy(&output.stdout);
    PathBuf::from(printed.lines().last().expect("the build prints the component's path"))
}

/// The lines (see `wirelens_sdk::testing::render`) a plugin's wasm build
/// gives for `chunks` fed one per call, then `close`, in a new sandbox.
pub fn sandbox_lines(
    plugin: &wirelens::protocols::LoadedPlugin,
    runtime: &Runtime,
    chunks: &[wirelens_sdk::testing::TestChunk],
    close: &[u64],
) -> Vec<String> {
    let names: Vec<String> = plugin.meta.field_names.iter().map(|s| s.to_string()).collect();
    let mut sandbox = new_sandbox(plugin, runtime);
    let mut lines = Vec::new();
    for chunk in chunks {
        let (h, d) = host_chunks(std::slice::from_ref(chunk));
        let batch = sandbox.feed(&h, &d).unwrap_or_else(|e| panic!("plugin call failed: {e:#}"));
        lines.extend(wirelens_sdk::testing::render(&sdk_batch(batch), &names));
    }
    lines.extend(wirelens_sdk::testing::render(&sdk_batch(sandbox.close(close).unwrap()), &names));
    lines
}

/// A new sandbox of `plugin`, checking results against its field names.
pub fn new_sandbox(plugin: &wirelens::protocols::LoadedPlugin, runtime: &Runtime) -> wirelens::protocols::Sandbox {
    let mut s = wirelens::protocols::Sandbox::instantiate(runtime, plugin.pre(), Arc::from("test")).unwrap();
    s.set_field_count(plugin.meta.field_names.len());
    s
}

/// Feed each case one chunk per call, then all chunks in one batch, each
/// in a new sandbox: both must give the case's expected lines.
pub fn run_cases(plugin: &wirelens::protocols::LoadedPlugin, runtime: &Runtime, cases: &[wirelens_sdk::testing::Case]) {
    let names: Vec<String> = plugin.meta.field_names.iter().map(|s| s.to_string()).collect();
    for case in cases {
        let one_by_one = sandbox_lines(plugin, runtime, &case.chunks, &case.close);
        assert_eq!(one_by_one, case.expect, "wasm, one chunk per call: case `{}`", case.name);

        let mut sandbox = new_sandbox(plugin, runtime);
        let (h, d) = host_chunks(&case.chunks);
        let mut batched = wirelens_sdk::testing::render(&sdk_batch(sandbox.feed(&h, &d).unwrap()), &names);
        batched.extend(wirelens_sdk::testing::render(&sdk_batch(sandbox.close(&case.close).unwrap()), &names));
        assert_eq!(batched, case.expect, "wasm, one batch: case `{}`", case.name);
    }
}
