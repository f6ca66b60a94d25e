//! Run a [`Protocol`] natively on test chunks and render what it produced as
//! plain lines, so the same cases can be checked natively and, by the
//! daemon's tests, through the WebAssembly build (where `usize` is 32-bit).

use crate::wire::{MSG_HAS_PAIR_ID, MSG_INGRESS, MSG_SUCCESS, MSG_UNSEEN};
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
    /// One whole datagram (UDP).
    pub datagram: bool,
    /// Not bytes: the host's clock at `timestamp_ns` (see [`TestChunk::tick`]).
    pub tick: bool,
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
            datagram: false,
            tick: false,
        }
    }

    /// One line about the chunk: where, when, how long, and its first bytes.
    pub fn summary(&self) -> String {
        let head = String::from_utf8_lossy(&self.bytes[..self.bytes.len().min(40)]).escape_debug().to_string();
        format!(
            "conn {} {:?} {:?} ts={} len={} real={:?}{}{} {head:?}",
            self.conn,
            self.direction,
            self.role,
            self.timestamp_ns,
            self.bytes.len(),
            self.real_len,
            if self.datagram { " datagram" } else { "" },
            if self.tick { " tick" } else { "" }
        )
    }

    /// The host's clock at `ts` (lost regions quiet for long enough end).
    pub fn tick(ts: u64) -> Self {
        Self { tick: true, ..Self::new(Direction::Egress, ts, []) }
    }

    /// As one whole datagram.
    pub fn datagram(mut self) -> Self {
        self.datagram = true;
        self
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
            datagram: c.datagram,
            tick: c.tick,
        });
    }
    (headers, data)
}

/// Feed `chunks` one call each (as the daemon may), then close `close`;
/// return the rendered output. Every batch is checked against the
/// invariants (see [`check_invariants`]).
pub fn run<P: Protocol>(chunks: &[TestChunk], close: &[u64]) -> Vec<String> {
    let mut engine = Engine::<P>::new();
    let names = P::info().field_names;
    let mut lines = Vec::new();
    let mut batches = Vec::new();
    for chunk in chunks {
        let (headers, data) = to_wire(std::slice::from_ref(chunk));
        let batch = engine.feed(&headers, &data);
        lines.extend(render(&batch, names));
        batches.push(batch);
    }
    let batch = engine.close(close);
    lines.extend(render(&batch, names));
    batches.push(batch);
    if let Err(e) = check_invariants(chunks, &batches) {
        let summary: Vec<String> = chunks.iter().map(TestChunk::summary).collect();
        panic!("invariant broken: {e}\nchunks:\n{}\noutput: {lines:#?}", summary.join("\n"));
    }
    lines
}

/// What must hold of any output, whatever the input: no message ends
/// before it starts, and per connection and direction the messages'
/// sizes add up to at most the bytes that moved (real lengths, captured
/// or not).
pub fn check_invariants(chunks: &[TestChunk], batches: &[Batch]) -> Result<(), String> {
    let mut moved: std::collections::BTreeMap<(u64, bool), u64> = Default::default();
    for c in chunks.iter().filter(|c| !c.tick) {
        let len = c.real_len.unwrap_or(c.bytes.len() as u64).max(c.bytes.len() as u64);
        *moved.entry((c.conn, c.direction == Direction::Ingress)).or_default() += len;
    }
    let mut claimed: std::collections::BTreeMap<(u64, bool), u64> = Default::default();
    for b in batches {
        for i in 0..b.conn.len() {
            if b.end_ns[i] < b.start_ns[i] {
                return Err(format!(
                    "message {i} of conn {} ends at {} before it starts at {}",
                    b.conn[i], b.end_ns[i], b.start_ns[i]
                ));
            }
            let key = (b.conn[i], b.flags[i] & MSG_INGRESS != 0);
            *claimed.entry(key).or_default() += b.size[i];
        }
    }
    for (key, size) in claimed {
        let total = moved.get(&key).copied().unwrap_or(0);
        if size > total {
            return Err(format!(
                "conn {} {}: messages claim {size} bytes of the {total} that moved",
                key.0,
                if key.1 { "in" } else { "out" }
            ));
        }
    }
    Ok(())
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
        line.push_str(if flags & MSG_UNSEEN != 0 {
            " unseen"
        } else if flags & MSG_SUCCESS != 0 {
            " ok"
        } else {
            " fail"
        });
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

/// Kernel ring-buffer overflows, simulated for tests of lost records: a
/// record whose time falls in a window is lost, and so are some near its
/// edges. A ring fills unevenly: just before a window (and just after it,
/// as the reader frees room) only the larger records fail, or only the
/// smaller, or some of either.
#[derive(Clone, Debug)]
pub struct RingLoss {
    /// Each window's first and last time.
    pub windows: Vec<(u64, u64)>,
    /// Each window's ragged edges: how long before it and after it, and
    /// which records they lose: 0 requests, 1 responses, 2 none, else some
    /// of either (by the record's time and `seed`).
    pub edges: Vec<(u64, u64, usize)>,
    pub seed: u64,
}

impl RingLoss {
    /// Whether the record at time `t` (a request's or a response's) is lost.
    pub fn lost(&self, t: u64, request: bool) -> bool {
        self.windows.iter().zip(&self.edges).any(|(&(from, to), &(before, after, mode))| {
            let at_edge = (from.saturating_sub(before)..from).contains(&t) || (to + 1..=to + after).contains(&t);
            let edge_loses = match mode {
                0 => request,
                1 => !request,
                2 => false,
                _ => Rng::new(t * 7919 + self.seed).below(2) == 0,
            };
            (from..=to).contains(&t) || at_edge && edge_loses
        })
    }

    /// The chunks the host feeds a plugin for these records (time,
    /// direction, bytes; in time order) of connection 1 in `role`, whose
    /// requests go in direction `requests`: the records not lost, each
    /// after a chunk of no bytes standing for those lost before it in its
    /// direction (a hole, as the host reports one).
    pub fn chunks(&self, records: &[(u64, Direction, &[u8])], role: Role, requests: Direction) -> Vec<TestChunk> {
        let mut chunks = Vec::new();
        let mut hole = [0u64; 2];
        for &(t, d, bytes) in records {
            let at = |b: &[u8]| TestChunk::egress(t, b).direction(d).role(role);
            if self.lost(t, d == requests) {
                hole[d.index()] += bytes.len() as u64;
                continue;
            }
            if hole[d.index()] > 0 {
                chunks.push(at(b"").truncated(std::mem::take(&mut hole[d.index()])));
            }
            chunks.push(at(bytes));
        }
        chunks
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
        if first.real_len.is_some() || first.datagram || first.tick {
            out.push(first.clone());
            i += 1;
            continue;
        }
        let mut joined = Vec::new();
        let mut j = i;
        while j < chunks.len()
            && chunks[j].real_len.is_none()
            && !chunks[j].datagram
            && !chunks[j].tick
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

/// Every chunk that is not a datagram cut into one-byte chunks (each with
/// the chunk's timestamp and, for a truncated chunk, its missing bytes on
/// the last piece): the output must be the same, timestamps included, as
/// for the chunks whole. Servers read length prefixes a byte at a time
/// (dnsmasq does), and a parser must not care.
pub fn check_one_byte_reads<P: Protocol>(cases: &[Case]) {
    for case in cases {
        let want = until_error(run::<P>(&case.chunks, &case.close));
        let got = until_error(run::<P>(&one_byte_reads(&case.chunks), &case.close));
        assert_eq!(got, want, "case `{}` read one byte at a time", case.name);
    }
}

/// The chunks of [`check_one_byte_reads`]: every stream chunk cut into
/// one-byte chunks.
pub fn one_byte_reads(chunks: &[TestChunk]) -> Vec<TestChunk> {
    let mut split = Vec::new();
    for c in chunks {
        if c.datagram || c.tick || c.bytes.len() <= 1 {
            split.push(c.clone());
            continue;
        }
        let n = c.bytes.len();
        for (i, b) in c.bytes.iter().enumerate() {
            let mut piece = c.clone();
            piece.bytes = vec![*b];
            piece.real_len = if i + 1 == n { c.real_len.map(|r| r - (n as u64 - 1)) } else { None };
            split.push(piece);
        }
    }
    split
}

/// The same case seen from the other end (usually the server): what the
/// client sent is what the server received. Chunks keep their order;
/// directions flip and client and server roles swap (unknown roles stay
/// unknown). Output lines are given back with `in` and `out` swapped, so
/// they compare with the original view.
pub fn as_server(case: &Case) -> Case {
    let chunks = case
        .chunks
        .iter()
        .map(|c| {
            let mut s = c.clone();
            if !c.tick {
                s.direction = match c.direction {
                    Direction::Egress => Direction::Ingress,
                    Direction::Ingress => Direction::Egress,
                };
                s.role = match c.role {
                    Role::Client => Role::Server,
                    Role::Server => Role::Client,
                    Role::Unknown => Role::Unknown,
                };
            }
            s
        })
        .collect();
    Case {
        name: case.name,
        chunks,
        close: case.close.clone(),
        expect: case.expect.iter().map(|l| swap_directions(l)).collect(),
    }
}

fn swap_directions(line: &str) -> String {
    line.split(' ')
        .enumerate()
        .map(|(i, w)| match (i, w) {
            (2, "in") => "out",
            (2, "out") => "in",
            _ => w,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every case gives the same messages seen from the server's side (see
/// [`as_server`]), whole and read a byte at a time.
pub fn check_server_side<P: Protocol>(cases: &[Case]) {
    for case in cases {
        let client = until_error(run::<P>(&case.chunks, &case.close));
        let server_case = as_server(case);
        let server: Vec<String> =
            until_error(run::<P>(&server_case.chunks, &server_case.close)).iter().map(|l| swap_directions(l)).collect();
        assert_eq!(server, client, "case `{}` seen from the server", case.name);
    }
    let servers: Vec<Case> = cases.iter().map(as_server).collect();
    check_one_byte_reads::<P>(&servers);
}

/// The lowest detection confidence with which the daemon lets a plugin
/// claim a connection.
pub const CLAIM_THRESHOLD: u8 = 50;

/// First bytes of protocols a plugin must not claim: other protocols'
/// openings in each direction (memcached text and binary, MQTT, AMQP,
/// NATS, Kafka, a TLS record, the HTTP/2 preface and a server's first
/// SETTINGS) and random bytes. `(what, direction of the bytes as the
/// client sees them, bytes)`.
pub fn foreign_openings() -> Vec<(String, Direction, Vec<u8>)> {
    let mut out: Vec<(String, Direction, Vec<u8>)> = vec![
        ("memcached text get".into(), Direction::Egress, b"get user:1\r\n".to_vec()),
        ("memcached text set".into(), Direction::Egress, b"set k 0 0 5\r\nhello\r\n".to_vec()),
        ("memcached text reply".into(), Direction::Ingress, b"VALUE k 0 5\r\nhello\r\nEND\r\n".to_vec()),
        ("memcached stored".into(), Direction::Ingress, b"STORED\r\n".to_vec()),
        ("memcached version".into(), Direction::Egress, b"version\r\n".to_vec()),
        (
            "memcached binary get".into(),
            Direction::Egress,
            [&[0x80u8, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 7][..], &[0; 8], b"k"].concat(),
        ),
        (
            "memcached binary reply".into(),
            Direction::Ingress,
            [&[0x81u8, 0x00, 0x00, 0x00, 4, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 7][..], &[0; 8], &[0, 0, 0, 0], b"hello"]
                .concat(),
        ),
        (
            "MQTT CONNECT".into(),
            Direction::Egress,
            [&[0x10u8, 0x10, 0x00, 0x04][..], b"MQTT", &[0x04, 0x02, 0x00, 0x3c, 0x00, 0x04], b"wl-1"].concat(),
        ),
        ("MQTT CONNACK".into(), Direction::Ingress, vec![0x20, 0x02, 0x00, 0x00]),
        ("AMQP header".into(), Direction::Egress, b"AMQP\x00\x00\x09\x01".to_vec()),
        (
            "AMQP connection.start".into(),
            Direction::Ingress,
            [&[0x01u8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x0a, 0x00, 0x0a, 0x00, 0x09][..], &[0; 7], &[0xce]]
                .concat(),
        ),
        ("NATS INFO".into(), Direction::Ingress, b"INFO {\"server_id\":\"x\",\"version\":\"2.9.0\"}\r\n".to_vec()),
        ("NATS CONNECT".into(), Direction::Egress, b"CONNECT {\"verbose\":false}\r\nPING\r\n".to_vec()),
        ("NATS PUB".into(), Direction::Egress, b"PUB greet 5\r\nhello\r\n".to_vec()),
        (
            "Kafka ApiVersions".into(),
            Direction::Egress,
            [&[0u8, 0, 0, 0x14, 0, 0x12, 0, 3, 0, 0, 0, 1, 0, 0x0a][..], b"kafka-python"].concat(),
        ),
        (
            "TLS ClientHello".into(),
            Direction::Egress,
            [&[0x16u8, 0x03, 0x01, 0x00, 0x2f, 0x01, 0x00, 0x00, 0x2b, 0x03, 0x03][..], &[7; 32], &[0, 0, 2, 0x13, 1]]
                .concat(),
        ),
        (
            "TLS ServerHello".into(),
            Direction::Ingress,
            [&[0x16u8, 0x03, 0x03, 0x00, 0x5a, 0x02][..], &[9; 40]].concat(),
        ),
        (
            "HTTP/2 preface".into(),
            Direction::Egress,
            [&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..], &[0, 0, 0, 4, 0, 0, 0, 0, 0]].concat(),
        ),
        (
            "HTTP/2 server SETTINGS".into(),
            Direction::Ingress,
            vec![0, 0, 12, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100, 0, 4, 0, 0, 0xff, 0xff],
        ),
    ];
    let mut rng = Rng::new(0x0f0e_0d0c);
    for i in 0..16 {
        let len = 1 + rng.below(300);
        let bytes = (0..len).map(|_| rng.next_u64() as u8).collect();
        let direction = if i % 2 == 0 { Direction::Egress } else { Direction::Ingress };
        out.push((format!("random bytes #{i}"), direction, bytes));
    }
    out
}

/// The plugin claims none of [`foreign_openings`], in either role, seen
/// from the client or the server, whole or by their first bytes.
pub fn check_claims_no_foreign_protocol<P: Protocol>() {
    check_claims_none_but::<P>(&[]);
}

/// [`check_claims_no_foreign_protocol`] for a plugin of one of the
/// protocols there: the openings whose names start with one of `own` are
/// its own.
pub fn check_claims_none_but<P: Protocol>(own: &[&str]) {
    let engine = Engine::<P>::new();
    let name = P::info().name;
    for (what, client_dir, bytes) in foreign_openings() {
        if own.iter().any(|o| what.starts_with(o)) {
            continue;
        }
        let server_dir = match client_dir {
            Direction::Egress => Direction::Ingress,
            Direction::Ingress => Direction::Egress,
        };
        for (dir, role) in [(client_dir, Role::Client), (server_dir, Role::Server), (client_dir, Role::Unknown)] {
            for len in [bytes.len(), bytes.len().min(8), bytes.len().min(3)] {
                let confidence = engine.detect(dir, role, &bytes[..len]);
                assert!(
                    confidence < CLAIM_THRESHOLD,
                    "{name} claims {what} ({dir:?}, {role:?}, first {len} bytes) with confidence {confidence}"
                );
            }
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
    for chunks in fuzz_inputs(cases, rounds, seed) {
        let _ = run::<P>(&chunks, &[1]);
    }
}

/// The inputs [`fuzz`] feeds: `rounds` streams of one to eight chunks,
/// each a mutated chunk of the cases (or random bytes), sometimes with
/// its direction, role or real length changed. Close connection 1 after.
pub fn fuzz_inputs(cases: &[Case], rounds: usize, seed: u64) -> Vec<Vec<TestChunk>> {
    let mut rng = Rng::new(seed);
    let seeds: Vec<&TestChunk> = cases.iter().flat_map(|c| &c.chunks).collect();
    let mut inputs = Vec::with_capacity(rounds);
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
        inputs.push(chunks);
    }
    inputs
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
    // A `# datagrams` line: each chunk is one datagram (UDP).
    if text.lines().any(|l| l.trim() == "# datagrams") {
        chunks.iter_mut().for_each(|c| c.datagram = true);
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
            check_one_byte_reads::<P>(std::slice::from_ref(&case));
            check_server_side::<P>(std::slice::from_ref(&case));
        }
    }
    paths.len()
}
