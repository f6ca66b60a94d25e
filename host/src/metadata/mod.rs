//! Metadata added to records, and the filters that use it: processes
//! (`process.rs`), the container a process runs in (`cgroup.rs`), the
//! container runtime's view of it (`docker.rs`, `containers.rs`), and the
//! seed's include/exclude keys (`filter.rs`).

pub mod cgroup;
pub mod containers;
pub mod docker;
pub mod filter;
mod process;

pub use process::{cgroup_text, cmdline, ProcessCache};
