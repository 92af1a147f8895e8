#!/usr/bin/env bash
# UDP echo: costack's UdpSocket server against tokio's (current-thread runtime), driven by the
# same client (crates/costack-aio/examples/udp_echo_bench.rs). The example runs several times,
# each in a process of its own; the report gives, per number of clients, the median over the
# runs of each figure, with its minimum and maximum. Writes the `## UDP echo` section of
# BENCHMARKS.md (the rest of the file is left alone).
#
#   scripts/udp-bench.sh                        # 5 runs of 1 s windows, 2 rounds each (~90 s)
#   UDP_BENCH_RUNS=9 scripts/udp-bench.sh       # more runs (steadier medians)
#   UDP_BENCH_SECS=2 UDP_BENCH_ROUNDS=3         # longer windows, more rounds per run
#   UDP_BENCH_CLIENTS=1,64                      # which numbers of clients
#   UDP_BENCH_NO_WRITE=1                        # print the section, leave BENCHMARKS.md alone
#
# Within a run each server is measured ROUNDS times per row, the order alternating, and the best
# round of each is kept (as echo_bench does); across runs, the median is reported. The ratio
# column is the median of the runs' ratios (each run compares the two servers under the same
# conditions), not the ratio of the medians.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
runs=${UDP_BENCH_RUNS:-5}
secs=${UDP_BENCH_SECS:-1}
rounds=${UDP_BENCH_ROUNDS:-2}
clients=${UDP_BENCH_CLIENTS:-1,16,64}
target=${CARGO_TARGET_DIR:-$root/target}
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)

echo "== building the udp_echo_bench example (release)"
cargo build --release -p costack-aio --example udp_echo_bench
bin=$target/release/examples/udp_echo_bench

results=$(mktemp) # run clients costack_rps costack_ns tokio_rps tokio_ns losses
trap 'rm -f "$results"' EXIT
for run in $(seq 1 "$runs"); do
    echo "== run $run of $runs"
    "$bin" "$secs" "$rounds" "$clients" | tee /dev/stderr | awk -v r="$run" '$1 == "RESULT" { print r, $2, $3, $4, $5, $6, $7 }' >>"$results"
done 2>&1 | grep -v '^RESULT'

table=$(awk '
    function sort(a, n,    i, j, t) {
        for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    }
    # "median (min–max)" of the space-separated values in s, printed with format f.
    function stats(s, f,    a, n, i) {
        n = split(s, a, " "); for (i = 1; i <= n; i++) a[i] += 0; sort(a, n)
        return sprintf(f " (" f "–" f ")", n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2, a[1], a[n])
    }
    {
        k = $2; if (!(k in seen)) { seen[k] = 1; order[++nk] = k }
        crps[k] = crps[k] " " $3 / 1000; cns[k] = cns[k] " " $4
        trps[k] = trps[k] " " $5 / 1000; tns[k] = tns[k] " " $6
        ratio[k] = ratio[k] " " $3 / $5; cpu[k] = cpu[k] " " $6 / $4
        loss[k] += $7; runs[k]++
    }
    END {
        print "| clients | costack k req/s | tokio k req/s | costack ÷ tokio | costack ns/req | tokio ns/req | tokio ÷ costack (CPU) | losses |"
        print "|---|---|---|---|---|---|---|---|"
        for (i = 1; i <= nk; i++) {
            k = order[i]
            printf "| %s | %s | %s | %s | %s | %s | %s | %d |\n", k, stats(crps[k], "%.1f"), stats(trps[k], "%.1f"),
                stats(ratio[k], "%.2f×"), stats(cns[k], "%.0f"), stats(tns[k], "%.0f"), stats(cpu[k], "%.2f×"), loss[k]
        }
    }' "$results")

section=$(
    cat <<EOF
## UDP echo

Produced by \`scripts/udp-bench.sh\` on ${started}: ${runs} runs of
\`udp_echo_bench ${secs} ${rounds} ${clients}\` (examples/udp_echo_bench.rs), each in a process of its
own, on $(nproc) vCPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), Linux $(uname -r).

One server thread each, one socket, one task: receive a datagram, send it back. costack's is
\`net::UdpSocket\` on an \`EventLoop\`; tokio's is \`tokio::net::UdpSocket\` on a current-thread
runtime. The client is one thread (a costack loop) with one task per client, each with a
connected socket, sending a 64-byte request and waiting for its echo before the next. Within
a run, each row measures each server ${rounds} time(s) (${secs} s windows after a 0.3 s warm-up,
alternating which goes first) and keeps the best; the table gives the median over the runs,
(min–max) beside it. The ratios are the medians of each run's ratio. ns/req is the server
thread's CPU time per request (/proc/self/task/<tid>/schedstat): steadier than req/s on a
machine whose two vCPUs the client, both servers and whatever else runs share. Losses: requests
sent again after 200 ms without an echo, over all runs (0: the figures are not the retry
timer's).

${table}

Goal (issue 14): costack ÷ tokio ≥ 1.0× in req/s.
EOF
)

echo
echo "$section"
if [[ "${UDP_BENCH_NO_WRITE:-0}" != 0 ]]; then
    exit 0
fi

# Replace the `## UDP echo` section of BENCHMARKS.md (up to the next `## ` heading), or append
# it; nothing else in the file changes.
out=$root/BENCHMARKS.md
source "$root/scripts/common.sh"
write_section "$out" "## UDP echo" "$section"
echo "== wrote the UDP echo section of $out"
