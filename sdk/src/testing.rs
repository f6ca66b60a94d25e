//! Run a [`Protocol`] natively on test chunks and render what it produced as
//! plain lines, so the same cases can be checked natively and, by the
//! daemon's tests, through the WebAssembly build (where `usize` is 32-bit).

use crate::wire::{MSG_HAS_PAIR_ID, MSG_INGRESS, MSG_SUCCESS};
use crate::{Batch, Chunk, Chunks, Direction, Engine, MessageKind, Protocol, Role};

/// One captured call's bytes, for tests.
#[derive(Clone, Debug)]
pub struct TestChunk {
    pub conn: u64,
    pub direction: Direction,
    pub role: Role,
    pub timestamp_ns: u64,
    /// Captured bytes.
    pub bytes: Vec<u8>,
    /// Bytes the call really moved, when more than `bytes` (truncated capture).
    pub real_len: Option<u64>,
}

impl TestChunk {
    /// Bytes sent by the observed process (a client: a request).
    pub fn egress(ts: u64, bytes: impl AsRef<[u8]>) -> Self {
        Self::new(Direction::Egress, ts, bytes)
    }

    /// Bytes received by the observed process (a client: a response).
    pub fn ingress(ts: u64, bytes: impl AsRef<[u8]>) -> Self {
        Self::new(Direction::Ingress, ts, bytes)
    }

    fn new(direction: Direction, ts: u64, bytes: impl AsRef<[u8]>) -> Self {
        Self {
            conn: 1,
            direction,
            role: Role::Client,
            timestamp_ns: ts,
            bytes: bytes.as_ref().to_vec(),
            real_len: None,
        }
    }

    /// The call moved `real_len` bytes but only these were captured.
    pub fn truncated(mut self, real_len: u64) -> Self {
        self.real_len = Some(real_len);
        self
    }

    /// On another connection.
    pub fn on(mut self, conn: u64) -> Self {
        self.conn = conn;
        self
    }

    /// In another direction.
    pub fn direction(mut self, direction: Direction) -> Self {
        self.direction = direction;
        self
    }

    /// With another role.
    pub fn role(mut self, role: Role) -> Self {
        self.role = role;
        self
    }
}

/// A test case shared by native and WebAssembly runs.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: &'static str,
    pub chunks: Vec<TestChunk>,
    /// Close these connections at the end (finishing open messages).
    pub close: Vec<u64>,
    /// Expected rendered lines (see [`render`]).
    pub expect: Vec<String>,
}

/// The WIT inputs for `feed`: chunk headers and their bytes end to end.
pub fn to_wire(chunks: &[TestChunk]) -> (Chunks, Vec<u8>) {
    let mut data = Vec::new();
    let mut headers = Chunks::new();
    for c in chunks {
        data.extend_from_slice(&c.bytes);
        headers.push(&Chunk {
            conn: c.conn,
            direction: c.direction,
            role: c.role,
            timestamp_ns: c.timestamp_ns,
            captured: c.bytes.len() as u32,
            real_len: c.real_len.unwrap_or(c.bytes.len() as u64),
        });
    }
    (headers, data)
}

/// Feed `chunks` one call each (as the daemon may), then close `close`;
/// return the rendered output.
pub fn run<P: Protocol>(chunks: &[TestChunk], close: &[u64]) -> Vec<String> {
    let mut engine = Engine::<P>::new();
    let names = P::info().field_names;
    let mut lines = Vec::new();
    for chunk in chunks {
        let (headers, data) = to_wire(std::slice::from_ref(chunk));
        lines.extend(render(&engine.feed(&headers, &data), names));
    }
    lines.extend(render(&engine.close(close), names));
    lines
}

/// Run a [`Case`] natively and compare with its expectation, with a
/// readable diff on failure.
pub fn check<P: Protocol>(case: &Case) {
    let got = run::<P>(&case.chunks, &case.close);
    assert_eq!(got, case.expect, "case `{}`:\n got: {got:#?}\nwant: {:#?}", case.name, case.expect);
}

/// Render a batch as lines: one per message
/// (`conn kind direction start-end size=N [id=I] ok|fail name=value...`),
/// one per error (`conn error: reason`). Both the native and the wasm paths
/// are compared through this text.
pub fn render<S: AsRef<str>>(batch: &Batch, field_names: &[S]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut field = 0usize;
    for i in 0..batch.conn.len() {
        let flags = batch.flags[i];
        let kind = match MessageKind::from_flags(flags) {
            Some(MessageKind::Request) => "req",
            Some(MessageKind::Response) => "resp",
            Some(MessageKind::Oneway) => "oneway",
            None => "?",
        };
        let dir = if flags & MSG_INGRESS != 0 { "in" } else { "out" };
        let mut line =
            format!("{} {kind} {dir} {}-{} size={}", batch.conn[i], batch.start_ns[i], batch.end_ns[i], batch.size[i]);
        if flags & MSG_HAS_PAIR_ID != 0 {
            line.push_str(&format!(" id={}", batch.pair_id[i]));
        }
        line.push_str(if flags & MSG_SUCCESS != 0 { " ok" } else { " fail" });
        for _ in 0..batch.field_count[i] {
            let key = usize::from(batch.field_key[field]);
            let name = field_names.get(key).map_or("?", |s| s.as_ref());
            let start = batch.field_offset[field] as usize;
            let value = &batch.arena[start..start + batch.field_len[field] as usize];
            line.push_str(&format!(" {name}={}", String::from_utf8_lossy(value)));
            field += 1;
        }
        lines.push(line);
    }
    for e in &batch.errors {
        lines.push(format!("{} error: {}", e.conn, e.reason));
    }
    lines
}

/// Every way of cutting one stream in two: feeds `stream` (one direction)
/// split at each position and returns the outputs, timestamps removed, so a
/// test can check they are all the same as the unsplit one.
pub fn all_two_way_splits<P: Protocol>(direction: Direction, stream: &[u8]) -> Vec<(usize, Vec<String>)> {
    (1..stream.len())
        .map(|at| {
            let chunks = [TestChunk::new(direction, 1, &stream[..at]), TestChunk::new(direction, 1, &stream[at..])];
            (at, run::<P>(&chunks, &[1]))
        })
        .collect()
}

/// A small deterministic random generator (xorshift64*) for property tests,
/// so plugins need no extra crate and failures replay from the seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// The same bytes cut differently: each run of consecutive untruncated
/// chunks of one direction and connection is joined and re-cut at random
/// points (one to five pieces per run). Order across directions is kept,
/// so a parser must give the same messages (timestamps aside). Only for
/// byte-stream protocols: datagram protocols take meaning from boundaries.
pub fn rechunk(chunks: &[TestChunk], rng: &mut Rng) -> Vec<TestChunk> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < chunks.len() {
        let first = &chunks[i];
        if first.real_len.is_some() {
            out.push(first.clone());
            i += 1;
            continue;
        }
        let mut joined = Vec::new();
        let mut j = i;
        while j < chunks.len()
            && chunks[j].real_len.is_none()
            && chunks[j].direction == first.direction
            && chunks[j].conn == first.conn
        {
            joined.extend_from_slice(&chunks[j].bytes);
            j += 1;
        }
        let pieces = 1 + rng.below(5);
        let mut cuts: Vec<usize> = (1..pieces).map(|_| rng.below(joined.len().max(1))).collect();
        cuts.push(0);
        cuts.push(joined.len());
        cuts.sort_unstable();
        cuts.dedup();
        for w in cuts.windows(2) {
            let mut piece = first.clone();
            piece.bytes = joined[w[0]..w[1]].to_vec();
            out.push(piece);
        }
        i = j;
    }
    out
}

/// Rendered lines without their `start-end` timestamps (the third word).
pub fn without_times(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            let mut words: Vec<&str> = l.split(' ').collect();
            if words.len() > 3 && words[1] != "error:" {
                words.remove(3);
            }
            words.join(" ")
        })
        .collect()
}

/// Property check over a plugin's cases: `rounds` random re-cuttings of
/// each case (see [`rechunk`]) give the same messages as the case itself.
pub fn check_rechunking<P: Protocol>(cases: &[Case], rounds: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    for case in cases {
        let want = until_error(without_times(&run::<P>(&case.chunks, &case.close)));
        for round in 0..rounds {
            let chunks = rechunk(&case.chunks, &mut rng);
            let got = until_error(without_times(&run::<P>(&chunks, &case.close)));
            let cuts: Vec<usize> = chunks.iter().map(|c| c.bytes.len()).collect();
            assert_eq!(got, want, "case `{}`, round {round} (seed {seed}), chunk sizes {cuts:?}", case.name);
        }
    }
}

/// Lines up to each connection's first error: once a connection is given
/// up, the rest of its bytes start afresh and may fail again, once per
/// piece, so what follows depends on the cutting.
fn until_error(lines: Vec<String>) -> Vec<String> {
    let mut failed: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for line in lines {
        let conn = line.split(' ').next().unwrap_or_default().to_owned();
        if failed.contains(&conn) {
            continue;
        }
        if line.split(' ').nth(1) == Some("error:") {
            // The reason may quote the bytes at hand: compare the fact only.
            out.push(format!("{conn} error"));
            failed.push(conn);
            continue;
        }
        out.push(line);
    }
    out
}

/// Robustness check: feeds `rounds` inputs made from the cases' chunks by
/// random mutation (flipped, inserted, deleted and repeated bytes, random
/// cuts, random truncation marks) plus purely random bytes, in both
/// directions and roles. Only checks that nothing panics: every input must
/// end as messages or per-connection errors.
pub fn fuzz<P: Protocol>(cases: &[Case], rounds: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let seeds: Vec<&TestChunk> = cases.iter().flat_map(|c| &c.chunks).collect();
    for _ in 0..rounds {
        let mut chunks = Vec::new();
        for _ in 0..1 + rng.below(8) {
            let mut chunk = match seeds.get(rng.below(seeds.len().max(1))) {
                Some(c) if rng.below(8) != 0 => (*c).clone(),
                _ => TestChunk::egress(0, Vec::new()),
            };
            mutate(&mut chunk.bytes, &mut rng);
            if rng.below(4) == 0 {
                chunk.direction = if rng.below(2) == 0 { Direction::Egress } else { Direction::Ingress };
            }
            if rng.below(8) == 0 {
                chunk.role = [Role::Client, Role::Server, Role::Unknown][rng.below(3)];
            }
            if rng.below(10) == 0 {
                chunk.real_len = Some(chunk.bytes.len() as u64 + rng.next_u64() % 100_000);
            }
            chunks.push(chunk);
        }
        let _ = run::<P>(&chunks, &[1]);
    }
}

fn mutate(bytes: &mut Vec<u8>, rng: &mut Rng) {
    for _ in 0..rng.below(6) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(6) {
            0 if at < bytes.len() => bytes[at] ^= 1 << rng.below(8),
            1 => bytes.insert(at, rng.next_u64() as u8),
            2 if at < bytes.len() => {
                bytes.remove(at);
            }
            3 => bytes.truncate(at),
            4 => {
                let copy = bytes[at..].to_vec();
                bytes.extend_from_slice(&copy[..copy.len().min(64)]);
            }
            _ => bytes.extend((0..rng.below(32)).map(|_| rng.next_u64() as u8)),
        }
    }
}

/// Chunks of a fixture file written by `tests/fixtures/record.py`: `#`
/// comment lines, then one `CONN out HEX` or `CONN in HEX` line per chunk,
/// from the client's point of view. Chunk `i` gets timestamp `i + 1`.
pub fn load_fixture(path: &std::path::Path) -> Vec<TestChunk> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut chunks = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split(' ').collect();
        let [conn, direction, hex] = words[..] else { panic!("{}:{}: want `CONN out|in HEX`", path.display(), n + 1) };
        let conn: u64 = conn.parse().unwrap_or_else(|e| panic!("{}:{}: connection: {e}", path.display(), n + 1));
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
            .collect::<Result<Vec<u8>, _>>()
            .unwrap_or_else(|e| panic!("{}:{}: bad hex: {e}", path.display(), n + 1));
        let ts = chunks.len() as u64 + 1;
        let chunk = match direction {
            "out" => TestChunk::egress(ts, bytes),
            "in" => TestChunk::ingress(ts, bytes),
            other => panic!("{}:{}: direction `{other}` is neither out nor in", path.display(), n + 1),
        };
        chunks.push(chunk.on(conn));
    }
    chunks
}

/// Check every `*.chunks` fixture in `dir` against the `*.expect` file next
/// to it (rendered lines without timestamps), then against random
/// re-cuttings of itself unless its header says `# datagrams`. With
/// `WIRELENS_BLESS=1` the `.expect` files are (re)written instead: review
/// the diff before committing.
pub fn check_fixtures<P: Protocol>(dir: &std::path::Path, rounds: usize) -> usize {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "chunks"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no fixtures in {}", dir.display());
    for path in &paths {
        let chunks = load_fixture(path);
        let mut conns: Vec<u64> = chunks.iter().map(|c| c.conn).collect();
        conns.sort_unstable();
        conns.dedup();
        let got = without_times(&run::<P>(&chunks, &conns));
        let expect_path = path.with_extension("expect");
        if std::env::var_os("WIRELENS_BLESS").is_some() {
            std::fs::write(&expect_path, got.join("\n") + "\n").expect("write .expect");
            continue;
        }
        let want: Vec<String> = std::fs::read_to_string(&expect_path)
            .unwrap_or_else(|e| panic!("{}: {e} (WIRELENS_BLESS=1 writes it)", expect_path.display()))
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(got, want, "fixture {}", path.display());
        let datagrams = std::fs::read_to_string(path).is_ok_and(|t| t.lines().any(|l| l.trim() == "# datagrams"));
        if !datagrams {
            let case = Case { name: "fixture", chunks, close: conns, expect: vec![] };
            check_rechunking::<P>(std::slice::from_ref(&case), rounds, path.as_os_str().len() as u64);
        }
    }
    paths.len()
}
