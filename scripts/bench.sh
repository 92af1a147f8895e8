#!/usr/bin/env bash
# Runs the costack-bench comparison and writes BENCHMARKS.md and docs/bench.svg.
#
#   scripts/bench.sh                # full run: about 4 minutes of measuring on 2 cores, plus builds
#   BENCH_QUICK=1 scripts/bench.sh  # shorter criterion warm-up and measurement
#
# Steps:
#   1. `cargo bench` of every group and implementation (costack on its assembly backend);
#   2. `cargo bench --features ucontext`, only the costack functions, which then report as
#      `costack-ucontext` (costack's libc swapcontext backend);
#   3. if valgrind is installed: callgrind instruction counts of N and 2N round trips
#      (src/bin/switch_count.rs) for costack, corosensei and costack-ucontext;
#   4. the `report` binary merges criterion's estimates and callgrind's totals into
#      BENCHMARKS.md (keeping its "Goals" section) and draws docs/bench.svg.
#
# Criterion's previous results (target/criterion) are removed first, so the report only shows
# this run. Every command that ran is listed in the report.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-target}
callgrind_n=${BENCH_CALLGRIND_N:-100000}

criterion_args=()
mode="full (criterion: 50 samples, 1.5 s warm-up, 4 s measurement per function)"
if [[ "${BENCH_QUICK:-0}" != 0 ]]; then
    criterion_args=(--warm-up-time 1 --measurement-time 2)
    mode="quick (criterion: --warm-up-time 1 --measurement-time 2)"
fi

mkdir -p "$target"
# Criterion runs each benchmark from the package directory and would otherwise ask
# `cargo metadata` where the target directory is; tell it.
export CRITERION_HOME="$(cd "$target" && pwd)/criterion"
commands="$target/bench-commands.txt"
: >"$commands"
rm -rf "$target/criterion" "$target/callgrind"

# Runs a command after recording it, as typed, for the report.
run() {
    local quoted
    printf -v quoted '%q ' "$@"
    printf '%s\n' "${quoted% }" >>"$commands"
    "$@"
}

# 1. Everything, costack on its default (assembly) backend.
run cargo bench -p costack-bench --bench compare -- ${criterion_args[@]+"${criterion_args[@]}"}

# 2. Only costack, built on its swapcontext backend; the filter matches its IDs.
run cargo bench -p costack-bench --bench compare --features ucontext -- \
    ${criterion_args[@]+"${criterion_args[@]}"} costack-ucontext

# 3. Instructions per round trip. The bench profile shares the artifacts built above.
mkdir -p "$target/callgrind"
if command -v valgrind >/dev/null; then
    count() { # label implementation
        local n
        for n in "$callgrind_n" $((2 * callgrind_n)); do
            run valgrind --tool=callgrind --callgrind-out-file="$target/callgrind/$1-$n.out" \
                "$target/release/switch_count" "$2" "$n" 2>"$target/callgrind/$1-$n.log"
        done
    }
    run cargo build --profile bench -p costack-bench --bin switch_count --features ucontext
    count costack-ucontext costack
    run cargo build --profile bench -p costack-bench --bin switch_count
    count costack costack
    count corosensei corosensei
else
    echo "bench.sh: valgrind not found; skipping instruction counts" >&2
fi

# 4. The report.
run cargo run --profile bench -p costack-bench --bin report -- \
    --criterion "$target/criterion" \
    --callgrind "$target/callgrind" \
    --callgrind-n "$callgrind_n" \
    --commands "$commands" \
    --mode "$mode" \
    --out BENCHMARKS.md \
    --svg docs/bench.svg
