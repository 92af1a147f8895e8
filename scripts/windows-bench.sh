#!/usr/bin/env bash
# Times costack on Windows (x86_64-pc-windows-gnu, under wine, which runs x86_64 code natively)
# beside corosensei built for the same target and raw Windows Fibers, and writes the "Windows"
# section of BENCHMARKS.md (replacing it if present; everything else is left alone).
#
#   scripts/windows-bench.sh                        # needs `scripts/cross.sh install` first
#   WINDOWS_BENCH_OUT=- scripts/windows-bench.sh    # print the section instead of writing it
#   WINDOWS_BENCH_RUNS=7 scripts/windows-bench.sh   # separate process runs per build (5)
#
# Method: the `windows` criterion bench (crates/costack-bench/benches/windows.rs) has two
# groups, a round trip (enter + yield) and a pooled create + run + drop, each with costack,
# corosensei and (round trip only) a raw SwitchToFiber ping-pong. It is built twice, costack on
# its asm backend and with the `fibers` feature (costack on Windows Fibers, label
# `costack-fibers`), and the two builds run in turn, A B A B ..., each run a separate process.
# Every ratio is taken within one run (costack against the peers measured in the same process)
# or between the two runs of one pair, and given as the median of the runs with min and max.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
runs=${WINDOWS_BENCH_RUNS:-5}
work=$root/target/windows-bench
rm -rf "$work"
mkdir -p "$work"
source scripts/cross-env.sh
cross_env windows

# bench FEATURES RUN: one criterion run of the windows bench; prints "label group fn ns" lines.
bench() {
  local features=$1 run=$2 args=()
  if [ -n "$features" ]; then args+=(--features "$features"); fi
  export CRITERION_HOME="$work/criterion-${features:-asm}-$run"
  cargo bench -q "${CROSS_FLAGS[@]}" -p costack-bench --bench windows --target "$CROSS_TRIPLE" \
    "${args[@]}" -- --warm-up-time 1 --measurement-time 3 --noplot >"$work/log-${features:-asm}-$run.txt" 2>&1
  python3 - "$CRITERION_HOME" "${features:-asm}" "$run" <<'PY'
import json, os, sys
home, build, run = sys.argv[1:]
for group in sorted(os.listdir(home)):
    gdir = os.path.join(home, group)
    if not os.path.isdir(gdir) or group == "report":
        continue
    for fn in sorted(os.listdir(gdir)):
        est = os.path.join(gdir, fn, "new", "estimates.json")
        if os.path.exists(est):
            ns = json.load(open(est))["median"]["point_estimate"]
            print(build, run, group, fn, f"{ns:.4f}")
PY
}

# Build both first, so that the timed runs do not wait for the compiler.
cargo bench -q --no-run "${CROSS_FLAGS[@]}" -p costack-bench --bench windows \
  --target "$CROSS_TRIPLE" >/dev/null 2>&1
cargo bench -q --no-run "${CROSS_FLAGS[@]}" -p costack-bench --bench windows \
  --target "$CROSS_TRIPLE" --features fibers >/dev/null 2>&1
: >"$work/results.txt"
for run in $(seq 1 "$runs"); do
  bench "" "$run" >>"$work/results.txt"
  bench fibers "$run" >>"$work/results.txt"
done

wine_version=$(/usr/lib/wine/wine64 --version 2>/dev/null || echo "wine")
rustc_version=$(RUSTC_BOOTSTRAP=1 "$RUSTC" --version)
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
section() {
  python3 - "$work/results.txt" "$runs" "$(date -u +%Y-%m-%dT%H:%MZ)" "$wine_version" \
    "$rustc_version" "$cpu" <<'PY'
import statistics, sys
path, runs, when, wine, rustc, cpu = sys.argv[1:]
t = {}
for line in open(path):
    build, run, group, fn, ns = line.split()
    t[(build, int(run), group, fn)] = float(ns)
runs = int(runs)
def series(build, group, fn):
    return [t[(build, r, group, fn)] for r in range(1, runs + 1) if (build, r, group, fn) in t]
def fmt(xs, unit=" ns", digits=1):
    m = statistics.median(xs)
    return f"{m:.{digits}f}{unit} ({min(xs):.{digits}f}–{max(xs):.{digits}f})"
def ratios(a, b):
    return [x / y for x, y in zip(a, b)]
rt, cp = "windows_roundtrip", "windows_create_pooled"
asm_rt = series("asm", rt, "costack")
cor_rt = series("asm", rt, "corosensei")
fib_rt = series("asm", rt, "fibers")
cfib_rt = series("fibers", rt, "costack-fibers")
asm_cp = series("asm", cp, "costack")
cor_cp = series("asm", cp, "corosensei")
cfib_cp = series("fibers", cp, "costack-fibers")
print("## Windows (x86_64, under wine)")
print()
print(f"Written by `scripts/windows-bench.sh` on {when}: {runs} separate process runs of each build,")
print(f"alternating (asm, fibers, asm, …); {rustc} for x86_64-pc-windows-gnu; {wine};")
print(f"{cpu}.")
print()
print("wine runs the x86_64 code natively (only system calls go through wine), so these are real")
print("times for the switches; the machine is shared and noisy, so each figure is the median of the")
print("runs with min–max, and each ratio is taken within one run (or between the two runs of one")
print("pair, for the two costack builds). `fibers` is a raw `SwitchToFiber` there and back, the floor")
print("of any Fibers-based coroutine; `costack-fibers` is costack on its `fibers` backend.")
print()
print("| operation | costack (asm) | corosensei | costack-fibers | raw fibers |")
print("|---|--:|--:|--:|--:|")
print(f"| round trip (enter + yield) | {fmt(asm_rt)} | {fmt(cor_rt)} | {fmt(cfib_rt)} | {fmt(fib_rt)} |")
print(f"| create + run + drop, pooled | {fmt(asm_cp)} | {fmt(cor_cp)} | {fmt(cfib_cp)} | — |")
print()
print("| ratio | median (min–max) | goal |")
print("|---|--:|---|")
print(f"| round trip, costack asm ÷ corosensei | {fmt(ratios(asm_rt, cor_rt), '×', 2)} | ≤ 1.2× |")
print(f"| round trip, costack-fibers ÷ costack asm | {fmt(ratios(cfib_rt, asm_rt), '×', 2)} | ≥ 5× |")
print(f"| round trip, raw fibers ÷ costack asm | {fmt(ratios(fib_rt, asm_rt), '×', 2)} | — |")
print(f"| pooled create, costack asm ÷ corosensei | {fmt(ratios(asm_cp, cor_cp), '×', 2)} | — |")
print(f"| pooled create, costack-fibers ÷ costack asm | {fmt(ratios(cfib_cp, asm_cp), '×', 2)} | — |")
PY
}

out=${WINDOWS_BENCH_OUT:-BENCHMARKS.md}
if [ "$out" = - ]; then
  section
  wineserver -k 2>/dev/null || true
  exit 0
fi
heading="## Windows (x86_64, under wine)"
section >"$work/section.md"
python3 - "$out" "$heading" "$work/section.md" <<'PY'
import sys
path, heading, section = sys.argv[1], sys.argv[2], sys.argv[3]
new = open(section).read().rstrip("\n") + "\n"
text = open(path).read()
out, skipping = [], False
for line in text.splitlines(keepends=True):
    if line.rstrip("\n") == heading:
        skipping = True
        continue
    if skipping and line.startswith("## "):
        skipping = False
    if not skipping:
        out.append(line)
body = "".join(out).rstrip("\n")
open(path, "w").write(body + "\n\n" + new)
PY
wineserver -k 2>/dev/null || true
echo "windows-bench: wrote the section to $out" >&2
