//! Process metadata: command line (from the kernel's record of the
//! process's birth, else /proc) and container, the filter decision per
//! process, and forgetting processes that exited. Processes are keyed by
//! pid and start time: a reused pid is a new process.

use crate::capture::ProcKey;
use crate::fast_hash::HashMap;

use super::cgroup::{container_of, ContainerRef};
use super::containers::ContainerDirectory;
use super::filter::{Container, Filter};
use super::redact::Redactor;
use crate::records::Record;

#[derive(Clone, Debug)]
struct Process {
    cmd: String,
    container: Option<ContainerRef>,
    /// Kept by the filters? `None` until the container's metadata tells.
    keep: Option<bool>,
    /// When the process was first found gone: it is kept a while so the
    /// windows that still hold its calls can describe it.
    gone_since: Option<std::time::Instant>,
}

/// (pid, start time) -> what records say about the process, and whether it
/// is kept.
#[derive(Default)]
pub struct ProcessCache {
    procs: HashMap<ProcKey, Process>,
    containers: ContainerDirectory,
    filter: Filter,
    redactor: Redactor,
    /// Processes newly excluded, for the kernel's deny map (by pid and
    /// start: the kernel lets the pid's next process through).
    denied: Vec<ProcKey>,
    /// How long an exited process is remembered (longer than any window).
    linger: std::time::Duration,
    /// The last few processes `observe` decided on, and the decisions:
    /// events come in runs from a few processes (a client and its server
    /// taking turns), and this spares the lookup.
    recent: crate::fast_hash::Recent<(ProcKey, bool)>,
}

impl ProcessCache {
    /// `linger`: how long exited processes stay described (at least the
    /// longest flush interval, so their last calls keep their metadata).
    pub fn new(
        containers: ContainerDirectory,
        filter: Filter,
        redactor: Redactor,
        linger: std::time::Duration,
    ) -> Self {
        Self { containers, filter, redactor, linger, ..Self::default() }
    }

    /// Make sure `pid` is known (`cmdline` and `cgroup` as the capture read
    /// them, else /proc now, else the kernel's process name); true when the
    /// filters keep it (or cannot tell yet).
    /// `comm` (the kernel's process name) is asked for only when the
    /// process is new.
    pub fn observe(
        &mut self,
        key: ProcKey,
        comm: impl FnOnce() -> String,
        cmdline: Option<&str>,
        cgroup: Option<&str>,
    ) -> bool {
        if let Some(&(_, keep)) = self.recent.find(|(k, _)| *k == key) {
            return keep;
        }
        let redactor = &self.redactor;
        let p = self.procs.entry(key).or_insert_with(|| read(key.pid, comm, cmdline, cgroup, redactor));
        if let Some(keep) = p.keep {
            self.recent.remember((key, keep));
            return keep;
        }
        if let Some(c) = &p.container {
            self.containers.request(&c.id);
        }
        let info = p.container.as_ref().and_then(|c| self.containers.get(&c.id));
        let state = match (&p.container, &info) {
            (None, _) => Container::Host,
            (Some(_), None) => Container::Unknown,
            (Some(_), Some(i)) => Container::Known(i),
        };
        p.keep = self.filter.decide(&p.cmd, state);
        if p.keep == Some(false) {
            self.denied.push(key);
        }
        p.keep.unwrap_or(true)
    }

    /// At flush time: is `pid` kept? Still undecided (the runtime never
    /// answered): decided without container metadata.
    pub fn keep(&self, key: ProcKey) -> bool {
        let Some(p) = self.procs.get(&key) else { return self.filter.is_empty() };
        if let Some(keep) = p.keep {
            return keep;
        }
        // Metadata may have arrived after the process's last event.
        let info = p.container.as_ref().and_then(|c| self.containers.get(&c.id));
        match info {
            Some(i) => self.filter.decide(&p.cmd, Container::Known(&i)).unwrap_or(false),
            None => self.filter.decide_without_metadata(&p.cmd),
        }
    }

    /// Add `_process_pid_`, `_process_cmd_`, `_running_mode_`, and for a
    /// container `_container_id_`, with `_container_name_`, `_pod_name_`,
    /// `_namespace_` where the runtime told them.
    pub fn describe(&self, key: ProcKey, r: &mut Record) {
        r.push("_process_pid_", key.pid);
        let p = self.procs.get(&key);
        r.push("_process_cmd_", p.map(|p| p.cmd.as_str()).unwrap_or_default());
        let container = p.and_then(|p| p.container.as_ref());
        r.push("_running_mode_", if container.is_some() { "container" } else { "host" });
        if let Some(c) = container {
            r.push("_container_id_", &c.id);
            if let Some(info) = self.containers.get(&c.id) {
                r.push("_container_name_", info.display_name());
                if let Some(pod) = info.pod_name() {
                    r.push("_pod_name_", pod);
                }
                if let Some(ns) = info.namespace() {
                    r.push("_namespace_", ns);
                }
            }
        }
    }

    /// Forget processes that exited more than `linger` ago (gone from
    /// /proc, or their pid taken by a later process).
    pub fn expire(&mut self) {
        self.recent.clear();
        let now = std::time::Instant::now();
        let linger = self.linger;
        // The latest start seen per pid: an older process with that pid ended.
        let mut latest: HashMap<u32, u64> = HashMap::default();
        for k in self.procs.keys() {
            let l = latest.entry(k.pid).or_insert(k.start_ns);
            *l = (*l).max(k.start_ns);
        }
        self.procs.retain(|key, p| {
            let reused = latest.get(&key.pid).is_some_and(|&l| l > key.start_ns);
            if !reused && std::path::Path::new(&format!("/proc/{}", key.pid)).exists() {
                return true;
            }
            let since = *p.gone_since.get_or_insert(now);
            now.duration_since(since) < linger
        });
    }

    /// Processes excluded since the last call (to deny in the kernel).
    pub fn take_denied(&mut self) -> Vec<ProcKey> {
        std::mem::take(&mut self.denied)
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    /// The pids of the processes known (those that used the network and
    /// have not exited long ago), each once.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.procs.keys().map(|k| k.pid).collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }
}

/// A process's command line from /proc (arguments joined by spaces).
pub fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    crate::capture::event::join_args(&raw)
}

/// A process's `/proc/PID/cgroup`.
pub fn cgroup_text(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()
}

fn read(
    pid: u32,
    comm: impl FnOnce() -> String,
    known_cmd: Option<&str>,
    known_cgroup: Option<&str>,
    redactor: &Redactor,
) -> Process {
    let cmd = known_cmd.map(str::to_string).or_else(|| cmdline(pid)).unwrap_or_else(comm);
    let cgroup = known_cgroup.map(str::to_string).or_else(|| cgroup_text(pid)).unwrap_or_default();
    Process { cmd: redactor.redact(&cmd), container: container_of(&cgroup), keep: None, gone_since: None }
}
