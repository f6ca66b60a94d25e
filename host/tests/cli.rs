//! The `wirelens plugins` commands, run as a user would.

mod common;

use std::process::{Command, Output};

fn wirelens(args: &[&str]) -> Output {
    let cache = common::target_dir().join("test-artifact-cache");
    Command::new(env!("CARGO_BIN_EXE_wirelens"))
        .args(args)
        .env("WIRELENS_CACHE_DIR", cache)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// A config that runs the daemon without eBPF (no root needed), written
/// into `dir`.
fn no_capture_config(dir: &std::path::Path) -> std::path::PathBuf {
    let cfg = dir.join("c.yaml");
    std::fs::write(
        &cfg,
        "inputs: [{Type: observer_ilogtail_network_v1, EBPF: {Enabled: false}}]\nflushers: [{Type: flusher_stdout}]\n",
    )
    .unwrap();
    cfg
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn list_shows_builtins_and_directory_plugins() {
    let out = wirelens(&["plugins", "list"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let http = stdout.lines().find(|l| l.starts_with("http ")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(http.contains("1.0.0") && http.contains("builtin") && http.ends_with("active"), "{http}");

    let dir = tempfile::tempdir().unwrap();
    common::drop_plugin(dir.path(), "testproto.wasm", &common::build_plugin("tests/plugins/testproto", &[]));
    std::fs::write(dir.path().join("broken.wasm"), b"\0asm garbage").unwrap();
    let out = wirelens(&["plugins", "list", "--dir", dir.path().to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.starts_with("NAME"), "{stdout}");
    let tp = stdout.lines().find(|l| l.starts_with("testproto ")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(tp.contains("1.0.0") && tp.contains("testproto.wasm") && tp.ends_with("active"), "{tp}");
    let broken = stdout.lines().find(|l| l.starts_with("broken ")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(broken.contains("invalid:") && broken.contains("not a valid WebAssembly component"), "{broken}");
}

#[test]
fn check_accepts_a_plugin_and_explains_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    common::drop_plugin(dir.path(), "testproto.wasm", &common::build_plugin("tests/plugins/testproto", &[]));
    let good = dir.path().join("testproto.wasm");
    let out = wirelens(&["plugins", "check", good.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("testproto") && stdout.contains("fields: text"), "{stdout}");

    let bad = dir.path().join("bad.wasm");
    std::fs::write(&bad, b"hello").unwrap();
    let out = wirelens(&["plugins", "check", bad.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("bad.wasm") && stderr.contains("not a valid WebAssembly component"), "{stderr}");

    let missing = dir.path().join("missing.wasm");
    let out = wirelens(&["plugins", "check", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("missing.wasm"), "{:?}", text(&out));
}

/// The SDK guide's one command, on the guide's example crate.
#[test]
fn build_the_sdk_example_with_one_command() {
    let out_dir = tempfile::tempdir().unwrap();
    let target = common::target_dir().join("wasm-plugins");
    let example = common::root().join("sdk/example");
    let out = wirelens(&[
        "plugins",
        "build",
        example.to_str().unwrap(),
        "--out",
        out_dir.path().to_str().unwrap(),
        "--target-dir",
        target.to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let wasm = out_dir.path().join("minikv.wasm");
    assert_eq!(stdout.trim(), wasm.to_str().unwrap());
    let out = wirelens(&["plugins", "check", wasm.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("minikv") && stdout.contains("fields: command, key"), "{stdout}");
}

#[test]
fn help_documents_every_command() {
    let out = wirelens(&["--help"]);
    let (stdout, _) = text(&out);
    assert!(stdout.contains("plugins"), "{stdout}");
    let out = wirelens(&["plugins", "--help"]);
    let (stdout, _) = text(&out);
    for cmd in ["list", "check", "build"] {
        assert!(stdout.contains(cmd), "{stdout}");
    }
}

#[test]
fn every_shipped_config_passes_config_check() {
    let mut checked = 0;
    for entry in std::fs::read_dir(common::root().join("configs")).unwrap() {
        let path = entry.unwrap().path();
        let out = wirelens(&["config", "check", path.to_str().unwrap()]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{}: {stdout}{stderr}", path.display());
        checked += 1;
    }
    assert!(checked >= 6, "demo, l4, seed example and one per flusher");
}

/// The code blocks of `sdk/README.md` that follow a line containing `after`.
fn guide_block(guide: &str, after: &str) -> String {
    let start = guide.find(after).unwrap_or_else(|| panic!("`{after}` not in sdk/README.md"));
    let rest = &guide[start..];
    let open = rest.find("```").unwrap();
    let body = &rest[open..];
    let body = &body[body.find('\n').unwrap() + 1..];
    body[..body.find("```").unwrap()].to_string()
}

/// The SDK guide followed as printed: its Cargo.toml (trailing comments
/// and all), its lib.rs and its test, in a crate next to a `wirelens`
/// checkout, built and checked with the guide's own commands.
#[test]
fn the_sdk_guide_builds_exactly_as_printed() {
    let guide = std::fs::read_to_string(common::root().join("sdk/README.md")).unwrap();
    let work = tempfile::tempdir().unwrap();
    // The guide's dependency is `path = "../wirelens/sdk"`.
    std::os::unix::fs::symlink(common::root(), work.path().join("wirelens")).unwrap();
    let krate = work.path().join("minikv");
    std::fs::create_dir_all(krate.join("src")).unwrap();
    std::fs::write(krate.join("Cargo.toml"), guide_block(&guide, "`Cargo.toml`:")).unwrap();
    let lib = guide_block(&guide, "`src/lib.rs`:");
    let test = guide_block(&guide, "## 4. Test it natively");
    std::fs::write(krate.join("src/lib.rs"), format!("{lib}\n{test}")).unwrap();
    // Kept between runs (the guide's default target dir, made a link to
    // one that lasts), so only the first run compiles the SDK.
    let cached = common::target_dir().join("sdk-guide-target");
    std::fs::create_dir_all(&cached).unwrap();
    std::os::unix::fs::symlink(&cached, krate.join("target")).unwrap();

    let test = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .arg("test")
        .current_dir(&krate)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    assert!(test.status.success(), "cargo test: {}", String::from_utf8_lossy(&test.stderr));

    let out = Command::new(env!("CARGO_BIN_EXE_wirelens"))
        .args(["plugins", "build", ".", "--out", "./out"])
        .current_dir(&krate)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "wirelens plugins build: {stderr}");
    assert!(stdout.trim().ends_with("out/minikv.wasm"), "{stdout}");
    let out = Command::new(env!("CARGO_BIN_EXE_wirelens"))
        .args(["plugins", "check", "out/minikv.wasm"])
        .current_dir(&krate)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("minikv ") && stdout.contains("fields: command, key"), "{stdout}");
}

/// A manifest cargo cannot read fails before anything compiles, naming
/// the key.
#[test]
fn a_bad_plugin_manifest_fails_fast_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/lib.rs"), "").unwrap();
    std::fs::write(
        dir.path().join("Cargo.toml"),
        "[package]\nname = \"wirelens-plugin-x\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[lib]\ncrate-type = [\"rlib\"]\n",
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = wirelens(&["plugins", "build", dir.path().to_str().unwrap(), "--out", dir.path().to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("crate-type") && stderr.contains("cdylib"), "{stderr}");
    assert!(!dir.path().join("target").exists(), "nothing was compiled");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

/// `plugins new` refuses a name that cannot name NAME.c or a directory
/// with files in it, and `plugins build` of a directory holding neither a
/// crate nor C files says what it expected; a C file with an error fails
/// the build with clang's message naming the file and line.
#[test]
fn plugins_new_and_build_name_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let bad_name = dir.path().join("my plugin");
    let out = wirelens(&["plugins", "new", bad_name.to_str().unwrap(), "--lang", "c"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success() && stderr.contains("letters, digits"), "{stderr}");

    let project = dir.path().join("proto");
    assert!(wirelens(&["plugins", "new", project.to_str().unwrap(), "--lang", "c"]).status.success());
    let out = wirelens(&["plugins", "new", project.to_str().unwrap(), "--lang", "c"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success() && stderr.contains("not empty"), "{stderr}");

    let source = project.join("proto.c");
    let text_before = std::fs::read_to_string(&source).unwrap();
    std::fs::write(&source, text_before.replace("return wl_need_more();", "return wl_need_more()")).unwrap();
    let out = wirelens(&["plugins", "build", project.to_str().unwrap(), "--out", dir.path().to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success() && stderr.contains("proto.c:") && stderr.contains("error"), "{stderr}");
    assert!(!dir.path().join("proto.wasm").exists());

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = wirelens(&["plugins", "build", empty.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success() && stderr.contains("Cargo.toml") && stderr.contains("NAME.c"), "{stderr}");
}

/// `plugins list | head`: the reader goes away before the command writes;
/// it ends quietly instead of panicking on the broken pipe.
#[test]
fn a_closed_pipe_ends_output_quietly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wirelens"))
        .args(["plugins", "list"])
        .env("WIRELENS_CACHE_DIR", common::target_dir().join("test-artifact-cache"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader is gone before anything is printed
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert!(out.status.success() || out.status.signal() == Some(libc::SIGPIPE), "{:?}", out.status);
}

/// Logs carry colour codes only for a terminal: never in a pipe or file.
#[test]
fn logs_in_a_pipe_have_no_colour_codes() {
    let out = Command::new(env!("CARGO_BIN_EXE_wirelens"))
        .args(["plugins", "list"])
        .env("WIRELENS_CACHE_DIR", common::target_dir().join("test-artifact-cache"))
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.is_empty(), "trace logs expected");
    assert!(!stderr.contains('\x1b'), "escape codes in piped logs: {stderr:?}");
}

/// `wirelens run --cache-dir DIR` caches the compiled built-in plugins in
/// DIR (it used to take the default place whatever the flag said).
#[test]
fn run_honours_cache_dir() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let cfg = no_capture_config(dir.path());
    let child = Command::new(env!("CARGO_BIN_EXE_wirelens"))
        .args(["run", "-c", cfg.to_str().unwrap(), "--cache-dir", cache.to_str().unwrap()])
        .env("WIRELENS_CACHE_DIR", dir.path().join("elsewhere"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let cached = common::wait_for(std::time::Duration::from_secs(60), || {
        walk_files(&cache).iter().any(|p| p.extension().is_none_or(|e| e != "tmp"))
    });
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(cached.is_some(), "no artifact under {}: {}", cache.display(), String::from_utf8_lossy(&out.stderr));
    assert!(!dir.path().join("elsewhere").exists(), "the default place was used");
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return vec![] };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .flat_map(|p| if p.is_dir() { walk_files(&p) } else { vec![p] })
        .collect()
}

/// A bad configuration exits with 78 (EX_CONFIG), which the systemd unit
/// names in `RestartPreventExitStatus`: from `run` and from `config check`.
#[test]
fn a_bad_config_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "inputs: [{Type: observer_ilogtail_network_v1, Common: {Samplin: 5}}]\n").unwrap();
    let bad = bad.to_str().unwrap();
    for args in [&["run", "-c", bad][..], &["config", "check", bad]] {
        let out = wirelens(args);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(78), "{args:?}: {stderr}");
        assert!(stderr.contains("Samplin") && stderr.contains("bad.yaml"), "{args:?}: {stderr}");
    }
    let missing = dir.path().join("missing.yaml");
    assert_eq!(wirelens(&["run", "-c", missing.to_str().unwrap()]).status.code(), Some(78), "an unreadable file");
}

/// `--version` names the commit the binary was built from.
#[test]
fn version_names_the_commit() {
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(common::root())
        .output()
        .expect("git (apt-get install git)");
    assert!(head.status.success(), "the tests run in a git checkout");
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    let out = wirelens(&["--version"]);
    let (stdout, _) = text(&out);
    assert_eq!(stdout.trim(), format!("wirelens {} (commit {head})", env!("CARGO_PKG_VERSION")));
}

/// `--log-format json`: every log line is one JSON object with its level
/// and message at the top level.
#[test]
fn json_logs_are_one_object_per_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_wirelens"))
        .args(["--log-format", "json", "plugins", "list"])
        .env("WIRELENS_CACHE_DIR", common::target_dir().join("test-artifact-cache"))
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(!lines.is_empty(), "debug logs expected");
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["message"].is_string() && v["timestamp"].is_string(), "{line}");
    }
}

/// The shipped systemd unit passes `systemd-analyze verify` (with this
/// build's binary in place of the installed one).
#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(common::root().join("deploy/wirelens.service")).unwrap();
    for needed in ["Type=notify", "ExecReload=", "ExecStartPre=", "RestartPreventExitStatus=78"] {
        assert!(unit.contains(needed), "the unit has {needed}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wirelens.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/wirelens", env!("CARGO_BIN_EXE_wirelens"))).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (apt-get install systemd)");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stdout}{stderr}");
}

/// A plugin or cache directory that someone other than root (or the
/// daemon's user) could write is refused before anything is loaded from
/// it, with the path, the reason and the fix.
#[test]
fn untrusted_plugin_and_cache_directories_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    common::daemon::require_root(); // to give a directory away
    let open = tempfile::tempdir().unwrap();
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let open_path = open.path().to_str().unwrap();
    let out = wirelens(&["plugins", "list", "--dir", open_path]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("plugin directory {open_path} is writable by everyone")), "{stderr}");
    assert!(stderr.contains("chmod go-w"), "{stderr}");

    let out = wirelens(&["--cache-dir", open_path, "plugins", "list"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success() && stderr.contains(&format!("cache directory {open_path}")), "{stderr}");

    let given = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(given.path(), Some(65534), None).unwrap();
    let out = wirelens(&["plugins", "list", "--dir", given.path().to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success() && stderr.contains("is owned by uid 65534"), "{stderr}");

    // A plugin file others may write is listed as invalid, with the reason.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("loose.wasm");
    std::fs::write(&file, b"\0asm").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = wirelens(&["plugins", "list", "--dir", dir.path().to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(stdout.contains("writable by everyone"), "{stdout}{stderr}");
}

/// `run` on an AMD CPU starts itself once more with glibc's
/// `x86_rep_movsb_threshold` set (host/src/copy_tuning.rs): same pid, same
/// process name, the tunable in the environment it runs with; a
/// `GLIBC_TUNABLES` that names the threshold already is kept as it is (the
/// opt-out). Elsewhere the environment is left alone, and so it is in the
/// second start itself.
#[test]
fn run_starts_itself_again_with_vector_copies_on_amd() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = no_capture_config(dir.path());
    let amd = std::fs::read_to_string("/proc/cpuinfo").unwrap().contains("AuthenticAMD");
    // The daemon's own account of the variable (its debug line), and its
    // process name once its threads run (they start after the restart).
    let started_with = |tunables: Option<&str>, marker: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wirelens"));
        cmd.args(["run", "-c", cfg.to_str().unwrap()])
            .env("WIRELENS_CACHE_DIR", common::target_dir().join("test-artifact-cache"))
            .env("RUST_LOG", "wirelens=debug")
            .env_remove("GLIBC_TUNABLES")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        if let Some(t) = tunables {
            cmd.env("GLIBC_TUNABLES", t);
        }
        if marker {
            cmd.env("WIRELENS_STARTED_AGAIN", "1");
        } else {
            cmd.env_remove("WIRELENS_STARTED_AGAIN");
        }
        let child = cmd.spawn().unwrap();
        let pid = child.id();
        let threads = common::wait_for(std::time::Duration::from_secs(30), || {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let n = status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok());
            n.is_some_and(|n: u32| n > 1)
        });
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(threads.is_some(), "the daemon never started its threads: {stderr}");
        assert!(!stderr.contains("starting again"), "{stderr}");
        let seen = stderr.lines().find_map(|l| l.split_once("GLIBC_TUNABLES: ")).map(|(_, v)| v.trim().to_string());
        assert_eq!(comm.trim(), "wirelens", "the process keeps its name");
        seen.unwrap_or_else(|| panic!("no GLIBC_TUNABLES line: {stderr}"))
    };
    let started = |tunables| started_with(tunables, false);
    let ours = "glibc.cpu.x86_rep_movsb_threshold=0x10000000";
    assert_eq!(started(None), if amd { ours } else { "(not set)" });
    let other = "glibc.malloc.check=0";
    assert_eq!(started(Some(other)), if amd { format!("{other}:{ours}") } else { other.to_string() });
    let opt_out = "glibc.cpu.x86_rep_movsb_threshold=0x840";
    assert_eq!(started(Some(opt_out)), opt_out);
    // A second start never starts a third, whatever glibc left of the
    // variable (in its secure mode it drops it).
    assert_eq!(started_with(None, true), "(not set)");
}
