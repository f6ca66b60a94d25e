//! NATS client protocol plugin (the text protocol of nats-server's client
//! port: `CONNECT`, `PUB`, `HPUB`, `SUB`, `UNSUB`, `PING`, `PONG` from
//! clients; `INFO`, `MSG`, `HMSG`, `PING`, `PONG`, `+OK`, `-ERR` from
//! servers). Operation names are matched in any case, as the server does.
//!
//! Calls: a client's `PING` is answered by the server's `PONG`. On a
//! connection whose `CONNECT` asked for `"verbose": true`, every `CONNECT`,
//! `PUB`, `HPUB`, `SUB` and `UNSUB` is answered by `+OK`, or by `-ERR`
//! (a permission violation), which fails the call; nats-server answers a
//! publish to an invalid subject (pedantic) with `-ERR` and then `+OK`: that
//! `+OK` fails it. Without verbose (every client's default) these are one-way
//! messages, and so are deliveries (`MSG`, `HMSG`), `INFO`, the server's
//! own `PING` and the client's `PONG` answering it; a `-ERR` is then a
//! failed one-way message. A connection joined midway is taken as not
//! verbose until a `+OK` shows otherwise (that `+OK` answers a request
//! already counted as one-way and is passed over).
//!
//! Payloads are skipped by the length their line gives, copied or not.
//!
//! Fields: `op` (upper case), `subject` (`PUB`, `HPUB`, `SUB`, `MSG`,
//! `HMSG`).

use wirelens_sdk::cursor::{find, parse_decimal};
use wirelens_sdk::{Ctx, Direction, FieldKey, Fields, Info, Meta, Protocol, Role, Step};

pub mod cases;

pub const OP: FieldKey = FieldKey(0);
pub const SUBJECT: FieldKey = FieldKey(1);

/// Longest line accepted while waiting for its end (`INFO` and `CONNECT`
/// carry JSON: a server's INFO lists its cluster's URLs).
const MAX_LINE: usize = 64 * 1024;

#[derive(Default)]
pub struct Nats;

#[derive(Default)]
pub struct Conn {
    /// The client's `CONNECT` asked for `+OK` after every operation.
    verbose: bool,
    /// On a verbose connection, a `-ERR` came: the next `+OK` answers the
    /// operation it refused (nats-server sends both for a refused publish).
    refused: bool,
}

/// An operation line, read.
struct OpLine<'a> {
    /// The operation in upper case (at most 8 bytes: `CONNECT`).
    op: [u8; 8],
    op_len: usize,
    subject: Option<&'a [u8]>,
    /// Bytes of the payload that follows the line.
    payload: Option<u64>,
    /// The rest of the line after the operation (`CONNECT`'s JSON).
    args: &'a [u8],
}

impl<'a> OpLine<'a> {
    fn read(line: &'a [u8]) -> Result<Self, String> {
        let word_end = line.iter().position(|&b| b == b' ' || b == b'\t').unwrap_or(line.len());
        let word = &line[..word_end];
        if word.is_empty() || word.len() > 8 || !word.iter().all(|b| b.is_ascii_alphabetic() || *b == b'+' || *b == b'-') {
            return Err(format!("not a NATS operation: `{}`", printable(line)));
        }
        let mut op = [0u8; 8];
        op[..word.len()].copy_from_slice(word);
        op[..word.len()].make_ascii_uppercase();
        let args = line[word_end..].trim_ascii_start();
        let mut l = OpLine { op, op_len: word.len(), subject: None, payload: None, args };
        let tokens = || args.split(|&b| b == b' ' || b == b'\t').filter(|t| !t.is_empty());
        let count = tokens().count();
        let last = || tokens().last().unwrap_or_default();
        // (subject expected, payload length from the last token, arguments
        // the operation takes)
        let (subject, payload, arity) = match l.op() {
            b"PUB" => (true, true, 2..=3),
            b"HPUB" => (true, true, 3..=4),
            b"MSG" => (true, true, 3..=4),
            b"HMSG" => (true, true, 4..=5),
            b"SUB" => (true, false, 2..=3),
            b"UNSUB" => (false, false, 1..=2),
            b"CONNECT" | b"INFO" | b"-ERR" => (false, false, 0..=usize::MAX),
            b"PING" | b"PONG" | b"+OK" => (false, false, 0..=0),
            _ => return Err(format!("not a NATS operation: `{}`", printable(line))),
        };
        if !arity.contains(&count) {
            return Err(format!("{} takes {arity:?} arguments: `{}`", l.op_name(), printable(line)));
        }
        if subject {
            l.subject = tokens().next();
        }
        if payload {
            match parse_decimal(last()) {
                Some(n) => l.payload = Some(n),
                None => return Err(format!("bad payload length: `{}`", printable(line))),
            }
        }
        Ok(l)
    }

    /// An operation known by its name only (its line was cut).
    fn bare(word: &'a [u8]) -> Result<Self, String> {
        if word.is_empty() || word.len() > 8 {
            return Err("no operation".into());
        }
        let mut op = [0u8; 8];
        op[..word.len()].copy_from_slice(word);
        op[..word.len()].make_ascii_uppercase();
        let l = OpLine { op, op_len: word.len(), subject: None, payload: None, args: b"" };
        match l.op() {
            b"PUB" | b"HPUB" | b"MSG" | b"HMSG" | b"SUB" | b"UNSUB" | b"CONNECT" | b"INFO" | b"-ERR" | b"PING"
            | b"PONG" | b"+OK" => Ok(l),
            _ => Err("no operation".into()),
        }
    }

    fn op(&self) -> &[u8] {
        &self.op[..self.op_len]
    }

    fn op_name(&self) -> &str {
        std::str::from_utf8(self.op()).unwrap_or("?")
    }

    fn write(&self, fields: &mut Fields) {
        fields.text(OP, self.op());
        if let Some(subject) = self.subject {
            fields.text(SUBJECT, subject);
        }
    }

    /// How this operation takes part in a call, sent in the direction that
    /// carries requests (`requests`) or the other.
    fn meta(&self, requests: bool, conn: &mut Conn) -> Option<Meta> {
        Some(match (self.op(), requests) {
            (b"PING", true) => Meta::request(),
            (b"CONNECT", true) => {
                // A line cut before its options leaves what was known.
                if !self.args.is_empty() {
                    conn.verbose = json_true(self.args, b"verbose");
                }
                if conn.verbose {
                    Meta::request()
                } else {
                    Meta::oneway()
                }
            }
            (b"PUB" | b"HPUB" | b"SUB" | b"UNSUB", true) if conn.verbose => Meta::request(),
            (b"PONG", false) => Meta::response(true),
            (b"+OK", false) if conn.verbose => Meta::response(!std::mem::take(&mut conn.refused)),
            (b"+OK", false) => {
                // Joined midway: the connection is verbose after all; the
                // request this answers was counted as one-way.
                conn.verbose = true;
                return None;
            }
            // nats-server follows a pedantic subject refusal with the
            // `+OK` of the same publish: that `+OK` fails the call. Other
            // errors (permission violations, or the connection's end) come
            // instead of the `+OK`: they answer the oldest operation.
            (b"-ERR", false) if conn.verbose && find(self.args, b"Invalid Publish Subject").is_some() => {
                conn.refused = true;
                return None;
            }
            (b"-ERR", false) if conn.verbose => Meta::response(false),
            (b"-ERR", false) => Meta { success: false, ..Meta::oneway() },
            _ => Meta::oneway(),
        })
    }
}

/// `"key": true` in a JSON object, found without a JSON parser (the
/// CONNECT options are one flat object).
fn json_true(json: &[u8], key: &[u8]) -> bool {
    let mut at = 0;
    while let Some(i) = json[at..].windows(key.len() + 2).position(|w| w[0] == b'"' && &w[1..=key.len()] == key && w[key.len() + 1] == b'"') {
        let rest = json[at + i + key.len() + 2..].trim_ascii_start();
        if let Some(value) = rest.strip_prefix(b":") {
            return value.trim_ascii_start().starts_with(b"true");
        }
        at += i + 1;
    }
    false
}

impl Protocol for Nats {
    type Conn = Conn;

    fn info() -> Info {
        Info {
            name: "nats",
            version: env!("CARGO_PKG_VERSION"),
            description: "NATS client protocol (publish, subscribe, deliveries, ping)",
            default_ports: &[4222],
            field_names: &["op", "subject"],
            max_buffer: 128 * 1024,
        }
    }

    fn call_field() -> Option<&'static str> {
        Some("op")
    }

    fn detect(&self, direction: Direction, role: Role, bytes: &[u8]) -> u8 {
        let ctx = Ctx::for_detect(direction, role);
        let requests = ctx.carries_requests_or_egress();
        let Some(nl) = bytes.iter().position(|&b| b == b'\n') else {
            // A line still coming (INFO and CONNECT lines run to hundreds
            // of bytes; a client reading a byte at a time shows detection
            // only their start): their openings say enough.
            let starts = |op: &[u8], json: &[u8]| {
                bytes.len() >= op.len() + json.len()
                    && bytes[..op.len()].eq_ignore_ascii_case(op)
                    && bytes[op.len()..].starts_with(json)
            };
            return if !requests && starts(b"INFO ", b"{\"server_id\":") {
                90
            } else if requests && starts(b"CONNECT ", b"{\"") {
                70
            } else {
                0
            };
        };
        let line = &bytes[..nl];
        if !line.ends_with(b"\r") {
            return 0;
        }
        let Ok(op) = OpLine::read(&line[..line.len() - 1]) else {
            return 0;
        };
        let json = op.args.starts_with(b"{") && op.args.ends_with(b"}");
        match (op.op(), requests) {
            // The server speaks first: its INFO names it.
            (b"INFO", false) if json && json_has_key(op.args, b"server_id") => 95,
            (b"CONNECT", true) if json => 95,
            (b"PUB" | b"HPUB" | b"SUB", true) => 60,
            (b"MSG" | b"HMSG", false) => 55,
            _ => 0,
        }
    }

    fn parse(&self, conn: &mut Conn, ctx: &Ctx, buf: &[u8], fields: &mut Fields) -> Step {
        let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
            return if buf.len() > MAX_LINE { Step::Invalid("line longer than 64 KiB".into()) } else { Step::NeedMore };
        };
        let line = &buf[..nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let op = match OpLine::read(line) {
            Ok(op) => op,
            Err(e) => return Step::Invalid(e),
        };
        let mut n = nl as u64 + 1;
        if let Some(payload) = op.payload {
            n = n.saturating_add(payload).saturating_add(2);
        }
        match op.meta(ctx.carries_requests_or_egress(), conn) {
            Some(meta) => {
                op.write(fields);
                Step::Complete(n, meta)
            }
            None => Step::Discard(n),
        }
    }

    /// After lost bytes: a line start whose first byte can begin an
    /// operation (a letter, `+` or `-`).
    fn next_start(&self, _ctx: &Ctx, data: &[u8]) -> Option<usize> {
        let mut from = 0;
        while let Some(i) = data[from..].iter().position(|&b| b == b'\n') {
            let at = from + i + 1;
            let first = *data.get(at)?;
            if first.is_ascii_alphabetic() || first == b'+' || first == b'-' {
                return Some(at);
            }
            from = at;
        }
        None
    }

    fn lost(&self, conn: &mut Conn, ctx: &Ctx, head: &[u8], fields: &mut Fields) -> Option<Meta> {
        // The operation line if it was seen whole (a payload was cut), else
        // the operation's name alone (a line cut short).
        let line = match head.iter().position(|&b| b == b'\n') {
            Some(nl) => &head[..nl],
            None => head.split(|&b| b == b' ').next().unwrap_or_default(),
        };
        let op = OpLine::read(line.strip_suffix(b"\r").unwrap_or(line))
            .or_else(|_| OpLine::bare(line))
            .ok()?;
        let meta = op.meta(ctx.carries_requests_or_egress(), conn)?;
        op.write(fields);
        Some(meta)
    }
}

fn json_has_key(json: &[u8], key: &[u8]) -> bool {
    json.windows(key.len() + 2).any(|w| w[0] == b'"' && &w[1..=key.len()] == key && w[key.len() + 1] == b'"')
}

fn printable(line: &[u8]) -> String {
    String::from_utf8_lossy(&line[..line.len().min(24)]).into_owned()
}

wirelens_sdk::export_plugin!(Nats);
