#!/usr/bin/env bash
# Runs costack-aio's file I/O tests under AddressSanitizer (nightly) and valgrind's memcheck,
# on both backends: io_uring (where the kernel allows it) and the worker pool
# (COSTACK_AIO_IO_URING=0).
#
# fs_cancel drops tasks while their requests are in the kernel (reads from a pipe that has a
# writer who never writes, writes to a full pipe, a loop dropped under a request) and checks,
# with a counting allocator, that the request's buffer is freed only after its completion.
# The sanitizers check that nothing of ours touches freed or out-of-bounds memory on the way:
# the completion path, the bounce copies, the unwinding of the cancelled stacks. (Neither can
# see the kernel write into a buffer through the ring; the counting allocator is what pins
# down *when* a buffer is freed.)
#
# Usage: bash crates/costack-aio/scripts/asan-fs.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/../../.."
asan_tests=(--test fs_cancel --test fs_api --test fs_errors --test fs_model)
asan() {
  RUSTFLAGS="-Zsanitizer=address" CARGO_TARGET_DIR=target/asan \
    cargo +nightly test -p costack-aio --features asan --target x86_64-unknown-linux-gnu \
    "${asan_tests[@]}" "$@"
}
echo "== ASan, default backend (io_uring where available)"
asan "$@"
echo "== ASan, worker-pool backend"
COSTACK_AIO_IO_URING=0 asan "$@"

# valgrind: the quick files (fs_model is too slow under it).
mapfile -t bins < <(cargo test -p costack-aio --test fs_cancel --test fs_api --test fs_errors \
  --no-run --message-format=json 2>/dev/null | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["executable"])')
[ "${#bins[@]}" -gt 0 ] || { echo "no test binaries found" >&2; exit 1; }
for b in "${bins[@]}"; do
  for uring in 1 0; do
    echo "== valgrind $(basename "$b"), COSTACK_AIO_IO_URING=$uring"
    COSTACK_AIO_IO_URING=$uring valgrind --error-exitcode=1 --quiet --leak-check=no \
      "$b" --test-threads=2 -q
  done
done
echo "== sanitizers passed"
