#!/usr/bin/env bash
# Runs the resume-contract tests (the seams between the core, the locks, the generator, the
# bridge and the event loop) under AddressSanitizer (nightly) and valgrind's memcheck: the
# regressions of costack and costack-aio (each was undefined behaviour, a lost wake-up or a
# hang before), the contract's own tests, the bridge, nested coroutines in tasks, and the
# cross-layer model. The core suite's other tests run under both in scripts/valgrind-tests.sh
# and .ci/run.
#
# Usage: bash scripts/contract-sanitizers.sh
set -euo pipefail
cd "$(dirname "$0")/.."

core_tests=(--test regressions --test park --test bridge)
aio_tests=(--test regressions --test nested --test bridge --test model)

echo "== ASan: costack"
RUSTFLAGS="-Zsanitizer=address" CARGO_TARGET_DIR=target/asan \
  cargo +nightly test -p costack --features asan --target x86_64-unknown-linux-gnu \
  "${core_tests[@]}"
echo "== ASan: costack-aio"
RUSTFLAGS="-Zsanitizer=address" CARGO_TARGET_DIR=target/asan \
  cargo +nightly test -p costack-aio --features asan --target x86_64-unknown-linux-gnu \
  "${aio_tests[@]}"

binaries() {
  cargo test "$@" --no-run --message-format=json 2>/dev/null | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["executable"])'
}
mapfile -t bins < <(binaries -p costack "${core_tests[@]}"; binaries -p costack-aio "${aio_tests[@]}")
[ "${#bins[@]}" -eq 7 ] || { echo "expected 7 test binaries, found ${#bins[@]}" >&2; exit 1; }
for b in "${bins[@]}"; do
  echo "== valgrind $(basename "$b")"
  COSTACK_UNDER_VALGRIND=1 valgrind --error-exitcode=1 --quiet --leak-check=no \
    --track-origins=no "$b" --test-threads=2 -q
done
