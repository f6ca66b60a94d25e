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
# The layer-7 end-to-end tests again with a small capture: lost and
# uncopied bytes may cost fields, never a call's count, outcome, size or
# latency (tests/decoder.rs compares both capture sizes with tshark itself).
if [[ $# -eq 0 ]]; then
    WIRELENS_TEST_PAYLOAD_BYTES=256 cargo test --workspace --release --locked \
        --test l7_servers --test capture_l4 --test process_identity --test tls --test memcached --test nats --test mqtt --test kafka --test amqp
fi
