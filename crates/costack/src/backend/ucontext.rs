//! The portable backend: libc's `getcontext`, `makecontext` and `swapcontext`.
//!
//! This is how QEMU's coroutines started out, and it is the yardstick for the assembly
//! backend: `swapcontext` saves and restores the signal mask, which costs two `rt_sigprocmask`
//! system calls per switch. It works wherever libc has these functions, and it is what the test
//! suite runs on in CI beside the assembly backend.
//!
//! A `ucontext_t` is large (968 bytes on x86_64, 4 560 on aarch64, where it has room for the
//! vector registers), so the control block does not hold one. Each saved context lives on the
//! stack of the code it belongs to, for exactly as long as it is needed, and the `Context` only
//! points at them:
//!
//! * the enterer's, in the frame of `resume`, which lasts until the coroutine switches back;
//! * the suspended coroutine's, in the frame of `suspend`, which lasts until it is resumed;
//! * a fresh coroutine's first, written by `makecontext` at the top of its own stack, above
//!   the frames it will run (the stack handed to `makecontext` ends below it).
//!
//! `makecontext` can only pass `int` arguments, so the context pointer is split into two 32-bit
//! halves for the entry function.
//!
//! May import: `stack` (the stack `init` prepares; the entry function comes from its caller).

use crate::stack::Stack;
use core::mem::MaybeUninit;
use libc::ucontext_t;

// The `libc` crate has the ucontext types for riscv64 glibc but not the functions (glibc has
// them); declared here until the crate binds them.
#[cfg(target_arch = "riscv64")]
use self::riscv64_glibc::{getcontext, makecontext, setcontext, swapcontext};
#[cfg(not(target_arch = "riscv64"))]
use libc::{getcontext, makecontext, setcontext, swapcontext};

#[cfg(target_arch = "riscv64")]
mod riscv64_glibc {
    use libc::{c_int, ucontext_t};
    extern "C" {
        pub fn getcontext(ucp: *mut ucontext_t) -> c_int;
        pub fn setcontext(ucp: *const ucontext_t) -> c_int;
        pub fn makecontext(ucp: *mut ucontext_t, func: extern "C" fn(), argc: c_int, ...);
        pub fn swapcontext(oucp: *mut ucontext_t, ucp: *const ucontext_t) -> c_int;
    }
    // glibc's layout: flags, link, stack (24 bytes), a 128-byte sigset, then the 16-aligned
    // mcontext (32 general registers, then the 528-byte F/D/Q state union) at offset 176.
    const _: () = assert!(size_of::<ucontext_t>() == 960);
}

/// The most stack, below the `top` given to [`Context::init`], that `init` uses before the
/// coroutine's first frame: the first context, aligned.
pub(crate) const INIT_STACK: usize = size_of::<ucontext_t>() + 16;

/// The function a fresh coroutine starts in, given its context pointer; when it returns, the
/// coroutine is finished.
pub(crate) type Entry = extern "C" fn(*mut Context);

/// Where one coroutine's two saved machine contexts are.
#[repr(C)]
pub(crate) struct Context {
    /// The coroutine's own context while it is suspended (on its stack).
    co: *mut ucontext_t,
    /// The enterer's context while the coroutine runs (on the enterer's stack).
    link: *mut ucontext_t,
    /// What the first resume runs (set by `init`).
    main: Option<Entry>,
}

impl core::fmt::Debug for Context {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Context(ucontext)")
    }
}

impl Context {
    /// A context that has not been prepared yet.
    pub(crate) const fn new() -> Context {
        Context {
            co: core::ptr::null_mut(),
            link: core::ptr::null_mut(),
            main: None,
        }
    }

    /// Prepares a fresh coroutine whose stack is `bottom..top`; its first resume calls `main`
    /// with this context's address.
    ///
    /// # Safety
    /// `bottom..top` must be writable stack memory not used by anything else, with room for a
    /// `ucontext_t` and the coroutine's frames, and `self` must stay at this address until the
    /// coroutine finishes.
    pub(crate) unsafe fn init(&mut self, top: *mut u8, stack: &Stack, main: Entry) {
        let bottom = stack.bottom();
        self.main = Some(main);
        let ctx = self as *mut Context as usize;
        // The first context goes at the top of the stack; the frames start below it.
        let at = (top as usize - size_of::<ucontext_t>()) & !(align_of::<ucontext_t>().max(16) - 1);
        let uc = at as *mut ucontext_t;
        self.co = uc;
        // SAFETY: `uc` lies inside `bottom..top` (the caller leaves room for it), aligned for a
        // ucontext_t; getcontext fills it and makecontext only rewrites it to run `entry` on
        // `bottom..at`, which the caller guarantees is ours and which ends below it.
        unsafe {
            if getcontext(uc) != 0 {
                panic!(
                    "costack: getcontext failed: {}",
                    std::io::Error::last_os_error()
                );
            }
            (*uc).uc_stack.ss_sp = bottom.cast();
            (*uc).uc_stack.ss_size = at - bottom as usize;
            (*uc).uc_stack.ss_flags = 0;
            (*uc).uc_link = core::ptr::null_mut();
            let entry: extern "C" fn(u32, u32) = entry;
            #[allow(clippy::missing_transmute_annotations)]
            makecontext(
                uc,
                core::mem::transmute::<extern "C" fn(u32, u32), extern "C" fn()>(entry),
                2,
                (ctx >> 32) as u32,
                ctx as u32,
            );
        }
    }
}

/// The first function every coroutine runs: rebuilds the context pointer and calls the main
/// function `init` was given.
extern "C" fn entry(hi: u32, lo: u32) {
    let ctx = (((hi as usize) << 32) | lo as usize) as *mut Context;
    // SAFETY: `ctx` is the context `init` prepared (its address, passed through makecontext),
    // which stays put until the coroutine finishes; nothing else touches `main`.
    let main = unsafe { (*ctx).main }.expect("costack: context entered before init");
    main(ctx);
    // SAFETY: the coroutine is finished and its frames are gone; `link` points at the enterer's
    // context, saved by `resume` in its own frame, which waits for this switch; this stack is
    // never resumed again.
    unsafe {
        setcontext((*ctx).link);
    }
    unreachable!("costack: setcontext returned")
}

/// Switches from the enterer into the coroutine; returns when it yields or finishes.
///
/// # Safety
/// As for the assembly backend: `ctx` was prepared by `init`, its coroutine is suspended or not
/// started, and it switches back only through [`suspend`] or by finishing.
// Not inlined (nor is `suspend`): the saved context (1–4.5 KiB) is then a local of a switch
// that happens, not of every caller that might switch.
#[inline(never)]
pub(crate) unsafe fn resume(ctx: *mut Context) {
    let mut link = MaybeUninit::<ucontext_t>::uninit();
    // SAFETY: `co` points at a valid saved context (from init or from the last suspend, whose
    // frame is still live); `link` is ours and outlives the coroutine's run, since this frame
    // only returns when the coroutine switches back to it.
    unsafe {
        (*ctx).link = link.as_mut_ptr();
        swapcontext(link.as_mut_ptr(), (*ctx).co);
    }
}

/// Switches from the running coroutine back to its enterer; returns `ctx` when entered again.
///
/// # Safety
/// Must run on the coroutine's own stack, with its own `ctx`, entered by [`resume`].
#[inline(never)]
pub(crate) unsafe fn suspend(ctx: *mut Context) -> *mut Context {
    let mut me = MaybeUninit::<ucontext_t>::uninit();
    // SAFETY: `link` points at the enterer's context in the frame of the `resume` that entered
    // us, which waits for this switch; `me` stays in this frame, which lasts until we are
    // resumed from it.
    unsafe {
        (*ctx).co = me.as_mut_ptr();
        swapcontext(me.as_mut_ptr(), (*ctx).link);
    }
    ctx
}
