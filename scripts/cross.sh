#!/usr/bin/env bash
# Builds and tests the `costack` crate for another CPU or system, running the test binaries
# under qemu-user or wine. Run from anywhere; the repository root is found from this file.
#
#   scripts/cross.sh install                  installs the cross toolchains (Debian packages)
#   scripts/cross.sh aarch64 [CARGO_ARGS...]  cargo test -p costack for aarch64-unknown-linux-gnu
#   scripts/cross.sh riscv64 [CARGO_ARGS...]  the same for riscv64gc-unknown-linux-gnu
#   scripts/cross.sh windows [CARGO_ARGS...]  the same for x86_64-pc-windows-gnu, under wine
#   scripts/cross.sh windows-bench [CARGO_ARGS...] [-- BENCH_ARGS...]
#                                             cargo bench of costack-bench's `windows` bench
#   scripts/cross.sh windows-stop             stops the wine prefix's (persistent) wineserver
#   scripts/cross.sh windows-workspace        checks that `cargo build --workspace` for Windows
#                                             stops at the Linux-only crates with their message
#
# Extra arguments go to `cargo test` (e.g. `--features ucontext`, `--test core`). The toolchain
# and emulator set-up is in scripts/cross-env.sh.
#
# Emulation: qemu-user runs each test binary. Tests that re-execute their own binary read the
# same emulator prefix from `COSTACK_TEST_RUNNER` (binfmt_misc is not available in containers).
# qemu-user does not emulate RLIMIT_AS or the map-count limit; the tests that need them say so
# and skip under emulation only (`COSTACK_EMULATED=1`). Proptest models run fewer cases
# (`PROPTEST_CASES`, 300 unless set, against 3 000 natively).
#
# Windows: wine runs the x86_64 code natively, so proptest runs its full count; a test binary's
# children are Windows processes started by wine (no runner); `COSTACK_UNDER_WINE=1` tells the
# tests about what wine 8 does differently from Windows (they say where).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cross-env.sh

install() {
  local need=()
  dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
  for p in rustc-web rust-web-src libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu \
    gcc-riscv64-linux-gnu libc6-dev-riscv64-cross qemu-user gdb-multiarch \
    gcc-mingw-w64-x86-64-posix mingw-w64-x86-64-dev wine64; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
  done
  if [ "${#need[@]}" -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  fi
}

# run_tests CARGO_ARGS...: builds the tests first and fails on any compiler warning (clippy is
# not available for these targets here, so this is their lint), then runs them.
run_tests() {
  local log
  log=$(mktemp)
  cargo test --no-run "$@" 2>&1 | tee "$log"
  if grep -q '^warning' "$log"; then
    echo "cross.sh: the build for $CROSS_TRIPLE has warnings (above)" >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
  cargo test "$@"
}

case "${1:-}" in
  install)
    install
    ;;
  aarch64 | riscv64)
    cross_env "$1"
    shift
    export COSTACK_TEST_RUNNER="$CROSS_RUNNER"
    export COSTACK_EMULATED=1
    export PROPTEST_CASES="${PROPTEST_CASES:-300}"
    run_tests "${CROSS_FLAGS[@]}" -p costack --target "$CROSS_TRIPLE" "$@"
    ;;
  windows)
    cross_env windows
    shift
    export COSTACK_UNDER_WINE=1
    run_tests "${CROSS_FLAGS[@]}" -p costack --target "$CROSS_TRIPLE" "$@"
    ;;
  windows-bench)
    cross_env windows
    shift
    export CRITERION_HOME="$CARGO_TARGET_DIR/criterion"
    cargo bench "${CROSS_FLAGS[@]}" -p costack-bench --bench windows --target "$CROSS_TRIPLE" "$@"
    ;;
  windows-stop)
    cross_env windows
    wineserver -k 2>/dev/null || true
    ;;
  windows-workspace)
    cross_env windows
    log=$(mktemp)
    if cargo build "${CROSS_FLAGS[@]}" --workspace --target "$CROSS_TRIPLE" >"$log" 2>&1; then
      echo "cross.sh: the workspace built for Windows; costack-aio/costack-nbd should refuse" >&2
      exit 1
    fi
    if ! grep -q "costack-aio runs on Linux only for now" "$log" ||
      grep -q "^error\[E" "$log"; then
      cat "$log" >&2
      echo "cross.sh: expected only the Linux-only crates' own message (above)" >&2
      exit 1
    fi
    grep "runs on Linux only" "$log"
    rm -f "$log"
    ;;
  *)
    echo "usage: $0 install | aarch64|riscv64|windows [CARGO_TEST_ARGS...] | windows-bench | windows-workspace" >&2
    exit 2
    ;;
esac
