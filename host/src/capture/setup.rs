//! What the machine needs before programs load: root, BTF, and a memlock
//! limit raised where that is allowed. (The programs attach to BTF
//! tracepoints through the bpf syscall alone: no tracefs is needed.)

use std::path::Path;

use anyhow::{bail, Result};

const BTF: &str = "/sys/kernel/btf/vmlinux";

pub(super) fn prepare() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("capture needs root (CAP_BPF and CAP_PERFMON): run as root, or set EBPF.Enabled: false to run without capture");
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
    Ok(())
}
