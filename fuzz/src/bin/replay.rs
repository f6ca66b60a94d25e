//! Replays fuzz inputs natively, without libFuzzer: prints each input's
//! operations, then runs it through the driver (a panic or broken
//! invariant shows as in the fuzzer, with its message and location).
//!
//!     cargo run --release --manifest-path fuzz/Cargo.toml --bin replay -- TARGET FILE...

use wirelens_fuzz::{decode, describe, run};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((target, files)) = args.split_first() else {
        eprintln!("usage: replay TARGET FILE...  (TARGET: http redis dns mysql pgsql)");
        std::process::exit(2);
    };
    let run: fn(&[u8]) = match target.as_str() {
        "http" => run::<wirelens_plugin_http::Http>,
        "redis" => run::<wirelens_plugin_redis::Redis>,
        "dns" => run::<wirelens_plugin_dns::Dns>,
        "mysql" => run::<wirelens_plugin_mysql::Mysql>,
        "pgsql" => run::<wirelens_plugin_pgsql::Pgsql>,
        other => {
            eprintln!("no target {other}");
            std::process::exit(2);
        }
    };
    for file in files {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("{file}: {e}"));
        println!("{file}: {} bytes\n{}", data.len(), describe(&decode(&data)));
        run(&data);
        println!("{file}: no panic, invariants hold");
    }
}
