//! C plugins: a project written with the C SDK (`sdk/c`), compiled with
//! clang for `wasm32` and linked with `wasm-ld` (Debian's `clang` and
//! `lld`), then encoded as a component like a Rust plugin.
//!
//! The SDK's sources travel inside this crate (and so inside `wirelens`),
//! and the contract's C bindings are generated from `wit/protocol.wit` with
//! wit-bindgen's C generator at every build. A project holds only its own
//! `.c` files: the SDK it is built with always matches the contract of the
//! `wirelens` that builds it.
//!
//! Nothing else is linked: no libc, no WASI. The SDK brings the few libc
//! functions a parser needs (`sdk/c/libc`), so the component imports only
//! the contract's `host.log`, which the build checks.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{encode_component, write_atomically};

/// The contract, as this build of wirelens speaks it.
const WIT: &str = include_str!("../../../wit/protocol.wit");

/// The C SDK: `(path under the SDK directory, contents)`.
const SDK_FILES: &[(&str, &str)] = &[
    ("wirelens.h", include_str!("../../c/wirelens.h")),
    ("wirelens_engine.c", include_str!("../../c/wirelens_engine.c")),
    ("wirelens_libc.c", include_str!("../../c/wirelens_libc.c")),
    ("libc/stdlib.h", include_str!("../../c/libc/stdlib.h")),
    ("libc/string.h", include_str!("../../c/libc/string.h")),
];

/// What `wirelens plugins new --lang c NAME` writes as `NAME.c`: the
/// MiniKV parser the C guide (`sdk/README-c.md`) walks through.
const TEMPLATE: &str = include_str!("../../c/template/plugin.c");

/// Where, under a project, the build writes the SDK, objects and bindings.
pub const BUILD_DIR: &str = "build";

/// True when `dir` is a C plugin project: `.c` files and no `Cargo.toml`.
pub fn is_c_project(dir: &Path) -> bool {
    !dir.join("Cargo.toml").exists() && project_sources(dir).is_ok_and(|s| !s.is_empty())
}

/// The project's own C files (its top directory, sorted).
fn project_sources(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut sources = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "c") && path.is_file() {
            sources.push(path);
        }
    }
    sources.sort();
    Ok(sources)
}

/// Write the C SDK and the contract's generated bindings into `dir`.
pub fn write_sdk(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir.join("libc")).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in SDK_FILES {
        std::fs::write(dir.join(name), text).with_context(|| format!("writing {}", dir.join(name).display()))?;
    }
    for (name, bytes) in generate_bindings()? {
        std::fs::write(dir.join(&name), bytes).with_context(|| format!("writing {}", dir.join(&name).display()))?;
    }
    Ok(())
}

/// The C bindings of the contract's `protocol-plugin` world:
/// `protocol_plugin.h`, `protocol_plugin.c` and the object holding the
/// component type (`protocol_plugin_component_type.o`).
pub fn generate_bindings() -> Result<Vec<(String, Vec<u8>)>> {
    let mut resolve = wit_parser::Resolve::default();
    let package = resolve.push_str("protocol.wit", WIT).context("parsing the contract (wit/protocol.wit)")?;
    let world = resolve.select_world(&[package], Some("protocol-plugin"))?;
    let mut files = wit_bindgen_core::Files::default();
    let mut generator = wit_bindgen_c::Opts::default().build();
    generator.generate(&mut resolve, world, &mut files).context("generating the C bindings")?;
    Ok(files.iter().map(|(name, bytes)| (name.to_string(), bytes.to_vec())).collect())
}

/// `wirelens plugins new --lang c NAME`: a directory `dir` holding
/// `NAME.c` (a working MiniKV parser to start from), a `.gitignore` for the
/// build directory, and the SDK under `build/sdk` for editors.
pub fn new_project(dir: &Path) -> Result<PathBuf> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .with_context(|| {
            format!("{}: a plugin's name is letters, digits, `-` and `_` (it names NAME.c and NAME.wasm)", dir.display())
        })?;
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!("{} exists and is not empty: give a new directory", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let source = dir.join(format!("{name}.c"));
    std::fs::write(&source, TEMPLATE).with_context(|| format!("writing {}", source.display()))?;
    std::fs::write(dir.join(".gitignore"), format!("/{BUILD_DIR}/\n"))?;
    write_sdk(&dir.join(BUILD_DIR).join("sdk"))?;
    Ok(source)
}

/// What to build and where.
#[derive(Clone, Debug)]
pub struct CBuild {
    /// The project directory (its `.c` files).
    pub project_dir: PathBuf,
    /// Where the component is written.
    pub out_dir: PathBuf,
    /// Name of the output file (default: the project directory's name plus `.wasm`).
    pub out_name: Option<String>,
}

impl CBuild {
    pub fn new(project_dir: impl Into<PathBuf>, out_dir: impl Into<PathBuf>) -> Self {
        Self { project_dir: project_dir.into(), out_dir: out_dir.into(), out_name: None }
    }

    /// Compile, link, check the imports and encode; returns the component's path.
    pub fn run(&self) -> Result<PathBuf> {
        let dir = std::fs::canonicalize(&self.project_dir)
            .with_context(|| format!("{}: no such project directory", self.project_dir.display()))?;
        let sources = project_sources(&dir)?;
        if sources.is_empty() {
            bail!("{}: no .c files (a C plugin project holds NAME.c: `wirelens plugins new --lang c NAME`)", dir.display());
        }
        let build = dir.join(BUILD_DIR);
        let sdk = build.join("sdk");
        write_sdk(&sdk)?;
        let objects = build.join("obj");
        std::fs::create_dir_all(&objects)?;
        let clang = find_tool(&["clang", "clang-14", "clang-15", "clang-16"], "clang")?;
        let wasm_ld = find_tool(&["wasm-ld", "wasm-ld-14", "wasm-ld-15", "wasm-ld-16"], "lld")?;
        let mut linked = Vec::new();
        let sdk_sources = ["wirelens_engine.c", "wirelens_libc.c", "protocol_plugin.c"].map(|s| sdk.join(s));
        for source in sources.iter().chain(&sdk_sources) {
            let stem = source.file_stem().and_then(|s| s.to_str()).unwrap_or("source");
            let object = objects.join(format!("{stem}.o"));
            let mut cmd = Command::new(&clang);
            cmd.args(["--target=wasm32", "-std=gnu11", "-O2", "-ffreestanding", "-nostdlibinc", "-mbulk-memory"])
                .args(["-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror=implicit-function-declaration"])
                .arg("-isystem")
                .arg(sdk.join("libc"))
                .arg("-I")
                .arg(&sdk)
                .arg("-c")
                .arg(source)
                .arg("-o")
                .arg(&object);
            run(&mut cmd, &format!("compiling {}", source.display()))?;
            linked.push(object);
        }
        linked.push(sdk.join("protocol_plugin_component_type.o"));
        let module_path = build.join("module.wasm");
        let mut cmd = Command::new(&wasm_ld);
        cmd.args(["--no-entry", "--strip-debug", "-z", "stack-size=1048576", "-o"]).arg(&module_path).args(&linked);
        if let Err(e) = run(&mut cmd, "linking") {
            let text = format!("{e:#}");
            if text.contains("undefined symbol") {
                bail!(
                    "{text}\nC plugins are linked without libc: they may call what the SDK's stdlib.h and \
                     string.h declare (malloc, free, memcpy, ...) and the wl_ functions of wirelens.h"
                );
            }
            return Err(e);
        }
        let module = std::fs::read(&module_path).with_context(|| format!("reading {}", module_path.display()))?;
        check_imports(&module)?;
        let component = encode_component(&module).with_context(|| format!("encoding {}", module_path.display()))?;
        let name = self.out_name.clone().unwrap_or_else(|| {
            format!("{}.wasm", dir.file_name().and_then(|n| n.to_str()).unwrap_or("plugin"))
        });
        std::fs::create_dir_all(&self.out_dir).with_context(|| format!("creating {}", self.out_dir.display()))?;
        let out = self.out_dir.join(name);
        write_atomically(&out, &component)?;
        Ok(out)
    }
}

/// The only import a plugin may have: the contract's `host.log`.
fn check_imports(module: &[u8]) -> Result<()> {
    for payload in wasmparser::Parser::new(0).parse_all(module) {
        if let wasmparser::Payload::ImportSection(imports) = payload? {
            for import in imports.into_imports() {
                let import = import?;
                let allowed = import.module.starts_with("wirelens:protocol/host@") && import.name == "log";
                if !allowed {
                    bail!(
                        "the plugin imports `{}` `{}`: a plugin may import nothing but the contract's host.log",
                        import.module,
                        import.name
                    );
                }
            }
        }
    }
    Ok(())
}

/// The first of `names` on the PATH.
fn find_tool(names: &[&str], package: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in names {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    bail!("{} not found on PATH: install {package} (`apt install clang lld`; scripts/setup.sh does it)", names[0])
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let output = cmd.output().with_context(|| format!("{what}: running {:?}", cmd.get_program()))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!("{what} failed:\n{}", stderr.trim());
    }
    // Warnings are the author's to see.
    if !stderr.trim().is_empty() {
        eprintln!("{}", stderr.trim());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `plugins new --lang c` then `plugins build`: the template builds
    /// into a component that imports nothing but host.log.
    #[test]
    fn the_template_builds_into_a_component() {
        let tmp = tempfile::tempdir().unwrap();
        let project = tmp.path().join("minikv");
        let source = new_project(&project).unwrap();
        assert!(source.ends_with("minikv.c"));
        assert!(project.join("build/sdk/wirelens.h").exists() && project.join("build/sdk/protocol_plugin.h").exists());
        assert!(is_c_project(&project));
        let out = CBuild::new(&project, tmp.path().join("plugins")).run().unwrap();
        assert!(out.ends_with("plugins/minikv.wasm"));
        let bytes = std::fs::read(&out).unwrap();
        assert!(wasmparser::Parser::is_component(&bytes));
        // A second project in the same place is refused, naming it.
        let e = format!("{:#}", new_project(&project).unwrap_err());
        assert!(e.contains("not empty"), "{e}");
    }

    /// A call to a libc function the SDK does not provide fails the link
    /// with what to do, not with a plugin the host would refuse.
    #[test]
    fn a_call_outside_the_sdk_fails_the_build_and_says_why() {
        let tmp = tempfile::tempdir().unwrap();
        let project = tmp.path().join("bad");
        new_project(&project).unwrap();
        let source = project.join("bad.c");
        let text = std::fs::read_to_string(&source).unwrap();
        let text = text.replace("#include <string.h>", "#include <string.h>\nint puts(const char *);")
            .replace("    /* Wait for the whole line. */", "    puts(\"parsing\");");
        std::fs::write(&source, text).unwrap();
        let e = format!("{:#}", CBuild::new(&project, tmp.path()).run().unwrap_err());
        assert!(e.contains("undefined symbol: puts") && e.contains("without libc"), "{e}");
    }
}
