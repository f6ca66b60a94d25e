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

/// Conversions between the current contract's types and those of an older
/// version it accepts: the same shapes under other names, less what later
/// versions added (`$call_field` of the plugin info `$i`, `$skips` of the
/// batch `$b`).
macro_rules! older_version {
    ($module:ident, $types:path, |$i:ident| $call_field:expr, |$b:ident| $skips:expr) => {
        pub mod $module {
            use super::{Batch, Chunks, ConnError, Direction, LogLevel, PluginInfo, Role};
            use $types as t;

            pub fn info($i: t::PluginInfo) -> PluginInfo {
                let call_field = $call_field;
                PluginInfo {
                    name: $i.name,
                    version: $i.version,
                    description: $i.description,
                    default_ports: $i.default_ports,
                    field_names: $i.field_names,
                    call_field,
                    capture_bytes: None,
                }
            }

            pub fn direction(d: Direction) -> t::Direction {
                match d {
                    Direction::Egress => t::Direction::Egress,
                    Direction::Ingress => t::Direction::Ingress,
                }
            }

            pub fn role(r: Role) -> t::Role {
                match r {
                    Role::Client => t::Role::Client,
                    Role::Server => t::Role::Server,
                    Role::Unknown => t::Role::Unknown,
                }
            }

            pub fn chunks(c: &Chunks) -> t::Chunks {
                t::Chunks {
                    conn: c.conn.clone(),
                    timestamp_ns: c.timestamp_ns.clone(),
                    captured: c.captured.clone(),
                    real_len: c.real_len.clone(),
                    flags: c.flags.clone(),
                }
            }

            pub fn batch($b: t::Batch) -> Batch {
                let (skip_conn, skip_flags, skip_bytes) = $skips;
                Batch {
                    conn: $b.conn,
                    start_ns: $b.start_ns,
                    end_ns: $b.end_ns,
                    size: $b.size,
                    pair_id: $b.pair_id,
                    flags: $b.flags,
                    field_count: $b.field_count,
                    field_key: $b.field_key,
                    field_offset: $b.field_offset,
                    field_len: $b.field_len,
                    arena: $b.arena,
                    errors: $b.errors.into_iter().map(|e| ConnError { conn: e.conn, reason: e.reason }).collect(),
                    skip_conn,
                    skip_flags,
                    skip_bytes,
                }
            }

            /// The current log level of a plugin's of this version.
            pub fn level(level: t::LogLevel) -> LogLevel {
                match level {
                    t::LogLevel::Error => LogLevel::Error,
                    t::LogLevel::Warn => LogLevel::Warn,
                    t::LogLevel::Info => LogLevel::Info,
                    t::LogLevel::Debug => LogLevel::Debug,
                }
            }
        }
    };
}

older_version!(from_1_0, super::v1_0::wirelens::protocol::types, |i| None, |b| (vec![], vec![], vec![]));
older_version!(from_1_1, super::v1_1::wirelens::protocol::types, |i| i.call_field, |b| (
    b.skip_conn,
    b.skip_flags,
    b.skip_bytes
));

impl AnyPlugin {
    pub fn info(&self, s: &mut Store<StoreData>) -> wasmtime::Result<PluginInfo> {
        match self {
            Self::Current(p) => p.wirelens_protocol_parser().call_info(s),
            Self::V1_1(p) => p.wirelens_protocol_parser().call_info(s).map(from_1_1::info),
            Self::V1_0(p) => p.wirelens_protocol_parser().call_info(s).map(from_1_0::info),
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
                p.wirelens_protocol_parser().call_detect(s, from_1_1::direction(direction), from_1_1::role(role), bytes)
            }
            Self::V1_0(p) => {
                p.wirelens_protocol_parser().call_detect(s, from_1_0::direction(direction), from_1_0::role(role), bytes)
            }
        }
    }

    pub fn feed(&self, s: &mut Store<StoreData>, chunks: &Chunks, data: &[u8]) -> wasmtime::Result<Batch> {
        match self {
            Self::Current(p) => p.wirelens_protocol_parser().call_feed(s, chunks, data),
            Self::V1_1(p) => {
                p.wirelens_protocol_parser().call_feed(s, &from_1_1::chunks(chunks), data).map(from_1_1::batch)
            }
            Self::V1_0(p) => {
                p.wirelens_protocol_parser().call_feed(s, &from_1_0::chunks(chunks), data).map(from_1_0::batch)
            }
        }
    }

    pub fn close(&self, s: &mut Store<StoreData>, conns: &[u64]) -> wasmtime::Result<Batch> {
        match self {
            Self::Current(p) => p.wirelens_protocol_parser().call_close(s, conns),
            Self::V1_1(p) => p.wirelens_protocol_parser().call_close(s, conns).map(from_1_1::batch),
            Self::V1_0(p) => p.wirelens_protocol_parser().call_close(s, conns).map(from_1_0::batch),
        }
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
