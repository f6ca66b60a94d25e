//! MQTT 3.1, 3.1.1 and 5.0 plugin.
//!
//! Packets are framed by their fixed header (type, flags, remaining
//! length); what follows the fields is skipped by that length, copied or
//! not. Calls, from the client's requests:
//! - `CONNECT` and its `CONNACK`, `PINGREQ` and its `PINGRESP` (in order);
//! - `PUBLISH` at QoS 1 and its `PUBACK`, at QoS 2 and its `PUBREC`, then
//!   `PUBREL` and its `PUBCOMP`; `SUBSCRIBE` and its `SUBACK`, `UNSUBSCRIBE`
//!   and its `UNSUBACK`: paired by packet id.
//!
//! One-way: `PUBLISH` at QoS 0, every `PUBLISH` the server delivers,
//! `DISCONNECT`, `AUTH`. The acknowledgements of deliveries (the client's
//! `PUBACK`, `PUBREC` and `PUBCOMP`, the server's `PUBREL`) are passed over:
//! the delivery was counted already.
//!
//! Outcome: a reason code of 0x80 and up fails the call (SUBACK: the first
//! topic's), and so does a 3.1/3.1.1 CONNACK refusing the connection (codes
//! 1-5).
//!
//! Fields: `packet_type` (requests and one-way packets), `topic` (PUBLISH;
//! SUBSCRIBE and UNSUBSCRIBE: the first filter), `qos` (PUBLISH; SUBSCRIBE:
//! the first filter's), `reason_code` (answers).

use wirelens_sdk::cursor::Cursor;
use wirelens_sdk::{Ctx, Direction, FieldKey, Fields, Info, Meta, Protocol, Role, Step};

pub mod cases;

pub const PACKET_TYPE: FieldKey = FieldKey(0);
pub const TOPIC: FieldKey = FieldKey(1);
pub const QOS: FieldKey = FieldKey(2);
pub const REASON_CODE: FieldKey = FieldKey(3);

const CONNECT: u8 = 1;
const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const PUBREC: u8 = 5;
const PUBREL: u8 = 6;
const PUBCOMP: u8 = 7;
const SUBSCRIBE: u8 = 8;
const SUBACK: u8 = 9;
const UNSUBSCRIBE: u8 = 10;
const UNSUBACK: u8 = 11;
const PINGREQ: u8 = 12;
const PINGRESP: u8 = 13;
const DISCONNECT: u8 = 14;
const AUTH: u8 = 15;

static NAMES: [&str; 16] = [
    "", "CONNECT", "CONNACK", "PUBLISH", "PUBACK", "PUBREC", "PUBREL", "PUBCOMP", "SUBSCRIBE", "SUBACK",
    "UNSUBSCRIBE", "UNSUBACK", "PINGREQ", "PINGRESP", "DISCONNECT", "AUTH",
];

/// Most bytes of a packet's head read for its fields (topic names are at
/// most 64 KiB; the rest of a packet is skipped by its length).
const MAX_HEAD: usize = 70 * 1024;

#[derive(Default)]
pub struct Mqtt;

#[derive(Default)]
pub struct Conn {
    /// Protocol level from CONNECT (3: 3.1, 4: 3.1.1, 5: 5.0); 0 unknown.
    level: u8,
}

/// A packet's fixed header.
struct Fixed {
    kind: u8,
    flags: u8,
    /// Header bytes (1 + the remaining length's 1 to 4).
    header_len: usize,
    remaining: u64,
}

impl Fixed {
    /// `Ok(None)`: more bytes needed.
    fn read(buf: &[u8]) -> Result<Option<Self>, String> {
        let Some(&first) = buf.first() else { return Ok(None) };
        let kind = first >> 4;
        if kind == 0 {
            return Err("MQTT packet type 0 is reserved".into());
        }
        let mut remaining = 0u64;
        for i in 0..4 {
            let Some(&b) = buf.get(1 + i) else { return Ok(None) };
            remaining |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(Some(Fixed { kind, flags: first & 0x0f, header_len: 2 + i, remaining }));
            }
        }
        Err("MQTT remaining length longer than 4 bytes".into())
    }

    fn total(&self) -> u64 {
        self.header_len as u64 + self.remaining
    }

    fn qos(&self) -> u8 {
        (self.flags >> 1) & 3
    }
}

/// What a packet is in a call.
enum Role7 {
    Request(Option<u64>),
    Response(Option<u64>),
    Oneway,
    PassOver,
}

impl Mqtt {
    /// Read the head of a packet (`body` is what follows the fixed header,
    /// as far as it is at hand) into fields; `None` when the head is not all
    /// there yet.
    fn head(conn: &mut Conn, fixed: &Fixed, requests: bool, body: &[u8], fields: &mut Fields) -> Option<(Role7, bool)> {
        let mut cur = Cursor::new(body);
        let id = |cur: &mut Cursor| cur.u16_be().map(u64::from);
        let name = NAMES[usize::from(fixed.kind)];
        let v5 = conn.level == 5;
        let answered = |code: u8| code < 0x80;
        Some(match (fixed.kind, requests) {
            (CONNECT, true) => {
                let protocol = cur.prefixed_u16_be()?;
                let level = cur.u8()?;
                if protocol != b"MQTT" && protocol != b"MQIsdp" {
                    return None;
                }
                conn.level = level;
                fields.str(PACKET_TYPE, name);
                (Role7::Request(None), true)
            }
            (CONNACK, false) => {
                let _session_present = cur.u8()?;
                let code = cur.u8()?;
                fields.int(REASON_CODE, i64::from(code));
                let ok = if conn.level == 5 { answered(code) } else { code == 0 };
                (Role7::Response(None), ok)
            }
            (PINGREQ, true) => {
                fields.str(PACKET_TYPE, name);
                (Role7::Request(None), true)
            }
            (PINGRESP, false) => (Role7::Response(None), true),
            (PUBLISH, _) => {
                let topic = cur.prefixed_u16_be()?;
                fields.str(PACKET_TYPE, name);
                if !topic.is_empty() {
                    fields.text(TOPIC, topic);
                }
                fields.int(QOS, i64::from(fixed.qos()));
                let role = if fixed.qos() == 0 || !requests { Role7::Oneway } else { Role7::Request(Some(id(&mut cur)?)) };
                (role, true)
            }
            (PUBREL, true) => {
                let id = id(&mut cur)?;
                fields.str(PACKET_TYPE, name);
                (Role7::Request(Some(id)), true)
            }
            (PUBACK | PUBREC | PUBCOMP | UNSUBACK, false) => {
                let id = id(&mut cur)?;
                // 3.1.1 (and a 5.0 success without properties) stop at the id.
                let code = if fixed.remaining > 2 && (v5 || fixed.kind != UNSUBACK) {
                    if fixed.kind == UNSUBACK {
                        skip_properties(&mut cur)?;
                    }
                    cur.u8()?
                } else {
                    0
                };
                fields.int(REASON_CODE, i64::from(code));
                (Role7::Response(Some(id)), answered(code))
            }
            (SUBSCRIBE | UNSUBSCRIBE, true) => {
                let id = id(&mut cur)?;
                if v5 {
                    skip_properties(&mut cur)?;
                }
                fields.str(PACKET_TYPE, name);
                if let Some(filter) = cur.prefixed_u16_be() {
                    fields.text(TOPIC, filter);
                    if fixed.kind == SUBSCRIBE {
                        if let Some(options) = cur.u8() {
                            fields.int(QOS, i64::from(options & 3));
                        }
                    }
                }
                (Role7::Request(Some(id)), true)
            }
            (SUBACK, false) => {
                let id = id(&mut cur)?;
                if v5 {
                    skip_properties(&mut cur)?;
                }
                let code = cur.u8()?;
                fields.int(REASON_CODE, i64::from(code));
                (Role7::Response(Some(id)), answered(code))
            }
            (DISCONNECT | AUTH, _) => {
                fields.str(PACKET_TYPE, name);
                if let Some(code) = cur.u8() {
                    fields.int(REASON_CODE, i64::from(code));
                }
                (Role7::Oneway, true)
            }
            // Acknowledgements of the server's deliveries.
            (PUBACK | PUBREC | PUBCOMP, true) | (PUBREL, false) => (Role7::PassOver, true),
            // A packet in the wrong direction for its kind.
            _ => return None,
        })
    }
}

/// MQTT 5 properties: a variable-length byte count, then the properties.
fn skip_properties(cur: &mut Cursor) -> Option<()> {
    let mut len = 0usize;
    for i in 0..4 {
        let b = cur.u8()?;
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return cur.skip(len);
        }
    }
    None
}

/// How many packets `bytes` holds when it is a run of whole, well-formed
/// packets a client (`requests`) or a server sends: fixed-header flags as
/// the specification fixes them, PUBLISH topics printable without
/// wildcards. `None` otherwise.
fn whole_packets(bytes: &[u8], requests: bool) -> Option<usize> {
    let mut at = 0;
    let mut n = 0;
    while at < bytes.len() {
        let fixed = Fixed::read(&bytes[at..]).ok()??;
        let end = at.checked_add(usize::try_from(fixed.total()).ok()?)?;
        let body = bytes.get(at + fixed.header_len..end)?;
        let flags_ok = match fixed.kind {
            PUBLISH => fixed.qos() < 3,
            PUBREL | SUBSCRIBE | UNSUBSCRIBE => fixed.flags == 2,
            _ => fixed.flags == 0,
        };
        if !flags_ok || wrong_direction(fixed.kind, requests) || fixed.kind == CONNECT {
            return None;
        }
        if fixed.kind == PUBLISH {
            let topic = Cursor::new(body).prefixed_u16_be()?;
            let printable = topic.iter().all(|&b| b.is_ascii_graphic() && b != b'#' && b != b'+');
            if topic.is_empty() || !printable {
                return None;
            }
        }
        at = end;
        n += 1;
    }
    (n > 0).then_some(n)
}

fn wrong_direction(kind: u8, requests: bool) -> bool {
    matches!((kind, requests), (CONNECT | PINGREQ | SUBSCRIBE | UNSUBSCRIBE, false) | (CONNACK | PINGRESP | SUBACK | UNSUBACK, true))
}

impl Protocol for Mqtt {
    type Conn = Conn;

    fn info() -> Info {
        Info {
            name: "mqtt",
            version: env!("CARGO_PKG_VERSION"),
            description: "MQTT 3.1, 3.1.1 and 5.0",
            default_ports: &[1883, 8883],
            field_names: &["packet_type", "topic", "qos", "reason_code"],
            max_buffer: 128 * 1024,
        }
    }

    fn call_field() -> Option<&'static str> {
        Some("packet_type")
    }

    fn detect(&self, direction: Direction, role: Role, bytes: &[u8]) -> u8 {
        let ctx = Ctx::for_detect(direction, role);
        let Ok(Some(fixed)) = Fixed::read(bytes) else { return 0 };
        let body = &bytes[fixed.header_len..];
        let mut cur = Cursor::new(body);
        let requests = ctx.carries_requests_or_egress();
        match (fixed.kind, requests) {
            (CONNECT, true) if fixed.flags == 0 => match (cur.prefixed_u16_be(), cur.u8()) {
                (Some(b"MQTT"), Some(4 | 5)) | (Some(b"MQIsdp"), Some(3)) => 95,
                _ => 0,
            },
            // CONNACK alone is four bytes: weak evidence.
            (CONNACK, false) if fixed.remaining >= 2 && fixed.flags == 0 => 30,
            // Joined midway (MQTT connections live long): a read of whole
            // packets that publish to printable topics or subscribe.
            (PUBLISH | SUBSCRIBE, requests) => match whole_packets(bytes, requests) {
                Some(n) if n >= 2 => 70,
                Some(_) if requests => 60,
                Some(_) => 55,
                None => 0,
            },
            _ => 0,
        }
    }

    fn parse(&self, conn: &mut Conn, ctx: &Ctx, buf: &[u8], fields: &mut Fields) -> Step {
        let fixed = match Fixed::read(buf) {
            Ok(Some(f)) => f,
            Ok(None) => return Step::NeedMore,
            Err(e) => return Step::Invalid(e),
        };
        let requests = ctx.carries_requests_or_egress();
        if wrong_direction(fixed.kind, requests) {
            return Step::Invalid(format!("MQTT {} sent the wrong way", NAMES[usize::from(fixed.kind)]));
        }
        let total = fixed.total();
        // Packets other than PUBLISH are small: read whole. A PUBLISH's
        // fields are at its front; its payload is skipped by length.
        if fixed.kind != PUBLISH && (buf.len() as u64) < total && total <= MAX_HEAD as u64 && !ctx.truncated {
            return Step::NeedMore;
        }
        let end = (total as usize).min(buf.len()).min(fixed.header_len + MAX_HEAD);
        let body = &buf[fixed.header_len..end];
        let Some((role, ok)) = Self::head(conn, &fixed, requests, body, fields) else {
            // More to come, or (cut by the capture) `lost` reads what the
            // head holds.
            if ctx.truncated || ((buf.len() as u64) < total && buf.len() < fixed.header_len + MAX_HEAD) {
                return Step::NeedMore;
            }
            return Step::Invalid(format!("bad MQTT {} packet", NAMES[usize::from(fixed.kind)]));
        };
        match role {
            Role7::Request(id) => Step::Complete(total, with_id(Meta::request(), id)),
            Role7::Response(id) => Step::Complete(total, with_id(Meta::response(ok), id)),
            Role7::Oneway => Step::Complete(total, Meta::oneway()),
            Role7::PassOver => Step::Discard(total),
        }
    }

    fn lost(&self, conn: &mut Conn, ctx: &Ctx, head: &[u8], fields: &mut Fields) -> Option<Meta> {
        let fixed = Fixed::read(head).ok()??;
        let requests = ctx.carries_requests_or_egress();
        if wrong_direction(fixed.kind, requests) {
            return None;
        }
        let body = &head[fixed.header_len.min(head.len())..];
        match Self::head(conn, &fixed, requests, body, fields)? {
            (Role7::Request(id), _) => Some(with_id(Meta::request(), id)),
            (Role7::Response(id), ok) => Some(with_id(Meta::response(ok), id)),
            (Role7::Oneway, _) => Some(Meta::oneway()),
            (Role7::PassOver, _) => None,
        }
    }
}

fn with_id(meta: Meta, id: Option<u64>) -> Meta {
    match id {
        Some(id) => meta.with_pair_id(id),
        None => meta,
    }
}

wirelens_sdk::export_plugin!(Mqtt);
