//! Test cases shared by the native tests and the daemon's wasm test. The
//! byte strings follow what nats-server 2.9 and nats-py 2.16 send
//! (`tests/fixtures/nats` holds streams recorded from them).

use wirelens_sdk::testing::{Case, TestChunk};

fn msg(kind: &str, dir: &str, ts: u64, size: usize, ok: bool, op: &str, subject: Option<&str>) -> String {
    let subject = subject.map(|s| format!(" subject={s}")).unwrap_or_default();
    format!("1 {kind} {dir} {ts}-{ts} size={size} {} op={op}{subject}", if ok { "ok" } else { "fail" })
}

fn req(ts: u64, size: usize, op: &str, subject: Option<&str>) -> String {
    msg("req", "out", ts, size, true, op, subject)
}

fn resp(ts: u64, size: usize, ok: bool, op: &str) -> String {
    msg("resp", "in", ts, size, ok, op, None)
}

fn out(ts: u64, size: usize, op: &str, subject: Option<&str>) -> String {
    msg("oneway", "out", ts, size, true, op, subject)
}

fn inbound(ts: u64, size: usize, op: &str, subject: Option<&str>) -> String {
    msg("oneway", "in", ts, size, true, op, subject)
}

pub const INFO: &str = "INFO {\"server_id\":\"NAOT6\",\"version\":\"2.9.10\",\"proto\":1,\"headers\":true,\"max_payload\":1048576}\r\n";
pub const CONNECT: &str = "CONNECT {\"echo\": true, \"lang\": \"python3\", \"pedantic\": false, \"verbose\": false}\r\n";
pub const CONNECT_VERBOSE: &str = "CONNECT {\"verbose\":true,\"pedantic\":true,\"name\":\"wl-raw\"}\r\n";
pub const PUB: &str = "PUB wl.events  7\r\nevent 0\r\n";
pub const MSG: &str = "MSG wl.events 1 7\r\nevent 0\r\n";

pub fn all() -> Vec<Case> {
    let big_line = "PUB wl.big 100000\r\n";
    let mut big = big_line.as_bytes().to_vec();
    big.resize(4096, b'x');
    let hpub = "HPUB wl.h 20 25\r\nNATS/1.0\r\nX-A: 1\r\n\r\nhello\r\n";
    let hmsg = "HMSG wl.h 4 reply.to 20 25\r\nNATS/1.0\r\nX-A: 1\r\n\r\nhello\r\n";
    vec![
        Case {
            name: "nats-py: connect, subscribe, publish, deliveries, ping",
            chunks: vec![
                TestChunk::ingress(1, INFO),
                TestChunk::egress(2, format!("{CONNECT}PING\r\n")),
                TestChunk::ingress(3, "PONG\r\n"),
                TestChunk::egress(4, "SUB wl.events  1\r\nSUB wl.service q 2\r\n"),
                TestChunk::egress(5, format!("PING\r\n{PUB}{PUB}")),
                TestChunk::ingress(6, format!("PONG\r\n{MSG}{MSG}")),
            ],
            close: vec![],
            expect: vec![
                inbound(1, INFO.len(), "INFO", None),
                out(2, CONNECT.len(), "CONNECT", None),
                req(2, 6, "PING", None),
                resp(3, 6, true, "PONG"),
                out(4, 18, "SUB", Some("wl.events")),
                out(4, 20, "SUB", Some("wl.service")),
                req(5, 6, "PING", None),
                out(5, PUB.len(), "PUB", Some("wl.events")),
                out(5, PUB.len(), "PUB", Some("wl.events")),
                resp(6, 6, true, "PONG"),
                inbound(6, MSG.len(), "MSG", Some("wl.events")),
                inbound(6, MSG.len(), "MSG", Some("wl.events")),
            ],
        },
        Case {
            name: "verbose: every operation answered, a refused publish fails",
            chunks: vec![
                TestChunk::ingress(1, INFO),
                TestChunk::egress(2, CONNECT_VERBOSE),
                TestChunk::ingress(3, "+OK\r\n"),
                TestChunk::egress(4, "SUB wl.raw 1\r\n"),
                TestChunk::ingress(5, "+OK\r\n"),
                TestChunk::egress(6, "PUB wl.raw 5\r\nhello\r\n"),
                TestChunk::ingress(7, "+OK\r\nMSG wl.raw 1 5\r\nhello\r\n"),
                TestChunk::egress(8, "PING\r\nPUB wl.* 2\r\nno\r\n"),
                TestChunk::ingress(9, "PONG\r\n-ERR 'Invalid Publish Subject'\r\n+OK\r\n"),
                TestChunk::egress(10, "UNSUB 1\r\n"),
                TestChunk::ingress(11, "+OK\r\n"),
            ],
            close: vec![],
            expect: vec![
                inbound(1, INFO.len(), "INFO", None),
                req(2, CONNECT_VERBOSE.len(), "CONNECT", None),
                resp(3, 5, true, "+OK"),
                req(4, 14, "SUB", Some("wl.raw")),
                resp(5, 5, true, "+OK"),
                req(6, 21, "PUB", Some("wl.raw")),
                resp(7, 5, true, "+OK"),
                inbound(7, 23, "MSG", Some("wl.raw")),
                req(8, 6, "PING", None),
                req(8, 16, "PUB", Some("wl.*")),
                resp(9, 6, true, "PONG"),
                resp(9, 5, false, "+OK"),
                req(10, 9, "UNSUB", None),
                resp(11, 5, true, "+OK"),
            ],
        },
        Case {
            name: "verbose: a permission violation answers its publish, the rest stay paired",
            chunks: vec![
                TestChunk::egress(1, CONNECT_VERBOSE),
                TestChunk::ingress(2, "+OK\r\n"),
                TestChunk::egress(3, "PUB secret 1\r\nx\r\nPUB open 1\r\ny\r\nPING\r\n"),
                TestChunk::ingress(4, "-ERR 'Permissions Violation for Publish to \"secret\"'\r\n+OK\r\nPONG\r\n"),
            ],
            close: vec![],
            expect: vec![
                req(1, CONNECT_VERBOSE.len(), "CONNECT", None),
                resp(2, 5, true, "+OK"),
                req(3, 17, "PUB", Some("secret")),
                req(3, 15, "PUB", Some("open")),
                req(3, 6, "PING", None),
                resp(4, 54, false, "-ERR"),
                resp(4, 5, true, "+OK"),
                resp(4, 6, true, "PONG"),
            ],
        },
        Case {
            name: "the server pings, the client answers; lower case; an error nobody awaits",
            chunks: vec![
                TestChunk::ingress(1, "PING\r\n"),
                TestChunk::egress(2, "PONG\r\n"),
                TestChunk::egress(3, "pub wl.lower 2\r\nhi\r\n"),
                TestChunk::ingress(4, "-ERR 'Permissions Violation for Publish to \"wl.lower\"'\r\n"),
            ],
            close: vec![],
            expect: vec![
                inbound(1, 6, "PING", None),
                out(2, 6, "PONG", None),
                out(3, 20, "PUB", Some("wl.lower")),
                "1 oneway in 4-4 size=56 fail op=-ERR".to_string(),
            ],
        },
        Case {
            name: "headers: HPUB and HMSG skip headers and payload by length",
            chunks: vec![TestChunk::egress(1, hpub), TestChunk::ingress(2, hmsg)],
            close: vec![],
            expect: vec![out(1, hpub.len(), "HPUB", Some("wl.h")), inbound(2, hmsg.len(), "HMSG", Some("wl.h"))],
        },
        Case {
            name: "joined midway on a verbose connection",
            chunks: vec![
                TestChunk::egress(1, "PUB a 1\r\n1\r\n"),
                TestChunk::ingress(2, "+OK\r\n"),
                TestChunk::egress(3, "PUB a 1\r\n2\r\n"),
                TestChunk::ingress(4, "+OK\r\n"),
            ],
            close: vec![],
            expect: vec![out(1, 12, "PUB", Some("a")), req(3, 12, "PUB", Some("a")), resp(4, 5, true, "+OK")],
        },
        Case {
            name: "a payload longer than the capture is skipped by its length",
            chunks: vec![
                TestChunk::egress(1, &big).truncated((big_line.len() + 100_002) as u64),
                TestChunk::egress(2, "PING\r\n"),
                TestChunk::ingress(3, "PONG\r\n"),
            ],
            close: vec![],
            expect: vec![
                out(1, big_line.len() + 100_002, "PUB", Some("wl.big")),
                req(2, 6, "PING", None),
                resp(3, 6, true, "PONG"),
            ],
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Nats;
    use wirelens_sdk::testing::run;
    use wirelens_sdk::{Direction, Protocol, Role};

    #[test]
    fn cases() {
        for case in all() {
            assert_eq!(run::<Nats>(&case.chunks, &case.close), case.expect, "{}", case.name);
        }
    }

    #[test]
    fn detect() {
        let n = Nats;
        assert!(n.detect(Direction::Ingress, Role::Client, INFO.as_bytes()) >= 90);
        assert!(n.detect(Direction::Egress, Role::Server, INFO.as_bytes()) >= 90);
        assert!(n.detect(Direction::Egress, Role::Client, CONNECT.as_bytes()) >= 90);
        assert!(n.detect(Direction::Egress, Role::Client, PUB.as_bytes()) >= 50);
        // The start of a long INFO line (a client reading a byte at a time
        // leaves detection its first 32 bytes).
        assert!(n.detect(Direction::Ingress, Role::Client, &INFO.as_bytes()[..32]) >= 90);
        // Redis's inline PING and HTTP are not NATS.
        assert!(n.detect(Direction::Egress, Role::Client, b"PING\r\n") < 50);
        assert_eq!(n.detect(Direction::Egress, Role::Client, b"GET / HTTP/1.1\r\n"), 0);
        assert_eq!(n.detect(Direction::Egress, Role::Client, b"PUB subject notanumber\r\n"), 0);
    }

    #[test]
    fn fixtures_recorded_from_real_servers() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/nats");
        assert!(wirelens_sdk::testing::check_fixtures::<Nats>(&dir, 50) >= 1);
    }

    #[test]
    fn random_rechunking_gives_the_same_messages() {
        wirelens_sdk::testing::check_rechunking::<Nats>(&all(), 200, 0x5eed);
    }

    /// Mutated cases and random bytes: messages or errors, never a panic.
    #[test]
    fn random_bytes_never_panic() {
        wirelens_sdk::testing::fuzz::<Nats>(&all(), 20_000, 11);
    }

    #[test]
    fn one_byte_reads_and_the_server_side() {
        wirelens_sdk::testing::check_one_byte_reads::<Nats>(&all());
        wirelens_sdk::testing::check_server_side::<Nats>(&all());
    }

    #[test]
    fn claims_no_foreign_protocol() {
        wirelens_sdk::testing::check_claims_none_but::<Nats>(&["NATS"]);
    }

    /// A lost PING costs its call only: the PONG that answered it is
    /// reported with it (outcome read), later calls stay paired.
    #[test]
    fn a_lost_ping_costs_only_its_call() {
        let chunks = vec![
            TestChunk::egress(1, "PING\r\n"),
            TestChunk::egress(2, b"").truncated(6),
            TestChunk::egress(3, "PING\r\n"),
            TestChunk::ingress(4, "PONG\r\nPONG\r\nPONG\r\n"),
        ];
        let got = run::<Nats>(&chunks, &[]);
        let requests = got.iter().filter(|l| l.contains(" req ")).count();
        let responses = got.iter().filter(|l| l.contains(" resp ")).count();
        assert!(!got.iter().any(|l| l.contains("error")), "{got:?}");
        assert_eq!((requests, responses), (3, 3), "{got:?}");
    }
}
