//! What the machine needs before programs load: root, BTF, tracefs, and a
//! memlock limit raised where that is allowed.

use std::path::Path;

use anyhow::{bail, Result};

const BTF: &str = "/sys/kernel/btf/vmlinux";
const TRACEFS: &str = "/sys/kernel/tracing";

pub(super) fn prepare() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("capture needs root (CAP_BPF and CAP_PERFMON): run as root, or set EBPF.Enabled: false to run without capture");
    }
    if !Path::new(BTF).exists() {
        bail!(
            "{BTF} is missing: the kernel must be built with CONFIG_DEBUG_INFO_BTF for the capture's CO-RE relocations"
        );
    }
    if !Path::new(TRACEFS).join("events").exists() && !Path::new("/sys/kernel/debug/tracing/events").exists() {
        mount_tracefs()?;
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

fn mount_tracefs() -> Result<()> {
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
    let (src, target, fstype) = (c("tracefs"), c(TRACEFS), c("tracefs"));
    // SAFETY: valid C strings; no data argument.
    let rc = unsafe { libc::mount(src.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        bail!("tracefs is not mounted and mounting it on {TRACEFS} failed: {}", std::io::Error::last_os_error());
    }
    tracing::info!("mounted tracefs on {TRACEFS}");
    Ok(())
}
