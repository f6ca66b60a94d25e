//! Connection tracking: state per connection (pid + fd + the kernel
//! socket's identity, so a reused fd is a new connection), its role and
//! socket type, the drop rules, and bounded, expiring state.

pub mod local;
pub mod sockdiag;
mod tracker;

pub use tracker::{Conn, ConnKey, Role, SocketType, Tracker, TrackerConfig, TrackerStats};
