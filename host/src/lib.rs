//! wirelens: a non-intrusive network observer.
//!
//! Data flow (one folder per stage):
//! capture → connections → [`protocols`] (WebAssembly plugins) → stitch →
//! aggregate → outputs (processors, flushers). `config` is the ground
//! floor every stage reads and that imports none of them.

pub mod aggregate;
pub mod capture;
pub mod clock;
pub mod collector;
pub mod config;
pub mod config_watch;
pub mod connections;
pub mod daemon;
pub mod fast_hash;
pub mod layer7;
pub mod metadata;
pub mod outputs;
pub mod protocols;
pub mod records;
pub mod stitch;
