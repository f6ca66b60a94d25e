//! Hot reload: watch the plugin directory and load, replace or unload
//! plugins as `.wasm` files appear, change or go (also when a ConfigMap
//! mounted there swaps its `..data` link). The directory and each file
//! must be trusted (`trust.rs`). Compilation happens on the
//! watcher's thread, never on a parsing thread.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use notify::{RecursiveMode, Watcher};

use super::Registry;

/// Events closer together than this are handled as one change (an editor
/// or `cp` writes a file in several steps).
const SETTLE: Duration = Duration::from_millis(50);

/// Keeps the directory watched while alive.
pub struct PluginDirWatcher {
    _watcher: notify::RecommendedWatcher,
    thread: Option<std::thread::JoinHandle<()>>,
    stop: mpsc::Sender<WatchMsg>,
}

enum WatchMsg {
    Event(notify::Result<notify::Event>),
    Stop,
}

impl PluginDirWatcher {
    /// Load every plugin in `dir` now, then follow changes.
    pub fn start(registry: Arc<Registry>, dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating plugin directory {}", dir.display()))?;
        let dir = dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))?;
        super::trust::check(&dir, "plugin directory")?;
        let (tx, rx) = mpsc::channel();
        let events = tx.clone();
        let mut watcher = notify::recommended_watcher(move |ev| {
            let _ = events.send(WatchMsg::Event(ev));
        })
        .context("creating the plugin directory watcher")?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("watching plugin directory {}", dir.display()))?;
        scan(&registry, &dir);
        let thread = std::thread::Builder::new()
            .name("plugin-reload".into())
            .spawn(move || run(registry, dir, rx))
            .context("spawning the reload thread")?;
        Ok(Self { _watcher: watcher, thread: Some(thread), stop: tx })
    }
}

impl Drop for PluginDirWatcher {
    fn drop(&mut self) {
        let _ = self.stop.send(WatchMsg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn is_plugin(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "wasm")
}

/// Make the registry match the directory's current `.wasm` files.
fn scan(registry: &Registry, dir: &Path) {
    let present: BTreeSet<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| is_plugin(p)).collect(),
        Err(e) => {
            tracing::error!(dir = %dir.display(), "cannot read plugin directory: {e}");
            return;
        }
    };
    for gone in registry.files().into_iter().filter(|p| !present.contains(p)) {
        registry.remove_file(&gone);
    }
    for path in present {
        let _ = registry.load_file(&path); // errors are logged and listed by the registry
    }
}

fn run(registry: Arc<Registry>, dir: PathBuf, rx: mpsc::Receiver<WatchMsg>) {
    loop {
        let mut changed = BTreeSet::new();
        let mut rescan = false;
        match rx.recv() {
            Ok(WatchMsg::Event(ev)) => collect(ev, &mut changed, &mut rescan),
            Ok(WatchMsg::Stop) | Err(_) => return,
        }
        // Let a burst of events settle before acting on it.
        loop {
            match rx.recv_timeout(SETTLE) {
                Ok(WatchMsg::Event(ev)) => collect(ev, &mut changed, &mut rescan),
                Ok(WatchMsg::Stop) => return,
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
        if rescan {
            scan(&registry, &dir);
            continue;
        }
        for path in changed {
            if path.is_file() {
                let _ = registry.load_file(&path);
            } else {
                registry.remove_file(&path);
            }
        }
    }
}

fn collect(ev: notify::Result<notify::Event>, changed: &mut BTreeSet<PathBuf>, rescan: &mut bool) {
    match ev {
        Ok(ev) => {
            if ev.need_rescan() {
                *rescan = true;
            }
            // A Kubernetes ConfigMap swaps its files all at once: `..data`
            // (a link to the current `..<timestamp>` directory) is replaced,
            // and the `.wasm` names, links through it, see no event.
            if ev.paths.iter().any(|p| p.file_name().is_some_and(|n| n.as_encoded_bytes().starts_with(b".."))) {
                *rescan = true;
            }
            changed.extend(ev.paths.into_iter().filter(|p| is_plugin(p)));
        }
        Err(e) => {
            tracing::warn!("plugin directory watch error, rescanning: {e}");
            *rescan = true;
        }
    }
}
