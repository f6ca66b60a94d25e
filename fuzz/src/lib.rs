//! The driver shared by every fuzz target: decodes a fuzz input into
//! operations on one [`Engine`] (chunks on up to three connections, clock
//! ticks, feed calls of one or several chunks, closes), runs them, and
//! panics when an output breaks an invariant, so libFuzzer reports it.
//!
//! # Input format
//!
//! A sequence of records, read until the input ends (a record cut short by
//! the end is dropped). Each starts with a header byte `H`; `H & 3` says
//! what it is.
//!
//! **Chunk** (`H & 3` is 0, 1 or 2: connection 1, 2 or 3):
//!
//! ```text
//! H  T  [X0 X1 X2 if truncated]  LEN (LEB128, at most 3 bytes)  BYTES[LEN]
//! ```
//!
//! - `H` bit 2: ingress (else egress); bits 3-4: role (0 client, 1 server,
//!   2 and 3 unknown); bit 5: datagram; bit 6: truncated; bit 7: goes in
//!   the same `feed` call as the chunk before it (else the chunks pending
//!   are fed first, and this one starts a new call).
//! - `T` moves the clock, then the chunk gets the clock's time: `0x00..=0xDF`
//!   adds `T` x 10 us; `0xE0..=0xEF` adds 1 to 16 s (past the SDK's quiet
//!   time); `0xF0..=0xFF` goes back 10 to 160 us (events reordered between
//!   CPUs).
//! - truncated: `X0 X1 X2`, little-endian and masked to 20 bits, is how
//!   many bytes the call moved beyond the captured ones (up to ~1 MB).
//! - `LEN` is clamped to the bytes left, so a last chunk may be short.
//!
//! **Control** (`H & 3 == 3`), by `(H >> 2) & 3`:
//!
//! - 0, tick: `A` follows; the clock moves `A` x 100 ms, then a tick chunk
//!   at the clock's time (bit 7 as for chunks: same `feed` call or not).
//! - 1, feed: the chunks pending are fed (possibly none: an empty call).
//!   With bit 4 set, extend instead: `K` follows, and the latest chunk's
//!   bytes are repeated until it holds [`extend_target`]`(K)` bytes, if
//!   fewer (512 B steps up to 120 KiB, then 64 KiB steps up to 1 MiB; at
//!   most [`EXTEND_BUDGET`] added per input), to reach the plugins' buffer
//!   limits with small inputs. A truncated chunk keeps its uncaptured
//!   bytes.
//! - 2, close: the pending chunks are fed, then `close` of the connections
//!   whose bits are set in `H` bits 4, 5, 6 (connections 1, 2, 3).
//! - 3, set clock: 8 bytes follow, little-endian, masked to 60 bits.
//!
//! At the end the pending chunks are fed and all three connections closed.
//!
//! So the raw bytes of a recorded stream make meaningful chunks: a fixture
//! chunk is `H T LEN BYTES` (see [`encode`], which the seed generator uses).

use std::collections::BTreeMap;

use wirelens_sdk::testing::{check_invariants, TestChunk};
use wirelens_sdk::wire::MSG_KIND_MASK;
use wirelens_sdk::{Batch, Chunk, Chunks, Direction, Engine, Protocol, Role};

/// Where the clock starts (1 s), so small steps back stay positive.
pub const START_NS: u64 = 1_000_000_000;
/// Most bytes a truncated chunk's call moved beyond the captured ones.
pub const MAX_EXTRA: u64 = 0xF_FFFF;

const H_INGRESS: u8 = 1 << 2;
const H_ROLE_SHIFT: u8 = 3;
const H_DATAGRAM: u8 = 1 << 5;
const H_TRUNCATED: u8 = 1 << 6;
const H_JOIN: u8 = 1 << 7;
const H_CONTROL: u8 = 3;
const OP_TICK: u8 = 0;
const OP_FEED: u8 = 1;
const OP_CLOSE: u8 = 2;
const OP_SET_CLOCK: u8 = 3;
const CLOCK_MASK: u64 = (1 << 60) - 1;
/// In a feed record: extend the last chunk instead.
const H_EXTEND: u8 = 1 << 4;
/// Most bytes extend records may add to one input's chunks (they are by
/// far the dearest inputs to run: a whole buffer's worth of parsing).
pub const EXTEND_BUDGET: usize = 1 << 20;

/// The size an extend record's `K` asks for: `K` x 512 bytes below `0xF0`
/// (up to 120 KiB), 64 KiB to 1 MiB from there (so that random bytes
/// seldom ask for the dearest sizes).
pub fn extend_target(k: u8) -> usize {
    match k {
        0..=0xEF => usize::from(k) * 512,
        _ => usize::from(k - 0xEF) * 65536,
    }
}

/// One decoded operation.
#[derive(Clone, Debug)]
pub enum Op {
    /// A chunk (or a tick chunk), and whether it joins the previous chunk's
    /// feed call.
    Chunk { chunk: TestChunk, join: bool },
    /// Feed the pending chunks.
    Feed,
    /// Feed the pending chunks, then close these connections.
    Close(Vec<u64>),
}

/// Read a fuzz input as operations (see the module docs).
pub fn decode(data: &[u8]) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut r = Reader { data, pos: 0 };
    let mut clock = START_NS;
    let mut extend_budget = EXTEND_BUDGET;
    while let Some(h) = r.byte() {
        if h & 3 == H_CONTROL {
            match (h >> 2) & 3 {
                OP_TICK => {
                    let Some(a) = r.byte() else { break };
                    clock = clock.saturating_add(u64::from(a) * 100_000_000);
                    ops.push(Op::Chunk { chunk: TestChunk::tick(clock), join: h & H_JOIN != 0 });
                }
                OP_FEED if h & H_EXTEND == 0 => ops.push(Op::Feed),
                OP_FEED => {
                    let Some(k) = r.byte() else { break };
                    let last = ops.iter_mut().rev().find_map(|op| match op {
                        Op::Chunk { chunk, .. } if !chunk.tick => Some(chunk),
                        _ => None,
                    });
                    if let Some(c) = last.filter(|c| !c.bytes.is_empty()) {
                        let want = extend_target(k).min(c.bytes.len() + extend_budget);
                        extend_budget -= want.saturating_sub(c.bytes.len());
                        let uncaptured = c.real_len.map(|r| r.saturating_sub(c.bytes.len() as u64));
                        // Doubling (a few copies), not one copy per pattern.
                        while c.bytes.len() < want {
                            let n = c.bytes.len().min(want - c.bytes.len());
                            c.bytes.extend_from_within(..n);
                        }
                        c.real_len = uncaptured.map(|x| c.bytes.len() as u64 + x);
                    }
                }
                OP_CLOSE => {
                    let conns = (0..3u64).filter(|i| h & (1 << (4 + i)) != 0).map(|i| i + 1).collect();
                    ops.push(Op::Close(conns));
                }
                _ => {
                    let Some(bytes) = r.take(8) else { break };
                    clock = u64::from_le_bytes(bytes.try_into().expect("8 bytes")) & CLOCK_MASK;
                }
            }
            continue;
        }
        let Some(t) = r.byte() else { break };
        clock = match t {
            0x00..=0xDF => clock.saturating_add(u64::from(t) * 10_000),
            0xE0..=0xEF => clock.saturating_add(u64::from(t - 0xDF) * 1_000_000_000),
            _ => clock.saturating_sub(u64::from(t - 0xEF) * 10_000),
        };
        let extra = if h & H_TRUNCATED != 0 {
            let Some(x) = r.take(3) else { break };
            Some((u64::from(x[0]) | u64::from(x[1]) << 8 | u64::from(x[2]) << 16) & MAX_EXTRA)
        } else {
            None
        };
        let Some(len) = r.leb128() else { break };
        let bytes = r.take_up_to(len);
        let direction = if h & H_INGRESS != 0 { Direction::Ingress } else { Direction::Egress };
        let role = match (h >> H_ROLE_SHIFT) & 3 {
            0 => Role::Client,
            1 => Role::Server,
            _ => Role::Unknown,
        };
        let chunk = TestChunk {
            conn: u64::from(h & 3) + 1,
            direction,
            role,
            timestamp_ns: clock,
            bytes: bytes.to_vec(),
            real_len: extra.map(|x| bytes.len() as u64 + x),
            datagram: h & H_DATAGRAM != 0,
            tick: false,
        };
        ops.push(Op::Chunk { chunk, join: h & H_JOIN != 0 });
    }
    ops
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.data.get(self.pos..self.pos + n)?;
        self.pos += n;
        Some(s)
    }

    fn take_up_to(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len() - self.pos);
        self.take(n).expect("clamped")
    }

    /// Little-endian base 128, at most 3 bytes (21 bits).
    fn leb128(&mut self) -> Option<usize> {
        let mut v = 0usize;
        for i in 0..3 {
            let b = self.byte()?;
            v |= usize::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                break;
            }
        }
        Some(v)
    }
}

/// The wire form of test chunks (as `wirelens_sdk::testing::to_wire`).
fn to_wire<'a>(chunks: impl Iterator<Item = &'a TestChunk> + Clone) -> (Chunks, Vec<u8>) {
    let mut data = Vec::with_capacity(chunks.clone().map(|c| c.bytes.len()).sum());
    let mut headers = Chunks::new();
    for c in chunks {
        data.extend_from_slice(&c.bytes);
        let mut row = Chunk::stream(c.conn, c.direction, c.role, c.timestamp_ns, c.bytes.len() as u32);
        row.real_len = c.real_len.unwrap_or(c.bytes.len() as u64);
        row.datagram = c.datagram;
        row.tick = c.tick;
        headers.push(&row);
    }
    (headers, data)
}

/// Run one fuzz input through a fresh `Engine<P>` and check every batch;
/// panics (with the decoded operations) on a broken invariant.
pub fn run<P: Protocol>(data: &[u8]) {
    let ops = decode(data);
    let names = P::info().field_names;
    let mut engine = Engine::<P>::new();
    let mut batches: Vec<Batch> = Vec::new();
    // The chunks of the next feed call, as indexes into `ops`.
    let mut pending: Vec<usize> = Vec::new();

    let feed = |engine: &mut Engine<P>, pending: &mut Vec<usize>, batches: &mut Vec<Batch>| {
        let (headers, bytes) = to_wire(pending.iter().map(|&i| match &ops[i] {
            Op::Chunk { chunk, .. } => chunk,
            _ => unreachable!("pending holds chunks"),
        }));
        let batch = engine.feed(&headers, &bytes);
        check_batch(&batch, names, &ops);
        batches.push(batch);
        pending.clear();
    };

    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Chunk { join, .. } => {
                if !join && !pending.is_empty() {
                    feed(&mut engine, &mut pending, &mut batches);
                }
                pending.push(i);
            }
            Op::Feed => feed(&mut engine, &mut pending, &mut batches),
            Op::Close(conns) => {
                if !pending.is_empty() {
                    feed(&mut engine, &mut pending, &mut batches);
                }
                let batch = engine.close(conns);
                check_batch(&batch, names, &ops);
                batches.push(batch);
            }
        }
    }
    if !pending.is_empty() {
        feed(&mut engine, &mut pending, &mut batches);
    }
    let batch = engine.close(&[1, 2, 3]);
    check_batch(&batch, names, &ops);
    batches.push(batch);

    let all: Vec<TestChunk> = ops
        .iter()
        .filter_map(|op| match op {
            // check_invariants only reads lengths: no need to copy the bytes.
            Op::Chunk { chunk: c, .. } => Some(TestChunk {
                conn: c.conn,
                direction: c.direction,
                role: c.role,
                timestamp_ns: c.timestamp_ns,
                bytes: Vec::new(),
                real_len: Some(c.real_len.unwrap_or(0).max(c.bytes.len() as u64)),
                datagram: c.datagram,
                tick: c.tick,
            }),
            _ => None,
        })
        .collect();
    if let Err(e) = check_invariants(&all, &batches) {
        fail(&format!("check_invariants: {e}"), &ops, &batches, names);
    }
}

/// The batch's columns agree, every message has a kind, and every field
/// has a known key and a UTF-8 value inside the arena.
fn check_batch(batch: &Batch, names: &[&str], ops: &[Op]) {
    let n = batch.conn.len();
    let columns = [
        ("start_ns", batch.start_ns.len()),
        ("end_ns", batch.end_ns.len()),
        ("size", batch.size.len()),
        ("pair_id", batch.pair_id.len()),
        ("flags", batch.flags.len()),
        ("field_count", batch.field_count.len()),
    ];
    for (name, len) in columns {
        if len != n {
            fail(&format!("column {name} has {len} rows, conn has {n}"), ops, &[], names);
        }
    }
    let fields: usize = batch.field_count.iter().map(|&c| usize::from(c)).sum();
    for (name, len) in
        [("field_key", batch.field_key.len()), ("field_offset", batch.field_offset.len()), ("field_len", batch.field_len.len())]
    {
        if len != fields {
            fail(&format!("column {name} has {len} rows, field counts add up to {fields}"), ops, &[], names);
        }
    }
    if batch.skip_flags.len() != batch.skip_conn.len() || batch.skip_bytes.len() != batch.skip_conn.len() {
        fail("skip columns of different lengths", ops, &[], names);
    }
    for i in 0..n {
        if batch.flags[i] & MSG_KIND_MASK == MSG_KIND_MASK {
            fail(&format!("message {i} has no kind (flags {:#x})", batch.flags[i]), ops, &[], names);
        }
    }
    for f in 0..fields {
        let key = usize::from(batch.field_key[f]);
        if key >= names.len() {
            fail(&format!("field {f} has key {key}, there are {} field names", names.len()), ops, &[], names);
        }
        let start = batch.field_offset[f] as usize;
        let end = start + batch.field_len[f] as usize;
        let Some(value) = batch.arena.get(start..end) else {
            let msg = format!("field {f} ({}) at {start}..{end} is outside the arena of {}", names[key], batch.arena.len());
            fail(&msg, ops, &[], names)
        };
        if let Err(e) = std::str::from_utf8(value) {
            fail(&format!("field {f} ({}) is not UTF-8: {e}: {value:?}", names[key]), ops, &[], names);
        }
    }
}

/// The operations as lines (`+`: in the same feed call as the chunk before).
pub fn describe(ops: &[Op]) -> String {
    let mut text = String::new();
    for op in ops {
        match op {
            Op::Chunk { chunk, join } => {
                text += &format!("  {}{}\n", if *join { "+ " } else { "" }, chunk.summary());
            }
            Op::Feed => text += "  feed\n",
            Op::Close(c) => text += &format!("  close {c:?}\n"),
        }
    }
    text
}

fn fail(msg: &str, ops: &[Op], batches: &[Batch], names: &[&str]) -> ! {
    let text = describe(ops);
    let mut out = String::new();
    for b in batches {
        for line in wirelens_sdk::testing::render(b, names) {
            out += &format!("  {line}\n");
        }
    }
    panic!("invariant broken: {msg}\nops (`+`: same feed call as the chunk before):\n{text}output:\n{out}");
}

/// Encode chunks (and closes at the end) in the input format, one chunk per
/// feed call (or all in one call with `one_call`). Timestamps: with
/// `exact_time` each chunk gets its own (a set-clock record when a `T` step
/// cannot reach it), else every chunk is 10 us after the one before.
/// Connection ids are mapped onto 1-3 in order of appearance; bytes a real
/// length claims beyond [`MAX_EXTRA`] are cut to it; chunks longer than
/// the length field allows are split.
pub fn encode(chunks: &[TestChunk], close: &[u64], exact_time: bool, one_call: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut conns: BTreeMap<u64, u8> = BTreeMap::new();
    let mut clock = START_NS;
    let mut first = true;
    let set_clock = |out: &mut Vec<u8>, clock: &mut u64, ts: u64| {
        out.push(H_CONTROL | OP_SET_CLOCK << 2);
        out.extend_from_slice(&(ts & CLOCK_MASK).to_le_bytes());
        *clock = ts & CLOCK_MASK;
    };
    for c in chunks {
        let join = if one_call && !first { H_JOIN } else { 0 };
        first = false;
        if c.tick {
            let ts = if exact_time { c.timestamp_ns } else { clock + 100_000_000 };
            let step = ts.checked_sub(clock).filter(|d| d % 100_000_000 == 0 && d / 100_000_000 <= 255);
            let a = match step {
                Some(d) => (d / 100_000_000) as u8,
                None => {
                    set_clock(&mut out, &mut clock, ts);
                    0
                }
            };
            out.extend_from_slice(&[H_CONTROL | OP_TICK << 2 | join, a]);
            clock += u64::from(a) * 100_000_000;
            continue;
        }
        let next = conns.len() as u8 % 3;
        let conn = *conns.entry(c.conn).or_insert(next);
        let role = match c.role {
            Role::Client => 0,
            Role::Server => 1,
            Role::Unknown => 2,
        };
        let mut h = conn | role << H_ROLE_SHIFT | join;
        if c.direction == Direction::Ingress {
            h |= H_INGRESS;
        }
        if c.datagram {
            h |= H_DATAGRAM;
        }
        let pieces: Vec<&[u8]> = if c.bytes.is_empty() { vec![&[][..]] } else { c.bytes.chunks(0x1F_FFFF).collect() };
        let last = pieces.len() - 1;
        for (i, piece) in pieces.into_iter().enumerate() {
            let extra = c.real_len.filter(|_| i == last).map(|r| r.saturating_sub(c.bytes.len() as u64).min(MAX_EXTRA));
            let mut h = if i > 0 { h | H_JOIN } else { h };
            if extra.is_some() {
                h |= H_TRUNCATED;
            }
            let t = if !exact_time || i > 0 {
                if i > 0 {
                    0
                } else {
                    1
                }
            } else {
                let ts = c.timestamp_ns & CLOCK_MASK;
                match ts.checked_sub(clock) {
                    Some(d) if d % 10_000 == 0 && d / 10_000 <= 0xDF => (d / 10_000) as u8,
                    Some(d) if d % 1_000_000_000 == 0 && (1..=16).contains(&(d / 1_000_000_000)) => {
                        0xDF + (d / 1_000_000_000) as u8
                    }
                    _ => {
                        set_clock(&mut out, &mut clock, ts);
                        0
                    }
                }
            };
            clock = match t {
                0x00..=0xDF => clock + u64::from(t) * 10_000,
                _ => clock + u64::from(t - 0xDF) * 1_000_000_000,
            };
            out.push(h);
            out.push(t);
            if let Some(x) = extra {
                out.extend_from_slice(&(x as u32).to_le_bytes()[..3]);
            }
            let mut len = piece.len();
            loop {
                let b = (len & 0x7f) as u8;
                len >>= 7;
                if len == 0 {
                    out.push(b);
                    break;
                }
                out.push(b | 0x80);
            }
            out.extend_from_slice(piece);
        }
    }
    let mask = close.iter().filter_map(|c| conns.get(c)).fold(0u8, |m, &i| m | 1 << (4 + i));
    if mask != 0 {
        out.push(H_CONTROL | OP_CLOSE << 2 | mask);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let chunks = vec![
            TestChunk::egress(START_NS + 10_000, b"GET / HTTP/1.1\r\n\r\n"),
            TestChunk::ingress(START_NS + 3_000_000_000 + 10_000, vec![b'x'; 300]).truncated(5000).on(9),
            TestChunk::tick(START_NS + 9_000_000_000),
            TestChunk::egress(7, b"").datagram().role(Role::Server),
        ];
        let data = encode(&chunks, &[1, 9], true, false);
        let ops = decode(&data);
        let got: Vec<&TestChunk> = ops
            .iter()
            .filter_map(|o| match o {
                Op::Chunk { chunk, .. } => Some(chunk),
                _ => None,
            })
            .collect();
        assert_eq!(got.len(), 4);
        for (g, w) in got.iter().zip(&chunks) {
            assert_eq!((g.timestamp_ns, &g.bytes, g.real_len, g.datagram, g.tick), (w.timestamp_ns, &w.bytes, w.real_len, w.datagram, w.tick));
            assert_eq!((g.direction, g.role), (w.direction, w.role));
        }
        assert_eq!(got[1].conn, 2);
        assert!(matches!(ops.last(), Some(Op::Close(c)) if c == &vec![1, 2]));
    }

    #[test]
    fn extend_repeats_the_latest_chunk() {
        let chunks = [TestChunk::egress(1, b"abc").truncated(10), TestChunk::tick(2)];
        let mut data = encode(&chunks, &[], false, false);
        data.extend_from_slice(&[H_CONTROL | OP_FEED << 2 | H_EXTEND, 16]);
        let ops = decode(&data);
        let Op::Chunk { chunk, .. } = &ops[0] else { panic!("{ops:?}") };
        assert_eq!(chunk.bytes.len(), 8192);
        assert!(chunk.bytes.starts_with(b"abcabca"));
        assert_eq!(chunk.real_len, Some(chunk.bytes.len() as u64 + 7));
        run::<wirelens_plugin_http::Http>(&data);
    }
}
