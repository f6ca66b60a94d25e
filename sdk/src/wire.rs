//! The column layout of batches (see `wit/protocol.wit`): flag bits, and
//! the row types the SDK uses natively.

use crate::{Batch, Chunks, Direction, Role};

/// Chunk flags, bit 0: ingress.
pub const CHUNK_INGRESS: u8 = 1;
/// Chunk flags, bits 1-2: role (0 client, 1 server, 2 unknown).
pub const CHUNK_ROLE_SHIFT: u8 = 1;

/// Message flags, bits 0-1: kind.
pub const MSG_KIND_MASK: u8 = 0b11;
/// Message flags, bit 2: ingress.
pub const MSG_INGRESS: u8 = 1 << 2;
/// Message flags, bit 3: success.
pub const MSG_SUCCESS: u8 = 1 << 3;
/// Message flags, bit 4: `pair-id` is set.
pub const MSG_HAS_PAIR_ID: u8 = 1 << 4;

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
        self.flags.push(chunk_flags(c.direction, c.role));
    }

    /// Chunk `i` as a row; `None` past the end or when the columns disagree.
    pub fn get(&self, i: usize) -> Option<Chunk> {
        let (direction, role) = parse_chunk_flags(*self.flags.get(i)?);
        Some(Chunk {
            conn: *self.conn.get(i)?,
            direction,
            role,
            timestamp_ns: *self.timestamp_ns.get(i)?,
            captured: *self.captured.get(i)?,
            real_len: *self.real_len.get(i)?,
        })
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
