//! `testproto`: lines `REQ <text>` and `RES <text>`. Hostile on purpose when
//! a request says so, to test the sandbox:
//! - `REQ LOOP`: never returns (deadline);
//! - `REQ BOMB`: allocates without bound (memory cap);
//! - `REQ TRAP`: panics (trap);
//! - `REQ HUGE`: returns an oversized result;
//! - `REQ LOGS`: logs 10,000 lines (log budget);
//! - `REQ SPIN<n>`: computes for n million steps, then answers (CPU-time deadline).

use wirelens_sdk::cursor::Cursor;
use wirelens_sdk::{Ctx, Direction, FieldKey, Fields, Info, LogLevel, Meta, Protocol, Role, Step};

const TEXT: FieldKey = FieldKey(0);

#[derive(Default)]
pub struct TestProto;

impl Protocol for TestProto {
    type Conn = ();

    fn info() -> Info {
        Info {
            name: "testproto",
            version: if cfg!(feature = "v2") { "2.0.0" } else { "1.0.0" },
            description: "test protocol with hostile commands",
            default_ports: &[7777],
            field_names: &["text"],
            max_buffer: 4096,
        }
    }

    fn detect(&self, _d: Direction, _r: Role, bytes: &[u8]) -> u8 {
        if bytes.starts_with(b"REQ ") || bytes.starts_with(b"RES ") {
            100
        } else {
            0
        }
    }

    fn parse(&self, _conn: &mut (), _ctx: &Ctx, buf: &[u8], fields: &mut Fields) -> Step {
        let mut cur = Cursor::new(buf);
        let Some(line) = cur.line() else { return Step::NeedMore };
        let len = cur.position() as u64;
        let (meta, text) = match (line.get(..4), line.get(4..)) {
            (Some(b"REQ "), Some(text)) => (Meta::request(), text),
            (Some(b"RES "), Some(text)) => (Meta::response(!text.starts_with(b"ERR")), text),
            _ => return Step::Invalid(format!("not testproto: {:?}", String::from_utf8_lossy(line))),
        };
        match text {
            b"LOOP" => {
                let mut n = 0u64;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            b"BOMB" => {
                let mut hoard = Vec::new();
                loop {
                    hoard.push(std::hint::black_box(Vec::<u8>::with_capacity(8 << 20)));
                }
            }
            b"TRAP" => panic!("testproto was told to trap"),
            b"HUGE" => {
                // 1.1 MB of text (the test sets a 1 MiB output limit).
                let block = [b'x'; 4096];
                for _ in 0..275 {
                    fields.text(TEXT, &block);
                }
            }
            b"LOGS" => {
                for i in 0..10_000 {
                    wirelens_sdk::log(LogLevel::Info, &format!("log line {i}"));
                }
                fields.text(TEXT, text);
            }
            spin if spin.starts_with(b"SPIN") => {
                let millions = std::str::from_utf8(&spin[4..]).ok().and_then(|n| n.parse::<u64>().ok()).unwrap_or(1);
                let mut x = 0u64;
                for i in 0..millions * 1_000_000 {
                    x = std::hint::black_box(x.rotate_left(5) ^ i);
                }
                fields.text(TEXT, if x == 1 { b"one" } else { text });
            }
            _ => fields.text(TEXT, text),
        }
        Step::Complete(len, meta)
    }
}

wirelens_sdk::export_plugin!(TestProto);
