//! Writes the seed corpora: every `tests/fixtures/<proto>/*.chunks` file
//! and every case of each plugin's `cases::all()` (also seen from the
//! server's side), in the fuzz input format (`wirelens_fuzz::encode`), into
//! `fuzz/corpus/<target>/` (or `seeds DIR` for `DIR/<target>/`).
//!
//! Fixtures become two seeds each: one chunk per feed call, and all chunks
//! in one call; their timestamps are 10 us apart. A fixture with calls of
//! more than 1 KiB gets a third, with only their first 1 KiB captured. Cases keep their
//! timestamps (ticks and quiet times matter there).

use std::path::{Path, PathBuf};

use wirelens_fuzz::{encode, run};
use wirelens_sdk::testing::{as_server, load_fixture, Case, TestChunk};

/// Bytes a capped fixture seed keeps of each call (the rest is marked as
/// not captured), so its seed stays under the fuzzer's -max_len.
const CAPTURE: usize = 1024;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::args().nth(1).map(PathBuf::from).unwrap_or_else(|| root.join("corpus"));
    let fixtures = root.join("../tests/fixtures");
    // Each seed is also run through the driver once, so a seed that already
    // breaks an invariant shows here, without libFuzzer.
    let targets: [(&str, Vec<Case>, fn(&[u8])); 5] = [
        ("http", wirelens_plugin_http::cases::all(), run::<wirelens_plugin_http::Http>),
        ("redis", wirelens_plugin_redis::cases::all(), run::<wirelens_plugin_redis::Redis>),
        ("dns", wirelens_plugin_dns::cases::all(), run::<wirelens_plugin_dns::Dns>),
        ("mysql", wirelens_plugin_mysql::cases::all(), run::<wirelens_plugin_mysql::Mysql>),
        ("pgsql", wirelens_plugin_pgsql::cases::all(), run::<wirelens_plugin_pgsql::Pgsql>),
    ];
    for (target, cases, check) in targets {
        let dir = out.join(target);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut written = 0;
        let mut write = |name: String, bytes: Vec<u8>| {
            let path = dir.join(name);
            check(&bytes);
            std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            written += 1;
        };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(fixtures.join(target))
            .unwrap_or_else(|e| panic!("{}: {e}", fixtures.join(target).display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "chunks"))
            .collect();
        paths.sort();
        for path in &paths {
            let chunks = load_fixture(path);
            let mut conns: Vec<u64> = chunks.iter().map(|c| c.conn).collect();
            conns.sort_unstable();
            conns.dedup();
            let stem = path.file_stem().expect("a file name").to_string_lossy();
            write(format!("seed-fixture-{stem}"), encode(&chunks, &conns, false, false));
            write(format!("seed-fixture-{stem}-one-call"), encode(&chunks, &conns, false, true));
            // As the capture sees large calls: their first bytes only.
            if chunks.iter().any(|c| c.bytes.len() > CAPTURE) {
                let capped: Vec<TestChunk> = chunks
                    .iter()
                    .map(|c| match c.bytes.len() > CAPTURE {
                        true => TestChunk { bytes: c.bytes[..CAPTURE].to_vec(), ..c.clone() }.truncated(c.bytes.len() as u64),
                        false => c.clone(),
                    })
                    .collect();
                write(format!("seed-fixture-{stem}-capped"), encode(&capped, &conns, false, false));
            }
        }
        for (i, case) in cases.iter().enumerate() {
            let slug: String = case
                .name
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
                .take(48)
                .collect();
            write(format!("seed-case-{i:02}-{slug}"), encode(&case.chunks, &case.close, true, false));
            let server = as_server(case);
            write(format!("seed-case-{i:02}-server-{slug}"), encode(&server.chunks, &server.close, true, false));
        }
        // Inputs that once broke something (fixed since): run again here.
        let mut found: Vec<PathBuf> = std::fs::read_dir(root.join("found"))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        found.retain(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("{target}-"))));
        found.sort();
        for path in &found {
            let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            write(format!("seed-found-{}", path.file_name().expect("a file name").to_string_lossy()), bytes);
        }
        println!("{target}: {written} seeds in {} ({} fixtures, {} cases, {} found)", dir.display(), paths.len(), cases.len(), found.len());
    }
}
