//! AddressSanitizer fiber annotations (feature `asan`, with `-Zsanitizer=address`).
//!
//! ASan keeps shadow state per stack; when the stack pointer jumps to another stack without
//! warning, it takes the switch for a huge stack frame and reports false errors (or misses
//! real ones). Its fiber interface fixes that: before a switch, `__sanitizer_start_switch_fiber`
//! names the stack we are going to; after it, `__sanitizer_finish_switch_fiber` on the new stack
//! completes the switch and reports the stack we came from. A coroutine remembers that stack
//! (its enterer's) so that it can name it when it yields back.
//!
//! May import: nothing of the crate.

use std::cell::Cell;
use std::ffi::c_void;
use std::ptr;

extern "C" {
    fn __sanitizer_start_switch_fiber(
        fake_stack_save: *mut *mut c_void,
        bottom: *const c_void,
        size: usize,
    );
    fn __sanitizer_finish_switch_fiber(
        fake_stack_save: *mut c_void,
        bottom_old: *mut *const c_void,
        size_old: *mut usize,
    );
}

/// The coroutine side's ASan state, kept in its control block.
pub(crate) struct FiberState {
    /// ASan's fake stack of this coroutine while it is suspended.
    fake: Cell<*mut c_void>,
    /// The enterer's stack, as ASan reported it when we arrived.
    from_bottom: Cell<*const c_void>,
    from_size: Cell<usize>,
}

impl FiberState {
    pub(crate) const fn new() -> FiberState {
        FiberState {
            fake: Cell::new(ptr::null_mut()),
            from_bottom: Cell::new(ptr::null()),
            from_size: Cell::new(0),
        }
    }

    /// On the coroutine's stack, right after a switch into it.
    #[inline]
    pub(crate) fn arrived(&self) {
        let (mut bottom, mut size) = (ptr::null(), 0);
        // SAFETY: completing the switch that the enterer started; out-pointers are ours.
        unsafe { __sanitizer_finish_switch_fiber(self.fake.get(), &mut bottom, &mut size) };
        self.from_bottom.set(bottom);
        self.from_size.set(size);
    }

    /// On the coroutine's stack, right before it yields to its enterer.
    #[inline]
    pub(crate) fn leaving(&self) {
        let mut fake = ptr::null_mut();
        // SAFETY: announcing a switch to the enterer's stack, which ASan told us about.
        unsafe {
            __sanitizer_start_switch_fiber(&mut fake, self.from_bottom.get(), self.from_size.get())
        };
        self.fake.set(fake);
    }

    /// On the coroutine's stack, before its final switch out: the fiber is going away.
    #[inline]
    pub(crate) fn leaving_for_good(&self) {
        // SAFETY: a null save pointer tells ASan this fiber's fake stack can be freed.
        unsafe {
            __sanitizer_start_switch_fiber(
                ptr::null_mut(),
                self.from_bottom.get(),
                self.from_size.get(),
            )
        };
    }
}

/// On the enterer's stack, before switching into a coroutine whose stack is `bottom..+size`.
#[inline]
pub(crate) fn entering(bottom: *const u8, size: usize) -> *mut c_void {
    let mut fake = ptr::null_mut();
    // SAFETY: announcing a switch to a live coroutine stack.
    unsafe { __sanitizer_start_switch_fiber(&mut fake, bottom.cast(), size) };
    fake
}

/// On the enterer's stack, after the coroutine switched back.
#[inline]
pub(crate) fn returned(fake: *mut c_void) {
    // SAFETY: completing the switch back that the coroutine started.
    unsafe { __sanitizer_finish_switch_fiber(fake, ptr::null_mut(), ptr::null_mut()) };
}
