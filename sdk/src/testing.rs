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
