//! The Windows Fibers backend: `CreateFiberEx`, `SwitchToFiber`, `ConvertThreadToFiberEx`.
//!
//! Fibers are Windows' own coroutines, and this is how QEMU's coroutines run on Windows. It is
//! the portable yardstick there, as `ucontext` is on Unix: `SwitchToFiber` is a call into
//! kernel32 that saves and restores every callee-saved register, `xmm6`–`xmm15` and the TEB's
//! stack fields, with the floating-point control state too when the fiber asks for it.
//!
//! Windows allocates each fiber's stack itself (reserved, and committed as it grows, like a
//! thread's), so a coroutine does not run on the stack mapping of `crate::stack`: that mapping
//! holds only the control block and the closure, and owns the fiber. A fiber is created with its
//! stack (`new_fiber`) and lives as long as it, through the pool; it runs one coroutine after
//! another:
//!
//! * the first `resume` of a coroutine switches to its stack's fiber, which is either fresh
//!   (it starts in [`fiber_main`]) or waiting in `fiber_main` where the previous coroutine on it
//!   finished; either way `fiber_main` runs the new coroutine's entry function, then switches
//!   back to the enterer and waits for the next;
//! * `suspend` and a later `resume` are plain `SwitchToFiber`s.
//!
//! A fiber can only switch from a fiber, so the first `resume` on a thread converts the thread
//! (`ConvertThreadToFiberEx`), unless it already is one, and converts it back when the thread
//! exits. The fiber being entered learns its context from a thread-local set by `resume`
//! (`CreateFiberEx`'s parameter is fixed when the fiber is created, before any context exists).
//!
//! The floating-point control state (MXCSR, x87 control word) belongs to the thread by default,
//! as with the asm backend; with the `fp-state` feature each coroutine has its own, saved and
//! restored around each `SwitchToFiber` here (`arch::x86_64_fp`). `FIBER_FLAG_FLOAT_SWITCH`
//! promises the same, but wine 8 does not keep it (a rounding mode set in one fiber showed in
//! the other), so the backend does not depend on it.
//!
//! May import: `stack` (the fiber of the stack `init` prepares), `arch::x86_64_fp`, `local`.

use crate::local::{local, LocalWord};
use crate::stack::Stack;
use core::ffi::c_void;
use std::cell::Cell;
use std::io;
use windows_sys::Win32::System::Threading::{
    ConvertFiberToThread, ConvertThreadToFiberEx, CreateFiberEx, IsThreadAFiber, SwitchToFiber,
};

/// No stack below the `top` given to [`Context::init`] is used: the coroutine runs on its fiber's
/// own stack.
pub(crate) const INIT_STACK: usize = 0;

/// The function a fresh coroutine starts in, given its context pointer; when it returns, the
/// coroutine is finished.
pub(crate) type Entry = extern "C" fn(*mut Context);

/// The fibers of one coroutine and of its enterer.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Context {
    /// The fiber the coroutine runs on (its stack's).
    fiber: *mut c_void,
    /// The enterer's fiber while the coroutine runs.
    link: *mut c_void,
    /// What the coroutine's first resume runs; taken then.
    main: Option<Entry>,
}

/// The flags every fiber and converted thread is made with: none (see the module
/// documentation for the floating-point state).
const FLAGS: u32 = 0;

/// Runs `switch` between a save of the floating-point control state and its restore when the
/// `fp-state` feature asks for them; otherwise just `switch`.
#[inline(always)]
fn keeping_fp_state(switch: impl FnOnce()) {
    #[cfg(feature = "fp-state")]
    let fp = crate::arch::x86_64_fp::FpState::save();
    switch();
    #[cfg(feature = "fp-state")]
    fp.restore();
}

local! {
    /// The context of the coroutine being entered, for a fiber that starts a coroutine.
    static ENTERING: *mut Context;
}

thread_local! {
    /// Whether this thread is a fiber, and whether we made it one (to undo at thread exit).
    static THREAD_FIBER: ThreadFiber = const { ThreadFiber { state: Cell::new(0) } };
}

/// This thread's conversion to a fiber: 0 unknown, 1 a fiber already (someone else's doing),
/// 2 converted by us.
struct ThreadFiber {
    state: Cell<u8>,
}

impl Drop for ThreadFiber {
    fn drop(&mut self) {
        if self.state.get() == 2 {
            // SAFETY: the thread is exiting on its own stack (its original fiber), which we
            // converted; turning it back frees the fiber data Windows allocated for it.
            unsafe { ConvertFiberToThread() };
        }
    }
}

/// Makes sure the running thread is a fiber, so that it can switch to one.
#[inline]
fn ensure_thread_is_fiber() {
    let known = THREAD_FIBER
        .try_with(|t| t.state.get() != 0)
        .unwrap_or(false);
    if !known {
        convert_thread();
    }
}

#[cold]
fn convert_thread() {
    // SAFETY: IsThreadAFiber reads this thread's TEB; converting a thread that is not a fiber
    // yet is what ConvertThreadToFiberEx is for.
    let state = unsafe {
        if IsThreadAFiber() != 0 {
            1
        } else if !ConvertThreadToFiberEx(core::ptr::null(), FLAGS).is_null() {
            2
        } else {
            panic!(
                "costack: cannot convert this thread to a fiber: {}",
                io::Error::last_os_error()
            );
        }
    };
    // A thread whose thread-locals are gone is exiting: it stays converted (Windows frees the
    // fiber data with the thread).
    let _ = THREAD_FIBER.try_with(|t| t.state.set(state));
}

/// The running fiber (`GetCurrentFiber`, which winnt.h defines inline as this read of the TEB's
/// `FiberData`).
#[inline(always)]
fn current_fiber() -> *mut c_void {
    let fiber: *mut c_void;
    // SAFETY: reading one word of this thread's TEB through gs.
    unsafe {
        core::arch::asm!(
            "mov {}, gs:[0x20]",
            out(reg) fiber,
            options(nostack, readonly, preserves_flags)
        );
    }
    fiber
}

/// Creates the fiber that will run the coroutines of a stack of `size` bytes.
pub(crate) fn new_fiber(size: usize) -> io::Result<*mut c_void> {
    // SAFETY: creating a fiber that starts in `fiber_main` (which never returns) with a stack
    // reserved by Windows; the default commit size comes from the executable.
    let fiber = unsafe { CreateFiberEx(0, size, FLAGS, Some(fiber_main), core::ptr::null()) };
    if fiber.is_null() {
        Err(io::Error::last_os_error())
    } else {
        Ok(fiber)
    }
}

/// Where every fiber starts, and where it waits between coroutines: runs the entry function of
/// the coroutine being entered, then switches back to its enterer. It never returns (returning
/// from a fiber's start routine ends the thread).
unsafe extern "system" fn fiber_main(_: *mut c_void) {
    loop {
        let ctx = ENTERING.load();
        // SAFETY: `resume` set ENTERING to the context it switches into, which was prepared by
        // `init` on this fiber's stack and stays put until the coroutine finishes.
        let main = unsafe { (*ctx).main.take() }.expect("costack: fiber entered before init");
        main(ctx);
        // SAFETY: the coroutine has finished; `link` is the fiber of the enterer that waits in
        // `resume`. This fiber is only switched to again by the first resume of a later
        // coroutine on the same stack.
        unsafe { SwitchToFiber((*ctx).link) };
    }
}

impl Context {
    /// A context that has not been prepared yet.
    pub(crate) const fn new() -> Context {
        Context {
            fiber: core::ptr::null_mut(),
            link: core::ptr::null_mut(),
            main: None,
        }
    }

    /// Prepares a fresh coroutine to run on `stack`'s fiber; its first resume calls `main` with
    /// this context's address.
    ///
    /// # Safety
    /// `stack` has its fiber, which is not running, and `self` must stay at this address until
    /// the coroutine finishes.
    pub(crate) unsafe fn init(&mut self, _top: *mut u8, stack: &Stack, main: Entry) {
        self.fiber = stack.fiber();
        self.link = core::ptr::null_mut();
        self.main = Some(main);
    }
}

/// Switches from the enterer into the coroutine; returns when it yields or finishes.
///
/// # Safety
/// `ctx` was prepared by `init`, its coroutine is suspended or not started, and it switches back
/// only through [`suspend`] or by finishing.
#[inline]
pub(crate) unsafe fn resume(ctx: *mut Context) {
    ensure_thread_is_fiber();
    ENTERING.store(ctx);
    // SAFETY: the thread is a fiber, so `current_fiber` is the running one, which waits here
    // until the coroutine switches back; the coroutine's fiber is not running (contract).
    unsafe {
        (*ctx).link = current_fiber();
        keeping_fp_state(|| SwitchToFiber((*ctx).fiber));
    }
}

/// Switches from the running coroutine back to its enterer; returns `ctx` when entered again.
///
/// # Safety
/// Must run on the coroutine's own fiber, with its own `ctx`, entered by [`resume`].
#[inline]
pub(crate) unsafe fn suspend(ctx: *mut Context) -> *mut Context {
    // SAFETY: `link` is the fiber of the enterer, waiting in `resume`.
    keeping_fp_state(|| unsafe { SwitchToFiber((*ctx).link) });
    ctx
}
