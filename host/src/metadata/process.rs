//! Process metadata: command line and running mode, read from /proc at first
//! sight (short-lived processes are gone by flush time) and forgotten when
//! the process exits.

use std::collections::HashMap;

use crate::records::Record;

#[derive(Clone, Debug)]
struct Process {
    cmd: String,
    container: bool,
}

/// pid -> what records say about the process.
#[derive(Default)]
pub struct ProcessCache {
    procs: HashMap<u32, Process>,
}

impl ProcessCache {
    /// Make sure `pid` is known: `cmdline` if the capture read it already,
    /// else /proc now, else the kernel's process name.
    pub fn observe(&mut self, pid: u32, comm: &str, cmdline: Option<&str>) {
        self.procs.entry(pid).or_insert_with(|| read(pid, comm, cmdline));
    }

    /// Add `_process_pid_`, `_process_cmd_` and `_running_mode_`.
    pub fn describe(&self, pid: u32, r: &mut Record) {
        r.push("_process_pid_", pid);
        let p = self.procs.get(&pid);
        r.push("_process_cmd_", p.map(|p| p.cmd.as_str()).unwrap_or_default());
        r.push("_running_mode_", if p.is_some_and(|p| p.container) { "container" } else { "host" });
    }

    /// Forget processes that exited.
    pub fn expire(&mut self) {
        self.procs.retain(|pid, _| std::path::Path::new(&format!("/proc/{pid}")).exists());
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }
}

/// A process's command line from /proc (arguments joined by spaces).
pub fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let parts: Vec<String> =
        raw.split(|&b| b == 0).filter(|p| !p.is_empty()).map(|p| String::from_utf8_lossy(p).into_owned()).collect();
    Some(parts.join(" ")).filter(|c| !c.is_empty())
}

fn read(pid: u32, comm: &str, known: Option<&str>) -> Process {
    let cmd = known.map(str::to_string).or_else(|| cmdline(pid)).unwrap_or_else(|| comm.to_string());
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let container = ["/docker/", "docker-", "/kubepods", "cri-containerd", "crio-", "/libpod-"]
        .iter()
        .any(|marker| cgroup.contains(marker));
    Process { cmd, container }
}
