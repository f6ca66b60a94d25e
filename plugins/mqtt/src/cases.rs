//! Test cases shared by the native tests and the daemon's wasm test. The
//! packets follow the MQTT 3.1.1 and 5.0 specifications and what
//! mosquitto 2.0 and its clients send (`tests/fixtures/mqtt` holds streams
//! recorded from them).

use wirelens_sdk::testing::{Case, TestChunk};

/// A packet: fixed header byte, then the body with its remaining length.
pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![first];
    let mut n = body.len();
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        p.push(b);
        if n == 0 {
            break;
        }
    }
    p.extend_from_slice(body);
    p
}

fn string(s: &[u8]) -> Vec<u8> {
    [&(s.len() as u16).to_be_bytes()[..], s].concat()
}

/// CONNECT at protocol level `level` (4: 3.1.1, 5: 5.0), client id `id`.
pub fn connect(level: u8, id: &str) -> Vec<u8> {
    let mut body = [string(b"MQTT"), vec![level, 0x02, 0x00, 0x3c]].concat();
    if level == 5 {
        body.push(0); // no properties
    }
    body.extend(string(id.as_bytes()));
    packet(0x10, &body)
}

pub fn connack(level: u8, code: u8) -> Vec<u8> {
    let mut body = vec![0, code];
    if level == 5 {
        body.push(0);
    }
    packet(0x20, &body)
}

/// PUBLISH of `payload` to `topic` at `qos` (packet id `id` when QoS > 0),
/// 3.1.1 layout (no properties).
pub fn publish(topic: &str, qos: u8, id: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = string(topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&id.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(0x30 | (qos << 1), &body)
}

/// The same in 5.0's layout (an empty property list after the packet id).
pub fn publish5(topic: &str, qos: u8, id: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = string(topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&id.to_be_bytes());
    }
    body.push(0);
    body.extend_from_slice(payload);
    packet(0x30 | (qos << 1), &body)
}

/// PUBACK (0x40), PUBREC (0x50), PUBREL (0x62), PUBCOMP (0x70), UNSUBACK
/// (0xb0) of packet id `id`, with a 5.0 reason code when `code` is given.
pub fn ack(first: u8, id: u16, code: Option<u8>) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    body.extend(code);
    packet(first, &body)
}

fn subscribe(id: u16, filter: &str, qos: u8) -> Vec<u8> {
    packet(0x82, &[&id.to_be_bytes()[..], &string(filter.as_bytes()), &[qos]].concat())
}

/// 5.0 SUBSCRIBE and SUBACK: no properties.
fn subscribe5(id: u16, filter: &str, qos: u8) -> Vec<u8> {
    packet(0x82, &[&id.to_be_bytes()[..], &[0], &string(filter.as_bytes()), &[qos]].concat())
}

fn suback5(id: u16, code: u8) -> Vec<u8> {
    packet(0x90, &[&id.to_be_bytes()[..], &[0, code]].concat())
}

fn suback(id: u16, code: u8) -> Vec<u8> {
    packet(0x90, &[&id.to_be_bytes()[..], &[code]].concat())
}

pub const PINGREQ: [u8; 2] = [0xc0, 0x00];
pub const PINGRESP: [u8; 2] = [0xd0, 0x00];
const DISCONNECT: [u8; 2] = [0xe0, 0x00];

fn line(kind: &str, dir: &str, ts: u64, size: usize, ok: bool, id: Option<u16>, fields: &str) -> String {
    let id = id.map(|i| format!(" id={i}")).unwrap_or_default();
    let fields = if fields.is_empty() { String::new() } else { format!(" {fields}") };
    format!("1 {kind} {dir} {ts}-{ts} size={size}{id} {}{fields}", if ok { "ok" } else { "fail" })
}

pub fn all() -> Vec<Case> {
    let c4 = connect(4, "wl-1");
    let c5 = connect(5, "wl-5");
    let p0 = publish("wl/zero", 0, 0, b"q0");
    let p1 = publish("wl/one", 1, 7, b"q1");
    let p2 = publish("wl/two", 2, 8, b"q2");
    let p5 = publish5("wl/one", 1, 7, b"q1");
    let sub = subscribe(3, "wl/#", 1);
    let delivery1 = publish("wl/one", 1, 40, b"q1");
    let big = publish("wl/big", 1, 9, &vec![b'x'; 100_000]);
    vec![
        Case {
            name: "3.1.1: connect, publish at each QoS, ping, disconnect",
            chunks: vec![
                TestChunk::egress(1, &c4),
                TestChunk::ingress(2, connack(4, 0)),
                TestChunk::egress(3, [p0.clone(), p1.clone()].concat()),
                TestChunk::ingress(4, ack(0x40, 7, None)),
                TestChunk::egress(5, &p2),
                TestChunk::ingress(6, ack(0x50, 8, None)),
                TestChunk::egress(7, ack(0x62, 8, None)),
                TestChunk::ingress(8, ack(0x70, 8, None)),
                TestChunk::egress(9, PINGREQ),
                TestChunk::ingress(10, PINGRESP),
                TestChunk::egress(11, DISCONNECT),
            ],
            close: vec![],
            expect: vec![
                line("req", "out", 1, c4.len(), true, None, "packet_type=CONNECT"),
                line("resp", "in", 2, 4, true, None, "reason_code=0"),
                line("oneway", "out", 3, p0.len(), true, None, "packet_type=PUBLISH topic=wl/zero qos=0"),
                line("req", "out", 3, p1.len(), true, Some(7), "packet_type=PUBLISH topic=wl/one qos=1"),
                line("resp", "in", 4, 4, true, Some(7), "reason_code=0"),
                line("req", "out", 5, p2.len(), true, Some(8), "packet_type=PUBLISH topic=wl/two qos=2"),
                line("resp", "in", 6, 4, true, Some(8), "reason_code=0"),
                line("req", "out", 7, 4, true, Some(8), "packet_type=PUBREL"),
                line("resp", "in", 8, 4, true, Some(8), "reason_code=0"),
                line("req", "out", 9, 2, true, None, "packet_type=PINGREQ"),
                line("resp", "in", 10, 2, true, None, ""),
                line("oneway", "out", 11, 2, true, None, "packet_type=DISCONNECT"),
            ],
        },
        Case {
            name: "subscribe, deliveries one-way, their acknowledgements passed over",
            chunks: vec![
                TestChunk::egress(1, &sub),
                TestChunk::ingress(2, suback(3, 1)),
                TestChunk::ingress(3, &delivery1),
                TestChunk::egress(4, ack(0x40, 40, None)),
                TestChunk::ingress(5, publish("wl/two", 2, 41, b"q2")),
                TestChunk::egress(6, ack(0x50, 41, None)),
                TestChunk::ingress(7, ack(0x62, 41, None)),
                TestChunk::egress(8, ack(0x70, 41, None)),
            ],
            close: vec![],
            expect: vec![
                line("req", "out", 1, sub.len(), true, Some(3), "packet_type=SUBSCRIBE topic=wl/# qos=1"),
                line("resp", "in", 2, 5, true, Some(3), "reason_code=1"),
                line("oneway", "in", 3, delivery1.len(), true, None, "packet_type=PUBLISH topic=wl/one qos=1"),
                line("oneway", "in", 5, 14, true, None, "packet_type=PUBLISH topic=wl/two qos=2"),
            ],
        },
        Case {
            name: "a 3.1.1 CONNACK refusal",
            chunks: vec![TestChunk::egress(1, &c4), TestChunk::ingress(2, connack(4, 5))],
            close: vec![],
            expect: vec![
                line("req", "out", 1, c4.len(), true, None, "packet_type=CONNECT"),
                line("resp", "in", 2, 4, false, None, "reason_code=5"),
            ],
        },
        Case {
            name: "5.0: a SUBACK refusal, PUBACK reason codes",
            chunks: vec![
                TestChunk::egress(3, &c5),
                TestChunk::ingress(4, connack(5, 0)),
                TestChunk::egress(5, subscribe5(3, "wl/#", 1)),
                TestChunk::ingress(6, suback5(3, 0x80)),
                TestChunk::egress(7, &p5),
                TestChunk::ingress(8, ack(0x40, 7, Some(0x87))),
                TestChunk::egress(9, &p5),
                TestChunk::ingress(10, ack(0x40, 7, Some(0x10))),
            ],
            close: vec![],
            expect: vec![
                line("req", "out", 3, c5.len(), true, None, "packet_type=CONNECT"),
                line("resp", "in", 4, 5, true, None, "reason_code=0"),
                line("req", "out", 5, sub.len() + 1, true, Some(3), "packet_type=SUBSCRIBE topic=wl/# qos=1"),
                line("resp", "in", 6, 6, false, Some(3), "reason_code=128"),
                line("req", "out", 7, p5.len(), true, Some(7), "packet_type=PUBLISH topic=wl/one qos=1"),
                line("resp", "in", 8, 5, false, Some(7), "reason_code=135"),
                line("req", "out", 9, p5.len(), true, Some(7), "packet_type=PUBLISH topic=wl/one qos=1"),
                // 0x10: no matching subscribers, still a success.
                line("resp", "in", 10, 5, true, Some(7), "reason_code=16"),
            ],
        },
        Case {
            name: "a payload longer than the capture is skipped by its length",
            chunks: vec![
                TestChunk::egress(1, &big[..4096]).truncated(big.len() as u64),
                TestChunk::ingress(2, ack(0x40, 9, None)),
                TestChunk::egress(3, PINGREQ),
                TestChunk::ingress(4, PINGRESP),
            ],
            close: vec![],
            expect: vec![
                line("req", "out", 1, big.len(), true, Some(9), "packet_type=PUBLISH topic=wl/big qos=1"),
                line("resp", "in", 2, 4, true, Some(9), "reason_code=0"),
                line("req", "out", 3, 2, true, None, "packet_type=PINGREQ"),
                line("resp", "in", 4, 2, true, None, ""),
            ],
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Mqtt;
    use wirelens_sdk::testing::run;
    use wirelens_sdk::{Direction, Protocol, Role};

    #[test]
    fn cases() {
        for case in all() {
            assert_eq!(run::<Mqtt>(&case.chunks, &case.close), case.expect, "{}", case.name);
        }
    }

    #[test]
    fn detect() {
        let m = Mqtt;
        assert!(m.detect(Direction::Egress, Role::Client, &connect(4, "a")) >= 90);
        assert!(m.detect(Direction::Ingress, Role::Server, &connect(5, "a")) >= 90);
        assert!(m.detect(Direction::Egress, Role::Client, &connect(4, "a")[..6]) < 50);
        assert!(m.detect(Direction::Ingress, Role::Client, &connack(4, 0)) < 50);
        assert_eq!(m.detect(Direction::Egress, Role::Client, b"GET / HTTP/1.1\r\n"), 0);
        // Joined midway: whole publishes to printable topics.
        assert!(m.detect(Direction::Egress, Role::Client, &publish("room/1", 1, 3, b"21.5")) >= 50);
        let two = [publish("a/b", 0, 0, b"x"), publish("a/c", 1, 4, b"y")].concat();
        assert!(m.detect(Direction::Ingress, Role::Client, &two) >= 50);
        assert_eq!(m.detect(Direction::Egress, Role::Client, &publish("room/1", 1, 3, b"21.5")[..7]), 0);
        assert_eq!(m.detect(Direction::Egress, Role::Client, &publish("room/#", 0, 0, b"")), 0);
    }

    #[test]
    fn fixtures_recorded_from_real_servers() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/mqtt");
        assert!(wirelens_sdk::testing::check_fixtures::<Mqtt>(&dir, 50) >= 1);
    }

    #[test]
    fn random_rechunking_gives_the_same_messages() {
        wirelens_sdk::testing::check_rechunking::<Mqtt>(&all(), 200, 0x5eed);
    }

    /// Mutated cases and random bytes: messages or errors, never a panic.
    #[test]
    fn random_bytes_never_panic() {
        wirelens_sdk::testing::fuzz::<Mqtt>(&all(), 20_000, 11);
    }

    #[test]
    fn one_byte_reads_and_the_server_side() {
        wirelens_sdk::testing::check_one_byte_reads::<Mqtt>(&all());
        wirelens_sdk::testing::check_server_side::<Mqtt>(&all());
    }

    #[test]
    fn claims_no_foreign_protocol() {
        wirelens_sdk::testing::check_claims_none_but::<Mqtt>(&["MQTT"]);
    }

    /// A lost PUBACK costs its call's outcome only; the ping beside it
    /// stays paired in order while publishes pair by id.
    #[test]
    fn a_lost_acknowledgement_costs_only_its_call() {
        let chunks = vec![
            TestChunk::egress(1, publish("a", 1, 1, b"x")),
            TestChunk::egress(2, PINGREQ),
            TestChunk::egress(3, publish("a", 1, 2, b"y")),
            TestChunk::ingress(4, b"").truncated(4),
            TestChunk::ingress(5, PINGRESP),
            TestChunk::ingress(6, ack(0x40, 2, None)),
        ];
        let got = run::<Mqtt>(&chunks, &[1]);
        let requests = got.iter().filter(|l| l.contains(" req ")).count();
        let responses = got.iter().filter(|l| l.contains(" resp ")).count();
        assert!(!got.iter().any(|l| l.contains("error")), "{got:?}");
        assert_eq!((requests, responses), (3, 3), "{got:?}");
    }
}
