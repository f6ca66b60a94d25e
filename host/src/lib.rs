//! wirelens: a non-intrusive network observer.
//!
//! Data flow (one folder per stage):
//! capture → connections → [`protocols`] (WebAssembly plugins) → stitch →
//! aggregate → outputs (processors, flushers). `config` is the ground
//! floor every stage reads and that imports none of them.

pub mod admin;
pub mod aggregate;
pub mod capture;
pub mod clock;
pub mod collector;
pub mod config;
pub mod config_watch;
pub mod connections;
pub mod copy_tuning;
pub mod daemon;
pub mod fast_hash;
pub mod layer7;
pub mod metadata;
pub mod outputs;
pub mod protocols;
pub mod records;
pub mod stitch;

/// The commit the daemon was built from (`git rev-parse`, at build time;
/// `unknown` outside a git checkout).
pub const COMMIT: &str = env!("WIRELENS_COMMIT");

/// `--version`'s text: the version and the commit.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("WIRELENS_COMMIT"), ")");
