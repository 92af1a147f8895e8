//! The context-switch backends.
//!
//! Both offer the same three operations on a `Context` that lives at the start of every
//! coroutine's control block:
//!
//! * `Context::init(top, bottom, entry)` prepares a fresh coroutine whose stack lies in
//!   `bottom..top`; its first resume calls `entry` (an `Entry`: the coroutine module's main
//!   function) with the context pointer, and when that returns the coroutine is finished and
//!   switches to its enterer for the last time.
//! * `resume(ctx)` switches from the enterer into the coroutine, returning when it yields or
//!   finishes.
//! * `suspend(ctx)` switches from the running coroutine back to its enterer, returning when it is
//!   entered again.
//!
//! `asm` is the default on x86_64: hand-written assembly that saves only callee-saved state.
//! `ucontext` (cargo feature `ucontext`, and the default where no assembly backend exists) uses
//! libc's `getcontext`/`makecontext`/`swapcontext`: portable, and the yardstick, since every
//! `swapcontext` makes two `rt_sigprocmask` system calls.
//!
//! May import: its two backends only, which import nothing else of the crate (the entry function
//! is a parameter of `init`, so the switch never names the code above it).

#[cfg(all(target_arch = "x86_64", not(feature = "ucontext")))]
pub(crate) mod asm;
#[cfg(all(target_arch = "x86_64", not(feature = "ucontext")))]
pub(crate) use asm::*;

#[cfg(any(not(target_arch = "x86_64"), feature = "ucontext"))]
pub(crate) mod ucontext;
#[cfg(any(not(target_arch = "x86_64"), feature = "ucontext"))]
pub(crate) use ucontext::*;

/// The name of the backend compiled in: `"asm"` or `"ucontext"`.
#[cfg(all(target_arch = "x86_64", not(feature = "ucontext")))]
pub const NAME: &str = "asm";
/// The name of the backend compiled in: `"asm"` or `"ucontext"`.
#[cfg(any(not(target_arch = "x86_64"), feature = "ucontext"))]
pub const NAME: &str = "ucontext";
