#!/usr/bin/env bash
# Runs a command while other load runs on the machine: a redis-server of
# its own on loopback and a redis-benchmark loop against it (SET/GET,
# pipelined and not, bounded in time). Tests that count calls must select
# their own traffic by pid or port; this is how to check that they do:
#
#     scripts/with-background-load.sh scripts/test.sh
#
# The load stops when the command ends (or after LOAD_SECONDS, default 3600).
set -euo pipefail
dir=$(mktemp -d)
port=${LOAD_PORT:-16379}
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" >/dev/null &
server=$!
end=$((SECONDS + ${LOAD_SECONDS:-3600}))
(
    while ((SECONDS < end)); do
        redis-benchmark -p "$port" -t set,get -n 20000 -c 4 -q >/dev/null 2>&1 || sleep 1
        redis-benchmark -p "$port" -t set,get -n 20000 -c 2 -P 16 -q >/dev/null 2>&1 || sleep 1
    done
) &
load=$!
cleanup() {
    pkill -P "$load" 2>/dev/null || true
    kill "$load" 2>/dev/null || true
    wait "$load" 2>/dev/null || true
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
"$@"
