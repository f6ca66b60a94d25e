//! The set of active plugins. Readers (workers) load it lock-free; changes
//! (start-up, plugin directory events) build a new [`Catalog`] and swap it
//! in atomically, so a call in flight finishes on the version it started
//! with and the next connection sees the new one.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use parking_lot::Mutex;

use super::plugin::{LoadedPlugin, Source};
use super::{builtin, cache, Runtime};

/// A snapshot of the plugins.
#[derive(Default)]
pub struct Catalog {
    /// Bumped on every change.
    pub generation: u64,
    /// The plugin serving each protocol name (a file overrides a built-in).
    pub active: Vec<Arc<LoadedPlugin>>,
    /// Every plugin known, for listing.
    pub entries: Vec<Entry>,
}

impl Catalog {
    /// The active plugin for a protocol.
    pub fn get(&self, name: &str) -> Option<&Arc<LoadedPlugin>> {
        self.active.iter().find(|p| &*p.meta.name == name)
    }
}

/// One line of `wirelens plugins list`.
#[derive(Clone, Debug)]
pub struct Entry {
    pub name: String,
    pub version: String,
    pub wit_version: String,
    pub source: String,
    pub state: String,
}

struct FileEntry {
    hash: String,
    plugin: Option<Arc<LoadedPlugin>>,
    error: Option<String>,
}

#[derive(Default)]
struct State {
    builtins: Vec<Arc<LoadedPlugin>>,
    builtin_errors: Vec<(String, String)>,
    files: BTreeMap<PathBuf, FileEntry>,
    generation: u64,
}

/// Options for plugins, by plugin name: (option, value) in order.
pub type PluginOptions = HashMap<String, Vec<(String, String)>>;

/// Plugins from the built-ins and the plugin directory.
pub struct Registry {
    runtime: Arc<Runtime>,
    options: PluginOptions,
    catalog: ArcSwap<Catalog>,
    state: Mutex<State>,
}

impl Registry {
    /// An empty registry; `options` are per-protocol plugin options.
    pub fn new(runtime: Arc<Runtime>, options: PluginOptions) -> Arc<Self> {
        Arc::new(Self { runtime, options, catalog: ArcSwap::from_pointee(Catalog::default()), state: Mutex::default() })
    }

    /// The runtime plugins run in.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The current catalog (cheap: an atomic load).
    pub fn catalog(&self) -> arc_swap::Guard<Arc<Catalog>> {
        self.catalog.load()
    }

    /// Load the plugins built into the daemon. A built-in that fails to
    /// load is reported in the catalog; the others still load.
    pub fn load_builtins(&self) {
        let mut loaded = Vec::new();
        let mut errors = Vec::new();
        for (name, bytes) in builtin::PLUGINS {
            match LoadedPlugin::load(&self.runtime, bytes, Source::Builtin, &self.options) {
                Ok(p) => loaded.push(p),
                Err(e) => {
                    tracing::error!(plugin = name, "built-in plugin failed to load: {e:#}");
                    errors.push((name.to_string(), format!("{e:#}")));
                }
            }
        }
        let mut st = self.state.lock();
        st.builtins = loaded;
        st.builtin_errors = errors;
        self.publish(&mut st);
    }

    /// Load (or reload) one plugin file. On error the previous version of
    /// that file, if any, stays active.
    pub fn load_file(&self, path: &Path) -> Result<Arc<LoadedPlugin>> {
        let bytes = super::trust::check(path, "plugin")
            .and_then(|()| std::fs::read(path).with_context(|| format!("reading {}", path.display())));
        let hash = bytes.as_ref().map(|b| cache::content_hash(b)).unwrap_or_default();
        {
            let st = self.state.lock();
            if let Some(FileEntry { plugin: Some(p), hash: h, error: None }) = st.files.get(path) {
                if *h == hash {
                    return Ok(p.clone());
                }
            }
        }
        // Compile outside the lock: readers never wait for a compilation.
        let result = bytes.and_then(|bytes| {
            LoadedPlugin::load(&self.runtime, &bytes, Source::File(path.to_path_buf()), &self.options)
                .with_context(|| format!("plugin {}", path.display()))
        });
        let mut st = self.state.lock();
        let previous = st.files.remove(path).and_then(|e| e.plugin);
        let out = match result {
            Ok(plugin) => {
                tracing::info!(
                    plugin = %plugin.meta.label(),
                    path = %path.display(),
                    replaces = previous.as_ref().map(|p| p.meta.label()).unwrap_or_default(),
                    "plugin loaded"
                );
                st.files.insert(path.to_path_buf(), FileEntry { hash, plugin: Some(plugin.clone()), error: None });
                Ok(plugin)
            }
            Err(e) => {
                let kept = previous.as_ref().map(|p| p.meta.label());
                tracing::error!(path = %path.display(), kept = kept.unwrap_or_default(), "invalid plugin: {e:#}");
                let error = Some(format!("{e:#}"));
                st.files.insert(path.to_path_buf(), FileEntry { hash, plugin: previous, error });
                Err(e)
            }
        };
        self.publish(&mut st);
        out
    }

    /// Forget a removed plugin file (its protocol goes, or falls back to
    /// the built-in of the same name).
    pub fn remove_file(&self, path: &Path) {
        let mut st = self.state.lock();
        if let Some(entry) = st.files.remove(path) {
            if let Some(p) = entry.plugin {
                tracing::info!(plugin = %p.meta.label(), path = %path.display(), "plugin unloaded");
            }
            self.publish(&mut st);
        }
    }

    /// The built-ins that failed to load, with why.
    pub fn builtin_errors(&self) -> Vec<(String, String)> {
        self.state.lock().builtin_errors.clone()
    }

    /// Files currently known.
    pub fn files(&self) -> Vec<PathBuf> {
        self.state.lock().files.keys().cloned().collect()
    }

    /// Options configured for a protocol.
    pub fn options_for(&self, name: &str) -> &[(String, String)] {
        self.options.get(name).map(Vec::as_slice).unwrap_or_default()
    }

    /// Rebuild the catalog from `st` and swap it in.
    fn publish(&self, st: &mut State) {
        st.generation += 1;
        let now = Instant::now();
        let mut active: BTreeMap<Arc<str>, Arc<LoadedPlugin>> = BTreeMap::new();
        for p in &st.builtins {
            active.insert(p.meta.name.clone(), p.clone());
        }
        // Files override built-ins; among files, the most recent load wins.
        let mut from_files: Vec<_> = st.files.values().filter_map(|f| f.plugin.clone()).collect();
        from_files.sort_by_key(|p| p.meta.id);
        for p in from_files {
            active.insert(p.meta.name.clone(), p);
        }
        let mut entries = Vec::new();
        let state_of = |p: &Arc<LoadedPlugin>| -> String {
            let is_active = active.get(&p.meta.name).is_some_and(|a| a.meta.id == p.meta.id);
            if !is_active {
                let by = &active[&p.meta.name];
                return format!("shadowed by {}", by.meta.source);
            }
            if !p.is_available(now) {
                return "quarantined".into();
            }
            "active".into()
        };
        for p in &st.builtins {
            entries.push(entry(p, state_of(p)));
        }
        for (name, err) in &st.builtin_errors {
            entries.push(Entry {
                name: name.clone(),
                version: "-".into(),
                wit_version: "-".into(),
                source: "builtin".into(),
                state: format!("invalid: {err}"),
            });
        }
        for (path, f) in &st.files {
            match (&f.plugin, &f.error) {
                (Some(p), None) => entries.push(entry(p, state_of(p))),
                (Some(p), Some(err)) => {
                    entries.push(entry(p, format!("{} (newer file invalid: {err})", state_of(p))));
                }
                (None, err) => entries.push(Entry {
                    name: path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
                    version: "-".into(),
                    wit_version: "-".into(),
                    source: path.display().to_string(),
                    state: format!("invalid: {}", err.as_deref().unwrap_or("unknown error")),
                }),
            }
        }
        let catalog = Catalog { generation: st.generation, active: active.into_values().collect(), entries };
        self.catalog.store(Arc::new(catalog));
    }
}

fn entry(p: &LoadedPlugin, state: String) -> Entry {
    Entry {
        name: p.meta.name.to_string(),
        version: p.meta.version.clone(),
        wit_version: p.meta.wit_version.clone(),
        source: p.meta.source.to_string(),
        state,
    }
}
