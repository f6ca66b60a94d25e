//! PostgreSQL frontend/backend protocol (version 3) plugin.
//!
//! # Framing
//!
//! Every message but the first few of a connection is a type byte, a
//! big-endian `u32` length that counts itself but not the type byte, and a
//! body. The client's startup-phase messages (StartupMessage, SSLRequest,
//! GSSENCRequest, CancelRequest) have no type byte: a length then a `u32`
//! code. Their first byte is therefore 0, which no typed message starts with.
//! The server answers SSLRequest and GSSENCRequest with one bare byte (`N`,
//! or `S` / `G` when it agrees to encrypt, after which nothing is readable).
//!
//! # Calls
//!
//! A call is one request and the response that ends at the server's next
//! ReadyForQuery `Z`, paired first-in first-out:
//! - a StartupMessage (`STARTUP`), answered by authentication exchanges,
//!   parameter statuses and key data up to `Z` (or a fatal error);
//! - a simple Query `Q` (`QUERY`) or a FunctionCall `F` (`FUNCTION_CALL`);
//! - an extended-protocol batch: every Parse/Bind/Describe/Execute/Close/
//!   Flush up to and including its Sync `S` is one request (`EXECUTE`,
//!   `PREPARE`, `CLOSE`, `DESCRIBE` or `SYNC` by what the batch holds), since
//!   the server answers a whole batch with one `Z`.
//!
//! Terminate `X` is a one-way message. Password/SASL messages, COPY data sent
//! by the client, and asynchronous server messages (notices, notifications,
//! parameter statuses) outside a response are dropped.
//!
//! Fields: `command`; `sql`, the normalized statement text (for a batch that
//! only binds a named statement, the text its earlier Parse gave); and on
//! failed responses `error_code`, the SQLSTATE of the first ErrorResponse.
//!
//! Only the first [`PEEK`] bytes of a message body are ever looked at, and
//! they are waited for only up to the body's length: a message whose tail
//! the capture cut is parsed from what is there, with its full wire length,
//! so the result does not depend on how the stream is chunked.

use std::collections::BTreeMap;

use wirelens_sdk::cursor::Cursor;
use wirelens_sdk::sql::{self, Dialect};
use wirelens_sdk::{Ctx, Direction, FieldKey, Fields, Info, Meta, Protocol, Role, Step};

pub mod cases;

pub const COMMAND: FieldKey = FieldKey(0);
pub const SQL: FieldKey = FieldKey(1);
pub const ERROR_CODE: FieldKey = FieldKey(2);

/// Most body bytes of one message looked at (and waited for).
const PEEK: usize = 2048;
/// Longest message length believed (the server's own limit is 1 GiB).
const MAX_LEN: u32 = 1 << 30;
/// Longest startup packet the server accepts.
const MAX_STARTUP_LEN: u32 = 10_000;
/// Prepared statements remembered per connection.
const MAX_STATEMENTS: usize = 1024;
/// The server cuts identifiers to this many bytes (NAMEDATALEN - 1).
const MAX_NAME: usize = 63;
/// Longest SQLSTATE kept (they are 5 characters).
const MAX_SQLSTATE: usize = 16;

const CANCEL_REQUEST: u32 = 80_877_102;
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
/// Protocol major version 3 sits in the code's high 16 bits (3.0 = 196608).
const PROTOCOL_MAJOR: u32 = 3;

/// Type bytes the server sends.
const BACKEND_TYPES: &[u8] = b"123ACDEGHIKNRSTVWZcdnstv";

/// [`BACKEND_TYPES`] as a table by byte: every message of a response is
/// checked (a slice search was 6% of the parser's time on small results).
static IS_BACKEND_TYPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < BACKEND_TYPES.len() {
        table[BACKEND_TYPES[i] as usize] = true;
        i += 1;
    }
    table
};

/// First words of statements, for detection.
const SQL_VERBS: &[&str] = &[
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "WITH",
    "VALUES",
    "TABLE",
    "BEGIN",
    "START",
    "COMMIT",
    "END",
    "ROLLBACK",
    "ABORT",
    "SAVEPOINT",
    "RELEASE",
    "SET",
    "SHOW",
    "RESET",
    "CREATE",
    "DROP",
    "ALTER",
    "TRUNCATE",
    "COPY",
    "EXPLAIN",
    "ANALYZE",
    "VACUUM",
    "GRANT",
    "REVOKE",
    "DECLARE",
    "FETCH",
    "MOVE",
    "CLOSE",
    "LISTEN",
    "UNLISTEN",
    "NOTIFY",
    "PREPARE",
    "EXECUTE",
    "DEALLOCATE",
    "DISCARD",
    "LOCK",
    "CALL",
    "DO",
    "MERGE",
    "REFRESH",
    "REINDEX",
    "CLUSTER",
    "COMMENT",
    "CHECKPOINT",
    "LOAD",
    "SECURITY",
];

#[derive(Default)]
pub struct Pgsql;

/// Per-connection state.
#[derive(Default)]
pub struct Conn {
    /// The extended-protocol batch being read (request direction).
    batch: Batch,
    /// Normalized text of prepared statements by name, from Parse messages.
    statements: BTreeMap<Vec<u8>, String>,
    /// The latest request was an extended-protocol batch (ended by Sync).
    last_synced: bool,
    /// The client just ended a COPY FROM STDIN that such a batch started:
    /// the Sync that follows is not a request.
    copy_ended: bool,
    /// The server owes a one-byte answer to this encryption request.
    answer: Option<Encryption>,
    /// The response being read (response direction).
    response: Response,
    /// Requests sent whose response has not ended: a notice while one is
    /// waiting is the start of its response, not an asynchronous message.
    awaiting: u32,
}

#[derive(Clone, Copy)]
enum Encryption {
    Ssl,
    Gss,
}

/// What the messages of an unfinished batch said.
#[derive(Default)]
struct Batch {
    active: bool,
    parse: bool,
    describe: bool,
    execute: bool,
    close: bool,
    /// Text of the first Parse.
    parse_sql: Option<String>,
    /// Text of the statement the first Bind names.
    bound_sql: Option<String>,
    /// Text of a statement described or closed.
    named_sql: Option<String>,
}

impl Batch {
    fn command(&self) -> &'static str {
        if self.execute {
            "EXECUTE"
        } else if self.parse {
            "PREPARE"
        } else if self.close {
            "CLOSE"
        } else if self.describe {
            "DESCRIBE"
        } else {
            "SYNC"
        }
    }

    fn sql(&self) -> Option<&str> {
        self.bound_sql.as_deref().or(self.parse_sql.as_deref()).or(self.named_sql.as_deref())
    }
}

/// What the messages of an unfinished response said.
#[derive(Default)]
struct Response {
    active: bool,
    /// Answering a StartupMessage: an error ends it (no `Z` follows).
    startup: bool,
    failed: bool,
    error_code: Option<String>,
}

/// The front of a typed message.
struct Frame<'a> {
    tag: u8,
    /// Type byte, length and body.
    wire_len: u64,
    /// The first `min(body length, peek)` bytes of the body.
    body: &'a [u8],
    /// `body` is the whole body.
    whole: bool,
}

impl Protocol for Pgsql {
    type Conn = Conn;

    fn info() -> Info {
        Info {
            name: "pgsql",
            version: env!("CARGO_PKG_VERSION"),
            description: "PostgreSQL frontend/backend protocol v3: queries, prepared statements, errors",
            default_ports: &[5432],
            field_names: &["command", "sql", "error_code"],
            max_buffer: 256 * 1024,
        }
    }

    fn detect(&self, direction: Direction, role: Role, bytes: &[u8]) -> u8 {
        let ctx = Ctx::for_detect(direction, role);
        if ctx.carries_requests_or_egress() {
            detect_request(bytes)
        } else {
            detect_response(bytes)
        }
    }

    fn parse(&self, conn: &mut Conn, ctx: &Ctx, buf: &[u8], fields: &mut Fields) -> Step {
        if ctx.carries_requests_or_egress() {
            let step = parse_request(conn, buf, ctx.truncated, fields);
            if matches!(step, Step::Complete(_, m) if m.kind == wirelens_sdk::MessageKind::Request) {
                conn.awaiting = conn.awaiting.saturating_add(1);
            }
            step
        } else {
            parse_response(conn, buf, ctx.truncated, fields)
        }
    }

    fn lost(&self, conn: &mut Conn, ctx: &Ctx, head: &[u8], fields: &mut Fields) -> Option<Meta> {
        // The rest of the message in progress is lost; still report it so
        // pairing stays aligned, with what its head told.
        if ctx.carries_requests_or_egress() {
            conn.copy_ended = false;
            let batch = std::mem::take(&mut conn.batch);
            if batch.active {
                fields.str(COMMAND, batch.command());
                if let Some(sql) = batch.sql() {
                    fields.str(SQL, sql);
                }
                return Some(Meta::request());
            }
            // A request whose head was cut before its length was read.
            return match head.first() {
                Some(b'Q') => {
                    fields.str(COMMAND, "QUERY");
                    Some(Meta::request())
                }
                Some(b'P' | b'B' | b'D' | b'E' | b'C' | b'F') => Some(Meta::request()),
                _ => None,
            };
        }
        conn.answer = None;
        // Requests still waiting were answered in the lost bytes.
        conn.awaiting = 0;
        let response = std::mem::take(&mut conn.response);
        if response.active {
            if let Some(code) = &response.error_code {
                fields.str(ERROR_CODE, code);
            }
            return Some(Meta::response(!response.failed));
        }
        match head.first() {
            Some(b'E') => Some(Meta::response(false)),
            Some(&t) if IS_BACKEND_TYPE[usize::from(t)] => Some(Meta::response(true)),
            _ => None,
        }
    }

    fn resync(&self, conn: &mut Conn, ctx: &Ctx) -> Option<Meta> {
        self.lost(conn, ctx, &[], &mut Fields::default())
    }
}

/// A type byte as text for error messages.
fn show(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", b as char)
    } else {
        format!("0x{b:02x}")
    }
}

/// Read the typed message at the front of `buf`, waiting for at most `peek`
/// bytes of its body; `truncated`: the bytes after `buf` were lost, so what
/// is here is all the body there is to look at.
fn frame(buf: &[u8], peek: usize, truncated: bool) -> Result<Frame<'_>, Step> {
    let mut cur = Cursor::new(buf);
    let tag = cur.u8().ok_or(Step::NeedMore)?;
    let len = cur.u32_be().ok_or(Step::NeedMore)?;
    if !(4..=MAX_LEN).contains(&len) {
        return Err(Step::Invalid(format!("message {} with bad length {len}", show(tag))));
    }
    let body_len = usize::try_from(len - 4).unwrap_or(usize::MAX);
    let want = body_len.min(peek);
    let body = match cur.take(want) {
        Some(body) => body,
        None if truncated => cur.rest(),
        None => return Err(Step::NeedMore),
    };
    Ok(Frame { tag, wire_len: u64::from(len) + 1, body, whole: body.len() == body_len })
}

/// A NUL-terminated string. In a body cut short (by [`PEEK`]) a missing NUL
/// means the string runs past the cut: what is there is returned.
fn cstr<'a>(cur: &mut Cursor<'a>, whole: bool) -> Result<&'a [u8], Step> {
    if let Some(s) = cur.cstr() {
        return Ok(s);
    }
    if whole {
        return Err(Step::Invalid("string without its terminating NUL".into()));
    }
    Ok(cur.take(cur.remaining()).unwrap_or_default())
}

/// A statement or portal name as the server keys it.
fn name_key(name: &[u8]) -> Vec<u8> {
    name[..name.len().min(MAX_NAME)].to_vec()
}

fn normalize(text: &[u8]) -> String {
    sql::normalize(text, Dialect::Postgres)
}

// ---------------------------------------------------------------------------
// Requests (frontend messages)

fn parse_request(conn: &mut Conn, buf: &[u8], truncated: bool, fields: &mut Fields) -> Step {
    let Some(&tag) = buf.first() else { return Step::NeedMore };
    if tag == 0 {
        return parse_untyped(conn, buf, fields);
    }
    let peek = match tag {
        b'Q' | b'P' | b'B' | b'D' | b'C' => PEEK,
        b'E' | b'F' | b'H' | b'S' | b'X' | b'd' | b'c' | b'f' | b'p' => 0,
        _ => return Step::Invalid(format!("unknown frontend message type {}", show(tag))),
    };
    let frame = match frame(buf, peek, truncated) {
        Ok(frame) => frame,
        Err(step) => return step,
    };
    let copy_ended = std::mem::take(&mut conn.copy_ended);
    match tag {
        b'Q' => simple_query(conn, &frame, fields),
        b'S' if copy_ended => {
            // Clients send Sync after Execute whether or not it starts a
            // COPY FROM STDIN, and again after CopyDone; the server ignores
            // the first during the copy and answers one ReadyForQuery.
            Step::Discard(frame.wire_len)
        }
        b'S' => {
            conn.last_synced = true;
            let batch = std::mem::take(&mut conn.batch);
            fields.str(COMMAND, batch.command());
            if let Some(sql) = batch.sql() {
                fields.str(SQL, sql);
            }
            Step::Complete(frame.wire_len, Meta::request())
        }
        b'F' => {
            // Shares a ReadyForQuery with any unsynced batch before it.
            conn.batch = Batch::default();
            conn.last_synced = false;
            fields.str(COMMAND, "FUNCTION_CALL");
            Step::Complete(frame.wire_len, Meta::request())
        }
        b'X' => {
            conn.batch = Batch::default();
            fields.str(COMMAND, "TERMINATE");
            Step::Complete(frame.wire_len, Meta::oneway())
        }
        b'c' | b'f' => {
            conn.copy_ended = conn.last_synced;
            Step::Discard(frame.wire_len)
        }
        // CopyData, and passwords or SASL messages: no requests.
        b'd' | b'p' => Step::Discard(frame.wire_len),
        _ => match batch_message(conn, &frame) {
            Ok(()) => Step::Continue(frame.wire_len),
            Err(step) => step,
        },
    }
}

/// A message without type byte: length, code, parameters.
fn parse_untyped(conn: &mut Conn, buf: &[u8], fields: &mut Fields) -> Step {
    let mut cur = Cursor::new(buf);
    let (Some(len), Some(code)) = (cur.u32_be(), cur.u32_be()) else { return Step::NeedMore };
    match code {
        SSL_REQUEST | GSSENC_REQUEST if len == 8 => {
            conn.answer = Some(if code == SSL_REQUEST { Encryption::Ssl } else { Encryption::Gss });
            Step::Discard(8)
        }
        CANCEL_REQUEST if len == 16 => Step::Discard(16),
        _ if code >> 16 == PROTOCOL_MAJOR && (8..=MAX_STARTUP_LEN).contains(&len) => {
            conn.response.startup = true;
            conn.last_synced = false;
            fields.str(COMMAND, "STARTUP");
            Step::Complete(u64::from(len), Meta::request())
        }
        _ => Step::Invalid(format!("not a PostgreSQL startup packet (length {len}, code {code})")),
    }
}

fn simple_query(conn: &mut Conn, frame: &Frame, fields: &mut Fields) -> Step {
    let text = match cstr(&mut Cursor::new(frame.body), frame.whole) {
        Ok(text) => text,
        Err(step) => return step,
    };
    // Extended messages not yet synced share this query's ReadyForQuery:
    // they become part of this request.
    conn.batch = Batch::default();
    conn.last_synced = false;
    fields.str(COMMAND, "QUERY");
    sql::normalize_field(fields, SQL, text, Dialect::Postgres);
    Step::Complete(frame.wire_len, Meta::request())
}

/// Note what one message of an extended-protocol batch says.
fn batch_message(conn: &mut Conn, frame: &Frame) -> Result<(), Step> {
    let mut cur = Cursor::new(frame.body);
    match frame.tag {
        b'P' => {
            let name = cstr(&mut cur, frame.whole)?;
            let text = normalize(cstr(&mut cur, frame.whole)?);
            remember_statement(&mut conn.statements, name, &text);
            conn.batch.parse = true;
            conn.batch.parse_sql.get_or_insert(text);
        }
        b'B' => {
            let _portal = cstr(&mut cur, frame.whole)?;
            let statement = cstr(&mut cur, frame.whole)?;
            if conn.batch.bound_sql.is_none() {
                conn.batch.bound_sql = conn.statements.get(&name_key(statement)).cloned();
            }
        }
        b'D' | b'C' => {
            // `S` names a statement, `P` a portal.
            let kind = cur.u8().ok_or_else(|| Step::Invalid(format!("empty {} message", show(frame.tag))))?;
            let name = name_key(cstr(&mut cur, frame.whole)?);
            if kind == b'S' {
                let text =
                    if frame.tag == b'C' { conn.statements.remove(&name) } else { conn.statements.get(&name).cloned() };
                if conn.batch.named_sql.is_none() {
                    conn.batch.named_sql = text;
                }
            }
            if frame.tag == b'C' {
                conn.batch.close = true;
            } else {
                conn.batch.describe = true;
            }
        }
        b'E' => conn.batch.execute = true,
        _ => {} // Flush
    }
    conn.batch.active = true;
    Ok(())
}

/// Map a statement name to its text, evicting the first name when full.
fn remember_statement(statements: &mut BTreeMap<Vec<u8>, String>, name: &[u8], text: &str) {
    let key = name_key(name);
    if statements.len() >= MAX_STATEMENTS && !statements.contains_key(&key) {
        statements.pop_first();
    }
    statements.insert(key, text.to_owned());
}

// ---------------------------------------------------------------------------
// Responses (backend messages)

/// The messages of a response at the front of `buf`, read on to its
/// ReadyForQuery within one step while they lie whole in the bytes at hand
/// (see [`Step::read_on`]).
fn parse_response(conn: &mut Conn, buf: &[u8], truncated: bool, fields: &mut Fields) -> Step {
    Step::read_on(buf, fields, |rest, fields| parse_response_message(conn, rest, truncated, fields))
}

/// One message of a response at the front of `buf`.
fn parse_response_message(conn: &mut Conn, buf: &[u8], truncated: bool, fields: &mut Fields) -> Step {
    let Some(&tag) = buf.first() else { return Step::NeedMore };
    if let Some(asked) = conn.answer.take() {
        match (tag, asked) {
            (b'N', _) => return Step::Discard(1),
            (b'S', Encryption::Ssl) => return Step::Invalid("TLS negotiated".into()),
            (b'G', Encryption::Gss) => return Step::Invalid("GSSAPI encryption negotiated".into()),
            // Anything else (an old server's ErrorResponse) is a message.
            _ => {}
        }
    }
    if !IS_BACKEND_TYPE[usize::from(tag)] {
        return Step::Invalid(format!("unknown backend message type {}", show(tag)));
    }
    let peek = if tag == b'E' { PEEK } else { 0 };
    let frame = match frame(buf, peek, truncated) {
        Ok(frame) => frame,
        Err(step) => return step,
    };
    let response = &mut conn.response;
    if !response.active && !response.startup && conn.awaiting == 0 && matches!(tag, b'N' | b'A' | b'S') {
        return Step::Discard(frame.wire_len);
    }
    // Authentication requests only come while a connection starts.
    response.startup |= tag == b'R';
    response.active = true;
    match tag {
        b'Z' => finish_response(conn, frame.wire_len, fields),
        b'E' => {
            let error = read_error(frame.body);
            if !response.failed {
                response.failed = true;
                response.error_code = error.code;
            }
            // No ReadyForQuery follows a startup error or a fatal one: the
            // server closes the connection.
            if response.startup || error.fatal {
                finish_response(conn, frame.wire_len, fields)
            } else {
                Step::Continue(frame.wire_len)
            }
        }
        _ => Step::Continue(frame.wire_len),
    }
}

fn finish_response(conn: &mut Conn, wire_len: u64, fields: &mut Fields) -> Step {
    conn.awaiting = conn.awaiting.saturating_sub(1);
    let response = std::mem::take(&mut conn.response);
    if let Some(code) = &response.error_code {
        fields.str(ERROR_CODE, code);
    }
    Step::Complete(wire_len, Meta::response(!response.failed))
}

/// What an ErrorResponse says that matters here.
struct ErrorInfo {
    code: Option<String>,
    fatal: bool,
}

/// Fields of an ErrorResponse body: a type byte then a string each, ended
/// by a zero byte. `V` (severity, never translated) wins over `S`.
fn read_error(body: &[u8]) -> ErrorInfo {
    let mut cur = Cursor::new(body);
    let mut code = None;
    let mut severity: Option<&[u8]> = None;
    while let Some(kind) = cur.u8() {
        let Some(value) = cur.cstr() else { break };
        match kind {
            0 => break,
            b'C' => code = Some(String::from_utf8_lossy(&value[..value.len().min(MAX_SQLSTATE)]).into_owned()),
            b'V' => severity = Some(value),
            b'S' if severity.is_none() => severity = Some(value),
            _ => {}
        }
    }
    let fatal = matches!(severity, Some(b"FATAL" | b"PANIC"));
    ErrorInfo { code, fatal }
}

// ---------------------------------------------------------------------------
// Detection

fn detect_request(bytes: &[u8]) -> u8 {
    match bytes.first() {
        Some(0) => detect_untyped(bytes),
        Some(b'Q') => detect_statement(bytes, false),
        Some(b'P') => detect_statement(bytes, true),
        _ => 0,
    }
}

fn detect_untyped(bytes: &[u8]) -> u8 {
    let mut cur = Cursor::new(bytes);
    let (Some(len), Some(code)) = (cur.u32_be(), cur.u32_be()) else { return 0 };
    match code {
        SSL_REQUEST | GSSENC_REQUEST if len == 8 => 95,
        CANCEL_REQUEST if len == 16 => 90,
        _ if code >> 16 == PROTOCOL_MAJOR && (8..=MAX_STARTUP_LEN).contains(&len) => {
            let params = &cur.rest()[..cur.remaining().min(len as usize - 8)];
            if startup_names_user(params) {
                95
            } else {
                0
            }
        }
        _ => 0,
    }
}

/// Startup parameters are name/value strings; every client sends `user`.
fn startup_names_user(params: &[u8]) -> bool {
    let mut cur = Cursor::new(params);
    while let Some(name) = cur.cstr() {
        if name.is_empty() || !name.iter().all(|b| b.is_ascii_graphic()) {
            return false;
        }
        let Some(value) = cur.cstr() else { return name == b"user" };
        if name == b"user" {
            return !value.is_empty();
        }
    }
    false
}

/// A Query (or with `parse`, a Parse) whose text reads as SQL.
fn detect_statement(bytes: &[u8], parse: bool) -> u8 {
    let mut cur = Cursor::new(bytes);
    cur.skip(1);
    let Some(len) = cur.u32_be() else { return 0 };
    if !(5..=MAX_LEN).contains(&len) {
        return 0;
    }
    let body_len = len as usize - 4;
    let whole = cur.remaining() >= body_len;
    let body = &cur.rest()[..cur.remaining().min(body_len)];
    let mut cur = Cursor::new(body);
    if parse {
        match cur.cstr() {
            Some(name) if name.len() <= MAX_NAME && name.iter().all(|b| b.is_ascii_graphic()) => {}
            _ => return 0,
        }
    }
    let text = match cur.cstr() {
        Some(text) => text,
        None if !whole => cur.rest(),
        None => return 0,
    };
    // A Query's text fills its body; a Parse's is followed by parameter types.
    let tail_ok = if !whole {
        true
    } else if parse {
        let count = cur.u16_be().map(usize::from);
        count.is_some_and(|n| cur.remaining() == n * 4)
    } else {
        cur.is_empty()
    };
    let printable = text.iter().all(|&b| !b.is_ascii_control() || b.is_ascii_whitespace());
    let verb = sql::verb(text);
    if tail_ok && printable && SQL_VERBS.contains(&verb.as_str()) {
        95
    } else {
        0
    }
}

/// The server speaks first only to ask for authentication.
fn detect_response(bytes: &[u8]) -> u8 {
    let mut cur = Cursor::new(bytes);
    let (Some(b'R'), Some(len), Some(kind)) = (cur.u8(), cur.u32_be(), cur.u32_be()) else { return 0 };
    let plausible = match kind {
        // Ok, cleartext, Kerberos, SCM, GSS, SSPI: no payload.
        0 | 2 | 3 | 6 | 7 | 9 => len == 8,
        // MD5: a 4-byte salt.
        5 => len == 12,
        // GSS continue, SASL, SASL continue/final: some payload.
        8 | 10..=12 => (9..=2048).contains(&len),
        _ => false,
    };
    if plausible {
        95
    } else {
        0
    }
}

wirelens_sdk::export_plugin!(Pgsql);

#[cfg(test)]
mod tests {
    use super::*;
    use wirelens_sdk::testing::{all_two_way_splits, check, check_rechunking, fuzz, run, Rng, TestChunk};

    /// Found by fuzzing (`fuzz/found/pgsql-1`): a datagram holding a Parse
    /// message, then the first 5 bytes of a CopyData whose length reaches
    /// past the datagram. The bytes the plugin discards past the datagram
    /// were never part of the message before them (its size underflowed).
    #[test]
    fn a_datagram_ending_inside_discarded_bytes() {
        let bytes = b"P\x00\x00\x001get_usereZone\x00UTC\x00\x0f\x04\x00\x00\x00\x00\x00\x0f\x04\x00\x00\x00\x00\x80\x00\x00\x04\x00oT\x00\x00\x002\x00\x02id\x00\x00\x00@";
        run::<Pgsql>(&[TestChunk::egress(1, bytes).datagram().on(2)], &[2]);
    }

    #[test]
    fn every_case() {
        let all = cases::all();
        assert!(all.len() >= 8);
        for case in all {
            check::<Pgsql>(&case);
        }
    }

    /// Reads of one byte, and the server's view of every case (whole and a
    /// byte at a time), give the same messages.
    #[test]
    fn one_byte_reads_and_the_server_side() {
        wirelens_sdk::testing::check_one_byte_reads::<crate::Pgsql>(&cases::all());
        wirelens_sdk::testing::check_server_side::<crate::Pgsql>(&cases::all());
    }

    /// Other protocols' first bytes and random bytes are not claimed.
    #[test]
    fn claims_no_foreign_protocol() {
        wirelens_sdk::testing::check_claims_no_foreign_protocol::<crate::Pgsql>();
    }

    #[test]
    fn any_split_gives_the_same_messages() {
        for (dir, stream, messages) in
            [(Direction::Egress, cases::client_stream(), 8), (Direction::Ingress, cases::server_stream(), 7)]
        {
            let whole = run::<Pgsql>(&[TestChunk::egress(1, &stream).direction(dir)], &[1]);
            assert_eq!(whole.len(), messages, "{whole:#?}");
            assert!(whole.iter().all(|l| !l.contains(" error:")), "{whole:#?}");
            for (at, got) in all_two_way_splits::<Pgsql>(dir, &stream) {
                assert_eq!(got, whole, "split at {at}");
            }
        }
    }

    #[test]
    fn random_rechunking_gives_the_same_messages() {
        // A connection given up restarts on the next chunk, so cases that
        // end in an error give one error per piece: left out.
        let cases: Vec<_> =
            cases::all().into_iter().filter(|c| !c.expect.iter().any(|l| l.contains(" error: "))).collect();
        check_rechunking::<Pgsql>(&cases, 200, 0x5eed);
    }

    #[test]
    fn detect() {
        let p = Pgsql;
        let client = |bytes: &[u8]| p.detect(Direction::Egress, Role::Client, bytes);
        assert!(client(&cases::ssl_request()) >= 90);
        assert!(client(&cases::startup_message()) >= 90);
        assert!(client(&cases::query("SELECT 1")) >= 90);
        assert!(client(&cases::parse_msg("", "select * from t where id = $1", &[23])) >= 90);
        let mut cut = cases::query(&format!("SELECT '{}'", "x".repeat(5000)));
        cut.truncate(300);
        assert!(client(&cut) >= 90);
        assert!(p.detect(Direction::Ingress, Role::Server, &cases::query("select 1")) >= 90);
        assert!(p.detect(Direction::Ingress, Role::Client, &cases::auth(0, &[])) >= 90);
        assert!(p.detect(Direction::Ingress, Role::Client, &cases::auth(5, b"salt")) >= 90);

        let not_pg: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /api HTTP/1.1\r\n",
            b"PUT /x HTTP/1.1\r\n",
            b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n",
            b"PING\r\n",
            b"QUIT\r\n",
            b"\x16\x03\x01\x02\x00\x01",
            // MySQL COM_QUERY and handshake response.
            b"\x51\x00\x00\x00\x03SELECT 1",
            b"\x50\x00\x00\x00\x03select 1",
            b"\x00\x01\x00\x01\x85\xa6\xff\x01\x00\x00\x00\x01\x21",
            // DNS query.
            b"\x51\x2c\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01",
            b"",
            b"Q",
        ];
        for bytes in not_pg {
            assert_eq!(client(bytes), 0, "{bytes:?}");
            assert_eq!(p.detect(Direction::Ingress, Role::Client, bytes), 0, "{bytes:?}");
        }
        // HTTP and MySQL greetings from a server.
        assert_eq!(p.detect(Direction::Ingress, Role::Client, b"HTTP/1.1 200 OK\r\n"), 0);
        assert_eq!(p.detect(Direction::Ingress, Role::Client, b"\x4a\x00\x00\x00\x0a8.0.33\x00"), 0);
        // A Query whose text is not SQL.
        assert_eq!(client(&cases::query("hello there")), 0);
    }

    #[test]
    fn statement_map_is_bounded() {
        let mut conn = Conn::default();
        for i in 0..3 * MAX_STATEMENTS {
            remember_statement(&mut conn.statements, format!("s{i}").as_bytes(), "select ?");
        }
        remember_statement(&mut conn.statements, &[b'n'; 500], "select ?");
        assert_eq!(conn.statements.len(), MAX_STATEMENTS);
        assert!(conn.statements.keys().all(|k| k.len() <= MAX_NAME));
    }

    /// Feed both directions with both roles; only checks nothing panics.
    fn feed_everywhere(bytes: &[u8]) {
        for role in [Role::Client, Role::Server, Role::Unknown] {
            for dir in [Direction::Egress, Direction::Ingress] {
                let _ = run::<Pgsql>(&[TestChunk::egress(1, bytes).direction(dir).role(role)], &[1]);
            }
        }
    }

    #[test]
    fn random_bytes_do_not_panic() {
        // Type bytes, small length bytes and SQL-ish text, so that many
        // inputs get past the framing.
        const ALPHABET: &[u8] = b"\x00\x00\x00\x01\x04\x05\x08\x0cQPBDECSXFHdcfpZTRNAIK123\xffSELECT 'x'";
        let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2000 {
            let len = rng.below(200);
            let bytes: Vec<u8> = (0..len).map(|_| ALPHABET[rng.below(ALPHABET.len())]).collect();
            feed_everywhere(&bytes);
            let _ = Pgsql.detect(Direction::Egress, Role::Client, &bytes);
            let _ = Pgsql.detect(Direction::Ingress, Role::Client, &bytes);
        }
    }

    #[test]
    fn sdk_fuzz_does_not_panic() {
        fuzz::<Pgsql>(&cases::all(), 20_000, 0x9a);
    }

    #[test]
    fn mutated_cases_do_not_panic() {
        let mut rng = Rng::new(0x2545_f491_4f6c_dd1d);
        let all = cases::all();
        for round in 0..2000 {
            let case = &all[round % all.len()];
            let mut chunks = case.chunks.clone();
            let which = rng.below(chunks.len());
            let bytes = &mut chunks[which].bytes;
            match rng.below(4) {
                0 if !bytes.is_empty() => {
                    let at = rng.below(bytes.len());
                    bytes[at] = rng.next_u64() as u8;
                }
                1 => bytes.truncate(rng.below(bytes.len() + 1)),
                2 => {
                    let at = rng.below(bytes.len() + 1);
                    bytes.insert(at, rng.next_u64() as u8);
                }
                _ => {
                    // A length byte near a message start.
                    let at = rng.below(bytes.len().min(8) + 1);
                    if at < bytes.len() {
                        bytes[at] = 0xff;
                    }
                }
            }
            let _ = run::<Pgsql>(&chunks, &[1]);
            let chunk = &chunks[which];
            let _ = Pgsql.detect(chunk.direction, chunk.role, &chunk.bytes);
        }
    }

    #[test]
    fn fixtures_recorded_from_postgres() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/pgsql");
        assert!(wirelens_sdk::testing::check_fixtures::<Pgsql>(&dir, 50) >= 4);
    }
}

/// Calls stay whole and in step when the capture copies only the first
/// bytes of large reads (the cases of issue 14, as psql and pgbench cause
/// them against PostgreSQL 15).
#[cfg(test)]
mod lost_bytes {
    use super::cases::{command_complete, data_row, msg, query, ready, row_description};
    use super::*;
    use wirelens_sdk::testing::{run, TestChunk};

    /// `bytes` arriving in reads of `read` bytes of which the first
    /// `copied` are captured, with timestamps from `ts`.
    fn reads(bytes: &[u8], read: usize, copied: usize, ts: u64, direction: Direction) -> Vec<TestChunk> {
        bytes
            .chunks(read)
            .enumerate()
            .map(|(i, r)| {
                let c = TestChunk::egress(ts + i as u64, &r[..r.len().min(copied)]).direction(direction);
                if r.len() > copied {
                    c.truncated(r.len() as u64)
                } else {
                    c
                }
            })
            .collect()
    }

    /// A 5000-row SELECT (about 300 KB) read 64 KiB at a time, 4 KiB of
    /// each copied: the plugin loses its place in the rows. The UPDATE,
    /// SELECT and Terminate after it are all reported, paired with their
    /// own answers, and the big SELECT keeps its whole size and ends at its
    /// last read.
    #[test]
    fn a_large_result_does_not_end_the_connection() {
        let select = query("SELECT * FROM pgbench_accounts LIMIT 5000");
        let mut rows = row_description(&[("aid", 23), ("bid", 23), ("abalance", 23), ("filler", 25)]);
        for i in 0..5000 {
            rows.extend(data_row(&[&i.to_string(), "1", "0", &" ".repeat(40)]));
        }
        rows.extend(command_complete("SELECT 5000"));
        rows.extend(ready(b'I'));
        let mut chunks = vec![TestChunk::egress(1, &select)];
        let big = reads(&rows, 65_536, 4096, 2, Direction::Ingress);
        let last_read = 1 + big.len() as u64;
        chunks.extend(big);
        let update = query("UPDATE pgbench_accounts SET abalance = 1 WHERE aid = 1");
        let small = query("SELECT abalance FROM pgbench_accounts WHERE aid = 1");
        let answer =
            [row_description(&[("abalance", 23)]), data_row(&["1"]), command_complete("SELECT 1"), ready(b'I')]
                .concat();
        chunks.push(TestChunk::egress(100, &update));
        chunks.push(TestChunk::ingress(101, [command_complete("UPDATE 1"), ready(b'I')].concat()));
        chunks.push(TestChunk::egress(102, &small));
        chunks.push(TestChunk::ingress(103, &answer));
        chunks.push(TestChunk::egress(104, msg(b'X', &[])));
        for case in [
            chunks.clone(),
            wirelens_sdk::testing::as_server(&wirelens_sdk::testing::Case {
                name: "",
                chunks: chunks.clone(),
                close: vec![],
                expect: vec![],
            })
            .chunks,
        ] {
            let got = run::<Pgsql>(&case, &[]);
            let server = case[0].direction == Direction::Ingress;
            let (q, a) = if server { ("in", "out") } else { ("out", "in") };
            assert_eq!(got, vec![
                format!("1 req {q} 1-1 size={} ok command=QUERY sql=SELECT * FROM pgbench_accounts LIMIT ?", select.len()),
                format!("1 resp {a} 2-{last_read} size={} ok", rows.len()),
                format!("1 req {q} 100-100 size={} ok command=QUERY sql=UPDATE pgbench_accounts SET abalance = ? WHERE aid = ?", update.len()),
                format!("1 resp {a} 101-101 size={} ok", command_complete("UPDATE 1").len() + ready(b'I').len()),
                format!("1 req {q} 102-102 size={} ok command=QUERY sql=SELECT abalance FROM pgbench_accounts WHERE aid = ?", small.len()),
                format!("1 resp {a} 103-103 size={} ok", answer.len()),
                format!("1 oneway {q} 104-104 size=5 ok command=TERMINATE"),
            ], "{} side", if server { "server" } else { "client" });
        }
    }

    /// The server side of `pgbench -i`: the 1.6 MB COPY arrives in reads
    /// that do not line up with its CopyData messages, 4 KiB of each copied.
    /// The COPY is not failed and the queries after it are all reported.
    #[test]
    fn a_copy_in_misaligned_reads_is_not_a_failure() {
        let copy = query("copy pgbench_accounts from stdin");
        let mut data = Vec::new();
        for i in 0..20_000 {
            data.extend(msg(b'd', format!("{i}\t1\t0\t{}\n", " ".repeat(60)).as_bytes()));
        }
        data.extend(msg(b'c', &[]));
        let server = |c: TestChunk| c.role(Role::Server);
        let mut chunks = vec![server(TestChunk::ingress(1, &copy))];
        chunks.push(server(TestChunk::egress(2, msg(b'G', &[0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0]))));
        // Reads of 8 KiB, 4 KiB copied: bytes lost in the middle of messages.
        let copy_reads = reads(&data, 8192, 4096, 3, Direction::Ingress);
        let after_copy = 3 + copy_reads.len() as u64;
        chunks.extend(copy_reads.into_iter().map(server));
        chunks.push(server(TestChunk::egress(after_copy, [command_complete("COPY 20000"), ready(b'I')].concat())));
        let mut expect_after = Vec::new();
        for i in 0..8u64 {
            let ts = 1000 + 2 * i;
            let q = query(&format!("vacuum analyze pgbench_branches{i}"));
            chunks.push(server(TestChunk::ingress(ts, &q)));
            chunks.push(server(TestChunk::egress(ts + 1, [command_complete("VACUUM"), ready(b'I')].concat())));
            expect_after.push(format!(
                "1 req in {ts}-{ts} size={} ok command=QUERY sql=vacuum analyze pgbench_branches{i}",
                q.len()
            ));
            let answer = command_complete("VACUUM").len() + ready(b'I').len();
            expect_after.push(format!("1 resp out {}-{} size={answer} ok", ts + 1, ts + 1));
        }
        let got = run::<Pgsql>(&chunks, &[]);
        assert_eq!(
            got[0],
            format!("1 req in 1-1 size={} ok command=QUERY sql=copy pgbench_accounts from stdin", copy.len())
        );
        let answer = 16 + command_complete("COPY 20000").len() + ready(b'I').len();
        assert_eq!(got[1], format!("1 resp out 2-{after_copy} size={answer} ok"), "the COPY succeeded: {got:#?}");
        assert_eq!(got[2..], expect_after[..], "the queries after the COPY");
    }
}
