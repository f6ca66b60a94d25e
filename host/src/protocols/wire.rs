//! The column layout of batches (`wit/protocol.wit`), host side. The SDK
//! has the same constants (`wirelens_sdk::wire`); a test checks they agree.

use super::bindings::{Chunks, Direction, Role};

/// Chunk flags, bit 0: ingress; bits 1-2: role.
pub const CHUNK_INGRESS: u8 = 1;
pub const CHUNK_ROLE_SHIFT: u8 = 1;
/// Message flags.
pub const MSG_KIND_MASK: u8 = 0b11;
pub const MSG_INGRESS: u8 = 1 << 2;
pub const MSG_SUCCESS: u8 = 1 << 3;
pub const MSG_HAS_PAIR_ID: u8 = 1 << 4;

/// How a message takes part in a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    Request,
    Response,
    /// Neither waits for nor answers another message.
    Oneway,
}

/// The kind in message flags.
pub fn kind(flags: u8) -> Option<MessageKind> {
    match flags & MSG_KIND_MASK {
        0 => Some(MessageKind::Request),
        1 => Some(MessageKind::Response),
        2 => Some(MessageKind::Oneway),
        _ => None,
    }
}

/// Chunk flags for a direction and role.
pub fn chunk_flags(direction: Direction, role: Role) -> u8 {
    let d = match direction {
        Direction::Egress => 0,
        Direction::Ingress => CHUNK_INGRESS,
    };
    let r = match role {
        Role::Client => 0u8,
        Role::Server => 1,
        Role::Unknown => 2,
    };
    d | (r << CHUNK_ROLE_SHIFT)
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

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.conn.is_empty()
    }

    /// Append one chunk's header.
    pub fn push(
        &mut self,
        conn: u64,
        direction: Direction,
        role: Role,
        timestamp_ns: u64,
        captured: u32,
        real_len: u64,
    ) {
        self.conn.push(conn);
        self.timestamp_ns.push(timestamp_ns);
        self.captured.push(captured);
        self.real_len.push(real_len);
        self.flags.push(chunk_flags(direction, role));
    }

    /// Remove every chunk, keeping the allocations.
    pub fn clear(&mut self) {
        self.conn.clear();
        self.timestamp_ns.clear();
        self.captured.clear();
        self.real_len.clear();
        self.flags.clear();
    }
}

impl Default for Chunks {
    fn default() -> Self {
        Self::new()
    }
}
