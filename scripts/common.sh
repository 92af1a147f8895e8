# Shared by the sanitizer, valgrind and benchmark scripts: `source scripts/common.sh` from the
# repository root.
#
#   test_binaries CARGO_TEST_ARGS...   builds the named test targets (cargo test --no-run) and
#                                      prints the path of each test executable, one per line
#   asan_test CARGO_TEST_ARGS...       cargo +nightly test under AddressSanitizer (own target dir)
#   valgrind_run BINARY                 runs one test binary under memcheck, failing on any error
#   write_section FILE HEADING TEXT     replaces the section HEADING (a `## ` line) of FILE, up to
#                                      the next `## ` heading, with TEXT, or appends TEXT

# The test executables cargo built for `cargo test ARGS --no-run`, read from its JSON messages.
test_binaries() {
  cargo test "$@" --no-run --message-format=json 2>/dev/null | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["executable"])'
}

# ASan needs nightly, an explicit target (so build scripts and proc macros are not instrumented)
# and the crates' `asan` feature, which announces every coroutine switch to it.
asan_test() {
  RUSTFLAGS="-Zsanitizer=address" CARGO_TARGET_DIR=target/asan \
    cargo +nightly test --features asan --target x86_64-unknown-linux-gnu "$@"
}

# COSTACK_UNDER_VALGRIND tells the tests that time themselves to allow for valgrind's slowness.
valgrind_run() {
  echo "== valgrind $(basename "$1")${VALGRIND_LABEL:+, $VALGRIND_LABEL}"
  COSTACK_UNDER_VALGRIND=1 valgrind --error-exitcode=1 --quiet --leak-check=no \
    --track-origins=no "$1" --test-threads=2 -q
}

# Replaces one `## ` section of a Markdown file (BENCHMARKS.md) with new text, or appends it;
# nothing else in the file changes.
write_section() {
  local out=$1 heading=$2 text=$3 tmp
  touch "$out"
  tmp=$(mktemp)
  SECTION=$text HEADING=$heading awk '
      BEGIN { skipping = 0; done = 0; section = ENVIRON["SECTION"]; heading = ENVIRON["HEADING"] }
      /^## / {
          if ($0 == heading) { skipping = 1; if (!done) { print section; print ""; done = 1 }; next }
          else if (skipping) skipping = 0
      }
      !skipping { print }
      END { if (!done) { print ""; print section } }
  ' "$out" >"$tmp"
  mv "$tmp" "$out"
}
