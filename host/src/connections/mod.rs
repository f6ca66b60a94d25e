//! Connection tracking: state per connection, keyed by the process (pid
//! and start time) and the socket's cookie (never reused, unlike fds), its
//! role and socket type, the drop rules, and bounded, expiring state.

pub mod local;
pub mod sockdiag;
mod tracker;

pub use tracker::{Conn, ConnKey, Role, SocketType, Tracker, TrackerConfig, TrackerStats, TLS_SOCK};
