//! Host bindings generated from `wit/protocol.wit`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "protocol-plugin",
});

pub use wirelens::protocol::types::{
    Batch, Chunk, ConnError, Direction, Field, LogLevel, Message, MessageKind, PluginInfo, Role, Span, Value,
};
