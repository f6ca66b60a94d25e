//! Test cases shared by the native tests and the daemon's wasm test; the
//! messages are built the way dig and dnsmasq encode them.

use wirelens_sdk::testing::{Case, TestChunk};

/// A DNS message: header, one question, and `answers` A records.
pub fn message(id: u16, response: bool, rcode: u8, name: &str, qtype: u16, answers: u16) -> Vec<u8> {
    let flags: u16 = if response { 0x8180 | u16::from(rcode) } else { 0x0100 };
    let mut m = Vec::new();
    for v in [id, flags, 1, answers, 0, 0] {
        m.extend_from_slice(&v.to_be_bytes());
    }
    for label in name.split('.') {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    for _ in 0..answers {
        m.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 1, 2, 3, 4]);
    }
    m
}

/// The same message framed for TCP.
pub fn tcp(m: &[u8]) -> Vec<u8> {
    let mut v = (m.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(m);
    v
}

pub fn all() -> Vec<Case> {
    let q_a = message(0x1234, false, 0, "x.test", 1, 0);
    let q_aaaa = message(0x1235, false, 0, "x.test", 28, 0);
    let r_a = message(0x1234, true, 0, "x.test", 1, 1);
    let r_aaaa = message(0x1235, true, 0, "x.test", 28, 0);
    let q_nx = message(7, false, 0, "nope.invalid", 1, 0);
    let r_nx = message(7, true, 3, "nope.invalid", 1, 0);
    let tq = tcp(&q_a);
    let tr = tcp(&r_a);
    let tq_b = tcp(&message(9, false, 0, "b.x.test", 1, 0));
    let tr_b = tcp(&message(9, true, 0, "b.x.test", 1, 1));
    let r_big = message(0x1234, true, 0, "x.test", 1, 200);
    let tr_big = tcp(&r_big);
    // Five labels of 63 bytes: 319 bytes of text, over the 255 a name has.
    let long = ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(63), "e".repeat(63)].join(".");
    let q_long = message(0x2000, false, 0, &long, 1, 0);
    let r_long = message(0x2000, true, 0, &long, 1, 1);
    // A label whose bytes are not UTF-8 (`caf` then 0xff 0xfe).
    let mut q_bytes = message(0x2001, false, 0, "cafxx.test", 1, 0);
    q_bytes[16..18].copy_from_slice(&[0xff, 0xfe]);
    // The root (`dig . NS`), and a name that is only a compression pointer.
    let ns = message(0x2002, false, 0, "x", 2, 0);
    let q_root = [&ns[..12], &[0], &ns[15..]].concat();
    let q_pointer = [&ns[..12], &[0xc0, 0x0c], &ns[15..]].concat();
    vec![
        Case {
            name: "the root, and a name that is only a pointer",
            chunks: vec![TestChunk::egress(1, &q_root).datagram(), TestChunk::egress(2, &q_pointer).datagram()],
            close: vec![],
            expect: vec![
                format!("1 req out 1-1 size={} id=8194 ok query_record=. query_type=NS", q_root.len()),
                format!("1 req out 2-2 size={} id=8194 ok query_record= query_type=NS", q_pointer.len()),
            ],
        },
        Case {
            name: "udp query and answer",
            chunks: vec![TestChunk::egress(1, &q_a).datagram(), TestChunk::ingress(2, &r_a).datagram()],
            close: vec![],
            expect: vec![
                format!("1 req out 1-1 size={} id=4660 ok query_record=x.test query_type=A", q_a.len()),
                format!("1 resp in 2-2 size={} id=4660 ok query_record=x.test query_type=A rcode=NOERROR", r_a.len()),
            ],
        },
        Case {
            name: "two queries in flight, answered in reverse; NXDOMAIN fails",
            chunks: vec![
                TestChunk::egress(1, &q_a).datagram(),
                TestChunk::egress(2, &q_aaaa).datagram(),
                TestChunk::ingress(3, &r_aaaa).datagram(),
                TestChunk::ingress(4, &r_a).datagram(),
                TestChunk::egress(5, &q_nx).datagram(),
                TestChunk::ingress(6, &r_nx).datagram(),
            ],
            close: vec![],
            expect: vec![
                format!("1 req out 1-1 size={} id=4660 ok query_record=x.test query_type=A", q_a.len()),
                format!("1 req out 2-2 size={} id=4661 ok query_record=x.test query_type=AAAA", q_aaaa.len()),
                format!(
                    "1 resp in 3-3 size={} id=4661 ok query_record=x.test query_type=AAAA rcode=NOERROR",
                    r_aaaa.len()
                ),
                format!("1 resp in 4-4 size={} id=4660 ok query_record=x.test query_type=A rcode=NOERROR", r_a.len()),
                format!("1 req out 5-5 size={} id=7 ok query_record=nope.invalid query_type=A", q_nx.len()),
                format!(
                    "1 resp in 6-6 size={} id=7 fail query_record=nope.invalid query_type=A rcode=NXDOMAIN",
                    r_nx.len()
                ),
            ],
        },
        Case {
            // dnsmasq reads each length prefix a byte at a time, then the
            // body, and answers several queries on one connection.
            name: "tcp server side: prefixes read a byte at a time, three queries on one connection",
            chunks: {
                let server = |c: TestChunk| c.role(wirelens_sdk::Role::Server);
                let mut chunks = Vec::new();
                for (i, (q, r)) in [(&tq, &tr), (&tq_b, &tr_b), (&tq, &tr)].into_iter().enumerate() {
                    let ts = 10 * i as u64;
                    chunks.push(server(TestChunk::ingress(ts + 1, &q[..1])));
                    chunks.push(server(TestChunk::ingress(ts + 2, &q[1..2])));
                    chunks.push(server(TestChunk::ingress(ts + 3, &q[2..])));
                    chunks.push(server(TestChunk::egress(ts + 4, r)));
                }
                chunks
            },
            close: vec![],
            expect: vec![
                format!("1 req in 1-3 size={} id=4660 ok query_record=x.test query_type=A", tq.len()),
                format!("1 resp out 4-4 size={} id=4660 ok query_record=x.test query_type=A rcode=NOERROR", tr.len()),
                format!("1 req in 11-13 size={} id=9 ok query_record=b.x.test query_type=A", tq_b.len()),
                format!(
                    "1 resp out 14-14 size={} id=9 ok query_record=b.x.test query_type=A rcode=NOERROR",
                    tr_b.len()
                ),
                format!("1 req in 21-23 size={} id=4660 ok query_record=x.test query_type=A", tq.len()),
                format!("1 resp out 24-24 size={} id=4660 ok query_record=x.test query_type=A rcode=NOERROR", tr.len()),
            ],
        },
        Case {
            name: "tcp: a large answer cut by the capture is skipped by its length",
            chunks: vec![
                TestChunk::egress(1, &tq),
                TestChunk::ingress(2, &tr_big[..200]).truncated(tr_big.len() as u64),
                TestChunk::egress(3, &tq_b),
                TestChunk::ingress(4, &tr_b),
            ],
            close: vec![],
            expect: vec![
                format!("1 req out 1-1 size={} id=4660 ok query_record=x.test query_type=A", tq.len()),
                format!(
                    "1 resp in 2-2 size={} id=4660 ok query_record=x.test query_type=A rcode=NOERROR",
                    tr_big.len()
                ),
                format!("1 req out 3-3 size={} id=9 ok query_record=b.x.test query_type=A", tq_b.len()),
                format!("1 resp in 4-4 size={} id=9 ok query_record=b.x.test query_type=A rcode=NOERROR", tr_b.len()),
            ],
        },
        Case {
            name: "udp: a datagram cut by the capture keeps its id, outcome and size",
            chunks: vec![
                TestChunk::egress(1, &q_a).datagram(),
                TestChunk::ingress(2, &r_big[..20]).truncated(r_big.len() as u64).datagram(),
            ],
            close: vec![],
            expect: vec![
                format!("1 req out 1-1 size={} id=4660 ok query_record=x.test query_type=A", q_a.len()),
                format!("1 resp in 2-2 size={} id=4660 ok rcode=NOERROR", r_big.len()),
            ],
        },
        Case {
            name: "tcp: length prefix and body in separate reads",
            chunks: vec![TestChunk::egress(1, &tq[..2]), TestChunk::egress(2, &tq[2..]), TestChunk::ingress(3, &tr)],
            close: vec![],
            expect: vec![
                format!("1 req out 1-2 size={} id=4660 ok query_record=x.test query_type=A", tq.len()),
                format!("1 resp in 3-3 size={} id=4660 ok query_record=x.test query_type=A rcode=NOERROR", tr.len()),
            ],
        },
        Case {
            name: "names: an over-long one's text cut at 255 bytes, bytes not UTF-8 replaced; both still pair",
            chunks: vec![
                TestChunk::egress(1, &q_long).datagram(),
                TestChunk::ingress(2, &r_long).datagram(),
                TestChunk::egress(3, &q_bytes).datagram(),
            ],
            close: vec![],
            expect: vec![
                format!("1 req out 1-1 size={} id=8192 ok query_record={} query_type=A", q_long.len(), &long[..255]),
                format!(
                    "1 resp in 2-2 size={} id=8192 ok query_record={} query_type=A rcode=NOERROR",
                    r_long.len(),
                    &long[..255]
                ),
                format!(
                    "1 req out 3-3 size={} id=8193 ok query_record=caf\u{fffd}\u{fffd}.test query_type=A",
                    q_bytes.len()
                ),
            ],
        },
        Case {
            name: "tcp framing, split",
            chunks: vec![TestChunk::egress(1, &tq), TestChunk::ingress(2, &tr[..5]), TestChunk::ingress(3, &tr[5..])],
            close: vec![],
            expect: vec![
                format!("1 req out 1-1 size={} id=4660 ok query_record=x.test query_type=A", tq.len()),
                format!("1 resp in 2-3 size={} id=4660 ok query_record=x.test query_type=A rcode=NOERROR", tr.len()),
            ],
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Dns;
    use wirelens_sdk::testing::check;
    use wirelens_sdk::{Direction, Protocol, Role};

    #[test]
    fn every_case() {
        for case in all() {
            check::<Dns>(&case);
        }
    }

    #[test]
    fn detect() {
        let q = message(1, false, 0, "example.com", 1, 0);
        assert!(Dns.detect(Direction::Egress, Role::Client, &q) >= 80);
        assert!(Dns.detect(Direction::Egress, Role::Client, &tcp(&q)) >= 90);
        // Datagrams whose id, read as a length prefix, claims more than is
        // there (any id from 0x0100 up): still whole datagrams.
        for id in [0x0100, 0x7f00, 0xab12, 0xffff] {
            let q = message(id, false, 0, "one.x.test", 1, 0);
            assert!(Dns.detect(Direction::Egress, Role::Client, &q) >= 80, "id {id:#x}");
        }
        // A TCP message read a piece at a time: its first bytes grow.
        let t = tcp(&q);
        assert!(
            Dns.detect(Direction::Egress, Role::Client, &t[..2]) < 50
                || Dns.detect(Direction::Egress, Role::Client, &t) >= 90
        );
        assert_eq!(Dns.detect(Direction::Egress, Role::Client, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
        assert_eq!(Dns.detect(Direction::Egress, Role::Client, b"*1\r\n$4\r\nPING\r\n"), 0);
    }

    #[test]
    fn fixtures_recorded_from_real_servers() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/dns");
        assert!(wirelens_sdk::testing::check_fixtures::<Dns>(&dir, 50) >= 1);
    }

    /// Mutated cases and random bytes: messages or errors, never a panic.
    #[test]
    fn random_bytes_never_panic() {
        wirelens_sdk::testing::fuzz::<Dns>(&all(), 20_000, 11);
    }

    /// Reads of one byte, and the server's view of every case (whole and a
    /// byte at a time), give the same messages.
    #[test]
    fn one_byte_reads_and_the_server_side() {
        wirelens_sdk::testing::check_one_byte_reads::<crate::Dns>(&all());
        wirelens_sdk::testing::check_server_side::<crate::Dns>(&all());
    }

    /// Other protocols' first bytes and random bytes are not claimed.
    #[test]
    fn claims_no_foreign_protocol() {
        wirelens_sdk::testing::check_claims_no_foreign_protocol::<crate::Dns>();
    }
}
