//! Precompiled components on disk, keyed by the plugin's content hash and
//! by the engine's compatibility hash (an artifact only loads into the
//! wasmtime version and configuration that produced it), so a restart does
//! not recompile.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

/// Where compiled artifacts go by default: $WIRELENS_CACHE_DIR, else
/// $XDG_CACHE_HOME/wirelens, else ~/.cache/wirelens.
pub fn default_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("WIRELENS_CACHE_DIR") {
        return Some(d.into());
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("wirelens"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/wirelens"))
}

/// Content hash of a plugin file (hex SHA-256).
pub fn content_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where compiled artifacts live; `None` disables the cache.
pub struct ArtifactCache {
    dir: Option<PathBuf>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl ArtifactCache {
    /// The cache under `root`, created if missing (only its user may
    /// write it); refused when someone else could write it.
    pub(crate) fn new(engine: &Engine, root: Option<PathBuf>) -> Result<Self> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let mut dir = root.map(|r| r.join(format!("wasmtime-{:016x}", h.finish())));
        if let Some(d) = dir.clone() {
            use std::os::unix::fs::DirBuilderExt;
            match std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&d) {
                Ok(()) => {
                    for d in [d.parent().expect("under the root"), d.as_path()] {
                        super::trust::check(d, "cache directory")?;
                    }
                }
                // A directory it cannot write (another user's home) only
                // costs the restarts a compilation.
                Err(e) => {
                    tracing::warn!("cache directory {}: {e}; compiled plugins are not cached", d.display());
                    dir = None;
                }
            }
        }
        Ok(Self { dir, hits: AtomicU64::new(0), misses: AtomicU64::new(0) })
    }

    /// Artifacts found on disk.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Components compiled (not found on disk).
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// Compile `bytes` (a component) or load its cached artifact.
    pub fn component(&self, engine: &Engine, bytes: &[u8], hash: &str) -> Result<Component> {
        if Engine::detect_precompiled(bytes).is_some() {
            // Deserializing an artifact trusts it completely: only our own
            // cache directory is trusted, never a plugin file.
            bail!("is a precompiled artifact, not a component: give the .wasm component instead");
        }
        let path = self.dir.as_ref().map(|d| d.join(format!("{hash}.cwasm")));
        // An artifact someone else could have written is compiled afresh
        // (and replaced) instead of run.
        let trusted = |p: &std::path::Path| match super::trust::check(p, "cached artifact") {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!("not loading it: {e:#}");
                false
            }
        };
        if let Some(path) = path.as_ref().filter(|p| p.exists() && trusted(p)) {
            // SAFETY: the file was written by `serialize` below for this
            // engine configuration (the directory name carries its hash);
            // wasmtime still checks the header and refuses a mismatch.
            match unsafe { Component::deserialize_file(engine, path) } {
                Ok(component) => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(component);
                }
                Err(e) => tracing::warn!(path = %path.display(), "ignoring unusable cached artifact: {e:#}"),
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let component = Component::new(engine, bytes)
            .map_err(anyhow::Error::from)
            .context("is not a valid WebAssembly component")?;
        if let Some(path) = path {
            if let Err(e) = store(&path, &component) {
                tracing::warn!(path = %path.display(), "cannot cache compiled plugin: {e:#}");
            }
        }
        Ok(component)
    }
}

fn store(path: &std::path::Path, component: &Component) -> Result<()> {
    let dir = path.parent().expect("artifact path has a parent");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, component.serialize()?).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}
