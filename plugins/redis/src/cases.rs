//! Test cases shared by the native tests and the daemon's wasm test. The
//! byte strings follow what redis-server 7 and redis-cli send (the RESP
//! specification's encodings; `tests/fixtures/redis` holds streams
//! recorded from a real server).

use wirelens_sdk::testing::{Case, TestChunk};

fn req(ts: u64, size: usize, cmd: &str, keys: u32) -> String {
    format!("1 req out {ts}-{ts} size={size} ok command={cmd} key_count={keys}")
}

fn resp(ts: u64, size: usize, ok: bool) -> String {
    format!("1 resp in {ts}-{ts} size={size} {}", if ok { "ok" } else { "fail" })
}

const SET: &str = "*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";
const GET: &str = "*2\r\n$3\r\nget\r\n$3\r\nkey\r\n";

pub fn all() -> Vec<Case> {
    let big_head = "*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$100000\r\n";
    let mut big = big_head.as_bytes().to_vec();
    big.resize(4096, b'v');
    let big_len = big_head.len() + 100_000 + 2;
    let lrange_reply = "*3\r\n$1\r\na\r\n$2\r\nbb\r\n$3\r\nccc\r\n";
    let hello3 = "%2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n";
    let subscribe = "*2\r\n$9\r\nSUBSCRIBE\r\n$2\r\nch\r\n";
    let confirm = "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n";
    let message = "*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n";
    let push3 = ">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n";
    vec![
        Case {
            name: "set and get",
            chunks: vec![
                TestChunk::egress(1, SET),
                TestChunk::ingress(2, "+OK\r\n"),
                TestChunk::egress(3, GET),
                TestChunk::ingress(4, "$5\r\nvalue\r\n"),
            ],
            close: vec![],
            expect: vec![req(1, SET.len(), "SET", 1), resp(2, 5, true), req(3, GET.len(), "GET", 1), resp(4, 11, true)],
        },
        Case {
            name: "pipelined, errors, nulls and integers",
            chunks: vec![
                TestChunk::egress(1, format!("{SET}{GET}*2\r\n$4\r\nINCR\r\n$3\r\nkey\r\n*4\r\n$4\r\nMGET\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n")),
                TestChunk::ingress(2, "+OK\r\n$-1\r\n-ERR value is not an integer or out of range\r\n*3\r\n$-1\r\n:7\r\n$1\r\nx\r\n"),
            ],
            close: vec![],
            expect: vec![
                req(1, SET.len(), "SET", 1),
                req(1, GET.len(), "GET", 1),
                req(1, 23, "INCR", 1),
                req(1, 35, "MGET", 3),
                resp(2, 5, true),
                resp(2, 5, true),
                resp(2, 46, false),
                resp(2, 20, true),
            ],
        },
        Case {
            name: "inline command",
            chunks: vec![TestChunk::egress(1, "PING\r\n"), TestChunk::ingress(2, "+PONG\r\n")],
            close: vec![],
            expect: vec![req(1, 6, "PING", 0), resp(2, 7, true)],
        },
        Case {
            name: "aggregate reply split across chunks, RESP3 map",
            chunks: vec![
                TestChunk::egress(1, "*4\r\n$6\r\nLRANGE\r\n$1\r\nl\r\n$1\r\n0\r\n$2\r\n-1\r\n"),
                TestChunk::ingress(2, &lrange_reply[..9]),
                TestChunk::ingress(3, &lrange_reply[9..]),
                TestChunk::egress(4, "*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n"),
                TestChunk::ingress(5, hello3),
            ],
            close: vec![],
            expect: vec![
                req(1, 38, "LRANGE", 1),
                format!("1 resp in 2-3 size={} ok", lrange_reply.len()),
                req(4, 22, "HELLO", 0),
                resp(5, hello3.len(), true),
            ],
        },
        Case {
            name: "pub/sub messages are pushes",
            chunks: vec![
                TestChunk::egress(1, subscribe),
                TestChunk::ingress(2, confirm),
                TestChunk::ingress(3, message),
                TestChunk::ingress(4, push3),
            ],
            close: vec![],
            expect: vec![
                req(1, subscribe.len(), "SUBSCRIBE", 0),
                resp(2, confirm.len(), true),
                format!("1 oneway in 3-3 size={} ok", message.len()),
                format!("1 oneway in 4-4 size={} ok", push3.len()),
            ],
        },
        Case {
            name: "a large value cut by the capture",
            chunks: vec![
                TestChunk::egress(1, &big).truncated(big_len as u64),
                TestChunk::ingress(2, "+OK\r\n"),
                TestChunk::egress(3, GET),
            ],
            close: vec![],
            expect: vec![req(1, big_len, "SET", 1), resp(2, 5, true), req(3, GET.len(), "GET", 1)],
        },
        Case {
            name: "not RESP",
            chunks: vec![TestChunk::ingress(1, "HTTP/1.1 200 OK\r\n")],
            close: vec![],
            expect: vec!["1 error: not a RESP reply: `HTTP/1.1 200 OK`".into()],
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Redis;
    use wirelens_sdk::testing::{all_two_way_splits, check, run};
    use wirelens_sdk::{Direction, Protocol, Role};

    #[test]
    fn every_case() {
        for case in all() {
            check::<Redis>(&case);
        }
    }

    #[test]
    fn any_split_gives_the_same_messages() {
        let requests = format!("{SET}{GET}PING\r\n");
        let replies = "+OK\r\n*2\r\n$1\r\na\r\n*1\r\n:5\r\n-ERR x\r\n";
        for (dir, stream) in [(Direction::Egress, requests.as_str()), (Direction::Ingress, replies)] {
            let whole = run::<Redis>(&[TestChunk::egress(1, stream).direction(dir)], &[1]);
            assert_eq!(whole.len(), 3, "{whole:?}");
            for (at, got) in all_two_way_splits::<Redis>(dir, stream.as_bytes()) {
                assert_eq!(got, whole, "split at {at}");
            }
        }
    }

    #[test]
    fn detect() {
        let r = Redis;
        assert!(r.detect(Direction::Egress, Role::Client, SET.as_bytes()) >= 90);
        assert!(r.detect(Direction::Ingress, Role::Server, GET.as_bytes()) >= 90);
        assert_eq!(r.detect(Direction::Egress, Role::Client, b"GET / HTTP/1.1\r\n"), 0);
        assert_eq!(r.detect(Direction::Egress, Role::Client, b"\x16\x03\x01"), 0);
    }

    #[test]
    fn fixtures_recorded_from_real_servers() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/redis");
        assert!(wirelens_sdk::testing::check_fixtures::<Redis>(&dir, 50) >= 1);
    }

    #[test]
    fn random_rechunking_gives_the_same_messages() {
        wirelens_sdk::testing::check_rechunking::<Redis>(&all(), 200, 0x5eed);
    }

    /// Mutated cases and random bytes: messages or errors, never a panic.
    #[test]
    fn random_bytes_never_panic() {
        wirelens_sdk::testing::fuzz::<Redis>(&all(), 20_000, 11);
    }
}
