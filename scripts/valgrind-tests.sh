#!/usr/bin/env bash
# Runs a subset of costack's test binaries under valgrind's memcheck, failing on any error.
# The subset: core, wake, generator, sync_* (the switch, lifecycle, wake-up and lock paths), and
# core and generator again on the ucontext backend.
# Left out: stack_errors and stack_safety (they exhaust limits or crash children on purpose),
# backtrace (slow to symbolize under valgrind, and not about memory), and doctests.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
args=(--test core --test wake --test generator)
for f in crates/costack/tests/sync_*.rs; do
  [ -e "$f" ] && args+=(--test "$(basename "$f" .rs)")
done
mapfile -t bins < <(test_binaries -p costack "${args[@]}")
[ "${#bins[@]}" -gt 0 ] || { echo "no test binaries found" >&2; exit 1; }
for b in "${bins[@]}"; do valgrind_run "$b"; done
# The ucontext backend keeps each saved context in the frame of the code it belongs to (the
# enterer's `resume`, the coroutine's `suspend`, the top of a fresh stack): its switch paths too.
mapfile -t bins < <(test_binaries -p costack --features ucontext --test core --test generator)
[ "${#bins[@]}" -gt 0 ] || { echo "no ucontext test binaries found" >&2; exit 1; }
for b in "${bins[@]}"; do VALGRIND_LABEL=ucontext valgrind_run "$b"; done
