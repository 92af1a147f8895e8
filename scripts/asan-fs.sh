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
# Usage: bash scripts/asan-fs.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
asan_tests=(--test fs_cancel --test fs_api --test fs_errors --test fs_model)
echo "== ASan, default backend (io_uring where available)"
asan_test -p costack-aio "${asan_tests[@]}" "$@"
echo "== ASan, worker-pool backend"
COSTACK_AIO_IO_URING=0 asan_test -p costack-aio "${asan_tests[@]}" "$@"

# valgrind: the quick files (fs_model is too slow under it), on both backends.
mapfile -t bins < <(test_binaries -p costack-aio --test fs_cancel --test fs_api --test fs_errors)
[ "${#bins[@]}" -gt 0 ] || { echo "no test binaries found" >&2; exit 1; }
for b in "${bins[@]}"; do
  for uring in 1 0; do
    COSTACK_AIO_IO_URING=$uring VALGRIND_LABEL="COSTACK_AIO_IO_URING=$uring" valgrind_run "$b"
  done
done
echo "== sanitizers passed"
