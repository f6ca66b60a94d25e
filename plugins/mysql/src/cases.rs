//! Test cases shared by the native tests and the daemon's wasm test. Packets
//! are built as MariaDB 10.11 and its clients send them (the layouts of the
//! MySQL client/server protocol documentation); `tests/fixtures/mysql` holds
//! streams recorded from a real server.

use wirelens_sdk::testing::{Case, TestChunk};
use wirelens_sdk::Role;

/// One packet: length, sequence number, payload.
pub fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![len as u8, (len >> 8) as u8, (len >> 16) as u8, seq];
    out.extend_from_slice(payload);
    out
}

/// Packets with consecutive sequence numbers from `seq`, end to end.
pub fn packets(seq: u8, payloads: &[&[u8]]) -> Vec<u8> {
    payloads.iter().enumerate().flat_map(|(i, p)| packet(seq + i as u8, p)).collect()
}

const DEPRECATE_EOF: u32 = 1 << 24;
/// Capabilities of a MariaDB 10.11 server, without CLIENT_DEPRECATE_EOF.
const SERVER_CAPS: u32 = 0xf7fe | 0x81bf << 16 & !DEPRECATE_EOF;

pub fn greeting(caps: u32) -> Vec<u8> {
    let mut p = vec![0x0a];
    p.extend_from_slice(b"5.5.5-10.11.14-MariaDB-0+deb12u2\0");
    p.extend_from_slice(&42u32.to_le_bytes()); // connection id
    p.extend_from_slice(b"abcdefgh\0"); // auth data part 1, filler
    p.extend_from_slice(&(caps as u16).to_le_bytes());
    p.push(45); // character set
    p.extend_from_slice(&2u16.to_le_bytes()); // status: autocommit
    p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
    p.push(21);
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&[0; 4]); // MariaDB extended capabilities
    p.extend_from_slice(b"ijklmnopqrst\0mysql_native_password\0");
    packet(0, &p)
}

pub fn handshake_response(caps: u32, user: &str) -> Vec<u8> {
    let mut p = caps.to_le_bytes().to_vec();
    p.extend_from_slice(&16_777_216u32.to_le_bytes());
    p.push(45);
    p.extend_from_slice(&[0; 23]);
    p.extend_from_slice(user.as_bytes());
    p.push(0);
    p.push(20);
    p.extend_from_slice(&[7; 20]);
    p.extend_from_slice(b"mysql_native_password\0");
    packet(1, &p)
}

pub fn ok(seq: u8, status: u16) -> Vec<u8> {
    let mut p = vec![0x00, 0, 0];
    p.extend_from_slice(&status.to_le_bytes());
    p.extend_from_slice(&[0, 0]);
    packet(seq, &p)
}

pub fn err(seq: u8, code: u16, state: &str, message: &str) -> Vec<u8> {
    let mut p = vec![0xff];
    p.extend_from_slice(&code.to_le_bytes());
    p.push(b'#');
    p.extend_from_slice(state.as_bytes());
    p.extend_from_slice(message.as_bytes());
    packet(seq, &p)
}

pub fn eof_payload(status: u16) -> Vec<u8> {
    let mut p = vec![0xfe, 0, 0];
    p.extend_from_slice(&status.to_le_bytes());
    p
}

/// The `0xfe` OK that ends a result set when EOF is deprecated.
pub fn ok_eof_payload(status: u16) -> Vec<u8> {
    let mut p = vec![0xfe, 0, 0];
    p.extend_from_slice(&status.to_le_bytes());
    p.extend_from_slice(&[0, 0]);
    p
}

pub fn column(name: &str) -> Vec<u8> {
    let mut p = Vec::new();
    for part in ["def", "test", "t", "t", name, name] {
        p.push(part.len() as u8);
        p.extend_from_slice(part.as_bytes());
    }
    p.extend_from_slice(&[0x0c, 0x3f, 0, 11, 0, 0, 0, 3, 0, 0, 0, 0, 0]);
    p
}

pub fn text_row(values: &[&str]) -> Vec<u8> {
    let mut p = Vec::new();
    for v in values {
        p.push(v.len() as u8);
        p.extend_from_slice(v.as_bytes());
    }
    p
}

pub fn command(code: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![code];
    p.extend_from_slice(body);
    packet(0, &p)
}

pub fn query(sql: &str) -> Vec<u8> {
    command(0x03, sql.as_bytes())
}

/// A two-column, two-row text result set, with EOF packets or without.
pub fn result_set(eof: bool, end_status: u16) -> Vec<u8> {
    let (c1, c2) = (column("id"), column("name"));
    let (r1, r2) = (text_row(&["1", "ann"]), text_row(&["2", "bob"]));
    let end = if eof { eof_payload(end_status) } else { ok_eof_payload(end_status) };
    let eof_mid = eof_payload(0x0002);
    let mut parts: Vec<&[u8]> = vec![&[2], &c1, &c2];
    if eof {
        parts.push(&eof_mid);
    }
    parts.extend([&r1[..], &r2, &end]);
    packets(1, &parts)
}

fn req(ts: u64, size: usize, command: &str, sql: Option<&str>) -> String {
    let sql = sql.map(|s| format!(" sql={s}")).unwrap_or_default();
    format!("1 req out {ts}-{ts} size={size} ok command={command}{sql}")
}

fn resp(start: u64, end: u64, size: usize, error: Option<u16>) -> String {
    match error {
        None => format!("1 resp in {start}-{end} size={size} ok"),
        Some(code) => format!("1 resp in {start}-{end} size={size} fail error_code={code}"),
    }
}

pub fn all() -> Vec<Case> {
    let client_caps = 0x000a_a685 | 0x0008_0000;
    let login = [greeting(SERVER_CAPS), handshake_response(client_caps, "app"), ok(2, 2)];
    let select = query("SELECT id, name FROM t WHERE id = 5 OR name = 'bob'");
    let rows_eof = result_set(true, 0x0022);

    let caps_new = SERVER_CAPS | DEPRECATE_EOF;
    let missing = query("select * from missing");
    let missing_err = err(1, 1146, "42S02", "Table 'test.missing' doesn't exist");
    let rows_new = result_set(false, 0x0002);

    let prepare = command(0x16, b"SELECT name FROM t WHERE id = ?");
    let (param, col) = (column("?"), column("name"));
    let prepare_ok_head = [0x00, 7, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0];
    let eof = eof_payload(2);
    let prepare_ok = packets(1, &[&prepare_ok_head, &param, &eof, &col, &eof]);
    let execute = command(0x17, &[7, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 0, 5, 0, 0, 0, 0, 0, 0, 0]);
    let binary_row = [0x00, 0x00, 3, b'b', b'o', b'b'];
    let executed = packets(1, &[&[1], &col, &eof, &binary_row, &eof]);
    let close = command(0x19, &[7, 0, 0, 0]);
    let cursor_eof = eof_payload(0x0002 | 0x0040);
    let cursor_opened = packets(1, &[&[1], &col, &cursor_eof]);
    let fetch = command(0x1c, &[7, 0, 0, 0, 10, 0, 0, 0]);
    let fetched = packets(1, &[&binary_row, &binary_row, &eof_payload(0x0002 | 0x0080)]);

    let call = query("CALL two_results()");
    let first_set = result_set(true, 0x0002 | 0x0008);
    let final_ok = ok(7, 0x0002);

    let auth_switch = packet(2, b"\xfemysql_native_password\0abcdefghijklmnopqrst\0");
    let auth_answer = packet(3, &[9; 20]);
    let denied = err(4, 1045, "28000", "Access denied for user 'app'@'localhost' (using password: YES)");

    let long_sql = format!("INSERT INTO blobs VALUES ('{}')", "x".repeat(20_000));
    let long_query = query(&long_sql);

    // After a switch to TLS the handshake response is packet 2 and carries
    // CLIENT_SSL; the greeting went in the clear, on the socket.
    let mut tls_login = handshake_response(client_caps | DEPRECATE_EOF | 0x800, "app");
    tls_login[3] = 2;

    vec![
        Case {
            name: "TLS plaintext: the handshake response after the switch, then an error and a result set ended by OK",
            chunks: vec![
                TestChunk::egress(1, &tls_login),
                TestChunk::ingress(2, ok(3, 2)),
                TestChunk::egress(3, &missing),
                TestChunk::ingress(4, &missing_err),
                TestChunk::egress(5, &select),
                TestChunk::ingress(6, &rows_new),
            ],
            close: vec![],
            expect: vec![
                req(1, tls_login.len(), "CONNECT", None),
                resp(2, 2, 11, None),
                req(3, missing.len(), "QUERY", Some("select * from missing")),
                resp(4, 4, missing_err.len(), Some(1146)),
                req(5, select.len(), "QUERY", Some("SELECT id, name FROM t WHERE id = ? OR name = ?")),
                resp(6, 6, rows_new.len(), None),
            ],
        },
        Case {
            name: "login, then a query with a result set and EOF packets",
            chunks: vec![
                TestChunk::ingress(1, &login[0]),
                TestChunk::egress(2, &login[1]),
                TestChunk::ingress(3, &login[2]),
                TestChunk::egress(4, &select),
                TestChunk::ingress(5, &rows_eof[..30]),
                TestChunk::ingress(6, &rows_eof[30..]),
            ],
            close: vec![],
            expect: vec![
                req(2, login[1].len(), "CONNECT", None),
                resp(3, 3, login[2].len(), None),
                req(4, select.len(), "QUERY", Some("SELECT id, name FROM t WHERE id = ? OR name = ?")),
                resp(5, 6, rows_eof.len(), None),
            ],
        },
        Case {
            name: "deprecated EOF: an error, then a result set ended by an OK",
            chunks: vec![
                TestChunk::ingress(1, greeting(caps_new)),
                TestChunk::egress(2, handshake_response(client_caps | DEPRECATE_EOF, "app")),
                TestChunk::ingress(3, ok(2, 2)),
                TestChunk::egress(4, &missing),
                TestChunk::ingress(5, &missing_err),
                TestChunk::egress(6, &select),
                TestChunk::ingress(7, &rows_new),
            ],
            close: vec![],
            expect: vec![
                req(2, handshake_response(0, "app").len(), "CONNECT", None),
                resp(3, 3, 11, None),
                req(4, missing.len(), "QUERY", Some("select * from missing")),
                resp(5, 5, missing_err.len(), Some(1146)),
                req(6, select.len(), "QUERY", Some("SELECT id, name FROM t WHERE id = ? OR name = ?")),
                resp(7, 7, rows_new.len(), None),
            ],
        },
        Case {
            name: "prepared statement: prepare, execute (binary rows), close",
            chunks: vec![
                TestChunk::ingress(1, &login[0]),
                TestChunk::egress(2, &login[1]),
                TestChunk::ingress(3, &login[2]),
                TestChunk::egress(4, &prepare),
                TestChunk::ingress(5, &prepare_ok),
                TestChunk::egress(6, &execute),
                TestChunk::ingress(7, &executed),
                TestChunk::egress(8, &close),
            ],
            close: vec![],
            expect: vec![
                req(2, login[1].len(), "CONNECT", None),
                resp(3, 3, login[2].len(), None),
                req(4, prepare.len(), "STMT_PREPARE", Some("SELECT name FROM t WHERE id = ?")),
                resp(5, 5, prepare_ok.len(), None),
                req(6, execute.len(), "STMT_EXECUTE", Some("SELECT name FROM t WHERE id = ?")),
                resp(7, 7, executed.len(), None),
                format!(
                    "1 oneway out 8-8 size={} ok command=STMT_CLOSE sql=SELECT name FROM t WHERE id = ?",
                    close.len()
                ),
            ],
        },
        Case {
            name: "several result sets (a procedure), ping and quit",
            chunks: vec![
                TestChunk::egress(1, &call),
                TestChunk::ingress(2, &first_set),
                TestChunk::ingress(3, &final_ok),
                TestChunk::egress(4, command(0x0e, b"")),
                TestChunk::ingress(5, ok(1, 2)),
                TestChunk::egress(6, command(0x01, b"")),
            ],
            close: vec![],
            expect: vec![
                req(1, call.len(), "QUERY", Some("CALL two_results()")),
                resp(2, 3, first_set.len() + final_ok.len(), None),
                req(4, 5, "PING", None),
                resp(5, 5, 11, None),
                "1 oneway out 6-6 size=5 ok command=QUIT".into(),
            ],
        },
        Case {
            name: "auth switch then access denied",
            chunks: vec![
                TestChunk::ingress(1, &login[0]),
                TestChunk::egress(2, &login[1]),
                TestChunk::ingress(3, &auth_switch),
                TestChunk::egress(4, &auth_answer),
                TestChunk::ingress(5, &denied),
            ],
            close: vec![],
            expect: vec![
                req(2, login[1].len(), "CONNECT", None),
                resp(3, 5, auth_switch.len() + denied.len(), Some(1045)),
            ],
        },
        Case {
            name: "server side: requests arrive, responses leave",
            chunks: vec![
                TestChunk::egress(1, &login[0]).role(Role::Server),
                TestChunk::ingress(2, &login[1]).role(Role::Server),
                TestChunk::egress(3, &login[2]).role(Role::Server),
                TestChunk::ingress(4, &select).role(Role::Server),
                TestChunk::egress(5, &rows_eof).role(Role::Server),
            ],
            close: vec![],
            expect: vec![
                format!("1 req in 2-2 size={} ok command=CONNECT", login[1].len()),
                format!("1 resp out 3-3 size={} ok", login[2].len()),
                format!(
                    "1 req in 4-4 size={} ok command=QUERY sql=SELECT id, name FROM t WHERE id = ? OR name = ?",
                    select.len()
                ),
                format!("1 resp out 5-5 size={} ok", rows_eof.len()),
            ],
        },
        Case {
            // The text is read up to 2 KiB, inside the literal: it stays open.
            name: "a long statement cut by the capture, seen mid-connection",
            chunks: vec![
                TestChunk::egress(1, &long_query[..4096]).truncated(long_query.len() as u64),
                TestChunk::ingress(2, ok(1, 2)),
                TestChunk::egress(3, &select),
                TestChunk::ingress(4, &rows_eof),
                TestChunk::egress(5, &select),
                TestChunk::ingress(6, &rows_eof),
            ],
            close: vec![],
            expect: vec![
                req(1, long_query.len(), "QUERY", Some("INSERT INTO blobs VALUES (?")),
                resp(2, 2, 11, None),
                req(3, select.len(), "QUERY", Some("SELECT id, name FROM t WHERE id = ? OR name = ?")),
                resp(4, 4, rows_eof.len(), None),
                req(5, select.len(), "QUERY", Some("SELECT id, name FROM t WHERE id = ? OR name = ?")),
                resp(6, 6, rows_eof.len(), None),
            ],
        },
        Case {
            name: "an execute that opens a cursor, then fetches",
            chunks: vec![
                TestChunk::ingress(1, &login[0]),
                TestChunk::egress(2, &login[1]),
                TestChunk::ingress(3, &login[2]),
                TestChunk::egress(4, &execute),
                // Column count, definition, EOF with SERVER_STATUS_CURSOR_EXISTS.
                TestChunk::ingress(5, &cursor_opened),
                TestChunk::egress(6, &fetch),
                TestChunk::ingress(7, &fetched),
                TestChunk::egress(8, command(0x0e, b"")),
                TestChunk::ingress(9, ok(1, 2)),
            ],
            close: vec![],
            expect: vec![
                req(2, login[1].len(), "CONNECT", None),
                resp(3, 3, login[2].len(), None),
                req(4, execute.len(), "STMT_EXECUTE", None),
                resp(5, 5, cursor_opened.len(), None),
                req(6, fetch.len(), "STMT_FETCH", None),
                resp(7, 7, fetched.len(), None),
                req(8, 5, "PING", None),
                resp(9, 9, 11, None),
            ],
        },
        Case {
            name: "pipelined commands answered in order",
            chunks: vec![
                TestChunk::egress(1, [query("SET NAMES utf8mb4"), command(0x0e, b""), missing.clone()].concat()),
                TestChunk::ingress(2, [ok(1, 2), ok(1, 2), missing_err.clone()].concat()),
            ],
            close: vec![],
            expect: vec![
                req(1, 22, "QUERY", Some("SET NAMES utf8mb4")),
                req(1, 5, "PING", None),
                req(1, missing.len(), "QUERY", Some("select * from missing")),
                resp(2, 2, 11, None),
                resp(2, 2, 11, None),
                resp(2, 2, missing_err.len(), Some(1146)),
            ],
        },
    ]
}
