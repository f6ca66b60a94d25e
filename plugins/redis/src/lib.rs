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

    fn detect(&self, direction: Direction, role: Role, bytes: &[u8]) -> u8 {
        let ctx = Ctx { conn: 0, direction, role };
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
            // Inline commands (`PING\r\n`): one short line, and not HTTP.
            let one_line = bytes.len() <= 256 && bytes.iter().filter(|&&b| b == b'\n').count() == 1;
            let word = bytes.split(|&b| b == b' ' || b == b'\r').next().unwrap_or_default();
            let http = wirelens_sdk::cursor::find(bytes, b" HTTP/").is_some();
            if one_line && !http && bytes.ends_with(b"\r\n") && is_known_command(word) {
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
        if requests {
            self.parse_request(conn, buf, fields)
        } else {
            parse_reply(conn, buf)
        }
    }
}

impl Redis {
    fn parse_request(&self, conn: &mut Conn, buf: &[u8], fields: &mut Fields) -> Step {
        if buf[0] != b'*' {
            return parse_inline(buf, fields);
        }
        let mut cur = Cursor::new(buf);
        let Some(head) = cur.line() else { return need_more(buf) };
        let Some(argc) = parse_decimal(&head[1..]) else {
            return Step::Invalid(format!("bad array header `{}`", String::from_utf8_lossy(head)));
        };
        // The command upper-cased on the stack (no allocation per request);
        // names longer than the buffer are not commands worth a fast path.
        let mut short = [0u8; 32];
        let mut long = Vec::new();
        let mut command: Option<&[u8]> = None;
        for i in 0..argc {
            let Some(line) = cur.line() else { return need_more(buf) };
            let len = match line.split_first() {
                Some((b'$', n)) => parse_decimal(n),
                _ => None,
            };
            let Some(len) = len else {
                return Step::Invalid(format!("bad bulk header `{}`", String::from_utf8_lossy(line)));
            };
            let data_start = cur.position() as u64;
            if i == 0 {
                let Some(word) = cur.take_len(len) else { return need_more(buf) };
                command = Some(uppercase(word, &mut short, &mut long));
                if cur.line().is_none() {
                    return need_more(buf);
                }
                continue;
            }
            if cur.take_len(len).is_none() || cur.skip(2).is_none() {
                // A large last argument may be cut by the capture: its
                // length says where the request ends.
                if i + 1 == argc {
                    let end = data_start + len + 2;
                    finish_request(conn, command, argc, fields);
                    return Step::Complete(end, Meta::request());
                }
                return need_more(buf);
            }
        }
        finish_request(conn, command, argc, fields);
        Step::Complete(cur.position() as u64, Meta::request())
    }
}

/// `word` in upper case, in `short` when it fits, else in `long`.
fn uppercase<'a>(word: &[u8], short: &'a mut [u8; 32], long: &'a mut Vec<u8>) -> &'a [u8] {
    match short.get_mut(..word.len()) {
        Some(out) => {
            out.copy_from_slice(word);
            out.make_ascii_uppercase();
            out
        }
        None => {
            *long = word.to_ascii_uppercase();
            long
        }
    }
}

fn parse_inline(buf: &[u8], fields: &mut Fields) -> Step {
    let mut cur = Cursor::new(buf);
    let Some(line) = cur.line() else { return need_more(buf) };
    let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let Some(word) = words.next() else { return Step::Discard(cur.position() as u64) };
    if !word.iter().all(|b| b.is_ascii_alphabetic()) {
        return Step::Invalid(format!("not a Redis command: `{}`", String::from_utf8_lossy(line)));
    }
    let argc = 1 + words.count() as u64;
    let mut conn = Conn::default();
    finish_request(&mut conn, Some(&word.to_ascii_uppercase()), argc, fields);
    Step::Complete(cur.position() as u64, Meta::request())
}

fn finish_request(conn: &mut Conn, command: Option<&[u8]>, argc: u64, fields: &mut Fields) {
    let command = command.unwrap_or_default();
    if matches!(command, b"SUBSCRIBE" | b"PSUBSCRIBE" | b"SSUBSCRIBE") {
        conn.subscribed = true;
    }
    fields.text(COMMAND, command);
    fields.int(KEY_COUNT, key_count(command, argc) as i64);
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

/// One reply (or push); its first byte says its type.
fn parse_reply(conn: &mut Conn, buf: &[u8]) -> Step {
    // Elements still to read at each open aggregate level.
    let mut stack: Vec<u64> = Vec::new();
    let mut cur = Cursor::new(buf);
    let mut success = true;
    let mut push = buf[0] == b'>';
    let mut first_word: Option<&[u8]> = None;
    loop {
        let Some(line) = cur.line() else { return need_more(buf) };
        let Some((&kind, rest)) = line.split_first() else {
            return Step::Invalid("empty reply line".into());
        };
        let top = stack.is_empty();
        let mut children = 0u64;
        match kind {
            b'+' | b':' | b',' | b'(' | b'#' | b'_' => {
                if top && kind == b'+' {
                    success = true;
                }
            }
            b'-' => {
                if top {
                    success = false;
                }
            }
            b'$' | b'!' | b'=' => {
                if rest == b"-1" {
                    // Null bulk string.
                } else {
                    let Some(len) = parse_decimal(rest) else {
                        return Step::Invalid(format!("bad length `{}`", String::from_utf8_lossy(line)));
                    };
                    if top && kind == b'!' {
                        success = false;
                    }
                    let data_start = cur.position() as u64;
                    match cur.take_len(len) {
                        Some(data) => {
                            if first_word.is_none() && stack.len() == 1 {
                                first_word = Some(data);
                            }
                            if cur.skip(2).is_none() {
                                return need_more(buf);
                            }
                        }
                        None => {
                            // Cut by the capture: fine if nothing follows it.
                            let rest_empty = stack.iter().all(|&n| n <= 1);
                            if rest_empty {
                                let push = push || is_message_push(conn, first_word);
                                return Step::Complete(data_start + len + 2, reply_meta(push, success));
                            }
                            return need_more(buf);
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
            }
            _ => {
                return Step::Invalid(format!(
                    "not a RESP reply: `{}`",
                    String::from_utf8_lossy(&line[..line.len().min(16)])
                ));
            }
        }
        if stack.len() >= MAX_DEPTH {
            return Step::Invalid("replies nested too deep".into());
        }
        // This element is done (unless it opens an aggregate).
        if children > 0 {
            stack.push(children);
            continue;
        }
        loop {
            match stack.last_mut() {
                None => {
                    push = push || is_message_push(conn, first_word);
                    return Step::Complete(cur.position() as u64, reply_meta(push, success));
                }
                Some(n) => {
                    *n -= 1;
                    if *n > 0 {
                        break;
                    }
                    stack.pop();
                }
            }
        }
    }
}

/// A RESP2 array starting with `message` on a subscribed connection.
fn is_message_push(conn: &Conn, first_word: Option<&[u8]>) -> bool {
    conn.subscribed && matches!(first_word, Some(b"message" | b"pmessage" | b"smessage"))
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
