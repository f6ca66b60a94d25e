//! Paired calls per second through the whole host path, single core:
//! captured chunks in, through the wasm plugin (detection, batching,
//! parsing), the stitcher and the layer-7 window, aggregated records out;
//! next to the same protocol's parser alone, natively (SDK `Engine`).
//!
//! Run: `cargo bench -p wirelens --bench l7_path`

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use wirelens::aggregate::l7::{Endpoint, L7Window};
use wirelens::connections::Role;
use wirelens::metadata::ProcessCache;
use wirelens::protocols::bindings::{Direction, Role as WireRole};
use wirelens::protocols::{ChunkIn, ProtocolWorker, Registry, Runtime, SandboxLimits, WorkerConfig};
use wirelens::stitch::Stitcher;
use wirelens_sdk::testing::{to_wire, TestChunk};
use wirelens_sdk::{Engine, Protocol};

const CONNS: u64 = 64;
const ROUND: Duration = Duration::from_millis(700);

struct Workload {
    name: &'static str,
    request: Vec<u8>,
    response: Vec<u8>,
    port: u16,
}

fn workloads() -> Vec<Workload> {
    vec![
        Workload {
            name: "http",
            request: b"GET /api/items/42?x=1 HTTP/1.1\r\nHost: shop\r\nUser-Agent: bench\r\n\r\n".to_vec(),
            response: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
            port: 80,
        },
        Workload {
            name: "redis",
            request: b"*3\r\n$3\r\nSET\r\n$5\r\nkey:1\r\n$5\r\nvalue\r\n".to_vec(),
            response: b"+OK\r\n".to_vec(),
            port: 6379,
        },
        Workload {
            name: "dns",
            request: wirelens_plugin_dns::cases::message(7, false, 0, "svc.cluster.local", 1, 0),
            response: wirelens_plugin_dns::cases::message(7, true, 0, "svc.cluster.local", 1, 1),
            port: 53,
        },
        Workload {
            name: "mysql",
            request: wirelens_plugin_mysql::cases::query("SELECT id, name FROM t WHERE id = 42"),
            // Two columns, two rows, EOF packets: 8 packets.
            response: wirelens_plugin_mysql::cases::result_set(true, 2),
            port: 3306,
        },
        Workload {
            name: "pgsql",
            request: wirelens_plugin_pgsql::cases::query("SELECT id, name FROM users WHERE id = 42"),
            // RowDescription, DataRows, CommandComplete, ReadyForQuery.
            response: wirelens_plugin_pgsql::cases::users_rows(),
            port: 5432,
        },
    ]
}

/// Calls per second through worker + stitcher + window.
fn host_path(registry: &std::sync::Arc<Registry>, w: &Workload) -> f64 {
    let mut worker = ProtocolWorker::new(registry.clone(), WorkerConfig::default());
    let mut stitcher = Stitcher::new(1024, u64::MAX);
    let mut window = L7Window::new(10_000);
    let procs = ProcessCache::default();
    let (mut parsed, mut events, mut calls) = (Vec::new(), Vec::new(), Vec::new());
    let at = Endpoint { pid: 1, role: Role::Client, remote: (IpAddr::V4(Ipv4Addr::LOCALHOST), w.port) };
    let start = Instant::now();
    let mut total = 0u64;
    let mut ts = 0u64;
    while start.elapsed() < ROUND {
        for _ in 0..32 {
            for conn in 0..CONNS {
                ts += 1;
                for (dir, bytes) in [(Direction::Egress, &w.request), (Direction::Ingress, &w.response)] {
                    worker.push(ChunkIn {
                        conn,
                        direction: dir,
                        role: WireRole::Client,
                        timestamp_ns: ts,
                        data: bytes,
                        real_len: bytes.len() as u64,
                        port_hint: w.port,
                        datagram: false,
                    });
                }
            }
            worker.poll(&mut parsed, &mut events);
            for m in parsed.drain(..) {
                stitcher.add(m, &mut calls);
            }
            total += calls.len() as u64;
            for c in calls.drain(..) {
                window.add(at, c);
            }
        }
        let _records = window.flush(0, &procs);
    }
    assert!(total > 0, "{}: no calls", w.name);
    total as f64 / start.elapsed().as_secs_f64()
}

/// Messages per second (two per call) of the parser alone, natively.
fn native<P: Protocol>(w: &Workload) -> f64 {
    let mut engine = Engine::<P>::new();
    let chunks: Vec<TestChunk> = (0..CONNS)
        .flat_map(|c| [TestChunk::egress(1, &w.request).on(c), TestChunk::ingress(2, &w.response).on(c)])
        .collect();
    let (cols, data) = to_wire(&chunks);
    let start = Instant::now();
    let mut msgs = 0u64;
    while start.elapsed() < ROUND {
        for _ in 0..32 {
            msgs += engine.feed(&cols, &data).len() as u64;
        }
    }
    msgs as f64 / 2.0 / start.elapsed().as_secs_f64()
}

fn main() {
    let registry = Registry::new(Runtime::new(SandboxLimits::default(), None).unwrap(), Default::default());
    registry.load_builtins();
    println!("paired calls per second, one thread, {CONNS} connections, 3 rounds (min/median/max)");
    println!("{:>6}  {:>30}  {:>30}", "proto", "whole host path (wasm)", "parser alone (native)");
    for w in workloads() {
        let mut host: Vec<f64> = (0..3).map(|_| host_path(&registry, &w)).collect();
        let mut nat: Vec<f64> = (0..3)
            .map(|_| match w.name {
                "http" => native::<wirelens_plugin_http::Http>(&w),
                "redis" => native::<wirelens_plugin_redis::Redis>(&w),
                "mysql" => native::<wirelens_plugin_mysql::Mysql>(&w),
                "pgsql" => native::<wirelens_plugin_pgsql::Pgsql>(&w),
                _ => native::<wirelens_plugin_dns::Dns>(&w),
            })
            .collect();
        host.sort_by(|a, b| a.partial_cmp(b).unwrap());
        nat.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "{:>6}  {:>30}  {:>30}",
            w.name,
            format!("{:.0}/{:.0}/{:.0}", host[0], host[1], host[2]),
            format!("{:.0}/{:.0}/{:.0}", nat[0], nat[1], nat[2])
        );
    }
}
