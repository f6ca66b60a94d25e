//! Redis protocol plugin: RESP2 and RESP3, inline commands, pipelining,
//! error replies, pub/sub pushes.
//!
//! Requests are arrays of bulk strings (or inline commands) in the direction
//! that carries requests (client egress, server ingress); everything in the
//! other direction is a reply. Pushes (RESP3 `>`, or RESP2 `message` /
//! `pmessage` / `smessage` arrays on a subscribed connection) are one-way
//! messages, not replies.
//!
//! Fields: `command` (first word, upper case), `key_count` (keys the command
//! names, from a small table of command shapes).

use wirelens_sdk::cursor::{parse_decimal, Cursor};
use wirelens_sdk::{Ctx, Direction, FieldKey, Fields, Info, Meta, Protocol, Role, Step};

pub mod cases;

pub const COMMAND: FieldKey = FieldKey(0);
pub const KEY_COUNT: FieldKey = FieldKey(1);

/// Deepest nesting of aggregate replies followed.
const MAX_DEPTH: usize = 32;
/// Longest line (type byte to CRLF) accepted while waiting for its end.
const MAX_LINE: usize = 64 * 1024;

#[derive(Default)]
pub struct Redis;

/// Per-connection state.
#[derive(Default)]
pub struct Conn {
    /// The client issued (P|S)SUBSCRIBE: arrays of `message` are pushes.
    subscribed: bool,
    /// The message in progress, per direction (egress, ingress).
    msgs: [Msg; 2],
}

/// A message read element by element: large bulk strings are skipped by
/// their length, copied or not, so a value of any size (and a capture of
/// any size) keeps the stream in step. Reused from message to message
/// ([`Msg::reset`]): allocating per message was a sixth of the plugin's time.
#[derive(Default)]
struct Msg {
    active: bool,
    /// Elements still to read at each open aggregate level.
    stack: Vec<u64>,
    /// Requests: elements of the command array, and its first (upper case).
    argc: u64,
    command: Option<Word>,
    /// Replies: outcome and kind, from the first element.
    success: bool,
    push: bool,
    /// The first element of a top-level array reply (`message` pushes).
    first_word: Option<Word>,
}

impl Msg {
    /// Ready for the next message.
    fn reset(&mut self) {
        self.active = false;
        self.stack.clear();
        self.argc = 0;
        self.command = None;
        self.success = false;
        self.push = false;
        self.first_word = None;
    }
}

/// Longest word kept (commands, push kinds).
const MAX_WORD: usize = 32;

/// A word of at most [`MAX_WORD`] bytes, kept inline.
#[derive(Clone, Copy)]
struct Word {
    len: u8,
    bytes: [u8; MAX_WORD],
}

impl Word {
    fn new(data: &[u8], upper: bool) -> Self {
        let mut word = None;
        Self::set(&mut word, data, upper);
        word.expect("set")
    }

    /// `slot` holds `data` (cut to [`MAX_WORD`]), written in place: a word
    /// built byte by byte and then moved was read back before its bytes
    /// were stored (a store-forwarding stall, a tenth of the parser's time).
    #[inline]
    fn set(slot: &mut Option<Word>, data: &[u8], upper: bool) {
        let n = data.len().min(MAX_WORD);
        let word = slot.insert(Word { len: n as u8, bytes: [0; MAX_WORD] });
        word.bytes[..n].copy_from_slice(&data[..n]);
        if upper {
            word.bytes[..n].make_ascii_uppercase();
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl Protocol for Redis {
    type Conn = Conn;

    fn info() -> Info {
        Info {
            name: "redis",
            version: env!("CARGO_PKG_VERSION"),
            description: "Redis RESP2/RESP3 commands and replies",
            default_ports: &[6379, 6380, 26379],
            field_names: &["command", "key_count"],
            max_buffer: 512 * 1024,
        }
    }

    fn call_field() -> Option<&'static str> {
        Some("command")
    }

    // No capture budget (`capture_bytes`: the default, whole calls): a
    // pipelined batch of commands or replies must be framed message by
    // message to keep every call and outcome. A cut batch is read again
    // from wherever the next call starts, which is rarely a message's
    // start (measured: a server reading 16 KiB of pipelined commands with
    // 1 KiB copied lost sync and gave the connection up). Values of known
    // length are skipped, not copied, from the next call on.

    fn detect(&self, direction: Direction, role: Role, bytes: &[u8]) -> u8 {
        let ctx = Ctx::for_detect(direction, role);
        let requests = ctx.carries_requests_or_egress();
        if requests {
            // `*<n>\r\n$<len>\r\n<COMMAND>`: the usual client encoding.
            let mut cur = Cursor::new(bytes);
            let header_ok =
                matches!(cur.line(), Some(l) if l.len() >= 2 && l[0] == b'*' && parse_decimal(&l[1..]).is_some());
            let bulk_ok =
                matches!(cur.line(), Some(l) if l.len() >= 2 && l[0] == b'$' && parse_decimal(&l[1..]).is_some());
            if header_ok && bulk_ok {
                let word = cur.line().unwrap_or_default();
                return if is_known_command(word) { 95 } else { 60 };
            }
            // Inline commands (`PING\r\n`): one short line, a known command
            // in upper case (memcached's text protocol has the same shape
            // in lower case: `get key\r\n`), and not HTTP.
            let one_line = bytes.len() <= 256 && bytes.iter().filter(|&&b| b == b'\n').count() == 1;
            let word = bytes.split(|&b| b == b' ' || b == b'\r').next().unwrap_or_default();
            let upper = !word.is_empty() && word.iter().all(u8::is_ascii_uppercase);
            let http = wirelens_sdk::cursor::find(bytes, b" HTTP/").is_some();
            if one_line && upper && !http && bytes.ends_with(b"\r\n") && is_known_command(word) {
                return 70;
            }
            0
        } else {
            // Replies alone are weak evidence: `+OK`, `-ERR`, `:1`.
            match bytes.first() {
                Some(b'+' | b'-' | b':') if bytes.ends_with(b"\r\n") => 40,
                _ => 0,
            }
        }
    }

    fn parse(&self, conn: &mut Conn, ctx: &Ctx, buf: &[u8], fields: &mut Fields) -> Step {
        let requests = ctx.carries_requests_or_egress();
        let d = ctx.direction.index();
        if !conn.msgs[d].active && requests && buf[0] != b'*' {
            return parse_inline(conn, buf, fields);
        }
        let step = parse_elements(conn, d, requests, ctx.truncated, buf);
        if let Step::Complete(_, _) = step {
            if requests {
                let msg = &conn.msgs[d];
                conn.subscribed |= finish_request(msg.command.as_ref().map(Word::as_bytes), msg.argc, fields);
            }
            conn.msgs[d].reset();
        }
        step
    }

    /// After a line end, a command (`*`) or a reply's type byte. Inside an
    /// aggregate reply an element looks like a reply of its own: resuming
    /// there counts its elements as replies (rare: after lost bytes, and
    /// only until that reply ends), where not resuming loses every call
    /// until a read happens to start at a reply.
    fn next_start(&self, ctx: &Ctx, data: &[u8]) -> Option<usize> {
        let requests = ctx.carries_requests_or_egress();
        let mut from = 0;
        while let Some(i) = data[from..].windows(2).position(|w| w == b"\r\n") {
            let at = from + i + 2;
            let starts = match data.get(at) {
                Some(b'*') => true,
                Some(
                    b'$' | b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' | b'!' | b'=' | b'%' | b'~' | b'>' | b'|',
                ) => !requests,
                Some(_) => false,
                None => return None,
            };
            if starts {
                return Some(at);
            }
            from = at;
        }
        None
    }

    fn lost(&self, conn: &mut Conn, ctx: &Ctx, head: &[u8], fields: &mut Fields) -> Option<Meta> {
        let requests = ctx.carries_requests_or_egress();
        let d = ctx.direction.index();
        let msg = std::mem::take(&mut conn.msgs[d]);
        if !msg.active && head.is_empty() {
            return None;
        }
        if requests {
            // What the head tells of the command: `*<argc>` and its first bulk.
            let (mut argc, mut command) = (msg.argc, msg.command);
            if !msg.active {
                let mut cur = Cursor::new(head);
                match cur.line() {
                    Some(l) if l.first() == Some(&b'*') => {
                        argc = parse_decimal(&l[1..]).unwrap_or(0);
                        if let (Some(_), Some(word)) = (cur.line(), cur.line()) {
                            command = Some(Word::new(word, true));
                        }
                    }
                    Some(l) => {
                        // An inline command cut short.
                        let word = l.split(|&b| b == b' ').next().unwrap_or_default();
                        command = Some(Word::new(word, true));
                        argc = 1 + l.split(|&b| b == b' ').filter(|w| !w.is_empty()).count().saturating_sub(1) as u64;
                    }
                    None => {}
                }
            }
            conn.subscribed |= finish_request(command.as_ref().map(Word::as_bytes), argc, fields);
            return Some(Meta::request());
        }
        let (success, push) = if msg.active {
            (msg.success, msg.push || is_message_push(conn, msg.first_word.as_ref().map(Word::as_bytes)))
        } else {
            (!matches!(head[0], b'-' | b'!'), head[0] == b'>')
        };
        Some(reply_meta(push, success))
    }
}

/// Read elements of the message in progress (or a new one) from `buf`:
/// `Complete` when its last element ends, `Continue` for elements read
/// (possibly ending past the bytes at hand: a bulk string skipped by its
/// length), `NeedMore` when not even one element is complete here.
fn parse_elements(conn: &mut Conn, d: usize, requests: bool, truncated: bool, buf: &[u8]) -> Step {
    let subscribed = conn.subscribed;
    let msg = &mut conn.msgs[d];
    let mut cur = Cursor::new(buf);
    loop {
        let at = cur.position() as u64;
        let Some(line) = cur.line() else {
            return progress_or(at, need_more(buf));
        };
        let Some((&kind, rest)) = line.split_first() else {
            return Step::Invalid("empty RESP line".into());
        };
        let first = !msg.active;
        if first {
            msg.active = true;
            msg.success = true;
            if requests && kind != b'*' {
                return Step::Invalid(format!(
                    "not a RESP request: `{}`",
                    String::from_utf8_lossy(&line[..line.len().min(16)])
                ));
            }
            msg.push = kind == b'>';
        }
        let top = msg.stack.is_empty();
        let mut children = 0u64;
        match kind {
            b'+' | b':' | b',' | b'(' | b'#' | b'_' => {}
            b'-' => {
                if top {
                    msg.success = false;
                }
            }
            b'$' | b'!' | b'=' => {
                if rest != b"-1" {
                    let Some(len) = parse_decimal(rest) else {
                        return Step::Invalid(format!("bad length `{}`", String::from_utf8_lossy(line)));
                    };
                    if top && kind == b'!' {
                        msg.success = false;
                    }
                    let data_at = cur.position() as u64;
                    let end = data_at.saturating_add(len).saturating_add(2);
                    // The word that names the command (or the push kind).
                    let wanted_word = if requests {
                        msg.stack.len() == 1 && msg.command.is_none()
                    } else {
                        msg.stack.len() == 1 && msg.first_word.is_none()
                    };
                    match cur.take_len(len) {
                        Some(data) if cur.skip(2).is_some() => {
                            if wanted_word {
                                if requests {
                                    Word::set(&mut msg.command, data, true);
                                } else {
                                    Word::set(&mut msg.first_word, data, false);
                                }
                            }
                        }
                        _ if wanted_word && (len as usize) <= MAX_WORD && !truncated => {
                            // A short word still to come: wait for it.
                            return progress_or(at, need_more(buf));
                        }
                        _ => {
                            // A bulk string longer than the bytes at hand:
                            // skipped by its length, copied or not.
                            if wanted_word && requests {
                                msg.command = Some(Word::new(b"", false));
                            }
                            return match element_done(msg) {
                                true => Step::Complete(end, message_meta(msg, requests, subscribed)),
                                false => Step::Continue(end),
                            };
                        }
                    }
                }
            }
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                if rest != b"-1" {
                    let Some(n) = parse_decimal(rest) else {
                        return Step::Invalid(format!("bad aggregate length `{}`", String::from_utf8_lossy(line)));
                    };
                    children = if kind == b'%' || kind == b'|' { n.saturating_mul(2) } else { n };
                }
                if kind == b'|' {
                    // An attribute precedes the real reply: read both.
                    children = children.saturating_add(1);
                }
                if requests && first {
                    msg.argc = children;
                }
            }
            _ => {
                return Step::Invalid(format!(
                    "not a RESP reply: `{}`",
                    String::from_utf8_lossy(&line[..line.len().min(16)])
                ));
            }
        }
        if msg.stack.len() >= MAX_DEPTH {
            return Step::Invalid("replies nested too deep".into());
        }
        if children > 0 {
            msg.stack.push(children);
            continue;
        }
        if element_done(msg) {
            return Step::Complete(cur.position() as u64, message_meta(msg, requests, subscribed));
        }
    }
}

/// The meta of a message whose last element was just read.
fn message_meta(msg: &Msg, requests: bool, subscribed: bool) -> Meta {
    if requests {
        return Meta::request();
    }
    let push = msg.push || is_message_push_word(subscribed, msg.first_word.as_ref().map(Word::as_bytes));
    reply_meta(push, msg.success)
}

/// One element ended: pop finished aggregates; true when the whole message did.
fn element_done(msg: &mut Msg) -> bool {
    loop {
        match msg.stack.last_mut() {
            None => return true,
            Some(n) => {
                *n -= 1;
                if *n > 0 {
                    return false;
                }
                msg.stack.pop();
            }
        }
    }
}

/// `Continue` over the elements read so far, or `otherwise` if none was.
fn progress_or(consumed: u64, otherwise: Step) -> Step {
    if consumed > 0 {
        Step::Continue(consumed)
    } else {
        otherwise
    }
}

fn parse_inline(conn: &mut Conn, buf: &[u8], fields: &mut Fields) -> Step {
    let mut cur = Cursor::new(buf);
    let Some(line) = cur.line() else { return need_more(buf) };
    let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let Some(word) = words.next() else { return Step::Discard(cur.position() as u64) };
    if !word.iter().all(|b| b.is_ascii_alphabetic()) {
        return Step::Invalid(format!("not a Redis command: `{}`", String::from_utf8_lossy(line)));
    }
    let argc = 1 + words.count() as u64;
    conn.subscribed |= finish_request(Some(Word::new(word, true).as_bytes()), argc, fields);
    Step::Complete(cur.position() as u64, Meta::request())
}

/// A request's fields; true when it subscribes the connection to pushes.
fn finish_request(command: Option<&[u8]>, argc: u64, fields: &mut Fields) -> bool {
    let command = command.unwrap_or_default();
    if !command.is_empty() {
        fields.text(COMMAND, command);
        fields.int(KEY_COUNT, key_count(command, argc) as i64);
    }
    matches!(command, b"SUBSCRIBE" | b"PSUBSCRIBE" | b"SSUBSCRIBE")
}

/// Keys a command names, from its shape (argc includes the command).
fn key_count(command: &[u8], argc: u64) -> u64 {
    let args = argc.saturating_sub(1);
    match command {
        b"MGET" | b"DEL" | b"EXISTS" | b"UNLINK" | b"TOUCH" | b"WATCH" | b"SUNION" | b"SINTER" | b"SDIFF"
        | b"PFCOUNT" => args,
        b"MSET" | b"MSETNX" => args / 2,
        b"PING" | b"ECHO" | b"INFO" | b"SELECT" | b"AUTH" | b"CONFIG" | b"CLIENT" | b"COMMAND" | b"HELLO" | b"QUIT"
        | b"FLUSHALL" | b"FLUSHDB" | b"DBSIZE" | b"MULTI" | b"EXEC" | b"DISCARD" | b"SCAN" | b"TIME" | b"SAVE"
        | b"BGSAVE" | b"SUBSCRIBE" | b"PSUBSCRIBE" | b"UNSUBSCRIBE" | b"PUBLISH" | b"SCRIPT" | b"CLUSTER" | b"ROLE"
        | b"LASTSAVE" | b"SLOWLOG" | b"MEMORY" | b"RESET" => 0,
        _ => u64::from(args > 0),
    }
}

fn is_known_command(word: &[u8]) -> bool {
    const COMMON: &[&[u8]] = &[
        b"GET",
        b"SET",
        b"DEL",
        b"INCR",
        b"DECR",
        b"MGET",
        b"MSET",
        b"EXISTS",
        b"EXPIRE",
        b"TTL",
        b"HGET",
        b"HSET",
        b"HGETALL",
        b"LPUSH",
        b"RPUSH",
        b"LPOP",
        b"RPOP",
        b"LRANGE",
        b"SADD",
        b"SMEMBERS",
        b"ZADD",
        b"ZRANGE",
        b"PING",
        b"INFO",
        b"AUTH",
        b"SELECT",
        b"CONFIG",
        b"CLIENT",
        b"COMMAND",
        b"HELLO",
        b"SUBSCRIBE",
        b"PUBLISH",
        b"MULTI",
        b"EXEC",
        b"KEYS",
        b"SCAN",
        b"TYPE",
        b"INCRBY",
        b"SETEX",
        b"GETSET",
        b"APPEND",
    ];
    COMMON.iter().any(|c| c.eq_ignore_ascii_case(word))
}

/// A RESP2 array starting with `message` on a subscribed connection.
fn is_message_push(conn: &Conn, first_word: Option<&[u8]>) -> bool {
    is_message_push_word(conn.subscribed, first_word)
}

fn is_message_push_word(subscribed: bool, first_word: Option<&[u8]>) -> bool {
    subscribed && matches!(first_word, Some(b"message" | b"pmessage" | b"smessage"))
}

fn reply_meta(push: bool, success: bool) -> Meta {
    if push {
        Meta::oneway()
    } else {
        Meta::response(success)
    }
}

fn need_more(buf: &[u8]) -> Step {
    if buf.len() > MAX_LINE && !buf[..MAX_LINE].contains(&b'\n') {
        Step::Invalid("line longer than 64 KiB".into())
    } else {
        Step::NeedMore
    }
}

wirelens_sdk::export_plugin!(Redis);
