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
    vec![
        Case {
            name: "udp query and answer",
            chunks: vec![TestChunk::egress(1, &q_a), TestChunk::ingress(2, &r_a)],
            close: vec![],
            expect: vec![
                format!("1 req out 1-1 size={} id=4660 ok query_record=x.test query_type=A", q_a.len()),
                format!("1 resp in 2-2 size={} id=4660 ok query_record=x.test query_type=A rcode=NOERROR", r_a.len()),
            ],
        },
        Case {
            name: "two queries in flight, answered in reverse; NXDOMAIN fails",
            chunks: vec![
                TestChunk::egress(1, &q_a),
                TestChunk::egress(2, &q_aaaa),
                TestChunk::ingress(3, &r_aaaa),
                TestChunk::ingress(4, &r_a),
                TestChunk::egress(5, &q_nx),
                TestChunk::ingress(6, &r_nx),
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
            name: "tcp: a server that read the length prefix alone, then the body",
            chunks: vec![
                TestChunk::ingress(1, &q_a).role(wirelens_sdk::Role::Server),
                TestChunk::egress(2, &tr).role(wirelens_sdk::Role::Server),
            ],
            close: vec![],
            expect: vec![
                format!("1 req in 1-1 size={} id=4660 ok query_record=x.test query_type=A", q_a.len()),
                format!("1 resp out 2-2 size={} id=4660 ok query_record=x.test query_type=A rcode=NOERROR", tr.len()),
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
}
