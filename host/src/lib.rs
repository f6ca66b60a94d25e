//! wirelens: a non-intrusive network observer.
//!
//! Data flow (one folder per stage):
//! capture → connections → [`protocols`] (WebAssembly plugins) → stitch →
//! aggregate → pipeline → flushers.

pub mod aggregate;
pub mod capture;
pub mod clock;
pub mod config;
pub mod config_watch;
pub mod connections;
pub mod daemon;
pub mod fast_hash;
pub mod layer7;
pub mod metadata;
pub mod pipeline;
pub mod protocols;
pub mod records;
pub mod stitch;
