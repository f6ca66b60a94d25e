//! Per-connection stream reassembly around a [`Protocol`]: buffers bytes
//! across chunk boundaries, skips bytes a message claims but the capture
//! truncated, tracks timestamps, and writes the compact [`Batch`].

use std::collections::VecDeque;

use crate::fasthash::IdMap;
use crate::protocol::{Fields, Meta};
use crate::wire::{MSG_HAS_PAIR_ID, MSG_INGRESS, MSG_SUCCESS};
use crate::{Batch, Chunk, Chunks, ConnError, Ctx, Direction, Info, Protocol, Role, Step};

/// After lost bytes, how many chunks may fail to parse as a message start
/// before the connection is given up.
const MAX_RESYNC_ATTEMPTS: u32 = 16;

/// All connections of one plugin instance. The export macro drives one of
/// these inside the sandbox; [`crate::testing`] and benchmarks drive one
/// natively: both run exactly this code.
pub struct Engine<P: Protocol> {
    proto: P,
    info: Info,
    conns: IdMap<ConnState<P::Conn>>,
    /// Messages per chunk in the last batch, so the next batch's columns are
    /// sized once (pipelined traffic carries many messages per chunk; growing
    /// a dozen columns by doubling is a realloc and a copy each inside the
    /// sandbox).
    messages_per_chunk: usize,
}

struct ConnState<C> {
    proto: C,
    role: Role,
    streams: [DirStream; 2],
}

#[derive(Default)]
struct DirStream {
    /// Bytes received but not consumed by the parser yet.
    buf: Vec<u8>,
    /// `(index in buf where a chunk's bytes start, its timestamp)`.
    marks: VecDeque<(usize, u64)>,
    /// Bytes still to drop before parsing resumes (a message longer than
    /// what was at hand, possibly truncated by the capture).
    skip: u64,
    /// The message that is complete once `skip` reaches zero.
    complete_after_skip: Option<Meta>,
    /// The rest of the stream belongs to the message in progress.
    to_end: bool,
    /// The message in progress.
    current: Option<InProgress>,
    /// Fields of the message in progress.
    fields: Fields,
    /// Non-zero while looking for a message start after lost bytes.
    resync_attempts: u32,
    /// Timestamp of the latest chunk.
    last_ts: u64,
}

struct InProgress {
    start_ns: u64,
    size: u64,
}

fn dir_index(d: Direction) -> usize {
    match d {
        Direction::Egress => 0,
        Direction::Ingress => 1,
    }
}

impl<P: Protocol> Default for Engine<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: Protocol> Engine<P> {
    /// A fresh engine with a default-configured protocol.
    pub fn new() -> Self {
        Self { proto: P::default(), info: P::info(), conns: IdMap::default(), messages_per_chunk: 1 }
    }

    /// Apply options in order; the first bad one is returned.
    pub fn configure(&mut self, options: &[(String, String)]) -> Result<(), String> {
        for (k, v) in options {
            self.proto.configure(k, v)?;
        }
        Ok(())
    }

    /// See [`Protocol::detect`].
    pub fn detect(&self, direction: Direction, role: Role, bytes: &[u8]) -> u8 {
        self.proto.detect(direction, role, bytes).min(100)
    }

    /// Number of connections with state.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Parse a batch of chunks whose captured bytes are laid end to end in `data`.
    pub fn feed(&mut self, chunks: &Chunks, data: &[u8]) -> Batch {
        let mut out = Batch::with_capacity(chunks.len() * self.messages_per_chunk);
        let n = chunks.len();
        let consistent = [chunks.timestamp_ns.len(), chunks.captured.len(), chunks.real_len.len(), chunks.flags.len()]
            .iter()
            .all(|&l| l == n);
        if !consistent {
            out.errors.push(ConnError { conn: u64::MAX, reason: "chunk columns of different lengths".into() });
            return out;
        }
        let mut offset = 0usize;
        for i in 0..n {
            let chunk = chunks.get(i).expect("columns checked above");
            if !self.feed_one(&chunk, data, &mut offset, &mut out) {
                break;
            }
        }
        if n > 0 {
            self.messages_per_chunk = out.len().div_ceil(n).clamp(1, 64);
        }
        out
    }

    /// Like [`Engine::feed`], with chunks as rows (tests, benchmarks).
    pub fn feed_rows(&mut self, chunks: &[Chunk], data: &[u8]) -> Batch {
        let mut out = Batch::with_capacity(chunks.len());
        let mut offset = 0usize;
        for chunk in chunks {
            if !self.feed_one(chunk, data, &mut offset, &mut out) {
                break;
            }
        }
        out
    }

    /// One chunk; false when `data` is too short for it (the batch is cut).
    fn feed_one(&mut self, chunk: &Chunk, data: &[u8], offset: &mut usize, out: &mut Batch) -> bool {
        let captured = chunk.captured as usize;
        let Some(bytes) = offset.checked_add(captured).and_then(|end| data.get(*offset..end)) else {
            out.errors.push(ConnError {
                conn: chunk.conn,
                reason: format!("chunk claims {captured} bytes at data offset {offset} but data holds {}", data.len()),
            });
            return false;
        };
        *offset += captured;
        let missing = chunk.real_len.saturating_sub(captured as u64);
        let state = self.conns.entry(chunk.conn).or_insert_with(|| ConnState {
            proto: P::Conn::default(),
            role: chunk.role,
            streams: Default::default(),
        });
        if chunk.role != Role::Unknown {
            state.role = chunk.role;
        }
        let ctx = Ctx { conn: chunk.conn, direction: chunk.direction, role: state.role };
        let stream = &mut state.streams[dir_index(chunk.direction)];
        let result =
            stream.feed(&self.proto, &self.info, &mut state.proto, &ctx, chunk.timestamp_ns, bytes, missing, out);
        if let Err(reason) = result {
            self.conns.remove(&chunk.conn);
            out.errors.push(ConnError { conn: chunk.conn, reason });
        }
        true
    }

    /// Finish and forget these connections.
    pub fn close(&mut self, conns: &[u64]) -> Batch {
        let mut out = Batch::with_capacity(0);
        for &conn in conns {
            let Some(mut state) = self.conns.remove(&conn) else { continue };
            for direction in [Direction::Egress, Direction::Ingress] {
                let ctx = Ctx { conn, direction, role: state.role };
                let stream = &mut state.streams[dir_index(direction)];
                let Some(current) = stream.current.take() else { continue };
                let meta = match stream.complete_after_skip.take() {
                    // The stream ended inside a message of known length: it is incomplete.
                    Some(_) => None,
                    None => self.proto.finish(&mut state.proto, &ctx),
                };
                if let Some(meta) = meta {
                    emit(&mut out, &ctx, meta, current.start_ns, stream.last_ts, current.size, &mut stream.fields);
                }
            }
        }
        out
    }
}

/// Move a completed message and its fields into the batch.
fn emit(out: &mut Batch, ctx: &Ctx, meta: Meta, start_ns: u64, end_ns: u64, size: u64, fields: &mut Fields) {
    // A message carries at most u16::MAX fields (the count's width).
    fields.keys.truncate(usize::from(u16::MAX));
    let base = out.arena.len() as u32;
    crate::protocol::extend_small(&mut out.arena, fields.text.as_bytes());
    // One reservation per column rather than a capacity check per push.
    out.field_key.extend(fields.keys.iter().map(|&(key, _, _)| key));
    out.field_offset.extend(fields.keys.iter().map(|&(_, offset, _)| base + offset));
    out.field_len.extend(fields.keys.iter().map(|&(_, _, len)| len));
    out.field_count.push(fields.keys.len() as u16);
    fields.clear();
    let mut flags = meta.kind as u8;
    if ctx.direction == Direction::Ingress {
        flags |= MSG_INGRESS;
    }
    if meta.success {
        flags |= MSG_SUCCESS;
    }
    if meta.pair_id.is_some() {
        flags |= MSG_HAS_PAIR_ID;
    }
    out.conn.push(ctx.conn);
    out.start_ns.push(start_ns);
    out.end_ns.push(end_ns);
    out.size.push(size);
    out.pair_id.push(meta.pair_id.unwrap_or(0));
    out.flags.push(flags);
}

impl DirStream {
    #[allow(clippy::too_many_arguments)]
    fn feed<P: Protocol>(
        &mut self,
        proto: &P,
        info: &Info,
        conn: &mut P::Conn,
        ctx: &Ctx,
        ts: u64,
        mut present: &[u8],
        mut missing: u64,
        out: &mut Batch,
    ) -> Result<(), String> {
        self.last_ts = ts;
        if self.to_end {
            if let Some(current) = self.current.as_mut() {
                current.size += present.len() as u64 + missing;
            }
            return Ok(());
        }
        // Bytes a message already claimed: captured ones first, then the
        // ones the capture cut off.
        if self.skip > 0 {
            let from_present = self.skip.min(present.len() as u64);
            present = &present[from_present as usize..];
            self.skip -= from_present;
            let from_missing = self.skip.min(missing);
            missing -= from_missing;
            self.skip -= from_missing;
            if self.skip > 0 {
                return Ok(());
            }
            self.finish_skip(ctx, ts, out);
        }
        if self.buf.is_empty() {
            // Common case: nothing pending, so parse the chunk where it lies
            // and keep only an incomplete tail.
            let used = self.parse(proto, info, conn, ctx, present, &VecDeque::new(), ts, out)?;
            if used < present.len() && !self.to_end && self.skip == 0 {
                self.marks.push_back((0, ts));
                self.buf.extend_from_slice(&present[used..]);
            }
        } else if !present.is_empty() {
            self.marks.push_back((self.buf.len(), ts));
            self.buf.extend_from_slice(present);
            let buf = std::mem::take(&mut self.buf);
            let marks = std::mem::take(&mut self.marks);
            let used = self.parse(proto, info, conn, ctx, &buf, &marks, ts, out);
            self.buf = buf;
            self.marks = marks;
            self.consume(used?);
        }
        if missing > 0 {
            if self.to_end {
                if let Some(current) = self.current.as_mut() {
                    current.size += missing;
                }
                return Ok(());
            }
            let absorbed = self.skip.min(missing);
            self.skip -= absorbed;
            missing -= absorbed;
            if absorbed > 0 && self.skip == 0 {
                self.finish_skip(ctx, ts, out);
            }
            if missing > 0 {
                // Bytes we will never see: whatever was buffered cannot be
                // completed and the next bytes may start mid-message.
                self.lose_sync(proto, conn, ctx, ts, missing, out);
            }
        }
        Ok(())
    }

    fn finish_skip(&mut self, ctx: &Ctx, ts: u64, out: &mut Batch) {
        if let Some(meta) = self.complete_after_skip.take() {
            if let Some(current) = self.current.take() {
                emit(out, ctx, meta, current.start_ns, ts, current.size, &mut self.fields);
            }
        }
    }

    /// `lost` bytes that will never be seen follow what is buffered.
    fn lose_sync<P: Protocol>(
        &mut self,
        proto: &P,
        conn: &mut P::Conn,
        ctx: &Ctx,
        ts: u64,
        lost: u64,
        out: &mut Batch,
    ) {
        let current = self.current.take();
        if let (Some(meta), Some(current)) = (proto.resync(conn, ctx), current) {
            let size = current.size + lost;
            emit(out, ctx, meta, current.start_ns, ts, size, &mut self.fields);
        }
        self.buf.clear();
        self.marks.clear();
        self.complete_after_skip = None;
        self.skip = 0;
        self.fields.clear();
        self.resync_attempts = self.resync_attempts.max(1);
    }

    /// Parse messages from the front of `data` (the buffer, or a chunk when
    /// nothing is buffered); returns how many bytes were used. `marks` maps
    /// positions in `data` to chunk timestamps (empty: all are `ts`).
    #[allow(clippy::too_many_arguments)]
    fn parse<P: Protocol>(
        &mut self,
        proto: &P,
        info: &Info,
        conn: &mut P::Conn,
        ctx: &Ctx,
        data: &[u8],
        marks: &VecDeque<(usize, u64)>,
        ts: u64,
        out: &mut Batch,
    ) -> Result<usize, String> {
        let ts_at = |index: usize| marks.iter().take_while(|(start, _)| *start <= index).last().map_or(ts, |&(_, t)| t);
        let mut pos = 0usize;
        while pos < data.len() && !self.to_end {
            let mark = self.fields.mark();
            let step = proto.parse(conn, ctx, &data[pos..], &mut self.fields);
            let avail = (data.len() - pos) as u64;
            let (n, complete, is_message) = match step {
                Step::NeedMore => {
                    self.fields.rewind(mark);
                    if data.len() - pos > info.max_buffer {
                        return Err(format!(
                            "a {} message is longer than its {} byte buffer without being complete",
                            info.name, info.max_buffer
                        ));
                    }
                    break;
                }
                Step::Invalid(reason) => {
                    self.fields.rewind(mark);
                    if self.resync_attempts == 0 {
                        return Err(reason);
                    }
                    // Looking for a message start after lost bytes: this
                    // chunk is not one; drop it and try the next.
                    self.resync_attempts += 1;
                    if self.resync_attempts > MAX_RESYNC_ATTEMPTS {
                        return Err(format!("lost sync after missing bytes: {reason}"));
                    }
                    pos = data.len();
                    self.current = None;
                    self.fields.clear();
                    let _ = proto.resync(conn, ctx);
                    break;
                }
                Step::RestOfStream => {
                    let start_ns = ts_at(pos);
                    self.current.get_or_insert(InProgress { start_ns, size: 0 }).size += avail;
                    self.resync_attempts = 0;
                    self.to_end = true;
                    pos = data.len();
                    break;
                }
                Step::Continue(n) => (n, None, true),
                Step::Complete(n, meta) => (n, Some(meta), true),
                Step::Discard(n) => (n, None, false),
            };
            if n == 0 {
                return Err(format!("{} parser made no progress", info.name));
            }
            self.resync_attempts = 0;
            if is_message {
                let start_ns = ts_at(pos);
                self.current.get_or_insert(InProgress { start_ns, size: 0 }).size += n;
            }
            let take = n.min(avail);
            pos += take as usize;
            if n > avail {
                self.skip = n - avail;
                self.complete_after_skip = complete;
                break;
            }
            if let Some(meta) = complete {
                let end_ns = ts_at(pos - 1);
                if let Some(current) = self.current.take() {
                    emit(out, ctx, meta, current.start_ns, end_ns, current.size, &mut self.fields);
                }
            }
        }
        Ok(pos)
    }

    /// Drop `n` parsed bytes from the front of the buffer.
    fn consume(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        self.buf.drain(..n);
        // Keep the mark of the chunk that holds the new first byte.
        while self.marks.len() > 1 && self.marks[1].0 <= n {
            self.marks.pop_front();
        }
        if self.buf.is_empty() {
            self.marks.clear();
        } else {
            for m in self.marks.iter_mut() {
                m.0 = m.0.saturating_sub(n);
            }
        }
    }
}
