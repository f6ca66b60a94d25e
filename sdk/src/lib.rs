//! # wirelens-sdk
//!
//! Write a layer-7 protocol parser for the wirelens daemon as a WebAssembly
//! component: implement [`Protocol`] once, call [`export_plugin!`] once, and
//! build with `wirelens plugins build PATH` (see `sdk/README.md`).
//!
//! The SDK owns everything protocol-independent: per-connection state, stream
//! reassembly across chunk boundaries, skipping bytes the capture truncated,
//! timestamps, and the compact batch format of the WIT contract. A protocol
//! only says, for the bytes at the front of one direction's stream, what the
//! next step is ([`Step`]).
//!
//! The same code runs natively ([`testing`]) for unit tests and inside the
//! sandbox in the daemon.

pub mod cursor;
mod fasthash;
#[doc(hidden)]
pub mod glue;
mod protocol;
pub mod sql;
mod stream;
pub mod testing;
pub mod wire;

pub use cursor::Cursor;
/// Fast byte search (SIMD inside the sandbox too), re-exported for plugins.
pub use memchr;
pub use protocol::{extend_small, Ctx, FieldKey, Fields, Info, Meta, Protocol, Step};
pub use stream::Engine;

/// Bindings generated from `wit/protocol.wit`. Plugins use the types
/// re-exported at the crate root; the rest is for the export macro.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit/protocol.wit",
        world: "protocol-plugin",
        pub_export_macro: true,
        export_macro_name: "export_component",
        default_bindings_module: "wirelens_sdk::bindings",
    });
}

pub use bindings::wirelens::protocol::types::{Batch, Chunks, ConnError, Direction, LogLevel, Role};
pub use wire::{Chunk, MessageKind};

impl Direction {
    /// 0 for egress, 1 for ingress: an index for per-direction state
    /// (`[T; 2]`).
    pub fn index(self) -> usize {
        match self {
            Direction::Egress => 0,
            Direction::Ingress => 1,
        }
    }
}

/// Version of the WIT package this SDK builds against.
pub const WIT_VERSION: &str = "1.2.0";

/// Log through the host (rate-limited there). Natively, prints to stderr.
pub fn log(level: LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    bindings::wirelens::protocol::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[plugin {level:?}] {message}");
}

/// Export a [`Protocol`] implementation as the plugin's component exports.
///
/// ```ignore
/// wirelens_sdk::export_plugin!(MyProtocol);
/// ```
/// On native targets this expands to nothing, so the crate can also be used
/// as a normal library in tests and benchmarks.
#[macro_export]
macro_rules! export_plugin {
    ($proto:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            static ENGINE: $crate::glue::EngineCell<$proto> = $crate::glue::EngineCell::new();

            struct WirelensPlugin;

            impl $crate::bindings::exports::wirelens::protocol::parser::Guest for WirelensPlugin {
                fn info() -> $crate::bindings::exports::wirelens::protocol::parser::PluginInfo {
                    $crate::glue::info::<$proto>()
                }
                fn configure(
                    options: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    ENGINE.with(|engine| engine.configure(&options))
                }
                fn detect(direction: $crate::Direction, role: $crate::Role, bytes: ::std::vec::Vec<u8>) -> u8 {
                    ENGINE.with(|engine| engine.detect(direction, role, &bytes))
                }
                fn feed(chunks: $crate::Chunks, data: ::std::vec::Vec<u8>) -> $crate::Batch {
                    ENGINE.with(|engine| engine.feed(&chunks, &data))
                }
                fn close(conns: ::std::vec::Vec<u64>) -> $crate::Batch {
                    ENGINE.with(|engine| engine.close(&conns))
                }
            }

    $crate::bindings::export_component!(WirelensPlugin with_types_in $crate::bindings);
        };
    };
}
