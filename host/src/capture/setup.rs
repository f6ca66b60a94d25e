//! What the machine needs before programs load: the capabilities, BTF,
//! and a memlock limit raised where that is allowed. (The programs attach
//! to BTF tracepoints through the bpf syscall alone: no tracefs is needed.)
//!
//! The capabilities, as measured with `capsh` on Linux 6.18 (each one
//! dropped in turn; `tests/privileges.rs` keeps the measurement):
//! - `CAP_BPF` and `CAP_PERFMON`: load the programs, their maps and the ring
//!   buffer, attach to tracepoints (`CAP_SYS_ADMIN` also grants both);
//! - `CAP_SYS_ADMIN`: the uprobes on TLS libraries (the kernel's uprobe
//!   perf events ask for it); without it TLS connections are layer 4 only;
//! - `CAP_SYS_PTRACE`: other processes' `/proc/PID/root`, `maps` and
//!   `environ` (TLS libraries, containers' files, `IncludeEnvs`);
//! - `CAP_DAC_READ_SEARCH`: container runtimes' sockets and other users'
//!   `/proc` files.
//!
//! `CAP_NET_ADMIN` and `CAP_SYS_RESOURCE` changed nothing and are not asked
//! for (BPF memory is charged to the cgroup since 5.11; sock_diag's dumps
//! need no capability).

use std::path::Path;

use anyhow::{bail, Result};

const BTF: &str = "/sys/kernel/btf/vmlinux";

/// Capability numbers (linux/capability.h).
const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The process's effective capabilities (`CapEff` of /proc/self/status).
fn effective_capabilities() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("CapEff:").map(|v| v.trim().to_string())))
        .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
        .unwrap_or(0)
}

fn has(caps: u64, cap: u32) -> bool {
    caps & (1 << cap) != 0
}

/// Check the machine; `Ok(true)` when TLS libraries can be probed (`tls`
/// asked for and `CAP_SYS_ADMIN` held).
pub(super) fn prepare(tls: bool) -> Result<bool> {
    let caps = effective_capabilities();
    let admin = has(caps, CAP_SYS_ADMIN);
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|&(c, _)| !has(caps, c) && !admin)
        .map(|(_, name)| name)
        .collect();
    if !missing.is_empty() {
        bail!(
            "capture needs {} (effective capabilities {caps:#x}): grant {} (or run as root), or set EBPF.Enabled: false to run without capture",
            missing.join(" and "),
            missing.join(", ")
        );
    }
    if tls && !admin {
        tracing::warn!("without CAP_SYS_ADMIN the TLS libraries cannot be probed (uprobes need it): TLS connections are layer 4 only");
    }
    for (cap, name, what) in [
        (
            CAP_SYS_PTRACE,
            "CAP_SYS_PTRACE",
            "other processes' /proc/PID/root, maps and environ (TLS libraries, IncludeEnvs)",
        ),
        (CAP_DAC_READ_SEARCH, "CAP_DAC_READ_SEARCH", "container runtimes' sockets and other users' /proc files"),
    ] {
        if !has(caps, cap) {
            tracing::warn!("without {name} the daemon may not read {what}");
        }
    }
    if !Path::new(BTF).exists() {
        bail!(
            "{BTF} is missing: the kernel must be built with CONFIG_DEBUG_INFO_BTF (the capture's CO-RE \
             relocations and BTF tracepoints need it)"
        );
    }
    // Not needed on kernels that charge BPF memory to the cgroup (5.11+);
    // older ones need it raised. EPERM is expected where the hard limit is low.
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: a valid rlimit value.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!("RLIMIT_MEMLOCK not raised ({}); fine on this kernel", std::io::Error::last_os_error());
    }
    Ok(tls && admin)
}
