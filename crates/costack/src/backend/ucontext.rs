//! The portable backend: libc's `getcontext`, `makecontext` and `swapcontext`.
//!
//! This is how QEMU's coroutines started out, and it is the yardstick for the assembly
//! backend: `swapcontext` saves and restores the signal mask, which costs two `rt_sigprocmask`
//! system calls per switch. It works wherever libc has these functions, and it is what the test
//! suite runs on in CI beside the assembly backend.
//!
//! Each coroutine keeps two `ucontext_t`s: its own (while suspended) and its enterer's (while it
//! runs). `makecontext` can only pass `int` arguments, so the context pointer is split into two
//! 32-bit halves for the entry function.
//!
//! May import: nothing of the crate (the entry function comes from the caller of `init`).

use core::mem::MaybeUninit;

/// The function a fresh coroutine starts in, given its context pointer; when it returns, the
/// coroutine is finished.
pub(crate) type Entry = extern "C" fn(*mut Context);

/// The two saved machine contexts of one coroutine.
#[repr(C)]
pub(crate) struct Context {
    /// The coroutine's own context while it is suspended.
    co: MaybeUninit<libc::ucontext_t>,
    /// The enterer's context while the coroutine runs.
    link: MaybeUninit<libc::ucontext_t>,
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
            co: MaybeUninit::uninit(),
            link: MaybeUninit::uninit(),
            main: None,
        }
    }

    /// Prepares a fresh coroutine whose stack is `bottom..top`; its first resume calls `main`
    /// with this context's address.
    ///
    /// # Safety
    /// `bottom..top` must be writable stack memory not used by anything else, and `self` must
    /// stay at this address until the coroutine finishes.
    pub(crate) unsafe fn init(&mut self, top: *mut u8, bottom: *mut u8, main: Entry) {
        self.main = Some(main);
        let ctx = self as *mut Context as usize;
        // SAFETY: getcontext fills the ucontext_t we own; makecontext only rewrites it to run
        // `entry` on the given stack, which the caller guarantees is ours.
        unsafe {
            let uc = self.co.as_mut_ptr();
            if libc::getcontext(uc) != 0 {
                panic!(
                    "costack: getcontext failed: {}",
                    std::io::Error::last_os_error()
                );
            }
            (*uc).uc_stack.ss_sp = bottom.cast();
            (*uc).uc_stack.ss_size = (top as usize & !15) - bottom as usize;
            (*uc).uc_stack.ss_flags = 0;
            (*uc).uc_link = core::ptr::null_mut();
            let entry: extern "C" fn(u32, u32) = entry;
            #[allow(clippy::missing_transmute_annotations)]
            libc::makecontext(
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
    // SAFETY: the coroutine is finished and its frames are gone; `link` holds the enterer's
    // context saved by `resume`, and this stack is never resumed again.
    unsafe {
        libc::setcontext((*ctx).link.as_ptr());
    }
    unreachable!("costack: setcontext returned")
}

/// Switches from the enterer into the coroutine; returns when it yields or finishes.
///
/// # Safety
/// As for the assembly backend: `ctx` was prepared by `init`, its coroutine is suspended or not
/// started, and it switches back only through [`suspend`] or by finishing.
#[inline]
pub(crate) unsafe fn resume(ctx: *mut Context) {
    // SAFETY: both contexts belong to this coroutine; `co` is a valid saved context (from init
    // or from the last suspend), `link` is overwritten with the current one.
    unsafe {
        libc::swapcontext((*ctx).link.as_mut_ptr(), (*ctx).co.as_ptr());
    }
}

/// Switches from the running coroutine back to its enterer; returns when entered again.
///
/// # Safety
/// Must run on the coroutine's own stack, with its own `ctx`, entered by [`resume`].
#[inline]
pub(crate) unsafe fn suspend(ctx: *mut Context) {
    // SAFETY: `link` holds the enterer's context saved by `resume`; `co` receives ours.
    unsafe {
        libc::swapcontext((*ctx).co.as_mut_ptr(), (*ctx).link.as_ptr());
    }
}
