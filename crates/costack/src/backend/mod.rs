//! The context-switch backends.
//!
//! Both offer the same three operations on a `Context` that lives at the start of every
//! coroutine's control block:
//!
//! * `Context::init(top, bottom, entry)` prepares a fresh coroutine whose stack lies in
//!   `bottom..top`; its first resume calls `entry` (an `Entry`: the coroutine module's main
//!   function) with the context pointer, and when that returns the coroutine is finished and
//!   switches to its enterer for the last time. `INIT_STACK` says how much of the stack below
//!   `top` it uses before the coroutine's first frame (32 bytes for the assembly switches, a
//!   whole `ucontext_t` for the portable one), so that creation can check the stack is large
//!   enough.
//! * `resume(ctx)` switches from the enterer into the coroutine, returning when it yields or
//!   finishes.
//! * `suspend(ctx)` switches from the running coroutine back to its enterer, returning when it is
//!   entered again.
//!
//! `asm` is the default on x86_64, aarch64 and riscv64: hand-written assembly that saves only
//! callee-saved state. `ucontext` (cargo feature `ucontext`, and the default on any other CPU)
//! uses libc's `getcontext`/`makecontext`/`swapcontext`: portable, and the yardstick, since
//! every `swapcontext` makes two `rt_sigprocmask` system calls. The build script sets the cfg
//! `costack_asm` when the assembly backend is the one compiled in.
//!
//! May import: its two backends only, which import nothing else of the crate (the entry function
//! is a parameter of `init`, so the switch never names the code above it).

#[cfg(costack_asm)]
pub(crate) mod asm;
#[cfg(costack_asm)]
pub(crate) use asm::*;

#[cfg(not(costack_asm))]
pub(crate) mod ucontext;
#[cfg(not(costack_asm))]
pub(crate) use ucontext::*;

/// The name of the backend compiled in: `"asm"` or `"ucontext"`.
#[cfg(costack_asm)]
pub const NAME: &str = "asm";
/// The name of the backend compiled in: `"asm"` or `"ucontext"`.
#[cfg(not(costack_asm))]
pub const NAME: &str = "ucontext";
