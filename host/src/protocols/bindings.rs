//! Host bindings generated from the contract, one module per version the
//! daemon accepts. Everything the host works with is of the current
//! version (`wit/protocol.wit`, 1.2); plugins built against 1.0 or 1.1
//! (`wit/1.0/`, `wit/1.1/`, kept as released) are called through their own
//! bindings and their inputs and outputs converted ([`AnyPre`], [`AnyPlugin`]).

use wasmtime::component::InstancePre;
use wasmtime::Store;

use super::runtime::StoreData;

/// The current contract, 1.2.
mod current {
    wasmtime::component::bindgen!({
        path: "../wit/protocol.wit",
        world: "protocol-plugin",
    });
}

/// The contract as 1.0 released it.
pub mod v1_0 {
    wasmtime::component::bindgen!({
        path: "../wit/1.0/protocol.wit",
        world: "protocol-plugin",
    });
}

/// The contract as 1.1 released it (1.2 added `plugin-info.capture-bytes`).
pub mod v1_1 {
    wasmtime::component::bindgen!({
        path: "../wit/1.1/protocol.wit",
        world: "protocol-plugin",
    });
}

pub use current::wirelens;
pub use current::wirelens::protocol::types::{Batch, Chunks, ConnError, Direction, LogLevel, PluginInfo, Role};
pub use current::{ProtocolPlugin, ProtocolPluginPre};

/// A plugin pre-linked against the contract version it was built for.
pub enum AnyPre {
    V1_0(v1_0::ProtocolPluginPre<StoreData>),
    V1_1(v1_1::ProtocolPluginPre<StoreData>),
    Current(ProtocolPluginPre<StoreData>),
}

impl AnyPre {
    /// Bind `pre` to the bindings of `wit_version` (as the contract check
    /// read it from the component's exports).
    pub fn new(pre: InstancePre<StoreData>, wit_version: &str) -> wasmtime::Result<Self> {
        if wit_version.starts_with("1.0.") {
            Ok(Self::V1_0(v1_0::ProtocolPluginPre::new(pre)?))
        } else if wit_version.starts_with("1.1.") {
            Ok(Self::V1_1(v1_1::ProtocolPluginPre::new(pre)?))
        } else {
            Ok(Self::Current(ProtocolPluginPre::new(pre)?))
        }
    }

    /// A new instance in `store`.
    pub fn instantiate(&self, store: &mut Store<StoreData>) -> wasmtime::Result<AnyPlugin> {
        Ok(match self {
            Self::V1_0(pre) => AnyPlugin::V1_0(pre.instantiate(store)?),
            Self::V1_1(pre) => AnyPlugin::V1_1(pre.instantiate(store)?),
            Self::Current(pre) => AnyPlugin::Current(pre.instantiate(store)?),
        })
    }

    /// True for plugins of contract 1.1 or later (which take clock ticks
    /// and datagram flags, and report skips).
    pub fn takes_ticks(&self) -> bool {
        !matches!(self, Self::V1_0(_))
    }
}

/// A live instance of either contract version.
pub enum AnyPlugin {
    V1_0(v1_0::ProtocolPlugin),
    V1_1(v1_1::ProtocolPlugin),
    Current(ProtocolPlugin),
}

use v1_0::wirelens::protocol::types as old;
use v1_1::wirelens::protocol::types as v11;

impl AnyPlugin {
    pub fn info(&self, s: &mut Store<StoreData>) -> wasmtime::Result<PluginInfo> {
        match self {
            Self::Current(p) => p.wirelens_protocol_parser().call_info(s),
            Self::V1_1(p) => {
                let i = p.wirelens_protocol_parser().call_info(s)?;
                Ok(PluginInfo {
                    name: i.name,
                    version: i.version,
                    description: i.description,
                    default_ports: i.default_ports,
                    field_names: i.field_names,
                    call_field: i.call_field,
                    capture_bytes: None,
                })
            }
            Self::V1_0(p) => {
                let i = p.wirelens_protocol_parser().call_info(s)?;
                Ok(PluginInfo {
                    name: i.name,
                    version: i.version,
                    description: i.description,
                    default_ports: i.default_ports,
                    field_names: i.field_names,
                    call_field: None,
                    capture_bytes: None,
                })
            }
        }
    }

    pub fn configure(
        &self,
        s: &mut Store<StoreData>,
        options: &[(String, String)],
    ) -> wasmtime::Result<Result<(), String>> {
        match self {
            Self::Current(p) => p.wirelens_protocol_parser().call_configure(s, options),
            Self::V1_1(p) => p.wirelens_protocol_parser().call_configure(s, options),
            Self::V1_0(p) => p.wirelens_protocol_parser().call_configure(s, options),
        }
    }

    pub fn detect(
        &self,
        s: &mut Store<StoreData>,
        direction: Direction,
        role: Role,
        bytes: &[u8],
    ) -> wasmtime::Result<u8> {
        match self {
            Self::Current(p) => p.wirelens_protocol_parser().call_detect(s, direction, role, bytes),
            Self::V1_1(p) => {
                p.wirelens_protocol_parser().call_detect(s, v11_direction(direction), v11_role(role), bytes)
            }
            Self::V1_0(p) => {
                p.wirelens_protocol_parser().call_detect(s, old_direction(direction), old_role(role), bytes)
            }
        }
    }

    pub fn feed(&self, s: &mut Store<StoreData>, chunks: &Chunks, data: &[u8]) -> wasmtime::Result<Batch> {
        match self {
            Self::Current(p) => p.wirelens_protocol_parser().call_feed(s, chunks, data),
            Self::V1_1(p) => {
                let chunks = v11::Chunks {
                    conn: chunks.conn.clone(),
                    timestamp_ns: chunks.timestamp_ns.clone(),
                    captured: chunks.captured.clone(),
                    real_len: chunks.real_len.clone(),
                    flags: chunks.flags.clone(),
                };
                p.wirelens_protocol_parser().call_feed(s, &chunks, data).map(from_v11_batch)
            }
            Self::V1_0(p) => {
                let chunks = old::Chunks {
                    conn: chunks.conn.clone(),
                    timestamp_ns: chunks.timestamp_ns.clone(),
                    captured: chunks.captured.clone(),
                    real_len: chunks.real_len.clone(),
                    flags: chunks.flags.clone(),
                };
                p.wirelens_protocol_parser().call_feed(s, &chunks, data).map(from_old_batch)
            }
        }
    }

    pub fn close(&self, s: &mut Store<StoreData>, conns: &[u64]) -> wasmtime::Result<Batch> {
        match self {
            Self::Current(p) => p.wirelens_protocol_parser().call_close(s, conns),
            Self::V1_1(p) => p.wirelens_protocol_parser().call_close(s, conns).map(from_v11_batch),
            Self::V1_0(p) => p.wirelens_protocol_parser().call_close(s, conns).map(from_old_batch),
        }
    }
}

fn old_direction(d: Direction) -> old::Direction {
    match d {
        Direction::Egress => old::Direction::Egress,
        Direction::Ingress => old::Direction::Ingress,
    }
}

fn old_role(r: Role) -> old::Role {
    match r {
        Role::Client => old::Role::Client,
        Role::Server => old::Role::Server,
        Role::Unknown => old::Role::Unknown,
    }
}

fn v11_direction(d: Direction) -> v11::Direction {
    match d {
        Direction::Egress => v11::Direction::Egress,
        Direction::Ingress => v11::Direction::Ingress,
    }
}

fn v11_role(r: Role) -> v11::Role {
    match r {
        Role::Client => v11::Role::Client,
        Role::Server => v11::Role::Server,
        Role::Unknown => v11::Role::Unknown,
    }
}

fn from_v11_batch(b: v11::Batch) -> Batch {
    Batch {
        conn: b.conn,
        start_ns: b.start_ns,
        end_ns: b.end_ns,
        size: b.size,
        pair_id: b.pair_id,
        flags: b.flags,
        field_count: b.field_count,
        field_key: b.field_key,
        field_offset: b.field_offset,
        field_len: b.field_len,
        arena: b.arena,
        errors: b.errors.into_iter().map(|e| ConnError { conn: e.conn, reason: e.reason }).collect(),
        skip_conn: b.skip_conn,
        skip_flags: b.skip_flags,
        skip_bytes: b.skip_bytes,
    }
}

fn from_old_batch(b: old::Batch) -> Batch {
    Batch {
        conn: b.conn,
        start_ns: b.start_ns,
        end_ns: b.end_ns,
        size: b.size,
        pair_id: b.pair_id,
        flags: b.flags,
        field_count: b.field_count,
        field_key: b.field_key,
        field_offset: b.field_offset,
        field_len: b.field_len,
        arena: b.arena,
        errors: b.errors.into_iter().map(|e| ConnError { conn: e.conn, reason: e.reason }).collect(),
        skip_conn: vec![],
        skip_flags: vec![],
        skip_bytes: vec![],
    }
}

/// The current log level of a 1.0 plugin's.
pub fn from_old_level(level: old::LogLevel) -> LogLevel {
    match level {
        old::LogLevel::Error => LogLevel::Error,
        old::LogLevel::Warn => LogLevel::Warn,
        old::LogLevel::Info => LogLevel::Info,
        old::LogLevel::Debug => LogLevel::Debug,
    }
}

/// The current log level of a 1.1 plugin's.
pub fn from_v11_level(level: v11::LogLevel) -> LogLevel {
    match level {
        v11::LogLevel::Error => LogLevel::Error,
        v11::LogLevel::Warn => LogLevel::Warn,
        v11::LogLevel::Info => LogLevel::Info,
        v11::LogLevel::Debug => LogLevel::Debug,
    }
}

impl From<crate::capture::Role> for Role {
    fn from(r: crate::capture::Role) -> Self {
        match r {
            crate::capture::Role::Client => Role::Client,
            crate::capture::Role::Server => Role::Server,
            crate::capture::Role::Unknown => Role::Unknown,
        }
    }
}

impl From<crate::capture::Direction> for Direction {
    fn from(d: crate::capture::Direction) -> Self {
        match d {
            crate::capture::Direction::Egress => Direction::Egress,
            crate::capture::Direction::Ingress => Direction::Ingress,
        }
    }
}
