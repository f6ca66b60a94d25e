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

/// No per-connection state: the framing comes from the transport (one
/// message per datagram; a 2-byte length prefix on a stream) and pairing
/// from the transaction ids.
#[derive(Default)]
pub struct Conn;

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
        let (stream, msg) = frame_of(bytes);
        match parse_message(msg, false) {
            Some(m) if m.qdcount == 1 => {
                if stream {
                    90
                } else {
                    80
                }
            }
            _ => 0,
        }
    }

    fn call_field() -> Option<&'static str> {
        Some("query_type")
    }

    /// The header and the first question are at the start; past 512 bytes
    /// (the classic UDP limit) only answers and extra records, which no
    /// field reads.
    fn capture_bytes() -> Option<(u32, u32)> {
        Some((512, 512))
    }

    fn parse(&self, _conn: &mut Conn, ctx: &Ctx, buf: &[u8], fields: &mut Fields) -> Step {
        if ctx.datagram {
            // The whole datagram is the message (the SDK hands it over at
            // once; bytes the capture cut off are added to its size).
            return match parse_message(buf, true) {
                Some(m) => Step::Complete(buf.len() as u64, message_meta(&m, buf, fields)),
                None => Step::Invalid("not a DNS message".into()),
            };
        }
        // A stream: a 2-byte length, then the message. Its length is known
        // from the prefix, so only the header and question are waited for:
        // the rest (answers) is skipped, copied or not.
        let mut cur = Cursor::new(buf);
        let Some(n) = cur.u16_be() else { return Step::NeedMore };
        let wire = u64::from(n) + 2;
        let body = cur.rest();
        let whole = body.len() >= usize::from(n);
        let body = &body[..body.len().min(usize::from(n))];
        match parse_message(body, whole || ctx.truncated) {
            Some(m) => Step::Complete(wire, message_meta(&m, body, fields)),
            None if whole => Step::Invalid("not a DNS message".into()),
            // Header or question still to come.
            None => Step::NeedMore,
        }
    }

    fn lost(&self, _conn: &mut Conn, ctx: &Ctx, head: &[u8], fields: &mut Fields) -> Option<Meta> {
        let body = if ctx.datagram { head } else { head.get(2..)? };
        parse_message(body, true).map(|m| message_meta(&m, body, fields))
    }
}

/// Fields and meta of a parsed message (`msg`); paired by transaction id.
fn message_meta(m: &Message, msg: &[u8], fields: &mut Fields) -> Meta {
    if let Some(name) = m.qname.clone() {
        match msg.get(name.clone()) {
            // No label: the root if the name ends there, nothing readable if
            // a compression pointer stands for all of it.
            Some([]) => fields.str(QUERY_RECORD, if msg.get(name.start) == Some(&0) { "." } else { "" }),
            None => {}
            // At most 255 bytes of text (RFC 1035 2.3.4): a longer name's
            // text is cut there, and the message is still read.
            Some(labels) => fields.joined(QUERY_RECORD, Labels(labels), b'.', 255),
        }
        fields.str(QUERY_TYPE, type_name(m.qtype));
    }
    let meta = if m.response {
        fields.str(RCODE, rcode_name(m.rcode));
        Meta::response(m.rcode == 0)
    } else {
        Meta::request()
    };
    meta.with_pair_id(u64::from(m.id))
}

/// How the first bytes of a direction look: a message with its TCP length
/// prefix (whole, or its start: the prefix claims more than is here and a
/// header follows), a length prefix read on its own (no datagram is 2
/// bytes), or a whole datagram. Detection only: parsing knows the transport.
fn frame_of(bytes: &[u8]) -> (bool, &[u8]) {
    if bytes.len() == 2 {
        return (true, &bytes[2..]);
    }
    let claimed = (bytes.len() >= 2).then(|| usize::from(u16::from_be_bytes([bytes[0], bytes[1]])));
    if claimed == Some(bytes.len() - 2) && parse_message(&bytes[2..], false).is_some() {
        return (true, &bytes[2..]);
    }
    if parse_message(bytes, false).is_some() {
        return (false, bytes);
    }
    // The start of a TCP message whose rest is still to come.
    if bytes.len() >= 2 + HEADER && claimed.is_some_and(|c| c > bytes.len() - 2) {
        return (true, &bytes[2..]);
    }
    (false, bytes)
}

struct Message {
    id: u16,
    response: bool,
    rcode: u8,
    qdcount: u16,
    /// The first question's name: its labels on the wire (`msg[range]`,
    /// length bytes included, without the end or a compression pointer).
    qname: Option<std::ops::Range<usize>>,
    qtype: u16,
}

/// A message's header and first question. `cut`: the bytes after `msg`
/// are not coming (a capture that stopped, or a prefix claiming more): a
/// header alone still makes a message, without its question.
fn parse_message(msg: &[u8], cut: bool) -> Option<Message> {
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
        let question = read_name(&mut cur).and_then(|name| Some((name, cur.u16_be()?, cur.u16_be()?)));
        match question {
            Some((name, t, _class)) => {
                qname = Some(name);
                qtype = t;
            }
            None if cut => {}
            None => return None,
        }
    }
    Some(Message { id, response, rcode: (flags & 0xf) as u8, qdcount, qname, qtype })
}

/// The labels of a name read by [`read_name`].
struct Labels<'a>(&'a [u8]);

impl<'a> Iterator for Labels<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let (&len, rest) = self.0.split_first()?;
        let (label, rest) = rest.split_at_checked(usize::from(len))?;
        self.0 = rest;
        Some(label)
    }
}

/// A question name (no compression pointers in questions in practice; a
/// pointer ends the name): where its labels are in the message. Its text
/// is written later, straight into the fields (copying the name out and
/// moving it around were a tenth of the plugin inside the sandbox).
fn read_name(cur: &mut Cursor<'_>) -> Option<std::ops::Range<usize>> {
    let start = cur.position();
    for _ in 0..128 {
        let end = cur.position();
        let len = cur.u8()?;
        if len == 0 {
            return Some(start..end);
        }
        if len & 0xc0 == 0xc0 {
            cur.u8()?;
            return Some(start..end);
        }
        if len > 63 {
            return None;
        }
        cur.take(usize::from(len))?;
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
