//! Protocol plugins: the WebAssembly runtime that loads, sandboxes and
//! hot-reloads layer-7 parsers, and the per-thread worker that detects each
//! connection's protocol and feeds its chunks to the right plugin.
//!
//! - [`contract`]: the WIT version this daemon speaks, and the check that
//!   refuses plugins built against another major version.
//! - [`runtime`]: the wasmtime engine, epoch ticker and linker.
//! - [`cache`]: precompiled artifacts keyed by content hash.
//! - [`plugin`]: one loaded plugin (compiled component, info, health).
//! - [`sandbox`]: one instance with its limits; every call goes through it.
//! - [`registry`]: the set of active plugins, swapped atomically.
//! - [`reload`]: the plugin-directory watcher.
//! - [`field_sets`]: messages' fields, interned as a whole.
//! - [`worker`]: detection, batching and dispatch per connection.

pub mod bindings;
pub mod builtin;
pub mod cache;
pub mod contract;
pub mod field_sets;
pub mod limits;
pub mod plugin;
pub mod registry;
pub mod reload;
pub mod runtime;
pub mod sandbox;
pub mod trust;
pub mod wire;
pub mod worker;

pub use field_sets::{FieldSet, FieldSets};
pub use limits::SandboxLimits;
pub use plugin::{LoadedPlugin, PluginMeta, Source};
pub use registry::{PluginOptions, Registry};
pub use runtime::Runtime;
pub use sandbox::{Failure, Sandbox};
pub use wire::MessageKind;
pub use worker::{ChunkIn, ConnEvent, Parsed, ProtocolWorker, WorkerConfig};
