//! MiniKV, a made-up key-value protocol (the SDK guide's worked example).
//!
//! Requests (client to server), one line each:
//! - `GET <key>\n`
//! - `SET <key> <n>\n` followed by `n` bytes of value
//!
//! Responses: `OK\n`, `NIL\n`, `ERR <message>\n`, or `VAL <n>\n` followed by
//! `n` bytes.

use wirelens_sdk::cursor::{parse_decimal, Cursor};
use wirelens_sdk::{Ctx, Direction, FieldKey, Fields, Info, Meta, Protocol, Role, Step};

pub const COMMAND: FieldKey = FieldKey(0);
pub const KEY: FieldKey = FieldKey(1);

#[derive(Default)]
pub struct MiniKv;

impl Protocol for MiniKv {
    type Conn = ();

    fn info() -> Info {
        Info {
            name: "minikv",
            version: env!("CARGO_PKG_VERSION"),
            description: "MiniKV, the SDK guide's example protocol",
            default_ports: &[7070],
            field_names: &["command", "key"],
            max_buffer: 16 * 1024,
        }
    }

    fn call_field() -> Option<&'static str> {
        Some("command")
    }

    fn detect(&self, _direction: Direction, _role: Role, bytes: &[u8]) -> u8 {
        let known = [&b"GET "[..], b"SET ", b"OK\n", b"NIL\n", b"ERR ", b"VAL "];
        if known.iter().any(|k| bytes.starts_with(k)) {
            80
        } else {
            0
        }
    }

    fn parse(&self, _conn: &mut (), ctx: &Ctx, buf: &[u8], fields: &mut Fields) -> Step {
        let mut cur = Cursor::new(buf);
        // `line()` returns None until the whole line is there.
        let Some(line) = cur.line() else { return Step::NeedMore };
        let head = cur.position() as u64;
        let mut words = line.split(|&b| b == b' ');
        let word = words.next().unwrap_or_default();
        match word {
            b"GET" | b"SET" if ctx.carries_requests() != Some(false) => {
                let key = words.next().unwrap_or_default();
                fields.text(COMMAND, word);
                fields.text(KEY, key);
                let value_len = if word == b"SET" { words.next().and_then(parse_decimal) } else { Some(0) };
                match value_len {
                    // The value may be longer than what was captured: the
                    // SDK skips the rest as it arrives.
                    Some(n) => Step::Complete(head + n, Meta::request()),
                    None => Step::Invalid("SET without a length".into()),
                }
            }
            b"OK" | b"NIL" => Step::Complete(head, Meta::response(true)),
            b"ERR" => Step::Complete(head, Meta::response(false)),
            b"VAL" => match words.next().and_then(parse_decimal) {
                Some(n) => Step::Complete(head + n, Meta::response(true)),
                None => Step::Invalid("VAL without a length".into()),
            },
            _ => Step::Invalid(format!("not MiniKV: {:?}", String::from_utf8_lossy(line))),
        }
    }
}

wirelens_sdk::export_plugin!(MiniKv);

/// Cases shared by the native tests below and the daemon's wasm test.
pub mod cases {
    use wirelens_sdk::testing::{Case, TestChunk};

    pub fn all() -> Vec<Case> {
        vec![
            Case {
                name: "get and set",
                chunks: vec![
                    TestChunk::egress(1, "GET user:1\n"),
                    TestChunk::ingress(2, "VAL 5\nalice"),
                    TestChunk::egress(3, "SET user:2 3\nbob"),
                    TestChunk::ingress(4, "OK\n"),
                ],
                close: vec![],
                expect: vec![
                    "1 req out 1-1 size=11 ok command=GET key=user:1".into(),
                    "1 resp in 2-2 size=11 ok".into(),
                    "1 req out 3-3 size=16 ok command=SET key=user:2".into(),
                    "1 resp in 4-4 size=3 ok".into(),
                ],
            },
            Case {
                name: "value split across chunks and an error",
                chunks: vec![
                    TestChunk::egress(1, "SET k 10\n01234"),
                    TestChunk::egress(2, "56789GET k"),
                    TestChunk::egress(3, "\n"),
                    TestChunk::ingress(4, "OK\nERR no such key\n"),
                ],
                close: vec![],
                expect: vec![
                    "1 req out 1-2 size=19 ok command=SET key=k".into(),
                    "1 req out 2-3 size=6 ok command=GET key=k".into(),
                    "1 resp in 4-4 size=3 ok".into(),
                    "1 resp in 4-4 size=16 fail".into(),
                ],
            },
            Case {
                name: "not minikv",
                chunks: vec![TestChunk::egress(1, "HELLO\n")],
                close: vec![],
                expect: vec!["1 error: not MiniKV: \"HELLO\"".into()],
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_case() {
        for case in super::cases::all() {
            wirelens_sdk::testing::check::<super::MiniKv>(&case);
        }
    }
}
