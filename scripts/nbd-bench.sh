#!/usr/bin/env bash
# NBD servers side by side: costack-nbd, qemu-nbd (--aio=io_uring and --aio=threads) and
# nbdkit's file plugin, each serving the same random-filled 1 GiB file on loopback, measured
# with `qemu-img bench` (reads and writes, 4 KiB and 64 KiB, queue depth 1 and 16). The
# server's CPU time per operation comes from /proc/<pid>/stat (utime + stime, all threads).
# Writes the `## NBD server` section of BENCHMARKS.md (the rest of the file is left alone).
#
#   scripts/nbd-bench.sh                       # 3 rounds per mode, about 7 minutes on 2 vCPUs
#   NBD_BENCH_ROUNDS=1 scripts/nbd-bench.sh    # one round (a quick look; noisier)
#   NBD_BENCH_MODES=spread scripts/nbd-bench.sh  # only the anchors' setup (no pinning)
#   NBD_BENCH_SCALE=0.5 scripts/nbd-bench.sh   # half the operations per run
#   NBD_BENCH_DIR=/some/dir                    # where the 1 GiB file goes (default target/nbd-bench)
#   NBD_BENCH_NO_WRITE=1                       # print the section, leave BENCHMARKS.md alone
#
# Two modes, each a full matrix:
#   spread  the anchors' setup: the scheduler places client and server on the 2 vCPUs;
#   pinned  client and server (all its threads) on vCPU 0 (`taskset -c 0`): no cross-vCPU
#           wake-ups, so the figures show the work per request rather than the VM's wake-up
#           latency, which varies with how idle the host keeps the other vCPU.
#
# Needs qemu-img and qemu-nbd (qemu-utils) and nbdkit (Debian package `nbdkit`); a missing
# peer is reported and left out. Every run is preceded by `sync`; the servers run one after
# the other, in a different order each round, and each round's figures are kept: the report
# shows the median over rounds. Only 127.0.0.1 is used.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
rounds=${NBD_BENCH_ROUNDS:-3}
modes=${NBD_BENCH_MODES:-spread pinned}
scale=${NBD_BENCH_SCALE:-1}
dir=${NBD_BENCH_DIR:-$root/${CARGO_TARGET_DIR:-target}/nbd-bench}
target=${CARGO_TARGET_DIR:-$root/target}
disk=$dir/disk.img
tick=$(getconf CLK_TCK)
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)

need() { command -v "$1" >/dev/null || { echo "nbd-bench: $1 is required" >&2; exit 1; }; }
need qemu-img
need awk

echo "== building costack-nbd (release)"
cargo build --release -p costack-nbd
bin=$target/release/costack-nbd

mkdir -p "$dir"
echo "== creating $disk (1 GiB of random data)"
head -c $((1 << 30)) /dev/urandom >"$disk"
sync

# ---------------------------------------------------------------------------------------------
# Servers: name, then the command (PORT is replaced by the port).

servers=()
declare -A cmd
add_server() { servers+=("$1"); cmd[$1]=$2; }
add_server costack-nbd "$bin -b 127.0.0.1 -p PORT -x test $disk"
# The same server with one loop thread (the default is one per CPU), and with adaptive polling
# (off by default): rows of their own, not peers, to show what each choice does.
add_server costack-nbd-1thread "$bin -b 127.0.0.1 -p PORT -x test --threads 1 $disk"
add_server costack-nbd-poll "$bin -b 127.0.0.1 -p PORT -x test --poll-max-ns 50000 $disk"
if command -v qemu-nbd >/dev/null; then
    add_server qemu-nbd-io_uring "qemu-nbd -f raw -x test -p PORT -b 127.0.0.1 --cache=writeback --aio=io_uring -t -e 0 $disk"
    add_server qemu-nbd-threads "qemu-nbd -f raw -x test -p PORT -b 127.0.0.1 --cache=writeback --aio=threads -t -e 0 $disk"
else
    echo "nbd-bench: qemu-nbd not found: left out" >&2
fi
if command -v nbdkit >/dev/null; then
    add_server nbdkit-file "nbdkit -f -p PORT -i 127.0.0.1 file file=$disk"
else
    echo "nbd-bench: nbdkit not found (apt-get install nbdkit): left out" >&2
fi

# The test matrix: label, block size, queue depth, operations (before scaling), write?
tests=(
    "read 4K QD1|4096|1|40000|0"
    "read 4K QD16|4096|16|80000|0"
    "read 64K QD1|65536|1|20000|0"
    "read 64K QD16|65536|16|20000|0"
    "write 4K QD1|4096|1|40000|1"
    "write 4K QD16|4096|16|80000|1"
    "write 64K QD1|65536|1|20000|1"
    "write 64K QD16|65536|16|20000|1"
)
# Whole-export copies to nowhere with nbdcopy (libnbd): label, then nbdcopy's options. With no
# options it opens 4 connections when the server offers multi-conn (every server here does),
# else 1. Figures in MB/s (10^6 bytes), CPU in µs per MB.
copies=(
    "nbdcopy → null|"
    "nbdcopy -C 1 → null|-C 1"
)
if ! command -v nbdcopy >/dev/null; then
    echo "nbd-bench: nbdcopy not found (apt-get install libnbd-bin): its rows are left out" >&2
    copies=()
fi

server_pid=""
cleanup() {
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT

# A port below the kernel's ephemeral range (32768 and up), so that no client socket holds it.
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
    done
    echo "nbd-bench: no free port" >&2
    exit 1
}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

results=$dir/results.txt # mode|server|test|round|ops_per_s|cpu_us_per_op
: >"$results"

# Starts server $1 on a free port (sets server_pid and port); retries on another port if it
# cannot listen.
start_server() {
    local name=$1 c pin=()
    [[ $mode == pinned ]] && pin=(taskset -c 0)
    cat "$disk" >/dev/null # in the page cache, as in the anchors
    for _ in 1 2 3; do
        port=$(free_port)
        c=${cmd[$name]//PORT/$port}
        # shellcheck disable=SC2086
        "${pin[@]}" $c >"$dir/$name.log" 2>&1 &
        server_pid=$!
        for _ in $(seq 1 100); do
            if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
                return 0
            fi
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.05
        done
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    done
    echo "nbd-bench: $name did not start: $(cat "$dir/$name.log")" >&2
    return 1
}

# Appends one result of the running server (name, mode and round from the caller) and prints
# it: record LABEL UNITS SECONDS CPU_TICKS UNIT_NAME, kept as UNITS per second and the server's
# CPU µs per unit.
record() {
    awk -v m="$mode" -v n="$name" -v l="$1" -v r="$round" -v u="$2" -v s="$3" -v d="$4" \
        -v hz="$tick" 'BEGIN { printf "%s|%s|%s|%d|%.0f|%.2f\n", m, n, l, r, u / s, d / hz * 1e6 / u }' \
        >>"$results"
    tail -n1 "$results" |
        awk -F'|' -v unit="$5" '{ printf "   %-20s %-16s %10.0f %s/s  %6.2f us CPU/%s\n", $2, $3, $5, unit, $6, unit }'
}

# Whether the server of `run_server` still runs; says so if it exited.
server_alive() {
    kill -0 "$server_pid" 2>/dev/null && return 0
    echo "nbd-bench: $name exited: $(cat "$dir/$name.log")" >&2
    return 1
}

run_server() {
    local name=$1 round=$2 port pin=()
    [[ $mode == pinned ]] && pin=(taskset -c 0)
    start_server "$name" || return 0
    local opts="driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=$port,export=test"
    for t in "${tests[@]}"; do
        IFS='|' read -r label bs qd count write <<<"$t"
        count=$(awk -v c="$count" -v s="$scale" 'BEGIN { printf "%d", c * s }')
        local wargs=()
        [[ $write == 1 ]] && wargs=(-w --pattern=0xa5)
        sync
        local t0 t1 out secs
        server_alive || break
        t0=$(cpu_ticks "$server_pid")
        out=$("${pin[@]}" qemu-img bench --image-opts -t none -c "$count" -d "$qd" -s "$bs" "${wargs[@]}" "$opts" 2>&1) || {
            echo "nbd-bench: $name $label failed: $out" >&2
            continue
        }
        t1=$(cpu_ticks "$server_pid")
        secs=$(sed -nE 's/.*Run completed in ([0-9.]+) seconds.*/\1/p' <<<"$out")
        record "$label" "$count" "$secs" $((t1 - t0)) op
    done
    local c copts t0ns t1ns
    for c in ${copies[@]+"${copies[@]}"}; do
        IFS='|' read -r label copts <<<"$c"
        sync
        server_alive || break
        t0=$(cpu_ticks "$server_pid")
        t0ns=$(date +%s%N)
        # shellcheck disable=SC2086
        out=$("${pin[@]}" nbdcopy $copts "nbd://127.0.0.1:$port/test" null: 2>&1) || {
            echo "nbd-bench: $name $label failed: $out" >&2
            continue
        }
        t1ns=$(date +%s%N)
        t1=$(cpu_ticks "$server_pid")
        # The whole export (1 GiB) in MB, over the copy's wall time.
        record "$label" "$((1 << 30))e-6" "$((t1ns - t0ns))e-9" $((t1 - t0)) MB
    done
    kill "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}

for mode in $modes; do
    for round in $(seq 1 "$rounds"); do
        echo "== $mode: round $round of $rounds"
        n=${#servers[@]}
        for i in $(seq 0 $((n - 1))); do
            run_server "${servers[$(((i + round - 1) % n))]}" "$round"
        done
    done
done

# ---------------------------------------------------------------------------------------------
# The report: medians over rounds.

median_table() {
    awk -F'|' -v mode="$1" -v servers="${servers[*]}" -v order="$(printf '%s\n' "${tests[@]}" ${copies[@]+"${copies[@]}"} | cut -d'|' -f1 | paste -sd'|')" '
    function median(s,    n, a, i, j, t) {
        n = split(s, a, " ")
        for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    $1 == mode { ops[$2 "|" $3] = ops[$2 "|" $3] " " $5; cpu[$2 "|" $3] = cpu[$2 "|" $3] " " $6 }
    END {
        ns = split(servers, sv, " "); nt = split(order, tv, "|")
        printf "| test |"
        for (i = 1; i <= ns; i++) printf " %s |", sv[i]
        printf " costack-nbd ÷ best peer |\n|---|"
        for (i = 1; i <= ns + 1; i++) printf "---|"
        printf "\n"
        for (t = 1; t <= nt; t++) {
            printf "| %s |", tv[t]
            best = 0; bestcpu = 1e18; own = 0; owncpu = 0
            for (i = 1; i <= ns; i++) {
                k = sv[i] "|" tv[t]
                if (!(k in ops)) { printf " – |"; continue }
                o = median(ops[k]); c = median(cpu[k])
                if (tv[t] ~ /^nbdcopy/) printf " %.0f MB/s (%.1f) |", o, c
                else printf " %.1fk (%.1f) |", o / 1000, c
                if (sv[i] == "costack-nbd") { own = o; owncpu = c }
                else if (sv[i] !~ /^costack-nbd/) { if (o > best) best = o; if (c < bestcpu) bestcpu = c }
            }
            if (best > 0 && own > 0) {
                ratio = own / best
                goal = tv[t] ~ / 4K QD1/ ? 1.2 : (tv[t] ~ /^read 64K QD1|^nbdcopy → null/ ? 1.0 : 0)
                mark = goal ? (ratio >= goal ? "✔" : sprintf("✘ (goal %.1f×)", goal)) : ""
                printf " %.2f× %s; CPU %s |\n", ratio, mark, (owncpu < bestcpu ? "lowest ✔" : "not lowest ✘")
            } else printf " – |\n"
        }
    }' "$results"
}

mode_title() {
    case $1 in
    spread) echo "Spread: the scheduler places client and server on the 2 vCPUs (the anchors' setup)" ;;
    pinned) echo "Pinned: client and server, every thread, on vCPU 0 (\`taskset -c 0\`)" ;;
    esac
}

tables=$(for m in $modes; do
    echo "### $(mode_title "$m")"
    echo
    median_table "$m"
    echo
done)
section=$(
    cat <<EOF
## NBD server

Produced by \`scripts/nbd-bench.sh\` (${rounds} round(s) per mode, operations × ${scale}) on
${started}: $(nproc) vCPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), Linux $(uname -r);
$(qemu-img --version | head -n1)$(command -v nbdkit >/dev/null && echo ", $(nbdkit --version | head -n1)").
Server and client share the machine; compare only figures of one run.

Each cell: operations per second (server CPU µs per operation, from /proc/<pid>/stat: utime +
stime of all its threads), median over rounds. Every run, after \`sync\`, with the file in the
page cache:

\`\`\`sh
qemu-img bench --image-opts -t none -c COUNT -d QD -s BS [-w --pattern=0xa5] \\
  driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=PORT,export=test
\`\`\`

The \`nbdcopy\` rows copy the whole export to nowhere (\`nbdcopy [-C 1] nbd://127.0.0.1:PORT/test
null:\`), in MB/s (server CPU µs per MB): with no options nbdcopy opens 4 connections to a
server that offers multi-conn, as all of these do; \`-C 1\` keeps it to one.

Servers (the same random-filled 1 GiB file):

$(for s in "${servers[@]}"; do c=${cmd[$s]//$disk/disk.img}; echo "- $s: \`${c//$root\//}\`"; done)

At queue depth 1 every request is a round trip between client and server. Spread over two
vCPUs, each leg may have to wake a vCPU that went idle, and in this VM that can cost more than
the request itself: the QD1 rows of the spread table then mostly measure it, and how often the
scheduler happens to put the two on one vCPU (nbdkit's pool of threads moves around; an
event-loop thread, costack-nbd's or qemu-nbd's, stays where it is). The pinned table removes that term.

${tables}

\`costack-nbd-1thread\` (one loop thread instead of one per CPU) and \`costack-nbd-poll\`
(adaptive polling, off by default) are costack-nbd with one option changed: they are not peers,
and the last column compares only the default \`costack-nbd\` with qemu-nbd and nbdkit.

Goals (issue 16): at least 1.2× the best peer's op/s on the 4 KiB QD1 rows (marked), at least
1.0× on 64 KiB QD1 reads and on \`nbdcopy → null\`, the QD16 rows held, and less server CPU per
operation than any peer (last column).
EOF
)

echo
echo "$section"
if [[ "${NBD_BENCH_NO_WRITE:-0}" != 0 ]]; then
    exit 0
fi

# Replace the `## NBD server` section of BENCHMARKS.md (up to the next `## ` heading), or
# append it; nothing else in the file changes.
out=$root/BENCHMARKS.md
source "$root/scripts/common.sh"
write_section "$out" "## NBD server" "$section"
echo "== wrote the NBD server section of $out"
