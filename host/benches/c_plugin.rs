//! The same protocol in two languages through the sandbox: NATS written
//! with the C SDK (`plugins/nats-c`, built here with `wirelens plugins
//! build`'s code) against the built-in NATS plugin written in Rust, on the
//! same batches. The two take turns batch by batch within each round, and
//! the ratio is taken per round (C time over Rust time), so a slow moment
//! of this shared machine hits both sides alike. Messages per second are
//! printed min/median/max over the rounds.
//!
//! Run: `cargo bench -p wirelens --bench c_plugin` (needs clang and lld).

use std::path::Path;
use std::time::{Duration, Instant};

use wirelens::protocols::{LoadedPlugin, Registry, Runtime, SandboxLimits, Source};
use wirelens_sdk::testing::TestChunk;

/// The integration tests' helpers (chunk columns, sandboxes).
#[path = "../tests/common/mod.rs"]
#[allow(dead_code)]
mod common;

const CONNS: u64 = 64;
const ROUNDS: usize = 11;
const ROUND_TIME: Duration = Duration::from_millis(300);

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = wirelens_plugin_builder::c::CBuild::new(root.join("plugins/nats-c"), out.path())
        .run()
        .unwrap_or_else(|e| panic!("building plugins/nats-c: {e:#}"));
    let runtime = Runtime::new(SandboxLimits::default(), None).unwrap();
    let registry = Registry::new(runtime.clone(), Default::default());
    registry.load_builtins();
    let rust = registry.catalog().get("nats").expect("built-in nats").clone();
    let c = LoadedPlugin::load(&runtime, &std::fs::read(&path).unwrap(), Source::File(path), &Default::default()).unwrap();

    // Per connection and batch: a ping and a publish out, the pong and a
    // delivery in (four messages, one call).
    let chunks: Vec<TestChunk> = (0..CONNS)
        .flat_map(|conn| {
            [
                TestChunk::egress(1, "PING\r\nPUB wl.events 7\r\nevent 0\r\n").on(conn),
                TestChunk::ingress(2, "PONG\r\nMSG wl.events 1 7\r\nevent 0\r\n").on(conn),
            ]
        })
        .collect();
    let (cols, data) = common::host_chunks(&chunks);
    let messages_per_batch = 4 * CONNS as usize;
    let (mut rs, mut cs) = (common::new_sandbox(&rust, &runtime), common::new_sandbox(&c, &runtime));
    assert_eq!(rs.feed(&cols, &data).unwrap().conn.len(), messages_per_batch);
    assert_eq!(cs.feed(&cols, &data).unwrap().conn.len(), messages_per_batch);

    println!("NATS through the sandbox, {} chunks of {CONNS} connections per call, {ROUNDS} rounds", chunks.len());
    let (mut rust_rates, mut c_rates, mut ratios) = (vec![], vec![], vec![]);
    for _ in 0..ROUNDS {
        let (mut rust_time, mut c_time, mut batches) = (Duration::ZERO, Duration::ZERO, 0u64);
        let start = Instant::now();
        while start.elapsed() < ROUND_TIME {
            let t = Instant::now();
            std::hint::black_box(rs.feed(&cols, &data).unwrap());
            rust_time += t.elapsed();
            let t = Instant::now();
            std::hint::black_box(cs.feed(&cols, &data).unwrap());
            c_time += t.elapsed();
            batches += 1;
        }
        let messages = (batches as usize * messages_per_batch) as f64;
        rust_rates.push(messages / rust_time.as_secs_f64());
        c_rates.push(messages / c_time.as_secs_f64());
        ratios.push(c_time.as_secs_f64() / rust_time.as_secs_f64());
    }
    let show = |v: &mut Vec<f64>| {
        let m = median(v);
        format!("{:.0}/{:.0}/{:.0}", v[0], m, v[v.len() - 1])
    };
    println!("{:>8}  {:>32}", "plugin", "messages/s (min/median/max)");
    println!("{:>8}  {:>32}", "Rust", show(&mut rust_rates));
    println!("{:>8}  {:>32}", "C", show(&mut c_rates));
    let m = median(&mut ratios);
    println!("C time / Rust time per round: {:.2}/{:.2}/{:.2} (min/median/max)", ratios[0], m, ratios[ratios.len() - 1]);
}
