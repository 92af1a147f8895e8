#!/usr/bin/env bash
# Runs the costack-bench comparison and writes BENCHMARKS.md and docs/bench.svg.
#
#   scripts/bench.sh                # full run: about 8 minutes of measuring on 2 cores, plus builds
#   BENCH_QUICK=1 scripts/bench.sh  # shorter criterion settings: about 3 minutes
#   BENCH_RUNS=9 scripts/bench.sh   # more separate process runs of the core groups (default 5)
#
# Steps:
#   1. `cargo bench` of every group and implementation (costack on its assembly backend);
#   2. BENCH_RUNS more `cargo bench` processes of the core groups only (costack and corosensei
#      in roundtrip, create_pooled, cost, nesting_1000 and the comutex hand-off), each with its own criterion directory (target/criterion-runs/<i>):
#      the goal table gives each ratio's median, min and max over these separate processes
#      (about 45 s each in full mode, 20 s in quick mode);
#   3. `cargo bench --features ucontext`, only the costack functions, which then report as
#      `costack-ucontext` (costack's libc swapcontext backend);
#   4. if valgrind is installed: callgrind instruction counts of N and 2N operations
#      (src/bin/switch_count.rs): round trips for costack, corosensei and costack-ucontext, and
#      costack's create, cost and hand-off shapes;
#   5. the `report` binary merges criterion's estimates and callgrind's totals into
#      BENCHMARKS.md (keeping its "Goals" section) and draws docs/bench.svg.
#
# Criterion's previous results (target/criterion, target/criterion-runs) are removed first, so
# the report only shows this run. Every command that ran is listed in the report.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-target}
callgrind_n=${BENCH_CALLGRIND_N:-100000}
bench_runs=${BENCH_RUNS:-5}

criterion_args=()
run_args=(--warm-up-time 1 --measurement-time 3)
mode="full (criterion: 50 samples, 1.5 s warm-up, 4 s measurement per function)"
if [[ "${BENCH_QUICK:-0}" != 0 ]]; then
    criterion_args=(--warm-up-time 1 --measurement-time 2)
    run_args=(--warm-up-time 1 --measurement-time 1)
    mode="quick (criterion: --warm-up-time 1 --measurement-time 2)"
fi
mode+="; $bench_runs separate runs of the core groups (${run_args[*]})"
# The core groups' functions that the goal table reads (criterion filters by regex).
core_filter='^(roundtrip|create_pooled|nesting_1000|cost)/(costack|corosensei)$|^comutex/costack/handoff$'

mkdir -p "$target"
# Criterion runs each benchmark from the package directory and would otherwise ask
# `cargo metadata` where the target directory is; tell it.
export CRITERION_HOME="$(cd "$target" && pwd)/criterion"
commands="$target/bench-commands.txt"
: >"$commands"
rm -rf "$target/criterion" "$target/criterion-runs" "$target/callgrind"

# Runs a command after recording it, as typed, for the report.
run() {
    local quoted
    printf -v quoted '%q ' "$@"
    printf '%s\n' "${quoted% }" >>"$commands"
    "$@"
}

# 1. Everything, costack on its default (assembly) backend.
run cargo bench -p costack-bench --bench compare -- ${criterion_args[@]+"${criterion_args[@]}"}

# 2. The core groups again, each run a process of its own with its own criterion directory.
for ((i = 1; i <= bench_runs; i++)); do
    run env CRITERION_HOME="$(cd "$target" && pwd)/criterion-runs/$i" \
        cargo bench -p costack-bench --bench compare -- "${run_args[@]}" "$core_filter"
done

# 3. Only costack, built on its swapcontext backend; the filter matches its IDs.
run cargo bench -p costack-bench --bench compare --features ucontext -- \
    ${criterion_args[@]+"${criterion_args[@]}"} costack-ucontext

# 4. Instructions per operation. The bench profile shares the artifacts built above.
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
    count costack-create costack-create
    count costack-cost costack-cost
    count costack-handoff costack-handoff
else
    echo "bench.sh: valgrind not found; skipping instruction counts" >&2
fi

# 5. The report.
run cargo run --profile bench -p costack-bench --bin report -- \
    --criterion "$target/criterion" \
    --callgrind "$target/callgrind" \
    --callgrind-n "$callgrind_n" \
    --commands "$commands" \
    --mode "$mode" \
    --out BENCHMARKS.md \
    --svg docs/bench.svg \
    --runs "$target/criterion-runs"
