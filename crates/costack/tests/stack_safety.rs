//! Stack safety and debugging: overflow reports, introspection, stack usage, memory given back
//! by the pool. Crashing cases run in a child process (this test binary, re-executed).

use costack::{introspect, pool, yield_now, Builder, Coroutine};
use std::process::ExitStatus;

const CHILD_ENV: &str = "COSTACK_STACK_SAFETY_CHILD";

#[path = "common/child.rs"]
mod child;

fn run_child(test: &str, role: &str) -> (std::process::ExitStatus, String) {
    child::run_child(CHILD_ENV, test, role)
}

fn role() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

/// Whether a child ended by `abort()`: SIGABRT on Unix; on Windows Rust's `abort` is a
/// `__fastfail`, which ends the process with STATUS_STACK_BUFFER_OVERRUN.
fn aborted(status: &ExitStatus) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        status.signal() == Some(libc::SIGABRT)
    }
    #[cfg(windows)]
    {
        status.code() == Some(0xC000_0409_u32 as i32)
    }
}

/// Whether a child died of an invalid memory access that nothing handled: SIGSEGV on Unix,
/// STATUS_ACCESS_VIOLATION on Windows.
fn segfaulted(status: &ExitStatus) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        status.signal() == Some(libc::SIGSEGV)
    }
    #[cfg(windows)]
    {
        status.code() == Some(0xC000_0005_u32 as i32)
    }
}

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse_forever(depth: u64) -> u64 {
    let mut pad = [depth; 64];
    std::hint::black_box(&mut pad);
    1 + recurse_forever(depth + 1) + pad[3]
}

#[test]
fn coroutine_overflow_names_the_coroutine_and_aborts() {
    if role().as_deref() == Some("overflow") {
        let co = Builder::new()
            .stack_size(64 * 1024)
            .name("runaway")
            .create(|| recurse_forever(0));
        let _ = co.enter();
        unreachable!("the overflow must not return");
    }
    if costack::BACKEND == "fibers" && std::env::var_os("COSTACK_UNDER_WINE").is_some() {
        // wine 8 commits a fiber's whole stack and puts one guard page at its bottom, so the
        // overflow is only seen on the last page, which cannot hold the exception dispatch:
        // wine ends the thread ("stack overflow ... bytes"), as it does for an overflowing
        // thread, before any handler runs. Windows grows a fiber's stack page by page and
        // raises the overflow with the thread's guaranteed reserve still free.
        eprintln!("SKIPPED UNDER WINE: a fiber's stack overflow cannot be delivered by wine 8");
        return;
    }
    let (status, out) = run_child(
        "coroutine_overflow_names_the_coroutine_and_aborts",
        "overflow",
    );
    assert!(aborted(&status), "{status:?}\n{out}");
    assert!(
        out.contains("costack: coroutine co")
            && out.contains("\"runaway\" overflowed its stack of 64 KiB"),
        "{out}"
    );
    // The report gives the stack pointer and the stack's bounds (and the fault address, where
    // the system says it: every SIGSEGV, not every Windows EXCEPTION_STACK_OVERFLOW).
    assert!(
        out.contains("stack pointer 0x") && out.contains(", stack 0x"),
        "{out}"
    );
}

/// Moves the stack pointer to `sp` and reads address 0: a fault whose address is not in any
/// guard page, with the stack pointer wherever the caller put it.
///
/// # Safety
/// None: it crashes the process on purpose (in a child).
#[cfg(all(
    unix,
    any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "riscv64"
    )
))]
unsafe fn fault_with_sp_at(sp: usize) -> ! {
    // SAFETY: none; see above. The asm never returns (the read faults, the handler aborts).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::asm!("mov rsp, {}", "xor eax, eax", "mov rax, [rax]", "ud2", in(reg) sp,
            options(noreturn))
    }
    // SAFETY: as above.
    #[cfg(target_arch = "aarch64")]
    unsafe {
        std::arch::asm!("mov sp, {}", "mov x9, xzr", "ldr x9, [x9]", "brk #0", in(reg) sp,
            options(noreturn))
    }
    // SAFETY: as above.
    #[cfg(target_arch = "riscv64")]
    unsafe {
        std::arch::asm!("mv sp, {}", "ld t0, 0(zero)", "unimp", in(reg) sp, options(noreturn))
    }
}

/// A frame larger than the guard page leaves the stack pointer below the stack without touching
/// the guard; the handler recognises the overflow from the interrupted stack pointer, which it
/// reads from each CPU's machine context. (Unix: on Windows every frame larger than a page is
/// probed page by page, `___chkstk_ms`, so an overflow always touches the guard band first.)
#[cfg(all(
    unix,
    any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "riscv64"
    )
))]
#[test]
fn overflow_is_recognised_from_the_stack_pointer() {
    if role().as_deref() == Some("sp-below") {
        use std::cell::Cell;
        use std::rc::Rc;
        let sp = Rc::new(Cell::new(0usize));
        let sp2 = sp.clone();
        let co = Builder::new()
            .stack_size(64 * 1024)
            .name("sp-below")
            // SAFETY: none; this crashes on purpose, in a child process.
            .create(move || unsafe { fault_with_sp_at(sp2.get()) });
        // 64 bytes below the usable stack: inside its guard page.
        sp.set(co.stack_bounds().0 as usize - 64);
        let _ = co.enter();
        unreachable!("the fault must not return");
    }
    let (status, out) = run_child("overflow_is_recognised_from_the_stack_pointer", "sp-below");
    assert!(aborted(&status), "{status:?}\n{out}");
    assert!(
        out.contains("\"sp-below\" overflowed its stack of 64 KiB (fault at 0x0000000000000000, stack pointer 0x"),
        "{out}"
    );
}

#[test]
fn thread_stack_overflow_is_still_reported_by_rust() {
    if role().as_deref() == Some("thread-overflow") {
        // Create a coroutine first so that our handler is installed.
        let _ = Coroutine::new(|| ()).enter();
        std::thread::Builder::new()
            .name("deep-thread".into())
            .stack_size(128 * 1024)
            .spawn(|| recurse_forever(0))
            .unwrap()
            .join()
            .unwrap();
        unreachable!();
    }
    let (status, out) = run_child(
        "thread_stack_overflow_is_still_reported_by_rust",
        "thread-overflow",
    );
    assert!(!out.contains("costack: coroutine"), "{out}");
    // Under wine 8 a thread that overflows its stack is ended by wine itself ("stack overflow
    // ... bytes" in its log; the same without costack), before any handler runs, so Rust's
    // report is not printed there: the child fails, and the coroutine handler stays out of it.
    if std::env::var_os("COSTACK_UNDER_WINE").is_some() {
        assert!(!status.success(), "{status:?}\n{out}");
        return;
    }
    assert!(aborted(&status), "{status:?}\n{out}");
    assert!(out.contains("has overflowed its stack"), "{out}");
}

#[test]
fn other_segfaults_go_to_the_previous_handler() {
    if role().as_deref() == Some("null-deref") {
        let _ = Coroutine::new(|| ()).enter();
        let co = Coroutine::new(|| {
            // SAFETY: none; this deliberately faults (in a child process) to test the handler.
            unsafe { std::ptr::read_volatile(std::ptr::dangling::<u64>()) }
        });
        let _ = co.enter();
        unreachable!();
    }
    let (status, out) = run_child("other_segfaults_go_to_the_previous_handler", "null-deref");
    // Under wine an unhandled fault starts wine's debugger, which reports it ("Unhandled
    // exception: page fault ...") and, on a fiber's stack, crashes itself with another status.
    let wine_reported = std::env::var_os("COSTACK_UNDER_WINE").is_some()
        && out.contains("Unhandled exception: page fault on read access");
    assert!(segfaulted(&status) || wine_reported, "{status:?}\n{out}");
    assert!(!out.contains("overflowed"), "{out}");
}

#[test]
fn introspection_lists_live_coroutines() {
    let a = Builder::new().name("lister-a").create(yield_now);
    let b = Builder::new()
        .name("lister-b")
        .stack_size(64 * 1024)
        .create(|| ());
    let _ = a.enter();
    let inside = Coroutine::new(|| {
        introspect::coroutines()
            .into_iter()
            .filter(|c| {
                c.name.as_deref() == Some("lister-a") || c.state == introspect::State::Entered
            })
            .map(|c| (c.name, c.state))
            .collect::<Vec<_>>()
    });
    let seen = inside.enter().finished().unwrap();
    assert!(
        seen.contains(&(Some("lister-a".into()), introspect::State::Suspended)),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|(n, s)| n.is_none() && *s == introspect::State::Entered),
        "{seen:?}"
    );
    let all = introspect::coroutines();
    let bi = all.iter().find(|c| c.id == b.id()).unwrap();
    assert_eq!(bi.state, introspect::State::Ready);
    assert_eq!(bi.stack_size, 64 * 1024);
    let b_id = b.id();
    drop(b);
    assert!(
        introspect::coroutines().iter().all(|c| c.id != b_id),
        "freed ones leave the list"
    );
}

#[cfg(all(feature = "stack-usage", not(costack_fibers)))]
#[test]
fn stack_usage_high_water_mark() {
    let co = Coroutine::new(|| {
        let mut big = [1u8; 100 * 1024];
        std::hint::black_box(&mut big);
        yield_now();
    });
    let _ = co.enter();
    let used = co.stack_used().unwrap();
    assert!((100 * 1024..200 * 1024).contains(&used), "{used}");
    drop(co);
    assert!(pool::max_stack_used().unwrap() >= 100 * 1024);
    // A reused stack is measured afresh.
    let small = Coroutine::new(yield_now);
    let _ = small.enter();
    assert!(
        small.stack_used().unwrap() < 16 * 1024,
        "{:?}",
        small.stack_used()
    );
}

/// Without the feature, or on the `fibers` backend (Windows allocates the stacks).
#[cfg(any(not(feature = "stack-usage"), costack_fibers))]
#[test]
fn stack_usage_is_none_without_the_feature() {
    let co = Coroutine::new(|| ());
    assert_eq!(co.stack_used(), None);
    assert_eq!(pool::max_stack_used(), None);
}

/// The page size, which is not 4 KiB on every aarch64 kernel (some use 16 or 64 KiB).
#[cfg(all(unix, not(feature = "stack-usage")))]
fn page_size() -> usize {
    // SAFETY: sysconf only reads a system value.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// Counts the resident pages of `bottom..top` with mincore(2).
#[cfg(all(unix, not(feature = "stack-usage")))]
fn resident_pages(bottom: *const u8, top: *const u8) -> usize {
    let page = page_size();
    let len = top as usize - bottom as usize;
    let mut vec = vec![0u8; len.div_ceil(page)];
    // SAFETY: the range is a mapped coroutine stack (pooled); mincore only reads page tables.
    let r = unsafe { libc::mincore(bottom as *mut _, len, vec.as_mut_ptr()) };
    assert_eq!(r, 0);
    vec.iter().filter(|&&v| v & 1 != 0).count()
}

// Unix: Windows' MEM_RESET gives no residency to count page by page (see stack/windows.rs).
#[cfg(all(unix, not(feature = "stack-usage")))]
#[test]
fn pooled_stacks_beyond_the_watermark_give_memory_back() {
    std::thread::spawn(|| {
        pool::trim();
        pool::set_watermark(2);
        let cos: Vec<_> = (0..6)
            .map(|_| {
                Coroutine::new(|| {
                    let mut big = [7u8; 256 * 1024];
                    std::hint::black_box(&mut big);
                    yield_now();
                })
            })
            .collect();
        for co in &cos {
            let _ = co.enter();
        }
        let bounds: Vec<_> = cos.iter().map(|c| c.stack_bounds()).collect();
        let touched = 256 * 1024 / page_size();
        for &(b, t) in &bounds {
            assert!(
                resident_pages(b, t) >= touched,
                "the coroutine touched 256 KiB"
            );
        }
        drop(cos); // unwinds each and pools its stack
        assert_eq!(pool::len(), 6);
        let resident: Vec<_> = bounds.iter().map(|&(b, t)| resident_pages(b, t)).collect();
        // The first two pooled keep their memory; the rest gave it back, all but the page at the
        // top that holds the control block (on every backend and CPU: no backend keeps its saved
        // contexts there), which records the stack while it is pooled.
        assert!(resident[..2].iter().all(|&r| r >= touched), "{resident:?}");
        assert!(resident[2..].iter().all(|&r| r <= 1), "{resident:?}");
    })
    .join()
    .unwrap();
}
