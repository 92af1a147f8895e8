//! Stack-overflow reports.
//!
//! A coroutine that runs off the end of its stack touches the guard page below it, and the
//! kernel sends `SIGSEGV`. Left alone that is a bare "Segmentation fault" with no hint of which
//! coroutine, or that it was an overflow at all. So the first coroutine a thread creates
//! installs (once per process) a `SIGSEGV` handler that
//!
//! * runs on an alternate signal stack (the faulting stack is exhausted by definition; std gives
//!   its own threads one, and we give one to any other thread that creates a coroutine),
//! * recognises only an overflow of the coroutine running on this thread — it reads the running
//!   coroutine from a plain thread-local pointer, which is safe in a signal handler: the fault
//!   address (`si_addr`) lies in its guard page, or the interrupted stack pointer (read from the
//!   signal's machine context, where each CPU keeps it differently) has gone below its stack
//!   into the guard page or under it, as a frame larger than the guard leaves it — and then
//!   prints which coroutine (id, name) overflowed a stack of what size, with both addresses, and
//!   aborts,
//! * hands every other fault to the handler that was installed before it, so Rust's own report
//!   for an overflowing *thread* stack, or a debugger's or a sanitizer's handler, keeps working.
//!
//! May import: `coroutine::header` and `coroutine::switch` (the running coroutine's control block,
//! read in the signal handler). The builder calls it; it calls nothing above.

use crate::coroutine::header::Header;
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
pub(crate) fn init_thread() {
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
        let h: &Header = unsafe { &*cur };
        let (guard, guard_len) = h.guard_range();
        let bottom = guard + guard_len;
        // SAFETY: the kernel passes the interrupted context for SA_SIGINFO handlers.
        let sp = unsafe { interrupted_sp(uctx) };
        let in_guard = addr >= guard && addr < bottom;
        // Below the usable stack, but no further below the guard than the stack is large: a
        // stack pointer that far away is on some other stack the coroutine switched to.
        let sp_under =
            sp.is_some_and(|sp| sp < bottom && sp >= guard.saturating_sub(h.stack_size()));
        if in_guard || sp_under {
            report_and_abort(h, addr, sp);
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

/// A fixed buffer for composing the report without allocating.
struct Buf {
    bytes: [u8; 512],
    len: usize,
}

impl Buf {
    fn push(&mut self, s: &[u8]) {
        let n = s.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
    }

    fn push_dec(&mut self, mut v: u64) {
        let mut tmp = [0u8; 20];
        let mut i = tmp.len();
        loop {
            i -= 1;
            tmp[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&tmp[i..]);
    }

    fn push_hex(&mut self, v: u64) {
        let mut tmp = [0u8; 16];
        for (i, t) in tmp.iter_mut().enumerate() {
            let nib = (v >> ((15 - i) * 4)) & 0xf;
            *t = b"0123456789abcdef"[nib as usize];
        }
        self.push(b"0x");
        self.push(&tmp);
    }
}

fn report_and_abort(h: &Header, addr: usize, sp: Option<usize>) -> ! {
    let mut b = Buf {
        bytes: [0; 512],
        len: 0,
    };
    let id = h.id().as_u64();
    b.push(b"\ncostack: coroutine co");
    b.push_dec(id >> 40);
    b.push(b".");
    b.push_dec(id & ((1 << 40) - 1));
    if let Some(name) = h.name() {
        b.push(b" \"");
        b.push(name.as_bytes());
        b.push(b"\"");
    }
    b.push(b" overflowed its stack of ");
    b.push_dec((h.stack_size() / 1024) as u64);
    b.push(b" KiB (fault at ");
    b.push_hex(addr as u64);
    if let Some(sp) = sp {
        b.push(b", stack pointer ");
        b.push_hex(sp as u64);
    }
    b.push(b", stack ");
    let (bottom, top) = h.stack_bounds();
    b.push_hex(bottom as u64);
    b.push(b"..");
    b.push_hex(top as u64);
    b.push(b"); aborting. Give it a larger stack with Builder::stack_size.\n");
    // SAFETY: write(2) and abort(3) are async-signal-safe; the buffer is ours.
    unsafe {
        libc::write(2, b.bytes.as_ptr().cast(), b.len);
        libc::abort();
    }
}
