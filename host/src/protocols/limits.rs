//! Sandbox limits: what one plugin instance and one call may use
//! (`Wirelens.PluginDeadlineMs` and `Wirelens.PluginMemoryBytes` set two).

use std::time::Duration;

/// Limits applied to every plugin instance and call.
#[derive(Clone, Debug)]
pub struct SandboxLimits {
    /// CPU time one call may use before it is interrupted (see `CallClock`).
    pub deadline: Duration,
    /// Most linear memory one instance may grow to.
    pub memory_bytes: usize,
    /// Most messages one call may return. A call takes up to 256 KiB of
    /// chunks, which pipelined Redis replies fill with 30,000 messages, and
    /// a lost region answers every outstanding request (65,536 per
    /// connection) with an inferred response: a flood is bounded by the
    /// instance's memory before this.
    pub max_messages: usize,
    /// Most bytes of text (arena) plus errors one call may return.
    pub max_output_bytes: usize,
    /// Failures within `failure_window` that quarantine a plugin.
    pub failure_threshold: u32,
    pub failure_window: Duration,
    /// First quarantine; each further one doubles, up to `quarantine_max`.
    pub quarantine_base: Duration,
    pub quarantine_max: Duration,
    /// Log lines a plugin may write per second (the rest are counted, not printed).
    pub log_lines_per_second: u32,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            deadline: Duration::from_millis(10),
            memory_bytes: 64 << 20,
            max_messages: 1 << 20,
            max_output_bytes: 4 << 20,
            failure_threshold: 5,
            failure_window: Duration::from_secs(60),
            quarantine_base: Duration::from_secs(5),
            quarantine_max: Duration::from_secs(300),
            log_lines_per_second: 20,
        }
    }
}
