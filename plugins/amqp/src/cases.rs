//! Test cases shared by the native tests and the daemon's wasm test. The
//! frames follow the AMQP 0-9-1 specification and what RabbitMQ 3.10 and
//! pika send (`tests/fixtures/amqp` holds streams recorded from them).

use wirelens_sdk::testing::{Case, TestChunk};

pub const PROTOCOL_HEADER: &[u8] = b"AMQP\x00\x00\x09\x01";

/// A frame of `kind` on `channel`.
pub fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    [&[kind][..], &channel.to_be_bytes(), &(payload.len() as u32).to_be_bytes(), payload, &[0xce]].concat()
}

/// A method frame: class, method, arguments.
pub fn method(channel: u16, class: u16, id: u16, args: &[u8]) -> Vec<u8> {
    frame(1, channel, &[&class.to_be_bytes()[..], &id.to_be_bytes(), args].concat())
}

fn shortstr(s: &str) -> Vec<u8> {
    [&[s.len() as u8][..], s.as_bytes()].concat()
}

/// queue.declare of `queue` (`bits`: passive 1, durable 2, ..., no-wait 16).
pub fn queue_declare(channel: u16, queue: &str, bits: u8) -> Vec<u8> {
    method(channel, 50, 10, &[&[0, 0][..], &shortstr(queue), &[bits], &[0, 0, 0, 0]].concat())
}

pub fn queue_declare_ok(channel: u16, queue: &str) -> Vec<u8> {
    method(channel, 50, 11, &[&shortstr(queue)[..], &[0, 0, 0, 0], &[0, 0, 0, 0]].concat())
}

/// basic.publish to `exchange` with `routing_key`, its content header and
/// `body` in body frames of at most `frame_max` bytes.
pub fn publish(channel: u16, exchange: &str, routing_key: &str, body: &[u8], frame_max: usize) -> Vec<u8> {
    let mut out = method(channel, 60, 40, &[&[0, 0][..], &shortstr(exchange), &shortstr(routing_key), &[0]].concat());
    out.extend(content(channel, body, frame_max));
    out
}

fn content(channel: u16, body: &[u8], frame_max: usize) -> Vec<u8> {
    let mut out =
        frame(2, channel, &[&60u16.to_be_bytes()[..], &[0, 0], &(body.len() as u64).to_be_bytes(), &[0, 0]].concat());
    for piece in body.chunks(frame_max) {
        out.extend(frame(3, channel, piece));
    }
    out
}

fn deliver(channel: u16, tag: u64, exchange: &str, routing_key: &str, body: &[u8]) -> Vec<u8> {
    let args = [&shortstr("ctag")[..], &tag.to_be_bytes(), &[0], &shortstr(exchange), &shortstr(routing_key)].concat();
    [method(channel, 60, 60, &args), content(channel, body, 4096)].concat()
}

fn channel_close(channel: u16, code: u16, text: &str) -> Vec<u8> {
    method(channel, 20, 40, &[&code.to_be_bytes()[..], &shortstr(text), &[0, 50, 0, 10]].concat())
}

fn line(kind: &str, dir: &str, ts: u64, size: usize, id: u16, ok: bool, fields: &str) -> String {
    let fields = if fields.is_empty() { String::new() } else { format!(" {fields}") };
    format!("1 {kind} {dir} {ts}-{ts} size={size} id={id} {}{fields}", if ok { "ok" } else { "fail" })
}

pub fn all() -> Vec<Case> {
    let start =
        method(0, 10, 10, &[&[0, 9][..], &[0, 0, 0, 0], &[0, 0, 0, 5], b"PLAIN", &[0, 0, 0, 5], b"en_US"].concat());
    let start_ok =
        method(0, 10, 11, &[&[0, 0, 0, 0][..], &shortstr("PLAIN"), &[0, 0, 0, 2], b"\0g", &shortstr("en_US")].concat());
    let open = method(0, 10, 40, &[&shortstr("/")[..], &[0], &[0]].concat());
    let open_ok = method(0, 10, 41, &[0]);
    let ch_open = method(1, 20, 10, &[0]);
    let ch_open_ok = method(1, 20, 11, &[0, 0, 0, 0]);
    let declare = queue_declare(1, "wl-q", 0);
    let declare_ok = queue_declare_ok(1, "wl-q");
    let pub1 = publish(1, "wl-x", "wl.key", b"hello", 4096);
    let big = publish(1, "wl-x", "wl.big", &vec![b'x'; 300_000], 131_064);
    let d1 = deliver(1, 1, "wl-x", "wl.key", b"hello");
    let ack = method(1, 60, 80, &[&1u64.to_be_bytes()[..], &[0]].concat());
    let missing = queue_declare(2, "missing", 1);
    let refused = channel_close(2, 404, "NOT_FOUND - no queue 'missing'");
    let close_ok = method(2, 20, 41, &[]);
    let heartbeat = frame(8, 0, &[]);
    let ex_declare =
        method(5, 40, 10, &[&[0, 0][..], &shortstr("bad"), &shortstr("nope"), &[0], &[0, 0, 0, 0]].concat());
    let conn_close = method(
        0,
        10,
        50,
        &[&503u16.to_be_bytes()[..], &shortstr("COMMAND_INVALID - unknown exchange type 'nope'"), &[0, 40, 0, 10]]
            .concat(),
    );
    vec![
        Case {
            name: "handshake, declare, publish, deliver, ack, a refused declare",
            chunks: vec![
                TestChunk::egress(1, PROTOCOL_HEADER),
                TestChunk::ingress(2, &start),
                TestChunk::egress(3, [start_ok.clone(), open.clone()].concat()),
                TestChunk::ingress(4, &open_ok),
                TestChunk::egress(5, &ch_open),
                TestChunk::ingress(6, &ch_open_ok),
                TestChunk::egress(7, &declare),
                TestChunk::ingress(8, &declare_ok),
                TestChunk::egress(9, &pub1),
                TestChunk::ingress(10, &d1),
                TestChunk::egress(11, [ack.clone(), heartbeat.clone()].concat()),
                TestChunk::egress(12, &missing),
                TestChunk::ingress(13, &refused),
                TestChunk::egress(14, &close_ok),
            ],
            close: vec![],
            expect: vec![
                line("oneway", "in", 2, start.len(), 0, true, "class_method=connection.start"),
                line("req", "out", 3, open.len(), 0, true, "class_method=connection.open"),
                line("resp", "in", 4, open_ok.len(), 0, true, ""),
                line("req", "out", 5, ch_open.len(), 1, true, "class_method=channel.open"),
                line("resp", "in", 6, ch_open_ok.len(), 1, true, ""),
                line("req", "out", 7, declare.len(), 1, true, "class_method=queue.declare queue=wl-q"),
                line("resp", "in", 8, declare_ok.len(), 1, true, "queue=wl-q"),
                line(
                    "oneway",
                    "out",
                    9,
                    pub1.len(),
                    1,
                    true,
                    "class_method=basic.publish exchange=wl-x routing_key=wl.key",
                ),
                line(
                    "oneway",
                    "in",
                    10,
                    d1.len(),
                    1,
                    true,
                    "class_method=basic.deliver exchange=wl-x routing_key=wl.key",
                ),
                line("oneway", "out", 11, ack.len(), 1, true, "class_method=basic.ack"),
                line("req", "out", 12, missing.len(), 2, true, "class_method=queue.declare queue=missing"),
                line("resp", "in", 13, refused.len(), 2, false, "class_method=channel.close reply_code=404"),
            ],
        },
        Case {
            name: "a connection.close refusing a request on another channel",
            chunks: vec![
                TestChunk::egress(1, &ex_declare),
                TestChunk::ingress(2, &conn_close),
                TestChunk::egress(3, method(0, 10, 51, &[])),
            ],
            close: vec![],
            expect: vec![
                line("req", "out", 1, ex_declare.len(), 5, true, "class_method=exchange.declare exchange=bad"),
                line("resp", "in", 2, conn_close.len(), 5, false, "class_method=connection.close reply_code=503"),
            ],
        },
        Case {
            name: "channels interleave: a delivery's frames around another channel's reply",
            chunks: vec![
                TestChunk::egress(1, queue_declare(2, "b", 0)),
                TestChunk::ingress(2, {
                    let d = deliver(1, 7, "x", "k", b"abcdef");
                    let (m, rest) = d.split_at(d.len() - 14); // the body frame last
                    [m.to_vec(), queue_declare_ok(2, "b"), rest.to_vec()].concat()
                }),
            ],
            close: vec![],
            expect: vec![
                line("req", "out", 1, queue_declare(2, "b", 0).len(), 2, true, "class_method=queue.declare queue=b"),
                line("resp", "in", 2, queue_declare_ok(2, "b").len(), 2, true, "queue=b"),
                line(
                    "oneway",
                    "in",
                    2,
                    deliver(1, 7, "x", "k", b"abcdef").len(),
                    1,
                    true,
                    "class_method=basic.deliver exchange=x routing_key=k",
                ),
            ],
        },
        Case {
            name: "no-wait is one-way; a publish longer than the capture keeps its call and fields",
            chunks: vec![
                TestChunk::egress(1, queue_declare(1, "nw", 16)),
                TestChunk::egress(2, &big[..4096]).truncated(big.len() as u64),
                TestChunk::egress(3, &declare),
                TestChunk::ingress(4, &declare_ok),
            ],
            close: vec![],
            expect: vec![
                line(
                    "oneway",
                    "out",
                    1,
                    queue_declare(1, "nw", 16).len(),
                    1,
                    true,
                    "class_method=queue.declare queue=nw",
                ),
                // The second body frame's header was not copied: the
                // publish's place is lost until the reply at 4 proves the
                // region over. The region (the declare at 3 in it) goes to
                // the publish; the declare's call is counted, its request
                // unseen.
                line(
                    "oneway",
                    "out",
                    2,
                    big.len() + declare.len(),
                    1,
                    true,
                    "class_method=basic.publish exchange=wl-x routing_key=wl.big",
                )
                .replace("2-2", "2-3"),
                "1 req out 2-2 size=0 id=1 unseen".to_string(),
                line("resp", "in", 4, declare_ok.len(), 1, true, "queue=wl-q"),
            ],
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Amqp;
    use wirelens_sdk::testing::run;
    use wirelens_sdk::{Direction, Protocol, Role};

    #[test]
    fn cases() {
        for case in all() {
            assert_eq!(run::<Amqp>(&case.chunks, &case.close), case.expect, "{}", case.name);
        }
    }

    #[test]
    fn detect() {
        let a = Amqp;
        assert!(a.detect(Direction::Egress, Role::Client, PROTOCOL_HEADER) >= 90);
        assert!(a.detect(Direction::Egress, Role::Client, &queue_declare(1, "q", 0)) >= 50);
        assert!(a.detect(Direction::Egress, Role::Client, &queue_declare(1, "q", 0)[..12]) < 50);
        assert_eq!(a.detect(Direction::Egress, Role::Client, b"GET / HTTP/1.1\r\n"), 0);
    }

    #[test]
    fn fixtures_recorded_from_real_servers() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/amqp");
        assert!(wirelens_sdk::testing::check_fixtures::<Amqp>(&dir, 50) >= 1);
    }

    #[test]
    fn random_rechunking_gives_the_same_messages() {
        wirelens_sdk::testing::check_rechunking::<Amqp>(&all(), 200, 0x5eed);
    }

    /// Mutated cases and random bytes: messages or errors, never a panic.
    #[test]
    fn random_bytes_never_panic() {
        wirelens_sdk::testing::fuzz::<Amqp>(&all(), 20_000, 11);
    }

    #[test]
    fn one_byte_reads_and_the_server_side() {
        wirelens_sdk::testing::check_one_byte_reads::<Amqp>(&all());
        wirelens_sdk::testing::check_server_side::<Amqp>(&all());
    }

    #[test]
    fn claims_no_foreign_protocol() {
        wirelens_sdk::testing::check_claims_none_but::<Amqp>(&["AMQP"]);
    }
}
