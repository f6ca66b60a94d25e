//! Paired calls per second through the whole host path, single core:
//! captured events in, through the daemon's `Collector` (connections,
//! metadata, layer 4, the wasm plugin, the stitcher, the layer-7 window),
//! aggregated records out;
//! next to the same protocol's parser alone, natively (SDK `Engine`).
//!
//! Run: `cargo bench -p wirelens --bench l7_path [-- PROTOCOL...]`

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use std::path::Path;

use wirelens::capture::{Direction, EventBatch, ProcKey, Role, Transport};
use wirelens::collector::Collector;
use wirelens::config::Config;
use wirelens_sdk::testing::{to_wire, TestChunk};
use wirelens_sdk::{Engine, Protocol};

/// The daemon's allocator (see `src/main.rs`), so the host path is
/// measured as the daemon runs it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONNS: u64 = 64;
const ROUND: Duration = Duration::from_millis(700);

/// A round goes on for `ROUND`, or with `L7_PATH_BATCHES=N` for N steps
/// of 32 batches (for instruction counts, e.g. under callgrind).
struct Round {
    start: Instant,
    left: Option<u64>,
}

impl Round {
    fn new() -> Self {
        Self { start: Instant::now(), left: std::env::var("L7_PATH_BATCHES").ok().and_then(|n| n.parse().ok()) }
    }

    fn more(&mut self) -> bool {
        match &mut self.left {
            None => self.start.elapsed() < ROUND,
            Some(0) => false,
            Some(n) => {
                *n -= 1;
                true
            }
        }
    }
}

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
            // 16 GETs in one write, their 16 replies in one read (a
            // pipelining client: `redis-benchmark -P 16`, `loadgen
            // --pipeline 16`): what is paid per message, not per event.
            name: "redis-p16",
            request: b"*2\r\n$3\r\nGET\r\n$5\r\nkey:1\r\n".repeat(16),
            response: b"$5\r\nvalue\r\n".repeat(16),
            port: 6379,
        },
        Workload {
            name: "http2",
            // curl's GET on one stream, then nginx's 200 with a small body
            // (stream ids repeat: each call is a stream that ended).
            request: wirelens_plugin_http2::cases::get_request(1, "/api/items/42?x=1", "shop"),
            response: wirelens_plugin_http2::cases::ok_response(1, b"{}"),
            port: 80,
        },
        Workload {
            name: "memcached",
            request: wirelens_plugin_memcached::cases::GET.as_bytes().to_vec(),
            response: wirelens_plugin_memcached::cases::HIT.as_bytes().to_vec(),
            port: 11211,
        },
        Workload {
            name: "nats",
            // A verbose client's publish and the server's +OK.
            request: wirelens_plugin_nats::cases::PUB.as_bytes().to_vec(),
            response: b"+OK\r\n".to_vec(),
            port: 4222,
        },
        Workload {
            name: "mqtt",
            // A QoS 1 publish and its PUBACK (packet ids repeat: each call
            // ended before the next).
            request: wirelens_plugin_mqtt::cases::publish("sensors/room1/temp", 1, 7, b"21.5"),
            response: wirelens_plugin_mqtt::cases::ack(0x40, 7, None),
            port: 1883,
        },
        Workload {
            name: "kafka",
            // A Produce v9 of a small record and its response (correlation
            // ids repeat: each call ended before the next).
            request: wirelens_plugin_kafka::cases::produce(3, "events", 1, b"hello"),
            response: wirelens_plugin_kafka::cases::produce_response(3, "events", 0),
            port: 9092,
        },
        Workload {
            name: "amqp",
            // A queue.declare on channel 1 and its declare-ok.
            request: wirelens_plugin_amqp::cases::queue_declare(1, "orders", 0),
            response: wirelens_plugin_amqp::cases::queue_declare_ok(1, "orders"),
            port: 5672,
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

/// Calls per second through the daemon's own path (`Collector`: the
/// connection tracker, process metadata, the layer-4 window, the plugin
/// worker, the stitcher and the layer-7 window), events built by hand; and
/// the ns per event and per call spent outside the plugin calls.
fn host_path(w: &Workload) -> (f64, f64, f64) {
    let text = "inputs:\n  - Type: observer_ilogtail_network_v1\n    Common:\n      ProtocolProcess: true\nflushers:\n  - Type: flusher_stdout\n";
    let config = Config::parse(text, Path::new("l7_path.yaml")).unwrap();
    // Compiled plugins cached across rounds (compiling all of them took
    // most of a run's time).
    let cache = std::env::temp_dir().join("wirelens-l7-path-cache");
    let mut collector = Collector::new(&config, Some(cache)).unwrap();
    let proc = ProcKey { pid: std::process::id(), start_ns: 1 };
    let server = (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), w.port);
    let local = |conn: u64| (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 40_000 + conn as u16);
    let mut batch = EventBatch::default();
    let mut ts = 0u64;
    // One call per connection first: each connection is detected (every
    // plugin may be asked) once, a cost per new connection, not per event;
    // `l7_instructions.py` reports it apart. Before that, other connections
    // make the plugins' instances (once per worker, not per connection).
    let mut step = |collector: &mut Collector, batch: &mut EventBatch, first_conn: u64| {
        batch.clear();
        for conn in first_conn..first_conn + CONNS {
            ts += 1000;
            for (at, direction, bytes) in
                [(ts, Direction::Egress, &w.request), (ts + 500, Direction::Ingress, &w.response)]
            {
                let ev = batch.data(proc, conn, at, direction, Role::Client, local(conn), server, bytes);
                // DNS here is over UDP: each call one message.
                ev.transport = if w.name == "dns" { Transport::Datagram } else { Transport::Stream };
            }
        }
        collector.on_batch(batch);
        collector.poll_l7();
        batch.len() as u64
    };
    make_instances(&mut collector, &mut batch, &mut step);
    detect_connections(&mut collector, &mut batch, &mut step);
    let start = Instant::now();
    let mut total = 0u64;
    let mut events = 0u64;
    let plugin_before = collector.l7_plugin_cpu_ns();
    let mut round = Round::new();
    while round.more() {
        for _ in 0..32 {
            events += step(&mut collector, &mut batch, 0);
        }
        let records = collector.flush_l7();
        total += records.iter().filter_map(|r| r.int("total_count")).sum::<u64>();
    }
    assert!(total > 0, "{}: no calls", w.name);
    let elapsed = start.elapsed();
    let outside = elapsed.as_nanos() as f64 - (collector.l7_plugin_cpu_ns() - plugin_before) as f64;
    (total as f64 / elapsed.as_secs_f64(), outside / events as f64, outside / total as f64)
}

/// A first call on other connections: the plugins' instances are made
/// (records dropped, not timed). Two functions, this and
/// `detect_connections`, because callgrind tells them apart by name.
#[inline(never)]
fn make_instances(
    collector: &mut Collector,
    batch: &mut EventBatch,
    step: &mut impl FnMut(&mut Collector, &mut EventBatch, u64) -> u64,
) {
    step(collector, batch, CONNS);
    collector.flush_l7();
}

/// A first call on each connection, its records dropped (not timed).
#[inline(never)]
fn detect_connections(
    collector: &mut Collector,
    batch: &mut EventBatch,
    step: &mut impl FnMut(&mut Collector, &mut EventBatch, u64) -> u64,
) {
    step(collector, batch, 0);
    collector.flush_l7();
}

/// Messages per second (two per call) of the parser alone, natively.
fn native<P: Protocol>(w: &Workload) -> f64 {
    let mut engine = Engine::<P>::new();
    let chunks: Vec<TestChunk> = (0..CONNS)
        .flat_map(|c| [TestChunk::egress(1, &w.request).on(c), TestChunk::ingress(2, &w.response).on(c)])
        .map(|chunk| if w.name == "dns" { chunk.datagram() } else { chunk })
        .collect();
    let (cols, data) = to_wire(&chunks);
    let start = Instant::now();
    let mut msgs = 0u64;
    let mut round = Round::new();
    while round.more() {
        for _ in 0..32 {
            msgs += engine.feed(&cols, &data).len() as u64;
        }
    }
    msgs as f64 / 2.0 / start.elapsed().as_secs_f64()
}

fn main() {
    println!("paired calls per second, one thread, {CONNS} connections, 3 rounds (min/median/max)");
    println!(
        "{:>9}  {:>26}  {:>26}  {:>18}  {:>18}",
        "proto", "whole host path (wasm)", "parser alone (native)", "ns/event outside", "ns/call outside"
    );
    // `cargo bench --bench l7_path -- redis` runs one protocol (for profiling).
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    // `--host-only`: the whole host path alone (for profiling it).
    let host_only = std::env::args().any(|a| a == "--host-only");
    for w in workloads().into_iter().filter(|w| only.is_empty() || only.iter().any(|o| o == w.name)) {
        let rounds: Vec<(f64, f64, f64)> = (0..3).map(|_| host_path(&w)).collect();
        let column = |pick: fn(&(f64, f64, f64)) -> f64| spread(rounds.iter().map(pick).collect());
        let (host, outside, per_call) = (column(|r| r.0), column(|r| r.1), column(|r| r.2));
        let nat: Vec<f64> = (0..if host_only { 0 } else { 3 })
            .map(|_| match w.name {
                "http" => native::<wirelens_plugin_http::Http>(&w),
                "redis" | "redis-p16" => native::<wirelens_plugin_redis::Redis>(&w),
                "mysql" => native::<wirelens_plugin_mysql::Mysql>(&w),
                "pgsql" => native::<wirelens_plugin_pgsql::Pgsql>(&w),
                "http2" => native::<wirelens_plugin_http2::Http2>(&w),
                "memcached" => native::<wirelens_plugin_memcached::Memcached>(&w),
                "nats" => native::<wirelens_plugin_nats::Nats>(&w),
                "mqtt" => native::<wirelens_plugin_mqtt::Mqtt>(&w),
                "kafka" => native::<wirelens_plugin_kafka::Kafka>(&w),
                "amqp" => native::<wirelens_plugin_amqp::Amqp>(&w),
                _ => native::<wirelens_plugin_dns::Dns>(&w),
            })
            .collect();
        let native = if host_only { "-".to_string() } else { spread(nat) };
        println!("{:>9}  {host:>26}  {native:>26}  {outside:>18}  {per_call:>18}", w.name);
    }
}

/// Min/median/max of three rounds.
fn spread(mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    format!("{:.0}/{:.0}/{:.0}", v[0], v[1], v[2])
}
