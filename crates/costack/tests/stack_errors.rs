//! When a stack cannot be mapped, `try_` constructors say which limit was hit and the plain
//! constructors panic with that message. Each case runs in a child process (this test binary
//! re-executed), because exhausting a process-wide limit would break tests running beside it.

use costack::{Builder, Coroutine, StackErrorKind};

const CHILD_ENV: &str = "COSTACK_STACK_ERROR_CHILD";

#[path = "common/child.rs"]
mod child;

/// Re-runs this test binary with only `test` selected and the child role set; returns
/// (success, stdout + stderr).
fn run_child(test: &str, role: &str) -> (bool, String) {
    let (status, out) = child::run_child(CHILD_ENV, test, role);
    (status.success(), out)
}

fn role() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

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

#[test]
fn map_count_limit_is_named() {
    match role().as_deref() {
        Some("map-count") => {
            let max: usize = std::fs::read_to_string("/proc/sys/vm/max_map_count")
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            if max > 200_000 {
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
            let (ok, out) = run_child("map_count_limit_is_named", "map-count");
            assert!(ok, "{out}");
            if out.contains("SKIPPED") {
                eprintln!("map_count_limit_is_named skipped: {out}");
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
