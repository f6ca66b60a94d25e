#!/usr/bin/env bash
# Coverage-guided fuzzing of the protocol plugins through the SDK's Engine
# (fuzz/, cargo fuzz + libFuzzer). Installs cargo-fuzz if missing, writes
# the seed corpora from the recorded fixtures and the plugins' test cases,
# then runs each target and prints, per target: executions, coverage
# (libFuzzer's final cov: and ft:), corpus size, time, and whether it
# crashed. Exits non-zero if any target crashed (or hung, or ran out of
# memory): the input is left in fuzz/artifacts/TARGET/.
#
# Usage: scripts/fuzz.sh [--runs N | --seconds S | --smoke] [--sanitizer none|address]
#                        [target...] [-- extra libFuzzer flags]
#   --runs N       stop each target after N executions
#   --seconds S    stop each target after S seconds (default: 60)
#   --smoke        20 seconds per target (what CI runs)
#   --keep-going   go on after a crash, hang or OOM (libFuzzer's fork mode,
#                  one child at a time), saving each input: for a target
#                  with a known, unfixed bug
#   targets        http redis dns mysql pgsql (default: all five)
#
# Replay one input:  scripts/fuzz.sh --replay TARGET FILE
#
# Inputs are kept to 4 KiB (-max_len; larger seeds are cut on loading):
# the input format's extend records reach the plugins' buffer limits
# without large inputs, and an execution costs about in proportion to
# the input (with 16 KiB, a dns run slowed from 8000 to under 2000
# executions a second as its inputs grew). Flags after `--` go to
# libFuzzer and override these (e.g. `-- -max_len=16384`).
#
# libFuzzer needs nightly compiler flags: they are enabled on the stable
# toolchain with RUSTC_BOOTSTRAP=1. Builds go to $WIRELENS_FUZZ_TARGET_DIR
# (default ~/.cache/wirelens/fuzz-target), not the workspace's target dir.
set -euo pipefail
cd "$(dirname "$0")/.."

ALL_TARGETS=(http redis dns mysql pgsql)
mode=seconds
amount=60
sanitizer=none
targets=()
extra=()
replay=()
keep_going=0
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) mode=runs; amount="$2"; shift 2 ;;
        --seconds) mode=seconds; amount="$2"; shift 2 ;;
        --smoke) mode=seconds; amount=20; shift ;;
        --sanitizer) sanitizer="$2"; shift 2 ;;
        --keep-going) keep_going=1; shift ;;
        --replay) replay=("$2" "$3"); shift 3 ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${ALL_TARGETS[@]}")
for t in "${targets[@]}"; do
    case " ${ALL_TARGETS[*]} " in
        *" $t "*) ;;
        *) echo "fuzz.sh: no fuzz target $t (have: ${ALL_TARGETS[*]})" >&2; exit 2 ;;
    esac
done

export CARGO_TARGET_DIR="${WIRELENS_FUZZ_TARGET_DIR:-$HOME/.cache/wirelens/fuzz-target}"
export RUSTC_BOOTSTRAP=1
# Below everything else on the machine: fuzzing is a background job.
NICE=(nice -n 19)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    "${NICE[@]}" cargo install cargo-fuzz --locked
fi

fuzz=(cargo fuzz run --fuzz-dir fuzz --sanitizer="$sanitizer")

if [ ${#replay[@]} -gt 0 ]; then
    # Runs the one input (no fuzzing); a panic prints the decoded chunks.
    exec "${NICE[@]}" "${fuzz[@]}" "${replay[0]}" "${replay[1]}"
fi

echo "== building the seed writer and ${targets[*]}"
"${NICE[@]}" cargo build --release --locked --manifest-path fuzz/Cargo.toml --bin seeds
for t in "${targets[@]}"; do
    "${NICE[@]}" cargo fuzz build --fuzz-dir fuzz --sanitizer="$sanitizer" "$t"
done
echo "== seeds"
"${NICE[@]}" "$CARGO_TARGET_DIR/release/seeds"

mkdir -p fuzz/logs
case "$mode" in
    runs) limit=(-runs="$amount") ;;
    seconds) limit=(-max_total_time="$amount") ;;
esac
if [ "$keep_going" = 1 ]; then
    limit+=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
fi
summary=()
failed=0
for t in "${targets[@]}"; do
    log="fuzz/logs/$t.log"
    mkdir -p "fuzz/artifacts/$t"
    before=$(ls "fuzz/artifacts/$t" | wc -l)
    echo "== fuzzing $t (${limit[*]}), log in $log"
    start=$(date +%s)
    rc=0
    "${NICE[@]}" "${fuzz[@]}" "$t" "fuzz/corpus/$t" -- \
        "${limit[@]}" -timeout=10 -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 "${extra[@]}" >"$log" 2>&1 || rc=$?
    secs=$(( $(date +%s) - start ))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    # Fork mode prints no stat:: lines: its status lines count executions.
    [ -n "$execs" ] || execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
    last=$(grep -E '^#[0-9]+' "$log" | grep -o 'cov: [0-9]* ft: [0-9]*' | tail -1 || true)
    cov=$(echo "$last" | awk '{print $2}')
    ft=$(echo "$last" | awk '{print $4}')
    corpus=$(ls "fuzz/corpus/$t" | wc -l)
    after=$(ls "fuzz/artifacts/$t" | wc -l)
    if [ "$rc" -ne 0 ] || [ "$after" -ne "$before" ]; then
        failed=1
        found=$(ls -t "fuzz/artifacts/$t" | head -1)
        if [ "$after" -ne "$before" ]; then
            result="CRASH (exit $rc, $((after - before)) input(s) in fuzz/artifacts/$t/, latest $found)"
        else
            result="FAILED (exit $rc, no input saved: see $log)"
        fi
        echo "-- $t failed; the end of its log:"
        grep -v '^#[0-9]' "$log" | tail -40
    else
        result="ok"
    fi
    summary+=("$(printf '%-6s execs=%-10s cov=%-6s ft=%-6s corpus=%-6s time=%ss  %s' \
        "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$corpus" "$secs" "$result")")
done

echo "== summary (${limit[*]}, sanitizer $sanitizer)"
printf '%s\n' "${summary[@]}"
exit "$failed"
