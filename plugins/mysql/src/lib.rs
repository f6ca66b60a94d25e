//! MySQL and MariaDB client/server protocol plugin.
//!
//! Every message travels in packets: a 3-byte little-endian payload length,
//! a sequence number, then the payload. A client request is one command
//! packet (sequence 0) whose first byte names the command; the server's
//! response is one or more packets whose shape depends on that command, so
//! the connection keeps the commands awaiting their response in order.
//!
//! A **call** is:
//! - the login: the client's handshake response (`CONNECT`) and the
//!   server's final OK or ERR (auth-switch rounds are part of it; the
//!   server's greeting is not);
//! - a command and its whole response: OK, ERR, a result set (column count,
//!   column definitions, an EOF unless `CLIENT_DEPRECATE_EOF` was agreed,
//!   rows, then an EOF or OK), the statement-prepare answer (ids, parameter
//!   and column definitions), and further result sets while the server says
//!   more follow. Each packet is consumed as it arrives, so a result set of
//!   any size needs no more memory than one packet header.
//!
//! `STMT_CLOSE`, `QUIT` (no response) are one-way messages. An execute that
//! opens a cursor ends after its column definitions; each `STMT_FETCH` is
//! then a call whose answer is rows and an EOF.
//!
//! Fields: `command` (`QUERY`, `STMT_PREPARE`, `STMT_EXECUTE`, `PING`, ...:
//! the command's name without `COM_`), `sql` (normalized; for
//! `STMT_EXECUTE` the text of the prepared statement), `error_code` (from an
//! ERR packet; the call failed).

use std::collections::{HashMap, VecDeque};

use wirelens_sdk::cursor::Cursor;
use wirelens_sdk::sql::{normalize, normalize_field, Dialect};
use wirelens_sdk::{Ctx, Direction, FieldKey, Fields, Info, Meta, Protocol, Role, Step};

pub mod cases;

pub const COMMAND: FieldKey = FieldKey(0);
pub const SQL: FieldKey = FieldKey(1);
pub const ERROR_CODE: FieldKey = FieldKey(2);

/// Bytes of statement text read before the rest of a long one is skipped
/// (the normalized text is cut shorter anyway). With the default capture
/// size (4 KiB) every call keeps at least this much, so results do not
/// depend on how the stream was cut; with `PayloadBytes` below it, a
/// statement longer than the capture size is lost.
const SQL_TEXT: usize = 2048;
/// Commands sent without their response started yet (pipelining).
const MAX_PENDING: usize = 256;
/// Prepared statements remembered per connection.
const MAX_STATEMENTS: usize = 1024;
/// A packet of this length is continued by the next one.
const MAX_PACKET: u32 = 0xff_ffff;

const CLIENT_PROTOCOL_41: u32 = 0x200;
const CLIENT_SSL: u32 = 0x800;
const CLIENT_DEPRECATE_EOF: u32 = 1 << 24;
const SERVER_MORE_RESULTS_EXISTS: u16 = 0x0008;
const SERVER_STATUS_CURSOR_EXISTS: u16 = 0x0040;

#[derive(Default)]
pub struct Mysql;

#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
enum Login {
    /// No greeting seen (the capture may have started later).
    #[default]
    Unknown,
    /// The server greeted; the client's handshake response comes next.
    Greeted,
    /// The handshake response was sent; auth rounds until OK or ERR.
    Authenticating,
    /// Commands.
    Done,
}

/// What the response to a command looks like.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expect {
    /// OK or ERR after auth rounds.
    Login,
    /// OK, ERR, or result sets.
    ResultSets,
    /// OK-prepare (remembering the statement's text) or ERR.
    Prepare(Box<str>),
    /// Column definitions then EOF (`FIELD_LIST`).
    Columns,
    /// One packet of any kind (OK, ERR, EOF or a text).
    OnePacket,
    /// Rows then an EOF (or the OK that replaces it), or ERR: the answer
    /// to `STMT_FETCH` from a cursor.
    Rows,
}

/// Where in a multi-packet response the next packet falls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Section {
    /// The response's (or the next result set's) first packet.
    First,
    /// Column definitions of a result set, then (maybe) an EOF, then rows.
    Columns {
        left: u64,
    },
    ColumnsEof,
    Rows,
    /// Prepare: parameter then column definitions, each maybe closed by EOF.
    Params {
        left: u64,
        columns: u64,
    },
    ParamsEof {
        columns: u64,
    },
    PrepareColumns {
        left: u64,
    },
}

struct Response {
    expect: Expect,
    section: Section,
}

/// Per-connection state.
#[derive(Default)]
pub struct Conn {
    login: Login,
    server_caps: u32,
    /// Whether EOF packets are replaced by OK packets; `None` until the
    /// handshake or the first result set tells.
    deprecate_eof: Option<bool>,
    pending: VecDeque<Expect>,
    response: Option<Response>,
    /// Normalized text of prepared statements by id.
    statements: HashMap<u32, Box<str>>,
    /// Response bytes were lost: drop them until the next request.
    response_lost: bool,
    /// The last response ended where an EOF may still follow (prepare
    /// answers when the EOF mode is unknown): drop one such EOF.
    stray_eof_possible: bool,
}

impl Protocol for Mysql {
    type Conn = Conn;

    fn info() -> Info {
        Info {
            name: "mysql",
            version: env!("CARGO_PKG_VERSION"),
            description: "MySQL and MariaDB commands, statements and result sets",
            default_ports: &[3306, 3307, 33060],
            field_names: &["command", "sql", "error_code"],
            max_buffer: 64 * 1024,
        }
    }

    fn detect(&self, direction: Direction, role: Role, bytes: &[u8]) -> u8 {
        let Some(p) = Packet::read(bytes) else { return 0 };
        // A packet claims its length: the bytes at hand must not contradict it.
        let exact = bytes.len() == p.wire_len() as usize;
        let ctx = Ctx::for_detect(direction, role);
        let requests = ctx.carries_requests_or_egress();
        if requests {
            match (p.seq, p.payload.first()) {
                (0, Some(0x03 | 0x16)) => {
                    let verb = wirelens_sdk::sql::verb(&p.payload[1..]);
                    if is_sql_verb(&verb) && (exact || bytes.len() >= SQL_TEXT) {
                        95
                    } else {
                        0
                    }
                }
                (0, Some(0x0e | 0x01)) if p.len == 1 && exact => 50,
                (1, Some(_)) if p.len >= 32 && exact => {
                    let caps = u32::from_le_bytes(p.payload[..4].try_into().expect("4 bytes"));
                    if caps & CLIENT_PROTOCOL_41 != 0 {
                        70
                    } else {
                        0
                    }
                }
                // The handshake response after a switch to TLS: the first
                // packet of a connection's plaintext (read at the TLS library).
                (2, Some(_)) if p.len > 32 && exact && tls_handshake_response(&p) => 70,
                _ => 0,
            }
        } else if p.seq == 0 && exact && greeting_caps(p.payload).is_some() {
            95
        } else {
            0
        }
    }

    fn call_field() -> Option<&'static str> {
        Some("command")
    }

    fn parse(&self, conn: &mut Conn, ctx: &Ctx, buf: &[u8], fields: &mut Fields) -> Step {
        if ctx.carries_requests_or_egress() {
            let Some(p) = Packet::read(buf) else { return Step::NeedMore };
            return request(conn, &p, ctx.truncated, fields);
        }
        // The packets of a response are read on within one step while they
        // lie whole in the bytes at hand (see `Step::read_on`).
        Step::read_on(buf, fields, |rest, fields| match Packet::read(rest) {
            Some(p) => response(conn, &p, rest.len() as u64, ctx.truncated, fields),
            None => Step::NeedMore,
        })
    }

    fn lost(&self, conn: &mut Conn, ctx: &Ctx, head: &[u8], fields: &mut Fields) -> Option<Meta> {
        if ctx.carries_requests_or_egress() {
            // A command whose packet header was cut: what its head says.
            let p = Packet::read(head)?;
            return match request(conn, &p, true, fields) {
                Step::Complete(_, meta) => Some(meta),
                _ => None,
            };
        }
        // The rest of this response is lost (a large result set cut by the
        // capture): report the call as seen so far; the SDK resumes at the
        // next request's answer (a lost response may resume mid-packet).
        conn.response_lost = true;
        let meta = match conn.response.take() {
            // A response in progress has not failed (an ERR ends it).
            Some(_) => Some(Meta::response(true)),
            None => match Packet::read(head) {
                Some(p) if conn.pending.pop_front().is_some() => {
                    let failed = p.payload.first() == Some(&0xff);
                    if failed {
                        if let Some(code) = error_code(&p) {
                            fields.int(ERROR_CODE, i64::from(code));
                        }
                    }
                    Some(Meta::response(!failed))
                }
                _ => None,
            },
        };
        // Commands still waiting were answered in the lost bytes.
        conn.pending.clear();
        meta
    }

    fn resync(&self, conn: &mut Conn, ctx: &Ctx) -> Option<Meta> {
        self.lost(conn, ctx, &[], &mut Fields::default())
    }
}

/// A packet header and the part of its payload at hand.
struct Packet<'a> {
    len: u32,
    seq: u8,
    payload: &'a [u8],
}

impl<'a> Packet<'a> {
    fn read(buf: &'a [u8]) -> Option<Self> {
        let mut cur = Cursor::new(buf);
        let len = cur.u24_le()?;
        let seq = cur.u8()?;
        let rest = cur.rest();
        Some(Self { len, seq, payload: &rest[..rest.len().min(len as usize)] })
    }

    fn wire_len(&self) -> u64 {
        4 + u64::from(self.len)
    }

    fn complete(&self) -> bool {
        self.payload.len() == self.len as usize
    }

    /// The first `n` payload bytes (or the whole payload) are at hand.
    fn has(&self, n: usize) -> bool {
        self.payload.len() >= n.min(self.len as usize)
    }
}

// ---------------------------------------------------------------- requests

/// A client packet; `truncated`: the rest of it was lost, read what is here.
fn request(conn: &mut Conn, p: &Packet, truncated: bool, fields: &mut Fields) -> Step {
    conn.response_lost = false;
    if conn.login == Login::Greeted && p.seq == 1 {
        return handshake_response(conn, p, fields);
    }
    // A TLS connection's plaintext begins with the handshake response sent
    // after the switch (sequence 2; the greeting and the switch request went
    // in the clear, on the socket).
    if conn.login == Login::Unknown && p.seq == 2 && p.len > 32 {
        if !p.has(4) {
            return Step::NeedMore;
        }
        if tls_handshake_response(p) {
            return handshake_response(conn, p, fields);
        }
    }
    if p.seq != 0 || conn.login == Login::Authenticating {
        // Auth rounds, LOAD DATA LOCAL contents, or the rest of a command
        // longer than one packet: not a new request.
        return Step::Discard(p.wire_len());
    }
    if !p.has(1) {
        return Step::NeedMore;
    }
    let Some((&command, body)) = p.payload.split_first() else {
        return Step::Invalid("empty command packet".into());
    };
    let (name, expect) = match command {
        0x01 => ("QUIT", None),
        0x02 => ("INIT_DB", Some(Expect::OnePacket)),
        0x03 => ("QUERY", Some(Expect::ResultSets)),
        0x04 => ("FIELD_LIST", Some(Expect::Columns)),
        0x09 => ("STATISTICS", Some(Expect::OnePacket)),
        0x0d => ("DEBUG", Some(Expect::OnePacket)),
        0x0e => ("PING", Some(Expect::OnePacket)),
        0x11 => ("CHANGE_USER", Some(Expect::Login)),
        0x16 => ("STMT_PREPARE", Some(Expect::Prepare(Box::from("")))),
        0x17 => ("STMT_EXECUTE", Some(Expect::ResultSets)),
        0x18 => return Step::Discard(p.wire_len()), // STMT_SEND_LONG_DATA: part of a later execute
        0x19 => ("STMT_CLOSE", None),
        0x1a => ("STMT_RESET", Some(Expect::OnePacket)),
        0x1b => ("SET_OPTION", Some(Expect::OnePacket)),
        0x1c => ("STMT_FETCH", Some(Expect::Rows)),
        0x1f => ("RESET_CONNECTION", Some(Expect::OnePacket)),
        other => return Step::Invalid(format!("unknown command byte 0x{other:02x}")),
    };
    fields.str(COMMAND, name);
    let mut expect = expect;
    match command {
        0x03 | 0x16 => {
            if !p.has(1 + SQL_TEXT) && !truncated {
                return Step::NeedMore;
            }
            let text = &body[..body.len().min(SQL_TEXT)];
            if command == 0x16 {
                // A prepared statement's text is kept for its executions.
                let sql = normalize(text, Dialect::MySql);
                fields.str(SQL, &sql);
                expect = Some(Expect::Prepare(sql.into()));
            } else {
                normalize_field(fields, SQL, text, Dialect::MySql);
            }
        }
        0x17 | 0x19 | 0x1a | 0x1c => {
            if !p.has(5) && !truncated {
                return Step::NeedMore;
            }
            let id = statement_id(body);
            let known = id.and_then(|id| conn.statements.get(&id));
            if let Some(sql) = known {
                fields.str(SQL, sql);
            }
            if command == 0x19 {
                if let Some(id) = id {
                    conn.statements.remove(&id);
                }
            }
        }
        0x11 => conn.login = Login::Authenticating,
        _ => {}
    }
    match expect {
        Some(expect) => {
            if conn.pending.len() >= MAX_PENDING {
                return Step::Invalid(format!("more than {MAX_PENDING} commands without a response"));
            }
            conn.pending.push_back(expect);
            Step::Complete(p.wire_len(), Meta::request())
        }
        None => Step::Complete(p.wire_len(), Meta::oneway()),
    }
}

fn handshake_response(conn: &mut Conn, p: &Packet, fields: &mut Fields) -> Step {
    if !p.has(4) {
        return Step::NeedMore;
    }
    let Some(caps) = p.payload.get(..4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes"))) else {
        return Step::Invalid("handshake response shorter than 4 bytes".into());
    };
    if caps & CLIENT_SSL != 0 && p.len == 32 {
        return Step::Invalid("the client switched to TLS".into());
    }
    // Without the greeting (TLS plaintext), the first result set tells.
    conn.deprecate_eof = (conn.login == Login::Greeted).then_some(caps & conn.server_caps & CLIENT_DEPRECATE_EOF != 0);
    conn.login = Login::Authenticating;
    conn.pending.push_back(Expect::Login);
    fields.str(COMMAND, "CONNECT");
    Step::Complete(p.wire_len(), Meta::request())
}

/// A handshake response made after a switch to TLS (`CLIENT_SSL` set).
fn tls_handshake_response(p: &Packet) -> bool {
    p.payload
        .get(..4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
        .is_some_and(|caps| caps & CLIENT_PROTOCOL_41 != 0 && caps & CLIENT_SSL != 0)
}

fn statement_id(body: &[u8]) -> Option<u32> {
    body.get(..4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
}

fn is_sql_verb(verb: &str) -> bool {
    const VERBS: &[&str] = &[
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "REPLACE",
        "SET",
        "SHOW",
        "CREATE",
        "DROP",
        "ALTER",
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "START",
        "USE",
        "CALL",
        "WITH",
        "EXPLAIN",
        "DESCRIBE",
        "DESC",
        "TRUNCATE",
        "GRANT",
        "REVOKE",
        "LOCK",
        "UNLOCK",
        "FLUSH",
        "KILL",
        "LOAD",
        "ANALYZE",
        "OPTIMIZE",
        "SAVEPOINT",
        "RELEASE",
        "DO",
        "HANDLER",
        "PREPARE",
        "EXECUTE",
        "DEALLOCATE",
        "RENAME",
        "CHECKSUM",
        "REPAIR",
        "XA",
    ];
    VERBS.contains(&verb)
}

// --------------------------------------------------------------- responses

fn response(conn: &mut Conn, p: &Packet, buf_len: u64, truncated: bool, fields: &mut Fields) -> Step {
    if conn.response.is_none() && conn.response_lost {
        // The bytes may start mid-packet: their "header" means nothing.
        return Step::Discard(buf_len);
    }
    // Every decision below reads at most the first 12 payload bytes (with
    // fewer, a cut packet is judged by what is here).
    if !(p.has(12) || truncated && p.has(1)) {
        return Step::NeedMore;
    }
    let first = p.payload.first().copied();
    if conn.response.is_none() {
        let maybe_greeting = p.seq == 0 && conn.pending.is_empty() && first == Some(0x0a) && p.len < 1024;
        if maybe_greeting && conn.login != Login::Authenticating {
            if !p.complete() {
                return Step::NeedMore;
            }
            if let Some(caps) = greeting_caps(p.payload) {
                conn.server_caps = caps;
                conn.login = Login::Greeted;
                conn.pending.clear();
                return Step::Discard(p.wire_len());
            }
        }
        if conn.stray_eof_possible && is_eof(p) {
            conn.stray_eof_possible = false;
            return Step::Discard(p.wire_len());
        }
        let Some(expect) = conn.pending.pop_front() else {
            // An answer to a command the capture did not see.
            return Step::Discard(p.wire_len());
        };
        conn.response = Some(Response { expect, section: Section::First });
    }
    conn.stray_eof_possible = false;
    let Some(resp) = conn.response.as_mut() else { return Step::Discard(p.wire_len()) };
    let outcome = match resp.expect.clone() {
        Expect::Login => login_packet(conn, p),
        Expect::OnePacket => match first {
            Some(0xff) => Outcome::Failed(error_code(p)),
            _ => Outcome::Done,
        },
        Expect::ResultSets => result_set_packet(conn, p),
        Expect::Rows => {
            if let Some(r) = conn.response.as_mut() {
                if r.section == Section::First {
                    r.section = Section::Rows;
                }
            }
            result_set_packet(conn, p)
        }
        Expect::Columns => match first {
            Some(0xff) => Outcome::Failed(error_code(p)),
            _ if is_eof(p) => Outcome::Done,
            _ => Outcome::More,
        },
        Expect::Prepare(sql) => prepare_packet(conn, p, &sql),
    };
    match outcome {
        Outcome::More => Step::Continue(p.wire_len()),
        Outcome::Done => {
            conn.response = None;
            Step::Complete(p.wire_len(), Meta::response(true))
        }
        Outcome::Failed(code) => {
            conn.response = None;
            if let Some(code) = code {
                fields.int(ERROR_CODE, i64::from(code));
            }
            Step::Complete(p.wire_len(), Meta::response(false))
        }
    }
}

enum Outcome {
    /// The response goes on.
    More,
    /// The response ended with this packet, successfully.
    Done,
    /// The response ended with an ERR packet (code if readable).
    Failed(Option<u16>),
}

fn login_packet(conn: &mut Conn, p: &Packet) -> Outcome {
    match p.payload.first() {
        Some(0x00) => {
            conn.login = Login::Done;
            Outcome::Done
        }
        Some(0xff) => {
            conn.login = Login::Done;
            Outcome::Failed(error_code(p))
        }
        // Auth switch request, more auth data: the client answers, then more.
        _ => Outcome::More,
    }
}

fn result_set_packet(conn: &mut Conn, p: &Packet) -> Outcome {
    let Some(resp) = conn.response.as_mut() else { return Outcome::Done };
    let first = p.payload.first().copied();
    // An ERR may end a result set at any point (column definitions start
    // with a length, never 0xff).
    if first == Some(0xff) {
        return Outcome::Failed(error_code(p));
    }
    match resp.section {
        Section::First => match first {
            Some(0x00) => end_of_result(resp, ok_status(p, 1)),
            // LOCAL INFILE: the client sends the file, then the server an OK.
            Some(0xfb) => Outcome::More,
            _ => {
                let mut cur = Cursor::new(p.payload);
                let columns = cur.lenenc().unwrap_or(0);
                // A trailing "metadata follows" byte of 0 (MariaDB's cached
                // metadata, MySQL 8's optional metadata): no definitions.
                let no_metadata = cur.u8() == Some(0);
                resp.section = if no_metadata || columns == 0 {
                    if conn.deprecate_eof == Some(true) {
                        Section::Rows
                    } else {
                        Section::ColumnsEof
                    }
                } else {
                    Section::Columns { left: columns }
                };
                Outcome::More
            }
        },
        Section::Columns { left } => {
            resp.section = if left > 1 {
                Section::Columns { left: left - 1 }
            } else if conn.deprecate_eof == Some(true) {
                Section::Rows
            } else {
                Section::ColumnsEof
            };
            Outcome::More
        }
        Section::ColumnsEof => {
            if is_eof(p) {
                conn.deprecate_eof.get_or_insert(false);
                if eof_status(p) & SERVER_STATUS_CURSOR_EXISTS != 0 {
                    // An execute that opened a cursor: rows come with STMT_FETCH.
                    return Outcome::Done;
                }
                resp.section = Section::Rows;
                Outcome::More
            } else {
                // No EOF after the columns: this is already a row (or the end).
                conn.deprecate_eof = Some(true);
                resp.section = Section::Rows;
                result_set_packet(conn, p)
            }
        }
        Section::Rows => {
            if first == Some(0xfe) && p.len < MAX_PACKET {
                let status = if p.len == 5 { eof_status(p) } else { ok_status(p, 1) };
                end_of_result(resp, status)
            } else {
                Outcome::More
            }
        }
        _ => Outcome::More,
    }
}

/// The end of one result set: another follows when the server says so.
fn end_of_result(resp: &mut Response, status: u16) -> Outcome {
    if status & SERVER_MORE_RESULTS_EXISTS != 0 {
        resp.section = Section::First;
        Outcome::More
    } else {
        Outcome::Done
    }
}

fn prepare_packet(conn: &mut Conn, p: &Packet, sql: &str) -> Outcome {
    let Some(section) = conn.response.as_ref().map(|r| r.section) else { return Outcome::Done };
    let first = p.payload.first().copied();
    let next = match section {
        Section::First => {
            if first == Some(0xff) {
                return Outcome::Failed(error_code(p));
            }
            let mut cur = Cursor::new(p.payload.get(1..).unwrap_or_default());
            let (Some(id), Some(columns), Some(params)) = (cur.u32_le(), cur.u16_le(), cur.u16_le()) else {
                return Outcome::Done;
            };
            if conn.statements.len() >= MAX_STATEMENTS && !conn.statements.contains_key(&id) {
                // Forget an arbitrary one: clients rarely keep this many.
                let victim = conn.statements.keys().next().copied();
                victim.map(|v| conn.statements.remove(&v));
            }
            conn.statements.insert(id, Box::from(sql));
            if params > 0 {
                Section::Params { left: u64::from(params), columns: u64::from(columns) }
            } else if columns > 0 {
                Section::PrepareColumns { left: u64::from(columns) }
            } else {
                return Outcome::Done;
            }
        }
        Section::Params { left, columns } if left > 1 => Section::Params { left: left - 1, columns },
        Section::Params { columns, .. } => match (conn.deprecate_eof, columns) {
            (Some(false), _) => Section::ParamsEof { columns },
            (Some(true), 0) => return Outcome::Done,
            (Some(true), _) => Section::PrepareColumns { left: columns },
            (None, 0) => return end_maybe_before_eof(conn),
            // Whether an EOF comes shows on the next packet.
            (None, _) => Section::ParamsEof { columns },
        },
        Section::ParamsEof { columns } => {
            if is_eof(p) {
                conn.deprecate_eof.get_or_insert(false);
                if columns == 0 {
                    return Outcome::Done;
                }
                Section::PrepareColumns { left: columns }
            } else {
                // No EOF: this packet is already the first column.
                conn.deprecate_eof = Some(true);
                if let Some(resp) = conn.response.as_mut() {
                    resp.section = Section::PrepareColumns { left: columns };
                }
                return prepare_packet(conn, p, sql);
            }
        }
        Section::PrepareColumns { left } if left > 1 => Section::PrepareColumns { left: left - 1 },
        Section::PrepareColumns { .. } => match conn.deprecate_eof {
            Some(false) => Section::ColumnsEof,
            Some(true) => return Outcome::Done,
            None => return end_maybe_before_eof(conn),
        },
        _ => return Outcome::Done,
    };
    if let Some(resp) = conn.response.as_mut() {
        resp.section = next;
    }
    Outcome::More
}

/// The answer is complete unless an EOF follows, which the unknown EOF mode
/// cannot tell: end here, and drop that EOF if it comes.
fn end_maybe_before_eof(conn: &mut Conn) -> Outcome {
    conn.stray_eof_possible = true;
    Outcome::Done
}

/// An old-style EOF packet (`0xfe`, warnings, status).
fn is_eof(p: &Packet) -> bool {
    p.payload.first() == Some(&0xfe) && p.len < 9
}

fn eof_status(p: &Packet) -> u16 {
    let mut cur = Cursor::new(p.payload.get(3..).unwrap_or_default());
    cur.u16_le().unwrap_or(0)
}

/// Status flags of an OK packet (also the `0xfe` OK that ends result sets
/// when EOF is deprecated); `skip` is the header byte.
fn ok_status(p: &Packet, skip: usize) -> u16 {
    let mut cur = Cursor::new(p.payload.get(skip..).unwrap_or_default());
    let _affected_rows = cur.lenenc();
    let _last_insert_id = cur.lenenc();
    cur.u16_le().unwrap_or(0)
}

fn error_code(p: &Packet) -> Option<u16> {
    Cursor::new(p.payload.get(1..)?).u16_le()
}

/// The capability flags of a server greeting (protocol 10), if it is one.
fn greeting_caps(payload: &[u8]) -> Option<u32> {
    let mut cur = Cursor::new(payload);
    if cur.u8()? != 0x0a {
        return None;
    }
    let version = cur.cstr()?;
    if version.is_empty() || !version.iter().all(|b| b.is_ascii_graphic()) || !version[0].is_ascii_digit() {
        return None;
    }
    cur.skip(4 + 8 + 1)?; // connection id, auth data part 1, filler
    let low = cur.u16_le()?;
    cur.skip(1 + 2)?; // character set, status
    let high = cur.u16_le()?;
    Some(u32::from(low) | u32::from(high) << 16)
}

wirelens_sdk::export_plugin!(Mysql);

#[cfg(test)]
mod tests;
