#!/usr/bin/env bash
# Checks scripts/costack-gdb.py on the gdb_target example: `costack bt-all` must print the
# backtraces of the two suspended coroutines, naming the functions they are suspended in.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p costack --example gdb_target
out=$(gdb -batch -nx -x scripts/costack-gdb.py \
  -ex 'break costack_example_breakpoint' -ex run \
  -ex 'costack list' -ex 'costack bt-all' -ex kill \
  target/debug/examples/gdb_target 2>&1)
echo "$out" | grep -E '^(co[0-9]|---|#[0-9]+ .*(suspended_in|waiting_for|trampoline))' || true
fail=0
grep -q 'suspended  *$\|suspended$' <<<"$out" || { echo "FAIL: costack list shows no suspended coroutine"; fail=1; }
grep -q 'in gdb_target::suspended_in_this_function' <<<"$out" || { echo "FAIL: no frame in suspended_in_this_function"; fail=1; }
grep -q 'in gdb_target::waiting_for_more_input' <<<"$out" || { echo "FAIL: no frame in waiting_for_more_input"; fail=1; }
if [ "$fail" -ne 0 ]; then echo "$out"; exit 1; fi
echo "gdb script: ok"
