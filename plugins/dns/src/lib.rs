//! DNS plugin, over UDP (one message per datagram) and TCP (messages
//! prefixed by their 2-byte length). Queries and responses are told apart by
//! the QR bit and paired by transaction id, so answers out of order (or
//! several queries in flight, as resolvers send A and AAAA together) pair
//! correctly.
//!
//! Fields: `query_record` (the first question's name), `query_type` (`A`,
//! `AAAA`, ...), `rcode` on responses; success is NOERROR.

use wirelens_sdk::cursor::Cursor;
use wirelens_sdk::{Ctx, Direction, FieldKey, Fields, Info, Meta, Protocol, Role, Step};

pub mod cases;

pub const QUERY_RECORD: FieldKey = FieldKey(0);
pub const QUERY_TYPE: FieldKey = FieldKey(1);
pub const RCODE: FieldKey = FieldKey(2);

const HEADER: usize = 12;

#[derive(Default)]
pub struct Dns;

/// Framing of a connection, decided on its first message.
#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
pub enum Framing {
    #[default]
    Unknown,
    /// One message per chunk (datagrams).
    Datagram,
    /// 2-byte length prefix (DNS over TCP).
    Stream,
}

/// Framing per direction: a server may read a TCP length prefix on its own
/// (before the daemon recognised the connection) and then only see bodies,
/// while its replies carry the prefix.
#[derive(Default)]
pub struct Conn {
    framing: [Framing; 2],
}

impl Protocol for Dns {
    type Conn = Conn;

    fn info() -> Info {
        Info {
            name: "dns",
            version: env!("CARGO_PKG_VERSION"),
            description: "DNS queries and responses over UDP and TCP",
            default_ports: &[53, 5353],
            field_names: &["query_record", "query_type", "rcode"],
            max_buffer: 64 * 1024,
        }
    }

    fn detect(&self, _direction: Direction, _role: Role, bytes: &[u8]) -> u8 {
        let (framing, msg) = frame_of(bytes);
        match parse_message(msg) {
            Some(m) if m.qdcount == 1 => {
                if framing == Framing::Stream {
                    90
                } else {
                    80
                }
            }
            _ => 0,
        }
    }

    fn parse(&self, conn: &mut Conn, ctx: &Ctx, buf: &[u8], fields: &mut Fields) -> Step {
        let framing = &mut conn.framing[usize::from(ctx.direction == Direction::Ingress)];
        if *framing == Framing::Unknown {
            *framing = frame_of(buf).0;
        }
        let (len, msg) = match *framing {
            Framing::Stream => {
                let mut cur = Cursor::new(buf);
                let Some(n) = cur.u16_be() else { return Step::NeedMore };
                let Some(body) = cur.take(usize::from(n)) else {
                    return if usize::from(n) + 2 > 64 * 1024 {
                        Step::Invalid("oversized".into())
                    } else {
                        Step::NeedMore
                    };
                };
                (usize::from(n) + 2, body)
            }
            // A datagram is the whole chunk; the SDK hands it over at once.
            _ => (buf.len(), buf),
        };
        let Some(m) = parse_message(msg) else {
            return Step::Invalid("not a DNS message".into());
        };
        if let Some(name) = &m.qname {
            fields.str(QUERY_RECORD, name);
            fields.str(QUERY_TYPE, type_name(m.qtype));
        }
        let meta = if m.response {
            fields.str(RCODE, rcode_name(m.rcode));
            Meta::response(m.rcode == 0)
        } else {
            Meta::request()
        };
        Step::Complete(len as u64, meta.with_pair_id(u64::from(m.id)))
    }
}

/// How a direction's first chunk is framed: a length prefix read on its own
/// (no datagram is 2 bytes), a prefix matching the rest, a whole datagram,
/// or the start of a prefixed message too short to be a datagram.
fn frame_of(bytes: &[u8]) -> (Framing, &[u8]) {
    if bytes.len() == 2 {
        return (Framing::Stream, &bytes[2..]);
    }
    if bytes.len() > 2 + HEADER
        && usize::from(u16::from_be_bytes([bytes[0], bytes[1]])) == bytes.len() - 2
        && parse_message(&bytes[2..]).is_some()
    {
        return (Framing::Stream, &bytes[2..]);
    }
    if parse_message(bytes).is_some() {
        return (Framing::Datagram, bytes);
    }
    // The start of a TCP message whose rest is still to come: the prefix
    // claims more than is here, and a one-question header follows it.
    if bytes.len() >= 2 + HEADER {
        let claimed = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
        if claimed > bytes.len() - 2 && u16::from_be_bytes([bytes[6], bytes[7]]) == 1 {
            return (Framing::Stream, &bytes[2..]);
        }
    }
    if bytes.len() < 2 + HEADER {
        return (Framing::Stream, &bytes[2.min(bytes.len())..]);
    }
    (Framing::Datagram, bytes)
}

struct Message {
    id: u16,
    response: bool,
    rcode: u8,
    qdcount: u16,
    qname: Option<String>,
    qtype: u16,
}

fn parse_message(msg: &[u8]) -> Option<Message> {
    let mut cur = Cursor::new(msg);
    let id = cur.u16_be()?;
    let flags = cur.u16_be()?;
    let qdcount = cur.u16_be()?;
    let ancount = cur.u16_be()?;
    let nscount = cur.u16_be()?;
    let _arcount = cur.u16_be()?;
    let opcode = (flags >> 11) & 0xf;
    let response = flags & 0x8000 != 0;
    // Sanity: standard opcodes, a question count a resolver would send,
    // and no answers in a query.
    if opcode > 5 || qdcount > 16 || (!response && (ancount > 0 || nscount > 0)) {
        return None;
    }
    let mut qname = None;
    let mut qtype = 0;
    if qdcount > 0 {
        qname = Some(read_name(&mut cur)?);
        qtype = cur.u16_be()?;
        let _class = cur.u16_be()?;
    }
    Some(Message { id, response, rcode: (flags & 0xf) as u8, qdcount, qname, qtype })
}

/// A question name (no compression pointers in questions in practice; a
/// pointer ends the name).
fn read_name(cur: &mut Cursor<'_>) -> Option<String> {
    let mut name = String::new();
    for _ in 0..128 {
        let len = cur.u8()?;
        if len == 0 {
            return Some(if name.is_empty() { ".".into() } else { name });
        }
        if len & 0xc0 == 0xc0 {
            cur.u8()?;
            return Some(name);
        }
        if len > 63 {
            return None;
        }
        let label = cur.take(usize::from(len))?;
        if !name.is_empty() {
            name.push('.');
        }
        name.push_str(&String::from_utf8_lossy(label));
    }
    None
}

fn type_name(t: u16) -> &'static str {
    match t {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        65 => "HTTPS",
        255 => "ANY",
        _ => "OTHER",
    }
}

fn rcode_name(r: u8) -> &'static str {
    match r {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        _ => "OTHER",
    }
}

wirelens_sdk::export_plugin!(Dns);
