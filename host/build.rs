//! Builds what the daemon embeds, so running it needs no extra build step:
//! - the kernel programs (`ebpf/capture.bpf.c`, C with CO-RE, compiled by
//!   clang for the BPF target and the architecture Cargo builds for), loaded
//!   by `src/capture/`;
//! - every plugin crate under `plugins/`, built into a WebAssembly component
//!   (see `src/protocols/builtin.rs`), so built-in protocols need no plugin
//!   directory.

use std::path::{Path, PathBuf};

fn main() {
    build_ebpf();
    commit();
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().expect("host/ is inside the workspace").to_path_buf();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    for watched in ["plugins", "sdk/src", "sdk/Cargo.toml", "wit", "Cargo.toml", "Cargo.lock"] {
        watch(&format!("../{watched}"));
    }
    // <target>/<profile>/build/wirelens-<hash>/out -> <target>
    let target_dir = out_dir.ancestors().nth(4).map(Path::to_path_buf).unwrap_or_else(|| root.join("target"));
    // One wasm target dir per checkout: checkouts share this build script's
    // output dir, and cargo judged a plugin built from another checkout
    // fresh (its dep-info names that checkout's files), so a worktree built
    // in between left its plugins in this one's daemon.
    let checkout = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        root.hash(&mut h);
        h.finish()
    };
    let wasm_target = target_dir.join(format!("wasm-plugins-{checkout:016x}"));

    let mut crates: Vec<PathBuf> = std::fs::read_dir(root.join("plugins"))
        .expect("reading plugins/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("Cargo.toml").exists())
        .collect();
    crates.sort();
    let mut entries = String::new();
    for crate_dir in crates {
        // Each plugin's own files, so adding or editing one rebuilds it.
        let plugin = crate_dir.file_name().unwrap().to_string_lossy();
        watch(&format!("../plugins/{plugin}/src"));
        watch(&format!("../plugins/{plugin}/Cargo.toml"));
        let mut build = wirelens_plugin_builder::Build::new(&crate_dir, out_dir.join("plugins"));
        build.target_dir = wasm_target.clone();
        let component = build.run().unwrap_or_else(|e| panic!("building plugin {}: {e:#}", crate_dir.display()));
        let name = component.file_stem().unwrap().to_string_lossy().into_owned();
        entries.push_str(&format!("    ({name:?}, include_bytes!({:?})),\n", component.display().to_string()));
    }
    let code = format!(
        "/// `(name, component bytes)` of each built-in plugin.\npub static PLUGINS: &[(&str, &[u8])] = &[\n{entries}];\n"
    );
    std::fs::write(out_dir.join("builtin_plugins.rs"), code).expect("writing builtin_plugins.rs");
}

/// Rebuild when `path` (relative to `host/`) changes. Relative on purpose:
/// checkouts at different paths share one target dir (CI reuses it from a
/// fresh clone) and map to the same build-script fingerprint, so an
/// absolute path would keep watching the checkout that ran the script last
/// and miss changes in this one.
fn watch(path: &str) {
    println!("cargo:rerun-if-changed={path}");
}

/// The commit being built, for `--version` and `wirelens_build_info`:
/// rebuilt when HEAD moves (a branch's ref file or the packed refs).
fn commit() {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir("..")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=WIRELENS_COMMIT={commit}");
    if let Some(git_dir) = git(&["rev-parse", "--git-dir"]) {
        // Relative to host/ (see `watch`); a path that does not exist would
        // rerun this script on every build.
        let git_dir = if Path::new(&git_dir).is_absolute() { git_dir } else { format!("../{git_dir}") };
        let mut watched = vec![format!("{git_dir}/HEAD"), format!("{git_dir}/packed-refs")];
        if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watched.push(format!("{git_dir}/{head_ref}"));
        }
        for w in watched.iter().filter(|w| Path::new(w).exists()) {
            watch(w);
        }
    }
}

/// Compile the kernel programs (C, CO-RE) with clang for the BPF target.
fn build_ebpf() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).parent().unwrap().to_path_buf();
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("capture.bpf.o");
    watch("../ebpf");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    // System call numbers and saved registers differ (ebpf/include/arch.h).
    let arch = match std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => "arm64",
        Ok("x86_64") => "x86",
        other => panic!("the kernel programs support x86_64 and aarch64, not {other:?} (ebpf/include/arch/)"),
    };
    let status = std::process::Command::new(&clang)
        .args(["-target", "bpf", &format!("-D__TARGET_ARCH_{arch}"), "-O2", "-g", "-Wall", "-Werror", "-I"])
        .arg(root.join("ebpf/include"))
        .arg("-c")
        .arg(root.join("ebpf/capture.bpf.c"))
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("running {clang}: {e}: install clang and libbpf-dev (scripts/setup.sh does it)"));
    assert!(status.success(), "compiling ebpf/capture.bpf.c failed (needs clang and libbpf-dev: scripts/setup.sh)");
}
