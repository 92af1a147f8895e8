//! The context-switch backends.
//!
//! All offer the same three operations on a `Context` that lives at the start of every
//! coroutine's control block:
//!
//! * `Context::init(top, stack, entry)` prepares a fresh coroutine on `stack` whose frames start
//!   below `top`; its first resume calls `entry` (an `Entry`: the coroutine module's main
//!   function) with the context pointer, and when that returns the coroutine is finished and
//!   switches to its enterer for the last time. `INIT_STACK` says how much of the stack below
//!   `top` it uses before the coroutine's first frame (32 to 128 bytes for the assembly
//!   switches, a whole `ucontext_t` for `ucontext`, nothing for `fibers`), so that creation can
//!   check the stack is large enough.
//! * `resume(ctx)` switches from the enterer into the coroutine, returning when it yields or
//!   finishes.
//! * `suspend(ctx)` switches from the running coroutine back to its enterer, returning `ctx`
//!   when it is entered again (the x86_64 Linux switch hands it back in the register the
//!   enterer passed it in, so the coroutine need not keep it across the switch).
//!
//! `asm` is the default on x86_64 (Linux and Windows), aarch64 and riscv64: hand-written
//! assembly that saves only callee-saved state. The portable ones are the yardsticks:
//! `ucontext` (cargo feature `ucontext`, and the default on any other CPU) uses libc's
//! `getcontext`/`makecontext`/`swapcontext`, which make two `rt_sigprocmask` system calls per
//! switch; `fibers` (cargo feature `fibers`, Windows) uses Windows Fibers. The build script sets
//! the cfg `costack_asm` or `costack_fibers` for the one compiled in.
//!
//! May import: `stack` (what `init` prepares), and `arch` for `asm`; the entry function is a
//! parameter of `init`, so the switch never names the code above it.

#[cfg(costack_asm)]
pub(crate) mod asm;
#[cfg(costack_asm)]
pub(crate) use asm::*;

#[cfg(not(any(costack_asm, costack_fibers)))]
pub(crate) mod ucontext;
#[cfg(not(any(costack_asm, costack_fibers)))]
pub(crate) use ucontext::*;

#[cfg(costack_fibers)]
pub(crate) mod fibers;
#[cfg(costack_fibers)]
pub(crate) use fibers::*;

/// The name of the backend compiled in: `"asm"`, `"ucontext"` or `"fibers"`.
#[cfg(costack_asm)]
pub const NAME: &str = "asm";
/// The name of the backend compiled in: `"asm"`, `"ucontext"` or `"fibers"`.
#[cfg(not(any(costack_asm, costack_fibers)))]
pub const NAME: &str = "ucontext";
/// The name of the backend compiled in: `"asm"`, `"ucontext"` or `"fibers"`.
#[cfg(costack_fibers)]
pub const NAME: &str = "fibers";
