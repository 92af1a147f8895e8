#!/usr/bin/env bash
# Checks gdb on the gdb_target example: stopped inside a running coroutine, `bt` must continue
# through the switch into `main` (the trampoline's unwind information), and scripts/costack-gdb.py's
# `costack bt-all` must print the backtraces of the two suspended coroutines, naming the
# functions they are suspended in.
#
#   scripts/gdb-test.sh            on this machine, with gdb
#   scripts/gdb-test.sh aarch64    built for aarch64 (or riscv64), run under qemu-user's gdb stub,
#                                  debugged with gdb-multiarch (scripts/cross.sh install)
set -euo pipefail
cd "$(dirname "$0")/.."
commands=(-ex 'break gdb_target::suspended_in_this_function' -ex 'break costack_example_breakpoint')
# Stopped first in the coroutine (running), then at the breakpoint with both suspended.
after=(-ex 'echo === running\n' -ex bt -ex 'echo === suspended\n' -ex continue
  -ex 'costack list' -ex 'costack bt-all' -ex kill)

case "${1:-host}" in
  host)
    cargo build -q -p costack --example gdb_target
    out=$(gdb -batch -nx -x scripts/costack-gdb.py "${commands[@]}" -ex run "${after[@]}" \
      target/debug/examples/gdb_target 2>&1)
    ;;
  aarch64 | riscv64)
    source scripts/cross-env.sh
    cross_env "$1"
    cargo build -q "${CROSS_FLAGS[@]}" -p costack --example gdb_target --target "$CROSS_TRIPLE"
    bin=$CARGO_TARGET_DIR/$CROSS_TRIPLE/debug/examples/gdb_target
    port=$((20000 + RANDOM % 20000))
    # The emulator waits for the debugger on the port; it ends with the `kill`.
    # shellcheck disable=SC2086
    $CROSS_RUNNER -g "$port" "$bin" >/dev/null 2>&1 &
    emu=$!
    out=$(gdb-multiarch -batch -nx -ex "set sysroot $CROSS_SYSROOT" -ex "file $bin" \
      -ex "target remote 127.0.0.1:$port" -x scripts/costack-gdb.py "${commands[@]}" \
      -ex continue "${after[@]}" 2>&1) || true
    kill "$emu" 2>/dev/null || true
    wait "$emu" 2>/dev/null || true
    ;;
  *)
    echo "usage: $0 [aarch64 | riscv64]" >&2
    exit 2
    ;;
esac

echo "$out" | grep -E '^(co[0-9]|---|#[0-9]+ .*(suspended_in|waiting_for|trampoline))' || true
fail=0
running=$(sed -n '/^=== running/,/^=== suspended/p' <<<"$out")
grep -q '^#0 .*gdb_target::suspended_in_this_function' <<<"$running" || { echo "FAIL: the first stop is not in the coroutine"; fail=1; }
grep -q 'in gdb_target::main' <<<"$running" || { echo "FAIL: bt inside a running coroutine does not reach main"; fail=1; }
grep -q 'suspended  *$\|suspended$' <<<"$out" || { echo "FAIL: costack list shows no suspended coroutine"; fail=1; }
grep -q 'in gdb_target::suspended_in_this_function' <<<"$out" || { echo "FAIL: no frame in suspended_in_this_function"; fail=1; }
grep -q 'in gdb_target::waiting_for_more_input' <<<"$out" || { echo "FAIL: no frame in waiting_for_more_input"; fail=1; }
if [ "$fail" -ne 0 ]; then echo "$out"; exit 1; fi
echo "gdb script (${1:-host}): ok"
