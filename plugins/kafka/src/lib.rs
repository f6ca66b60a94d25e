//! Kafka protocol plugin: every request and response of the Kafka wire
//! protocol, framed by its 4-byte size and paired by correlation id.
//!
//! A request's header names its API and version; the connection remembers
//! them by correlation id (responses do not repeat them) to read the
//! response's header (flexible versions add tagged fields, except
//! ApiVersions' response) and its error code. `Produce` with `acks=0` is
//! one-way: no response comes (a broker that answers anyway, as Tansu
//! does, has that answer passed over).
//!
//! Fields: `api` (`Produce`, `Fetch`, `Metadata`, ...), `api_version`,
//! `topic` (the first topic of Produce, Fetch up to v12, ListOffsets,
//! Metadata, CreateTopics and DeleteTopics up to v5), `error_code` (the
//! response's top-level error code where the API has one, else Produce's
//! first partition's). A non-zero error code fails the call.

use wirelens_sdk::cursor::Cursor;
use wirelens_sdk::{Ctx, Direction, FieldKey, Fields, Info, Meta, Protocol, Role, Step};

pub mod cases;

pub const API: FieldKey = FieldKey(0);
pub const API_VERSION: FieldKey = FieldKey(1);
pub const TOPIC: FieldKey = FieldKey(2);
pub const ERROR_CODE: FieldKey = FieldKey(3);

/// Bytes of a message's front read for its fields (the rest, record
/// batches and the like, is skipped by the size).
const HEAD: usize = 512;
/// Largest message believed (the broker's default socket.request.max.bytes
/// is 100 MiB).
const MAX_MESSAGE: u64 = 100 << 20;
/// Requests remembered per connection while their responses are awaited.
const MAX_PENDING: usize = 65_536;

/// Each API key's name and its first flexible version (`u16::MAX`: none).
static APIS: [(&str, u16); 69] = [
    ("Produce", 9),
    ("Fetch", 12),
    ("ListOffsets", 6),
    ("Metadata", 9),
    ("LeaderAndIsr", 4),
    ("StopReplica", 2),
    ("UpdateMetadata", 6),
    ("ControlledShutdown", 3),
    ("OffsetCommit", 8),
    ("OffsetFetch", 6),
    ("FindCoordinator", 3),
    ("JoinGroup", 6),
    ("Heartbeat", 4),
    ("LeaveGroup", 4),
    ("SyncGroup", 4),
    ("DescribeGroups", 5),
    ("ListGroups", 3),
    ("SaslHandshake", u16::MAX),
    ("ApiVersions", 3),
    ("CreateTopics", 5),
    ("DeleteTopics", 4),
    ("DeleteRecords", 2),
    ("InitProducerId", 2),
    ("OffsetForLeaderEpoch", 4),
    ("AddPartitionsToTxn", 3),
    ("AddOffsetsToTxn", 3),
    ("EndTxn", 3),
    ("WriteTxnMarkers", 1),
    ("TxnOffsetCommit", 3),
    ("DescribeAcls", 2),
    ("CreateAcls", 2),
    ("DeleteAcls", 2),
    ("DescribeConfigs", 4),
    ("AlterConfigs", 2),
    ("AlterReplicaLogDirs", 2),
    ("DescribeLogDirs", 2),
    ("SaslAuthenticate", 2),
    ("CreatePartitions", 2),
    ("CreateDelegationToken", 2),
    ("RenewDelegationToken", 2),
    ("ExpireDelegationToken", 2),
    ("DescribeDelegationToken", 2),
    ("DeleteGroups", 2),
    ("ElectLeaders", 2),
    ("IncrementalAlterConfigs", 1),
    ("AlterPartitionReassignments", 0),
    ("ListPartitionReassignments", 0),
    ("OffsetDelete", u16::MAX),
    ("DescribeClientQuotas", 1),
    ("AlterClientQuotas", 1),
    ("DescribeUserScramCredentials", 0),
    ("AlterUserScramCredentials", 0),
    ("Vote", 0),
    ("BeginQuorumEpoch", 0),
    ("EndQuorumEpoch", 0),
    ("DescribeQuorum", 0),
    ("AlterPartition", 0),
    ("UpdateFeatures", 0),
    ("Envelope", 0),
    ("FetchSnapshot", 0),
    ("DescribeCluster", 0),
    ("DescribeProducers", 0),
    ("BrokerRegistration", 0),
    ("BrokerHeartbeat", 0),
    ("UnregisterBroker", 0),
    ("DescribeTransactions", 0),
    ("ListTransactions", 0),
    ("AllocateProducerIds", 0),
    ("ConsumerGroupHeartbeat", 0),
];

const PRODUCE: u16 = 0;
const FETCH: u16 = 1;
const LIST_OFFSETS: u16 = 2;
const METADATA: u16 = 3;
const API_VERSIONS: u16 = 18;
const CREATE_TOPICS: u16 = 19;
const DELETE_TOPICS: u16 = 20;

fn api(key: u16) -> Option<(&'static str, u16)> {
    APIS.get(usize::from(key)).copied()
}

/// Highest API key believed: keys past the table (added since, like
/// DescribeTopicPartitions, 75) are named by number.
const MAX_KEY: u16 = 1000;

/// The first flexible version of `key`: every API added after the table's
/// was flexible from version 0.
fn first_flexible(key: u16) -> Option<u16> {
    match api(key) {
        Some((_, v)) => Some(v),
        None => (key <= MAX_KEY).then_some(0),
    }
}

fn write_api(fields: &mut Fields, key: u16) {
    match api(key) {
        Some((name, _)) => fields.str(API, name),
        None => fields.str(API, &format!("api_{key}")),
    }
}

#[derive(Default)]
pub struct Kafka;

#[derive(Default)]
pub struct Conn {
    /// Requests awaiting their response: correlation id, API key, version.
    pending: std::collections::VecDeque<(i32, u16, u16)>,
    /// Correlation ids of Produce requests with acks=0 (one-way), the
    /// latest few: a broker that answers them anyway (Tansu does) has those
    /// answers passed over.
    fire_and_forget: std::collections::VecDeque<i32>,
}

impl Conn {
    /// A request awaits its response (bounded: the oldest is forgotten).
    fn remember(&mut self, correlation: i32, key: u16, version: u16) {
        if self.pending.len() >= MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back((correlation, key, version));
    }
}

/// A request's header.
struct RequestHeader<'a> {
    key: u16,
    version: u16,
    correlation: i32,
    client_id: Option<&'a [u8]>,
    flexible: bool,
}

fn request_header<'a>(cur: &mut Cursor<'a>) -> Option<RequestHeader<'a>> {
    let key = cur.u16_be()?;
    let version = cur.u16_be()?;
    let correlation = cur.u32_be()? as i32;
    let flexible = version >= first_flexible(key)?;
    let client_id = nullable_string(cur)?;
    if flexible {
        skip_tagged_fields(cur)?;
    }
    Some(RequestHeader { key, version, correlation, client_id, flexible })
}

/// A nullable INT16-sized string (`None` inside: null).
fn nullable_string<'a>(cur: &mut Cursor<'a>) -> Option<Option<&'a [u8]>> {
    let len = cur.u16_be()? as i16;
    if len < 0 {
        return (len == -1).then_some(None);
    }
    cur.take(len as usize).map(Some)
}

/// An unsigned varint (flexible versions' lengths and tags).
fn uvarint(cur: &mut Cursor) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..5 {
        let b = cur.u8()?;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn skip_tagged_fields(cur: &mut Cursor) -> Option<()> {
    let n = uvarint(cur)?;
    for _ in 0..n {
        uvarint(cur)?;
        let size = uvarint(cur)?;
        cur.skip(usize::try_from(size).ok()?)?;
    }
    Some(())
}

/// A string, compact (varint length + 1) in flexible versions.
fn string<'a>(cur: &mut Cursor<'a>, flexible: bool) -> Option<Option<&'a [u8]>> {
    if flexible {
        let n = uvarint(cur)?;
        if n == 0 {
            return Some(None);
        }
        cur.take(usize::try_from(n - 1).ok()?).map(Some)
    } else {
        nullable_string(cur)
    }
}

/// An array's length, compact in flexible versions (`None` inside: null).
fn array_len(cur: &mut Cursor, flexible: bool) -> Option<Option<u64>> {
    if flexible {
        let n = uvarint(cur)?;
        Some(n.checked_sub(1))
    } else {
        let n = cur.u32_be()? as i32;
        Some(u64::try_from(n).ok())
    }
}

/// The first topic a request names (where it is in the request: a copy
/// was an allocation a request), and Produce's acks.
fn request_body<'a>(h: &RequestHeader, cur: &mut Cursor<'a>) -> (Option<&'a [u8]>, Option<i16>) {
    let flex = h.flexible;
    let first_topic = |cur: &mut Cursor<'a>| -> Option<&'a [u8]> {
        match array_len(cur, flex)? {
            Some(n) if n > 0 => string(cur, flex)?,
            _ => None,
        }
    };
    match h.key {
        PRODUCE => {
            if h.version >= 3 && string(cur, flex).is_none() {
                return (None, None); // transactional id
            }
            let acks = cur.u16_be().map(|a| a as i16);
            let topic = cur.u32_be().and_then(|_timeout| first_topic(cur));
            (topic, acks)
        }
        FETCH if h.version < 13 => {
            let mut skip = 4 + 4 + 4; // replica id, max wait, min bytes
            if h.version >= 3 {
                skip += 4; // max bytes
            }
            if h.version >= 4 {
                skip += 1; // isolation level
            }
            if h.version >= 7 {
                skip += 8; // session id and epoch
            }
            (cur.skip(skip).and_then(|_| first_topic(cur)), None)
        }
        LIST_OFFSETS => {
            let skip = 4 + usize::from(h.version >= 2);
            (cur.skip(skip).and_then(|_| first_topic(cur)), None)
        }
        // From Metadata v10 a topic is its id (16 bytes), then its name.
        METADATA if h.version >= 10 => {
            let topic = match array_len(cur, flex) {
                Some(Some(n)) if n > 0 => cur.skip(16).and_then(|_| string(cur, flex)).flatten(),
                _ => None,
            };
            (topic, None)
        }
        METADATA | CREATE_TOPICS => (first_topic(cur), None),
        DELETE_TOPICS if h.version < 6 => {
            let topic = match array_len(cur, flex) {
                Some(Some(n)) if n > 0 => string(cur, flex).flatten(),
                _ => None,
            };
            (topic, None)
        }
        _ => (None, None),
    }
}

/// Whether the response of `key` at `version` has an error code
/// [`response_error`] reads.
fn has_error_code(key: u16, version: u16) -> bool {
    // FindCoordinator v4+ answers per key (a coordinators array): no
    // top-level error code.
    matches!(key, API_VERSIONS | PRODUCE | 11..=14 | 16 | 17 | 22 | 25 | 26 | 36)
        || (key == FETCH && version >= 7)
        || (key == 10 && version < 4)
}

/// The response's error code, where it can be told from its front: the
/// top-level one, or Produce's first partition's. `None`: not in the bytes
/// at hand.
fn response_error(key: u16, version: u16, flexible: bool, cur: &mut Cursor) -> Option<i16> {
    let i16_at = |cur: &mut Cursor, skip: usize| cur.skip(skip).and_then(|_| cur.u16_be()).map(|e| e as i16);
    match key {
        API_VERSIONS => i16_at(cur, 0), // error_code first
        PRODUCE => {
            // [responses: name, [partitions: index, error_code, ...]]
            array_len(cur, flexible)?.filter(|&n| n > 0)?;
            string(cur, flexible)?;
            array_len(cur, flexible)?.filter(|&n| n > 0)?;
            i16_at(cur, 4)
        }
        FETCH if version >= 7 => i16_at(cur, 4), // throttle time, then error code
        // throttle_time_ms (from these versions on), then error_code.
        10 if version < 4 => i16_at(cur, if version >= 1 { 4 } else { 0 }), // FindCoordinator
        11 => i16_at(cur, if version >= 2 { 4 } else { 0 }),    // JoinGroup
        12 | 13 | 14 => i16_at(cur, if version >= 1 { 4 } else { 0 }), // Heartbeat, LeaveGroup, SyncGroup
        22 | 25 | 26 => i16_at(cur, 4),                          // InitProducerId, AddOffsetsToTxn, EndTxn
        16 => i16_at(cur, if version >= 1 { 4 } else { 0 }),    // ListGroups
        17 => i16_at(cur, 0),                                    // SaslHandshake
        36 => i16_at(cur, 0),                                    // SaslAuthenticate
        _ => None,
    }
}

impl Protocol for Kafka {
    type Conn = Conn;

    fn info() -> Info {
        Info {
            name: "kafka",
            version: env!("CARGO_PKG_VERSION"),
            description: "Kafka wire protocol (requests paired by correlation id)",
            default_ports: &[9092],
            field_names: &["api", "api_version", "topic", "error_code"],
            max_buffer: 128 * 1024,
        }
    }

    fn call_field() -> Option<&'static str> {
        Some("api")
    }

    /// A whole first request (clients start with ApiVersions or Metadata,
    /// small enough for one read) whose header is consistent: a known API
    /// at a version it has, a printable client id, and the size exact.
    fn detect(&self, direction: Direction, role: Role, bytes: &[u8]) -> u8 {
        let ctx = Ctx::for_detect(direction, role);
        if !ctx.carries_requests_or_egress() || bytes.len() < 14 {
            return 0;
        }
        let mut cur = Cursor::new(bytes);
        let Some(size) = cur.u32_be() else { return 0 };
        if u64::from(size) != bytes.len() as u64 - 4 || size > 1 << 20 {
            return 0;
        }
        let Some(h) = request_header(&mut cur).filter(|h| api(h.key).is_some()) else { return 0 };
        let printable = h.client_id.is_none_or(|c| c.iter().all(|b| b.is_ascii_graphic() || *b == b' '));
        let sane_version = h.version <= 16;
        match (h.key, printable && sane_version && h.correlation >= 0) {
            (API_VERSIONS | METADATA, true) => 90,
            (_, true) => 60,
            _ => 0,
        }
    }

    fn parse(&self, conn: &mut Conn, ctx: &Ctx, buf: &[u8], fields: &mut Fields) -> Step {
        if buf.len() < 4 {
            return Step::NeedMore;
        }
        let size = u64::from(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
        if !(4..=MAX_MESSAGE).contains(&size) {
            return Step::Invalid(format!("Kafka message size {size}"));
        }
        let total = 4 + size;
        // The front of the message, for its fields.
        let want = (total as usize).min(4 + HEAD);
        if buf.len() < want && !ctx.truncated {
            return Step::NeedMore;
        }
        let mut cur = Cursor::new(&buf[4..want.min(buf.len())]);
        if ctx.carries_requests_or_egress() {
            let Some(h) = request_header(&mut cur) else {
                // A head the capture cut: the key, version and correlation
                // id are at fixed places; the size is known.
                if ctx.truncated && buf.len() >= 12 {
                    let key = u16::from_be_bytes([buf[4], buf[5]]);
                    let version = u16::from_be_bytes([buf[6], buf[7]]);
                    let correlation = i32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
                    if first_flexible(key).is_some() {
                        write_api(fields, key);
                        fields.int(API_VERSION, i64::from(version));
                        conn.remember(correlation, key, version);
                        return Step::Complete(total, Meta::request().with_pair_id(correlation as u32 as u64));
                    }
                }
                return if ctx.truncated { Step::NeedMore } else { Step::Invalid("bad Kafka request header".into()) };
            };
            write_api(fields, h.key);
            fields.int(API_VERSION, i64::from(h.version));
            let (topic, acks) = request_body(&h, &mut cur);
            if let Some(topic) = topic {
                fields.text(TOPIC, topic);
            }
            if h.key == PRODUCE && acks == Some(0) {
                if conn.fire_and_forget.len() >= 64 {
                    conn.fire_and_forget.pop_front();
                }
                conn.fire_and_forget.push_back(h.correlation);
                return Step::Complete(total, Meta::oneway());
            }
            conn.remember(h.correlation, h.key, h.version);
            Step::Complete(total, Meta::request().with_pair_id(h.correlation as u32 as u64))
        } else {
            let Some(correlation) = cur.u32_be().map(|c| c as i32) else {
                return if ctx.truncated {
                    Step::NeedMore
                } else {
                    Step::Invalid("Kafka response shorter than its header".into())
                };
            };
            if let Some(at) = conn.fire_and_forget.iter().position(|&c| c == correlation) {
                conn.fire_and_forget.remove(at);
                return Step::Discard(total);
            }
            let pair = Meta::response(true).with_pair_id(correlation as u32 as u64);
            let Some(at) = conn.pending.iter().position(|p| p.0 == correlation) else {
                // Its request was not seen (joined midway): the outcome is
                // unknown.
                return Step::Complete(total, Meta { outcome_unknown: true, ..pair });
            };
            let (_, key, version) = conn.pending.remove(at).expect("found");
            // ApiVersions' response header stays version 0 (a client must
            // read it before it knows what the broker speaks).
            let flexible = version >= first_flexible(key).unwrap_or(0);
            let error = if flexible && key != API_VERSIONS && skip_tagged_fields(&mut cur).is_none() {
                None
            } else {
                response_error(key, version, flexible, &mut cur)
            };
            match error {
                Some(code) => {
                    fields.int(ERROR_CODE, i64::from(code));
                    Step::Complete(total, Meta { success: code == 0, ..pair })
                }
                // The error code was in bytes not copied.
                None if has_error_code(key, version) => Step::Complete(total, Meta { outcome_unknown: true, ..pair }),
                None => Step::Complete(total, pair),
            }
        }
    }

    fn lost(&self, conn: &mut Conn, ctx: &Ctx, head: &[u8], fields: &mut Fields) -> Option<Meta> {
        // The head is at least the 4-byte size when anything was parsed.
        if head.len() < 12 {
            return None;
        }
        let mut cur = Cursor::new(&head[4..]);
        if ctx.carries_requests_or_egress() {
            // The header's fixed part (the client id may be cut).
            let key = u16::from_be_bytes([head[4], head[5]]);
            let version = u16::from_be_bytes([head[6], head[7]]);
            let correlation = i32::from_be_bytes([head[8], head[9], head[10], head[11]]);
            first_flexible(key)?;
            write_api(fields, key);
            fields.int(API_VERSION, i64::from(version));
            conn.remember(correlation, key, version);
            Some(Meta::request().with_pair_id(correlation as u32 as u64))
        } else {
            let correlation = cur.u32_be()? as i32;
            if let Some(at) = conn.pending.iter().position(|p| p.0 == correlation) {
                conn.pending.remove(at);
            }
            Some(Meta::response_unknown().with_pair_id(correlation as u32 as u64))
        }
    }
}

wirelens_sdk::export_plugin!(Kafka);
