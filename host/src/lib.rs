//! wirelens: a non-intrusive network observer.
//!
//! Data flow (one folder per stage):
//! capture → connections → [`protocols`] (WebAssembly plugins) → stitch →
//! aggregate → pipeline → flushers.

pub mod protocols;
