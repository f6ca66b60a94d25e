//! TLS libraries: every OpenSSL `libssl` that a process maps gets the
//! uprobes on `SSL_write`, `SSL_read`, `SSL_write_ex` and `SSL_read_ex`
//! (entry and return). A uprobe belongs to a file, not a process: one
//! attachment per library file (device, inode) serves every process that
//! maps it, those started later and those that load it later (`dlopen`)
//! included. Libraries inside containers are reached through
//! `/proc/PID/root`.
//!
//! Processes are looked at when first seen (a new pid in `/proc`; at most
//! [`NEW_PER_SCAN`] a scan) and at the next scan (it may have been still
//! starting), and those that use the network again every [`RESCAN`] (at most
//! [`RESCANS_PER_SCAN`] per scan): a process that loads a library file no
//! process mapped before (`dlopen`) is found while it talks.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aya::programs::uprobe::UProbeScope;
use aya::programs::UProbe;
use aya::Ebpf;

/// (program, function): entry and return of each function read.
pub const PROBES: [(&str, &str); 8] = [
    ("ssl_write_enter", "SSL_write"),
    ("ssl_write_exit", "SSL_write"),
    ("ssl_read_enter", "SSL_read"),
    ("ssl_read_exit", "SSL_read"),
    ("ssl_write_ex_enter", "SSL_write_ex"),
    ("ssl_write_ex_exit", "SSL_write_ex"),
    ("ssl_read_ex_enter", "SSL_read_ex"),
    ("ssl_read_ex_exit", "SSL_read_ex"),
];

/// A process that uses the network is looked at again this often
/// (libraries loaded late).
const RESCAN: Duration = Duration::from_secs(3);
/// Most processes looked at again per scan (a scan a second): the cost
/// stays bounded on a host with many processes.
const RESCANS_PER_SCAN: usize = 64;
/// Most new processes looked at per scan (a host that forks hundreds a
/// second); those past it are left to the rescans of processes that talk.
const NEW_PER_SCAN: usize = 256;

/// The libraries attached, and what was looked at.
#[derive(Default)]
pub struct TlsLibraries {
    /// (device, inode) of files attached, or given up on (logged once).
    done: HashSet<(u64, u64)>,
    /// Libraries attached.
    pub attached: u64,
    /// Libraries that could not be attached.
    pub failed: u64,
    /// Pids in /proc at the last scan, with their directory's change time
    /// (a reused pid is a new directory), and when each was looked at.
    seen: HashMap<u32, (u64, Instant)>,
    /// Pids seen for the first time at the last scan: looked at again.
    second_look: HashSet<u32>,
}

impl TlsLibraries {
    /// Look at processes new since the last scan, and again at up to
    /// [`RESCANS_PER_SCAN`] of `talking` (processes using the network)
    /// not looked at for [`RESCAN`]; attach to the new library files they
    /// map.
    pub fn scan(&mut self, ebpf: &mut Ebpf, talking: impl IntoIterator<Item = u32>) {
        let now = Instant::now();
        let Ok(dir) = std::fs::read_dir("/proc") else { return };
        let mut current = HashMap::with_capacity(self.seen.len());
        let mut new_looks = 0;
        // The first scan looks at every process (the libraries in use when
        // the daemon starts).
        let cap = if self.seen.is_empty() { usize::MAX } else { NEW_PER_SCAN };
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            let born = entry.metadata().map(|m| m.ctime() as u64).unwrap_or(0);
            match self.seen.get(&pid) {
                Some(&(b, at)) if b == born => {
                    // Looked at once, when it may have been still starting
                    // (forked, not yet exec'd or linked): once more.
                    if !self.second_look.remove(&pid) {
                        current.insert(pid, (born, at));
                        continue;
                    }
                    current.insert(pid, (born, now));
                    self.look_at(ebpf, pid);
                }
                _ if new_looks < cap => {
                    new_looks += 1;
                    current.insert(pid, (born, now));
                    self.second_look.insert(pid);
                    self.look_at(ebpf, pid);
                }
                // Past the bound: due for a rescan if it talks.
                _ => {
                    current.insert(pid, (born, now.checked_sub(RESCAN).unwrap_or(now)));
                }
            }
        }
        self.seen = current;
        self.second_look.retain(|pid| self.seen.contains_key(pid));
        let mut rescans = 0;
        for pid in talking {
            if rescans == RESCANS_PER_SCAN {
                break;
            }
            let Some((_, at)) = self.seen.get_mut(&pid) else { continue };
            if now.duration_since(*at) < RESCAN {
                continue;
            }
            *at = now;
            rescans += 1;
            self.look_at(ebpf, pid);
        }
    }

    fn look_at(&mut self, ebpf: &mut Ebpf, pid: u32) {
        let libs = libraries_of(pid);
        tracing::trace!(pid, ?libs, "looked at for TLS libraries");
        for lib in libs {
            self.attach(ebpf, &lib);
        }
    }

    fn attach(&mut self, ebpf: &mut Ebpf, path: &Path) {
        let Ok(meta) = std::fs::metadata(path) else { return };
        if !self.done.insert((meta.dev(), meta.ino())) {
            return;
        }
        match attach_library(ebpf, path) {
            Ok(functions) => {
                self.attached += 1;
                tracing::info!(library = %path.display(), ?functions, "TLS library attached");
            }
            Err(e) => {
                self.failed += 1;
                tracing::warn!(library = %path.display(), "TLS library not attached: {e:#}");
            }
        }
    }
}

/// The OpenSSL libraries a process maps, as paths the daemon can open
/// (through the process's root: containers have their own).
fn libraries_of(pid: u32) -> Vec<PathBuf> {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else { return vec![] };
    let mut out: Vec<PathBuf> = Vec::new();
    for line in maps.lines() {
        // address perms offset dev inode path
        let Some(path) = line.split_whitespace().nth(5) else { continue };
        let name = path.rsplit('/').next().unwrap_or(path);
        if !name.starts_with("libssl.so") || line.ends_with("(deleted)") {
            continue;
        }
        let full = PathBuf::from(format!("/proc/{pid}/root{path}"));
        if !out.contains(&full) {
            out.push(full);
        }
    }
    out
}

/// Attach every probe to the library; the functions attached (a library
/// without the `_ex` functions, OpenSSL before 1.1.1, still gets the
/// others). An error when `SSL_write` or `SSL_read` cannot be attached.
fn attach_library(ebpf: &mut Ebpf, path: &Path) -> anyhow::Result<Vec<&'static str>> {
    let mut functions = Vec::new();
    for (program, function) in PROBES {
        let prog: &mut UProbe = ebpf
            .program_mut(program)
            .ok_or_else(|| anyhow::anyhow!("program {program} missing from the object"))?
            .try_into()?;
        match prog.attach(function, path, UProbeScope::AllProcesses) {
            Ok(_) => {
                if !functions.contains(&function) {
                    functions.push(function);
                }
            }
            Err(e) if function.ends_with("_ex") => {
                tracing::debug!(library = %path.display(), "{function}: {e}");
            }
            Err(e) => anyhow::bail!("{function}: {e}"),
        }
    }
    Ok(functions)
}
