//! Every variant of the kernel programs passes this kernel's verifier.
//!
//! The loader turns configuration into load-time constants (the drop rules,
//! sampling, the pid filter, the capture size), and the verifier checks
//! each combination as a program of its own, with the branches its
//! constants rule out removed. A path only one combination keeps can be
//! refused while the others load (a documented config then cannot start:
//! `DropUnixSocket: false` did, on 6.18.44). So every combination is loaded
//! here; nothing is attached. Needs root (CI runs as root).

mod common;

use wirelens::capture::{load, CaptureConfig};

/// Every combination of the settings that become load-time constants.
fn variants() -> Vec<CaptureConfig> {
    let mut all = Vec::new();
    for payload_bytes in [1, 64, 256, 4096, 8192] {
        for sampling in [0, 50, 100] {
            for pids in [vec![], vec![1]] {
                for bits in 0..16u8 {
                    all.push(CaptureConfig {
                        payload_bytes,
                        sampling,
                        pids: pids.clone(),
                        drop_unix: bits & 1 != 0,
                        drop_unknown: bits & 2 != 0,
                        drop_loopback: bits & 4 != 0,
                        l4_default: bits & 8 != 0,
                        ..CaptureConfig::default()
                    });
                }
            }
        }
    }
    all
}

#[test]
fn every_combination_of_load_time_constants_loads() {
    common::daemon::require_root();
    let btf = aya::Btf::from_sys_fs().expect("BTF at /sys/kernel/btf/vmlinux");
    let mut variants = variants();
    // WIRELENS_VARIANTS=N: the first N only, to time a change to the
    // programs quickly (CI loads them all).
    if let Some(n) = std::env::var("WIRELENS_VARIANTS").ok().and_then(|n| n.parse().ok()) {
        variants.truncate(n);
    }
    let started = std::time::Instant::now();
    // Two threads: the verifier is single-threaded per load.
    let failures: Vec<String> = std::thread::scope(|s| {
        let halves: Vec<_> = variants
            .chunks(variants.len().div_ceil(2))
            .map(|part| {
                let btf = &btf;
                s.spawn(move || {
                    part.iter().filter_map(|v| load(v, btf).err().map(|e| format!("{v:?}:\n{e:#}"))).collect::<Vec<_>>()
                })
            })
            .collect();
        halves.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    eprintln!("{} variants loaded in {:?}", variants.len(), started.elapsed());
    assert!(
        failures.is_empty(),
        "{} of {} variants refused:\n\n{}",
        failures.len(),
        variants.len(),
        failures.join("\n\n")
    );
}
