//! The context switch for AArch64 (AAPCS64, Linux), in assembly.
//!
//! # Design
//!
//! The same design as the x86_64 switch (see `x86_64.rs`), in AArch64's terms. A switch saves
//! what AAPCS64 says a callee must preserve — `sp`, `x19`–`x29`, the link register `x30` (`lr`)
//! and the low halves of `v8`–`v15` (`d8`–`d15`) — and nothing else: no signal mask (glibc's
//! `swapcontext` makes a system call for it), no caller-saved register. The two inline-assembly
//! blocks below declare `x20`–`x28`, `lr` and, through `clobber_abi("C")`, every caller-saved
//! register and all of `v0`–`v31` clobbered, so the compiler spills exactly the values that are
//! live across the switch — `d8`–`d15` only when they hold something. `x19` (LLVM's base pointer)
//! and `x29` (the frame pointer) cannot be declared clobbered in Rust inline assembly, so they
//! are stored and loaded by hand.
//!
//! ## Call and return stay balanced
//!
//! AArch64 predicts `ret` with a return-address stack that `bl`/`blr` push and `ret` pops. The
//! enterer enters the coroutine with `blr` (to its resume address) and the coroutine leaves with
//! `ret` (to the enterer's link register), so each enter pairs one branch-with-link with one
//! return, as on x86_64. The same caveat holds: it stays right when a coroutine yields at the
//! depth at which it was resumed.
//!
//! ## The context
//!
//! Unlike x86_64's `call`, `blr` leaves the return address in a register, not on the stack, so
//! the enterer's side of the switch lives in the `Context` itself: the four words of
//! `link_register.rs` (shared with riscv64), `sp`/`pc` of the suspended coroutine at offsets 0
//! and 8 and `link_sp`/`link_ret` of the running coroutine's enterer at 16 and 24, each pair
//! moved by one `ldp`/`stp`:
//!
//! ```text
//!   enterer's stack (any stack)               coroutine's stack (suspended)
//!   +--------------------------+              +--------------------------+
//!   | enterer's frame          |              | coroutine frames ...     |
//!   | saved x19                |              | saved x19                |
//!   | saved x29                | <- link_sp   | saved x29                | <- sp
//!   +--------------------------+              +--------------------------+
//!   link_ret: after the enterer's `blr`       pc: after the coroutine's last yield
//! ```
//!
//! Enter (`resume`): store `x29`, `x19` below `sp`; load `sp`/`pc` of the context into `x9`/`x10`;
//! `blr x10`. The resume code stores the enterer's `sp` and `lr` into `link_sp`/`link_ret`, moves
//! `sp` to `x9`, loads the coroutine's `x29`/`x19` and carries on after its last yield.
//!
//! Yield (`suspend`): store `x29`, `x19`; store `sp` and the resume address into `sp`/`pc`; load
//! `sp` and `lr` from `link_sp`/`link_ret`; `ret` into the enterer, which loads its own `x29`/`x19`.
//!
//! A round trip (enter and yield) is 15 instructions of switch, 9 of them loads and stores of
//! register pairs.
//!
//! ## A fresh coroutine
//!
//! `init` sets `pc` to `costack_trampoline` and `sp` to 16 bytes below the 16-byte aligned top of
//! the stack, where it stores the entry function. The trampoline records `link_sp`/`link_ret`,
//! moves onto the stack, keeps the context pointer in `x19` (callee saved, so every frame above
//! preserves it), clears `x29` (no frame chain below this frame) and calls the entry function.
//! When that returns the closure is done and every value on the stack dropped; the trampoline
//! loads the enterer's `sp` and `lr` and returns to it one last time.
//!
//! ## Backtraces cross the switch
//!
//! The trampoline's DWARF call-frame information says that its caller is the enterer: the
//! canonical frame address is `[x19 + 16] + 16` (the enterer's `sp` before it stored `x29` and
//! `x19`), `x29` is at CFA-16, `x19` at CFA-8, and the return address (`x30`) is stored at
//! `x19 + 24` (`link_ret`, a `DW_CFA_expression` rule). So `std::backtrace`, panics with
//! `RUST_BACKTRACE=1` and gdb walk from the coroutine's frames into the code that entered it.
//!
//! ## Floating-point control state
//!
//! AAPCS64 makes FPCR's control fields (rounding mode, flush-to-zero, default NaN) callee-saved.
//! As on x86_64 the switch leaves them to the thread by default and the `fp-state` feature saves
//! and restores FPCR around every switch (glibc's `swapcontext`, the `ucontext` backend, saves it
//! too).
//!
//! May import: `link_register` (the context, shared with the other CPU whose calls return
//! through a register). The entry function every coroutine starts in comes from the caller of
//! `init`, so this file does not name it.

use core::arch::{asm, global_asm};

pub(crate) use super::link_register::{Context, Entry, INIT_STACK};

/// One half of the switch: `asm!` with the context pointer in `x0` and, declared clobbered,
/// every register the other side may change — all but `sp`, `x19` and `x29` (saved by hand).
/// Both halves must declare the same set, so they share it here.
macro_rules! switch_asm {
    ($ctx:expr; $($code:literal),* $(,)?) => {
        asm!(
            $($code,)*
            inout("x0") $ctx => _,
            out("x20") _, out("x21") _, out("x22") _, out("x23") _, out("x24") _,
            out("x25") _, out("x26") _, out("x27") _, out("x28") _,
            clobber_abi("C"),
        )
    };
}

/// Switches from the enterer into the coroutine whose context is `ctx`, and returns when that
/// coroutine yields or finishes.
///
/// # Safety
/// `ctx` must be a context prepared by [`Context::init`] whose coroutine is suspended (or not yet
/// started), not running anywhere, with a live stack; the coroutine code it runs must only
/// switch back through [`suspend`] with the same `ctx`, or by returning from its entry function.
#[inline(always)]
pub(crate) unsafe fn resume(ctx: *mut Context) {
    // SAFETY: see the function's contract. Every register but sp/x19/x29 is declared clobbered
    // because the coroutine runs arbitrary code before it switches back; x19 and x29 are saved
    // on our stack by hand (AArch64 Linux has no red zone, and `sp` stays 16-byte aligned).
    unsafe {
        switch_asm!(ctx;
            "stp x29, x19, [sp, #-16]!", // x29 and x19 cannot be clobbers: save them here
            "ldp x9, x10, [x0]",         // x9 = the coroutine's sp, x10 = its resume address
            "blr x10",                   // lr = the next instruction; into the coroutine
            // The coroutine has yielded or finished with a `ret` to here; sp is ours again.
            "ldp x29, x19, [sp], #16",
        );
    }
}

/// Suspends the running coroutine (whose context is `ctx`) and returns to its enterer; returns
/// `ctx` when the coroutine is entered again.
///
/// # Safety
/// Must be called on the coroutine's own stack, while it runs, with its own `ctx`, whose
/// `link_sp`/`link_ret` were set by the [`resume`] that entered it.
#[inline(always)]
pub(crate) unsafe fn suspend(ctx: *mut Context) -> *mut Context {
    // SAFETY: see the function's contract. When we are resumed, x0 holds `ctx` again (the
    // enterer passes it) and x9 our saved sp; every other register holds the enterer's values,
    // so all but sp/x19/x29 are declared clobbered and x19/x29 are reloaded from our stack.
    unsafe {
        switch_asm!(ctx;
            "stp x29, x19, [sp, #-16]!",
            "adr x10, 2f",               // where the next enter continues us
            "mov x11, sp",
            "stp x11, x10, [x0]",        // ctx.sp, ctx.pc
            "ldp x11, x30, [x0, #16]",   // the enterer's sp and return address
            "mov sp, x11",
            "ret",                       // into the enterer, after its `blr`
            // Entered again by `blr x10`: sp = the enterer's, x0 = ctx, x9 = ctx.sp, lr = the
            // enterer's return address.
            "2:",
            "mov x11, sp",
            "stp x11, x30, [x0, #16]",   // ctx.link_sp, ctx.link_ret
            "mov sp, x9",                // onto our stack
            "ldp x29, x19, [sp], #16",
        );
    }
    ctx
}

/// The callee-saved floating-point control state: FPCR.
#[cfg(feature = "fp-state")]
pub(crate) struct FpState {
    fpcr: u64,
}

#[cfg(feature = "fp-state")]
impl FpState {
    #[inline(always)]
    pub(crate) fn save() -> FpState {
        let fpcr: u64;
        // SAFETY: reading FPCR has no side effect.
        unsafe { asm!("mrs {}, fpcr", out(reg) fpcr, options(nomem, nostack, preserves_flags)) };
        FpState { fpcr }
    }

    #[inline(always)]
    pub(crate) fn restore(&self) {
        // SAFETY: writing back a value read from FPCR on this thread.
        unsafe {
            asm!("msr fpcr, {}", in(reg) self.fpcr, options(nomem, nostack, preserves_flags))
        };
    }
}

// The trampoline. Entered by `blr x10` from `resume` with x0 = ctx, x9 = ctx.sp (the slot that
// holds the entry function) and lr = the enterer's return address, on the enterer's stack.
// DWARF CFI describes the enterer as this frame's caller (see module docs):
//   DW_CFA_def_cfa_expression: DW_OP_breg19 (x19) +16; DW_OP_deref; DW_OP_plus_uconst 16
//   DW_CFA_expression x30: DW_OP_breg19 +24 (ctx.link_ret); x29 at CFA-16, x19 at CFA-8.
global_asm!(
    ".text",
    ".p2align 4",
    ".globl costack_trampoline",
    ".hidden costack_trampoline",
    ".type costack_trampoline,%function",
    "costack_trampoline:",
    ".cfi_startproc",
    // 0x0f DW_CFA_def_cfa_expression, length 5: 0x83 DW_OP_breg19 16, 0x06 DW_OP_deref,
    // 0x23 DW_OP_plus_uconst 16.
    ".cfi_escape 0x0f, 0x05, 0x83, 0x10, 0x06, 0x23, 0x10",
    // 0x10 DW_CFA_expression, register 30, length 2: 0x83 DW_OP_breg19 24.
    ".cfi_escape 0x10, 0x1e, 0x02, 0x83, 0x18",
    ".cfi_offset x29, -16",
    ".cfi_offset x19, -8",
    "mov x11, sp",
    "stp x11, x30, [x0, #16]", // ctx.link_sp, ctx.link_ret
    "mov sp, x9",              // onto the fresh stack (16-byte aligned)
    "mov x19, x0",             // keep ctx in a callee-saved register for the CFI
    "mov x29, xzr",            // no frame-pointer chain below this frame
    "ldr x10, [x9]",           // the entry function, stored by init
    "blr x10",                 // entry(ctx): runs the closure, returns when it is done
    // Finished: leave for good. Returning from `entry` popped the predictor's entry for the
    // `blr` above, so this `ret` pops the enterer's and is predicted right.
    "ldp x11, x30, [x19, #16]",
    "mov sp, x11",
    "ret",
    ".cfi_endproc",
    ".size costack_trampoline, .-costack_trampoline",
);
