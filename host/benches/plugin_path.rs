//! Parsed HTTP messages per second through the WebAssembly plugin and
//! through the same parser natively, for 100 B, 1 KiB and 16 KiB chunks,
//! measured in one run (ratios, not absolute numbers, are the point). The
//! two paths take turns batch by batch; the ratio is taken per round (the
//! native rate over the wasm rate of the same round), and its median and
//! quartiles over the rounds are printed, so a slow moment of a shared
//! machine hits both sides of a ratio alike.
//!
//! Run: `cargo bench -p wirelens --bench plugin_path` (release build).

use std::sync::Arc;
use std::time::{Duration, Instant};

use wirelens::protocols::bindings as host;
use wirelens::protocols::{ChunkIn, ProtocolWorker, Registry, Runtime, Sandbox, SandboxLimits, WorkerConfig};
use wirelens_plugin_http::Http;
use wirelens_sdk::Engine;

const CONNS: u64 = 64;
const BATCH: usize = 64;
const ROUNDS: usize = 9;
const ROUND_TIME: Duration = Duration::from_millis(200);

/// An HTTP request or response of exactly `size` bytes.
fn message(size: usize, response: bool) -> Vec<u8> {
    let head = if response {
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    } else {
        "POST /api/v1/items/12345?expand=true HTTP/1.1\r\nHost: example.com\r\nUser-Agent: bench\r\nContent-Length: "
    };
    // Find the body length that makes the whole message `size` bytes.
    for body in 0..size {
        let m = format!("{head}{body}\r\n\r\n");
        if m.len() + body == size {
            let mut v = m.into_bytes();
            v.resize(size, b'x');
            return v;
        }
    }
    // Too small for a body: pad a header instead.
    let base = if response { "HTTP/1.1 204 No Content\r\nX: " } else { "GET /api/items/1 HTTP/1.1\r\nHost: h\r\nX: " };
    let mut v = base.as_bytes().to_vec();
    v.resize(size - 4, b'p');
    v.extend_from_slice(b"\r\n\r\n");
    v
}

/// Batches alternating requests and responses over `CONNS` connections.
struct Workload {
    request: Vec<u8>,
    response: Vec<u8>,
}

impl Workload {
    fn batch(&self, round: u64) -> (host::Chunks, Vec<u8>) {
        let mut chunks = host::Chunks::new();
        let mut data = Vec::new();
        for i in 0..BATCH as u64 {
            let conn = i % CONNS;
            let response = (round + i / CONNS) % 2 == 1;
            let bytes = if response { &self.response } else { &self.request };
            let direction = if response { host::Direction::Ingress } else { host::Direction::Egress };
            chunks.push(
                conn,
                direction,
                host::Role::Client,
                round * 1000 + i,
                bytes.len() as u32,
                bytes.len() as u64,
                false,
            );
            data.extend_from_slice(bytes);
        }
        (chunks, data)
    }
}

fn sdk_chunks(c: &host::Chunks) -> wirelens_sdk::Chunks {
    wirelens_sdk::Chunks {
        conn: c.conn.clone(),
        timestamp_ns: c.timestamp_ns.clone(),
        captured: c.captured.clone(),
        real_len: c.real_len.clone(),
        flags: c.flags.clone(),
    }
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

/// First quartile, median and third quartile.
fn quartiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 4], v[v.len() / 2], v[v.len() * 3 / 4])
}

fn main() {
    let runtime = Runtime::new(SandboxLimits::default(), None).expect("runtime");
    let registry = Registry::new(runtime.clone(), Default::default());
    registry.load_builtins();
    let http = registry.catalog().get("http").expect("built-in http").clone();

    println!("HTTP parsing, {BATCH} chunks per call over {CONNS} connections, {ROUNDS} rounds of {ROUND_TIME:?}");
    println!(
        "{:>6}  {:>30}  {:>30}  {:>18}  {:>22}",
        "chunk", "wasm msg/s (min/med/max)", "native msg/s (min/med/max)", "wasm/native time", "worker msg/s (med)"
    );
    // `PLUGIN_PATH_SIZES=1024` (comma-separated bytes) measures other sizes.
    let sizes: Vec<usize> = std::env::var("PLUGIN_PATH_SIZES")
        .map(|s| s.split(',').map(|x| x.trim().parse().expect("PLUGIN_PATH_SIZES: sizes in bytes")).collect())
        .unwrap_or_else(|_| vec![100, 1024, 16 * 1024]);
    for size in sizes {
        let w = Workload { request: message(size, false), response: message(size, true) };
        assert_eq!(w.request.len(), size);
        assert_eq!(w.response.len(), size);
        let batches: Vec<_> = (0..2).map(|r| w.batch(r)).collect();
        let sdk_batches: Vec<_> = batches.iter().map(|(c, d)| (sdk_chunks(c), d.clone())).collect();

        let mut sandbox = Sandbox::instantiate(&runtime, http.pre(), Arc::from("bench")).unwrap();
        sandbox.set_field_count(http.meta.field_names.len());
        let mut native = Engine::<Http>::new();
        let mut worker =
            ProtocolWorker::new(registry.clone(), WorkerConfig { batch_chunks: BATCH, ..Default::default() });
        let (mut parsed, mut events) = (Vec::new(), Vec::new());

        let (mut wasm_rates, mut native_rates, mut worker_rates) = (vec![], vec![], vec![]);
        // Per round, wasm time over native time for the same batches run
        // back to back: a slow moment of this shared machine hits both.
        let mut paired = Vec::new();
        for _ in 0..ROUNDS {
            // The three paths take turns batch by batch, so machine noise
            // (the other core, frequency changes) hits them alike.
            let mut spent = [Duration::ZERO; 3];
            let mut messages = [0usize; 3];
            let start = Instant::now();
            let mut round = 0u64;
            while start.elapsed() < ROUND_TIME {
                let (c, d) = &batches[(round % 2) as usize];
                let t = Instant::now();
                let b = sandbox.feed(c, d).expect("wasm feed");
                spent[0] += t.elapsed();
                assert_eq!(b.conn.len(), BATCH);
                messages[0] += b.conn.len();

                let (sc, sd) = &sdk_batches[(round % 2) as usize];
                let t = Instant::now();
                let b = native.feed(sc, sd);
                spent[1] += t.elapsed();
                assert_eq!(b.conn.len(), BATCH);
                messages[1] += b.conn.len();

                let t = Instant::now();
                let mut off = 0;
                for i in 0..c.len() {
                    let len = c.captured[i] as usize;
                    let ingress = c.flags[i] & 1 != 0;
                    worker.push(ChunkIn {
                        conn: c.conn[i],
                        direction: if ingress { host::Direction::Ingress } else { host::Direction::Egress },
                        role: host::Role::Client,
                        timestamp_ns: c.timestamp_ns[i],
                        data: &d[off..off + len],
                        real_len: c.real_len[i],
                        port_hint: 80,
                        datagram: false,
                        stream_end: 0,
                    });
                    off += len;
                }
                worker.poll(&mut parsed, &mut events);
                spent[2] += t.elapsed();
                messages[2] += parsed.len();
                parsed.clear();
                events.clear();
                round += 1;
            }
            let rate = |i: usize| messages[i] as f64 / spent[i].as_secs_f64();
            paired.push(rate(1) / rate(0));
            wasm_rates.push(rate(0));
            native_rates.push(rate(1));
            worker_rates.push(rate(2));
        }
        let (wmin, wmed, wmax) = stats(wasm_rates);
        let (nmin, nmed, nmax) = stats(native_rates);
        let (_, kmed, _) = stats(worker_rates);
        let (p25, pmed, p75) = quartiles(paired);
        println!(
            "{:>6}  {:>30}  {:>30}  {:>18}  {:>22.0}",
            if size >= 1024 { format!("{}KiB", size / 1024) } else { format!("{size}B") },
            format!("{wmin:.0}/{wmed:.0}/{wmax:.0}"),
            format!("{nmin:.0}/{nmed:.0}/{nmax:.0}"),
            format!("{pmed:.2} ({p25:.2}-{p75:.2})"),
            kmed
        );
    }
}
