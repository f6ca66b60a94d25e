#!/usr/bin/env bash
# Runs every test of the workspace: unit tests of the SDK and plugins
# (natively), and the daemon's integration tests (plugins through the wasm
# runtime, sandbox, hot reload, CLI). Installs prerequisites first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# One profile for building and testing: the wasmtime build dominates and is
# shared with `cargo build --release` and the benchmarks.
cargo test --workspace --release --locked "$@"
