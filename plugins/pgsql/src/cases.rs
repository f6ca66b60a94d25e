//! Test cases shared by the native tests and the daemon's wasm test. The
//! byte strings are built as libpq (psql, `PQexecParams`, `PQprepare`) and a
//! PostgreSQL 15 server send them; the helpers below encode each message.

use wirelens_sdk::testing::{Case, TestChunk};
use wirelens_sdk::{Direction, Role};

// ---------------------------------------------------------------------------
// Message encoding

/// A typed message: type byte, length (counting itself), body.
pub fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn cstr(s: &str) -> Vec<u8> {
    let mut out = s.as_bytes().to_vec();
    out.push(0);
    out
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// An untyped startup-phase packet: length, code, payload.
fn untyped(code: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32 + 8).to_be_bytes().to_vec();
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

pub fn ssl_request() -> Vec<u8> {
    untyped(80_877_103, &[])
}

/// What psql 15 sends: user, database, application name, encoding.
pub fn startup_message() -> Vec<u8> {
    let mut params = Vec::new();
    for s in ["user", "app", "database", "shop", "application_name", "psql", "client_encoding", "UTF8", ""] {
        params.extend(cstr(s));
    }
    untyped(196_608, &params)
}

pub fn query(sql: &str) -> Vec<u8> {
    msg(b'Q', &cstr(sql))
}

/// Parse: statement name, text, parameter type OIDs.
pub fn parse_msg(name: &str, sql: &str, types: &[u32]) -> Vec<u8> {
    let mut body = cat(&[&cstr(name), &cstr(sql), &(types.len() as u16).to_be_bytes()]);
    for t in types {
        body.extend_from_slice(&t.to_be_bytes());
    }
    msg(b'P', &body)
}

/// Bind as libpq sends it: no parameter formats (all text), text values,
/// one result format (text).
fn bind(statement: &str, values: &[&str]) -> Vec<u8> {
    let mut body = cat(&[&cstr(""), &cstr(statement), &0u16.to_be_bytes(), &(values.len() as u16).to_be_bytes()]);
    for v in values {
        body.extend_from_slice(&(v.len() as u32).to_be_bytes());
        body.extend_from_slice(v.as_bytes());
    }
    body.extend_from_slice(&[0, 1, 0, 0]);
    msg(b'B', &body)
}

fn describe_portal() -> Vec<u8> {
    msg(b'D', &cstr("P"))
}

fn execute() -> Vec<u8> {
    msg(b'E', &cat(&[&cstr(""), &0u32.to_be_bytes()]))
}

fn sync() -> Vec<u8> {
    msg(b'S', &[])
}

/// `PQexecParams`: Parse, Bind, Describe portal, Execute, Sync.
pub fn exec_params(sql: &str, types: &[u32], values: &[&str]) -> Vec<u8> {
    cat(&[&parse_msg("", sql, types), &bind("", values), &describe_portal(), &execute(), &sync()])
}

/// `PQexecPrepared`: Bind, Describe portal, Execute, Sync.
fn exec_prepared(statement: &str, values: &[&str]) -> Vec<u8> {
    cat(&[&bind(statement, values), &describe_portal(), &execute(), &sync()])
}

pub fn auth(kind: u32, payload: &[u8]) -> Vec<u8> {
    msg(b'R', &cat(&[&kind.to_be_bytes(), payload]))
}

fn parameter_status(name: &str, value: &str) -> Vec<u8> {
    msg(b'S', &cat(&[&cstr(name), &cstr(value)]))
}

pub fn ready(status: u8) -> Vec<u8> {
    msg(b'Z', &[status])
}

/// RowDescription for text columns of the given type OIDs.
pub fn row_description(columns: &[(&str, u32)]) -> Vec<u8> {
    let mut body = (columns.len() as u16).to_be_bytes().to_vec();
    for (i, (name, oid)) in columns.iter().enumerate() {
        body.extend(cstr(name));
        body.extend_from_slice(&16_384u32.to_be_bytes()); // table OID
        body.extend_from_slice(&(i as u16 + 1).to_be_bytes()); // column number
        body.extend_from_slice(&oid.to_be_bytes());
        let typlen: i16 = if *oid == 25 { -1 } else { 4 };
        body.extend_from_slice(&typlen.to_be_bytes());
        body.extend_from_slice(&(-1i32).to_be_bytes()); // type modifier
        body.extend_from_slice(&0u16.to_be_bytes()); // text format
    }
    msg(b'T', &body)
}

pub fn data_row(values: &[&str]) -> Vec<u8> {
    let mut body = (values.len() as u16).to_be_bytes().to_vec();
    for v in values {
        body.extend_from_slice(&(v.len() as u32).to_be_bytes());
        body.extend_from_slice(v.as_bytes());
    }
    msg(b'D', &body)
}

pub fn command_complete(tag: &str) -> Vec<u8> {
    msg(b'C', &cstr(tag))
}

/// ErrorResponse with the fields PostgreSQL 15 sends; `source` is the
/// server's file, line and function.
pub fn error(severity: &str, code: &str, message: &str, source: [&str; 3]) -> Vec<u8> {
    let mut body = Vec::new();
    let [file, line, routine] = source;
    for (kind, value) in
        [(b'S', severity), (b'V', severity), (b'C', code), (b'M', message), (b'F', file), (b'L', line), (b'R', routine)]
    {
        body.push(kind);
        body.extend(cstr(value));
    }
    body.push(0);
    msg(b'E', &body)
}

const NO_RELATION: [&str; 3] = ["parse_relation.c", "1392", "parserOpenTable"];

/// The server's answer to a trusted StartupMessage.
fn startup_ok() -> Vec<u8> {
    cat(&[
        &auth(0, &[]),
        &parameter_status("application_name", "psql"),
        &parameter_status("client_encoding", "UTF8"),
        &parameter_status("DateStyle", "ISO, MDY"),
        &parameter_status("integer_datetimes", "on"),
        &parameter_status("server_encoding", "UTF8"),
        &parameter_status("server_version", "15.4"),
        &parameter_status("standard_conforming_strings", "on"),
        &parameter_status("TimeZone", "UTC"),
        &msg(b'K', &[0, 0, 0x1e, 0x61, 0x5b, 0x1c, 0x2f, 0x0d]),
        &ready(b'I'),
    ])
}

pub fn users_rows() -> Vec<u8> {
    cat(&[
        &row_description(&[("id", 23), ("name", 25)]),
        &data_row(&["1", "ada"]),
        &data_row(&["2", "grace"]),
        &command_complete("SELECT 2"),
        &ready(b'I'),
    ])
}

/// Client messages of several kinds, end to end (for the split test).
pub fn client_stream() -> Vec<u8> {
    cat(&[
        &startup_message(),
        &msg(b'p', &cstr("secret")),
        &query("SELECT id, name FROM users WHERE id = 1"),
        // Longer than the part of a body the parser looks at.
        &query(&format!("SELECT '{}' AS pad", "p".repeat(3000))),
        &exec_params("SELECT name FROM users WHERE id = $1", &[23], &["7"]),
        &cat(&[&parse_msg("s1", "UPDATE users SET name = $1 WHERE id = $2", &[]), &sync()]),
        &exec_prepared("s1", &["bob", "3"]),
        &query("COPY users (id, name) FROM STDIN"),
        &msg(b'd', b"4\tlin\n"),
        &msg(b'c', &[]),
        &msg(b'X', &[]),
    ])
}

/// Server messages of several kinds, end to end (for the split test).
pub fn server_stream() -> Vec<u8> {
    cat(&[
        &auth(5, b"\x01\x02\x03\x04"),
        &startup_ok(),
        &msg(b'N', &cat(&[b"SNOTICE\0", b"C00000\0", b"Mhello\0", b"\0"])),
        &users_rows(),
        &cat(&[&error("ERROR", "42P01", "relation \"nope\" does not exist", NO_RELATION), &ready(b'I')]),
        &cat(&[&msg(b'1', &[]), &msg(b'2', &[]), &row_description(&[("name", 25)]), &data_row(&["ada"])]),
        &cat(&[&command_complete("SELECT 1"), &ready(b'I')]),
        &parameter_status("TimeZone", "Europe/Paris"),
        &cat(&[&msg(b'G', &[0, 0, 2, 0, 0, 0, 0]), &command_complete("COPY 1"), &ready(b'I')]),
        &cat(&[&msg(b'H', &[0, 0, 1, 0, 0]), &msg(b'd', b"1\n"), &msg(b'c', &[])]),
        &cat(&[&command_complete("COPY 1"), &ready(b'I')]),
        &error(
            "FATAL",
            "57P01",
            "terminating connection due to administrator command",
            ["postgres.c", "3204", "ProcessInterrupts"],
        ),
    ])
}

// ---------------------------------------------------------------------------
// Expected lines

fn line(kind: &str, dir: &str, ts: u64, size: usize, ok: bool, fields: &[(&str, &str)]) -> String {
    let mut out = format!("1 {kind} {dir} {ts}-{ts} size={size} {}", if ok { "ok" } else { "fail" });
    for (name, value) in fields {
        out.push_str(&format!(" {name}={value}"));
    }
    out
}

fn req(ts: u64, bytes: &[u8], command: &str, sql: Option<&str>) -> String {
    let mut fields = vec![("command", command)];
    fields.extend(sql.map(|s| ("sql", s)));
    line("req", "out", ts, bytes.len(), true, &fields)
}

fn resp(ts: u64, bytes: &[u8], error_code: Option<&str>) -> String {
    let fields: Vec<_> = error_code.map(|c| ("error_code", c)).into_iter().collect();
    line("resp", "in", ts, bytes.len(), error_code.is_none(), &fields)
}

pub fn all() -> Vec<Case> {
    let drop = query("drop table if exists pgbench_history");
    let notice_reply = cat(&[
        &msg(
            b'N',
            &cat(&[
                b"SNOTICE\0",
                b"VNOTICE\0",
                b"C00000\0",
                b"Mtable \"pgbench_history\" does not exist, skipping\0",
                b"\0",
            ]),
        ),
        &command_complete("DROP TABLE"),
        &ready(b'I'),
    ]);
    let mut cases = vec![Case {
        // What pgbench -i's first statements get: the answer begins with a
        // notice, which is part of it (not an asynchronous message).
        name: "a response that begins with a notice",
        chunks: vec![TestChunk::egress(1, &drop), TestChunk::ingress(2, &notice_reply)],
        close: vec![],
        expect: vec![
            req(1, &drop, "QUERY", Some("drop table if exists pgbench_history")),
            resp(2, &notice_reply, None),
        ],
    }];
    cases.extend(more_cases());
    cases
}

fn more_cases() -> Vec<Case> {
    let startup = startup_message();
    let password = msg(b'p', &cstr("md5a3556571e93b0d20722ba62be61e8c2d"));
    let md5_startup = cat(&[&auth(5, b"\x5a\x1b\x9c\x02"), &startup_ok()]);

    let select = query("SELECT id, name FROM users WHERE id = 1");
    let rows = users_rows();

    let missing = query("SELECT * FROM nope");
    let missing_reply = cat(&[&error("ERROR", "42P01", "relation \"nope\" does not exist", NO_RELATION), &ready(b'I')]);

    let params = exec_params("SELECT name FROM users WHERE id = $1 AND active = true", &[23], &["42"]);
    let params_reply = cat(&[
        &msg(b'1', &[]),
        &msg(b'2', &[]),
        &row_description(&[("name", 25)]),
        &data_row(&["ada"]),
        &command_complete("SELECT 1"),
        &ready(b'I'),
    ]);

    let prepare = cat(&[&parse_msg("get_user", "SELECT * FROM users WHERE id = $1", &[]), &sync()]);
    let prepared = cat(&[&msg(b'1', &[]), &ready(b'I')]);
    let reuse = exec_prepared("get_user", &["5"]);
    let deallocate = cat(&[&msg(b'C', &cat(&[b"S", &cstr("get_user")])), &sync()]);
    let closed = cat(&[&msg(b'3', &[]), &ready(b'I')]);

    let insert = exec_params("INSERT INTO t (a, b) VALUES ($1, $2)", &[], &["1", "x"]);
    let duplicate = exec_params("INSERT INTO t (a, b) VALUES ($1, $2)", &[], &["1", "y"]);
    let inserted =
        cat(&[&msg(b'1', &[]), &msg(b'2', &[]), &msg(b'n', &[]), &command_complete("INSERT 0 1"), &ready(b'I')]);
    let unique = cat(&[
        &msg(b'1', &[]),
        &msg(b'2', &[]),
        &msg(b'n', &[]),
        &error(
            "ERROR",
            "23505",
            "duplicate key value violates unique constraint \"t_pkey\"",
            ["nbtinsert.c", "664", "_bt_check_unique"],
        ),
        &ready(b'I'),
    ]);

    let refused = error(
        "FATAL",
        "28000",
        "no pg_hba.conf entry for host \"10.0.0.7\", user \"app\", database \"shop\", no encryption",
        ["auth.c", "543", "ClientAuthentication"],
    );
    let call = msg(b'F', &[0, 0, 0x04, 0xd6, 0, 0, 0, 0, 0, 1]); // function 1238, no arguments, binary result
    let called = cat(&[&msg(b'V', &[0, 0, 0, 1, b'7']), &ready(b'I')]);

    let copy = query("COPY users (id, name) FROM STDIN");
    let copy_data = cat(&[&msg(b'd', b"3\tlin\n"), &msg(b'd', b"4\tmay\n"), &msg(b'c', &[])]);
    let copy_in = msg(b'G', &[0, 0, 2, 0, 0, 0, 0]);
    let copy_done = cat(&[&command_complete("COPY 2"), &ready(b'I')]);

    // psycopg-style COPY through the extended protocol: libpq sends Sync
    // after Execute and again after CopyDone; the server answers once.
    let copy_batch = exec_params("COPY users (id, name) FROM STDIN", &[], &[]);
    let copy_end = cat(&[&copy_data, &sync()]);
    let copy_start = cat(&[&msg(b'1', &[]), &msg(b'2', &[]), &msg(b'n', &[]), &copy_in]);

    let terminate = msg(b'X', &[]);

    let begin = query("BEGIN");
    let begun = cat(&[&command_complete("BEGIN"), &ready(b'T')]);

    let big_text = format!("INSERT INTO logs (body) VALUES ('{}')", "x".repeat(100_000));
    let big = query(&big_text);
    let inserted_log = cat(&[&command_complete("INSERT 0 1"), &ready(b'I')]);
    // A large bound value: the capture cuts the Bind, and with it the
    // Describe, Execute and Sync that followed in the same write.
    let big_value = "v".repeat(50_000);
    let big_batch = exec_params("INSERT INTO blobs (data) VALUES ($1)", &[], &[&big_value]);

    let server = |ts: u64, dir: Direction, bytes: &[u8]| TestChunk::egress(ts, bytes).direction(dir).role(Role::Server);

    vec![
        Case {
            name: "SSLRequest refused, then trust authentication",
            chunks: vec![
                TestChunk::egress(1, ssl_request()),
                TestChunk::ingress(2, "N"),
                TestChunk::egress(3, &startup),
                TestChunk::ingress(4, startup_ok()),
            ],
            close: vec![],
            expect: vec![req(3, &startup, "STARTUP", None), resp(4, &startup_ok(), None)],
        },
        Case {
            name: "MD5 password exchange is part of the startup",
            chunks: vec![
                TestChunk::egress(1, &startup),
                TestChunk::ingress(2, &md5_startup[..13]),
                TestChunk::egress(3, &password),
                TestChunk::ingress(4, &md5_startup[13..]),
            ],
            close: vec![],
            expect: vec![req(1, &startup, "STARTUP", None), format!("1 resp in 2-4 size={} ok", md5_startup.len())],
        },
        Case {
            name: "startup refused by pg_hba.conf: no ReadyForQuery follows",
            chunks: vec![TestChunk::egress(1, &startup), TestChunk::ingress(2, &refused)],
            close: vec![1],
            expect: vec![req(1, &startup, "STARTUP", None), resp(2, &refused, Some("28000"))],
        },
        Case {
            name: "function call",
            chunks: vec![TestChunk::egress(1, &call), TestChunk::ingress(2, &called)],
            close: vec![],
            expect: vec![req(1, &call, "FUNCTION_CALL", None), resp(2, &called, None)],
        },
        Case {
            name: "simple query returning rows",
            chunks: vec![TestChunk::egress(1, &select), TestChunk::ingress(2, &rows)],
            close: vec![],
            expect: vec![
                req(1, &select, "QUERY", Some("SELECT id, name FROM users WHERE id = ?")),
                resp(2, &rows, None),
            ],
        },
        Case {
            name: "query error carries its SQLSTATE",
            chunks: vec![TestChunk::egress(1, &missing), TestChunk::ingress(2, &missing_reply)],
            close: vec![],
            expect: vec![req(1, &missing, "QUERY", Some("SELECT * FROM nope")), resp(2, &missing_reply, Some("42P01"))],
        },
        Case {
            name: "extended protocol: Parse, Bind, Describe, Execute, Sync",
            chunks: vec![TestChunk::egress(1, &params), TestChunk::ingress(2, &params_reply)],
            close: vec![],
            expect: vec![
                req(1, &params, "EXECUTE", Some("SELECT name FROM users WHERE id = $1 AND active = true")),
                resp(2, &params_reply, None),
            ],
        },
        Case {
            name: "named prepared statement reused, then closed",
            chunks: vec![
                TestChunk::egress(1, &prepare),
                TestChunk::ingress(2, &prepared),
                TestChunk::egress(3, &reuse),
                TestChunk::ingress(4, &rows),
                TestChunk::egress(5, &deallocate),
                TestChunk::ingress(6, &closed),
                TestChunk::egress(7, &reuse),
                TestChunk::ingress(8, &rows),
            ],
            close: vec![],
            expect: vec![
                req(1, &prepare, "PREPARE", Some("SELECT * FROM users WHERE id = $1")),
                resp(2, &prepared, None),
                req(3, &reuse, "EXECUTE", Some("SELECT * FROM users WHERE id = $1")),
                resp(4, &rows, None),
                req(5, &deallocate, "CLOSE", Some("SELECT * FROM users WHERE id = $1")),
                resp(6, &closed, None),
                // Closed: its text is no longer known.
                req(7, &reuse, "EXECUTE", None),
                resp(8, &rows, None),
            ],
        },
        Case {
            name: "two pipelined batches before their responses",
            chunks: vec![
                TestChunk::egress(1, cat(&[&insert, &duplicate])),
                TestChunk::ingress(2, cat(&[&inserted, &unique])),
            ],
            close: vec![],
            expect: vec![
                req(1, &insert, "EXECUTE", Some("INSERT INTO t (a, b) VALUES ($1, $2)")),
                req(1, &duplicate, "EXECUTE", Some("INSERT INTO t (a, b) VALUES ($1, $2)")),
                resp(2, &inserted, None),
                resp(2, &unique, Some("23505")),
            ],
        },
        Case {
            name: "COPY FROM STDIN: the data is no request",
            chunks: vec![
                TestChunk::egress(1, &copy),
                TestChunk::ingress(2, &copy_in),
                TestChunk::egress(3, &copy_data),
                TestChunk::ingress(4, &copy_done),
            ],
            close: vec![],
            expect: vec![
                req(1, &copy, "QUERY", Some("COPY users (id, name) FROM STDIN")),
                format!("1 resp in 2-4 size={} ok", copy_in.len() + copy_done.len()),
            ],
        },
        Case {
            name: "COPY FROM STDIN through the extended protocol",
            chunks: vec![
                TestChunk::egress(1, &copy_batch),
                TestChunk::ingress(2, &copy_start),
                TestChunk::egress(3, &copy_end),
                TestChunk::ingress(4, &copy_done),
                TestChunk::egress(5, &select),
                TestChunk::ingress(6, &rows),
            ],
            close: vec![],
            expect: vec![
                req(1, &copy_batch, "EXECUTE", Some("COPY users (id, name) FROM STDIN")),
                format!("1 resp in 2-4 size={} ok", copy_start.len() + copy_done.len()),
                req(5, &select, "QUERY", Some("SELECT id, name FROM users WHERE id = ?")),
                resp(6, &rows, None),
            ],
        },
        Case {
            name: "an asynchronous ParameterStatus is dropped, Terminate is one-way",
            chunks: vec![
                TestChunk::egress(1, &begin),
                TestChunk::ingress(2, &begun),
                TestChunk::ingress(3, parameter_status("TimeZone", "UTC")),
                TestChunk::egress(4, &terminate),
            ],
            close: vec![1],
            expect: vec![
                req(1, &begin, "QUERY", Some("BEGIN")),
                resp(2, &begun, None),
                line("oneway", "out", 4, terminate.len(), true, &[("command", "TERMINATE")]),
            ],
        },
        Case {
            name: "server role: requests come in",
            chunks: vec![
                server(1, Direction::Ingress, &select),
                server(2, Direction::Egress, &rows),
                server(3, Direction::Ingress, &missing),
                server(4, Direction::Egress, &missing_reply),
            ],
            close: vec![],
            expect: vec![
                line(
                    "req",
                    "in",
                    1,
                    select.len(),
                    true,
                    &[("command", "QUERY"), ("sql", "SELECT id, name FROM users WHERE id = ?")],
                ),
                line("resp", "out", 2, rows.len(), true, &[]),
                line("req", "in", 3, missing.len(), true, &[("command", "QUERY"), ("sql", "SELECT * FROM nope")]),
                line("resp", "out", 4, missing_reply.len(), false, &[("error_code", "42P01")]),
            ],
        },
        Case {
            name: "a large query cut by the capture",
            chunks: vec![
                TestChunk::egress(1, &big[..4096]).truncated(big.len() as u64),
                TestChunk::ingress(2, &inserted_log),
                TestChunk::egress(3, &select),
            ],
            close: vec![],
            expect: vec![
                req(1, &big, "QUERY", Some("INSERT INTO logs (body) VALUES (?")),
                resp(2, &inserted_log, None),
                req(3, &select, "QUERY", Some("SELECT id, name FROM users WHERE id = ?")),
            ],
        },
        Case {
            name: "a batch cut by the capture before its Sync is still a request",
            chunks: vec![
                TestChunk::egress(1, &big_batch[..4096]).truncated(big_batch.len() as u64),
                TestChunk::ingress(2, &inserted),
                TestChunk::egress(3, &select),
                TestChunk::ingress(4, &rows),
            ],
            close: vec![],
            expect: vec![
                // Its Sync was lost; what the batch held so far names it.
                format!(
                    "1 req out 1-1 size={} ok command=PREPARE sql=INSERT INTO blobs (data) VALUES ($1)",
                    big_batch.len()
                ),
                resp(2, &inserted, None),
                req(3, &select, "QUERY", Some("SELECT id, name FROM users WHERE id = ?")),
                resp(4, &rows, None),
            ],
        },
        Case {
            name: "TLS accepted: nothing more to read",
            chunks: vec![TestChunk::egress(1, ssl_request()), TestChunk::ingress(2, "S")],
            close: vec![],
            expect: vec!["1 error: TLS negotiated".into()],
        },
        Case {
            name: "not PostgreSQL",
            chunks: vec![TestChunk::ingress(1, "HTTP/1.1 200 OK\r\n"), TestChunk::ingress(2, "-ERR\r\n").on(2)],
            close: vec![],
            expect: vec![
                "1 error: message 'H' with bad length 1414811695".into(),
                "2 error: unknown backend message type '-'".into(),
            ],
        },
    ]
}
