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
source scripts/common.sh

core_tests=(--test regressions --test park --test bridge)
aio_tests=(--test regressions --test nested --test bridge --test model)

echo "== ASan: costack"
asan_test -p costack "${core_tests[@]}"
# The waits that join the layers in new ways: channels (both flavours, their wait queues and
# hand-offs under timeouts and cancels), select (registrations withdrawn on every exit path),
# join sets (tasks cancelled from their own set). Under ASan only: their cross-thread stress
# tests (tens of thousands of wake-ups between threads) take many minutes under valgrind, which
# runs one thread at a time; the join sets' suite is quick under both.
aio_asan_only=(--test channel --test select --test select_channels)

echo "== ASan: costack-aio"
asan_test -p costack-aio "${aio_tests[@]}" --test joinset "${aio_asan_only[@]}"

mapfile -t bins < <(test_binaries -p costack "${core_tests[@]}"; test_binaries -p costack-aio "${aio_tests[@]}" --test joinset)
[ "${#bins[@]}" -eq 8 ] || { echo "expected 8 test binaries, found ${#bins[@]}" >&2; exit 1; }
for b in "${bins[@]}"; do valgrind_run "$b"; done
