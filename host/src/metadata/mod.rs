//! Metadata added to records: processes now (containers and Kubernetes later).

mod process;

pub use process::{cmdline, ProcessCache};
