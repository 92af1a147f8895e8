#!/usr/bin/env bash
# NBD servers under hostile clients: costack-nbd, qemu-nbd and nbdkit (memory plugin), each
# serving 64 MiB on loopback, attacked by `crates/costack-nbd/examples/nbd_hostile.rs`:
#
#   1. 4 connections pipeline 32 MiB READs and never read the replies;
#   2. one unread 32 MiB READ, then a flood of invalid requests (READs past the end);
#   3. the server under `ulimit -n 256`, 300 connections that never finish the handshake;
#   4. a burst of 32 MiB (and smaller) READs from 4 clients, then no clients: RSS once idle.
#
# In rows 1-3 a well-behaved client (200 × a 4 KiB write and its read-back, on a connection of
# its own) then has 20 s to be served. The server's peak memory is its VmHWM from
# /proc/PID/status (a fresh server per row). Writes the `## NBD under hostile clients` section
# of BENCHMARKS.md (the rest of the file is left alone).
#
#   scripts/nbd-hostile.sh                      # about 4 minutes on 2 vCPUs
#   NBD_HOSTILE_SECS=20 scripts/nbd-hostile.sh  # attack for 20 s before the good client (10)
#   NBD_HOSTILE_NO_WRITE=1                      # print the section, leave BENCHMARKS.md alone
#
# Needs qemu-nbd (qemu-utils) and nbdkit (Debian package `nbdkit`); a missing peer is reported
# and left out. qemu-nbd serves a sparse 64 MiB file (it has no memory export); the hostile
# clients read regions nobody wrote, so no export grows. Row 1 makes qemu-nbd and nbdkit take
# about 2 GiB: run it where that is free.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
secs=${NBD_HOSTILE_SECS:-10}
target=${CARGO_TARGET_DIR:-$root/target}
dir=$target/nbd-hostile
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)

echo "== building costack-nbd and the hostile clients (release)"
cargo build --release -p costack-nbd --bin costack-nbd --example nbd_hostile
bin=$target/release/costack-nbd
hostile=$target/release/examples/nbd_hostile

mkdir -p "$dir"
disk=$dir/disk.img
rm -f "$disk"
truncate -s 64M "$disk"

servers=()
declare -A cmd
add_server() { servers+=("$1"); cmd[$1]=$2; }
add_server costack-nbd "$bin -b 127.0.0.1 -p PORT -x test --size 64M"
if command -v qemu-nbd >/dev/null; then
    add_server qemu-nbd "qemu-nbd -f raw -x test -p PORT -b 127.0.0.1 --cache=writeback -t -e 0 $disk"
else
    echo "nbd-hostile: qemu-nbd not found (apt-get install qemu-utils): left out" >&2
fi
if command -v nbdkit >/dev/null; then
    add_server nbdkit "nbdkit -f -i 127.0.0.1 -p PORT -e test memory 64M"
else
    echo "nbd-hostile: nbdkit not found (apt-get install nbdkit): left out" >&2
fi

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
    echo "nbd-hostile: no free port" >&2
    exit 1
}

# Starts server $1 on a free port, with `ulimit -n $2` if given, logging to $3 (sets
# server_pid and port).
start_server() {
    local name=$1 nofile=${2:-} log=$3 c
    port=$(free_port)
    c=${cmd[$name]//PORT/$port}
    if [[ -n $nofile ]]; then
        # shellcheck disable=SC2086
        (ulimit -n "$nofile" && exec $c) >"$log" 2>&1 &
    else
        # shellcheck disable=SC2086
        $c >"$log" 2>&1 &
    fi
    server_pid=$!
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.05
    done
    echo "nbd-hostile: $name did not start (see $log)" >&2
    exit 1
}

stop_server() {
    kill "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -9 "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
}

field() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2 }'; }

# The good client's verdict: "served in 1.23 s" or "**not served** in 20 s".
served() {
    if [[ $(field "$1" served) == yes ]]; then
        echo "served in $(field "$1" served_s) s"
    else
        echo "**not served** in 20 s"
    fi
}

declare -A cell
for name in "${servers[@]}"; do
    for row in reads flood handshake burst; do
        nofile=
        s=$secs
        case $row in
            handshake) nofile=256 s=1 ;;
            burst) s=5 ;;
        esac
        log=$dir/$name-$row.log
        start_server "$name" "$nofile" "$log"
        echo "== $name: $row"
        line=$("$hostile" "$row" "127.0.0.1:$port" "$server_pid" "$s" || echo "failed=1")
        # Still running (not a zombie)?
        exited=
        if ! grep -qs '^State:[[:space:]]*[^Z]' "/proc/$server_pid/status"; then
            exited="; **the server died** ($(tail -n1 "$log" | tr -d "|" | cut -c1-80))"
        fi
        stop_server
        echo "   $line$exited"
        hwm=$(field "$line" hwm_mib)
        case $row in
            reads | handshake) cell[$name/$row]="peak $hwm MiB; good client $(served "$line")" ;;
            flood) cell[$name/$row]="peak $hwm MiB, $(field "$line" rss_after_mib) MiB 5 s after the client left; good client $(served "$line")" ;;
            burst) cell[$name/$row]="peak $hwm MiB; $(field "$line" rss_after_mib) MiB after 5 s idle" ;;
        esac
        cell[$name/$row]+=$exited
    done
done

rows=(
    "reads|4 connections pipeline 32 MiB READs and never read the replies (${secs} s)"
    "flood|one unread 32 MiB READ, then a flood of invalid requests (${secs} s)"
    "handshake|\`ulimit -n 256\`, 300 connections that never finish the handshake"
    "burst|a burst of 32 MiB READs from 4 clients, then no clients"
)
section=$(
    echo "## NBD under hostile clients"
    echo
    echo "\`scripts/nbd-hostile.sh\`, $started, on this machine ($(nproc) vCPUs). Each server serves"
    echo "64 MiB on 127.0.0.1 (costack-nbd and nbdkit in memory, qemu-nbd a sparse file) with its"
    echo "defaults (costack-nbd: 66 MiB per connection, 1/8 of the RAM within 256 MiB..1 GiB in"
    echo "all; qemu-nbd \`-t -e 0\`),"
    echo "a fresh server per row. Peak = the server's VmHWM. After the attack a well-behaved"
    echo "client (200 × a 4 KiB write and its read-back, on its own connection) has 20 s to be"
    echo "served, while the hostile clients stay connected."
    echo
    printf '| hostile client |'
    for name in "${servers[@]}"; do printf ' %s |' "$name"; done
    echo
    printf '|---|'
    for _ in "${servers[@]}"; do printf -- '---|'; done
    echo
    for r in "${rows[@]}"; do
        key=${r%%|*}
        printf '| %s |' "${r#*|}"
        for name in "${servers[@]}"; do printf ' %s |' "${cell[$name/$key]}"; done
        echo
    done
)
echo
echo "$section"
if [[ "${NBD_HOSTILE_NO_WRITE:-0}" != 0 ]]; then
    exit 0
fi

# Replace the section in BENCHMARKS.md (up to the next `## ` heading), or append it.
out=$root/BENCHMARKS.md
source "$root/scripts/common.sh"
write_section "$out" "## NBD under hostile clients" "$section"
echo "== wrote the NBD under hostile clients section of $out"
