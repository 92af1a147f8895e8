//! The context switch for x86_64 System V (Linux), in assembly.
//!
//! # Design
//!
//! A switch has to save what the ABI says a callee must preserve — `rsp`, `rbx`, `rbp`,
//! `r12`–`r15`, the return address — and nothing else. There is no signal mask to save
//! (`swapcontext` makes two `rt_sigprocmask` system calls per switch; we make none) and no
//! caller-saved register to save either: the two inline-assembly blocks below tell the compiler
//! that every register except `rsp`, `rbx` and `rbp` is clobbered, so the compiler spills exactly
//! the values that are live across the switch and no more. `rbx` and `rbp` cannot be declared as
//! clobbered in Rust inline assembly, so they are pushed and popped by hand.
//!
//! ## Call and return stay balanced
//!
//! The CPU predicts `ret` targets with a small return-address stack. A switch built from
//! `push addr; ret` (or `jmp`) mispredicts every time. Here the enterer *calls* into the
//! coroutine (`call [resume address]`) and the coroutine *returns* to the enterer when it yields
//! (`ret` on the enterer's stack). Each enter pairs one `call` with one `ret`, so the predictor
//! stays right; the resume address is an indirect-call target, which the indirect branch
//! predictor learns.
//!
//! The predictor is per CPU, not per stack, so this only holds when a coroutine yields at the
//! call depth at which it was last resumed (a loop around `yield_now`, an inlined wait). Yielding
//! from deeper or shallower than that costs one misprediction per unmatched frame at every
//! switch; the generator's `suspend` and the locks' wait paths are forced inline for this reason.
//!
//! ## The two saved stack pointers
//!
//! A coroutine's `Context` holds two words, at fixed offsets that the assembly uses:
//!
//! * `sp` (offset 0): the coroutine's stack pointer while it is suspended. The word at `[sp]` is
//!   the address where it resumes.
//! * `link` (offset 8): the enterer's stack pointer while the coroutine runs. The word at
//!   `[link]` is the return address pushed by the enterer's `call`.
//!
//! ```text
//!   enterer's stack (any stack)              coroutine's stack (suspended)
//!   +--------------------------+             +--------------------------+
//!   | enterer's frame          |             | coroutine frames ...     |
//!   | saved rbp                |             | saved rbp                |
//!   | saved rbx                |             | saved rbx                |
//!   | return address (call)    | <- link     | resume address           | <- sp
//!   +--------------------------+             +--------------------------+
//! ```
//!
//! Enter (`resume`): push `rbp`, `rbx`; load `sp`; `call [sp]`. The resume code stores the
//! enterer's `rsp` into `link`, moves `rsp` to `sp + 8`, pops the coroutine's `rbx`/`rbp` and
//! carries on after its last yield.
//!
//! Yield (`suspend`): push `rbp`, `rbx` and the resume address; store `rsp` into `sp`; load `rsp`
//! from `link`; `ret` — which pops the enterer's return address, and the enterer pops its own
//! `rbx`/`rbp`.
//!
//! ## A fresh coroutine
//!
//! A new stack is prepared so that its resume address is `costack_trampoline` and `sp + 8` is
//! 16-byte aligned, with the entry function given to `init` stored in the word below it. The
//! trampoline records `link`, keeps the context pointer in `rbx` (callee saved, so every frame
//! above can recover it), and calls the entry function through that word. When that
//! returns, the closure is done and every value on the stack dropped; the trampoline then
//! switches to the enterer one last time and the stack is never resumed.
//!
//! ## Backtraces cross the switch
//!
//! The trampoline carries hand-written DWARF call-frame information saying that *its* caller is
//! the enterer: the canonical frame address is `[rbx + 8] + 24` (the enterer's `rsp` before it
//! pushed `rbp`, `rbx` and the return address), the return address is at CFA-24, `rbx` at
//! CFA-16 and `rbp` at CFA-8. So `std::backtrace`, a panic with `RUST_BACKTRACE=1`, and gdb's `bt`
//! walk from the coroutine's frames straight into the frames of the code that entered it.
//!
//! ## Floating-point control state
//!
//! The ABI makes the MXCSR control bits and the x87 control word callee-saved, which would give
//! every coroutine its own rounding mode. Saving them costs more than the rest of the switch: on
//! this project's reference machine (AMD EPYC, 2 vCPU) one `stmxcsr`/`ldmxcsr` pair per side
//! made the round trip ~3x slower (2.8 ns to 8.5 ns), and `fnstcw` alone added ~2 ns. Rust code
//! practically never changes these modes, so by default the switch leaves them alone: the
//! floating-point environment belongs to the *thread*, like the signal mask. A coroutine that
//! changes the rounding mode should restore it before it yields; what it leaves is what its
//! enterer sees. The cargo feature `fp-state` saves and restores both registers around every
//! switch (the backend does, around this file's assembly, with its `FpState`), giving each
//! coroutine its own environment as the ABI describes; the `ucontext` backend always does,
//! because `swapcontext` does.
//!
//! May import: `stack` (the type of the stack `init` prepares). The entry function every coroutine starts in comes from the
//! caller of `init`, so this file does not name it.

use crate::stack::Stack;
use core::arch::{asm, global_asm};

/// Saved stack pointers of one coroutine; see the module documentation for the layout.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Context {
    /// The suspended coroutine's stack pointer; `[sp]` is its resume address.
    sp: *mut u8,
    /// The enterer's stack pointer while the coroutine runs; `[link]` is a return address.
    link: *mut u8,
}

/// The most stack, below the `top` given to [`Context::init`], that `init` uses before the
/// coroutine's first frame (alignment and the words it stores).
pub(crate) const INIT_STACK: usize = 32;

/// The function a fresh coroutine starts in, given its context pointer; when it returns, the
/// coroutine is finished.
pub(crate) type Entry = extern "C" fn(*mut Context);

impl Context {
    /// A context that has not been prepared yet.
    pub(crate) const fn new() -> Context {
        Context {
            sp: core::ptr::null_mut(),
            link: core::ptr::null_mut(),
        }
    }

    /// Prepares a fresh coroutine whose stack frames start below `top`; its first resume calls
    /// `entry` with this context's address.
    ///
    /// # Safety
    /// `top` must point into (or one past) a writable stack region with room below it for the
    /// coroutine's frames, and `self` must stay at this address until the coroutine finishes.
    pub(crate) unsafe fn init(&mut self, top: *mut u8, _stack: &Stack, entry: Entry) {
        // 16-byte align, then leave one word for the resume address so that `sp + 8` is 16-byte
        // aligned when the trampoline calls into Rust; the entry function goes in the word
        // below, where the trampoline reads it before its `call` (which overwrites only the
        // resume address word).
        let aligned = (top as usize) & !15;
        let sp = (aligned - 16 + 8) as *mut usize;
        // SAFETY: the caller guarantees `top` is the end of writable stack memory with room
        // below it; `sp` lies 8 bytes below its 16-aligned version and `sp - 1` 8 bytes below
        // that, both inside the stack.
        unsafe {
            sp.write(costack_trampoline as *const () as usize);
            sp.sub(1).write(entry as usize);
        }
        self.sp = sp.cast();
        self.link = core::ptr::null_mut();
    }
}

/// Switches from the enterer into the coroutine whose context is `ctx`, and returns when that
/// coroutine yields or finishes.
///
/// # Safety
/// `ctx` must be a context prepared by [`Context::init`] whose coroutine is suspended (or not yet
/// started), not running anywhere, with a live stack; the coroutine code it runs must only
/// switch back through [`suspend`] with the same `ctx`, or by returning from `coroutine_main`.
#[inline(always)]
pub(crate) unsafe fn resume(ctx: *mut Context) {
    // SAFETY: see the function's contract. Every register but rsp/rbx/rbp is declared clobbered
    // because the coroutine runs arbitrary code before it switches back; rbx and rbp are saved
    // on our stack by hand. The stack is used (no `nostack`), so the compiler keeps the red zone
    // free and rsp 16-byte aligned at entry.
    unsafe {
        asm!(
            "push rbp",                 // rbp and rbx cannot be clobbers: save them here
            "push rbx",
            "mov rax, [rdi]",           // rax = the coroutine's saved sp; [rax] = resume address
            "call [rax]",               // push our return address, jump into the coroutine
            // The coroutine has yielded or finished with a `ret` to here; rsp is ours again.
            "pop rbx",
            "pop rbp",
            inout("rdi") ctx => _,
            out("r12") _, out("r13") _, out("r14") _, out("r15") _,
            clobber_abi("sysv64"),
        );
    }
}

/// Suspends the running coroutine (whose context is `ctx`) and returns to its enterer; returns
/// `ctx` when the coroutine is entered again, as the enterer passed it in `rdi`: the coroutine
/// need not keep it in a callee-saved register across the switch.
///
/// # Safety
/// Must be called on the coroutine's own stack, while it runs, with its own `ctx`, whose `link`
/// was set by the [`resume`] that entered it.
#[inline(always)]
pub(crate) unsafe fn suspend(ctx: *mut Context) -> *mut Context {
    let back: *mut Context;
    // SAFETY: see the function's contract. When we are resumed, `rdi` holds `ctx` again (the
    // enterer passes it), `rax` our saved sp; every other register holds the enterer's values, so
    // all but rsp/rbx/rbp are declared clobbered and rbx/rbp are restored from our stack.
    unsafe {
        asm!(
            "push rbp",
            "push rbx",
            "lea rax, [rip + 2f]",      // where the next enter continues us
            "push rax",
            "mov [rdi], rsp",           // ctx.sp = our stack pointer
            "mov rsp, [rdi + 8]",       // back onto the enterer's stack (ctx.link)
            "ret",                      // return into the enterer, after its `call`
            // Entered again by `call [rax]`: rsp = enterer's stack, rdi = ctx, rax = ctx.sp.
            "2:",
            "mov [rdi + 8], rsp",       // ctx.link = the enterer's stack pointer
            "lea rsp, [rax + 8]",       // onto our stack, dropping the resume address
            "pop rbx",
            "pop rbp",
            inout("rdi") ctx => back,
            out("r12") _, out("r13") _, out("r14") _, out("r15") _,
            clobber_abi("sysv64"),
        );
    }
    back
}

#[cfg(feature = "fp-state")]
pub(crate) use super::x86_64_fp::FpState;

extern "C" {
    /// The first resume address of every coroutine (defined in the `global_asm!` below).
    fn costack_trampoline();
}

// The trampoline. Entered by `call [rax]` from `resume` with rdi = ctx and rax = ctx.sp, on the
// enterer's stack; `init` left the entry function at [rax - 8]. DWARF CFI describes the enterer as this frame's caller (see module docs):
//   DW_CFA_def_cfa_expression: DW_OP_breg3 (rbx) +8; DW_OP_deref; DW_OP_plus_uconst 24
//   return address (rip) at CFA-24, rbx at CFA-16, rbp at CFA-8.
global_asm!(
    ".text",
    ".p2align 4",
    ".globl costack_trampoline",
    ".hidden costack_trampoline",
    ".type costack_trampoline,@function",
    "costack_trampoline:",
    ".cfi_startproc",
    // CFA = [rbx + 8] + 24: 0x0f DW_CFA_def_cfa_expression, length 5, 0x73 DW_OP_breg3 8,
    // 0x06 DW_OP_deref, 0x23 DW_OP_plus_uconst 24.
    ".cfi_escape 0x0f, 0x05, 0x73, 0x08, 0x06, 0x23, 0x18",
    ".cfi_offset rip, -24",
    ".cfi_offset rbx, -16",
    ".cfi_offset rbp, -8",
    "mov [rdi + 8], rsp",       // ctx.link = the enterer's stack pointer
    "lea rsp, [rax + 8]",       // onto the fresh stack; rsp is now 16-byte aligned
    "mov rbx, rdi",             // keep ctx in a callee-saved register for the CFI
    "xor ebp, ebp",             // no frame-pointer chain below this frame
    "call qword ptr [rax - 8]", // entry(ctx), stored by init: runs the closure, returns
    // Finished: leave for good. Returning from `entry` popped the predictor's entry for the
    // `call` above, so this `ret` pops the enterer's and is predicted right.
    "mov rsp, [rbx + 8]", // the enterer's stack (ctx.link)
    "ret",                // back into the enterer, after its `call`
    ".cfi_endproc",
    ".size costack_trampoline, .-costack_trampoline",
);
