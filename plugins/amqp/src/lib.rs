//! AMQP 0-9-1 plugin (RabbitMQ's protocol).
//!
//! Frames (method, content header, body, heartbeat) are read one at a time
//! and belong to their channel's message: channels interleave on a
//! connection, so each channel's message is kept apart (the SDK's parts,
//! keyed by channel). A method that carries content (`basic.publish`,
//! `basic.deliver`, `basic.return`, `basic.get-ok`) ends with the last body
//! frame its content header announced; bodies are skipped by their size,
//! copied or not.
//!
//! Calls: a synchronous method the client sends (`queue.declare`,
//! `basic.consume`, `channel.open`, `connection.open`, ...) and the server's
//! reply on the same channel (its `-ok`, `basic.get-empty`, or a
//! `channel.close`/`connection.close` refusing it, which fails the call).
//! Methods sent with `no-wait` are one-way, as are `basic.publish`,
//! deliveries, returns, acks, nacks and rejects, and the server's own
//! `connection.start`, `connection.tune` and closes (failed when their reply
//! code is not 200). The client's answers to those (`start-ok`, `tune-ok`,
//! `close-ok`) and heartbeats are passed over.
//!
//! Fields: `class_method` (`basic.publish`), `exchange`, `routing_key`,
//! `queue`, `reply_code` (closes and returns).

use wirelens_sdk::cursor::Cursor;
use wirelens_sdk::{Ctx, Direction, FieldKey, Fields, Info, Meta, Protocol, Role, Step};

pub mod cases;

pub const CLASS_METHOD: FieldKey = FieldKey(0);
pub const EXCHANGE: FieldKey = FieldKey(1);
pub const ROUTING_KEY: FieldKey = FieldKey(2);
pub const QUEUE: FieldKey = FieldKey(3);
pub const REPLY_CODE: FieldKey = FieldKey(4);

const METHOD: u8 = 1;
const HEADER: u8 = 2;
const BODY: u8 = 3;
const HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xce;
/// Largest frame believed (RabbitMQ's frame_max is 128 KiB by default;
/// clients may raise it).
const MAX_FRAME: u64 = 16 << 20;
/// Bytes of a method frame read for its fields.
const HEAD: usize = 1024;

#[derive(Default)]
pub struct Amqp;

#[derive(Default)]
pub struct Conn {
    /// Content still to come per (direction, channel): body bytes left
    /// (once the header said), and the meta its method's message ends with.
    content: Vec<(usize, u16, Option<u64>, Meta)>,
    /// Channels with a synchronous request of the client awaiting its
    /// reply, and the request's class and method ids.
    waiting: Vec<(u16, u16, u16)>,
    /// Where a method's arguments are read the first time (for its no-wait
    /// bit), kept for its buffers: fresh fields each time were two
    /// allocations and two frees a method, a fifth of the plugin.
    scratch: Fields,
}

impl Conn {
    fn content_at(&self, d: usize, channel: u16) -> Option<usize> {
        self.content.iter().position(|c| c.0 == d && c.1 == channel)
    }
}

/// `class.method` names, and what each is: (class id, method id, name,
/// kind). Kinds: a client's synchronous request, its reply, one-way either
/// way, the server's own request whose client answer is passed over, that
/// answer.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Request,
    Reply,
    Oneway,
    ServerAsks,
    ClientAnswers,
    /// connection.close and channel.close: either side (a refusal when the
    /// server sends it while a request waits).
    Close,
    CloseOk,
}

static METHODS: [(u16, u16, &str, Kind); 50] = [
    (10, 10, "connection.start", Kind::ServerAsks),
    (10, 11, "connection.start-ok", Kind::ClientAnswers),
    (10, 20, "connection.secure", Kind::ServerAsks),
    (10, 21, "connection.secure-ok", Kind::ClientAnswers),
    (10, 30, "connection.tune", Kind::ServerAsks),
    (10, 31, "connection.tune-ok", Kind::ClientAnswers),
    (10, 40, "connection.open", Kind::Request),
    (10, 41, "connection.open-ok", Kind::Reply),
    (10, 50, "connection.close", Kind::Close),
    (10, 51, "connection.close-ok", Kind::CloseOk),
    (10, 60, "connection.blocked", Kind::Oneway),
    (10, 61, "connection.unblocked", Kind::Oneway),
    (10, 70, "connection.update-secret", Kind::Request),
    (10, 71, "connection.update-secret-ok", Kind::Reply),
    (20, 10, "channel.open", Kind::Request),
    (20, 11, "channel.open-ok", Kind::Reply),
    (20, 20, "channel.flow", Kind::Request),
    (20, 21, "channel.flow-ok", Kind::Reply),
    (20, 40, "channel.close", Kind::Close),
    (20, 41, "channel.close-ok", Kind::CloseOk),
    (40, 10, "exchange.declare", Kind::Request),
    (40, 11, "exchange.declare-ok", Kind::Reply),
    (40, 20, "exchange.delete", Kind::Request),
    (40, 21, "exchange.delete-ok", Kind::Reply),
    (40, 30, "exchange.bind", Kind::Request),
    (40, 31, "exchange.bind-ok", Kind::Reply),
    (40, 40, "exchange.unbind", Kind::Request),
    (40, 51, "exchange.unbind-ok", Kind::Reply),
    (50, 10, "queue.declare", Kind::Request),
    (50, 11, "queue.declare-ok", Kind::Reply),
    (50, 20, "queue.bind", Kind::Request),
    (50, 21, "queue.bind-ok", Kind::Reply),
    (50, 30, "queue.purge", Kind::Request),
    (50, 31, "queue.purge-ok", Kind::Reply),
    (50, 40, "queue.delete", Kind::Request),
    (50, 41, "queue.delete-ok", Kind::Reply),
    (50, 50, "queue.unbind", Kind::Request),
    (50, 51, "queue.unbind-ok", Kind::Reply),
    (60, 10, "basic.qos", Kind::Request),
    (60, 11, "basic.qos-ok", Kind::Reply),
    (60, 20, "basic.consume", Kind::Request),
    (60, 21, "basic.consume-ok", Kind::Reply),
    (60, 30, "basic.cancel", Kind::Request),
    (60, 31, "basic.cancel-ok", Kind::Reply),
    (60, 40, "basic.publish", Kind::Oneway),
    (60, 50, "basic.return", Kind::Oneway),
    (60, 60, "basic.deliver", Kind::Oneway),
    (60, 70, "basic.get", Kind::Request),
    (60, 71, "basic.get-ok", Kind::Reply),
    (60, 72, "basic.get-empty", Kind::Reply),
];

/// Methods past the table's size limit.
static MORE: [(u16, u16, &str, Kind); 11] = [
    (60, 80, "basic.ack", Kind::Oneway),
    (60, 90, "basic.reject", Kind::Oneway),
    (60, 100, "basic.recover-async", Kind::Oneway),
    (60, 110, "basic.recover", Kind::Request),
    (60, 111, "basic.recover-ok", Kind::Reply),
    (60, 120, "basic.nack", Kind::Oneway),
    (85, 10, "confirm.select", Kind::Request),
    (85, 11, "confirm.select-ok", Kind::Reply),
    (90, 10, "tx.select", Kind::Request),
    (90, 11, "tx.select-ok", Kind::Reply),
    (90, 20, "tx.commit", Kind::Request),
];

static TX_MORE: [(u16, u16, &str, Kind); 3] = [
    (90, 21, "tx.commit-ok", Kind::Reply),
    (90, 30, "tx.rollback", Kind::Request),
    (90, 31, "tx.rollback-ok", Kind::Reply),
];

/// The method's name and kind. The tables are in `(class, id)` order
/// (tested): a binary search, where a scan was a tenth of the plugin's time.
fn method(class: u16, id: u16) -> Option<(&'static str, Kind)> {
    [&METHODS[..], &MORE[..], &TX_MORE[..]].into_iter().find_map(|table| {
        let at = table.binary_search_by_key(&(class, id), |m| (m.0, m.1)).ok()?;
        Some((table[at].2, table[at].3))
    })
}

/// Methods that carry content (a header frame and body frames follow).
fn has_content(class: u16, id: u16) -> bool {
    class == 60 && matches!(id, 40 | 50 | 60 | 71)
}

fn shortstr<'a>(cur: &mut Cursor<'a>) -> Option<&'a [u8]> {
    let n = cur.u8()?;
    cur.take(usize::from(n))
}

fn text(fields: &mut Fields, key: FieldKey, s: &[u8]) {
    if !s.is_empty() {
        fields.text(key, s);
    }
}

/// A method's fields, and whether its `no-wait` bit is set.
fn arguments(class: u16, id: u16, cur: &mut Cursor, fields: &mut Fields) -> Option<bool> {
    let bit = |b: u8, n: u8| b & (1 << n) != 0;
    Some(match (class, id) {
        (10, 50) | (20, 40) => {
            let code = cur.u16_be()?;
            fields.int(REPLY_CODE, i64::from(code));
            false
        }
        (40, 10) => {
            cur.skip(2)?;
            text(fields, EXCHANGE, shortstr(cur)?);
            shortstr(cur)?; // type
            bit(cur.u8()?, 4)
        }
        (40, 20) => {
            cur.skip(2)?;
            text(fields, EXCHANGE, shortstr(cur)?);
            bit(cur.u8()?, 1)
        }
        (40, 30 | 40) => {
            cur.skip(2)?;
            text(fields, EXCHANGE, shortstr(cur)?); // destination
            shortstr(cur)?; // source
            text(fields, ROUTING_KEY, shortstr(cur)?);
            bit(cur.u8()?, 0)
        }
        (50, 10) => {
            cur.skip(2)?;
            text(fields, QUEUE, shortstr(cur)?);
            bit(cur.u8()?, 4)
        }
        (50, 20 | 50) => {
            cur.skip(2)?;
            text(fields, QUEUE, shortstr(cur)?);
            text(fields, EXCHANGE, shortstr(cur)?);
            text(fields, ROUTING_KEY, shortstr(cur)?);
            id == 20 && bit(cur.u8()?, 0)
        }
        (50, 30) => {
            cur.skip(2)?;
            text(fields, QUEUE, shortstr(cur)?);
            bit(cur.u8()?, 0)
        }
        (50, 40) => {
            cur.skip(2)?;
            text(fields, QUEUE, shortstr(cur)?);
            bit(cur.u8()?, 2)
        }
        (50, 11) => {
            text(fields, QUEUE, shortstr(cur)?);
            false
        }
        (60, 20) => {
            cur.skip(2)?;
            text(fields, QUEUE, shortstr(cur)?);
            shortstr(cur)?; // consumer tag
            bit(cur.u8()?, 3)
        }
        (60, 30) => {
            shortstr(cur)?;
            bit(cur.u8()?, 0)
        }
        (60, 40) => {
            cur.skip(2)?;
            text(fields, EXCHANGE, shortstr(cur)?);
            text(fields, ROUTING_KEY, shortstr(cur)?);
            false
        }
        (60, 50) => {
            let code = cur.u16_be()?;
            fields.int(REPLY_CODE, i64::from(code));
            shortstr(cur)?;
            text(fields, EXCHANGE, shortstr(cur)?);
            text(fields, ROUTING_KEY, shortstr(cur)?);
            false
        }
        (60, 60) => {
            shortstr(cur)?; // consumer tag
            cur.skip(9)?; // delivery tag, redelivered
            text(fields, EXCHANGE, shortstr(cur)?);
            text(fields, ROUTING_KEY, shortstr(cur)?);
            false
        }
        (60, 70) => {
            cur.skip(2)?;
            text(fields, QUEUE, shortstr(cur)?);
            false
        }
        (60, 71) => {
            cur.skip(9)?;
            text(fields, EXCHANGE, shortstr(cur)?);
            text(fields, ROUTING_KEY, shortstr(cur)?);
            false
        }
        (85, 10) => bit(cur.u8()?, 0),
        _ => false,
    })
}

/// A frame's header: type, channel, payload size.
fn frame_header(buf: &[u8]) -> Option<(u8, u16, u64)> {
    let h = buf.get(..7)?;
    Some((h[0], u16::from_be_bytes([h[1], h[2]]), u64::from(u32::from_be_bytes([h[3], h[4], h[5], h[6]]))))
}

fn part(n: u64, channel: u16, end: Option<Meta>) -> Step {
    Step::Part { n, part: u64::from(channel), end: end.map(|m| m.with_pair_id(u64::from(channel))) }
}

/// A method frame as [`Amqp::method_meta`] needs it.
struct MethodFrame {
    kind: Kind,
    channel: u16,
    class: u16,
    id: u16,
    /// Closes: the reply code, and the class and method that failed.
    close: Option<(u16, u16, u16)>,
    no_wait: bool,
}

impl Amqp {
    /// The meta a method frame's message ends with, and the channel whose
    /// request it answers (`None`: passed over).
    fn method_meta(conn: &mut Conn, m: &MethodFrame, requests: bool) -> Option<(Meta, u16)> {
        let waiting = conn.waiting.iter().position(|w| w.0 == m.channel);
        let wait = |conn: &mut Conn| {
            if waiting.is_none() {
                conn.waiting.push((m.channel, m.class, m.id));
            }
        };
        let answer = |conn: &mut Conn| {
            if let Some(i) = waiting {
                conn.waiting.swap_remove(i);
            }
        };
        let meta = match (m.kind, requests) {
            (Kind::Request, true) if !m.no_wait => {
                wait(conn);
                Meta::request()
            }
            (Kind::Close, true) => {
                wait(conn);
                Meta::request()
            }
            (Kind::Reply | Kind::CloseOk, false) => {
                answer(conn);
                Meta::response(true)
            }
            // The server closes: a refusal of the request waiting on the
            // channel; a connection.close names the class and method that
            // failed, on whatever channel it waits; else news of its own.
            (Kind::Close, false) => {
                let (code, class, id) = m.close.unwrap_or((0, 0, 0));
                if waiting.is_some() {
                    answer(conn);
                    return Some((Meta::response(false), m.channel));
                }
                let failed = conn.waiting.iter().position(|w| m.channel == 0 && (w.1, w.2) == (class, id));
                if let Some(i) = failed.filter(|_| code != 200) {
                    let (channel, _, _) = conn.waiting.swap_remove(i);
                    return Some((Meta::response(false), channel));
                }
                Meta { success: code == 200 || code == 0, ..Meta::oneway() }
            }
            // A server's own requests (basic.cancel of a deleted queue's
            // consumer, channel.flow) are news to the client: one-way.
            (Kind::ServerAsks, false) | (Kind::Oneway, _) | (Kind::Request, _) => Meta::oneway(),
            // The client's answers to those and to the handshake.
            (Kind::ClientAnswers | Kind::CloseOk | Kind::Reply, true) => return None,
            // A method sent the wrong way.
            _ => Meta { success: false, ..Meta::oneway() },
        };
        Some((meta, m.channel))
    }
}

impl Protocol for Amqp {
    type Conn = Conn;

    fn info() -> Info {
        Info {
            name: "amqp",
            version: env!("CARGO_PKG_VERSION"),
            description: "AMQP 0-9-1 (RabbitMQ)",
            default_ports: &[5672],
            field_names: &["class_method", "exchange", "routing_key", "queue", "reply_code"],
            max_buffer: 128 * 1024,
        }
    }

    fn call_field() -> Option<&'static str> {
        Some("class_method")
    }

    fn detect(&self, direction: Direction, role: Role, bytes: &[u8]) -> u8 {
        let ctx = Ctx::for_detect(direction, role);
        if bytes.starts_with(b"AMQP") {
            return match bytes.get(4..8) {
                Some([0, 0, 9, 1]) if ctx.carries_requests_or_egress() => 95,
                Some(_) => 60,
                None => 0,
            };
        }
        // connection.start, or (joined midway: AMQP connections live long)
        // a whole method frame of a known method ending where its size says.
        let Some((kind, _, size)) = frame_header(bytes) else { return 0 };
        if kind != METHOD
            || size < 4
            || usize::try_from(7 + size).ok().and_then(|end| bytes.get(end)) != Some(&FRAME_END)
        {
            return 0;
        }
        let class = u16::from_be_bytes([bytes[7], bytes[8]]);
        let id = u16::from_be_bytes([bytes[9], bytes[10]]);
        match method(class, id) {
            Some(("connection.start", _)) if !ctx.carries_requests_or_egress() => 90,
            Some(_) => 60,
            None => 0,
        }
    }

    fn parse(&self, conn: &mut Conn, ctx: &Ctx, buf: &[u8], fields: &mut Fields) -> Step {
        let requests = ctx.carries_requests_or_egress();
        let d = ctx.direction.index();
        if buf.starts_with(b"AMQP") || (buf.len() < 4 && b"AMQP".starts_with(buf)) {
            // The protocol header (or a server's, naming the version it
            // speaks when refusing another).
            return if buf.len() < 8 { Step::NeedMore } else { Step::Discard(8) };
        }
        let Some((kind, channel, size)) = frame_header(buf) else { return Step::NeedMore };
        if size > MAX_FRAME {
            return Step::Invalid(format!("AMQP frame of {size} bytes"));
        }
        let total = 7 + size + 1;
        // Frames other than bodies are small: read whole, and checked by
        // their end byte.
        if kind != BODY && (buf.len() as u64) < total.min(7 + HEAD as u64) && !ctx.truncated {
            return Step::NeedMore;
        }
        if kind != BODY && (buf.len() as u64) >= total && buf[total as usize - 1] != FRAME_END {
            return Step::Invalid("AMQP frame without its end byte".into());
        }
        match kind {
            METHOD => {
                let mut cur = Cursor::new(&buf[7..(total as usize).min(buf.len())]);
                let (Some(class), Some(id)) = (cur.u16_be(), cur.u16_be()) else {
                    return if ctx.truncated {
                        Step::NeedMore
                    } else {
                        Step::Invalid("AMQP method frame too short".into())
                    };
                };
                let Some((name, method_kind)) = method(class, id) else {
                    return Step::Invalid(format!("unknown AMQP method {class}.{id}"));
                };
                // Read once for no-wait (what the message is depends on it),
                // then again into the fields after the name.
                let args_at = cur.position();
                let no_wait = arguments(class, id, &mut cur, &mut conn.scratch).unwrap_or(false);
                conn.scratch.clear();
                let close = match (class, id) {
                    (10, 50) | (20, 40) => {
                        let mut c = Cursor::new(&buf[11..(total as usize).min(buf.len())]);
                        let code = c.u16_be().unwrap_or(0);
                        let _text = shortstr(&mut c);
                        Some((code, c.u16_be().unwrap_or(0), c.u16_be().unwrap_or(0)))
                    }
                    _ => None,
                };
                let frame = MethodFrame { kind: method_kind, channel, class, id, close, no_wait };
                let Some((meta, answers)) = Self::method_meta(conn, &frame, requests) else {
                    return Step::Discard(total);
                };
                // Fields: the name on requests and one-way messages (a
                // reply's call is named by its request).
                if meta.kind != wirelens_sdk::MessageKind::Response || method_kind == Kind::Close {
                    fields.str(CLASS_METHOD, name);
                }
                let mut cur = Cursor::new(&buf[7 + args_at..(total as usize).min(buf.len())]);
                let _ = arguments(class, id, &mut cur, fields);
                if has_content(class, id) {
                    // Ends with its content.
                    if let Some(i) = conn.content_at(d, channel) {
                        conn.content.swap_remove(i);
                    }
                    conn.content.push((d, channel, None, meta));
                    return part(total, channel, None);
                }
                Step::Part { n: total, part: u64::from(channel), end: Some(meta.with_pair_id(u64::from(answers))) }
            }
            HEADER => {
                let Some(i) = conn.content_at(d, channel) else {
                    return Step::Invalid("AMQP content header without its method".into());
                };
                let body_size = buf.get(11..19).map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")));
                let Some(body_size) = body_size else {
                    return if ctx.truncated {
                        Step::NeedMore
                    } else {
                        Step::Invalid("AMQP content header too short".into())
                    };
                };
                if body_size == 0 {
                    let (_, _, _, meta) = conn.content.swap_remove(i);
                    return part(total, channel, Some(meta));
                }
                conn.content[i].2 = Some(body_size);
                part(total, channel, None)
            }
            BODY => {
                let Some(i) = conn.content_at(d, channel) else {
                    return Step::Invalid("AMQP body without its content header".into());
                };
                let Some(left) = conn.content[i].2 else {
                    return Step::Invalid("AMQP body before its content header".into());
                };
                if size >= left {
                    let (_, _, _, meta) = conn.content.swap_remove(i);
                    return part(total, channel, Some(meta));
                }
                conn.content[i].2 = Some(left - size);
                part(total, channel, None)
            }
            HEARTBEAT => Step::Discard(total),
            other => Step::Invalid(format!("AMQP frame type {other}")),
        }
    }

    /// A message with content in progress (a large publish or delivery
    /// whose later body frames were not copied) is reported with the lost
    /// bytes; content in progress on other channels of this direction is
    /// forgotten (the SDK counts it with the region).
    fn lost(&self, conn: &mut Conn, ctx: &Ctx, _head: &[u8], _fields: &mut Fields) -> Option<Meta> {
        let d = ctx.direction.index();
        let mut first = None;
        conn.content.retain(|c| {
            if c.0 == d {
                first.get_or_insert((c.3, c.1));
                false
            } else {
                true
            }
        });
        let (meta, channel) = first?;
        // Its part (the channel) holds its name and fields.
        Some(meta.with_pair_id(u64::from(channel)))
    }

    /// After lost bytes: a frame header of a known type on a channel below
    /// 2048 whose end byte is where its size says (or past the data).
    fn next_start(&self, _ctx: &Ctx, data: &[u8]) -> Option<usize> {
        (1..data.len().saturating_sub(7)).find(|&at| {
            let Some((kind, channel, size)) = frame_header(&data[at..]) else { return false };
            let end = at as u64 + 7 + size;
            matches!(kind, METHOD | HEADER | BODY | HEARTBEAT)
                && channel < 2048
                && size <= MAX_FRAME
                && (end >= data.len() as u64 || data[end as usize] == FRAME_END)
        })
    }
}

wirelens_sdk::export_plugin!(Amqp);

#[cfg(test)]
mod method_table_tests {
    use super::*;

    /// `method` searches the tables by halves: they must stay in order.
    #[test]
    fn method_tables_are_in_order_and_every_method_is_found() {
        let all: Vec<_> = METHODS.iter().chain(&MORE).chain(&TX_MORE).collect();
        for pair in all.windows(2) {
            assert!((pair[0].0, pair[0].1) < (pair[1].0, pair[1].1), "{} before {}", pair[0].2, pair[1].2);
        }
        for m in &all {
            assert_eq!(method(m.0, m.1).map(|(name, _)| name), Some(m.2));
        }
        assert_eq!(method(60, 41).map(|(name, _)| name), None);
        assert_eq!(method(99, 10).map(|(name, _)| name), None);
    }
}
