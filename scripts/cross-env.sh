# The environment for building and running costack for another CPU; `source` it, then call
# `cross_env ARCH` (aarch64 or riscv64). Used by scripts/cross.sh, scripts/cross-insns.sh and
# scripts/gdb-test.sh.
#
# rustup cannot download targets here, so the foreign builds use Debian's own Rust toolchain
# (`rustc-web`, the same release for the host and the target): aarch64 with its prebuilt std
# (`libstd-rust-web-dev:arm64`), riscv64 with std built from Debian's matching sources
# (`rust-web-src`, `-Zbuild-std`, which needs RUSTC_BOOTSTRAP). rustup's `cargo` drives both;
# RUSTC/RUSTDOC name Debian's compiler, and each CPU has its own target directory, so the host
# build in `target/` is untouched.
#
# After `cross_env ARCH`:
#   CROSS_TRIPLE    the target triple
#   CROSS_FLAGS     extra cargo flags (an array: "${CROSS_FLAGS[@]}")
#   CROSS_RUNNER    the emulator command that runs one of its programs (qemu-user)
#   CROSS_SYSROOT   where its shared libraries are, for a debugger
# and cargo's variables for the target (linker, runner, C compiler) are exported. qemu-aarch64
# gets no `-L`: the multiarch arm64 libc is found through the normal paths, and pairing it with
# the cross package's loader makes `pthread_create` spin.

cross_env() {
  export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
  export CARGO_TARGET_DIR="${CROSS_TARGET_DIR:-$PWD/target/cross-$1}"
  case $1 in
    aarch64)
      CROSS_TRIPLE=aarch64-unknown-linux-gnu
      CROSS_FLAGS=()
      CROSS_RUNNER="timeout 600 qemu-aarch64"
      CROSS_SYSROOT=/
      export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
      export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
      export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="$CROSS_RUNNER"
      ;;
    riscv64)
      CROSS_TRIPLE=riscv64gc-unknown-linux-gnu
      CROSS_FLAGS=(-Zbuild-std)
      CROSS_RUNNER="timeout 600 qemu-riscv64 -L /usr/riscv64-linux-gnu"
      CROSS_SYSROOT=/usr/riscv64-linux-gnu
      export RUSTC_BOOTSTRAP=1
      export CARGO_TARGET_RISCV64GC_UNKNOWN_LINUX_GNU_LINKER=riscv64-linux-gnu-gcc
      export CC_riscv64gc_unknown_linux_gnu=riscv64-linux-gnu-gcc
      export CARGO_TARGET_RISCV64GC_UNKNOWN_LINUX_GNU_RUNNER="$CROSS_RUNNER"
      ;;
    *)
      echo "cross-env: unknown CPU ${1:-} (aarch64 or riscv64)" >&2
      return 2
      ;;
  esac
}
