//! Hot reload: a plugin dropped into the directory goes live within a second;
//! replacing it 20 times while a thread keeps parsing fails no call; the new
//! version is what new connections get, while a connection started on the
//! old version finishes on it; an invalid file leaves the old version; a
//! removed file unloads the protocol.

mod common;

use common::chunk;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wirelens::protocols::bindings::Direction;
use wirelens::protocols::reload::PluginDirWatcher;
use wirelens::protocols::{ConnEvent, ProtocolWorker, Registry, SandboxLimits, WorkerConfig};

fn active_version(registry: &Registry) -> Option<String> {
    registry.catalog().get("testproto").map(|p| p.meta.version.clone())
}

#[test]
fn replace_twenty_times_while_parsing() {
    let v1 = common::build_plugin("tests/plugins/testproto", &[]);
    let v2 = common::build_plugin("tests/plugins/testproto", &["v2"]);
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let runtime = wirelens::protocols::Runtime::new(SandboxLimits::default(), Some(cache.path().into())).unwrap();
    let registry = Registry::new(runtime, Default::default());
    registry.load_builtins();
    let _watcher = PluginDirWatcher::start(registry.clone(), dir.path()).unwrap();

    common::drop_plugin(dir.path(), "testproto.wasm", &v1);
    let live = common::wait_for(Duration::from_secs(5), || active_version(&registry).is_some())
        .expect("a new plugin goes live");
    eprintln!("new plugin live after {live:?}");
    assert!(live < Duration::from_secs(1), "live within 1 s, took {live:?}");

    let stop = Arc::new(AtomicBool::new(false));
    let parser = {
        let (registry, stop) = (registry.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut worker = ProtocolWorker::new(registry, WorkerConfig::default());
            let (mut parsed, mut events) = (Vec::new(), Vec::new());
            let mut versions = Vec::new();
            let mut exchanges = 0u64;
            // A long-lived connection that started on version 1.
            const LONG: u64 = u64::MAX;
            worker.push(chunk(LONG, Direction::Egress, b"REQ first\n"));
            let mut long_lived = 0;
            let mut conn = 1;
            while !stop.load(Ordering::Relaxed) && exchanges < 5_000_000 {
                worker.push(chunk(conn, Direction::Egress, b"REQ ping\n"));
                worker.push(chunk(conn, Direction::Ingress, b"RES pong\n"));
                worker.close(conn);
                if conn % 16 == 0 {
                    worker.push(chunk(LONG, Direction::Ingress, b"RES again\n"));
                }
                worker.poll(&mut parsed, &mut events);
                for p in parsed.drain(..) {
                    if p.conn == LONG {
                        assert_eq!(p.plugin().meta.version, "1.0.0", "a connection stays on its version");
                        long_lived += 1;
                        continue;
                    }
                    if versions.last() != Some(&p.plugin().meta.version) {
                        versions.push(p.plugin().meta.version.clone());
                    }
                }
                for e in events.drain(..) {
                    assert!(matches!(e, ConnEvent::Detected { .. }), "no failed call, got {e:?}");
                }
                exchanges += 1;
                conn += 1;
            }
            let stats = worker.stats().clone();
            (exchanges, versions, long_lived, stats)
        })
    };

    let mut swap_times = Vec::new();
    for i in 0..20 {
        let (bytes, want) = if i % 2 == 0 { (&v2, "2.0.0") } else { (&v1, "1.0.0") };
        common::drop_plugin(dir.path(), "testproto.wasm", bytes);
        let took = common::wait_for(Duration::from_secs(5), || active_version(&registry).as_deref() == Some(want))
            .unwrap_or_else(|| panic!("swap {i} to {want} not seen"));
        swap_times.push(took);
        std::thread::sleep(Duration::from_millis(30));
    }
    stop.store(true, Ordering::Relaxed);
    let (exchanges, versions, long_lived, stats) = parser.join().expect("parser thread");
    swap_times.sort();
    eprintln!(
        "{exchanges} exchanges, {} version changes seen, swap latency min {:?} median {:?} max {:?}",
        versions.len() - 1,
        swap_times[0],
        swap_times[swap_times.len() / 2],
        swap_times[swap_times.len() - 1]
    );
    assert_eq!(stats.messages, exchanges * 2 + long_lived, "every exchange parsed: {stats:?}");
    assert_eq!(stats.plugin_failures, 0);
    assert_eq!(stats.dropped, 0);
    assert!(long_lived > 0);
    assert!(versions.len() >= 10, "the parsing thread saw the swaps: {versions:?}");
    assert_eq!(versions.last().map(String::as_str), Some("1.0.0"), "the last file is version 1");
}

#[test]
fn invalid_file_keeps_old_version_and_removal_unloads() {
    let v1 = common::build_plugin("tests/plugins/testproto", &[]);
    let dir = tempfile::tempdir().unwrap();
    let registry = common::registry_with_builtins(SandboxLimits::default());
    let _watcher = PluginDirWatcher::start(registry.clone(), dir.path()).unwrap();

    common::drop_plugin(dir.path(), "testproto.wasm", &v1);
    common::wait_for(Duration::from_secs(5), || active_version(&registry).is_some()).expect("loaded");
    let generation = registry.catalog().generation;

    // A truncated copy (a half-written file) is reported; version 1 stays.
    common::drop_plugin(dir.path(), "testproto.wasm", &v1[..v1.len() / 2]);
    common::wait_for(Duration::from_secs(5), || registry.catalog().generation > generation).expect("event seen");
    assert_eq!(active_version(&registry).as_deref(), Some("1.0.0"));
    let entry = registry.catalog().entries.iter().find(|e| e.name == "testproto").cloned().unwrap();
    assert!(
        entry.state.contains("newer file invalid") && entry.state.contains("not a valid WebAssembly component"),
        "{entry:?}"
    );

    // A plugin with the name of a built-in overrides it; removing it brings the built-in back.
    let http_file = dir.path().join("http.wasm");
    std::fs::write(&http_file, b"not wasm at all").unwrap();
    common::wait_for(Duration::from_secs(5), || {
        registry.catalog().entries.iter().any(|e| e.state.contains("http.wasm") || e.source.contains("http.wasm"))
    })
    .expect("bad http.wasm listed");
    assert_eq!(registry.catalog().get("http").unwrap().meta.source, wirelens::protocols::Source::Builtin);

    std::fs::remove_file(dir.path().join("testproto.wasm")).unwrap();
    common::wait_for(Duration::from_secs(5), || active_version(&registry).is_none()).expect("removed file unloads");
    assert!(registry.catalog().get("http").is_some());
}

#[test]
fn restart_uses_cached_artifacts() {
    let cache = tempfile::tempdir().unwrap();
    let first = wirelens::protocols::Runtime::new(SandboxLimits::default(), Some(cache.path().into())).unwrap();
    Registry::new(first.clone(), Default::default()).load_builtins();
    assert_eq!(first.cache().hits(), 0);
    assert!(first.cache().misses() >= 1);
    let second = wirelens::protocols::Runtime::new(SandboxLimits::default(), Some(cache.path().into())).unwrap();
    let registry = Registry::new(second.clone(), Default::default());
    let start = std::time::Instant::now();
    registry.load_builtins();
    eprintln!("built-ins loaded from cache in {:?}", start.elapsed());
    assert_eq!(second.cache().misses(), 0, "nothing recompiled");
    assert_eq!(second.cache().hits(), first.cache().misses());
    assert!(registry.catalog().get("http").is_some());
}

/// A plugin directory mounted from a Kubernetes ConfigMap: each name is a
/// link through `..data`, which the kubelet swaps to a new timestamped
/// directory on every update (the names themselves see no event). The
/// swap is laid out here as the kubelet does it.
#[test]
fn a_configmap_swap_reloads() {
    let v1 = common::build_plugin("tests/plugins/testproto", &[]);
    let v2 = common::build_plugin("tests/plugins/testproto", &["v2"]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let version_dir = |name: &str, bytes: &[u8]| {
        std::fs::create_dir(d.join(name)).unwrap();
        std::fs::write(d.join(name).join("testproto.wasm"), bytes).unwrap();
    };
    version_dir("..2026_12_02_10_00_00.1", &v1);
    std::os::unix::fs::symlink("..2026_12_02_10_00_00.1", d.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/testproto.wasm", d.join("testproto.wasm")).unwrap();
    let registry = common::registry_with_builtins(SandboxLimits::default());
    let _watcher = PluginDirWatcher::start(registry.clone(), d).unwrap();
    assert_eq!(active_version(&registry).as_deref(), Some("1.0.0"), "loaded through the links");

    // The kubelet's update: a new directory, a new link beside `..data`,
    // renamed over it, the old directory removed.
    version_dir("..2026_12_02_10_05_00.2", &v2);
    std::os::unix::fs::symlink("..2026_12_02_10_05_00.2", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    std::fs::remove_dir_all(d.join("..2026_12_02_10_00_00.1")).unwrap();
    common::wait_for(Duration::from_secs(5), || active_version(&registry).as_deref() == Some("2.0.0"))
        .expect("the swapped version goes live");
}
