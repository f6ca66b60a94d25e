//! Host bindings generated from `wit/protocol.wit`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "protocol-plugin",
});

pub use self::wirelens::protocol::types::{Batch, Chunks, ConnError, Direction, LogLevel, PluginInfo, Role};
