//! When a stack cannot be mapped, `try_` constructors say which limit was hit and the plain
//! constructors panic with that message. Each case runs in a child process (this test binary
//! re-executed), because exhausting a process-wide limit would break tests running beside it.

// The limits exhausted here are Linux's (RLIMIT_AS, vm.max_map_count): on Windows only the
// cases at the end run, and the Linux helpers are unused.
#![cfg_attr(windows, allow(dead_code, unused_imports))]

use costack::{Builder, Coroutine, StackErrorKind};

const CHILD_ENV: &str = "COSTACK_STACK_ERROR_CHILD";

#[path = "common/child.rs"]
mod child;
#[path = "common/require.rs"]
mod require;

/// Re-runs this test binary with only `test` selected and the child role set; returns
/// (success, stdout + stderr).
fn run_child(test: &str, role: &str) -> (bool, String) {
    let (status, out) = child::run_child(CHILD_ENV, test, role);
    (status.success(), out)
}

fn role() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

#[cfg(unix)]
#[test]
fn out_of_address_space_is_reported() {
    match role().as_deref() {
        Some("address-space") => {
            // Limit the address space so that a 1 GiB stack cannot be mapped.
            let lim = libc::rlimit {
                rlim_cur: 512 << 20,
                rlim_max: libc::RLIM_INFINITY,
            };
            // SAFETY: setrlimit with a valid struct; lowering our own soft limit.
            assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) }, 0);
            let err = Builder::new()
                .stack_size(1 << 30)
                .try_create(|| ())
                .unwrap_err();
            assert_eq!(err.kind(), StackErrorKind::OutOfMemory);
            println!("TRY_ERROR: {err}");
            let r = std::panic::catch_unwind(|| Builder::new().stack_size(1 << 30).create(|| ()));
            let msg = r.unwrap_err().downcast::<String>().unwrap();
            println!("PANIC: {msg}");
        }
        Some(_) => {}
        None => {
            if require::skip_under_emulation("qemu-user does not apply RLIMIT_AS to the guest") {
                return;
            }
            let (ok, out) = run_child("out_of_address_space_is_reported", "address-space");
            assert!(ok, "{out}");
            assert!(
                out.contains(
                    "TRY_ERROR: cannot create a 1048576 KiB coroutine stack: out of memory"
                ),
                "{out}"
            );
            assert!(
                out.contains("PANIC: costack: cannot create a 1048576 KiB coroutine stack"),
                "{out}"
            );
        }
    }
}

#[cfg(unix)]
#[test]
fn map_count_limit_is_named() {
    match role().as_deref() {
        Some("map-count") => {
            let max = max_map_count();
            if max > MAP_COUNT_TO_EXHAUST {
                println!("SKIPPED: vm.max_map_count is {max}; too high to exhaust quickly");
                return;
            }
            costack::pool::set_capacity(0);
            let mut live = Vec::new();
            let err = loop {
                match Builder::new().stack_size(16 * 1024).try_create(|| ()) {
                    Ok(co) => live.push(co),
                    Err(e) => break e,
                }
                assert!(live.len() < max, "never hit the limit");
            };
            assert_eq!(err.kind(), StackErrorKind::MapCount);
            println!("LIVE: {}", live.len());
            println!("TRY_ERROR: {err}");
            let r = std::panic::catch_unwind(|| Coroutine::new(|| ()));
            let msg = r.unwrap_err().downcast::<String>().unwrap();
            println!("PANIC: {msg}");
        }
        Some(_) => {}
        None => {
            if require::skip_under_emulation(
                "qemu-user reports the host's map-count exhaustion as out of memory",
            ) {
                return;
            }
            // Where every test must run, a limit too high to exhaust is lowered to the kernel's
            // default for the child's run, if we may (root), and restored afterwards.
            let max = max_map_count();
            let _lowered = if max > MAP_COUNT_TO_EXHAUST && require::require_all_tests() {
                match LoweredMapCount::lower(DEFAULT_MAP_COUNT) {
                    Ok(l) => Some(l),
                    Err(e) => {
                        require::skip_or_fail(&format!(
                            "vm.max_map_count is {max}, too high to exhaust quickly, and cannot \
                             be lowered to {DEFAULT_MAP_COUNT} for the test: {e}"
                        ));
                        return;
                    }
                }
            } else {
                None
            };
            let (ok, out) = run_child("map_count_limit_is_named", "map-count");
            assert!(ok, "{out}");
            if let Some(at) = out.find("SKIPPED") {
                let said = out[at..].lines().next().unwrap_or_default();
                require::skip_or_fail(&format!(
                    "the child said {said:?}; where {}=1 is set, the test lowers the limit \
                     itself if it runs as root",
                    require::REQUIRE_ALL_TESTS
                ));
                return;
            }
            assert!(out.contains("TRY_ERROR: cannot create a 16 KiB coroutine stack: the process reached the kernel's limit on memory mappings, vm.max_map_count"), "{out}");
            assert!(out.contains("sysctl -w vm.max_map_count"), "{out}");
            assert!(
                out.contains(
                    "PANIC: costack: cannot create a 1024 KiB coroutine stack: the process reached"
                ),
                "{out}"
            );
        }
    }
}

/// Above this, exhausting the memory mappings would take too long and too much memory.
const MAP_COUNT_TO_EXHAUST: usize = 200_000;

/// The kernel's default `vm.max_map_count`.
const DEFAULT_MAP_COUNT: usize = 65_530;

const MAX_MAP_COUNT: &str = "/proc/sys/vm/max_map_count";

fn max_map_count() -> usize {
    std::fs::read_to_string(MAX_MAP_COUNT)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// `vm.max_map_count` lowered for a while; the old value is written back when dropped.
struct LoweredMapCount(usize);

impl LoweredMapCount {
    fn lower(to: usize) -> Result<LoweredMapCount, String> {
        let old = max_map_count();
        std::fs::write(MAX_MAP_COUNT, format!("{to}\n"))
            .map_err(|e| format!("writing {MAX_MAP_COUNT}: {e} (needs root)"))?;
        let guard = LoweredMapCount(old);
        let now = max_map_count();
        if now != to {
            return Err(format!("{MAX_MAP_COUNT} reads {now} after writing {to}"));
        }
        Ok(guard)
    }
}

impl Drop for LoweredMapCount {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(MAX_MAP_COUNT, format!("{}\n", self.0)) {
            eprintln!("could not restore {MAX_MAP_COUNT} to {}: {e}", self.0);
        }
    }
}

/// Windows: a stack larger than the system can commit (64 TiB) is reported as out of memory,
/// by name, from `try_create`, and as a panic with the same message from `create`.
#[cfg(windows)]
#[test]
fn a_stack_windows_cannot_commit_is_reported() {
    let err = Builder::new()
        .stack_size(1 << 46)
        .try_create(|| ())
        .unwrap_err();
    assert_eq!(err.kind(), StackErrorKind::OutOfMemory, "{err}");
    assert_eq!(err.requested_size(), 1 << 46);
    let text = err.to_string();
    assert!(
        text.starts_with("cannot create a 68719476736 KiB coroutine stack: out of memory"),
        "{text}"
    );
    let r = std::panic::catch_unwind(|| Builder::new().stack_size(1 << 46).create(|| ()));
    let msg = r.unwrap_err().downcast::<String>().unwrap();
    assert!(msg.contains(&text), "{msg}");
}

/// A size that overflows the address space is refused before any system call, everywhere.
#[test]
fn a_stack_size_that_overflows_is_too_large() {
    let err = Builder::new()
        .stack_size(usize::MAX - 4096)
        .try_create(|| ())
        .unwrap_err();
    assert_eq!(err.kind(), StackErrorKind::TooLarge, "{err}");
}
