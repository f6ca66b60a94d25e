//! The column layout of batches (see `wit/protocol.wit`): flag bits, and
//! the row types the SDK uses natively.

use crate::{Batch, Chunks, Direction, Role};

/// Chunk flags, bit 0: ingress.
pub const CHUNK_INGRESS: u8 = 1;
/// Chunk flags, bits 1-2: role (0 client, 1 server, 2 unknown).
pub const CHUNK_ROLE_SHIFT: u8 = 1;
/// Chunk flags, bit 3 (contract 1.1): the chunk is one datagram.
pub const CHUNK_DATAGRAM: u8 = 1 << 3;
/// Chunk flags, bit 4 (contract 1.1): no bytes, only the host's clock (its
/// timestamp is now); its connection means nothing.
pub const CHUNK_TICK: u8 = 1 << 4;

/// Message flags, bits 0-1: kind.
pub const MSG_KIND_MASK: u8 = 0b11;
/// Message flags, bit 2: ingress.
pub const MSG_INGRESS: u8 = 1 << 2;
/// Message flags, bit 3: success.
pub const MSG_SUCCESS: u8 = 1 << 3;
/// Message flags, bit 4: `pair-id` is set.
pub const MSG_HAS_PAIR_ID: u8 = 1 << 4;
/// Message flags, bit 5 (contract 1.1): the message was inferred, its bytes
/// never seen (lost): a response's outcome is unknown, a request's fields
/// are.
pub const MSG_UNSEEN: u8 = 1 << 5;

/// How a message takes part in a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    Request = 0,
    Response = 1,
    /// Neither waits for nor answers another message (pub/sub push, notice).
    Oneway = 2,
}

impl MessageKind {
    /// From message flags.
    pub fn from_flags(flags: u8) -> Option<Self> {
        match flags & MSG_KIND_MASK {
            0 => Some(Self::Request),
            1 => Some(Self::Response),
            2 => Some(Self::Oneway),
            _ => None,
        }
    }
}

/// One chunk, as a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub conn: u64,
    pub direction: Direction,
    pub role: Role,
    pub timestamp_ns: u64,
    pub captured: u32,
    pub real_len: u64,
    /// One whole datagram (see [`CHUNK_DATAGRAM`]).
    pub datagram: bool,
    /// The host's clock only (see [`CHUNK_TICK`]).
    pub tick: bool,
}

impl Chunk {
    /// A chunk of a byte stream with all its bytes captured.
    pub fn stream(conn: u64, direction: Direction, role: Role, timestamp_ns: u64, len: u32) -> Self {
        Self {
            conn,
            direction,
            role,
            timestamp_ns,
            captured: len,
            real_len: u64::from(len),
            datagram: false,
            tick: false,
        }
    }

    /// A chunk from its columns' values.
    #[inline]
    fn from_columns(conn: u64, timestamp_ns: u64, captured: u32, real_len: u64, flags: u8) -> Self {
        let (direction, role) = parse_chunk_flags(flags);
        Self {
            conn,
            direction,
            role,
            timestamp_ns,
            captured,
            real_len,
            datagram: flags & CHUNK_DATAGRAM != 0,
            tick: flags & CHUNK_TICK != 0,
        }
    }

    /// The host's clock at `now_ns`.
    pub fn tick(now_ns: u64) -> Self {
        Self { tick: true, ..Self::stream(0, Direction::Egress, Role::Unknown, now_ns, 0) }
    }
}

/// Chunk flags for a direction and role.
pub fn chunk_flags(direction: Direction, role: Role) -> u8 {
    let d = match direction {
        Direction::Egress => 0,
        Direction::Ingress => CHUNK_INGRESS,
    };
    let r = match role {
        Role::Client => 0,
        Role::Server => 1,
        Role::Unknown => 2,
    };
    d | (r << CHUNK_ROLE_SHIFT)
}

/// All flags of a chunk.
pub fn all_chunk_flags(c: &Chunk) -> u8 {
    let mut flags = chunk_flags(c.direction, c.role);
    if c.datagram {
        flags |= CHUNK_DATAGRAM;
    }
    if c.tick {
        flags |= CHUNK_TICK;
    }
    flags
}

/// Direction and role from chunk flags (unknown role values read as unknown).
pub fn parse_chunk_flags(flags: u8) -> (Direction, Role) {
    let direction = if flags & CHUNK_INGRESS != 0 { Direction::Ingress } else { Direction::Egress };
    let role = match (flags >> CHUNK_ROLE_SHIFT) & 0b11 {
        0 => Role::Client,
        1 => Role::Server,
        _ => Role::Unknown,
    };
    (direction, role)
}

impl Chunks {
    /// An empty batch of chunks.
    pub fn new() -> Self {
        Self { conn: vec![], timestamp_ns: vec![], captured: vec![], real_len: vec![], flags: vec![] }
    }

    /// Number of chunks.
    pub fn len(&self) -> usize {
        self.conn.len()
    }

    /// True when there is no chunk.
    pub fn is_empty(&self) -> bool {
        self.conn.is_empty()
    }

    /// Append one chunk's header.
    pub fn push(&mut self, c: &Chunk) {
        self.conn.push(c.conn);
        self.timestamp_ns.push(c.timestamp_ns);
        self.captured.push(c.captured);
        self.real_len.push(c.real_len);
        self.flags.push(all_chunk_flags(c));
    }

    /// Chunk `i` as a row; `None` past the end or when the columns disagree.
    pub fn get(&self, i: usize) -> Option<Chunk> {
        Some(Chunk::from_columns(
            *self.conn.get(i)?,
            *self.timestamp_ns.get(i)?,
            *self.captured.get(i)?,
            *self.real_len.get(i)?,
            *self.flags.get(i)?,
        ))
    }

    /// Every chunk as a row, in order, as far as all columns go (one pass
    /// over the columns: no index checks per chunk, which cost inside the
    /// sandbox).
    pub fn rows(&self) -> impl Iterator<Item = Chunk> + '_ {
        self.conn.iter().zip(&self.timestamp_ns).zip(&self.captured).zip(&self.real_len).zip(&self.flags).map(
            |((((&conn, &ts), &captured), &real_len), &flags)| Chunk::from_columns(conn, ts, captured, real_len, flags),
        )
    }
}

impl Default for Chunks {
    fn default() -> Self {
        Self::new()
    }
}

impl Batch {
    /// An empty batch with room for about `messages` messages.
    pub fn with_capacity(messages: usize) -> Self {
        Self {
            conn: Vec::with_capacity(messages),
            start_ns: Vec::with_capacity(messages),
            end_ns: Vec::with_capacity(messages),
            size: Vec::with_capacity(messages),
            pair_id: Vec::with_capacity(messages),
            flags: Vec::with_capacity(messages),
            field_count: Vec::with_capacity(messages),
            field_key: Vec::with_capacity(messages * 4),
            field_offset: Vec::with_capacity(messages * 4),
            field_len: Vec::with_capacity(messages * 4),
            arena: Vec::with_capacity(messages * 64),
            errors: Vec::new(),
            skip_conn: Vec::new(),
            skip_flags: Vec::new(),
            skip_bytes: Vec::new(),
        }
    }

    /// Number of messages.
    pub fn len(&self) -> usize {
        self.conn.len()
    }

    /// True when there is no message.
    pub fn is_empty(&self) -> bool {
        self.conn.is_empty()
    }
}
