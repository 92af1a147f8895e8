//! The switch context shared by the CPUs whose calls leave the return address in a register
//! (`aarch64`'s `lr`, `riscv64`'s `ra`) instead of on the stack: four words, read and written at
//! fixed offsets by each CPU's assembly (`aarch64.rs`, `riscv64.rs`), which also define the
//! trampoline a fresh context starts in.
//!
//! ```text
//!   offset 0   sp        the suspended coroutine's stack pointer
//!   offset 8   pc        where it continues (its resume address)
//!   offset 16  link_sp   the enterer's stack pointer, while the coroutine runs
//!   offset 24  link_ret  the enterer's return address, while the coroutine runs
//! ```
//!
//! A fresh coroutine's `pc` is `costack_trampoline` and its `sp` the 16-byte slot at the
//! 16-byte aligned top of its stack (both ABIs keep `sp` 16-byte aligned), where `init` stores
//! the entry function for the trampoline to call.
//!
//! May import: `stack` (the type of the stack `init` prepares); it names the trampoline symbol
//! that the CPU's file defines.

use crate::stack::Stack;

/// Saved stack pointers and resume addresses of one coroutine; see the module documentation.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Context {
    /// The suspended coroutine's stack pointer.
    sp: *mut u8,
    /// Where the suspended coroutine continues.
    pc: usize,
    /// The enterer's stack pointer while the coroutine runs.
    link_sp: *mut u8,
    /// The enterer's return address while the coroutine runs.
    link_ret: usize,
}

/// The most stack, below the `top` given to [`Context::init`], that `init` uses before the
/// coroutine's first frame (alignment and the slot it stores).
pub(crate) const INIT_STACK: usize = 32;

/// The function a fresh coroutine starts in, given its context pointer; when it returns, the
/// coroutine is finished.
pub(crate) type Entry = extern "C" fn(*mut Context);

extern "C" {
    /// The first resume address of every coroutine (the CPU's file defines it in assembly).
    fn costack_trampoline();
}

impl Context {
    /// A context that has not been prepared yet.
    pub(crate) const fn new() -> Context {
        Context {
            sp: core::ptr::null_mut(),
            pc: 0,
            link_sp: core::ptr::null_mut(),
            link_ret: 0,
        }
    }

    /// Prepares a fresh coroutine whose stack frames start below `top`; its first resume calls
    /// `entry` with this context's address.
    ///
    /// # Safety
    /// `top` must point into (or one past) a writable stack region with room below it for the
    /// coroutine's frames, and `self` must stay at this address until the coroutine finishes.
    pub(crate) unsafe fn init(&mut self, top: *mut u8, _stack: &Stack, entry: Entry) {
        let sp = (((top as usize) & !15) - 16) as *mut usize;
        // SAFETY: the caller guarantees `top` is the end of writable stack memory with room
        // below it; `sp` lies 16 to 31 bytes below `top`, inside the stack.
        unsafe { sp.write(entry as usize) };
        self.sp = sp.cast();
        self.pc = costack_trampoline as *const () as usize;
        self.link_sp = core::ptr::null_mut();
        self.link_ret = 0;
    }
}
