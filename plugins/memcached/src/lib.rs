//! memcached protocol plugin: the text protocol (classic and meta
//! commands) and the binary protocol, told apart message by message (a
//! binary message starts with the magic byte 0x80 or 0x81, which no text
//! command or reply does).
//!
//! Requests are recognised by direction (client writes, server reads).
//! Replies describe their own shape, so no request needs to be remembered to
//! frame them: a text reply is one line, except `VALUE` blocks (and `STAT`,
//! `ITEM`, `PREFIX` and metadump lines) that go on to `END`, and `VA` with
//! its data block; a binary reply is its header's body length (a `stats`
//! reply goes on to the packet with an empty key). Data blocks are skipped by
//! their length, copied or not.
//!
//! One-way requests (no reply comes, or only on a hit or a failure):
//! `noreply`, the binary protocol's quiet opcodes (`setq`, `getq`, ...),
//! meta commands with the `q` flag, `quit`. Their replies are passed over
//! (the request was counted already): binary ones by their opcode, text
//! ones by order (while quiet meta commands wait first, a reply is theirs,
//! up to the `MN` that answers the `mn` ending such a pipeline).
//!
//! Outcome: `ERROR`, `CLIENT_ERROR`, `SERVER_ERROR` (binary: statuses other
//! than not found, exists and not stored) fail the call. A miss (`END`
//! alone, `NOT_FOUND`, `EN`) or a refused conditional store (`NOT_STORED`,
//! `EXISTS`) is an answer, not a failure.
//!
//! Fields: `command` (the text command as sent, lower case; binary opcodes
//! by the text command's name, quiet ones with a `q`), `key` (the first
//! key), `key_count` (keys the request names).

use wirelens_sdk::cursor::parse_decimal;
use wirelens_sdk::{Ctx, Direction, FieldKey, Fields, Info, Meta, Protocol, Role, Step};

pub mod cases;

pub const COMMAND: FieldKey = FieldKey(0);
pub const KEY: FieldKey = FieldKey(1);
pub const KEY_COUNT: FieldKey = FieldKey(2);

/// Longest text line accepted while waiting for its end (a `get` of many
/// keys of up to 250 bytes each).
const MAX_LINE: usize = 64 * 1024;
/// A binary message's header.
const HEADER: usize = 24;
const REQUEST_MAGIC: u8 = 0x80;
const RESPONSE_MAGIC: u8 = 0x81;

#[derive(Default)]
pub struct Memcached;

/// Messages frame themselves; a connection only remembers, per direction,
/// that a reply of several parts (`VALUE` blocks, statistics) is under way,
/// so a reply whose end was not copied is still known to have succeeded.
#[derive(Default)]
pub struct Conn {
    reply_under_way: [bool; 2],
    /// Text requests awaiting replies, oldest first: true for a meta
    /// command with `q`, which is answered only on a hit or a failure (its
    /// usual outcome is not sent; a pipeline of them usually ends with
    /// `mn`, answered `MN`).
    expected: std::collections::VecDeque<bool>,
}

/// Text requests remembered while their replies are awaited.
const MAX_EXPECTED: usize = 65_536;

impl Conn {
    /// What a text reply is: the answer to a waiting request (`true`), or
    /// (while quiet meta commands wait first) a quiet command's answer,
    /// passed over because that command was counted as one-way.
    fn reply_answers(&mut self, line: &[u8]) -> bool {
        match self.expected.front() {
            Some(true) if line.starts_with(b"MN") => {
                // Quiet commands before `mn` were answered by silence.
                while self.expected.front() == Some(&true) {
                    self.expected.pop_front();
                }
                self.expected.pop_front();
                true
            }
            Some(true) => {
                self.expected.pop_front();
                false
            }
            Some(false) => {
                self.expected.pop_front();
                true
            }
            None => true,
        }
    }

    fn expect(&mut self, quiet: bool) {
        if self.expected.len() >= MAX_EXPECTED {
            self.expected.pop_front();
        }
        self.expected.push_back(quiet);
    }
}


impl Protocol for Memcached {
    type Conn = Conn;

    fn info() -> Info {
        Info {
            name: "memcached",
            version: env!("CARGO_PKG_VERSION"),
            description: "memcached text, meta and binary protocols",
            default_ports: &[11211],
            field_names: &["command", "key", "key_count"],
            max_buffer: 128 * 1024,
        }
    }

    fn call_field() -> Option<&'static str> {
        Some("command")
    }

    // No capture budget (whole calls, like Redis): a multi-key `get` reply
    // or a pipeline of commands in one read is framed message by message,
    // and data blocks are skipped by their length without being copied from
    // the next call on.

    fn detect(&self, direction: Direction, role: Role, bytes: &[u8]) -> u8 {
        let ctx = Ctx::for_detect(direction, role);
        if ctx.carries_requests_or_egress() {
            if bytes.first() == Some(&REQUEST_MAGIC) {
                return match binary_header(bytes) {
                    Some(h) if opcode_name(h.opcode).is_some() && h.data_type == 0 => 90,
                    _ => 0,
                };
            }
            detect_text_request(bytes)
        } else {
            // Replies alone are weak evidence (`END`, `STORED`): below the
            // claim threshold, they only add to a request's.
            if bytes.first() == Some(&RESPONSE_MAGIC) {
                return match binary_header(bytes) {
                    Some(h) if opcode_name(h.opcode).is_some() && h.data_type == 0 => 40,
                    _ => 0,
                };
            }
            let line = bytes.split(|&b| b == b'\r' || b == b'\n').next().unwrap_or_default();
            let word = line.split(|&b| b == b' ').next().unwrap_or_default();
            match word {
                b"VALUE" | b"END" | b"STORED" | b"NOT_STORED" | b"DELETED" | b"NOT_FOUND" | b"VA" | b"HD" | b"EN" => 30,
                _ => 0,
            }
        }
    }

    fn parse(&self, conn: &mut Conn, ctx: &Ctx, buf: &[u8], fields: &mut Fields) -> Step {
        let requests = ctx.carries_requests_or_egress();
        let step = match (buf[0], requests) {
            (REQUEST_MAGIC, true) => binary_request(buf, ctx.truncated, fields),
            (RESPONSE_MAGIC, false) => binary_response(buf),
            (REQUEST_MAGIC | RESPONSE_MAGIC, _) => Step::Invalid(format!(
                "binary memcached {} where {} go",
                if buf[0] == REQUEST_MAGIC { "request" } else { "response" },
                if requests { "requests" } else { "responses" }
            )),
            (_, true) => {
                let (step, expects) = text_request(buf, fields);
                if let (Step::Complete(..), Some(quiet)) = (&step, expects) {
                    conn.expect(quiet);
                }
                step
            }
            (_, false) => match text_response(buf) {
                Step::Complete(n, meta) if !conn.reply_answers(buf) => {
                    let _ = meta;
                    Step::Discard(n)
                }
                step => step,
            },
        };
        if !requests {
            match step {
                Step::Continue(_) => conn.reply_under_way[ctx.direction.index()] = true,
                Step::Complete(..) | Step::Discard(_) => conn.reply_under_way[ctx.direction.index()] = false,
                _ => {}
            }
        }
        step
    }

    /// After lost bytes: a line start (after a line end) whose first byte
    /// can begin a message in this direction (a lower-case command, an
    /// upper-case reply or a number), or a binary magic byte right after a
    /// line end. Binary streams have no such marks: they resume at the next
    /// chunk.
    fn next_start(&self, ctx: &Ctx, data: &[u8]) -> Option<usize> {
        let requests = ctx.carries_requests_or_egress();
        let mut from = 0;
        while let Some(i) = data[from..].iter().position(|&b| b == b'\n') {
            let at = from + i + 1;
            let first = *data.get(at)?;
            let starts = if requests { first.is_ascii_lowercase() } else { first.is_ascii_uppercase() || first.is_ascii_digit() };
            if starts {
                return Some(at);
            }
            from = at;
        }
        None
    }

    fn lost(&self, conn: &mut Conn, ctx: &Ctx, head: &[u8], fields: &mut Fields) -> Option<Meta> {
        let requests = ctx.carries_requests_or_egress();
        let under_way = std::mem::take(&mut conn.reply_under_way[ctx.direction.index()]);
        // Which replies the lost bytes held is not known: from here on every
        // reply answers (quiet meta commands' answers may then be orphans).
        conn.expected.clear();
        if head.is_empty() {
            // Values or statistics were read: the reply went well so far.
            return (under_way && !requests).then(|| Meta::response(true));
        }
        if head[0] == REQUEST_MAGIC || head[0] == RESPONSE_MAGIC {
            let h = binary_header(head)?;
            let name = opcode_name(h.opcode)?;
            if !requests {
                return (!is_quiet_opcode(h.opcode)).then(|| Meta::response(binary_success(h.opcode, h.status)));
            }
            fields.str(COMMAND, name);
            let key_at = HEADER + usize::from(h.extras_len);
            if h.key_len > 0 && head.len() >= key_at + usize::from(h.key_len) {
                fields.text(KEY, &head[key_at..key_at + usize::from(h.key_len)]);
            }
            fields.int(KEY_COUNT, i64::from(h.key_len > 0));
            return Some(if is_quiet_opcode(h.opcode) { Meta::oneway() } else { Meta::request() });
        }
        // A cut first line still names the command and its first key.
        let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if requests {
            let command = TextCommand::read(line);
            command.write(fields);
            Some(command.meta())
        } else {
            Some(Meta::response(!is_error_reply(line)))
        }
    }
}

/// A text request line, read.
struct TextCommand<'a> {
    name: &'a [u8],
    key: Option<&'a [u8]>,
    key_count: usize,
    /// The data block that follows the line (storage commands): its length
    /// as written, `None` when the argument is no number.
    data: Option<Option<u64>>,
    oneway: bool,
    /// A meta command with `q`.
    quiet_meta: bool,
}

impl<'a> TextCommand<'a> {
    /// The command of `line` (without its line end). Arguments are
    /// separated by one or more spaces, as memcached reads them.
    fn read(line: &'a [u8]) -> Self {
        // The first tokens are kept; the count goes on (keys of a `get`).
        let mut tokens: [&[u8]; 8] = [b""; 8];
        let (mut kept, mut total) = (0usize, 0usize);
        let mut last: &[u8] = b"";
        for t in line.split(|&b| b == b' ').filter(|t| !t.is_empty()) {
            if kept < tokens.len() {
                tokens[kept] = t;
                kept += 1;
            }
            last = t;
            total += 1;
        }
        let name = tokens[0];
        let noreply = total > 1 && last == b"noreply";
        // Meta commands: flags are single tokens after the key (and after
        // `ms`'s data length); `q` asks for no reply on the usual outcome.
        let meta_quiet = |from: usize| {
            line.split(|&b| b == b' ').filter(|t| !t.is_empty()).skip(from).any(|t| t.first() == Some(&b'q'))
        };
        // (first key's token, keys, data length's token, one-way)
        let quiet_meta = match name {
            b"mg" | b"md" | b"ma" | b"me" => meta_quiet(2),
            b"ms" => meta_quiet(3),
            _ => false,
        };
        let (key_at, keys, data_at, oneway) = match name {
            b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas" => (1, 1, Some(4), noreply),
            b"get" | b"gets" => (1, total.saturating_sub(1), None, false),
            b"gat" | b"gats" => (2, total.saturating_sub(2), None, false),
            b"delete" | b"incr" | b"decr" | b"touch" => (1, 1, None, noreply),
            b"mg" | b"md" | b"ma" | b"me" => (1, 1, None, quiet_meta),
            b"ms" => (1, 1, Some(2), quiet_meta),
            b"quit" => (0, 0, None, true),
            _ => (0, 0, None, noreply),
        };
        let has_key = key_at > 0 && total > key_at;
        Self {
            name,
            key: has_key.then(|| tokens[key_at]),
            key_count: if has_key { keys } else { 0 },
            data: data_at.map(|at: usize| if at < kept { parse_decimal(tokens[at]) } else { None }),
            oneway,
            quiet_meta,
        }
    }

    fn write(&self, fields: &mut Fields) {
        if !self.name.is_empty() {
            fields.text(COMMAND, self.name);
        }
        if let Some(key) = self.key {
            fields.text(KEY, key);
        }
        fields.int(KEY_COUNT, self.key_count as i64);
    }

    fn meta(&self) -> Meta {
        if self.oneway {
            Meta::oneway()
        } else {
            Meta::request()
        }
    }
}

/// A text command word: lower-case letters and `_` (`flush_all`).
fn is_command_word(word: &[u8]) -> bool {
    !word.is_empty() && word.len() <= 16 && word.iter().all(|&b| b.is_ascii_lowercase() || b == b'_')
}

fn detect_text_request(bytes: &[u8]) -> u8 {
    let Some(nl) = bytes.iter().position(|&b| b == b'\n') else {
        return 0;
    };
    let line = &bytes[..nl];
    if !line.ends_with(b"\r") || line.iter().any(|&b| b < b' ' && b != b'\r') {
        return 0;
    }
    let line = &line[..line.len() - 1];
    if wirelens_sdk::cursor::find(line, b" HTTP/").is_some() {
        return 0;
    }
    let c = TextCommand::read(line);
    match c.name {
        // A storage command whose data block is where its length says.
        b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas" | b"ms" => match c.data {
            Some(Some(n)) => {
                let end = (nl as u64 + 1).saturating_add(n);
                let block_end = usize::try_from(end).ok().and_then(|e| Some(e..e.checked_add(2)?));
                match block_end.and_then(|r| bytes.get(r)) {
                    Some(b"\r\n") => 95,
                    None if (bytes.len() as u64) < end.saturating_add(2) => 70,
                    _ => 0,
                }
            }
            _ => 0,
        },
        b"get" | b"gets" | b"delete" | b"incr" | b"decr" | b"touch" | b"gat" | b"gats" | b"mg" | b"md" | b"ma"
        | b"me"
            if c.key.is_some() =>
        {
            80
        }
        b"version" | b"stats" | b"flush_all" | b"verbosity" | b"mn" => 70,
        _ => 0,
    }
}

/// A text request, and what reply it awaits: `Some(false)` one,
/// `Some(true)` one only on a hit or failure (a quiet meta command), `None`
/// none.
fn text_request(buf: &[u8], fields: &mut Fields) -> (Step, Option<bool>) {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        return (need_more(buf), None);
    };
    let line = &buf[..nl];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let c = TextCommand::read(line);
    if !is_command_word(c.name) {
        return (Step::Invalid(format!("not a memcached command: `{}`", printable(line))), None);
    }
    c.write(fields);
    let mut n = nl as u64 + 1;
    match c.data {
        None => {}
        Some(Some(len)) => n = n.saturating_add(len).saturating_add(2),
        Some(None) => return (Step::Invalid(format!("bad data length in `{}`", printable(line))), None),
    }
    let expects = match (c.oneway, c.quiet_meta) {
        (false, _) => Some(false),
        (true, true) => Some(true),
        (true, false) => None,
    };
    (Step::Complete(n, c.meta()), expects)
}

fn text_response(buf: &[u8]) -> Step {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        return need_more(buf);
    };
    let line = &buf[..nl];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let n = nl as u64 + 1;
    let mut words = line.split(|&b| b == b' ').filter(|t| !t.is_empty());
    let word = words.next().unwrap_or_default();
    match word {
        // `VALUE <key> <flags> <bytes> [<cas>]`, its data, more, then `END`.
        b"VALUE" => match words.nth(2).and_then(parse_decimal) {
            Some(len) => Step::Continue(n.saturating_add(len).saturating_add(2)),
            None => Step::Invalid(format!("bad VALUE line `{}`", printable(line))),
        },
        // `VA <size> <flags>*` and its data.
        b"VA" => match words.next().and_then(parse_decimal) {
            Some(len) => Step::Complete(n.saturating_add(len).saturating_add(2), Meta::response(true)),
            None => Step::Invalid(format!("bad VA line `{}`", printable(line))),
        },
        // Lines of `stats`, `stats cachedump`, `stats detail dump` and
        // `lru_crawler metadump`, up to `END`.
        b"STAT" | b"ITEM" | b"PREFIX" => Step::Continue(n),
        _ if word.starts_with(b"key=") => Step::Continue(n),
        // `ERROR: shutdown not enabled` and the like.
        _ if is_error_reply(line) => Step::Complete(n, Meta::response(false)),
        _ if word.is_empty() || !word.iter().all(|&b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_') => {
            Step::Invalid(format!("not a memcached reply: `{}`", printable(line)))
        }
        _ => Step::Complete(n, Meta::response(!is_error_reply(line))),
    }
}

fn is_error_reply(line: &[u8]) -> bool {
    line == b"ERROR" || line.starts_with(b"ERROR ") || line.starts_with(b"CLIENT_ERROR") || line.starts_with(b"SERVER_ERROR")
}

/// A binary message's header (big-endian fields).
struct BinaryHeader {
    opcode: u8,
    key_len: u16,
    extras_len: u8,
    data_type: u8,
    /// Responses: the status; requests: the vbucket.
    status: u16,
    body_len: u32,
}

fn binary_header(buf: &[u8]) -> Option<BinaryHeader> {
    let h = buf.get(..HEADER)?;
    let header = BinaryHeader {
        opcode: h[1],
        key_len: u16::from_be_bytes([h[2], h[3]]),
        extras_len: h[4],
        data_type: h[5],
        status: u16::from_be_bytes([h[6], h[7]]),
        body_len: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
    };
    // Extras and key lie inside the body.
    (u32::from(header.key_len) + u32::from(header.extras_len) <= header.body_len).then_some(header)
}

fn binary_request(buf: &[u8], truncated: bool, fields: &mut Fields) -> Step {
    let Some(h) = binary_header(buf) else {
        return if buf.len() < HEADER { Step::NeedMore } else { Step::Invalid("bad binary request header".into()) };
    };
    let Some(name) = opcode_name(h.opcode) else {
        return Step::Invalid(format!("unknown binary opcode 0x{:02x}", h.opcode));
    };
    let key_at = HEADER + usize::from(h.extras_len);
    if buf.len() < key_at + usize::from(h.key_len) && !truncated {
        // The key is still to come (the value is skipped by its length).
        return Step::NeedMore;
    }
    fields.str(COMMAND, name);
    if h.key_len > 0 {
        // The key as far as it was copied.
        if let Some(key) = buf.get(key_at..(key_at + usize::from(h.key_len)).min(buf.len())) {
            if !key.is_empty() {
                fields.text(KEY, key);
            }
        }
    }
    fields.int(KEY_COUNT, i64::from(h.key_len > 0));
    let n = HEADER as u64 + u64::from(h.body_len);
    Step::Complete(n, if is_quiet_opcode(h.opcode) { Meta::oneway() } else { Meta::request() })
}

fn binary_response(buf: &[u8]) -> Step {
    let Some(h) = binary_header(buf) else {
        return if buf.len() < HEADER { Step::NeedMore } else { Step::Invalid("bad binary response header".into()) };
    };
    if opcode_name(h.opcode).is_none() {
        return Step::Invalid(format!("unknown binary opcode 0x{:02x}", h.opcode));
    }
    let n = HEADER as u64 + u64::from(h.body_len);
    if is_quiet_opcode(h.opcode) {
        // A quiet request's answer (a hit, or an error): its request was
        // counted as one-way already.
        return Step::Discard(n);
    }
    if h.opcode == 0x10 && h.key_len > 0 && h.status == 0 {
        // One statistic; the packet with an empty key ends the reply.
        return Step::Continue(n);
    }
    Step::Complete(n, Meta::response(binary_success(h.opcode, h.status)))
}

/// Not found, exists and not stored answer the request as asked, and so
/// does a SASL step asking for the next (0x21, authentication continue).
fn binary_success(opcode: u8, status: u16) -> bool {
    matches!(status, 0x00 | 0x01 | 0x02 | 0x05) || (matches!(opcode, 0x21 | 0x22) && status == 0x21)
}

/// The binary protocol's opcodes, named as the text protocol's commands.
fn opcode_name(opcode: u8) -> Option<&'static str> {
    static NAMES: [&str; 0x25] = [
        "get", "set", "add", "replace", "delete", "incr", "decr", "quit", "flush_all", "getq", "noop", "version",
        "getk", "getkq", "append", "prepend", "stats", "setq", "addq", "replaceq", "deleteq", "incrq", "decrq",
        "quitq", "flush_allq", "appendq", "prependq", "verbosity", "touch", "gat", "gatq", "", "sasl_list_mechs",
        "sasl_auth", "sasl_step", "gatk", "gatkq",
    ];
    NAMES.get(usize::from(opcode)).copied().filter(|n| !n.is_empty())
}

/// Requests with no answer worth waiting for: quiet opcodes answer only
/// when something went wrong (or a `getq` hit), and clients close right
/// after `quit` without reading its answer.
fn is_quiet_opcode(opcode: u8) -> bool {
    matches!(opcode, 0x07 | 0x09 | 0x0d | 0x11..=0x1a | 0x1e | 0x24)
}

fn need_more(buf: &[u8]) -> Step {
    if buf.len() > MAX_LINE {
        Step::Invalid("line longer than 64 KiB".into())
    } else {
        Step::NeedMore
    }
}

fn printable(line: &[u8]) -> String {
    String::from_utf8_lossy(&line[..line.len().min(24)]).into_owned()
}

wirelens_sdk::export_plugin!(Memcached);
