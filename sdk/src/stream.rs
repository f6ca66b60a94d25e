//! Per-connection stream reassembly around a [`Protocol`]: buffers bytes
//! across chunk boundaries, skips bytes a message claims (captured or not),
//! tracks timestamps, keeps calls whole when bytes are lost, and writes the
//! compact [`Batch`].
//!
//! # Lost bytes
//!
//! The capture copies only the first bytes of each call (and the kernel may
//! drop whole events when its buffer is full): a message whose length the
//! protocol gives is skipped exactly, copied or not. When the missing bytes
//! run past what any length accounts for, this direction's framing is lost:
//! the bytes that follow belong to a *lost region*, whose size and last
//! timestamp are still known (the kernel reports every call's real length).
//! The region ends where the protocol proves it: the other direction
//! carries the next request (the responses before it are over) or a
//! response (the request before it is over), the connection closes, or the
//! region stays quiet for [`QUIET_NS`]. Then
//! - the message whose head was seen (if any) is reported with the meta
//!   the protocol gives from its head ([`Protocol::lost`]): its success
//!   flag, its fields, and the region's bytes and last timestamp;
//! - requests still awaiting responses get a response each, marked
//!   [`MSG_UNSEEN`](crate::wire::MSG_UNSEEN) (outcome unknown);
//! - responses with no request get a request each, marked unseen (fields
//!   unknown);
//! - parsing resumes at the direction's next chunk.
//!
//! Records the kernel lost (a chunk with no bytes) are a hole that the host
//! finds only at the direction's next record. A hole in the requests'
//! direction ends at that record, behind a fence (`Fence`); a hole in the
//! responses' direction ends at its next record behind a fence, or on a
//! connection whose client waits for each response (seen answering one
//! request at a time): there that record answers the last request made
//! before it (see `ConnState::end_hole_at_chunk`).
//!
//! So lost bytes cost the fields inside them, never a call's count,
//! pairing, size or latency; a success flag is only unknown when the
//! response's first bytes were never seen.

use std::collections::VecDeque;

use crate::fasthash::IdMap;
use crate::protocol::{Fields, Meta};
use crate::wire::{MSG_HAS_PAIR_ID, MSG_INGRESS, MSG_SUCCESS, MSG_UNSEEN};
use crate::{Batch, Chunk, Chunks, ConnError, Ctx, Direction, Info, MessageKind, Protocol, Role, Step};

/// A lost region that received nothing for this long (kernel time) is
/// closed even without a proof from the other direction (an interactive
/// client that sends its next command minutes later must not leave its
/// last call unreported: the host fails requests unanswered for 30 s).
pub const QUIET_NS: u64 = 5_000_000_000;

/// After lost bytes, how many chunks in a row may fail to parse where a
/// message should start before the connection is given up.
const MAX_FAILED_RESUMES: u32 = 16;

/// Places in one chunk where a message may start (see
/// [`Protocol::next_start`]) tried after a failed resume.
const MAX_START_GUESSES: u32 = 64;

/// Requests remembered per connection while they await responses (16
/// bytes each): a deeply pipelined client has tens of thousands waiting,
/// and the host keeps up to 262,144 (past this the oldest are forgotten:
/// responses lost in a hole then stand for fewer requests).
const MAX_OUTSTANDING: usize = 65536;

/// Most parts ([`Step::Part`]) in progress per direction of a connection;
/// beyond, a new part's bytes belong to no message.
const MAX_PARTS: usize = 65536;

/// Emptied fields of emitted parts kept per direction of a connection, for
/// the next parts (multiplexed requests in flight reuse them in turn).
const SPARE_FIELDS: usize = 4;

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
    /// Connections with a lost region, checked against [`QUIET_NS`] when
    /// the host's clock ticks.
    with_lost: Vec<u64>,
    /// Connections a chunk of this batch left skipping bytes (see
    /// [`Engine::skip_hints`]).
    skipping: Vec<u64>,
}

struct ConnState<C> {
    proto: C,
    role: Role,
    streams: [DirStream; 2],
    /// Requests reported and not answered yet, oldest first.
    outstanding: VecDeque<Outstanding>,
    /// Responses seen with only their own request waiting, outside lost
    /// regions and fences (see [`ConnState::serial`]).
    one_at_a_time: u32,
    /// A response was seen there with two or more requests waiting: the
    /// client pipelines.
    pipelines: bool,
    /// The direction requests were seen in (to tell which lost region holds
    /// responses when the role is unknown).
    request_dir: Option<usize>,
    /// Requests went unseen (a lost region in the request direction ended):
    /// responses with no outstanding request answer one of those.
    hidden_requests: Option<Hidden>,
    /// Chunks in a row where a message should have started but did not.
    failed_resumes: u32,
    /// Responses that came before their request was complete.
    deferred: Vec<Deferred>,
    /// Responses that came with no request to answer, held until the
    /// request direction's next record tells whether a hole hid their
    /// requests (see [`ConnState::holds_orphan`]).
    orphans: Vec<Deferred>,
    /// Requests parsed right after a hole in the records of their direction
    /// (see [`Fence`]).
    fence: Option<Fence>,
}

/// Requests parsed right after a hole in the records of their direction
/// (records the kernel lost) were made after the requests the hole hid.
/// - A hole in the kernel's records (its ring buffer was full) is one window
///   of time for both directions, but the host learns of each direction's
///   hole only at that direction's next record. The response direction's
///   hole cannot hold the responses of requests made after the window: when
///   that hole turns up, it answers only the requests from before the fence
///   (and the hidden ones).
/// - When responses are seen instead, and none was seen since the hole
///   began, the hidden requests' responses are still to come: they answer
///   the hidden requests after those before the fence and before those
///   after it, in order. (A response seen since the hole began may have
///   been a hidden request's: then the hidden ones are answered last, by
///   responses with no request, as after any hole.)
struct Fence {
    /// Outstanding requests from before the hole (the oldest ones).
    before: usize,
    /// When the first chunk after the hole was sent or received.
    at_ns: u64,
    /// The hidden requests are answered next after those before the fence.
    hidden_next: bool,
}

/// A request waiting for its response.
#[derive(Clone, Copy)]
struct Outstanding {
    pair_id: Option<u64>,
    /// When its first bytes were sent or received.
    start_ns: u64,
}

/// Responses seen one request at a time, outside holes, for a connection to
/// count as a client that waits for each response.
const SERIAL_EVIDENCE: u32 = 3;

/// A response waiting for the request it answers to be complete.
struct Deferred {
    ctx: Ctx,
    meta: Meta,
    start_ns: u64,
    end_ns: u64,
    size: u64,
    fields: Fields,
}

/// What is known of requests whose bytes were lost.
struct Hidden {
    /// The direction they went in.
    dir: usize,
    /// Bytes of the region not yet attributed to a request.
    bytes: u64,
    /// When the region began.
    start_ns: u64,
    /// When its last region ended (the hidden requests were made before).
    end_ns: u64,
}

#[derive(Default)]
struct DirStream {
    /// Bytes received but not consumed by the parser yet.
    buf: Vec<u8>,
    /// `(index in buf where a chunk's bytes start, its timestamp)`.
    marks: VecDeque<(usize, u64)>,
    /// Bytes still to drop before parsing resumes (a message longer than
    /// what was at hand, copied or not).
    skip: u64,
    /// `skip` is counted in the message in progress (`Continue`,
    /// `Complete`), not bytes discarded between messages (`Discard`).
    skip_in_message: bool,
    /// The message that is complete once `skip` reaches zero.
    complete_after_skip: Option<Meta>,
    /// The rest of the stream belongs to the message in progress.
    to_end: bool,
    /// The message in progress.
    current: Option<InProgress>,
    /// Fields of the message in progress (or of a lost region's head).
    fields: Fields,
    /// Framing lost: what follows belongs to this region until a proof.
    lost: Option<Lost>,
    /// A lost region just ended: the next chunk should start a message.
    resuming: bool,
    /// Bytes of this direction were lost at some point: a message that does
    /// not parse may be the framing lost again (a length claimed across the
    /// hole that was not what the hole held), not another protocol, so it
    /// is handled as a failed resume instead of giving the connection up.
    lossy: bool,
    /// Timestamp of the latest chunk.
    last_ts: u64,
    /// Messages of parts ([`Step::Part`]) in progress, by part key.
    parts: IdMap<PartMessage>,
    /// Fields of parts emitted, emptied, for the next parts: a part's own
    /// fields were two allocations and two frees a message, in the sandbox
    /// a tenth of an HTTP/2 plugin's time.
    spare_fields: Vec<Fields>,
    /// The part whose message `skip`'s end completes, with its meta.
    skip_part: Option<(u64, Meta)>,
}

struct InProgress {
    start_ns: u64,
    size: u64,
}

/// A part's message in progress: its accounting and its fields.
struct PartMessage {
    start_ns: u64,
    size: u64,
    fields: Fields,
}

/// Bytes of one direction whose framing is lost.
struct Lost {
    /// The message whose head was seen, and the meta the protocol gave it.
    head: Option<(Meta, u64)>,
    /// Every byte of the region, the head's included (real lengths).
    bytes: u64,
    /// Kernel time of the region's first and latest chunk.
    first_ns: u64,
    last_ns: u64,
    /// The region is only a hole in the records, which began after this
    /// direction's chunk at this time: nothing was in progress, so the next
    /// chunk starts a read or write of its own after the hole.
    after_gap: Option<u64>,
}

fn direction_of(i: usize) -> Direction {
    if i == 0 {
        Direction::Egress
    } else {
        Direction::Ingress
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
        Self {
            proto: P::default(),
            info: P::info(),
            conns: IdMap::default(),
            messages_per_chunk: 1,
            with_lost: Vec::new(),
            skipping: Vec::new(),
        }
    }

    /// Apply options in order; the first bad one is returned, named.
    pub fn configure(&mut self, options: &[(String, String)]) -> Result<(), String> {
        for (k, v) in options {
            self.proto.configure(k, v).map_err(|e| format!("option `{k}`: {e}"))?;
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
        for chunk in chunks.rows() {
            if !self.feed_one(&chunk, data, &mut offset, &mut out) {
                break;
            }
        }
        if n > 0 {
            self.messages_per_chunk = out.len().div_ceil(n).clamp(1, 64);
        }
        self.skip_hints(&mut out);
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
        self.skip_hints(&mut out);
        out
    }

    /// One chunk; false when `data` is too short for it (the batch is cut).
    fn feed_one(&mut self, chunk: &Chunk, data: &[u8], offset: &mut usize, out: &mut Batch) -> bool {
        if chunk.tick {
            self.tick(chunk.timestamp_ns, out);
            return true;
        }
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
            outstanding: VecDeque::new(),
            one_at_a_time: 0,
            pipelines: false,
            request_dir: None,
            hidden_requests: None,
            failed_resumes: 0,
            deferred: Vec::new(),
            orphans: Vec::new(),
            fence: None,
        });
        if chunk.role != Role::Unknown {
            state.role = chunk.role;
        }
        let ctx = Ctx {
            conn: chunk.conn,
            direction: chunk.direction,
            role: state.role,
            datagram: chunk.datagram,
            truncated: false,
        };
        let d = chunk.direction.index();
        let had_lost = state.streams[d].lost.is_some() || state.streams[1 - d].lost.is_some();
        let result = if chunk.datagram {
            state.feed_datagram(&self.proto, &self.info, &ctx, chunk.timestamp_ns, bytes, missing, out)
        } else {
            state.feed_stream(&self.proto, &self.info, &ctx, chunk.timestamp_ns, bytes, missing, out)
        };
        match result {
            Err(reason) => {
                self.conns.remove(&chunk.conn);
                out.errors.push(ConnError { conn: chunk.conn, reason });
            }
            Ok(()) => {
                let has_lost = state.streams.iter().any(|s| s.lost.is_some());
                if has_lost && !had_lost {
                    self.with_lost.push(chunk.conn);
                }
                if state.streams.iter().any(|s| s.skip > 0) {
                    self.skipping.push(chunk.conn);
                }
            }
        }
        true
    }

    /// The host's clock: lost regions quiet for [`QUIET_NS`] end.
    fn tick(&mut self, now_ns: u64, out: &mut Batch) {
        let conns = std::mem::take(&mut self.with_lost);
        for conn in conns {
            let Some(state) = self.conns.get_mut(&conn) else { continue };
            for d in 0..2 {
                let quiet =
                    state.streams[d].lost.as_ref().is_some_and(|l| now_ns.saturating_sub(l.last_ns) >= QUIET_NS);
                if quiet {
                    state.close_lost(conn, d, out);
                }
            }
            if state.streams.iter().any(|s| s.lost.is_some()) {
                self.with_lost.push(conn);
            }
        }
    }

    /// Finish and forget these connections.
    pub fn close(&mut self, conns: &[u64]) -> Batch {
        let mut out = Batch::with_capacity(0);
        for &conn in conns {
            let Some(mut state) = self.conns.remove(&conn) else { continue };
            for d in 0..2 {
                state.close_lost(conn, d, &mut out);
            }
            for d in 0..2 {
                let direction = direction_of(d);
                let ctx = Ctx { conn, direction, role: state.role, datagram: false, truncated: false };
                let stream = &mut state.streams[d];
                let Some(current) = stream.current.take() else { continue };
                let meta = match stream.complete_after_skip.take() {
                    // The stream ended inside a message of known length: it is incomplete.
                    Some(_) => None,
                    None => self.proto.finish(&mut state.proto, &ctx),
                };
                if let Some(meta) = meta {
                    // Bytes a length claimed that never came are not its size.
                    let s = &state.streams[d];
                    let claimed = if s.skip_in_message { s.skip } else { 0 };
                    let (end, size) = (s.last_ts, current.size - claimed.min(current.size));
                    state.emit(&ctx, d, meta, current.start_ns, end, size, false, &mut out);
                }
            }
            state.release_orphans(&mut out);
            // Responses whose request never completed: written as they are.
            for mut r in std::mem::take(&mut state.deferred) {
                let d = r.ctx.direction.index();
                state.answer(&r.ctx, d, &r.meta, &mut out);
                write(&mut out, &r.ctx, r.meta, r.start_ns, r.end_ns, r.size, Some(&mut r.fields), false);
            }
        }
        self.with_lost.retain(|c| !conns.contains(c));
        out
    }

    /// Tell the host how many bytes of each direction of the connections
    /// just fed the plugin will skip without looking (bodies): it need not
    /// copy them. Only connections a chunk left skipping are looked at (most
    /// batches have none: sorting every batch's connections was 1% of the
    /// daemon's time at redis GET).
    fn skip_hints(&mut self, out: &mut Batch) {
        let mut touched = std::mem::take(&mut self.skipping);
        touched.sort_unstable();
        touched.dedup();
        for &conn in &touched {
            let Some(state) = self.conns.get(&conn) else { continue };
            for (d, s) in state.streams.iter().enumerate() {
                if s.skip > 0 && s.lost.is_none() {
                    out.skip_conn.push(conn);
                    out.skip_flags.push(u8::from(d == 1));
                    out.skip_bytes.push(s.skip);
                }
            }
        }
        touched.clear();
        self.skipping = touched; // its buffer, for the next batch
    }
}

impl DirStream {
    /// Keep a part's fields, emptied, for the next parts (up to
    /// `SPARE_FIELDS`).
    fn spare(&mut self, mut fields: Fields) {
        if self.spare_fields.len() < SPARE_FIELDS {
            fields.clear();
            self.spare_fields.push(fields);
        }
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

    /// Forget everything about the message in progress and the buffer.
    fn reset(&mut self) {
        self.buf.clear();
        self.marks.clear();
        self.skip = 0;
        self.skip_in_message = false;
        self.complete_after_skip = None;
        self.current = None;
        self.to_end = false;
        self.fields.clear();
        // Parts in progress stay: their next bytes may come after this.
        self.skip_part = None;
    }
}

impl<C> ConnState<C> {
    /// Bookkeeping and output of one completed message of direction `d`.
    /// A request or response first ends a lost region of the other
    /// direction (it proves where that region ended). A response that
    /// comes while its request is still arriving (a server answering before
    /// it read the whole body: nginx's `return 201` to a chunked POST) waits
    /// for that request, so the two pair.
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        ctx: &Ctx,
        d: usize,
        meta: Meta,
        start_ns: u64,
        end_ns: u64,
        size: u64,
        unseen: bool,
        out: &mut Batch,
    ) {
        // Inferred messages prove nothing about the other direction.
        if meta.kind != MessageKind::Oneway && !unseen && self.streams[1 - d].lost.is_some() {
            self.close_lost(ctx.conn, 1 - d, out);
        }
        let early = meta.kind == MessageKind::Response
            && !unseen
            && self.request_in_progress(1 - d, &meta)
            && self.answered_by(&meta).is_none()
            && self.deferred.len() < MAX_OUTSTANDING;
        if early {
            let fields = std::mem::take(&mut self.streams[d].fields);
            self.deferred.push(Deferred { ctx: *ctx, meta, start_ns, end_ns, size, fields });
            return;
        }
        if meta.kind == MessageKind::Request {
            if !unseen && self.hidden_requests.as_ref().is_some_and(|h| h.bytes == 0) {
                // A request parsed in place after the hidden ones were all
                // answered: none are hidden any more.
                self.hidden_requests = None;
            }
            self.request_dir = Some(d);
            if self.outstanding.len() >= MAX_OUTSTANDING {
                self.outstanding.pop_front();
                self.forget_before_fence(0);
            }
            self.outstanding.push_back(Outstanding { pair_id: meta.pair_id, start_ns });
        } else if meta.kind == MessageKind::Response {
            if !unseen && self.holds_orphan(ctx, d, &meta) {
                let fields = std::mem::take(&mut self.streams[d].fields);
                self.orphans.push(Deferred { ctx: *ctx, meta, start_ns, end_ns, size, fields });
                return;
            }
            // (Not while a hole is being accounted for: requests whose
            // answers it held may still be waiting.)
            if !unseen && self.fence.is_none() && self.streams.iter().all(|s| s.lost.is_none()) {
                match self.outstanding.len() {
                    0 | 1 => self.one_at_a_time = self.one_at_a_time.saturating_add(1),
                    _ => self.pipelines = true,
                }
            }
            if !unseen && self.fence.as_ref().is_some_and(|f| !f.hidden_next) {
                // A response seen after the fence with no hole before it:
                // no hole of responses from that time is still to come.
                self.fence = None;
            }
            self.answer(ctx, d, &meta, out);
            if let Some(id) = meta.pair_id.filter(|_| self.carries_requests(d) == Some(true)) {
                self.drop_part(1 - d, id);
            }
        }
        write(out, ctx, meta, start_ns, end_ns, size, Some(&mut self.streams[d].fields), unseen);
        if meta.kind == MessageKind::Request && !self.deferred.is_empty() {
            self.release_deferred(out);
        }
    }

    /// Whether direction `d` is in the middle of the request `response`
    /// answers: its part (the part keyed by the response's pair id) when
    /// the protocol uses parts, else its message in progress.
    fn request_in_progress(&self, d: usize, response: &Meta) -> bool {
        let s = &self.streams[d];
        match response.pair_id {
            Some(id) if !s.parts.is_empty() => s.parts.contains_key(&id),
            _ => s.current.is_some(),
        }
    }

    /// Emit a part's message, with its own fields.
    fn emit_part(&mut self, ctx: &Ctx, d: usize, meta: Meta, part: PartMessage, end_ns: u64, out: &mut Batch) {
        let own = std::mem::replace(&mut self.streams[d].fields, part.fields);
        self.emit(ctx, d, meta, part.start_ns, end_ns, part.size, false, out);
        let used = std::mem::replace(&mut self.streams[d].fields, own);
        self.streams[d].spare(used);
    }

    /// A response from the requests' direction (a client cancelling its
    /// call: HTTP/2's RST_STREAM) answered the call of part `id`: what the
    /// responses' direction `d` had begun of that part's response belongs
    /// to no call now. Without this the part stayed until the connection
    /// closed (one per call cancelled mid-response, up to `MAX_PARTS`, past
    /// which new parts' bytes belong to no message).
    fn drop_part(&mut self, d: usize, id: u64) {
        let s = &mut self.streams[d];
        let Some(part) = s.parts.remove(&id) else { return };
        if s.skip_part.as_ref().is_some_and(|(key, _)| *key == id) {
            // Its frame's bytes still to come are skipped, no part's now.
            s.skip_part = None;
        }
        s.spare(part.fields);
    }

    /// Which outstanding request a response answers, if any.
    fn answered_by(&self, meta: &Meta) -> Option<usize> {
        match meta.pair_id {
            Some(id) => self.outstanding.iter().position(|p| p.pair_id == Some(id)),
            // In order: the oldest request paired in order (a protocol may
            // pair some requests by id and others in order, like MQTT).
            None => self.outstanding.iter().position(|p| p.pair_id.is_none()),
        }
    }

    /// A response's bookkeeping: its request is no longer outstanding (or,
    /// if its request was among those lost, an unseen request is written
    /// for it first).
    fn answer(&mut self, ctx: &Ctx, d: usize, meta: &Meta, out: &mut Batch) {
        let at = self.answered_by(meta);
        if let Some(fence) = self.fence.as_ref().filter(|f| f.hidden_next && meta.pair_id.is_none()) {
            if at.is_none_or(|i| i >= fence.before) {
                // The requests before the fence are answered: the hidden
                // ones, lost right before it, come next (their responses
                // were not lost, or no hole of responses answered them).
                self.fence = None;
                if self.hidden_requests.as_ref().is_some_and(|h| h.dir != d && h.bytes > 0) {
                    self.answer_hidden(ctx, d, meta, out);
                    return;
                }
            }
        }
        match at {
            // Mostly the oldest (`remove` moves elements even then).
            Some(0) => {
                self.outstanding.pop_front();
                self.forget_before_fence(0);
            }
            Some(i) => {
                self.outstanding.remove(i);
                self.forget_before_fence(i);
            }
            None => self.answer_hidden(ctx, d, meta, out),
        }
    }

    /// A response to a request among the hidden ones: an unseen request is
    /// written for it, with the bytes of theirs not attributed yet.
    fn answer_hidden(&mut self, ctx: &Ctx, d: usize, meta: &Meta, out: &mut Batch) {
        if let Some(hidden) = self.hidden_requests.as_mut().filter(|h| h.dir != d) {
            let size = std::mem::take(&mut hidden.bytes);
            let request = Meta { pair_id: meta.pair_id, ..Meta::request() };
            let rctx = Ctx { direction: direction_of(hidden.dir), ..*ctx };
            write(out, &rctx, request, hidden.start_ns, hidden.start_ns, size, None, true);
        }
    }

    /// Whether direction `d` carries requests: by the role, else by the
    /// direction requests were seen in; `None` when neither tells.
    fn carries_requests(&self, d: usize) -> Option<bool> {
        let ctx = Ctx { conn: 0, direction: direction_of(d), role: self.role, datagram: false, truncated: false };
        ctx.carries_requests().or_else(|| self.request_dir.map(|r| r == d))
    }

    /// The outstanding request at `i` is gone: one fewer before the fence if
    /// it was before it.
    fn forget_before_fence(&mut self, i: usize) {
        if let Some(fence) = self.fence.as_mut().filter(|f| i < f.before) {
            fence.before -= 1;
        }
    }

    /// End the lost region of direction `d`, a hole in the records that
    /// began after its chunk at `before_hole`, at the chunk at hand (sent or
    /// received at `ts`) where that is sound (see [`Fence`]). After a hole a
    /// read or write starts a message more often than not, and a parse that
    /// fails there is a failed resume, as after any region.
    /// - In the request direction: requests were lost, and the chunk's own
    ///   requests will be answered after it, whatever the hole held. A fence
    ///   goes up before them (moved there from an earlier hole's).
    /// - In the response direction, on a connection whose client waits for
    ///   each response: the chunk answers the last request made before it,
    ///   and the hole answered every earlier one.
    /// - Else in the response direction: only behind a fence, when the hole
    ///   began before the requests after the fence were made; it answers
    ///   the requests before the fence. Otherwise (a hole of responses
    ///   alone) it cannot be told which outstanding requests the hole
    ///   answered, and the region waits for a proof from the requests, as
    ///   before.
    fn end_hole_at_chunk(&mut self, ctx: &Ctx, d: usize, before_hole: u64, ts: u64, out: &mut Batch) {
        let Some(requests) = self.carries_requests(d) else { return };
        if requests {
            self.close_lost(ctx.conn, d, out);
            // A fence from an earlier hole moves here: every request seen so
            // far was made before this one, and a hole of responses that
            // began before it may hold all their answers.
            let hidden_next = self.streams[1 - d].last_ts <= before_hole;
            self.fence = Some(Fence { before: self.outstanding.len(), at_ns: ts, hidden_next });
        } else if let Some(waited) = self.serial_waiting_at(d, ts) {
            // A client that waits for each response: the chunk answers the
            // last request made before it, and the hole held the answers
            // to all earlier ones (the hidden requests' too).
            self.hidden_requests = None;
            self.close_lost_upto(ctx.conn, d, waited - 1, out);
        } else if let Some(answers) = self.fence.as_ref().filter(|f| before_hole < f.at_ns).map(|f| f.before) {
            self.close_lost_upto(ctx.conn, d, answers, out);
        }
    }

    /// Whether the connection's client waits for each response: its
    /// responses, where pairing is sure, answered one request at a time and
    /// never more.
    fn serial(&self) -> bool {
        !self.pipelines && self.one_at_a_time >= SERIAL_EVIDENCE
    }

    /// For a serial connection whose response direction `d` lost records
    /// before a response chunk at `ts`: how many outstanding requests were
    /// made before that chunk, when the last of them is surely the one the
    /// chunk answers (paired in order, no request hidden after it, none
    /// in a region of the request direction still open). `None` otherwise
    /// (the fence's rules apply).
    fn serial_waiting_at(&self, d: usize, ts: u64) -> Option<usize> {
        if !self.serial() || self.streams[1 - d].lost.is_some() {
            return None;
        }
        if self.outstanding.iter().any(|p| p.pair_id.is_some()) {
            return None;
        }
        let waited = self.outstanding.iter().take_while(|p| p.start_ns <= ts).count();
        let last = self.outstanding.get(waited.checked_sub(1)?)?;
        match self.hidden_requests.as_ref().filter(|h| h.dir != d && h.bytes > 0) {
            Some(hidden) if hidden.end_ns > last.start_ns => None,
            _ => Some(waited),
        }
    }

    /// Whether a response of direction `d` answers no request known yet,
    /// on a byte stream: then it is held. The kernel may have lost its
    /// request's record (near the edge of a ring-buffer overflow a smaller
    /// response can fit where a request did not), and that hole shows only
    /// at the request direction's next record: with it, the response
    /// answers an unseen request of the hole's bytes; without, it goes out
    /// as a response with no request (a capture that began mid-call), as
    /// before.
    fn holds_orphan(&self, ctx: &Ctx, d: usize, meta: &Meta) -> bool {
        !ctx.datagram
            && meta.pair_id.is_none()
            && self.answered_by(meta).is_none()
            && !self.hidden_requests.as_ref().is_some_and(|h| h.dir != d && h.bytes > 0)
            && self.streams[1 - d].lost.is_none()
            && self.carries_requests(1 - d) == Some(true)
            && self.orphans.len() < MAX_OUTSTANDING
    }

    /// Write the held responses with no request (see
    /// [`ConnState::holds_orphan`]): each answers a request hidden in a
    /// hole, if one just ended, else none.
    fn release_orphans(&mut self, out: &mut Batch) {
        for mut r in std::mem::take(&mut self.orphans) {
            let d = r.ctx.direction.index();
            if let Some(hidden) = self.hidden_requests.as_mut().filter(|h| h.dir != d) {
                // (The hole is known at the next record: its request was
                // made before the response, whenever that was.)
                hidden.start_ns = hidden.start_ns.min(r.start_ns);
            }
            self.answer(&r.ctx, d, &r.meta, out);
            write(out, &r.ctx, r.meta, r.start_ns, r.end_ns, r.size, Some(&mut r.fields), false);
        }
    }

    /// Write the responses that waited for their requests, now answerable.
    fn release_deferred(&mut self, out: &mut Batch) {
        let waiting = std::mem::take(&mut self.deferred);
        for mut r in waiting {
            let d = r.ctx.direction.index();
            if self.answered_by(&r.meta).is_none() && self.request_in_progress(1 - d, &r.meta) {
                self.deferred.push(r); // its own request is still arriving
                continue;
            }
            self.answer(&r.ctx, d, &r.meta, out);
            write(out, &r.ctx, r.meta, r.start_ns, r.end_ns, r.size, Some(&mut r.fields), false);
        }
    }

    /// End the lost region of direction `d` (see the module docs); parsing
    /// resumes at its next chunk.
    fn close_lost(&mut self, conn: u64, d: usize, out: &mut Batch) {
        self.close_lost_upto(conn, d, usize::MAX, out);
    }

    /// [`ConnState::close_lost`], where a region of responses answers at
    /// most the `answers` oldest outstanding requests.
    fn close_lost_upto(&mut self, conn: u64, d: usize, answers: usize, out: &mut Batch) {
        let Some(lost) = self.streams[d].lost.take() else { return };
        self.streams[d].resuming = true;
        // Parts whose ends were in the region: their messages are counted
        // below with the region's (unseen requests, unknown responses).
        self.streams[d].parts.clear();
        let ctx = Ctx { conn, direction: direction_of(d), role: self.role, datagram: false, truncated: false };
        let holds_responses = match lost.head {
            Some((meta, _)) => meta.kind == MessageKind::Response,
            None => self.carries_requests(d) == Some(false),
        };
        if !holds_responses {
            // Requests went missing: the head (if seen) is reported now,
            // the rest are inferred from responses without a request.
            let mut bytes = lost.bytes;
            if let Some((meta, start_ns)) = lost.head {
                let size = std::mem::take(&mut bytes);
                self.emit_held(&ctx, d, meta, start_ns, lost.last_ns, size, out);
            } else {
                self.streams[d].fields.clear();
            }
            // Lost bytes not yet given to a request add up (a request can
            // span several lost regions: the read after a failed resume).
            match self.hidden_requests.as_mut().filter(|h| h.dir == d) {
                Some(h) => {
                    h.bytes += bytes;
                    h.end_ns = lost.last_ns;
                }
                None => {
                    let hidden = Hidden { dir: d, bytes, start_ns: lost.first_ns, end_ns: lost.last_ns };
                    self.hidden_requests = Some(hidden);
                }
            }
            return;
        }
        // Responses: every outstanding request was answered in the region
        // (those before the fence, when it ended at a fence).
        match self.fence.as_mut() {
            // Proven over by a request (or the connection's end): the
            // region held every answer so far, the hidden requests' too.
            // The fence stays for a hole of responses that began before it
            // and is found at the next response.
            Some(fence) if answers == usize::MAX => fence.hidden_next = false,
            _ => self.fence = None,
        }
        let head = lost.head;
        let unseen: Vec<Option<u64>> = {
            let mut pending: Vec<Option<u64>> = self.outstanding.iter().take(answers).map(|p| p.pair_id).collect();
            if let Some((meta, _)) = head {
                if meta.kind == MessageKind::Response {
                    let at = match meta.pair_id {
                        Some(id) => pending.iter().position(|p| *p == Some(id)),
                        None => pending.iter().position(Option::is_none),
                    };
                    if let Some(at) = at {
                        pending.remove(at);
                    }
                }
            }
            pending
        };
        let parts = unseen.len() as u64 + u64::from(head.is_some());
        if parts == 0 {
            self.streams[d].fields.clear();
            return;
        }
        let share = lost.bytes / parts;
        let mut first_extra = lost.bytes - share * parts;
        if let Some((meta, start_ns)) = head {
            self.emit_held(&ctx, d, meta, start_ns, lost.last_ns, share + std::mem::take(&mut first_extra), out);
        } else {
            self.streams[d].fields.clear();
        }
        for pair_id in unseen {
            let meta = Meta { pair_id, ..Meta::response(false) };
            let size = share + std::mem::take(&mut first_extra);
            self.emit(&ctx, d, meta, lost.first_ns, lost.last_ns, size, true, out);
        }
    }

    /// Emit a lost region's head without ending the other direction's region
    /// (this is already that ending).
    #[allow(clippy::too_many_arguments)]
    fn emit_held(&mut self, ctx: &Ctx, d: usize, meta: Meta, start_ns: u64, end_ns: u64, size: u64, out: &mut Batch) {
        let other = self.streams[1 - d].lost.take();
        self.emit(ctx, d, meta, start_ns, end_ns, size, false, out);
        self.streams[1 - d].lost = other;
    }

    /// One chunk of a byte stream.
    #[allow(clippy::too_many_arguments)]
    fn feed_stream<P: Protocol<Conn = C>>(
        &mut self,
        proto: &P,
        info: &Info,
        ctx: &Ctx,
        ts: u64,
        mut present: &[u8],
        mut missing: u64,
        out: &mut Batch,
    ) -> Result<(), String> {
        let d = ctx.direction.index();
        let previous_ts = std::mem::replace(&mut self.streams[d].last_ts, ts);
        // A chunk with no bytes at all stands for records the kernel lost.
        let gap = present.is_empty();
        // (Taken first: the region may close just below, and a hole's end
        // still puts up its fence.)
        let before_hole = self.streams[d].lost.as_ref().and_then(|l| l.after_gap);
        if self.streams[d].lost.is_some() && self.streams[1 - d].lost.is_some() {
            // Both directions lost their place: neither can prove the
            // other's region over, and waiting would lose every call until
            // the connection goes quiet. A chunk starts a call, so this
            // direction's region ends here and parsing resumes with it.
            self.close_lost(ctx.conn, d, out);
        }
        if let Some(before_hole) = before_hole.filter(|_| !gap) {
            self.end_hole_at_chunk(ctx, d, before_hole, ts, out);
        }
        if !gap && !self.orphans.is_empty() && self.carries_requests(d) == Some(true) {
            // The request direction's next record: the hole before it (if
            // any) has ended above.
            self.release_orphans(out);
        }
        let s = &mut self.streams[d];
        if let Some(lost) = s.lost.as_mut() {
            lost.bytes += present.len() as u64 + missing;
            lost.last_ns = ts;
            if !gap {
                lost.after_gap = None;
            }
            return Ok(());
        }
        if s.to_end {
            if let Some(current) = s.current.as_mut() {
                current.size += present.len() as u64 + missing;
            }
            return Ok(());
        }
        // Bytes a message already claimed: captured ones first, then the
        // ones the capture cut off.
        if s.skip > 0 {
            let from_present = s.skip.min(present.len() as u64);
            present = &present[from_present as usize..];
            s.skip -= from_present;
            let from_missing = s.skip.min(missing);
            missing -= from_missing;
            s.skip -= from_missing;
            if s.skip > 0 {
                return Ok(());
            }
            self.finish_skip(ctx, d, ts, out);
        }
        let s = &mut self.streams[d];
        if s.buf.is_empty() {
            // Common case: nothing pending, so parse the chunk where it lies
            // and keep only an incomplete tail.
            let used = self.parse(proto, info, ctx, d, present, None, ts, out)?;
            let s = &mut self.streams[d];
            if used < present.len() && !s.to_end && s.skip == 0 && s.lost.is_none() {
                s.marks.push_back((0, ts));
                s.buf.extend_from_slice(&present[used..]);
            }
        } else if !present.is_empty() {
            s.marks.push_back((s.buf.len(), ts));
            s.buf.extend_from_slice(present);
            let buf = std::mem::take(&mut s.buf);
            let marks = std::mem::take(&mut s.marks);
            let used = self.parse(proto, info, ctx, d, &buf, Some(&marks), ts, out);
            let s = &mut self.streams[d];
            if s.lost.is_none() {
                s.buf = buf;
                s.marks = marks;
                s.consume(used?);
            } else {
                used?;
            }
        }
        if missing == 0 {
            return Ok(());
        }
        let s = &mut self.streams[d];
        if let Some(lost) = s.lost.as_mut() {
            // The parse above lost its place in this very chunk.
            lost.bytes += missing;
            return Ok(());
        }
        if !s.buf.is_empty() && s.skip == 0 && !s.to_end {
            // The head of a message waits for bytes that were lost: ask the
            // plugin for its length from what is here.
            let truncated = Ctx { truncated: true, ..*ctx };
            let buf = std::mem::take(&mut s.buf);
            let marks = std::mem::take(&mut s.marks);
            let used = self.parse(proto, info, &truncated, d, &buf, Some(&marks), ts, out);
            let s = &mut self.streams[d];
            if let Some(lost) = s.lost.as_mut() {
                used?;
                lost.bytes += missing;
                return Ok(());
            }
            s.buf = buf;
            s.marks = marks;
            s.consume(used?);
        }
        let s = &mut self.streams[d];
        if s.to_end {
            if let Some(current) = s.current.as_mut() {
                current.size += missing;
            }
            return Ok(());
        }
        let absorbed = s.skip.min(missing);
        s.skip -= absorbed;
        missing -= absorbed;
        if absorbed > 0 && s.skip == 0 {
            self.finish_skip(ctx, d, ts, out);
        }
        if missing > 0 {
            // Bytes we will never see, past anything a length accounts for.
            self.lose(proto, ctx, d, ts, missing, gap.then_some(previous_ts));
        }
        Ok(())
    }

    /// One datagram: a whole message (or several), never continued by the
    /// next chunk. Bytes the capture cut off belong to the datagram's last
    /// message.
    #[allow(clippy::too_many_arguments)]
    fn feed_datagram<P: Protocol<Conn = C>>(
        &mut self,
        proto: &P,
        info: &Info,
        ctx: &Ctx,
        ts: u64,
        present: &[u8],
        missing: u64,
        out: &mut Batch,
    ) -> Result<(), String> {
        let d = ctx.direction.index();
        let s = &mut self.streams[d];
        s.reset();
        s.lost = None;
        s.resuming = false;
        s.last_ts = ts;
        let before = out.len();
        let used = self.parse(proto, info, ctx, d, present, None, ts, out)?;
        let s = &mut self.streams[d];
        if let Some(lost) = s.lost.as_mut() {
            // A datagram longer than the plugin buffers: its head is all
            // there is, and the datagram's end ends it.
            lost.bytes += missing;
            self.close_lost(ctx.conn, d, out);
        } else if s.current.is_some() {
            // A message the datagram does not complete: cut by the capture
            // (or claiming more than was sent). It ends with the datagram.
            // Bytes the message claims past the datagram are not its size;
            // bytes discarded past it (between messages) were never in it.
            let over = if s.skip_in_message { s.skip.saturating_sub(missing) } else { 0 };
            let complete = s.complete_after_skip.take();
            let current = s.current.take().expect("checked");
            let tail = if s.skip == 0 { missing + (present.len() - used) as u64 } else { 0 };
            let size = current.size.saturating_sub(over) + tail;
            let meta = match complete {
                Some(meta) => Some(meta),
                None => {
                    let head = present[used..].to_vec();
                    proto.lost(&mut self.proto, ctx, &head, &mut self.streams[d].fields)
                }
            };
            if let Some(meta) = meta {
                self.emit(ctx, d, meta, current.start_ns, ts, size, false, out);
            }
        } else if used < present.len() {
            // The head of a message the plugin waited on (NeedMore): the
            // datagram is all of it.
            let head = present[used..].to_vec();
            let rest = (present.len() - used) as u64 + missing;
            if let Some(meta) = proto.lost(&mut self.proto, ctx, &head, &mut self.streams[d].fields) {
                self.emit(ctx, d, meta, ts, ts, rest, false, out);
            }
        } else if missing > 0 {
            // Uncopied bytes after a complete message: its own tail (the
            // datagram's last message, which other messages written since,
            // like responses that waited for it, may follow).
            let ingress = ctx.direction == Direction::Ingress;
            let mine = (before..out.len())
                .rev()
                .find(|&i| out.conn[i] == ctx.conn && (out.flags[i] & MSG_INGRESS != 0) == ingress);
            if let Some(i) = mine {
                out.size[i] += missing;
            }
        }
        self.streams[d].reset();
        Ok(())
    }

    fn finish_skip(&mut self, ctx: &Ctx, d: usize, ts: u64, out: &mut Batch) {
        let s = &mut self.streams[d];
        if let Some((key, meta)) = s.skip_part.take() {
            if let Some(part) = s.parts.remove(&key) {
                self.emit_part(ctx, d, meta, part, ts, out);
            }
            return;
        }
        if let Some(meta) = s.complete_after_skip.take() {
            if let Some(current) = s.current.take() {
                self.emit(ctx, d, meta, current.start_ns, ts, current.size, false, out);
            }
        }
    }

    /// `lost` bytes that will never be seen follow what is buffered: start
    /// a lost region (see the module docs).
    /// `after_gap`: these bytes are a hole in the records, after this
    /// direction's chunk at that time (see [`Lost::after_gap`]).
    #[allow(clippy::too_many_arguments)]
    fn lose<P: Protocol<Conn = C>>(
        &mut self,
        proto: &P,
        ctx: &Ctx,
        d: usize,
        ts: u64,
        lost: u64,
        after_gap: Option<u64>,
    ) {
        let s = &mut self.streams[d];
        let mut head_start = s.current.as_ref().map(|c| c.start_ns).or_else(|| s.marks.front().map(|m| m.1));
        let mut seen = s.current.as_ref().map_or(0, |c| c.size) + s.buf.len() as u64;
        let in_progress = s.current.is_some() || !s.buf.is_empty() || !s.parts.is_empty();
        let buf = std::mem::take(&mut s.buf);
        let meta = if in_progress { proto.lost(&mut self.proto, ctx, &buf, &mut self.streams[d].fields) } else { None };
        let s = &mut self.streams[d];
        // A part's message (its pair id names the part) goes with what of it
        // was seen: its first timestamp, size and fields.
        if let Some(part) = meta.and_then(|m| m.pair_id).and_then(|id| s.parts.remove(&id)) {
            head_start = Some(part.start_ns);
            seen += part.size;
            let mut own = part.fields;
            own.extend_from(&s.fields);
            s.fields = own;
        }
        let first_ns = head_start.unwrap_or(ts);
        s.buf = buf;
        let fields = std::mem::take(&mut s.fields);
        s.reset();
        if meta.is_some() {
            s.fields = fields;
        }
        s.resuming = false;
        s.lossy = true;
        let after_gap = after_gap.filter(|_| !in_progress);
        s.lost = Some(Lost { head: meta.map(|m| (m, first_ns)), bytes: seen + lost, first_ns, last_ns: ts, after_gap });
    }

    /// Parse messages from the front of `data` (the buffer, or a chunk when
    /// nothing is buffered); returns how many bytes were used. `marks` maps
    /// positions in `data` to chunk timestamps (`None`: all are `ts`).
    #[allow(clippy::too_many_arguments)]
    fn parse<P: Protocol<Conn = C>>(
        &mut self,
        proto: &P,
        info: &Info,
        ctx: &Ctx,
        d: usize,
        data: &[u8],
        marks: Option<&VecDeque<(usize, u64)>>,
        ts: u64,
        out: &mut Batch,
    ) -> Result<usize, String> {
        let ts_at = |index: usize| {
            marks.and_then(|m| m.iter().take_while(|(start, _)| *start <= index).last()).map_or(ts, |&(_, t)| t)
        };
        let mut pos = 0usize;
        let mut tries = 0u32;
        while pos < data.len() && !self.streams[d].to_end {
            let s = &mut self.streams[d];
            let mark = s.fields.mark();
            let step = proto.parse(&mut self.proto, ctx, &data[pos..], &mut s.fields);
            let avail = (data.len() - pos) as u64;
            let (n, complete, is_message) = match step {
                Step::NeedMore => {
                    s.fields.rewind(mark);
                    if data.len() - pos > info.max_buffer {
                        // A message longer than the plugin will buffer: its
                        // head is all we get. The rest is a lost region.
                        let tail = &data[pos..];
                        s.buf.clear();
                        s.buf.extend_from_slice(tail);
                        s.marks.clear();
                        s.marks.push_back((0, ts_at(pos)));
                        self.lose(proto, ctx, d, ts, 0, None);
                        return Ok(data.len());
                    }
                    break;
                }
                Step::Invalid(reason) => {
                    s.fields.rewind(mark);
                    if !s.resuming && !s.lossy {
                        return Err(reason);
                    }
                    // Where a message should have started after lost bytes,
                    // none did: try where the plugin says one may start in
                    // the rest of the chunk, a few times.
                    let _ = proto.resync(&mut self.proto, ctx);
                    let guess = (tries < MAX_START_GUESSES)
                        .then(|| proto.next_start(ctx, &data[pos..]))
                        .flatten()
                        .filter(|&k| k > 0 && k < data.len() - pos);
                    if let Some(k) = guess {
                        tries += 1;
                        pos += k;
                        continue;
                    }
                    // None did: the framing is lost again.
                    self.failed_resumes += 1;
                    if self.failed_resumes > MAX_FAILED_RESUMES {
                        return Err(format!("no message start found after lost bytes: {reason}"));
                    }
                    // (The plugin was resynced above.)
                    let s = &mut self.streams[d];
                    s.reset();
                    let rest = avail;
                    s.lost = Some(Lost { head: None, bytes: rest, first_ns: ts_at(pos), last_ns: ts, after_gap: None });
                    s.resuming = false;
                    return Ok(data.len());
                }
                Step::RestOfStream => {
                    let start_ns = ts_at(pos);
                    s.current.get_or_insert(InProgress { start_ns, size: 0 }).size += avail;
                    s.resuming = false;
                    s.to_end = true;
                    pos = data.len();
                    break;
                }
                Step::Continue(n) => (n, None, true),
                Step::Complete(n, meta) => (n, Some(meta), true),
                Step::Discard(n) => (n, None, false),
                Step::Part { n, part, end } => {
                    if n == 0 {
                        return Err(format!("{} parser made no progress", info.name));
                    }
                    s.resuming = false;
                    self.failed_resumes = 0;
                    let start_ns = ts_at(pos);
                    let s = &mut self.streams[d];
                    // A part whole in one step (a request in one HEADERS
                    // frame): emitted straight away, its fields where they
                    // were written, with no part kept.
                    let alone = mark == (0, 0) && n <= avail && !s.parts.contains_key(&part);
                    if let (true, Some(meta)) = (alone, end) {
                        pos += n as usize;
                        let end_ns = ts_at(pos - 1);
                        self.emit(ctx, d, meta, start_ns, end_ns, n, false, out);
                        continue;
                    }
                    if s.parts.len() < MAX_PARTS || s.parts.contains_key(&part) {
                        let spare = &mut s.spare_fields;
                        let p = s.parts.entry(part).or_insert_with(|| PartMessage {
                            start_ns,
                            size: 0,
                            fields: spare.pop().unwrap_or_default(),
                        });
                        p.size += n;
                        s.fields.move_since(mark, &mut p.fields);
                    } else {
                        // Past the bound on parts: its bytes belong to no message.
                        s.fields.rewind(mark);
                    }
                    let take = n.min(avail);
                    pos += take as usize;
                    if n > avail {
                        s.skip = n - avail;
                        s.skip_in_message = false;
                        s.skip_part = end.map(|meta| (part, meta));
                        break;
                    }
                    if let Some(meta) = end {
                        let end_ns = ts_at(pos - 1);
                        if let Some(p) = s.parts.remove(&part) {
                            self.emit_part(ctx, d, meta, p, end_ns, out);
                        }
                    }
                    continue;
                }
            };
            if n == 0 {
                return Err(format!("{} parser made no progress", info.name));
            }
            s.resuming = false;
            self.failed_resumes = 0;
            if is_message {
                let start_ns = ts_at(pos);
                s.current.get_or_insert(InProgress { start_ns, size: 0 }).size += n;
            }
            let take = n.min(avail);
            pos += take as usize;
            if n > avail {
                s.skip = n - avail;
                s.skip_in_message = is_message;
                s.complete_after_skip = complete;
                break;
            }
            if let Some(meta) = complete {
                let end_ns = ts_at(pos - 1);
                if let Some(current) = s.current.take() {
                    self.emit(ctx, d, meta, current.start_ns, end_ns, current.size, false, out);
                }
            }
        }
        Ok(pos)
    }
}

/// Move a completed message and its fields into the batch.
#[allow(clippy::too_many_arguments)]
fn write(
    out: &mut Batch,
    ctx: &Ctx,
    meta: Meta,
    start_ns: u64,
    end_ns: u64,
    size: u64,
    fields: Option<&mut Fields>,
    unseen: bool,
) {
    match fields {
        // Responses mostly carry no field: skip the column work.
        Some(fields) if fields.keys.is_empty() => {
            fields.text.clear();
            out.field_count.push(0);
        }
        Some(fields) => {
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
        }
        None => out.field_count.push(0),
    }
    let mut flags = meta.kind as u8;
    if ctx.direction == Direction::Ingress {
        flags |= MSG_INGRESS;
    }
    // A response whose outcome the plugin could not read goes as the
    // contract's unseen responses do: outcome unknown.
    let unseen = unseen || (meta.outcome_unknown && meta.kind == MessageKind::Response);
    if meta.success && !unseen {
        flags |= MSG_SUCCESS;
    }
    if meta.pair_id.is_some() {
        flags |= MSG_HAS_PAIR_ID;
    }
    if unseen {
        flags |= MSG_UNSEEN;
    }
    out.conn.push(ctx.conn);
    out.start_ns.push(start_ns);
    // Events reach the host in the order their CPUs queued them, which can
    // differ from their timestamps by a little: never end before the start.
    out.end_ns.push(end_ns.max(start_ns));
    out.size.push(size);
    out.pair_id.push(meta.pair_id.unwrap_or(0));
    out.flags.push(flags);
}

#[cfg(test)]
mod part_tests {
    //! [`Step::Part`] with a toy multiplexed protocol: frames of
    //! `kind (Q request, R response), stream, end (0/1), length, payload`;
    //! a frame's payload is a `tag` field of its stream's message.

    use crate::testing::{run, TestChunk};
    use crate::{Ctx, FieldKey, Fields, Info, Meta, Protocol, Step};
    use crate::{Direction, Role};

    #[derive(Default)]
    struct Mux;

    impl Protocol for Mux {
        type Conn = ();
        fn info() -> Info {
            Info {
                name: "mux",
                version: "0",
                description: "",
                default_ports: &[],
                field_names: &["tag"],
                max_buffer: 1 << 16,
            }
        }
        fn detect(&self, _: Direction, _: Role, _: &[u8]) -> u8 {
            0
        }
        fn parse(&self, _: &mut (), ctx: &Ctx, buf: &[u8], fields: &mut Fields) -> Step {
            if buf.len() < 4 {
                return if ctx.truncated { Step::Invalid("cut header".into()) } else { Step::NeedMore };
            }
            let n = 4 + u64::from(buf[3]);
            if (buf.len() as u64) < n && !ctx.truncated {
                return Step::NeedMore;
            }
            let payload = &buf[4..(n as usize).min(buf.len())];
            if !payload.is_empty() {
                fields.text(FieldKey(0), payload);
            }
            let meta = match buf[0] {
                b'Q' => Meta::request(),
                // A cancel: the client's own answer to its call.
                b'C' => Meta::response(false),
                _ => Meta::response(true),
            };
            let end = (buf[2] == 1).then(|| meta.with_pair_id(u64::from(buf[1])));
            Step::Part { n, part: u64::from(buf[1]), end }
        }
    }

    fn frame(kind: u8, stream: u8, end: bool, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![kind, stream, u8::from(end), payload.len() as u8];
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn interleaved_parts_are_messages_of_their_own() {
        let out = [frame(b'Q', 1, false, b"a"), frame(b'Q', 3, true, b"b")].concat();
        let got = run::<Mux>(
            &[
                TestChunk::egress(1, out),
                TestChunk::egress(3, frame(b'Q', 1, true, b"cc")),
                TestChunk::ingress(4, [frame(b'R', 3, true, b"x"), frame(b'R', 1, true, b"")].concat()),
            ],
            &[1],
        );
        assert_eq!(
            got,
            [
                "1 req out 1-1 size=5 id=3 ok tag=b",
                "1 req out 1-3 size=11 id=1 ok tag=a tag=cc",
                "1 resp in 4-4 size=5 id=3 ok tag=x",
                "1 resp in 4-4 size=4 id=1 ok",
            ]
        );
    }

    /// A server that answers before the request's last frame: the
    /// response waits for its request, so the two pair.
    #[test]
    fn a_response_before_its_request_ends_waits_for_it() {
        let got = run::<Mux>(
            &[
                TestChunk::egress(1, frame(b'Q', 5, false, b"h")),
                TestChunk::ingress(2, frame(b'R', 5, true, b"r")),
                TestChunk::egress(3, frame(b'Q', 5, true, b"t")),
            ],
            &[1],
        );
        assert_eq!(got, ["1 req out 1-3 size=10 id=5 ok tag=h tag=t", "1 resp in 2-2 size=5 id=5 ok tag=r"]);
    }

    /// A call its client cancels (a response from the requests' side, as
    /// HTTP/2's RST_STREAM) while its response is under way: the part the
    /// server had begun goes with the call (it stayed until the close, one
    /// per call cancelled so), and a later frame of that stream is a part
    /// of its own, not the rest of that response.
    #[test]
    fn a_cancel_from_the_requests_side_drops_the_response_begun() {
        let got = run::<Mux>(
            &[
                TestChunk::egress(1, frame(b'Q', 1, true, b"q")),
                TestChunk::ingress(2, frame(b'R', 1, false, b"begun")),
                TestChunk::egress(3, frame(b'C', 1, true, b"")),
                TestChunk::ingress(4, frame(b'R', 1, true, b"z")),
            ],
            &[1],
        );
        assert_eq!(
            got,
            [
                "1 req out 1-1 size=5 id=1 ok tag=q",
                "1 resp out 3-3 size=4 id=1 fail",
                "1 resp in 4-4 size=5 id=1 ok tag=z"
            ]
        );
    }

    /// A part's frame the capture cut: its uncopied bytes are skipped
    /// exactly and still count in its size; the next frame parses.
    #[test]
    fn a_cut_frame_keeps_its_size_and_the_stream_in_step() {
        let big = frame(b'Q', 1, true, &[b'z'; 200]);
        let got = run::<Mux>(
            &[
                TestChunk::egress(1, &big[..10]).truncated(big.len() as u64),
                TestChunk::egress(2, frame(b'Q', 3, true, b"n")),
                TestChunk::ingress(3, [frame(b'R', 1, true, b""), frame(b'R', 3, true, b"")].concat()),
            ],
            &[1],
        );
        assert_eq!(
            got,
            [
                "1 req out 1-1 size=204 id=1 ok tag=zzzzzz",
                "1 req out 2-2 size=5 id=3 ok tag=n",
                "1 resp in 3-3 size=4 id=1 ok",
                "1 resp in 3-3 size=4 id=3 ok",
            ]
        );
    }
}
