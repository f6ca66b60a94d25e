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

    /// A command array and its bulk strings.
    fn command(words: &[&[u8]]) -> Vec<u8> {
        let mut v = format!("*{}\r\n", words.len()).into_bytes();
        for w in words {
            v.extend_from_slice(format!("${}\r\n", w.len()).as_bytes());
            v.extend_from_slice(w);
            v.extend_from_slice(b"\r\n");
        }
        v
    }

    /// redis-cli's first command is `COMMAND DOCS`, whose reply (~170 KB, a
    /// nested array of small elements) the capture cuts: its end cannot be
    /// computed. The next command proves it over: the call keeps its
    /// command, success, whole size and the time of its last read, and the
    /// next command pairs with its own reply.
    #[test]
    fn a_reply_larger_than_the_capture_keeps_pairing() {
        let docs = command(&[b"COMMAND", b"DOCS"]);
        let mut head = b"*700\r\n".to_vec();
        while head.len() < 4096 {
            head.extend_from_slice(
                b"$3\r\nget\r\n*4\r\n$7\r\nsummary\r\n$9\r\nGet value\r\n$5\r\nsince\r\n$5\r\n1.0.0\r\n",
            );
        }
        head.truncate(4096);
        let reads = [16_384u64, 16_384, 16_384, 16_384, 16_384, 16_384, 16_384, 16_384, 16_384, 16_384, 5_000];
        let total: u64 = reads.iter().sum();
        let mut chunks = vec![TestChunk::egress(1, &docs), TestChunk::ingress(2, &head).truncated(reads[0])];
        for (i, &n) in reads.iter().enumerate().skip(1) {
            // Later reads start anywhere inside the reply.
            chunks.push(TestChunk::ingress(2 + i as u64, b"ary\r\n$5\r\n1.0.0\r\n").truncated(n));
        }
        chunks.push(TestChunk::egress(20, GET));
        chunks.push(TestChunk::ingress(21, "$5\r\nvalue\r\n"));
        let got = run::<Redis>(&chunks, &[]);
        assert_eq!(
            got,
            vec![
                format!("1 req out 1-1 size={} ok command=COMMAND key_count=0", docs.len()),
                format!("1 resp in 2-12 size={total} ok"),
                req(20, GET.len(), "GET", 1),
                resp(21, 11, true),
            ]
        );
    }

    /// Nothing follows the cut reply for a long time (an interactive user):
    /// the host's clock ends it once it has been quiet for five seconds.
    #[test]
    fn a_cut_reply_is_reported_after_a_quiet_spell() {
        let docs = command(&[b"COMMAND", b"DOCS"]);
        let head = b"*700\r\n$3\r\nget\r\n*4\r\n$7\r\nsummary\r\n";
        let s = 1_000_000_000u64;
        let chunks = vec![
            TestChunk::egress(s, &docs),
            TestChunk::ingress(2 * s, head).truncated(170_000),
            TestChunk::tick(3 * s),
            TestChunk::tick(8 * s),
        ];
        let got = run::<Redis>(&chunks, &[]);
        assert_eq!(
            got,
            vec![
                format!("1 req out {s}-{s} size={} ok command=COMMAND key_count=0", docs.len()),
                format!("1 resp in {}-{} size=170000 ok", 2 * s, 2 * s),
            ]
        );
    }

    /// redis-benchmark -P 5 with 10 KB values: five replies of 10,008 bytes
    /// in reads of 16 KiB of which 4 KiB are copied. Replies whose first
    /// bytes were copied keep their outcome; the others are unseen (outcome
    /// unknown), never failures; every call is counted and the sizes add up.
    #[test]
    fn pipelined_replies_larger_than_the_capture_are_never_failures() {
        let gets: Vec<u8> = (0..5).flat_map(|_| command(&[b"GET", b"key:__rand_int__"])).collect();
        let reply_len = 10_008u64;
        let mut value = b"$10000\r\n".to_vec();
        value.resize(4096, b'x');
        let mut chunks = Vec::new();
        let mut ts = 1;
        for _round in 0..4 {
            chunks.push(TestChunk::egress(ts, &gets));
            ts += 1;
            let mut left = 5 * reply_len;
            let mut at = 0u64;
            while left > 0 {
                let n = left.min(16_384);
                // The copied head of a read: a reply's start where one falls
                // in it, else value bytes.
                let starts_here = at.is_multiple_of(reply_len);
                let bytes = if starts_here { value.clone() } else { vec![b'x'; 4096.min(n as usize)] };
                let bytes = &bytes[..bytes.len().min(n as usize)];
                chunks.push(TestChunk::ingress(ts, bytes).truncated(n));
                ts += 1;
                at += n;
                left -= n;
            }
        }
        let got = run::<Redis>(&chunks, &[1]);
        let requests = got.iter().filter(|l| l.contains(" req ")).count();
        let responses: Vec<&String> = got.iter().filter(|l| l.contains(" resp ")).collect();
        assert_eq!((requests, responses.len()), (20, 20), "{got:#?}");
        assert!(!got.iter().any(|l| l.ends_with(" fail") || l.contains(" fail ")), "no failures: {got:#?}");
        let size: u64 = responses
            .iter()
            .map(|l| l.split("size=").nth(1).unwrap().split(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(size, 4 * 5 * reply_len, "sizes add up");
        assert!(responses.iter().any(|l| l.ends_with(" ok")), "replies seen from their start keep their outcome");
    }

    /// A large value that is not the command's last argument: skipped by its
    /// length; the arguments after it are lost with the capture, and the
    /// reply proves the command over.
    #[test]
    fn a_large_value_inside_a_command() {
        let mut mset = command(&[b"MSET", b"k1"]);
        mset[1] = b'5'; // *5: MSET k1 <value> k2 v
        let value_head = b"$100000\r\n";
        let total = mset.len() + value_head.len() + 100_002 + command(&[b"k2", b"v"]).len() - 4;
        let mut captured = mset.clone();
        captured.extend_from_slice(value_head);
        captured.resize(4096, b'v');
        let chunks = vec![
            TestChunk::egress(1, &captured).truncated(total as u64),
            TestChunk::ingress(2, "+OK\r\n"),
            TestChunk::egress(3, GET),
            TestChunk::ingress(4, "$-1\r\n"),
        ];
        let got = run::<Redis>(&chunks, &[]);
        assert_eq!(
            got,
            vec![
                format!("1 req out 1-1 size={total} ok command=MSET key_count=2"),
                resp(2, 5, true),
                req(3, GET.len(), "GET", 1),
                resp(4, 5, true),
            ]
        );
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

    /// Reads of one byte, and the server's view of every case (whole and a
    /// byte at a time), give the same messages.
    #[test]
    fn one_byte_reads_and_the_server_side() {
        wirelens_sdk::testing::check_one_byte_reads::<crate::Redis>(&all());
        wirelens_sdk::testing::check_server_side::<crate::Redis>(&all());
    }

    /// Other protocols' first bytes and random bytes are not claimed.
    #[test]
    fn claims_no_foreign_protocol() {
        wirelens_sdk::testing::check_claims_no_foreign_protocol::<crate::Redis>();
    }
    /// The kernel records of one read of `n` bytes on a connection that
    /// takes whole calls, as `(offset, length)`: a 4 KiB record, then
    /// continuations of 8 KiB.
    fn records_of(n: usize) -> impl Iterator<Item = (usize, usize)> {
        let mut off = 0;
        std::iter::from_fn(move || {
            (off < n).then(|| {
                let m = if off == 0 { 4096.min(n) } else { 8192.min(n - off) };
                off += m;
                (off - m, m)
            })
        })
    }

    /// An open-loop pipelined client (batches of 16 GETs written as they
    /// fall due, replies read 16 KiB at a time, each read a 4 KiB record and
    /// 8 KiB continuations) whose records the ring buffer dropped in both
    /// directions at once. Neither direction can then prove the other's
    /// lost region over; both once stayed lost until the connection closed,
    /// and every later call went with them (3040 of 6400 counted). After a
    /// hole, reads that start inside a reply resume at the next reply in
    /// them (the connection was once given up after 16 such records). Only
    /// the calls inside the lost bytes may go now (at most twice the
    /// messages they held, as pairing around them realigns).
    #[test]
    fn holes_in_both_directions_cost_only_the_calls_inside_them() {
        let get = command(&[b"GET", b"key:0000"]);
        let mut reply = b"$100\r\n".to_vec();
        reply.extend_from_slice(&[b'v'; 100]);
        reply.extend_from_slice(b"\r\n");
        let (batches, per) = (400usize, 16usize);
        // (what is lost, writes between reads: after 100 a backlog of 171 KB
        // is read in 33 records in a row that start inside a reply)
        type Lose = fn(usize) -> bool;
        let cases: [(&str, Lose, Lose, usize); 9] = [
            ("reply record 77, writes 190-192", |r| r == 77, |w| (190..193).contains(&w), 10),
            ("reply record 20, writes 45-47", |r| r == 20, |w| (45..48).contains(&w), 10),
            ("reply record 3, writes 1-3", |r| r == 3, |w| (1..4).contains(&w), 10),
            ("reply record 150, writes 380-382", |r| r == 150, |w| (380..383).contains(&w), 10),
            ("reply record 50", |r| r == 50, |_| false, 10),
            ("writes 201-203", |_| false, |w| (201..204).contains(&w), 10),
            ("reply record 2, backlog", |r| r == 2, |_| false, 100),
            ("reply record 2, writes 98-100, backlog", |r| r == 2, |w| (98..101).contains(&w), 100),
            ("every 7th reply record, every 13th write, reads every 3 writes", |r| r % 7 == 0, |w| w % 13 == 0, 3),
        ];
        for (case, lose_reply, lose_write, read_every) in cases {
            let mut chunks = Vec::new();
            let (mut ts, mut records, mut lost_messages) = (1u64, 0usize, 0usize);
            let (mut replies, mut read_at) = (Vec::new(), 0usize);
            for b in 0..batches {
                let batch: Vec<u8> = (0..per).flat_map(|_| get.clone()).collect();
                if lose_write(b) {
                    chunks.push(TestChunk::egress(ts, b"").truncated(batch.len() as u64));
                    lost_messages += per;
                } else {
                    chunks.push(TestChunk::egress(ts, &batch));
                }
                ts += 1;
                (0..per).for_each(|_| replies.extend_from_slice(&reply));
                if b % read_every != read_every - 1 && b != batches - 1 {
                    continue;
                }
                while read_at < replies.len() {
                    let n = (replies.len() - read_at).min(16384);
                    for (off, m) in records_of(n) {
                        records += 1;
                        if lose_reply(records) {
                            chunks.push(TestChunk::ingress(ts, b"").truncated(m as u64));
                            lost_messages += m / reply.len() + 1;
                        } else {
                            chunks.push(TestChunk::ingress(ts, &replies[read_at + off..read_at + off + m]));
                        }
                    }
                    ts += 1;
                    read_at += n;
                }
            }
            let got = run::<Redis>(&chunks, &[1]);
            let requests = got.iter().filter(|l| l.contains(" req ")).count();
            let responses = got.iter().filter(|l| l.contains(" resp ")).count();
            assert!(
                !got.iter().any(|l| l.contains(" error: ")),
                "{case}: the connection was given up: {:?}",
                got.iter().find(|l| l.contains(" error: "))
            );
            assert_eq!(requests, responses, "{case}: every call paired");
            assert!(requests + 2 * lost_messages >= batches * per, "{case}: {requests} calls of {}", batches * per);
        }
    }

    /// A ring-buffer overflow loses records of both directions in one time
    /// window; the host learns of each direction's hole only at that
    /// direction's next record. The first commands read (or sent) after the
    /// hole came after it, so they keep their names, sizes, times and
    /// replies; the call in flight when the hole began gets an unseen
    /// reply, and calls wholly inside the hole are what it costs.
    #[test]
    fn calls_after_a_hole_in_both_directions_keep_their_fields() {
        let ping = command(&[b"PING"]);
        let incr = command(&[b"INCR", b"a"]);
        let decr = command(&[b"DECR", b"a"]);
        for role in [Role::Server, Role::Client] {
            // (requests go in for a server, out for a client)
            let (rq, rs) = match role {
                Role::Server => (Direction::Ingress, Direction::Egress),
                _ => (Direction::Egress, Direction::Ingress),
            };
            let (rqd, rsd) = if role == Role::Server { ("in", "out") } else { ("out", "in") };
            let at = |d: Direction, ts: u64, bytes: &[u8]| TestChunk::egress(ts, bytes).direction(d).role(role);
            let gap = |d: Direction, ts: u64, n: u64| at(d, ts, b"").truncated(n);
            for pipelined in [1usize, 3] {
                let incrs: Vec<u8> = (0..pipelined).flat_map(|_| incr.clone()).collect();
                let replies: Vec<u8> = (0..pipelined).flat_map(|_| b":1\r\n".to_vec()).collect();
                let chunks = vec![
                    at(rq, 1, &ping),
                    at(rs, 2, b"+PONG\r\n"),
                    // In flight when the hole began: its reply is in the hole.
                    at(rq, 3, &ping),
                    // The hole: 50 PINGs and their replies, then the next
                    // records of each direction.
                    gap(rq, 10, 50 * ping.len() as u64),
                    at(rq, 10, &incrs),
                    gap(rs, 11, 51 * 7),
                    at(rs, 11, &replies),
                    at(rq, 12, &decr),
                    at(rs, 13, b":0\r\n"),
                ];
                let got = run::<Redis>(&chunks, &[1]);
                let req = |ts: u64, size: usize, cmd: &str| {
                    format!("1 req {rqd} {ts}-{ts} size={size} ok command={cmd} key_count={}", u8::from(cmd != "PING"))
                };
                let resp = |ts: u64, size: usize| format!("1 resp {rsd} {ts}-{ts} size={size} ok");
                let mut want = vec![req(1, ping.len(), "PING"), resp(2, 7), req(3, ping.len(), "PING")];
                for _ in 0..pipelined {
                    want.push(req(10, incr.len(), "INCR"));
                }
                want.push(format!("1 resp {rsd} 11-11 size={} unseen", 51 * 7));
                for _ in 0..pipelined {
                    want.push(resp(11, 4));
                }
                want.extend([req(12, decr.len(), "DECR"), resp(13, 4)]);
                assert_eq!(got, want, "{role:?}, {pipelined} after the hole");
            }
        }
    }

    /// A fence lasts until its hole of replies turns up: a later hole of
    /// replies alone (no commands lost) waits for the next command to prove
    /// it over and answers every outstanding command, as before.
    #[test]
    fn a_later_hole_of_replies_alone_still_waits_for_a_proof() {
        let (incr, decr, get) = (command(&[b"INCR", b"a"]), command(&[b"DECR", b"a"]), command(&[b"GET", b"a"]));
        let at = |d: Direction, ts: u64, bytes: &[u8]| TestChunk::egress(ts, bytes).direction(d).role(Role::Server);
        let (rq, rs) = (Direction::Ingress, Direction::Egress);
        let chunks = vec![
            at(rq, 10, b"").truncated(700),
            at(rq, 10, &incr),
            at(rs, 11, b"").truncated(357),
            at(rs, 11, b":1\r\n"),
            at(rq, 12, &decr),
            at(rs, 13, b"").truncated(70),
            at(rs, 13, b":0\r\n"),
            at(rq, 14, &get),
            at(rs, 15, b"$1\r\n0\r\n"),
        ];
        let got = run::<Redis>(&chunks, &[1]);
        let req =
            |ts: u64, size: usize, cmd: &str| format!("1 req in {ts}-{ts} size={size} ok command={cmd} key_count=1");
        assert_eq!(
            got,
            vec![
                req(10, incr.len(), "INCR"),
                "1 resp out 11-11 size=4 ok".to_string(),
                req(12, decr.len(), "DECR"),
                "1 resp out 13-13 size=74 unseen".to_string(),
                req(14, get.len(), "GET"),
                "1 resp out 15-15 size=7 ok".to_string(),
            ]
        );
    }

    /// Commands lost with no reply lost: the replies after the hole answer,
    /// in order, the commands before it, then the lost ones (one unseen
    /// command for them), then the commands after it with their names. A
    /// reply seen after the hole began but before the next command may have
    /// been a lost command's: then the lost ones are answered last, as
    /// after any hole.
    #[test]
    fn commands_lost_alone_are_answered_in_their_place() {
        let ping = command(&[b"PING"]);
        let at = |d: Direction, ts: u64, bytes: &[u8]| TestChunk::egress(ts, bytes).direction(d);
        let (out, inn) = (Direction::Egress, Direction::Ingress);
        let req = |ts: u64| format!("1 req out {ts}-{ts} size={} ok command=PING key_count=0", ping.len());
        // A client pipelining: the second PING's record was lost.
        let chunks = vec![
            at(out, 1, &ping),
            at(out, 3, b"").truncated(ping.len() as u64),
            at(out, 3, &ping),
            at(inn, 4, b"+PONG\r\n+PONG\r\n+PONG\r\n"),
        ];
        assert_eq!(
            run::<Redis>(&chunks, &[1]),
            vec![
                req(1),
                req(3),
                "1 resp in 4-4 size=7 ok".to_string(),
                format!("1 req out 3-3 size={} unseen", ping.len()),
                "1 resp in 4-4 size=7 ok".to_string(),
                "1 resp in 4-4 size=7 ok".to_string(),
            ]
        );
        // A server: the lost command's reply was written before the next
        // command was read. The reply waits for the commands' next record,
        // which shows the hole: it answers an unseen command of the hole's
        // bytes (made before the reply; when, the hole does not tell).
        let chunks = vec![
            at(inn, 1, &ping).role(Role::Server),
            at(out, 2, b"+PONG\r\n").role(Role::Server),
            at(out, 4, b"+OK\r\n").role(Role::Server),
            at(inn, 5, b"").truncated(30).role(Role::Server),
            at(inn, 5, &ping).role(Role::Server),
            at(out, 6, b"+PONG\r\n").role(Role::Server),
        ];
        let req = |ts: u64| format!("1 req in {ts}-{ts} size={} ok command=PING key_count=0", ping.len());
        assert_eq!(
            run::<Redis>(&chunks, &[1]),
            vec![
                req(1),
                "1 resp out 2-2 size=7 ok".to_string(),
                "1 req in 4-4 size=30 unseen".to_string(),
                "1 resp out 4-4 size=5 ok".to_string(),
                req(5),
                "1 resp out 6-6 size=7 ok".to_string(),
            ]
        );
    }

    /// Ring-buffer overflows, simulated: every record (one per command and
    /// per reply, at both ends) whose time falls in a window is lost, and
    /// the next record of its direction follows the hole, as the host feeds
    /// it. A ring fills unevenly: just before a window (and just after it,
    /// as the reader frees room) only the larger records fail (commands),
    /// or only the smaller, or some of either; such a ragged edge once left
    /// a fence from an earlier hole in place, and the replies after the
    /// hole answered commands the hole had already answered (the test
    /// `calls_after_the_ring_buffer_overflowed_are_all_counted` in the
    /// host saw the last DECR of 3000 fail). Every call neither of whose
    /// records was lost must come out
    /// whole: its command, both sizes and both times, paired as the daemon
    /// pairs them (in order), for clients that wait for each reply, at both
    /// ends. With several commands in flight, how many of the lost commands'
    /// replies came after the hole cannot be told, so pairing may shift:
    /// there, counts are held (every call outside the windows counted, no
    /// reply without a command, no connection given up).
    #[test]
    fn calls_outside_overflow_windows_come_out_whole() {
        use wirelens_sdk::testing::{RingLoss, Rng};
        struct Call {
            command: Vec<u8>,
            name: &'static str,
            reply: Vec<u8>,
            request_at: u64,
            reply_at: u64,
        }
        let mut rng = Rng::new(16);
        let mut checked = 0usize;
        for round in 0..200 {
            let role = if round % 2 == 0 { Role::Client } else { Role::Server };
            // Replies come this long after their command (time units): more
            // than the spacing of commands is a pipeline.
            let in_flight = [1u64, 1, 3, 8][round % 4];
            let calls: Vec<Call> = (0..400u64)
                .map(|i| {
                    let key = format!("key:{}", "k".repeat(rng.below(40)));
                    let (name, command, reply): (&'static str, _, _) = match rng.below(3) {
                        0 => ("INCR", command(&[b"INCR", key.as_bytes()]), format!(":{i}\r\n").into_bytes()),
                        1 => ("GET", command(&[b"GET", key.as_bytes()]), b"$3\r\nabc\r\n".to_vec()),
                        _ => ("SET", command(&[b"SET", key.as_bytes(), b"value"]), b"+OK\r\n".to_vec()),
                    };
                    let request_at = 1000 + i * 100;
                    Call { command, name, reply, request_at, reply_at: request_at + in_flight * 100 - 50 }
                })
                .collect();
            let windows: Vec<(u64, u64)> = (0..1 + rng.below(4))
                .map(|_| {
                    // (After the first calls, plus the longest ragged
                    // edge: a connection shows that its client waits for
                    // each reply by three calls answered one at a time;
                    // before, which outstanding command a hole of replies
                    // alone answered cannot be told.)
                    let from = 1800 + rng.below(40_000) as u64;
                    // (At least three calls long: a shorter window can
                    // hide a reply alone, and which outstanding command a
                    // hole of replies alone answered cannot be told.)
                    (from, from + 300 + rng.below(3000) as u64)
                })
                .collect();
            // Ragged edges: how long, and which records they lose.
            let edges: Vec<(u64, u64, usize)> =
                windows.iter().map(|_| (rng.below(400) as u64, rng.below(400) as u64, rng.below(4))).collect();
            let loss = RingLoss { windows, edges, seed: round as u64 };
            let lost = |c: &Call| loss.lost(c.request_at, true) || loss.lost(c.reply_at, false);
            let (rq, rs) = match role {
                Role::Server => (Direction::Ingress, Direction::Egress),
                _ => (Direction::Egress, Direction::Ingress),
            };
            let mut records: Vec<(u64, Direction, &[u8])> = calls
                .iter()
                .flat_map(|c| [(c.request_at, rq, c.command.as_slice()), (c.reply_at, rs, c.reply.as_slice())])
                .collect();
            records.sort_by_key(|r| r.0);
            let chunks = loss.chunks(&records, role, rq);
            let got = run::<Redis>(&chunks, &[1]);
            // Pair as the daemon does: requests wait in order.
            let mut waiting = std::collections::VecDeque::new();
            let mut pairs = std::collections::HashMap::new();
            for line in &got {
                let words: Vec<&str> = line.split(' ').collect();
                let end = words[3].split_once('-').unwrap().1;
                match words[1] {
                    "req" => waiting.push_back(line.clone()),
                    "resp" => {
                        if let Some(request) = waiting.pop_front() {
                            pairs.insert(request, (end.to_string(), line.clone()));
                        }
                    }
                    _ => {}
                }
            }
            let (rqd, rsd) = if role == Role::Server { ("in", "out") } else { ("out", "in") };
            let whole = calls.iter().filter(|c| !lost(c)).count();
            // A reply whose command alone was lost, at an edge, comes before
            // the hole is known: it is held until the commands' next record
            // shows the hole, and answers an unseen command. With commands
            // in flight it may pair with another one instead (pairing can
            // shift there), and as many replies may end with no command.
            let orphans = calls.iter().filter(|c| loss.lost(c.request_at, true) && !loss.lost(c.reply_at, false));
            let allowed = if in_flight > 1 { orphans.count() } else { 0 };
            let requests = got.iter().filter(|l| l.contains(" req ")).count();
            let replies = got.iter().filter(|l| l.contains(" resp ")).count();
            assert!(
                !got.iter().any(|l| l.contains("error")) && replies <= requests + allowed && requests >= whole,
                "round {round}: {requests} requests, {replies} replies, {whole} calls outside the windows: {got:?}"
            );
            for c in calls.iter().filter(|c| !lost(c)) {
                let want_request = format!(
                    "1 req {rqd} {t}-{t} size={} ok command={} key_count=1",
                    c.command.len(),
                    c.name,
                    t = c.request_at
                );
                let want_reply = format!("1 resp {rsd} {t}-{t} size={} ok", c.reply.len(), t = c.reply_at);
                let pair = pairs.get(&want_request);
                if in_flight > 1 {
                    // With commands in flight, how many lost commands'
                    // replies came after the hole cannot be told: pairing
                    // may shift (held to counts above).
                    continue;
                }
                assert!(
                    pair.is_some_and(|(end, resp)| *end == c.reply_at.to_string() && *resp == want_reply),
                    "round {round} ({role:?}, replies {in_flight} commands later, windows {:?}): the call at \
                     {} came out as {pair:?}, not {want_request:?} with {want_reply:?}",
                    loss.windows,
                    c.request_at
                );
                checked += 1;
            }
        }
        assert!(checked > 30_000, "{checked} calls checked");
    }

    /// The server's side of a deep pipeline: commands read 16 KiB at a
    /// time (a 4 KiB record and continuations, cut anywhere in a command),
    /// the replies to each read's whole commands written at once, records
    /// lost in both directions. A command cut by a hole once made the next
    /// parse start inside a command outside a resume, and the connection
    /// was given up ("not a Redis command: `$3`").
    #[test]
    fn server_side_holes_never_give_the_connection_up() {
        let commands: Vec<u8> = (0..6000).flat_map(|i| command(&[b"GET", format!("key:{i:06}").as_bytes()])).collect();
        let one = command(&[b"GET", b"key:000000"]).len();
        let reply = b"$3\r\nbar\r\n";
        type Lose = fn(usize) -> bool;
        let cases: [(&str, Lose, Lose); 4] = [
            ("every 5th request record", |r| r % 5 == 2, |_| false),
            ("every 4th reply write", |_| false, |w| w % 4 == 1),
            ("both", |r| r % 5 == 2, |w| w % 4 == 1),
            ("both, often", |r| r % 3 == 1, |w| w % 2 == 0),
        ];
        for (case, lose_request, lose_reply) in cases {
            let mut chunks = Vec::new();
            let (mut ts, mut records, mut writes, mut lost_messages) = (1u64, 0usize, 0usize, 0usize);
            let mut at = 0usize;
            while at < commands.len() {
                let n = (commands.len() - at).min(16384);
                for (off, m) in records_of(n) {
                    records += 1;
                    let bytes = &commands[at + off..at + off + m];
                    if lose_request(records) {
                        chunks.push(TestChunk::ingress(ts, b"").truncated(m as u64).role(Role::Server));
                        lost_messages += m / one + 1;
                    } else {
                        chunks.push(TestChunk::ingress(ts, bytes).role(Role::Server));
                    }
                }
                ts += 1;
                // Replies to the commands this read completed.
                let done = (at + n) / one - at / one;
                let replies: Vec<u8> = (0..done).flat_map(|_| reply.to_vec()).collect();
                writes += 1;
                if lose_reply(writes) {
                    chunks.push(TestChunk::egress(ts, b"").truncated(replies.len() as u64).role(Role::Server));
                    lost_messages += done;
                } else {
                    chunks.push(TestChunk::egress(ts, &replies).role(Role::Server));
                }
                ts += 1;
                at += n;
            }
            let got = run::<Redis>(&chunks, &[1]);
            assert!(
                !got.iter().any(|l| l.contains(" error: ")),
                "{case}: given up: {:?}",
                got.iter().find(|l| l.contains(" error: "))
            );
            let calls = got.iter().filter(|l| l.contains(" req ")).count();
            assert!(calls + 2 * lost_messages >= 6000, "{case}: {calls} calls of 6000 ({lost_messages} messages lost)");
        }
    }
}
