//! Test cases shared by the native tests and the daemon's wasm test. The
//! byte strings follow memcached 1.6's protocol.txt and what memcached and
//! libmemcached's tools send (`tests/fixtures/memcached` holds streams
//! recorded from a real server).

use wirelens_sdk::testing::{Case, TestChunk};

fn req(ts: u64, size: usize, cmd: &str, key: Option<&str>, keys: u32) -> String {
    let key = key.map(|k| format!(" key={k}")).unwrap_or_default();
    format!("1 req out {ts}-{ts} size={size} ok command={cmd}{key} key_count={keys}")
}

fn oneway(ts: u64, size: usize, cmd: &str, key: Option<&str>, keys: u32) -> String {
    req(ts, size, cmd, key, keys).replacen(" req ", " oneway ", 1)
}

fn resp(ts: u64, size: usize, ok: bool) -> String {
    format!("1 resp in {ts}-{ts} size={size} {}", if ok { "ok" } else { "fail" })
}

/// A binary protocol message: magic, opcode, key, extras, status (or
/// vbucket), opaque, value.
pub fn binary(magic: u8, opcode: u8, key: &[u8], extras: &[u8], status: u16, opaque: u32, value: &[u8]) -> Vec<u8> {
    let body = extras.len() + key.len() + value.len();
    let mut m = vec![magic, opcode];
    m.extend_from_slice(&(key.len() as u16).to_be_bytes());
    m.push(extras.len() as u8);
    m.push(0);
    m.extend_from_slice(&status.to_be_bytes());
    m.extend_from_slice(&(body as u32).to_be_bytes());
    m.extend_from_slice(&opaque.to_be_bytes());
    m.extend_from_slice(&[0; 8]);
    m.extend_from_slice(extras);
    m.extend_from_slice(key);
    m.extend_from_slice(value);
    m
}

pub const SET: &str = "set user:1 0 0 5\r\nhello\r\n";
pub const GET: &str = "get user:1\r\n";
pub const HIT: &str = "VALUE user:1 0 5\r\nhello\r\nEND\r\n";

pub fn all() -> Vec<Case> {
    let multi = "VALUE a 0 1\r\nx\r\nVALUE c 5 3 77\r\nyyy\r\nEND\r\n";
    let stats = "STAT pid 1\r\nSTAT uptime 5\r\nSTAT version 1.6.18\r\nEND\r\n";
    let big_head = "set big 0 0 100000\r\n";
    let mut big = big_head.as_bytes().to_vec();
    big.resize(4096, b'v');
    let bin_set = binary(0x80, 0x01, b"k", &[0, 0, 0, 0, 0, 0, 0, 0], 0, 7, b"value");
    let bin_get = binary(0x80, 0x00, b"k", &[], 0, 8, b"");
    let bin_hit = binary(0x81, 0x00, b"", &[0, 0, 0, 0], 0, 8, b"value");
    let bin_stored = binary(0x81, 0x01, b"", &[], 0, 7, b"");
    let bin_miss = binary(0x81, 0x00, b"", &[], 1, 9, b"Not found");
    let bin_getq = binary(0x80, 0x09, b"q1", &[], 0, 10, b"");
    let bin_getq_hit = binary(0x81, 0x09, b"", &[0, 0, 0, 0], 0, 10, b"v");
    let bin_noop = binary(0x80, 0x0a, b"", &[], 0, 11, b"");
    let bin_noop_reply = binary(0x81, 0x0a, b"", &[], 0, 11, b"");
    let bin_incr_bad = binary(0x81, 0x05, b"", &[], 6, 12, b"Non-numeric server-side value for incr or decr");
    let bin_incr = binary(0x80, 0x05, b"k", &[0; 20], 0, 12, b"");
    let bin_stat = binary(0x80, 0x10, b"", &[], 0, 13, b"");
    let stat = |k: &[u8], v: &[u8]| binary(0x81, 0x10, k, &[], 0, 13, v);
    let bin_stats: Vec<u8> = [stat(b"pid", b"1"), stat(b"uptime", b"5"), stat(b"", b"")].concat();
    vec![
        Case {
            name: "set, get hit, get miss",
            chunks: vec![
                TestChunk::egress(1, SET),
                TestChunk::ingress(2, "STORED\r\n"),
                TestChunk::egress(3, GET),
                TestChunk::ingress(4, HIT),
                TestChunk::egress(5, "get nope\r\n"),
                TestChunk::ingress(6, "END\r\n"),
            ],
            close: vec![],
            expect: vec![
                req(1, SET.len(), "set", Some("user:1"), 1),
                resp(2, 8, true),
                req(3, GET.len(), "get", Some("user:1"), 1),
                resp(4, HIT.len(), true),
                req(5, 10, "get", Some("nope"), 1),
                resp(6, 5, true),
            ],
        },
        Case {
            name: "multi-get, gets with cas, a reply split across reads",
            chunks: vec![
                TestChunk::egress(1, "gets a b c\r\n"),
                TestChunk::ingress(2, &multi[..20]),
                TestChunk::ingress(3, &multi[20..]),
            ],
            close: vec![],
            expect: vec![req(1, 12, "gets", Some("a"), 3), format!("1 resp in 2-3 size={} ok", multi.len())],
        },
        Case {
            name: "pipelined commands, errors and noreply",
            chunks: vec![
                TestChunk::egress(
                    1,
                    "incr n 1\r\nset a 0 0 1 noreply\r\nx\r\ndelete zz\r\nbogus\r\nincr a 1\r\nquit\r\n",
                ),
                TestChunk::ingress(
                    2,
                    "NOT_FOUND\r\nNOT_FOUND\r\nERROR\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
                ),
            ],
            close: vec![],
            expect: vec![
                req(1, 10, "incr", Some("n"), 1),
                oneway(1, 24, "set", Some("a"), 1),
                req(1, 11, "delete", Some("zz"), 1),
                req(1, 7, "bogus", None, 0),
                req(1, 10, "incr", Some("a"), 1),
                oneway(1, 6, "quit", None, 0),
                resp(2, 11, true),
                resp(2, 11, true),
                resp(2, 7, false),
                resp(2, 62, false),
            ],
        },
        Case {
            name: "stats and version",
            chunks: vec![
                TestChunk::egress(1, "stats\r\n"),
                TestChunk::ingress(2, stats),
                TestChunk::egress(3, "version\r\n"),
                TestChunk::ingress(4, "VERSION 1.6.18\r\n"),
            ],
            close: vec![],
            expect: vec![
                req(1, 7, "stats", None, 0),
                resp(2, stats.len(), true),
                req(3, 9, "version", None, 0),
                resp(4, 16, true),
            ],
        },
        Case {
            name: "meta commands, quiet ones one-way",
            chunks: vec![
                TestChunk::egress(1, "ms m 2 T0\r\nhi\r\nmg m v t\r\nmg gone v\r\nmd m q\r\nmn\r\n"),
                TestChunk::ingress(2, "HD\r\nVA 2 t-1\r\nhi\r\nEN\r\nMN\r\n"),
            ],
            close: vec![],
            expect: vec![
                req(1, 15, "ms", Some("m"), 1),
                req(1, 10, "mg", Some("m"), 1),
                req(1, 11, "mg", Some("gone"), 1),
                oneway(1, 8, "md", Some("m"), 1),
                req(1, 4, "mn", None, 0),
                resp(2, 4, true),
                resp(2, 14, true),
                resp(2, 4, true),
                resp(2, 4, true),
            ],
        },
        Case {
            name: "quiet meta gets: a hit's answer is passed over, the miss is silent, mn ends them",
            chunks: vec![
                TestChunk::egress(1, "mg a v q\r\nmg b v k O9 t s f c q\r\nmn\r\n"),
                TestChunk::ingress(2, "VA 1\r\nx\r\nMN\r\n"),
            ],
            close: vec![],
            expect: vec![
                oneway(1, 10, "mg", Some("a"), 1),
                oneway(1, 23, "mg", Some("b"), 1),
                req(1, 4, "mn", None, 0),
                resp(2, 4, true),
            ],
        },
        Case {
            name: "a value longer than the capture is skipped by its length",
            chunks: vec![
                TestChunk::egress(1, &big).truncated((big_head.len() + 100_002) as u64),
                TestChunk::ingress(2, "STORED\r\n"),
                TestChunk::egress(3, "get big\r\n"),
                TestChunk::ingress(4, &b"VALUE big 0 100000\r\nvvvv"[..]).truncated(100_027),
                TestChunk::egress(5, "version\r\n"),
                TestChunk::ingress(6, "VERSION 1.6.18\r\n"),
            ],
            close: vec![],
            expect: vec![
                req(1, big_head.len() + 100_002, "set", Some("big"), 1),
                resp(2, 8, true),
                req(3, 9, "get", Some("big"), 1),
                resp(4, 100_027, true),
                req(5, 9, "version", None, 0),
                resp(6, 16, true),
            ],
        },
        Case {
            name: "binary set, get hit and miss, incr error",
            chunks: vec![
                TestChunk::egress(1, &bin_set),
                TestChunk::ingress(2, &bin_stored),
                TestChunk::egress(3, &bin_get),
                TestChunk::ingress(4, &bin_hit),
                TestChunk::egress(5, &bin_get),
                TestChunk::ingress(6, &bin_miss),
                TestChunk::egress(7, &bin_incr),
                TestChunk::ingress(8, &bin_incr_bad),
            ],
            close: vec![],
            expect: vec![
                req(1, bin_set.len(), "set", Some("k"), 1),
                resp(2, bin_stored.len(), true),
                req(3, bin_get.len(), "get", Some("k"), 1),
                resp(4, bin_hit.len(), true),
                req(5, bin_get.len(), "get", Some("k"), 1),
                resp(6, bin_miss.len(), true),
                req(7, bin_incr.len(), "incr", Some("k"), 1),
                resp(8, bin_incr_bad.len(), false),
            ],
        },
        Case {
            name: "binary quiet get then noop: the hit is passed over",
            chunks: vec![
                TestChunk::egress(1, [bin_getq.clone(), bin_noop.clone()].concat()),
                TestChunk::ingress(2, [bin_getq_hit.clone(), bin_noop_reply.clone()].concat()),
                TestChunk::egress(3, &bin_stat),
                TestChunk::ingress(4, &bin_stats),
            ],
            close: vec![],
            expect: vec![
                oneway(1, bin_getq.len(), "getq", Some("q1"), 1),
                req(1, bin_noop.len(), "noop", None, 0),
                format!("1 resp in 2-2 size={} ok", bin_noop_reply.len()),
                req(3, bin_stat.len(), "stats", None, 0),
                resp(4, bin_stats.len(), true),
            ],
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Memcached;
    use wirelens_sdk::testing::run;
    use wirelens_sdk::{Direction, Protocol, Role};

    #[test]
    fn cases() {
        for case in all() {
            assert_eq!(run::<Memcached>(&case.chunks, &case.close), case.expect, "{}", case.name);
        }
    }

    #[test]
    fn detect() {
        let m = Memcached;
        assert!(m.detect(Direction::Egress, Role::Client, SET.as_bytes()) >= 90);
        assert!(m.detect(Direction::Ingress, Role::Server, GET.as_bytes()) >= 50);
        assert!(m.detect(Direction::Egress, Role::Client, b"set k 0 0 100\r\nabc") >= 50);
        let bin_get = binary(0x80, 0x00, b"k", &[], 0, 1, b"");
        assert!(m.detect(Direction::Egress, Role::Client, &bin_get) >= 90);
        // Redis's inline commands are upper case; HTTP has its version.
        assert_eq!(m.detect(Direction::Egress, Role::Client, b"GET key\r\n"), 0);
        assert_eq!(m.detect(Direction::Egress, Role::Client, b"get / HTTP/1.1\r\n"), 0);
        assert_eq!(m.detect(Direction::Egress, Role::Client, b"set k 0 0 5\r\nhelloXX"), 0);
        assert!(m.detect(Direction::Ingress, Role::Client, HIT.as_bytes()) < 50);
    }

    #[test]
    fn fixtures_recorded_from_real_servers() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/memcached");
        assert!(wirelens_sdk::testing::check_fixtures::<Memcached>(&dir, 50) >= 2);
    }

    #[test]
    fn random_rechunking_gives_the_same_messages() {
        wirelens_sdk::testing::check_rechunking::<Memcached>(&all(), 200, 0x5eed);
    }

    /// Mutated cases and random bytes: messages or errors, never a panic.
    #[test]
    fn random_bytes_never_panic() {
        wirelens_sdk::testing::fuzz::<Memcached>(&all(), 20_000, 11);
    }

    #[test]
    fn one_byte_reads_and_the_server_side() {
        wirelens_sdk::testing::check_one_byte_reads::<Memcached>(&all());
        wirelens_sdk::testing::check_server_side::<Memcached>(&all());
    }

    #[test]
    fn claims_no_foreign_protocol() {
        wirelens_sdk::testing::check_claims_none_but::<Memcached>(&["memcached"]);
    }

    /// Replies lost in the middle of a pipeline cost the calls inside them:
    /// the rest stay paired with their own replies.
    #[test]
    fn lost_replies_cost_only_their_calls() {
        let gets: String = (0..50).map(|i| format!("get k{i}\r\n")).collect();
        let replies: Vec<String> = (0..50).map(|i| format!("VALUE k{i} 0 3\r\nabc\r\nEND\r\n")).collect();
        let mut chunks = vec![TestChunk::egress(1, &gets)];
        for (i, r) in replies.iter().enumerate() {
            let c = TestChunk::ingress(2 + i as u64, r);
            chunks.push(if i == 20 { TestChunk::ingress(22, b"").truncated(r.len() as u64) } else { c });
        }
        chunks.push(TestChunk::egress(100, GET));
        chunks.push(TestChunk::ingress(101, HIT));
        let got = run::<Memcached>(&chunks, &[]);
        let requests = got.iter().filter(|l| l.contains(" req ")).count();
        let responses = got.iter().filter(|l| l.contains(" resp ")).count();
        assert!(!got.iter().any(|l| l.contains("error")), "{got:?}");
        assert_eq!((requests, responses), (51, 51), "{got:?}");
        assert_eq!(got.last().unwrap(), &format!("1 resp in 101-101 size={} ok", HIT.len()));
    }
}
