//! Build a protocol plugin crate into a WebAssembly component.
//!
//! The crate is compiled for `wasm32-unknown-unknown` (plain stable Rust, no
//! WASI: the result imports nothing but the contract's `host` interface, so
//! the sandbox grants no capability by construction) and the core module is
//! then encoded as a component with the `wit-component` library, so no extra
//! tool needs installing. Used by `wirelens plugins build` and by the
//! daemon's build script for the built-in plugins.
//!
//! C plugins (written with the C SDK, `sdk/c`) are built by [`c::CBuild`].

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

pub mod c;

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
        let package = read_manifest(&manifest)?.package;
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

/// What the build needs from a plugin crate's manifest.
#[derive(Debug)]
struct Manifest {
    /// `[package] name`.
    package: String,
}

/// Read `Cargo.toml` the way cargo does (`cargo metadata`, no compiling, no
/// dependency resolution), so any valid manifest works (comments, inline
/// tables, workspace inheritance) and a bad one fails before the build,
/// with cargo's own message naming the key and line.
fn read_manifest(manifest: &Path) -> Result<Manifest> {
    if !manifest.exists() {
        bail!(
            "{} not found: give the directory of a plugin crate (holding Cargo.toml) or of a C plugin \
             project (holding NAME.c: `wirelens plugins new --lang c NAME`)",
            manifest.display()
        );
    }
    let output = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["metadata", "--no-deps", "--format-version", "1", "--offline", "--manifest-path"])
        .arg(manifest)
        .output()
        .with_context(|| format!("running cargo metadata for {}", manifest.display()))?;
    if !output.status.success() {
        bail!("{} is not a valid manifest:\n{}", manifest.display(), String::from_utf8_lossy(&output.stderr).trim());
    }
    let meta: serde_json::Value = serde_json::from_slice(&output.stdout).context("parsing cargo metadata's output")?;
    let wanted = std::fs::canonicalize(manifest).unwrap_or_else(|_| manifest.to_path_buf());
    let package = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["manifest_path"].as_str().is_some_and(|m| Path::new(m) == wanted))
        .with_context(|| format!("{} has no [package] section", manifest.display()))?;
    let name = package["name"].as_str().context("cargo metadata gave a package without a name")?.to_string();
    let lib =
        package["targets"].as_array().into_iter().flatten().find(|t| {
            t["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "lib" || k == "cdylib" || k == "rlib"))
        });
    let Some(lib) = lib else {
        bail!("{}: package `{name}` has no library target: add src/lib.rs and `[lib] crate-type = [\"cdylib\", \"rlib\"]`", manifest.display());
    };
    let cdylib = lib["crate_types"].as_array().is_some_and(|t| t.iter().any(|t| t == "cdylib"));
    if !cdylib {
        bail!(
            "{}: `[lib] crate-type` must include \"cdylib\" (the plugin is the cdylib; add \"rlib\" for native \
             tests): crate-type = [\"cdylib\", \"rlib\"]",
            manifest.display()
        );
    }
    Ok(Manifest { package: name })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/lib.rs"), "").unwrap();
        let m = dir.path().join("Cargo.toml");
        std::fs::write(&m, text).unwrap();
        (dir, m)
    }

    /// The SDK guide's manifest, trailing comments included.
    #[test]
    fn reads_a_manifest_with_comments() {
        let (_dir, m) = manifest(
            "[package]\nname = \"wirelens-plugin-foo\"   # the output is foo.wasm\nversion = \"1.0.0\"\nedition = \"2021\"\n\n[lib]\ncrate-type = [\"cdylib\", \"rlib\"]    # cdylib: the plugin\n",
        );
        assert_eq!(read_manifest(&m).unwrap().package, "wirelens-plugin-foo");
    }

    #[test]
    fn bad_manifests_fail_before_building_and_name_the_problem() {
        let (_dir, m) = manifest("[workspace]\n");
        let e = format!("{:#}", read_manifest(&m).unwrap_err());
        assert!(e.contains("no [package]") || e.contains("virtual manifest"), "{e}");
        let (_dir, m) = manifest("[package]\nname = \"p\"\nversion = \"1.0.0\"\nedition = \"2021\"\n");
        let e = format!("{:#}", read_manifest(&m).unwrap_err());
        assert!(e.contains("crate-type") && e.contains("cdylib"), "{e}");
        let (_dir, m) = manifest(
            "[package]\nname = \"p\"\nversion = \"1.0.0\"\nedition = \"2021\"\n[lib]\ncrate-type = \"cdylib\"\n",
        );
        let e = format!("{:#}", read_manifest(&m).unwrap_err());
        assert!(e.contains("crate-type"), "names the key: {e}");
        let e = format!("{:#}", read_manifest(Path::new("/nonexistent/Cargo.toml")).unwrap_err());
        assert!(e.contains("not found"), "{e}");
    }
}
