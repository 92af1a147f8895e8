# The environment for building and running costack for another CPU; `source` it, then call
# `cross_env ARCH` (aarch64, riscv64 or windows). Used by scripts/cross.sh, scripts/cross-insns.sh and
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
#   CROSS_RUNNER    the command that runs one of its programs (qemu-user, or wine for Windows)
#   CROSS_SYSROOT   where its shared libraries are, for a debugger
# and cargo's variables for the target (linker, runner, C compiler) are exported. qemu-aarch64
# gets no `-L`: the multiarch arm64 libc is found through the normal paths, and pairing it with
# the cross package's loader makes `pthread_create` spin.
#
# Windows (`x86_64-pc-windows-gnu`): std built from Debian's sources like riscv64's, linked with
# mingw-w64's gcc and run under wine 8 (`wine64`, which runs the x86_64 code natively), in a wine
# prefix of the build's own. wine 8 lacks `ProcessPrng` (bcryptprimitives.dll), which Rust's std
# imports, so a stand-in built from scripts/windows/processprng.c goes on WINEPATH. The prefix's
# wineserver is made persistent; stop it with `scripts/cross.sh windows-stop`.

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
    windows)
      CROSS_TRIPLE=x86_64-pc-windows-gnu
      CROSS_FLAGS=(-Zbuild-std)
      CROSS_RUNNER="timeout 600 /usr/lib/wine/wine64"
      CROSS_SYSROOT=/usr/x86_64-w64-mingw32
      export RUSTC_BOOTSTRAP=1
      export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc-posix
      export CC_x86_64_pc_windows_gnu=x86_64-w64-mingw32-gcc-posix
      export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER="$CROSS_RUNNER"
      export WINEPREFIX="$CARGO_TARGET_DIR/wineprefix" WINEDEBUG=-all
      local dlls="$CARGO_TARGET_DIR/wine-dlls"
      mkdir -p "$dlls"
      if [ ! -e "$dlls/bcryptprimitives.dll" ] ||
        [ scripts/windows/processprng.c -nt "$dlls/bcryptprimitives.dll" ]; then
        x86_64-w64-mingw32-gcc-posix -O2 -shared -o "$dlls/bcryptprimitives.dll" \
          scripts/windows/processprng.c -ladvapi32
      fi
      # wine maps the Unix root to drive Z:.
      export WINEPATH="Z:${dlls//\//\\}"
      # One wineserver for the prefix until `wineserver -k`: by default it exits 3 s after its
      # last client, and a test binary started just then failed with "wine client error:0:
      # recvmsg: Connection reset by peer". Starting it when one runs already does nothing.
      mkdir -p "$WINEPREFIX"
      wineserver -p 2>/dev/null || true
      ;;
    *)
      echo "cross-env: unknown target ${1:-} (aarch64, riscv64 or windows)" >&2
      return 2
      ;;
  esac
}
