//! Build a protocol plugin crate into a WebAssembly component.
//!
//! The crate is compiled for `wasm32-unknown-unknown` (plain stable Rust, no
//! WASI: the result imports nothing but the contract's `host` interface, so
//! the sandbox grants no capability by construction) and the core module is
//! then encoded as a component with the `wit-component` library, so no extra
//! tool needs installing. Used by `wirelens plugins build` and by the
//! daemon's build script for the built-in plugins.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The Rust target plugins are compiled for.
pub const TARGET: &str = "wasm32-unknown-unknown";

/// What to build and where.
#[derive(Clone, Debug)]
pub struct Build {
    /// Directory holding the plugin crate's `Cargo.toml`.
    pub crate_dir: PathBuf,
    /// Cargo target directory for the wasm build (kept apart from the
    /// native one so the two never wait on each other's lock).
    pub target_dir: PathBuf,
    /// Where the component is written.
    pub out_dir: PathBuf,
    /// Cargo features to enable.
    pub features: Vec<String>,
    /// Name of the output file (default: the package name without a
    /// `wirelens-plugin-` prefix, plus `.wasm`).
    pub out_name: Option<String>,
}

impl Build {
    /// Build `crate_dir` with its own `target/` and write the component to `out_dir`.
    pub fn new(crate_dir: impl Into<PathBuf>, out_dir: impl Into<PathBuf>) -> Self {
        let crate_dir = crate_dir.into();
        Self {
            target_dir: crate_dir.join("target"),
            crate_dir,
            out_dir: out_dir.into(),
            features: vec![],
            out_name: None,
        }
    }

    /// Compile and encode; returns the component's path.
    pub fn run(&self) -> Result<PathBuf> {
        let manifest = self.crate_dir.join("Cargo.toml");
        let package = package_name(&manifest)?;
        let lib_name = package.replace('-', "_");
        let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cmd.args(["build", "--lib", "--release", "--target", TARGET, "--manifest-path"])
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&self.target_dir);
        // Plugins are small: whole-program optimisation is cheap for them and
        // makes the sandboxed code faster. Only this wasm build is affected.
        cmd.env("CARGO_PROFILE_RELEASE_LTO", "true")
            .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
            .env("CARGO_PROFILE_RELEASE_PANIC", "abort")
            // wasmtime runs SIMD; byte scans (line ends, delimiters) use it.
            .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS", "-Ctarget-feature=+simd128");
        if !self.features.is_empty() {
            cmd.arg("--features").arg(self.features.join(","));
        }
        // When run from a build script, the outer cargo's settings must not
        // leak into the wasm build (they are for the host target).
        for var in [
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET",
            "RUSTC_WORKSPACE_WRAPPER",
            "CARGO_PRIMARY_PACKAGE",
        ] {
            cmd.env_remove(var);
        }
        let output = cmd.output().with_context(|| format!("running cargo for {}", manifest.display()))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            if stderr.contains("may not be installed") || stderr.contains("can't find crate for `core`") {
                bail!(
                    "the Rust target {TARGET} is missing: run `rustup target add {TARGET}` \
                     (scripts/setup.sh does it)\n{stderr}"
                );
            }
            bail!("building plugin {package} for {TARGET} failed:\n{stderr}");
        }
        let module_path = self.target_dir.join(TARGET).join("release").join(format!("{lib_name}.wasm"));
        let module = std::fs::read(&module_path).with_context(|| {
            format!(
                "{} not found: does {} set crate-type = [\"cdylib\", ...]?",
                module_path.display(),
                manifest.display()
            )
        })?;
        let component = encode_component(&module).with_context(|| format!("encoding {}", module_path.display()))?;
        let name = self
            .out_name
            .clone()
            .unwrap_or_else(|| format!("{}.wasm", package.strip_prefix("wirelens-plugin-").unwrap_or(&package)));
        std::fs::create_dir_all(&self.out_dir).with_context(|| format!("creating {}", self.out_dir.display()))?;
        let out = self.out_dir.join(name);
        write_atomically(&out, &component)?;
        Ok(out)
    }
}

/// Encode a core wasm module built with the SDK as a component.
pub fn encode_component(module: &[u8]) -> Result<Vec<u8>> {
    wit_component::ComponentEncoder::default().module(module)?.validate(true).encode()
}

/// Write through a temporary file and a rename, so a directory watcher never
/// sees a half-written plugin.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("wasm.tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// The `[package] name` of a manifest (a small line scan: enough for the
/// manifests plugins have, and no TOML parser in the daemon).
fn package_name(manifest: &Path) -> Result<String> {
    let text = std::fs::read_to_string(manifest).with_context(|| format!("reading {}", manifest.display()))?;
    let mut in_package = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package {
            if let Some(rest) = line.strip_prefix("name") {
                if let Some(value) = rest.trim_start().strip_prefix('=') {
                    return Ok(value.trim().trim_matches('"').to_string());
                }
            }
        }
    }
    bail!("{} has no [package] name", manifest.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_package_name() {
        let dir = std::env::temp_dir().join(format!("wl-builder-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let m = dir.join("Cargo.toml");
        std::fs::write(
            &m,
            "[package]\nname = \"wirelens-plugin-foo\"\nversion = \"1.0.0\"\n[dependencies]\nname = \"x\"\n",
        )
        .unwrap();
        assert_eq!(package_name(&m).unwrap(), "wirelens-plugin-foo");
        std::fs::write(&m, "[workspace]\n").unwrap();
        assert!(package_name(&m).unwrap_err().to_string().contains("no [package] name"));
    }
}
