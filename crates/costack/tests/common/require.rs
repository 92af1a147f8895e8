//! Tests whose prerequisite is missing: skipped (with a `SKIPPED` line) on a developer's
//! machine, a failure where `COSTACK_REQUIRE_ALL_TESTS=1` is set (CI). Included with `#[path]`.

#![allow(dead_code)]

/// The switch that turns a skip into a failure.
pub const REQUIRE_ALL_TESTS: &str = "COSTACK_REQUIRE_ALL_TESTS";

/// Whether the environment variable `name` is set, and not empty or `0`.
fn flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0")
}

/// The running test's name (the harness names each test's thread after it).
fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_owned()
}

/// Whether every test must run: `COSTACK_REQUIRE_ALL_TESTS` is set, and not to `0`.
pub fn require_all_tests() -> bool {
    flag(REQUIRE_ALL_TESTS)
}

/// Reports a missing prerequisite: panics naming it when every test must run, otherwise prints
/// `SKIPPED` with the reason, and the caller returns.
#[track_caller]
pub fn skip_or_fail(reason: &str) {
    let test = test_name();
    if require_all_tests() {
        panic!("{test} cannot run: {reason} ({REQUIRE_ALL_TESTS} is set, so this is a failure)");
    }
    eprintln!("SKIPPED {test}: {reason} (set {REQUIRE_ALL_TESTS}=1 to fail instead)");
}

/// Whether the tests run under a CPU emulator (qemu-user, `scripts/cross.sh` sets
/// `COSTACK_EMULATED=1`), which does not emulate some kernel limits.
pub fn emulated() -> bool {
    flag("COSTACK_EMULATED")
}

/// Skips a test that needs something the emulator lacks, loudly, even where every test must
/// run; returns whether it skipped (only ever under emulation).
pub fn skip_under_emulation(reason: &str) -> bool {
    if !emulated() {
        return false;
    }
    // Straight to the process's stderr, past the test harness's capture, so that the skip shows
    // in the log of a passing run.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED UNDER EMULATION {}: {reason}",
        test_name()
    );
    true
}
