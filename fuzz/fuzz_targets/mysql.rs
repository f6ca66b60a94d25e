//! `cargo fuzz run mysql`: the mysql plugin through the SDK's Engine (input format: `src/lib.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    wirelens_fuzz::run::<wirelens_plugin_mysql::Mysql>(data);
});
