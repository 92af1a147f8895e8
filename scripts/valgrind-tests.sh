#!/usr/bin/env bash
# Runs a subset of costack's test binaries under valgrind's memcheck, failing on any error.
# The subset: core, wake, generator, sync_* (the switch, lifecycle, wake-up and lock paths).
# Left out: stack_errors and stack_safety (they exhaust limits or crash children on purpose),
# backtrace (slow to symbolize under valgrind, and not about memory), and doctests.
set -euo pipefail
cd "$(dirname "$0")/.."
tests=(core wake generator)
for f in crates/costack/tests/sync_*.rs; do
  [ -e "$f" ] && tests+=("$(basename "$f" .rs)")
done
args=()
for t in "${tests[@]}"; do args+=(--test "$t"); done
mapfile -t bins < <(cargo test -p costack "${args[@]}" --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["executable"])')
[ "${#bins[@]}" -gt 0 ] || { echo "no test binaries found" >&2; exit 1; }
for b in "${bins[@]}"; do
  echo "== valgrind $(basename "$b")"
  COSTACK_UNDER_VALGRIND=1 valgrind --error-exitcode=1 --quiet --leak-check=no --track-origins=no "$b" --test-threads=2 -q
done
