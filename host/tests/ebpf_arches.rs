//! The kernel programs compile for every architecture `ebpf/include/arch/`
//! supports, with the same programs and maps: arm64 is compiled here even
//! though nothing on this machine can load it. (Loading them, every
//! variant, is `kernel_variants.rs`.)

use std::path::{Path, PathBuf};
use std::process::Command;

fn compile(arch: &str, out: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let output = Command::new(std::env::var("CLANG").unwrap_or_else(|_| "clang".into()))
        .args(["-target", "bpf", &format!("-D__TARGET_ARCH_{arch}"), "-O2", "-g", "-Wall", "-Werror", "-I"])
        .arg(root.join("ebpf/include"))
        .arg("-c")
        .arg(root.join("ebpf/capture.bpf.c"))
        .arg("-o")
        .arg(out)
        .output()
        .expect("running clang: install clang and libbpf-dev (scripts/setup.sh)");
    assert!(output.status.success(), "{arch}: {}", String::from_utf8_lossy(&output.stderr));
}

/// The object's section names (programs, maps, BTF) and its machine.
fn sections(obj: &Path) -> (String, Vec<String>) {
    let out = Command::new("readelf").args(["-h", "-S", "-W"]).arg(obj).output().expect("readelf (binutils)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let machine = text.lines().find(|l| l.trim_start().starts_with("Machine:")).unwrap_or_default().to_string();
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_once(']').map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_whitespace().next().map(str::to_string))
        .filter(|n| n.starts_with("tp_btf/") || n == ".maps" || n == ".BTF" || n == "license")
        .collect();
    names.sort();
    (machine, names)
}

#[test]
fn the_kernel_programs_compile_for_x86_64_and_arm64() {
    let dir = tempfile::tempdir().unwrap();
    let objs: Vec<PathBuf> = ["x86", "arm64"]
        .iter()
        .map(|arch| {
            let obj = dir.path().join(format!("capture-{arch}.o"));
            compile(arch, &obj);
            obj
        })
        .collect();
    let (x86_machine, x86) = sections(&objs[0]);
    let (arm_machine, arm) = sections(&objs[1]);
    assert!(x86_machine.contains("BPF") && arm_machine.contains("BPF"), "{x86_machine} / {arm_machine}");
    assert!(x86.iter().any(|n| n == "tp_btf/sock_send_length") && x86.contains(&".maps".to_string()), "{x86:?}");
    assert_eq!(x86, arm, "the same programs and maps on both");
    // The architectures differ where they should: the system call numbers.
    assert_ne!(std::fs::read(&objs[0]).unwrap(), std::fs::read(&objs[1]).unwrap());
}

#[test]
fn an_unknown_architecture_is_refused_by_name() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let output = Command::new("clang")
        .args(["-target", "bpf", "-E", "-I"])
        .arg(root.join("ebpf/include"))
        .arg(root.join("ebpf/include/arch.h"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("-D__TARGET_ARCH_x86 or -D__TARGET_ARCH_arm64"));
}
