//! The context switch for RISC-V 64 (LP64D, Linux), in assembly.
//!
//! # Design
//!
//! The same design as the AArch64 switch (see `aarch64.rs`), whose context layout it shares. A
//! switch saves what the RISC-V psABI says a callee must preserve — `sp`, `s0`–`s11`, the return
//! address `ra` and `fs0`–`fs11` — and nothing else. The two inline-assembly blocks below declare
//! `s2`–`s11`, `fs0`–`fs11` and, through `clobber_abi("C")`, `ra` and every caller-saved register
//! clobbered, so the compiler spills exactly the values that are live across the switch. `s0`
//! (the frame pointer) and `s1` (reserved by LLVM) cannot be declared clobbered in Rust inline
//! assembly, so they are stored and loaded by hand. `gp` and `tp` belong to the thread and a
//! coroutine never leaves its thread, so they are left alone.
//!
//! ## Call and return stay balanced
//!
//! RISC-V predicts returns with a return-address stack that a `jalr` writing `ra` pushes and a
//! `jalr` through `ra` (`ret`) pops. The enterer enters the coroutine with `jalr ra, t1` and the
//! coroutine leaves with `ret`, so each enter pairs one push with one pop.
//!
//! ## The context
//!
//! The four words of `link_register.rs`, shared with aarch64: `sp`/`pc` of the suspended
//! coroutine at offsets 0 and 8, `link_sp`/`link_ret` of the running coroutine's enterer at 16
//! and 24.
//!
//! ```text
//!   enterer's stack (any stack)               coroutine's stack (suspended)
//!   +--------------------------+              +--------------------------+
//!   | enterer's frame          |              | coroutine frames ...     |
//!   | saved s1                 |              | saved s1                 |
//!   | saved s0                 | <- link_sp   | saved s0                 | <- sp
//!   +--------------------------+              +--------------------------+
//!   link_ret: after the enterer's `jalr`      pc: after the coroutine's last yield
//! ```
//!
//! Enter (`resume`): store `s0`, `s1` below `sp`; load `sp`/`pc` of the context into `t0`/`t1`;
//! `jalr ra, t1`. The resume code stores the enterer's `sp` and `ra` into `link_sp`/`link_ret`,
//! moves `sp` to `t0`, loads the coroutine's `s0`/`s1` and carries on after its last yield.
//!
//! Yield (`suspend`): store `s0`, `s1`; store `sp` and the resume address into `sp`/`pc`; load
//! `sp` and `ra` from `link_sp`/`link_ret`; `ret` into the enterer, which loads its own `s0`/`s1`.
//!
//! A round trip (enter and yield) is 25 instructions of switch (RISC-V has no paired loads and
//! stores, and the resume address takes two instructions to form).
//!
//! ## A fresh coroutine
//!
//! `init` sets `pc` to `costack_trampoline` and `sp` to 16 bytes below the 16-byte aligned top of
//! the stack, where it stores the entry function. The trampoline records `link_sp`/`link_ret`,
//! moves onto the stack, keeps the context pointer in `s1` (callee saved), clears `s0` (no frame
//! chain below this frame) and calls the entry function. When that returns the closure is done
//! and every value on the stack dropped; the trampoline loads the enterer's `sp` and `ra` and
//! returns to it one last time.
//!
//! ## Backtraces cross the switch
//!
//! The trampoline's DWARF call-frame information says that its caller is the enterer: the
//! canonical frame address is `[s1 + 16] + 16` (the enterer's `sp` before it stored `s0` and
//! `s1`), `s0` is at CFA-16, `s1` at CFA-8, and the return address (`ra`) is stored at `s1 + 24`
//! (`link_ret`, a `DW_CFA_expression` rule).
//!
//! ## Floating-point control state
//!
//! The psABI gives `fcsr` thread storage duration, so the switch leaves it to the thread; the
//! `fp-state` feature saves and restores its rounding-mode field (`frm`) around every switch, as
//! it does MXCSR's and FPCR's control bits on the other CPUs (glibc's `swapcontext`, the
//! `ucontext` backend, saves all of `fcsr`).
//!
//! May import: `link_register` (the context, shared with the other CPU whose calls return
//! through a register). The entry function every coroutine starts in comes from the caller of
//! `init`, so this file does not name it.

use core::arch::{asm, global_asm};

pub(crate) use super::link_register::{Context, Entry, INIT_STACK};

/// One half of the switch: `asm!` with the context pointer in `a0` and, declared clobbered,
/// every register the other side may change — all but `sp`, `s0` and `s1` (saved by hand) and
/// the thread's `gp`/`tp`. Both halves must declare the same set, so they share it here.
macro_rules! switch_asm {
    ($ctx:expr; $($code:literal),* $(,)?) => {
        asm!(
            $($code,)*
            inout("a0") $ctx => _,
            out("s2") _, out("s3") _, out("s4") _, out("s5") _, out("s6") _,
            out("s7") _, out("s8") _, out("s9") _, out("s10") _, out("s11") _,
            out("fs0") _, out("fs1") _, out("fs2") _, out("fs3") _, out("fs4") _,
            out("fs5") _, out("fs6") _, out("fs7") _, out("fs8") _, out("fs9") _,
            out("fs10") _, out("fs11") _,
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
    // SAFETY: see the function's contract. Every register but sp/s0/s1 (and the thread's gp/tp)
    // is declared clobbered because the coroutine runs arbitrary code before it switches back;
    // s0 and s1 are saved on our stack by hand, which stays 16-byte aligned.
    unsafe {
        switch_asm!(ctx;
            "addi sp, sp, -16",     // s0 and s1 cannot be clobbers: save them here
            "sd s0, 0(sp)",
            "sd s1, 8(sp)",
            "ld t0, 0(a0)",         // t0 = the coroutine's sp
            "ld t1, 8(a0)",         // t1 = its resume address
            "jalr ra, 0(t1)",       // ra = the next instruction; into the coroutine
            // The coroutine has yielded or finished with a `ret` to here; sp is ours again.
            "ld s0, 0(sp)",
            "ld s1, 8(sp)",
            "addi sp, sp, 16",
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
    // SAFETY: see the function's contract. When we are resumed, a0 holds `ctx` again (the
    // enterer passes it) and t0 our saved sp; every other register holds the enterer's values,
    // so all but sp/s0/s1 are declared clobbered and s0/s1 are reloaded from our stack.
    unsafe {
        switch_asm!(ctx;
            "addi sp, sp, -16",
            "sd s0, 0(sp)",
            "sd s1, 8(sp)",
            "lla t1, 2f",           // where the next enter continues us
            "sd sp, 0(a0)",         // ctx.sp
            "sd t1, 8(a0)",         // ctx.pc
            "ld sp, 16(a0)",        // the enterer's sp
            "ld ra, 24(a0)",        // and return address
            "ret",                  // into the enterer, after its `jalr`
            // Entered again by `jalr ra, 0(t1)`: sp = the enterer's, a0 = ctx, t0 = ctx.sp,
            // ra = the enterer's return address.
            "2:",
            "sd sp, 16(a0)",        // ctx.link_sp
            "sd ra, 24(a0)",        // ctx.link_ret
            "mv sp, t0",            // onto our stack
            "ld s0, 0(sp)",
            "ld s1, 8(sp)",
            "addi sp, sp, 16",
        );
    }
    ctx
}

/// The floating-point rounding mode (`frm`), saved only with the `fp-state` feature.
#[cfg(feature = "fp-state")]
pub(crate) struct FpState {
    frm: usize,
}

#[cfg(feature = "fp-state")]
impl FpState {
    #[inline(always)]
    pub(crate) fn save() -> FpState {
        let frm: usize;
        // SAFETY: reading the rounding-mode CSR has no side effect.
        unsafe { asm!("frrm {}", out(reg) frm, options(nomem, nostack, preserves_flags)) };
        FpState { frm }
    }

    #[inline(always)]
    pub(crate) fn restore(&self) {
        // SAFETY: writing back a rounding mode read from `frm` on this thread.
        unsafe { asm!("fsrm {}", in(reg) self.frm, options(nomem, nostack, preserves_flags)) };
    }
}

// The trampoline. Entered by `jalr ra, 0(t1)` from `resume` with a0 = ctx, t0 = ctx.sp (the slot
// that holds the entry function) and ra = the enterer's return address, on the enterer's stack.
// DWARF CFI describes the enterer as this frame's caller (see module docs):
//   DW_CFA_def_cfa_expression: DW_OP_breg9 (s1) +16; DW_OP_deref; DW_OP_plus_uconst 16
//   DW_CFA_expression ra: DW_OP_breg9 +24 (ctx.link_ret); s0 at CFA-16, s1 at CFA-8.
global_asm!(
    ".text",
    ".p2align 2",
    ".globl costack_trampoline",
    ".hidden costack_trampoline",
    ".type costack_trampoline,@function",
    "costack_trampoline:",
    ".cfi_startproc",
    // 0x0f DW_CFA_def_cfa_expression, length 5: 0x79 DW_OP_breg9 16, 0x06 DW_OP_deref,
    // 0x23 DW_OP_plus_uconst 16.
    ".cfi_escape 0x0f, 0x05, 0x79, 0x10, 0x06, 0x23, 0x10",
    // 0x10 DW_CFA_expression, register 1 (ra), length 2: 0x79 DW_OP_breg9 24.
    ".cfi_escape 0x10, 0x01, 0x02, 0x79, 0x18",
    ".cfi_offset 8, -16", // s0
    ".cfi_offset 9, -8",  // s1
    "sd sp, 16(a0)",      // ctx.link_sp
    "sd ra, 24(a0)",      // ctx.link_ret
    "mv sp, t0",          // onto the fresh stack (16-byte aligned)
    "mv s1, a0",          // keep ctx in a callee-saved register for the CFI
    "li s0, 0",           // no frame-pointer chain below this frame
    "ld t1, 0(t0)",       // the entry function, stored by init
    "jalr ra, 0(t1)",     // entry(ctx): runs the closure, returns when it is done
    // Finished: leave for good; this `ret` pops the enterer's return-stack entry.
    "ld sp, 16(s1)",
    "ld ra, 24(s1)",
    "ret",
    ".cfi_endproc",
    ".size costack_trampoline, .-costack_trampoline",
);
