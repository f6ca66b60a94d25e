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
