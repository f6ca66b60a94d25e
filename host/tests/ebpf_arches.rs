//! The kernel programs compile for every architecture `ebpf/include/arch/`
//! supports, with the same programs and maps: arm64 is compiled here even
//! though nothing on this machine can load it; and their frames leave room
//! under the verifier's stack limit on both. (Loading them, every variant,
//! is `kernel_variants.rs`.)

use std::collections::{BTreeMap, BTreeSet};
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

// ---------------------------------------------------------------------------
// The kernel programs' deepest chain of stack frames stays well under the
// verifier's 512 bytes, on every architecture.
//
// The verifier adds up the frames of a program, the global functions it
// calls and the callbacks it hands to bpf_loop. How it counts differs
// between kernel builds: one build of 6.18.44 refused `on_send` at 592
// bytes (a callback's frame on top of the function that called bpf_loop)
// that another build had loaded. `kernel_variants.rs` loads every variant
// into this machine's kernel; this test reads the frames from the object
// itself, counting every call and callback as the strictest verifier does,
// so a change that eats the margin fails here whatever kernel runs the
// tests. Needs clang and llvm-objdump (scripts/setup.sh installs them).

/// The verifier's limit for a chain of frames.
const LIMIT: u64 = 512;
/// Room kept for another compiler or a stricter kernel.
const MARGIN: u64 = 64;

fn objdump(args: &[&str], obj: &Path) -> String {
    let tool = std::env::var("LLVM_OBJDUMP").unwrap_or_else(|_| "llvm-objdump".into());
    let out = Command::new(&tool)
        .args(args)
        .arg(obj)
        .output()
        .unwrap_or_else(|e| panic!("running {tool}: {e}: install llvm (scripts/setup.sh)"));
    assert!(out.status.success(), "{tool}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A function of the object: where it is and what it uses.
#[derive(Default, Debug)]
struct Function {
    section: String,
    /// Byte offset in its section.
    start: u64,
    /// Deepest stack slot it touches (bytes below r10).
    frame: u64,
    /// Global functions it calls and callbacks it passes.
    callees: BTreeSet<String>,
}

/// Every function symbol of the object (programs in their sections, global
/// and static functions in .text), with its frame and callees.
fn functions(obj: &Path) -> BTreeMap<String, Function> {
    let mut all: BTreeMap<String, Function> = BTreeMap::new();
    // "0000000000000000 g     F .text\t0000000000000a30 flat_call"
    for line in objdump(&["-t"], obj).lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() >= 5 && fields.contains(&"F") {
            let start = u64::from_str_radix(fields[0], 16).unwrap();
            let section = fields[fields.len() - 3].to_string();
            all.insert(fields[fields.len() - 1].to_string(), Function { section, start, ..Default::default() });
        }
    }
    let at = |all: &BTreeMap<String, Function>, section: &str, offset: u64| {
        all.iter().find(|(_, f)| f.section == section && f.start == offset).map(|(n, _)| n.clone())
    };
    let (mut section, mut current, mut last_insn) = (String::new(), None::<String>, String::new());
    for line in objdump(&["-dr", "--no-show-raw-insn"], obj).lines() {
        if let Some(s) = line.strip_prefix("Disassembly of section ") {
            section = s.trim_end_matches(':').to_string();
            current = None;
        } else if let Some(name) = line.split_once(" <").and_then(|(_, r)| r.strip_suffix(">:")) {
            // A label: a function's start, or a branch target inside one.
            if all.get(name).is_some_and(|f| f.section == section) {
                current = Some(name.to_string());
            }
        } else if let Some((_, reloc)) = line.split_once("R_BPF_") {
            let Some(caller) = current.clone() else { continue };
            let target = reloc.split_whitespace().last().unwrap_or_default();
            // A call to a global function names it; a callback (bpf_loop)
            // is an address in .text, loaded by `rN = OFFSET ll`.
            let callee = if all.contains_key(target) {
                Some(target.to_string())
            } else if target == ".text" && last_insn.ends_with(" ll") {
                let offset = last_insn.split(" = ").nth(1).and_then(|v| v.trim_end_matches(" ll").parse().ok());
                offset.and_then(|o| at(&all, ".text", o))
            } else {
                None
            };
            if let Some(callee) = callee {
                all.get_mut(&caller).unwrap().callees.insert(callee);
            }
        } else if let Some(name) = &current {
            last_insn = line.trim().to_string();
            for (i, _) in line.match_indices("r10 - ") {
                let depth: u64 = line[i + 6..].chars().take_while(char::is_ascii_digit).collect::<String>().parse().unwrap();
                let f = all.get_mut(name).unwrap();
                f.frame = f.frame.max(depth);
            }
        }
    }
    all
}

/// The deepest chain from `name`, each frame rounded up to 16 bytes as the
/// verifier does for JITed programs, and the chain itself.
fn deepest(all: &BTreeMap<String, Function>, name: &str, seen: &mut Vec<String>) -> (u64, Vec<String>) {
    let f = &all[name];
    assert!(!seen.contains(&name.to_string()), "recursion through {name}: {seen:?}");
    seen.push(name.to_string());
    let below = f.callees.iter().map(|c| deepest(all, c, seen)).max_by_key(|(d, _)| *d).unwrap_or_default();
    seen.pop();
    let mut chain = vec![format!("{name} {}", f.frame)];
    chain.extend(below.1);
    (f.frame.div_ceil(16) * 16 + below.0, chain)
}

#[test]
fn the_deepest_chain_of_frames_leaves_room_under_the_verifiers_limit() {
    let dir = tempfile::tempdir().unwrap();
    for arch in ["x86", "arm64"] {
        let obj = dir.path().join(format!("capture-{arch}.o"));
        compile(arch, &obj);
        let all = functions(&obj);
        let programs: Vec<&String> = all.iter().filter(|(_, f)| f.section != ".text").map(|(n, _)| n).collect();
        assert!(programs.iter().any(|p| *p == "on_send"), "{arch}: programs {programs:?}");
        // The reader must see the calls it guards against, or it proves
        // nothing: on_send calls flat_call, and cont_step is handed to
        // bpf_loop.
        assert!(all["on_send"].callees.contains("flat_call"), "{arch}: {:?}", all["on_send"]);
        assert!(all.values().any(|f| f.callees.contains("cont_step")), "{arch}: no callback seen: {all:?}");
        for program in programs {
            let (depth, chain) = deepest(&all, program, &mut Vec::new());
            eprintln!("{arch} {program}: {depth} bytes ({})", chain.join(" > "));
            assert!(
                depth + MARGIN <= LIMIT,
                "{arch} {program}: the deepest chain of frames is {depth} bytes ({}); it must stay {MARGIN} under the \
                 verifier's {LIMIT}: some kernel builds will refuse it. Move large locals to maps (see flat_conts \
                 in ebpf/capture.bpf.c)",
                chain.join(" > ")
            );
        }
    }
}
