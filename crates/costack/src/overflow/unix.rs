//! Overflow reports on Unix: a `SIGSEGV` handler.
//!
//! A coroutine that runs off the end of its stack touches the guard page below it, and the
//! kernel sends `SIGSEGV`. The first coroutine a thread creates installs (once per process) a
//! handler that
//!
//! * runs on an alternate signal stack (the faulting stack is exhausted by definition; std gives
//!   its own threads one, and we give one to any other thread that creates a coroutine),
//! * recognises only an overflow of the coroutine running on this thread — the fault address
//!   (`si_addr`) lies in its guard page, or the interrupted stack pointer (read from the
//!   signal's machine context, where each CPU keeps it differently) has gone below its stack
//!   (see `is_overflow`) — and then reports it and aborts,
//! * hands every other fault to the handler that was installed before it, so Rust's own report
//!   for an overflowing *thread* stack, or a debugger's or a sanitizer's handler, keeps working.
//!
//! May import: `overflow::report`, `coroutine::switch` (the running coroutine, read in the
//! signal handler).

use super::report::{is_overflow, report};
use crate::coroutine::switch::current_header;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

/// The action that was installed for SIGSEGV before ours (written once, before ours is live).
static mut PREVIOUS: MaybeUninit<libc::sigaction> = MaybeUninit::uninit();
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Size of the alternate signal stacks we create for threads that have none.
const ALT_STACK_SIZE: usize = 64 * 1024;

/// Installs the process-wide handler (once) and makes sure this thread has an alternate signal
/// stack. Called when a thread creates its first coroutine.
pub(super) fn init_thread() {
    static ONCE: Once = Once::new();
    ONCE.call_once(install_handler);
    ensure_alt_stack();
}

fn install_handler() {
    // SAFETY: plain sigaction calls with zero-initialised structs we own. PREVIOUS is written
    // before our handler is installed (the handler only reads it after INSTALLED is set), and
    // never written again.
    unsafe {
        let mut old = MaybeUninit::<libc::sigaction>::zeroed();
        if libc::sigaction(libc::SIGSEGV, std::ptr::null(), old.as_mut_ptr()) != 0 {
            return;
        }
        std::ptr::addr_of_mut!(PREVIOUS).write(old);
        let mut new: libc::sigaction = std::mem::zeroed();
        new.sa_sigaction = on_segv as *const () as usize;
        new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut new.sa_mask);
        INSTALLED.store(true, Ordering::Release);
        if libc::sigaction(libc::SIGSEGV, &new, std::ptr::null_mut()) != 0 {
            INSTALLED.store(false, Ordering::Release);
        }
    }
}

/// An alternate signal stack that this module mapped for the current thread.
struct AltStack {
    base: *mut libc::c_void,
}

impl Drop for AltStack {
    fn drop(&mut self) {
        // SAFETY: disable the alternate stack before unmapping it; the thread is exiting and no
        // signal handler runs on it now (we are not in one).
        unsafe {
            let ss = libc::stack_t {
                ss_sp: std::ptr::null_mut(),
                ss_flags: libc::SS_DISABLE,
                ss_size: ALT_STACK_SIZE,
            };
            libc::sigaltstack(&ss, std::ptr::null_mut());
            libc::munmap(self.base, ALT_STACK_SIZE);
        }
    }
}

thread_local! {
    static OWN_ALT_STACK: std::cell::Cell<Option<AltStack>> = const { std::cell::Cell::new(None) };
}

fn ensure_alt_stack() {
    // SAFETY: querying the current alternate stack into a zeroed struct we own.
    let has = unsafe {
        let mut cur = MaybeUninit::<libc::stack_t>::zeroed();
        libc::sigaltstack(std::ptr::null(), cur.as_mut_ptr()) == 0
            && cur.assume_init().ss_flags & libc::SS_DISABLE == 0
    };
    if has {
        return;
    }
    // SAFETY: mapping fresh anonymous memory and installing it as this thread's alternate signal
    // stack; it stays mapped until the thread-local below drops it at thread exit.
    unsafe {
        let base = libc::mmap(
            std::ptr::null_mut(),
            ALT_STACK_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        );
        if base == libc::MAP_FAILED {
            return;
        }
        let ss = libc::stack_t {
            ss_sp: base,
            ss_flags: 0,
            ss_size: ALT_STACK_SIZE,
        };
        if libc::sigaltstack(&ss, std::ptr::null_mut()) != 0 {
            libc::munmap(base, ALT_STACK_SIZE);
            return;
        }
        let _ = OWN_ALT_STACK.try_with(|s| s.set(Some(AltStack { base })));
    }
}

/// The SIGSEGV handler. Only async-signal-safe work: reading a thread-local pointer and the
/// running coroutine's control block, formatting into a buffer on this (alternate) stack,
/// `write`, `abort`, `sigaction`.
extern "C" fn on_segv(sig: libc::c_int, info: *mut libc::siginfo_t, uctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    let cur = current_header();
    if !cur.is_null() {
        // SAFETY: the running coroutine's header is live while it runs (its enterer holds it).
        let h = unsafe { &*cur };
        // SAFETY: the kernel passes the interrupted context for SA_SIGINFO handlers.
        let sp = unsafe { interrupted_sp(uctx) };
        if is_overflow(h, Some(addr), sp) {
            write_and_abort(report(h, Some(addr), sp).as_bytes());
        }
    }
    chain(sig, info, uctx);
}

/// The stack pointer of the code the signal interrupted, from the machine context the kernel
/// saved; `None` on a CPU whose layout this file does not know.
///
/// # Safety
/// `uctx` must be the context pointer given to an `SA_SIGINFO` handler.
unsafe fn interrupted_sp(uctx: *mut libc::c_void) -> Option<usize> {
    let uc = uctx.cast::<libc::ucontext_t>();
    if uc.is_null() {
        return None;
    }
    // SAFETY: the caller guarantees `uc` is the kernel's saved context for this signal.
    let mc = unsafe { &(*uc).uc_mcontext };
    // The CPU's stack-pointer slot of glibc's `mcontext_t`.
    #[cfg(target_arch = "x86_64")]
    return Some(mc.gregs[libc::REG_RSP as usize] as usize);
    #[cfg(target_arch = "aarch64")]
    return Some(mc.sp as usize);
    // x2 is sp (`__gregs[0]` holds the pc in x0's place).
    #[cfg(target_arch = "riscv64")]
    return Some(mc.__gregs[2] as usize);
    #[cfg(not(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "riscv64"
    )))]
    {
        let _ = mc;
        None
    }
}

/// Passes a fault that is not ours to the previous handler.
fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, uctx: *mut libc::c_void) {
    if !INSTALLED.load(Ordering::Acquire) {
        return;
    }
    // SAFETY: PREVIOUS was written before INSTALLED was set and is never written again.
    let prev = unsafe { std::ptr::addr_of!(PREVIOUS).read().assume_init() };
    let action = prev.sa_sigaction;
    if action == libc::SIG_DFL || action == libc::SIG_IGN {
        // Restore the default action and return: the faulting instruction runs again and the
        // kernel applies it (the process dies of SIGSEGV, as it would have without us).
        // SAFETY: installing the default action for SIGSEGV.
        unsafe {
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(libc::SIGSEGV, &dfl, std::ptr::null_mut());
        }
        return;
    }
    // SAFETY: `action` is the address of the handler that was installed before ours, with the
    // signature its SA_SIGINFO flag says.
    unsafe {
        if prev.sa_flags & libc::SA_SIGINFO != 0 {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                std::mem::transmute(action);
            f(sig, info, uctx);
        } else {
            let f: extern "C" fn(libc::c_int) = std::mem::transmute(action);
            f(sig);
        }
    }
}

/// Writes the report to stderr and aborts; both are async-signal-safe.
fn write_and_abort(report: &[u8]) -> ! {
    // SAFETY: write(2) and abort(3) are async-signal-safe; the buffer is the caller's.
    unsafe {
        libc::write(2, report.as_ptr().cast(), report.len());
        libc::abort();
    }
}
