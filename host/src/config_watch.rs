//! Follows the config file: any change (editors replace the file, so the
//! directory is watched) raises a flag the daemon loop checks.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use notify::{RecursiveMode, Watcher};

pub struct ConfigWatch {
    _watcher: notify::RecommendedWatcher,
    changed: Arc<AtomicBool>,
}

impl ConfigWatch {
    pub fn start(file: &Path) -> Result<Self> {
        // The path as given, not resolved: a Kubernetes ConfigMap file is a
        // symlink through `..data`, which the kubelet swaps on each update
        // (a watch on the resolved directory would die with the first one).
        let file = if file.is_absolute() {
            file.to_path_buf()
        } else {
            std::env::current_dir().context("current directory")?.join(file)
        };
        let dir = file.parent().context("config file has no directory")?.to_path_buf();
        let name = file.file_name().map(|n| n.to_owned());
        let changed = Arc::new(AtomicBool::new(false));
        let flag = changed.clone();
        let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if let Ok(ev) = ev {
                let ours = ev.paths.iter().any(|p| {
                    let n = p.file_name().map(|n| n.to_owned());
                    n == name || n.is_some_and(|n| n.to_string_lossy().starts_with(".."))
                });
                let modifies = !matches!(ev.kind, notify::EventKind::Access(_));
                if ours && modifies {
                    flag.store(true, Ordering::Relaxed);
                }
            }
        })
        .context("creating the config watcher")?;
        watcher.watch(&dir, RecursiveMode::NonRecursive).with_context(|| format!("watching {}", dir.display()))?;
        Ok(Self { _watcher: watcher, changed })
    }

    /// True once after each change.
    pub fn take_change(&self) -> bool {
        self.changed.swap(false, Ordering::Relaxed)
    }
}
