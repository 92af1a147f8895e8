#!/usr/bin/env bash
# Times the channels of costack-aio against tokio's and std's and writes the "Channels" section
# of BENCHMARKS.md (replacing it if present; everything else is left alone).
#
#   scripts/channel-bench.sh                        # 7 process runs, about 2–3 minutes
#   CHANNEL_BENCH_RUNS=5 scripts/channel-bench.sh   # separate process runs (at least 5)
#   CHANNEL_BENCH_OUT=- scripts/channel-bench.sh    # print the section instead of writing it
#
# Method: the criterion bench crates/costack-aio/benches/channels.rs (what each case does is
# described at its top) runs several times, each run a separate process with a criterion home
# of its own; a figure is criterion's median estimate. Every ratio is taken within one run (the
# peer and costack measured in the same process, one after the other) and given as the median
# of the runs with min and max, since the machine is shared and noisy.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
runs=${CHANNEL_BENCH_RUNS:-7}
if [ "$runs" -lt 5 ]; then
  echo "channel-bench: at least 5 runs (CHANNEL_BENCH_RUNS=$runs)" >&2
  exit 1
fi
work=${CARGO_TARGET_DIR:-$root/target}/channel-bench
rm -rf "$work"
mkdir -p "$work"

# Build first, so that the timed runs do not wait for the compiler.
cargo bench -q -p costack-aio --bench channels --no-run >/dev/null 2>&1

: >"$work/results.txt"
for run in $(seq 1 "$runs"); do
  echo "channel-bench: run $run of $runs" >&2
  export CRITERION_HOME="$work/criterion-$run"
  cargo bench -q -p costack-aio --bench channels -- --warm-up-time 0.5 --measurement-time 1.5 \
    --noplot >"$work/log-$run.txt" 2>&1
  python3 - "$CRITERION_HOME" "$run" >>"$work/results.txt" <<'PY'
import json, os, sys
home, run = sys.argv[1:]
for group in sorted(os.listdir(home)):
    gdir = os.path.join(home, group)
    if not os.path.isdir(gdir) or group == "report":
        continue
    for fn in sorted(os.listdir(gdir)):
        est = os.path.join(gdir, fn, "new", "estimates.json")
        if os.path.exists(est):
            ns = json.load(open(est))["median"]["point_estimate"]
            print(run, group, fn, f"{ns:.4f}")
PY
done

rustc_version=$(rustc --version)
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
ncpu=$(nproc)
section() {
  python3 - "$work/results.txt" "$runs" "$(date -u +%Y-%m-%dT%H:%MZ)" "$rustc_version" "$cpu" \
    "$ncpu" <<'PY'
import statistics, sys
path, runs, when, rustc, cpu, ncpu = sys.argv[1:]
t = {}
for line in open(path):
    run, group, fn, ns = line.split()
    t[(int(run), group, fn)] = float(ns)
runs = int(runs)
def series(group, fn):
    return [t[(r, group, fn)] for r in range(1, runs + 1) if (r, group, fn) in t]
def fmt(xs, unit=" ns", digits=1):
    if not xs:
        return "—"
    m = statistics.median(xs)
    return f"{m:.{digits}f}{unit} ({min(xs):.{digits}f}–{max(xs):.{digits}f})"
def ratio(group, peer, ours):
    return [t[(r, group, peer)] / t[(r, group, ours)] for r in range(1, runs + 1)
            if (r, group, peer) in t and (r, group, ours) in t]
pp, sp, xt = "pingpong", "spsc_bounded", "cross_thread"
print("## Channels")
print()
print(f"Written by `scripts/channel-bench.sh` on {when}: {runs} separate process runs of the")
print(f"criterion bench `crates/costack-aio/benches/channels.rs` (release); {rustc}; {cpu},")
print(f"{ncpu} vCPUs, shared with other work (noisy). Each figure is the median of the runs'")
print("criterion medians, with min–max; each ratio (peer's time ÷ costack's, so above 1 means")
print("costack is faster) is taken within one run, then the median and min–max over the runs.")
print()
print("1. **ping-pong**: two tasks of one loop bounce a number through two channels of capacity 1;")
print("   time per round trip. costack `channel::local::mpsc` vs tokio `sync::mpsc` on a")
print("   current-thread runtime.")
print("2. **bounded 1 → 1 on one loop**: a producer task sends to a consumer task through a channel")
print("   of capacity 128; time per message. costack local and `Send` flavours vs tokio")
print("   current-thread.")
print("3. **cross-thread**: a producer on one thread, a consumer on another, capacity 1024; time per")
print("   message. costack: a plain thread sends (`channel::mpsc`), a task of a loop receives; tokio:")
print("   a task of one current-thread runtime sends to a task of another; std: `sync_channel`")
print("   between two threads.")
print()
print("| case | costack | peer | peer ÷ costack | goal |")
print("|---|--:|--:|--:|---|")
print(f"| 1. ping-pong, local vs tokio | {fmt(series(pp, 'costack-local'))} | {fmt(series(pp, 'tokio'))} | {fmt(ratio(pp, 'tokio', 'costack-local'), '×', 2)} | ≥ 1.5× |")
print(f"| 2. bounded 1 → 1, local vs tokio | {fmt(series(sp, 'costack-local'))} | {fmt(series(sp, 'tokio'))} | {fmt(ratio(sp, 'tokio', 'costack-local'), '×', 2)} | ≥ 1.5× |")
print(f"| 2. bounded 1 → 1, `Send` flavour vs tokio | {fmt(series(sp, 'costack-send'))} | {fmt(series(sp, 'tokio'))} | {fmt(ratio(sp, 'tokio', 'costack-send'), '×', 2)} | — |")
print(f"| 3. cross-thread vs tokio (2 runtimes) | {fmt(series(xt, 'costack'))} | {fmt(series(xt, 'tokio'))} | {fmt(ratio(xt, 'tokio', 'costack'), '×', 2)} | — |")
print(f"| 3. cross-thread vs std `sync_channel` | {fmt(series(xt, 'costack'))} | {fmt(series(xt, 'std'))} | {fmt(ratio(xt, 'std', 'costack'), '×', 2)} | — |")
PY
}

out=${CHANNEL_BENCH_OUT:-BENCHMARKS.md}
if [ "$out" = - ]; then
  section
  exit 0
fi
heading="## Channels"
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
echo "channel-bench: wrote the section to $out" >&2
