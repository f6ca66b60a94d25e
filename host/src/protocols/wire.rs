//! The column layout of batches (`wit/protocol.wit`), host side. The SDK
//! has the same constants (`wirelens_sdk::wire`); a test checks they agree.

use super::bindings::{Chunks, Direction, Role};

/// Chunk flags, bit 0: ingress; bits 1-2: role; bit 3 (1.1): a datagram;
/// bit 4 (1.1): a clock tick.
pub const CHUNK_INGRESS: u8 = 1;
pub const CHUNK_ROLE_SHIFT: u8 = 1;
pub const CHUNK_DATAGRAM: u8 = 1 << 3;
pub const CHUNK_TICK: u8 = 1 << 4;
/// Message flags.
pub const MSG_KIND_MASK: u8 = 0b11;
pub const MSG_INGRESS: u8 = 1 << 2;
pub const MSG_SUCCESS: u8 = 1 << 3;
pub const MSG_HAS_PAIR_ID: u8 = 1 << 4;
/// (1.1) Inferred, its bytes lost: a response's outcome is unknown.
pub const MSG_UNSEEN: u8 = 1 << 5;

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
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        conn: u64,
        direction: Direction,
        role: Role,
        timestamp_ns: u64,
        captured: u32,
        real_len: u64,
        datagram: bool,
    ) {
        self.conn.push(conn);
        self.timestamp_ns.push(timestamp_ns);
        self.captured.push(captured);
        self.real_len.push(real_len);
        self.flags.push(chunk_flags(direction, role) | if datagram { CHUNK_DATAGRAM } else { 0 });
    }

    /// Append a clock tick (contract 1.1): the host's time now.
    pub fn push_tick(&mut self, now_ns: u64) {
        self.conn.push(0);
        self.timestamp_ns.push(now_ns);
        self.captured.push(0);
        self.real_len.push(0);
        self.flags.push(CHUNK_TICK | (2 << CHUNK_ROLE_SHIFT));
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
