//! HTTP/2 protocol plugin, gRPC included (RFC 9113, HPACK RFC 7541).
//!
//! A call is one stream: its request is the client's frames of the stream
//! (HEADERS, CONTINUATION, DATA) up to END_STREAM, its response the
//! server's up to END_STREAM, or the stream's RST_STREAM. Frames of
//! different streams interleave: each stream's messages are kept apart as
//! the SDK's parts ([`Step::Part`], keyed and paired by stream id).
//! Connection frames (SETTINGS, PING, WINDOW_UPDATE, GOAWAY, PRIORITY)
//! belong to no call.
//!
//! Fields: `version` (`2`), `method`, `url` (`:path`, the query dropped
//! unless the `keep_query` option is `true`), `host` (`:authority`),
//! `resp_code` (`:status`); for gRPC (`content-type: application/grpc*`)
//! also `grpc_service`, `grpc_method`, `grpc_status` (from the trailers;
//! success means 0), `request_messages` and `response_messages`, the gRPC
//! messages each side sent on the stream (absent when some of them were not
//! copied).
//!
//! Limits, by design:
//! - **A connection whose start the capture missed** has an unknown HPACK
//!   table: its calls are counted, with the fields that decode without it
//!   (static-table entries, literals). So is a direction after lost bytes
//!   or a header block the capture cut. The daemon counts such connections
//!   in its health record (`l7_connections_midway`). A response whose
//!   status (`:status`, or gRPC's `grpc-status`) was not read while some
//!   of its headers were unknown has an unknown outcome, never a guessed
//!   one.
//! - **Server push** (PUSH_PROMISE and the pushed stream) is no call: no
//!   request was sent. Its header blocks are decoded, to keep HPACK in step.
//! - **A client that resets a stream** after its request ended (a gRPC
//!   cancellation) ends the call there: the reset is its response, a
//!   failure, whose size is the RST_STREAM frame's (response frames the
//!   server had sent of the stream are not in it). The stream's state here
//!   goes at the reset; the server's frames of it still on their way belong
//!   to no call (the last 32 streams so reset are remembered).
//! - **h2c by `Upgrade`**: the HTTP/1 plugin keeps the connection and
//!   parses it from the 101 on with this parser ([`Http2::for_upgrade`]),
//!   so those calls are `http` records with `version` 2; the upgraded
//!   request is answered on stream 1.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use wirelens_sdk::memchr::{memchr, memchr2};
use wirelens_sdk::{Ctx, Direction, FieldKey, Fields, Info, Meta, Protocol, Role, Step};

pub mod cases;
pub mod hpack;

pub const VERSION: FieldKey = FieldKey(0);
pub const METHOD: FieldKey = FieldKey(1);
pub const URL: FieldKey = FieldKey(2);
pub const HOST: FieldKey = FieldKey(3);
pub const RESP_CODE: FieldKey = FieldKey(4);
pub const GRPC_SERVICE: FieldKey = FieldKey(5);
pub const GRPC_METHOD: FieldKey = FieldKey(6);
pub const GRPC_STATUS: FieldKey = FieldKey(7);
pub const REQUEST_MESSAGES: FieldKey = FieldKey(8);
pub const RESPONSE_MESSAGES: FieldKey = FieldKey(9);

/// What a client sends first.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
/// The most a dynamic table may take here, whatever SETTINGS allow.
const TABLE_CAP: usize = 64 << 10;
/// The longest header block (HEADERS and its CONTINUATIONs) buffered.
const MAX_BLOCK: u64 = 256 << 10;
/// gRPC DATA frames up to this size are waited for whole, so their
/// messages are counted; longer ones are skipped (their count unknown).
const MAX_COUNTED_DATA: u64 = 64 << 10;
/// Streams tracked per connection; beyond, a stream's calls are counted
/// without fields.
const MAX_STREAMS: usize = 16_384;

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PUSH_PROMISE: u8 = 5;
const CONTINUATION: u8 = 9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;

/// The protocol; `keep_query` is its one option.
#[derive(Default)]
pub struct Http2 {
    keep_query: bool,
    /// HTTP fields only (`version` to `resp_code`): the HTTP/1 plugin
    /// parses a connection upgraded to h2c with this, under its own field
    /// names, which are the first five here.
    http_fields_only: bool,
}

impl Http2 {
    /// The parser the HTTP/1 plugin hands an h2c connection to.
    pub fn for_upgrade(keep_query: bool) -> Self {
        Self { keep_query, http_fields_only: true }
    }
}

/// Per-connection state.
#[derive(Default)]
pub struct Conn {
    dirs: [Dir; 2],
    streams: HashMap<u32, Stream, BuildHasherDefault<StreamIdHasher>>,
    /// The direction the preface came in (the client's), once seen.
    client_dir: Option<usize>,
    /// Reused from header block to header block (no allocation per call).
    heads: Heads,
    /// The last streams the client reset after their requests (their resets
    /// answered the calls): the server's frames of them still on their way,
    /// or a reset in return, belong to no call. Stream ids are never reused.
    /// 32: a client resets many at once when a call that fanned out to them
    /// is given up (each one past these would be an orphan response).
    cancelled: [u32; 32],
    cancelled_next: usize,
}

#[derive(Default)]
struct Dir {
    /// HPACK state of the header blocks this direction carries; `None`
    /// before its first frame.
    decoder: Option<hpack::Decoder>,
    /// The table size the other side's SETTINGS allow this direction.
    limit: Option<usize>,
    /// A header block waiting for its CONTINUATION frames.
    pending: Option<Pending>,
}

struct Pending {
    stream: u32,
    end_stream: bool,
    /// PUSH_PROMISE's block: decoded for HPACK's sake only.
    promise: bool,
    block: Vec<u8>,
    /// A fragment was not copied: the block cannot be decoded.
    cut: bool,
}

#[derive(Default)]
struct Stream {
    grpc: bool,
    /// The final response's `:status` (0: not seen).
    status: u16,
    grpc_status: Option<u32>,
    /// The request's headers were seen (a later HEADERS is trailers).
    requested: bool,
    /// Pushed by the server: no call.
    pushed: bool,
    /// gRPC messages per direction.
    messages: [MessageCount; 2],
    /// Each direction's message ended.
    ended: [bool; 2],
    /// Some of the response's headers named unknown table entries (a
    /// connection joined midway): its outcome may be among them.
    response_unknowns: bool,
    /// ... in the block that ended the response (trailers, or a
    /// trailers-only answer): where gRPC's status would be.
    trailer_unknowns: bool,
}

/// gRPC's length-prefixed messages (1 flag byte, 4 length bytes) counted
/// across DATA frames.
#[derive(Default)]
struct MessageCount {
    count: u64,
    /// Bytes of the current message's body still to come.
    left: u64,
    /// Prefix bytes seen of the next message, and their values.
    prefix_seen: u8,
    prefix: [u8; 5],
    /// Some DATA was not copied: the count is unknown.
    unknown: bool,
}

impl MessageCount {
    fn add(&mut self, mut payload: &[u8]) {
        while !payload.is_empty() {
            if self.left > 0 {
                let take = self.left.min(payload.len() as u64);
                self.left -= take;
                payload = &payload[take as usize..];
                continue;
            }
            self.prefix[self.prefix_seen as usize] = payload[0];
            self.prefix_seen += 1;
            payload = &payload[1..];
            if self.prefix_seen == 5 {
                self.count += 1;
                self.prefix_seen = 0;
                self.left =
                    u64::from(u32::from_be_bytes([self.prefix[1], self.prefix[2], self.prefix[3], self.prefix[4]]));
            }
        }
    }
}

/// Stream ids are the peers' small odd and even numbers: a multiply mixes
/// them well enough, where std's SipHash costs more than the lookup.
#[derive(Default)]
struct StreamIdHasher(u64);

impl Hasher for StreamIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A frame's header.
#[derive(Clone, Copy, Debug)]
struct Frame {
    len: u64,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl Frame {
    fn read(b: &[u8]) -> Option<Frame> {
        let h = b.get(..FRAME_HEADER)?;
        Some(Frame {
            len: u64::from(u32::from_be_bytes([0, h[0], h[1], h[2]])),
            kind: h[3],
            flags: h[4],
            stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
        })
    }

    /// Whether a header could be a real frame's: a known type on the kind
    /// of stream it belongs to, within the default frame size.
    fn plausible(&self) -> bool {
        let on_stream = matches!(self.kind, DATA | HEADERS | 2 | RST_STREAM | PUSH_PROMISE | CONTINUATION);
        let on_conn = matches!(self.kind, SETTINGS | 6 | 7);
        self.kind <= CONTINUATION
            && self.len <= 16_384
            && ((on_stream && self.stream != 0) || (on_conn && self.stream == 0) || self.kind == 8)
    }

    fn size(&self) -> u64 {
        FRAME_HEADER as u64 + self.len
    }
}

/// The headers a call's fields come from.
#[derive(Default)]
struct Heads {
    method: Value,
    path: Value,
    authority: Value,
    host: Value,
    status: Option<u16>,
    grpc: bool,
    grpc_status: Option<u32>,
}

/// A header's value, its buffer kept for the next header block.
#[derive(Default)]
struct Value {
    set: bool,
    bytes: Vec<u8>,
}

impl Value {
    fn set(&mut self, value: &[u8]) {
        self.bytes.clear();
        wirelens_sdk::extend_small(&mut self.bytes, value);
        self.set = true;
    }

    fn get(&self) -> Option<&[u8]> {
        self.set.then_some(&self.bytes[..])
    }
}

impl Heads {
    /// Ready for the next header block.
    fn reset(&mut self) {
        for v in [&mut self.method, &mut self.path, &mut self.authority, &mut self.host] {
            v.set = false;
        }
        self.status = None;
        self.grpc = false;
        self.grpc_status = None;
    }

    fn take(&mut self, name: Option<&[u8]>, value: Option<&[u8]>) {
        let (Some(name), Some(value)) = (name, value) else { return };
        match name {
            b":method" => self.method.set(value),
            b":path" => self.path.set(value),
            b":authority" => self.authority.set(value),
            b"host" => self.host.set(value),
            b":status" => self.status = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok()),
            b"content-type" => self.grpc |= value.starts_with(b"application/grpc"),
            b"grpc-status" => self.grpc_status = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok()),
            _ => {}
        }
    }
}

impl Conn {
    /// Whether direction `d` is the client's (carries requests).
    fn is_client(&self, d: usize, ctx: &Ctx) -> bool {
        match self.client_dir {
            Some(c) => c == d,
            None => ctx.carries_requests_or_egress(),
        }
    }

    /// A server's frame of a stream whose call the client's reset answered.
    fn answered_by_reset(&self, d: usize, ctx: &Ctx, id: u32) -> bool {
        // (The stream map first: a frame of a stream in progress, the usual
        // case, needs no look through the ring.)
        !self.is_client(d, ctx) && !self.streams.contains_key(&id) && self.cancelled.contains(&id)
    }

    fn stream(&mut self, id: u32) -> Option<&mut Stream> {
        if self.streams.len() >= MAX_STREAMS && !self.streams.contains_key(&id) {
            return None;
        }
        Some(self.streams.entry(id).or_default())
    }

    /// The table size direction `d` may use: what the other side's
    /// SETTINGS allowed, else the protocol's 4096.
    fn limit(&self, d: usize) -> usize {
        self.dirs[d].limit.unwrap_or(4096)
    }

    /// A direction's decoder, made at its first frame.
    fn decoder(&mut self, d: usize) -> &mut hpack::Decoder {
        let limit = self.limit(d);
        self.dirs[d].decoder.get_or_insert_with(|| hpack::Decoder::joined_midway(limit))
    }

    /// Forget a direction's HPACK state (bytes lost, a block cut): entries
    /// from here on are known, older ones not.
    fn lose_table(&mut self, d: usize) {
        self.dirs[d].decoder = Some(hpack::Decoder::joined_midway(self.limit(d)));
        self.dirs[d].pending = None;
    }

    /// Decode a header block of direction `d` (`None`: not copied), calling
    /// `field` per field; a block that is cut or fails to decode leaves the
    /// table unknown. Whether some fields were unknown.
    fn decode_block(
        &mut self,
        d: usize,
        block: Option<&[u8]>,
        field: impl FnMut(Option<&[u8]>, Option<&[u8]>),
    ) -> bool {
        let Some(block) = block else {
            self.lose_table(d);
            return true;
        };
        let before = self.decoder(d).unknown_fields;
        let decoded = self.decoder(d).decode(block, field);
        let unknowns = self.decoder(d).unknown_fields > before;
        if decoded.is_err() {
            self.lose_table(d);
        }
        unknowns || decoded.is_err()
    }

    /// The stream's message of direction `d` ends: the meta it ends with.
    fn end(&mut self, d: usize, ctx: &Ctx, id: u32, fields: &mut Fields, http_fields_only: bool) -> Meta {
        let client = self.is_client(d, ctx);
        let meta = match self.streams.get_mut(&id) {
            Some(s) => {
                s.ended[d] = true;
                let m = &s.messages[d];
                if s.grpc && !m.unknown && !http_fields_only {
                    fields.int(if client { REQUEST_MESSAGES } else { RESPONSE_MESSAGES }, m.count as i64);
                }
                let success = if s.grpc {
                    s.grpc_status.is_none_or(|g| g == 0) && (s.status == 0 || s.status < 400)
                } else {
                    s.status == 0 || s.status < 400
                };
                // The outcome is unknown when what would say it may be an
                // unknown header: no status read and some headers unknown.
                let unknown = s.grpc_status.is_none()
                    && (s.trailer_unknowns || (s.response_unknowns && (s.grpc || s.status == 0)));
                let done = s.ended[0] && s.ended[1];
                if done {
                    self.streams.remove(&id);
                }
                if client {
                    Meta::request()
                } else if unknown {
                    Meta::response_unknown()
                } else {
                    Meta::response(success)
                }
            }
            None if client => Meta::request(),
            // Nothing is known of the stream (past the bound on streams).
            None => Meta::response_unknown(),
        };
        meta.with_pair_id(u64::from(id))
    }
}

/// A request target as both HTTP plugins report it (`url`): the fragment
/// dropped, and the query too unless `keep_query`.
pub fn url_path(target: &[u8], keep_query: bool) -> &[u8] {
    let end = if keep_query { memchr(b'#', target) } else { memchr2(b'?', b'#', target) };
    &target[..end.unwrap_or(target.len())]
}

/// A frame's payload without its padding (PADDED: a length byte first,
/// that many bytes last); `None` when the padding claims too much.
fn unpadded(flags: u8, payload: &[u8]) -> Option<&[u8]> {
    if flags & PADDED == 0 {
        return Some(payload);
    }
    let (&pad, p) = payload.split_first()?;
    p.get(..p.len().checked_sub(usize::from(pad))?)
}

impl Http2 {
    /// A whole header block of stream `id` from direction `d` (`None`: not
    /// copied): decode it, write the fields it gives.
    #[allow(clippy::too_many_arguments)]
    fn header_block(
        &self,
        conn: &mut Conn,
        ctx: &Ctx,
        d: usize,
        id: u32,
        block: Option<&[u8]>,
        ends: bool,
        fields: &mut Fields,
    ) {
        let mut heads = std::mem::take(&mut conn.heads);
        heads.reset();
        let unknowns = conn.decode_block(d, block, |n, v| heads.take(n, v));
        self.apply_heads(conn, ctx, d, id, &heads, unknowns, ends, fields);
        conn.heads = heads;
    }

    /// What a decoded header block says of its stream and its fields.
    #[allow(clippy::too_many_arguments)]
    fn apply_heads(
        &self,
        conn: &mut Conn,
        ctx: &Ctx,
        d: usize,
        id: u32,
        heads: &Heads,
        unknowns: bool,
        ends: bool,
        fields: &mut Fields,
    ) {
        let client = conn.is_client(d, ctx);
        let Some(stream) = conn.stream(id) else { return };
        if client {
            if stream.requested {
                return; // trailers of a request
            }
            stream.requested = true;
            stream.grpc = heads.grpc;
            fields.str(VERSION, "2");
            if let Some(m) = heads.method.get() {
                fields.text(METHOD, m);
            }
            if let Some(p) = heads.path.get() {
                fields.text(URL, url_path(p, self.keep_query));
                if heads.grpc && !self.http_fields_only {
                    // `/package.Service/Method`
                    let p = p.strip_prefix(b"/").unwrap_or(p);
                    if let Some(slash) = p.iter().rposition(|&b| b == b'/') {
                        fields.text(GRPC_SERVICE, &p[..slash]);
                        fields.text(GRPC_METHOD, &p[slash + 1..]);
                    }
                }
            }
            if let Some(h) = heads.authority.get().or(heads.host.get()) {
                fields.text(HOST, h);
            }
        } else {
            stream.response_unknowns |= unknowns;
            stream.trailer_unknowns |= unknowns && ends;
            stream.grpc |= heads.grpc;
            if let Some(status) = heads.status.filter(|s| *s >= 200) {
                stream.status = status;
                fields.int(RESP_CODE, i64::from(status));
            }
            if let Some(g) = heads.grpc_status {
                stream.grpc = true;
                stream.grpc_status = Some(g);
                if !self.http_fields_only {
                    fields.int(GRPC_STATUS, i64::from(g));
                }
            }
        }
    }

    /// The header block fragment of a HEADERS or PUSH_PROMISE payload:
    /// without padding, priority or the promised stream id.
    fn fragment<'a>(frame: &Frame, payload: &'a [u8]) -> Option<&'a [u8]> {
        let p = unpadded(frame.flags, payload)?;
        match frame.kind {
            HEADERS if frame.flags & PRIORITY != 0 => p.get(5..),
            PUSH_PROMISE => p.get(4..),
            _ => Some(p),
        }
    }

    fn data(&self, conn: &mut Conn, ctx: &Ctx, d: usize, f: Frame, buf: &[u8], fields: &mut Fields) -> Step {
        let whole = buf.len() as u64 >= f.size();
        match conn.streams.get_mut(&f.stream) {
            Some(s) if s.pushed => return Step::Discard(f.size()),
            Some(s) if s.grpc => {
                if !whole && !ctx.truncated && f.len <= MAX_COUNTED_DATA {
                    return Step::NeedMore;
                }
                let count = &mut s.messages[d];
                if whole {
                    count.add(unpadded(f.flags, &buf[FRAME_HEADER..f.size() as usize]).unwrap_or_default());
                } else {
                    count.unknown = true;
                }
            }
            _ => {}
        }
        let end = (f.flags & END_STREAM != 0).then(|| conn.end(d, ctx, f.stream, fields, self.http_fields_only));
        Step::Part { n: f.size(), part: u64::from(f.stream), end }
    }
}

impl Protocol for Http2 {
    type Conn = Conn;

    fn info() -> Info {
        Info {
            name: "http2",
            version: env!("CARGO_PKG_VERSION"),
            description: "HTTP/2 and gRPC: streams paired by id, HPACK, gRPC status from trailers",
            default_ports: &[],
            field_names: &[
                "version",
                "method",
                "url",
                "host",
                "resp_code",
                "grpc_service",
                "grpc_method",
                "grpc_status",
                "request_messages",
                "response_messages",
            ],
            max_buffer: (MAX_BLOCK + MAX_COUNTED_DATA) as usize,
        }
    }

    fn call_field() -> Option<&'static str> {
        Some("method")
    }

    fn configure(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "keep_query" => {
                self.keep_query = value.parse().map_err(|_| format!("must be true or false, not `{value}`"))?;
                Ok(())
            }
            _ => Err("unknown option (known: keep_query)".to_string()),
        }
    }

    fn detect(&self, _direction: Direction, _role: Role, bytes: &[u8]) -> u8 {
        if bytes.len() >= 16 && (bytes.starts_with(PREFACE) || PREFACE.starts_with(bytes)) {
            return 100;
        }
        let Some(first) = Frame::read(bytes) else { return 0 };
        // A server's first frame: SETTINGS on stream 0, not an ack.
        if first.kind == SETTINGS && first.stream == 0 && first.flags == 0 && first.len % 6 == 0 && first.len <= 60 {
            return 80;
        }
        // Midway: a whole HEADERS frame that decodes, without the table,
        // to a request's or response's pseudo-header.
        if first.kind == HEADERS && first.plausible() {
            let fragment = bytes.get(FRAME_HEADER..first.size() as usize).and_then(|p| Self::fragment(&first, p));
            let mut pseudo = false;
            if let Some(block) = fragment {
                let mut d = hpack::Decoder::joined_midway(4096);
                let decoded = d.decode(block, |n, _| pseudo |= matches!(n, Some(b":method" | b":status")));
                if decoded.is_ok() && pseudo {
                    return 70;
                }
            }
        }
        // Midway: two plausible frames in a row.
        if first.plausible() {
            if let Some(second) = bytes.get(first.size() as usize..).and_then(Frame::read) {
                if second.plausible() {
                    return 60;
                }
            }
        }
        0
    }

    fn parse(&self, conn: &mut Conn, ctx: &Ctx, buf: &[u8], fields: &mut Fields) -> Step {
        let d = ctx.direction.index();
        if conn.dirs[d].decoder.is_none() {
            // The first bytes of this direction: the preface, a server's
            // SETTINGS (a connection seen from its start), or any frame.
            if buf.len() < PREFACE.len() && PREFACE.starts_with(buf) && !ctx.truncated {
                return Step::NeedMore;
            }
            let limit = conn.limit(d);
            if buf.starts_with(PREFACE) {
                conn.client_dir = Some(d);
                conn.dirs[d].decoder = Some(hpack::Decoder::new(limit));
                return Step::Discard(PREFACE.len() as u64);
            }
            let Some(f) = Frame::read(buf) else { return Step::NeedMore };
            let start = f.kind == SETTINGS && f.stream == 0 && f.flags & ACK == 0;
            conn.dirs[d].decoder =
                Some(if start { hpack::Decoder::new(limit) } else { hpack::Decoder::joined_midway(limit) });
        }
        let Some(f) = Frame::read(buf) else { return Step::NeedMore };
        let whole = buf.len() as u64 >= f.size();
        let payload = &buf[FRAME_HEADER..(f.size() as usize).min(buf.len())];
        match f.kind {
            DATA => {
                if f.stream == 0 {
                    return Step::Invalid("DATA on stream 0".into());
                }
                if conn.answered_by_reset(d, ctx, f.stream) {
                    return Step::Discard(f.size());
                }
                self.data(conn, ctx, d, f, buf, fields)
            }
            HEADERS | PUSH_PROMISE | CONTINUATION => {
                if f.stream == 0 {
                    return Step::Invalid("a header block on stream 0".into());
                }
                if !whole && !ctx.truncated && f.len <= MAX_BLOCK {
                    return Step::NeedMore;
                }
                let fragment = if whole {
                    match f.kind {
                        CONTINUATION => Some(payload),
                        _ => Self::fragment(&f, payload),
                    }
                } else {
                    None
                };
                // The block so far: a new one, or the pending one continued.
                let pending = if f.kind == CONTINUATION {
                    let Some(mut p) = conn.dirs[d].pending.take().filter(|p| p.stream == f.stream) else {
                        // A continuation of a block not seen (midway): its
                        // stream's frame, no fields.
                        conn.lose_table(d);
                        return Step::Part { n: f.size(), part: u64::from(f.stream), end: None };
                    };
                    match fragment {
                        Some(frag) if p.block.len() as u64 + frag.len() as u64 <= MAX_BLOCK => {
                            p.block.extend_from_slice(frag)
                        }
                        _ => p.cut = true,
                    }
                    p
                } else {
                    Pending {
                        stream: f.stream,
                        end_stream: f.kind == HEADERS && f.flags & END_STREAM != 0,
                        promise: f.kind == PUSH_PROMISE,
                        // Filled below only if continued: a block whole in
                        // its frame (the usual case) is decoded in place.
                        block: Vec::new(),
                        cut: fragment.is_none(),
                    }
                };
                if f.flags & END_HEADERS == 0 {
                    let mut pending = pending;
                    if f.kind != CONTINUATION {
                        pending.block = fragment.map(<[u8]>::to_vec).unwrap_or_default();
                    }
                    let part = u64::from(pending.stream);
                    conn.dirs[d].pending = Some(pending);
                    return if pending_is_push(conn, d) {
                        Step::Discard(f.size())
                    } else {
                        Step::Part { n: f.size(), part, end: None }
                    };
                }
                let block = match f.kind {
                    CONTINUATION => pending.block.as_slice(),
                    _ => fragment.unwrap_or_default(),
                };
                let block = (!pending.cut).then_some(block);
                if pending.promise {
                    // Decoded for HPACK's sake; the promised stream is pushed.
                    let promised = if whole && payload.len() >= 4 {
                        let at = usize::from(f.flags & PADDED != 0);
                        payload.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff)
                    } else {
                        None
                    };
                    conn.decode_block(d, block, |_, _| {});
                    if let Some(s) = promised.and_then(|id| conn.stream(id)) {
                        s.pushed = true;
                    }
                    return Step::Discard(f.size());
                }
                let id = pending.stream;
                if conn.streams.get(&id).is_some_and(|s| s.pushed) {
                    conn.decode_block(d, block, |_, _| {});
                    if pending.end_stream {
                        conn.streams.remove(&id);
                    }
                    return Step::Discard(f.size());
                }
                self.header_block(conn, ctx, d, id, block, pending.end_stream, fields);
                let end = pending.end_stream.then(|| conn.end(d, ctx, id, fields, self.http_fields_only));
                Step::Part { n: f.size(), part: u64::from(id), end }
            }
            RST_STREAM => {
                if f.stream == 0 {
                    return Step::Invalid("RST_STREAM on stream 0".into());
                }
                // A reset stream is closed: its state goes (frames already
                // on their way are counted without it).
                if conn.answered_by_reset(d, ctx, f.stream) {
                    return Step::Discard(f.size());
                }
                let stream = conn.streams.get(&f.stream);
                let pushed = stream.is_some_and(|s| s.pushed);
                if stream.is_some_and(|s| s.ended[d]) || pushed {
                    conn.streams.remove(&f.stream);
                    if !pushed && conn.is_client(d, ctx) {
                        // The client cancelled a call it had sent whole (a
                        // gRPC cancellation, a page left): no response will
                        // come, so the reset answers it, a failure, at its
                        // time (the host would fail it 30 s later). What
                        // the server had begun of its response goes (the
                        // SDK drops that part: a response from the
                        // requests' side answered it), and its frames of
                        // the stream still on their way are no call's.
                        conn.cancelled[conn.cancelled_next] = f.stream;
                        conn.cancelled_next = (conn.cancelled_next + 1) % conn.cancelled.len();
                        let meta = Meta::response(false).with_pair_id(u64::from(f.stream));
                        return Step::Part { n: f.size(), part: u64::from(f.stream), end: Some(meta) };
                    }
                    return Step::Discard(f.size());
                }
                // The stream's message of this direction ends here; a
                // response that ends so failed.
                let mut meta = conn.end(d, ctx, f.stream, fields, self.http_fields_only);
                meta.success = false;
                conn.streams.remove(&f.stream);
                Step::Part { n: f.size(), part: u64::from(f.stream), end: Some(meta) }
            }
            SETTINGS => {
                if !whole && !ctx.truncated && f.len <= 1024 {
                    return Step::NeedMore;
                }
                if f.flags & ACK == 0 && whole {
                    // HEADER_TABLE_SIZE bounds the table of what this side
                    // receives: the other direction's.
                    for s in payload.chunks_exact(6) {
                        if u16::from_be_bytes([s[0], s[1]]) == SETTINGS_HEADER_TABLE_SIZE {
                            let v = u32::from_be_bytes([s[2], s[3], s[4], s[5]]) as usize;
                            let limit = v.min(TABLE_CAP);
                            conn.dirs[1 - d].limit = Some(limit);
                            if let Some(dec) = conn.dirs[1 - d].decoder.as_mut() {
                                dec.set_limit(limit);
                            }
                        }
                    }
                }
                Step::Discard(f.size())
            }
            _ => Step::Discard(f.size()),
        }
    }

    fn lost(&self, conn: &mut Conn, ctx: &Ctx, _head: &[u8], _fields: &mut Fields) -> Option<Meta> {
        // Frames are found again by `next_start`; a header block in the
        // hole may have changed the table.
        conn.lose_table(ctx.direction.index());
        None
    }

    fn next_start(&self, _ctx: &Ctx, data: &[u8]) -> Option<usize> {
        // Two plausible frame headers in a row (or one that ends the data).
        (1..data.len().saturating_sub(FRAME_HEADER - 1)).find(|&at| {
            let Some(f) = Frame::read(&data[at..]).filter(Frame::plausible) else { return false };
            let next = at as u64 + f.size();
            next >= data.len() as u64 || Frame::read(&data[next as usize..]).is_some_and(|g| g.plausible())
        })
    }
}

/// The pending block of direction `d` is a PUSH_PROMISE's or a pushed
/// stream's: no call's.
fn pending_is_push(conn: &Conn, d: usize) -> bool {
    conn.dirs[d].pending.as_ref().is_some_and(|p| p.promise || conn.streams.get(&p.stream).is_some_and(|s| s.pushed))
}

#[cfg(feature = "plugin")]
wirelens_sdk::export_plugin!(Http2);
