//! # costack: stackful coroutines, the way QEMU's block layer uses them
//!
//! A coroutine here is a closure with a stack of its own. Code running in it can call
//! [`yield_now`] from any depth — in the middle of a parser, under three layers of helper
//! functions — and control goes back to whoever entered the coroutine; entering it again
//! continues right after the yield, with every local variable intact. That is what lets an I/O
//! library offer *synchronous-looking* code (start a request, yield, be re-entered when it
//! completes) with no callbacks, no hand-written state machines and no `async` colouring.
//!
//! ```
//! use costack::{yield_now, Coroutine, Status};
//!
//! let co = Coroutine::new(|| {
//!     let mut sum = 0;
//!     for i in 1..=3 {
//!         sum += i;
//!         yield_now(); // back to the enterer, from any depth
//!     }
//!     sum
//! });
//! assert_eq!(co.enter(), Status::Yielded);
//! assert_eq!(co.enter(), Status::Yielded);
//! assert_eq!(co.enter(), Status::Yielded);
//! assert_eq!(co.enter(), Status::Finished(6));
//! ```
//!
//! ## The contract (after QEMU's `include/qemu/coroutine.h`)
//!
//! * [`Coroutine::new`] creates a coroutine; it does not run until [`Coroutine::enter`].
//! * `enter` runs it until it yields or returns, and says which ([`Status`]).
//! * [`yield_now`] suspends the running coroutine and returns to its enterer. Outside a
//!   coroutine it panics.
//! * A coroutine that *waits* — for a lock, a future, I/O — parks instead ([`park`]): whoever
//!   ends the wait wakes it, and a coroutine that entered it waits with it. [`park`] is the one
//!   contract every layer uses to suspend and resume coroutines.
//! * [`current`] is a handle ([`CoHandle`]) to the running coroutine that can be stored and
//!   used later, on the same thread, to enter it again; [`in_coroutine`] and
//!   [`CoHandle::is_entered`] tell where you are.
//! * Coroutines nest: a coroutine may enter another, whose yields come back to it.
//! * Entering a coroutine that is already entered, or that has finished, panics; so does
//!   entering one whose enterer waits with it ([`CoHandle::is_held`]).
//! * A panic in a coroutine ends it and continues in its enterer with the same payload.
//! * Dropping the last handle to a suspended coroutine unwinds its stack (destructors run).
//! * [`CoHandle::wake`] inside a coroutine queues another to be entered right after the current
//!   one yields or terminates (QEMU's `co_queue_wakeup`) — or hands it to its [`Driver`] (an
//!   event loop, an executor) if it has one; the [`sync`] locks build on it.
//! * When a thread exits, its suspended coroutines are leaked, not unwound (see [`park`]).
//! * Coroutines are bound to their thread (`!Send`): a suspended stack may hold references to
//!   thread-locals, so no safe API moves one to another thread.
//!
//! ```compile_fail
//! fn needs_send<T: Send>(_: T) {}
//! needs_send(costack::Coroutine::new(|| ())); // error: `Coroutine` is not `Send`
//! ```
//!
//! ```compile_fail
//! fn needs_send<T: Send>(_: T) {}
//! needs_send(costack::Coroutine::new(|| ()).handle()); // error: `CoHandle` is not `Send`
//! ```
//!
//! ## Layers
//!
//! * [`coroutine`]: the core, with [`Builder`] for stack size and name.
//! * [`park`]: the resume contract — how every layer waits, and who resumes a waiting coroutine
//!   (its enterer, an event loop, an executor), on which thread; cancel, panics, thread exit.
//! * [`generator`]: values out on yield and in on resume; an `Iterator`.
//! * [`pool`]: the per-thread pool that makes creating a coroutine allocation-free.
//! * [`stack`]: stacks with a guard below (`mmap` on Unix, `VirtualAlloc` on Windows), and the
//!   errors when they cannot be had.
//! * `backend`: the context switch, hand-written assembly on x86_64 (System V and Windows x64),
//!   aarch64 and riscv64 (see the `arch` module's source for the designs and stack diagrams);
//!   libc's `swapcontext` with the `ucontext` feature and on other CPUs (Unix); Windows Fibers
//!   with the `fibers` feature (Windows). [`BACKEND`] names the one compiled in.
//! * [`trace`]: `tracing` events for enter, yield and terminate (feature `trace`).
//! * [`bridge`]: await any `Future` from a coroutine; host a coroutine in an async executor.
//! * [`introspect`]: the live coroutines of a thread, for logs and debuggers.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod arch;
#[cfg(feature = "asan")]
mod asan;
mod backend;
pub mod bridge;
pub mod coroutine;
pub mod generator;
pub mod introspect;
mod local;
mod overflow;
pub mod park;
pub mod pool;
pub mod stack;
pub mod sync;
pub mod trace;
mod valgrind;

pub use coroutine::{
    current, current_id, in_coroutine, yield_now, Builder, CoHandle, CoId, Coroutine, Driver,
    Status,
};
pub use generator::{Generator, GeneratorState, Yielder};
pub use park::Park;
pub use stack::{StackError, StackErrorKind, DEFAULT_STACK_SIZE};

/// The crate README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The context-switch backend compiled in: `"asm"` (default on x86_64, aarch64 and riscv64),
/// `"ucontext"` (Unix) or `"fibers"` (Windows).
pub const BACKEND: &str = backend::NAME;
