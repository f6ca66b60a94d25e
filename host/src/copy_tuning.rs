//! How glibc copies memory in the daemon: on AMD processors, blocks of
//! 2 KiB to 1 MiB with vector moves instead of `rep movsb`.
//!
//! Why: every batch of captured bytes is copied into a plugin's sandbox in
//! one `memcpy` (wasmtime lowering the `feed` call's `list<u8>`: tens of
//! KiB at a time), and glibc does copies of that size with `rep movsb` on
//! CPUs that advertise fast string moves. On the test machine's AMD EPYC
//! that copy took 13% of the daemon's CPU under nginx (perf), against 1.6%
//! for the same bytes copied in pieces under 2 KiB, and 2.85% with vector
//! moves. The daemon's CPU per observed HTTP call at 40k requests/s, paired
//! rounds: 0.929 (0.843-1.086) of glibc's way (`bench/daemon_cpu_ab.py`);
//! kernel programs and daemon together 0.970 and 0.957 (`bench/run.py`,
//! two runs); Redis, whose batches are small, unchanged.
//!
//! glibc reads its tunables only when a program starts, so the daemon
//! starts itself again (same pid, arguments and environment) with
//! `GLIBC_TUNABLES` set, once. A `GLIBC_TUNABLES` that already names the
//! threshold is left as it is: that is also how to opt out
//! (`GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=0x840`, glibc's own
//! value on the test machine). A program started with raised privileges
//! (file capabilities, setuid: glibc's secure mode) gets no tunables from
//! its environment, so there the daemon does not try; and a marker in the
//! environment of the second start keeps it from ever starting a third
//! time, whatever glibc made of the variable.

/// The tunable, and the value measured above (past glibc's 1 MiB stop
/// threshold: `rep movsb` is then never chosen).
const TUNABLE: &str = "glibc.cpu.x86_rep_movsb_threshold";
const VALUE: &str = "0x10000000";
/// Set for the second start only (and removed by it).
const MARKER: &str = "WIRELENS_STARTED_AGAIN";

/// What to do about the tunable, from the current `GLIBC_TUNABLES` and the
/// CPU's vendor: `Some(value)` for the variable when the daemon should
/// start again with it.
fn wanted(current: Option<&str>, amd: bool) -> Option<String> {
    if !amd || current.is_some_and(|c| c.contains("x86_rep_movsb_threshold")) {
        return None;
    }
    Some(match current {
        Some(c) if !c.is_empty() => format!("{c}:{TUNABLE}={VALUE}"),
        _ => format!("{TUNABLE}={VALUE}"),
    })
}

/// Start this program again with the tunable, if it is wanted (see the
/// module documentation). Returns only when it is not wanted, or when
/// starting again failed (the reason, for a log line once logging is up).
/// Call it first, before any thread starts.
pub fn restart_with_vector_copies() -> Option<String> {
    #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        if std::env::var_os(MARKER).is_some() {
            // Before any thread: nothing else reads the environment yet.
            std::env::remove_var(MARKER);
            return None;
        }
        // SAFETY: reads the process's auxiliary vector.
        if unsafe { libc::getauxval(libc::AT_SECURE) } != 0 {
            return None;
        }
        let amd = std::fs::read_to_string("/proc/cpuinfo")
            .is_ok_and(|c| c.lines().take(8).any(|l| l.starts_with("vendor_id") && l.ends_with("AuthenticAMD")));
        let current = std::env::var("GLIBC_TUNABLES").ok();
        let value = wanted(current.as_deref(), amd)?;
        // The binary by its path, not /proc/self/exe: the process's name
        // (comm: what ps and pgrep show) comes from the path executed.
        let exe = match std::env::current_exe() {
            Ok(exe) => exe,
            Err(e) => return Some(format!("not starting again with {TUNABLE}: the binary's path: {e}")),
        };
        let mut args = std::env::args_os();
        let arg0 = args.next().unwrap_or_default();
        // exec() returns only on failure.
        let error =
            std::process::Command::new(exe).arg0(arg0).args(args).env("GLIBC_TUNABLES", value).env(MARKER, "1").exec();
        Some(format!("starting again with {TUNABLE} failed ({error}); glibc's default copies are used"))
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu")))]
    None
}

#[cfg(test)]
mod tests {
    use super::wanted;

    #[test]
    fn set_once_on_amd_and_kept_when_already_named() {
        assert_eq!(wanted(None, true).as_deref(), Some("glibc.cpu.x86_rep_movsb_threshold=0x10000000"));
        assert_eq!(
            wanted(Some("glibc.malloc.check=0"), true).as_deref(),
            Some("glibc.malloc.check=0:glibc.cpu.x86_rep_movsb_threshold=0x10000000")
        );
        assert_eq!(wanted(Some(""), true).as_deref(), Some("glibc.cpu.x86_rep_movsb_threshold=0x10000000"));
        // Already started with it (or the user's own value): no loop.
        assert_eq!(wanted(Some("glibc.cpu.x86_rep_movsb_threshold=0x10000000"), true), None);
        assert_eq!(wanted(Some("glibc.cpu.x86_rep_movsb_threshold=2048"), true), None);
        // Other vendors: glibc's default (not measured here).
        assert_eq!(wanted(None, false), None);
    }
}
