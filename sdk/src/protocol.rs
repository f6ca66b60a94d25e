//! The one trait a plugin implements.

use crate::{Direction, MessageKind, Role};

/// Static description of a protocol plugin.
#[derive(Clone, Debug)]
pub struct Info {
    /// Protocol name as it appears in records (`http`, `redis`, ...).
    pub name: &'static str,
    /// Plugin version (semver). `env!("CARGO_PKG_VERSION")` is a good choice.
    pub version: &'static str,
    /// One line for `wirelens plugins list`.
    pub description: &'static str,
    /// Well-known ports. A connection on one of them asks this plugin first,
    /// and its claim (at or above the daemon's threshold, 50) is final; on
    /// other ports every plugin is asked and the most confident wins (95
    /// or more ends the search), and the port is then learnt for it.
    pub default_ports: &'static [u16],
    /// Names of the fields this protocol's messages carry. A [`FieldKey`] is
    /// an index into this list.
    pub field_names: &'static [&'static str],
    /// Most bytes of one direction's stream kept while waiting for a message
    /// to be complete; beyond it the connection is given up (bounded memory).
    pub max_buffer: usize,
}

/// Index into [`Info::field_names`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldKey(pub u16);

/// What the parser is told about the stream it parses.
#[derive(Clone, Copy, Debug)]
pub struct Ctx {
    /// The connection id (host-chosen).
    pub conn: u64,
    /// Direction of the stream being parsed.
    pub direction: Direction,
    /// Role of the observed process on this connection.
    pub role: Role,
    /// The bytes come from a datagram socket (UDP): each chunk is one whole
    /// datagram, and a message never continues into the next chunk. False
    /// for byte streams (TCP, unix streams) and for hosts older than
    /// contract 1.1, which do not say.
    pub datagram: bool,
    /// The bytes right after `buf` were lost (the capture copied only the
    /// first bytes of a call): what is at hand is all there will be of this
    /// stretch. Parse from it what you can and, if the protocol gives the
    /// message's length, return it ([`Step::Complete`] or
    /// [`Step::Continue`] past the bytes at hand): the SDK then skips the
    /// rest exactly, uncopied bytes included, and stays in step.
    /// [`Step::NeedMore`] means the length is not known either: the SDK
    /// calls [`Protocol::lost`].
    pub truncated: bool,
}

impl Ctx {
    /// A context for [`Protocol::detect`], which is told only a direction
    /// and a role (to call [`Ctx::carries_requests`] and the like).
    pub fn for_detect(direction: Direction, role: Role) -> Self {
        Self { conn: 0, direction, role, datagram: false, truncated: false }
    }

    /// True when, by role, this direction carries requests (client egress,
    /// server ingress). `None` when the role is unknown.
    pub fn carries_requests(&self) -> Option<bool> {
        match (self.role, self.direction) {
            (Role::Client, Direction::Egress) | (Role::Server, Direction::Ingress) => Some(true),
            (Role::Client, Direction::Ingress) | (Role::Server, Direction::Egress) => Some(false),
            (Role::Unknown, _) => None,
        }
    }

    /// [`Ctx::carries_requests`], guessing that what the observed process
    /// sends is requests when its role is unknown (most observed processes
    /// are clients).
    pub fn carries_requests_or_egress(&self) -> bool {
        self.carries_requests().unwrap_or(self.direction == Direction::Egress)
    }
}

/// How a completed message takes part in a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub kind: MessageKind,
    /// For responses: did the call succeed.
    pub success: bool,
    /// Pairs a response with its request (DNS id); `None` means FIFO.
    pub pair_id: Option<u64>,
    /// For responses: what says the outcome could not be read (state from
    /// before the capture began, like HTTP/2's header tables): the call
    /// counts with an unknown outcome, neither success nor failure.
    pub outcome_unknown: bool,
}

impl Meta {
    /// A request, paired first-in first-out.
    pub fn request() -> Self {
        Self { kind: MessageKind::Request, success: true, pair_id: None, outcome_unknown: false }
    }
    /// A response with its outcome, paired first-in first-out.
    pub fn response(success: bool) -> Self {
        Self { kind: MessageKind::Response, success, pair_id: None, outcome_unknown: false }
    }
    /// A response whose outcome cannot be read (see
    /// [`Meta::outcome_unknown`]).
    pub fn response_unknown() -> Self {
        Self { outcome_unknown: true, ..Self::response(false) }
    }
    /// A message that is neither request nor response (pub/sub push).
    pub fn oneway() -> Self {
        Self { kind: MessageKind::Oneway, success: true, pair_id: None, outcome_unknown: false }
    }
    /// Pair by this id instead of by order.
    pub fn with_pair_id(mut self, id: u64) -> Self {
        self.pair_id = Some(id);
        self
    }
}

/// The next step of one direction's stream, decided from the bytes at its
/// front. Lengths are `u64` wire lengths: they may exceed the bytes at hand,
/// in which case the SDK skips the rest as it arrives, including bytes the
/// capture truncated, and stays in sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The first `n` bytes belong to the message in progress (starting it if
    /// none is), which goes on: the next call sees what follows them.
    Continue(u64),
    /// The message in progress (or a new one) ends after `n` more bytes.
    Complete(u64, Meta),
    /// Everything from here to the end of the stream belongs to the message
    /// in progress (an HTTP body delimited by the connection's close). It is
    /// emitted when the connection closes, with the meta [`Protocol::finish`]
    /// returns.
    RestOfStream,
    /// The first `n` bytes are not part of any message (keep-alive noise,
    /// interim responses): drop them.
    Discard(u64),
    /// For protocols whose messages interleave on one stream (HTTP/2's
    /// streams, multiplexed RPC): the first `n` bytes belong to the message
    /// of `part`, a key the plugin chooses (the stream id). The SDK keeps
    /// each part's message apart from the others and from the
    /// [`Step::Continue`] one: its size, its first and last timestamps, and
    /// the fields written during the calls that returned it. With `end`,
    /// these bytes end the part's message, which is then emitted with that
    /// meta. A response is deferred while the request part of its
    /// `pair_id` is still in progress, so give a part's messages
    /// `pair_id` = `part`. A response the requests' side sends (a client
    /// cancelling its call, as HTTP/2's RST_STREAM) answers the call: the
    /// part of that pair id the other side had begun is dropped, unwritten.
    /// `n` past the bytes at hand is skipped as for `Continue` (uncopied
    /// bytes included). Byte streams only.
    Part { n: u64, part: u64, end: Option<Meta> },
    /// The bytes at hand are not enough to decide: call again with more.
    NeedMore,
    /// This is not (or no longer) the protocol: give the connection up.
    Invalid(String),
}

impl Step {
    /// One step for several messages: `one` reads the message at the front
    /// of the bytes it is given, and is given the bytes after it in turn
    /// for as long as it returns `Continue` for a message that ends within
    /// `buf`. The step covers what it read: `Complete` at the message that
    /// ends the lot, else `Continue` over the messages read (a step other
    /// than those after the first message is left for the next call, with
    /// the fields written during it taken back). For responses made of many
    /// small messages (PostgreSQL's RowDescription, DataRows and
    /// CommandComplete, a MySQL result set's packets), each of which would
    /// otherwise be a trip through the SDK.
    pub fn read_on(buf: &[u8], fields: &mut Fields, mut one: impl FnMut(&[u8], &mut Fields) -> Step) -> Step {
        let mut at = 0usize;
        loop {
            let mark = (fields.keys.len(), fields.text.len());
            match one(&buf[at..], fields) {
                Step::Continue(n) => {
                    let next = (at as u64).saturating_add(n);
                    match usize::try_from(next) {
                        // A next message starts in the bytes at hand.
                        Ok(next) if next < buf.len() => at = next,
                        _ => return Step::Continue(next),
                    }
                }
                Step::Complete(n, meta) => return Step::Complete((at as u64).saturating_add(n), meta),
                _ if at > 0 => {
                    fields.keys.truncate(mark.0);
                    fields.text.truncate(mark.1);
                    return Step::Continue(at as u64);
                }
                other => return other,
            }
        }
    }
}

/// Where a parser writes the fields of the message in progress. Fields
/// written during a call that returns [`Step::NeedMore`] are thrown away, so
/// a parser can always write as it goes.
#[derive(Default, Debug)]
pub struct Fields {
    /// `(key, offset in text, length)` per field.
    pub(crate) keys: Vec<(u16, u32, u32)>,
    pub(crate) text: String,
}

impl Fields {
    /// Add a text field. Invalid UTF-8 is replaced, long values are cut to
    /// 4 KiB (at a character boundary) so records stay small.
    #[inline]
    pub fn text(&mut self, key: FieldKey, value: &[u8]) {
        const MAX: usize = 4096;
        let value = &value[..value.len().min(MAX)];
        // Most values (methods, paths, commands, names) are ASCII, which is
        // UTF-8 as it stands.
        if is_ascii(value) {
            return self.push(key, value);
        }
        match std::str::from_utf8(value) {
            Ok(text) => self.str(key, text),
            Err(e) if e.error_len().is_none() => {
                // Cut inside a character at MAX: keep the whole ones.
                let text = std::str::from_utf8(&value[..e.valid_up_to()]).unwrap_or_default();
                self.str(key, text)
            }
            Err(_) => self.str(key, &String::from_utf8_lossy(value)),
        }
    }

    /// Add a text field from a `&str`.
    #[inline]
    pub fn str(&mut self, key: FieldKey, value: &str) {
        self.push(key, value.as_bytes())
    }

    /// Add an integer field (carried as decimal text, as records show it).
    #[inline]
    pub fn int(&mut self, key: FieldKey, value: i64) {
        // Most integers are small (versions, status codes, counts): up to
        // three digits in 32-bit arithmetic, without the loop of 64-bit
        // divisions (about 170 instructions an integer in the sandbox).
        if (0..1000).contains(&value) {
            let v = value as u32;
            let digits = [b'0' + (v / 100) as u8, b'0' + (v / 10 % 10) as u8, b'0' + (v % 10) as u8];
            let first = usize::from(v < 100) + usize::from(v < 10);
            return self.push(key, &digits[first..]);
        }
        // By hand: core::fmt costs more than the parsing inside the sandbox.
        let mut digits = [0u8; 20];
        let mut n = value.unsigned_abs();
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        if value < 0 {
            at -= 1;
            digits[at] = b'-';
        }
        self.push(key, &digits[at..]);
    }

    /// Add a text field of `parts` joined by `sep` (a DNS name's labels, a
    /// path's segments), cut at `max` bytes (and at most 4 KiB, at a
    /// character boundary). It is written straight into the fields' text: no
    /// buffer to build it in first, whose copies (and zeroing) are each a
    /// call out to the runtime inside the sandbox. Parts that are not UTF-8
    /// are replaced as in [`Fields::text`]; `sep` should be ASCII (anything
    /// else is written as `?`).
    pub fn joined<'p>(&mut self, key: FieldKey, parts: impl IntoIterator<Item = &'p [u8]>, sep: u8, max: usize) {
        let max = max.min(4096);
        let sep = if sep.is_ascii() { sep } else { b'?' };
        let start = self.text.len();
        for (i, part) in parts.into_iter().enumerate() {
            let room = max - (self.text.len() - start);
            if room == 0 || (i > 0 && room == 1) {
                break;
            }
            // SAFETY: only ASCII, or whole characters of a `str`, are
            // appended, so the text stays UTF-8.
            let text = unsafe { self.text.as_mut_vec() };
            if i > 0 {
                text.push(sep);
            }
            let room = max - (text.len() - start);
            if is_ascii(part) {
                extend_small(text, &part[..part.len().min(room)]);
            } else {
                let lossy = String::from_utf8_lossy(part);
                text.extend_from_slice(&lossy.as_bytes()[..lossy.floor_char_boundary(room)]);
            }
        }
        self.keys.push((key.0, start as u32, (self.text.len() - start) as u32));
    }

    /// Append `value`, which is UTF-8, and its field entry.
    #[inline(always)]
    fn push(&mut self, key: FieldKey, value: &[u8]) {
        let offset = self.text.len() as u32;
        // SAFETY: every caller passes UTF-8 (checked ASCII, a `&str`, or
        // ASCII digits), so the text stays UTF-8.
        extend_small(unsafe { self.text.as_mut_vec() }, value);
        self.keys.push((key.0, offset, value.len() as u32));
    }

    /// Drop every field written so far for the message in progress.
    pub fn clear(&mut self) {
        self.keys.clear();
        self.text.clear();
    }

    /// Number of fields written so far.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no field was written.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub(crate) fn mark(&self) -> (usize, usize) {
        (self.keys.len(), self.text.len())
    }

    pub(crate) fn rewind(&mut self, mark: (usize, usize)) {
        self.keys.truncate(mark.0);
        self.text.truncate(mark.1);
    }

    /// Append a copy of every field of `other`.
    pub(crate) fn extend_from(&mut self, other: &Fields) {
        self.push_each(&other.keys, &other.text);
    }

    /// Append the fields `keys` name in `text` (another `Fields`' columns).
    fn push_each(&mut self, keys: &[(u16, u32, u32)], text: &str) {
        for &(key, offset, len) in keys {
            self.push(FieldKey(key), &text.as_bytes()[offset as usize..(offset + len) as usize]);
        }
    }

    /// Move the fields written since `mark` to the end of `to`.
    pub(crate) fn move_since(&mut self, mark: (usize, usize), to: &mut Fields) {
        to.push_each(&self.keys[mark.0..], &self.text);
        self.rewind(mark);
    }
}

/// ASCII test eight bytes at a time (std's `is_ascii` goes a `usize`, four
/// bytes, at a time on wasm32): inside the sandbox every iteration of a
/// loop also pays a deadline check.
#[inline(always)]
pub(crate) fn is_ascii(bytes: &[u8]) -> bool {
    let mut words = bytes.chunks_exact(8);
    let mut acc = 0u64;
    for w in &mut words {
        acc |= u64::from_le_bytes(w.try_into().expect("eight bytes"));
    }
    let tail = words.remainder().iter().fold(0u8, |a, &b| a | b);
    acc & 0x8080_8080_8080_8080 == 0 && tail < 0x80
}

/// `v.extend_from_slice(b)` for the short values fields mostly are: inside
/// the sandbox a memcpy of unknown length is a call out to the runtime
/// (`memory.copy`), dearer than copying a few words in place. Longer
/// slices (over 32 bytes) are copied as `extend_from_slice` does.
#[inline(always)]
pub fn extend_small(v: &mut Vec<u8>, b: &[u8]) {
    let n = b.len();
    if n > 32 {
        return v.extend_from_slice(b);
    }
    v.reserve(n);
    // SAFETY: `n` bytes are reserved past `len`; every read stays within
    // `b` and every write within the reserved room (the overlapping head
    // and tail copies cover lengths between one and two words).
    unsafe {
        let src = b.as_ptr();
        let dst = v.as_mut_ptr().add(v.len());
        let copy8 = |at: usize| {
            std::ptr::write_unaligned(dst.add(at).cast::<u64>(), std::ptr::read_unaligned(src.add(at).cast::<u64>()))
        };
        if n >= 16 {
            copy8(0);
            copy8(8);
            copy8(n - 16);
            copy8(n - 8);
        } else if n >= 8 {
            copy8(0);
            copy8(n - 8);
        } else if n >= 4 {
            let copy4 = |at: usize| {
                std::ptr::write_unaligned(
                    dst.add(at).cast::<u32>(),
                    std::ptr::read_unaligned(src.add(at).cast::<u32>()),
                )
            };
            copy4(0);
            copy4(n - 4);
        } else {
            for i in 0..n {
                *dst.add(i) = *src.add(i);
            }
        }
        v.set_len(v.len() + n);
    }
}

/// A layer-7 protocol parser.
///
/// One value of the implementing type lives per plugin instance (built with
/// `Default`, then [`Protocol::configure`]d); one [`Protocol::Conn`] lives per
/// connection. The SDK calls [`Protocol::parse`] with the bytes at the front
/// of one direction's stream until it returns [`Step::NeedMore`].
pub trait Protocol: Default + 'static {
    /// Per-connection state (both directions), e.g. requests awaiting answers.
    type Conn: Default;

    /// Name, version, field names and limits.
    fn info() -> Info;

    /// The field (one of [`Info::field_names`]) that says what a call does:
    /// HTTP's `method`, Redis's `command`. Outputs that label calls
    /// (Prometheus, OTLP) use it. `None`: calls are labelled by protocol only.
    fn call_field() -> Option<&'static str> {
        None
    }

    /// Payload bytes worth copying per system call, `(requests,
    /// responses)`: what the fields need (a start line, a command, SQL
    /// text). Bytes past it are not copied; the SDK counts them (see
    /// [`Ctx::truncated`] and [`Protocol::lost`]): a call's count, pairing,
    /// outcome, size and latency must not depend on them. `None`: the
    /// daemon's capture size. Users override it with
    /// `Wirelens.CaptureBytes`. A connection seen pipelining (a request
    /// made while an earlier one, paired in order, waits) is copied whole
    /// from then on, whatever this says.
    fn capture_bytes() -> Option<(u32, u32)> {
        None
    }

    /// Apply one option from the daemon's configuration
    /// (`Wirelens.PluginOptions.<name>.<key>`). Refuse an unknown key or a
    /// bad value with a message saying why; the engine prefixes the key.
    fn configure(&mut self, key: &str, value: &str) -> Result<(), String> {
        let _ = (key, value);
        Err("unknown option (this protocol takes none)".to_string())
    }

    /// How sure (0-100) that a connection whose first bytes in `direction`
    /// are `bytes` speaks this protocol. 0 means no; 50 or more claims it;
    /// 95 or more (an opening only this protocol has) ends the search.
    fn detect(&self, direction: Direction, role: Role, bytes: &[u8]) -> u8;

    /// Decide the next step for the bytes at the front of a stream. `buf` is
    /// never empty. Write the message's fields into `fields`.
    fn parse(&self, conn: &mut Self::Conn, ctx: &Ctx, buf: &[u8], fields: &mut Fields) -> Step;

    /// The stream of `ctx.direction` ended (connection closed) while a
    /// message was in progress: return its meta to emit it (a body that ends
    /// with the connection), or `None` to drop it.
    fn finish(&self, conn: &mut Self::Conn, ctx: &Ctx) -> Option<Meta> {
        let _ = (conn, ctx);
        None
    }

    /// Bytes of `ctx.direction` were lost where no length accounted for
    /// them (the capture copied only the first bytes of a large call, or
    /// dropped events), so the parser's place in this direction is lost.
    /// `head` holds the bytes of the message in progress that were seen and
    /// not consumed yet (possibly empty; earlier parts of it may have been
    /// consumed by [`Step::Continue`]).
    ///
    /// Forget per-direction parsing state, and return the meta of the
    /// message in progress if its head tells enough to report it (its kind
    /// and, for a response, its success: a Redis reply's first byte, an
    /// HTTP status line, an error already seen); fields written into
    /// `fields` go with it. The SDK reports it when the lost bytes are
    /// proven over, with their real size and last timestamp (see the
    /// crate's docs on lost bytes), and parsing resumes at a chunk start.
    /// `None`: no message was in progress, or its head tells nothing.
    ///
    /// Protocols whose messages are parts ([`Step::Part`]) return the meta
    /// of the part in progress with `pair_id` = its part key: the SDK
    /// reports that part's message with what of it was seen (size, first
    /// timestamp, fields).
    ///
    /// The default calls [`Protocol::resync`] (plugins written before this
    /// hook existed).
    fn lost(&self, conn: &mut Self::Conn, ctx: &Ctx, head: &[u8], fields: &mut Fields) -> Option<Meta> {
        let _ = (head, fields);
        self.resync(conn, ctx)
    }

    /// After lost bytes, parsing resumes at a chunk start, which a long
    /// read can cut anywhere (a 16 KiB read of pipelined replies). When no
    /// message starts there, the SDK asks where in `data` (the rest of that
    /// chunk) one may start: an offset from 1 on, which it tries in turn
    /// (a parse that is not `Invalid` resumes there; bytes passed over
    /// belong to no message). A cheap guess from the framing, e.g. Redis's
    /// line end followed by a type byte. `None` (the default): none, and
    /// the direction stays lost until its next chunk.
    fn next_start(&self, ctx: &Ctx, data: &[u8]) -> Option<usize> {
        let _ = (ctx, data);
        None
    }

    /// The older form of [`Protocol::lost`], without the head's bytes;
    /// also called when the SDK gives up a place where a message should
    /// have started after lost bytes. Forget per-direction parsing state.
    fn resync(&self, conn: &mut Self::Conn, ctx: &Ctx) -> Option<Meta> {
        let _ = (conn, ctx);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(f: &Fields) -> Vec<&str> {
        f.keys.iter().map(|&(_, o, l)| &f.text[o as usize..(o + l) as usize]).collect()
    }

    /// Messages `<len><tag>` of one digit and one letter, `.` ending the
    /// lot; each writes its tag; a lower-case one waits for its whole
    /// length, an upper-case one is skipped by it.
    fn one(rest: &[u8], fields: &mut Fields) -> Step {
        let (Some(&len), Some(&tag)) = (rest.first(), rest.get(1)) else { return Step::NeedMore };
        let len = u64::from(len - b'0');
        fields.text(FieldKey(0), &[tag]);
        match tag {
            b'.' => Step::Complete(len, Meta::response(true)),
            b'?' => Step::Invalid("?".into()),
            _ if tag.is_ascii_lowercase() && rest.len() < len as usize => Step::NeedMore,
            _ => Step::Continue(len),
        }
    }

    #[test]
    fn read_on_covers_whole_messages_and_takes_back_the_rest() {
        let read = |buf: &[u8]| {
            let mut f = Fields::default();
            let step = Step::read_on(buf, &mut f, one);
            (step, values(&f).concat())
        };
        // To the end of the lot, in one step.
        assert_eq!(read(b"2a3bx2."), (Step::Complete(7, Meta::response(true)), "ab.".into()));
        // Past the bytes at hand: skipped as a plain Continue would.
        assert_eq!(read(b"2a9B"), (Step::Continue(11), "aB".into()));
        // A message still short, or a bad one, after others: those read, its
        // fields taken back (the next call sees it again).
        assert_eq!(read(b"2a3b"), (Step::Continue(2), "a".into()));
        assert_eq!(read(b"2a2?"), (Step::Continue(2), "a".into()));
        // First of all: as `one` said.
        assert_eq!(read(b"2?").0, Step::Invalid("?".into()));
        assert_eq!(read(b"3a").0, Step::NeedMore);
    }

    #[test]
    fn short_copies_and_ascii_checks_of_every_length() {
        let source: Vec<u8> = (0..40u8).map(|i| b'a' + i % 26).collect();
        for n in 0..=source.len() {
            let mut v = b"xy".to_vec();
            extend_small(&mut v, &source[..n]);
            assert_eq!(&v[2..], &source[..n], "length {n}");
            assert!(is_ascii(&source[..n]));
            for bad in 0..n {
                let mut s = source[..n].to_vec();
                s[bad] = 0xc3;
                assert!(!is_ascii(&s), "non-ASCII byte {bad} of {n}");
            }
        }
    }

    #[test]
    fn ints_and_texts() {
        let mut f = Fields::default();
        for n in [0, 7, 9, 10, 42, 99, 100, 200, 999, 1000, 65535] {
            f.int(FieldKey(2), n);
        }
        f.int(FieldKey(0), 0);
        f.int(FieldKey(0), -42);
        f.int(FieldKey(0), i64::MIN);
        f.int(FieldKey(0), i64::MAX);
        f.text(FieldKey(1), b"caf\xc3\xa9");
        f.text(FieldKey(1), b"bad\xffbyte");
        let mut long = vec![b'a'; 4095];
        long.extend_from_slice("é".as_bytes()); // cut in the middle of this character
        f.text(FieldKey(1), &long);
        let v = values(&f);
        assert_eq!(&v[..11], &["0", "7", "9", "10", "42", "99", "100", "200", "999", "1000", "65535"]);
        let v = &v[11..];
        assert_eq!(&v[..6], &["0", "-42", "-9223372036854775808", "9223372036854775807", "café", "bad\u{fffd}byte"]);
        assert_eq!(v[6].len(), 4095);
    }

    #[test]
    fn joined_parts_are_cut_at_whole_characters_and_never_end_on_a_separator() {
        let mut f = Fields::default();
        f.joined(FieldKey(0), [&b"www"[..], b"example", b"com"], b'.', 255);
        f.joined(FieldKey(0), [&b"caf"[..], b"\xff\xfe", b"x"], b'.', 255);
        // "ab.c" then "é" (2 bytes) ends at byte 6: cut before it at 5.
        f.joined(FieldKey(0), [&b"ab"[..], "cé".as_bytes()], b'.', 5);
        f.joined(FieldKey(0), [&b"ab"[..], "cé".as_bytes()], b'.', 6);
        // Full after the first part: no separator alone at the end.
        f.joined(FieldKey(0), [&b"abc"[..], b"d"], b'.', 4);
        f.joined(FieldKey(0), [&b"abc"[..], b"d"], b'.', 3);
        f.joined(FieldKey(0), std::iter::empty(), b'.', 10);
        f.joined(FieldKey(0), [&b"a"[..], b"b"], 0xe9, 10);
        f.joined(FieldKey(0), [&[b'x'; 5000][..]], b'.', usize::MAX);
        let v = values(&f);
        assert_eq!(
            &v[..8],
            &["www.example.com", "caf.\u{fffd}\u{fffd}.x", "ab.c", "ab.c\u{e9}", "abc", "abc", "", "a?b"]
        );
        assert_eq!(v[8].len(), 4096);
    }
}
