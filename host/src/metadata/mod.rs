//! Metadata added to records, and the filters that use it: processes
//! (`process.rs`), the container a process runs in (`cgroup.rs`), the
//! container runtimes' view of it (`runtime/`: Docker and the CRI, asked
//! off the capture path by `containers.rs`), and iLogtail's include/exclude
//! keys (`filter.rs`).

pub mod cgroup;
pub mod containers;
pub mod filter;
mod process;
pub mod redact;
pub mod runtime;

pub use process::{cgroup_text, cmdline, ProcessCache};
