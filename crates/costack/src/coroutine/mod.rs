//! Coroutines: create, enter, yield.
//!
//! # The model
//!
//! A coroutine is a closure with a stack of its own. [`Coroutine::new`] prepares one without
//! running it. [`Coroutine::enter`] switches to its stack and runs it until it either calls
//! [`yield_now`] — from any call depth — or returns; then `enter` returns to the caller and says
//! which happened. Entering it again continues right after the `yield_now`. This is QEMU's
//! coroutine model: the code inside reads as ordinary synchronous code, and whoever entered it
//! (an event loop, a lock, another coroutine) decides when it continues.
//!
//! The coroutines that are running form a chain: `main` entered A, A entered B, and so on.
//! Only the last one runs; the others are *entered* but wait for the one they entered. A yield
//! returns to the previous link of the chain. Entering a coroutine that is already on the chain
//! would make the chain a loop, so it panics; so does entering a finished one.
//!
//! # Handles and lifetime
//!
//! [`Coroutine<R>`] is the typed handle that [`Coroutine::new`] returns; [`CoHandle`] is an
//! untyped, cloneable handle ([`current`] gives one for the running coroutine) that can be stored
//! — in a wait queue, an I/O request — and used later to enter the coroutine again. Handles are
//! reference counted. When the last one goes:
//!
//! * a coroutine that never ran just drops its closure;
//! * a finished one drops its unclaimed result;
//! * a suspended one is *unwound*: it is entered once more, its `yield_now` panics with a private
//!   payload, and the unwinding runs every destructor on its stack before the stack is reused.
//!   A destructor must not wait (yield) during that unwinding: the coroutine cannot be suspended
//!   again, so such a yield panics, and a panic inside a destructor that runs during unwinding
//!   aborts the process. Use non-waiting calls (`try_lock` and the like) in destructors.
//!
//! The control block, the closure and the result all live at the top of the coroutine's own
//! stack, and stacks come from a per-thread [`pool`](crate::pool), so creating, running and
//! dropping a coroutine allocates nothing in steady state.
//!
//! # Panics
//!
//! A panic inside a coroutine ends it; the enterer's `enter` call then continues the panic with
//! the original payload (so the enterer can `catch_unwind` it).
//!
//! # Threads
//!
//! Handles are neither `Send` nor `Sync`: a suspended stack can hold references to thread-locals,
//! so a coroutine only ever runs on the thread that created it.
//!
//! # Deferred wake-ups
//!
//! [`CoHandle::wake`] called inside a coroutine does not switch: it queues the target, which is
//! entered right after the current coroutine yields or terminates, in FIFO order, by a loop in
//! the enterer (QEMU's `co_queue_wakeup`). The target's own wake-ups are run by the same loop, so
//! a chain of coroutines waking each other never deepens the native stack. Outside any coroutine,
//! `wake` enters the target at once.
//!
//! # Floor plan
//!
//! From the ground up, each file importing only those below it:
//!
//! * `id` and `state`: coroutine ids ([`CoId`]); the state bits.
//! * `header`: the control block at the top of each stack — state bits, the type-erased closure
//!   and result, the live list — and the two types it names, [`Driver`] and [`CoHandle`]'s
//!   representation. Its fields are private; everything else uses its methods.
//! * `switch`: entering and settling, yield and park, the deferred wake-up loop, and which
//!   coroutine runs now ([`yield_now`], [`current`], [`in_coroutine`], [`current_id`]).
//! * `wake`: routing a wake-up to whoever resumes the waiting chain.
//! * `handle`: [`CoHandle`]'s operations, [`Status`], freeing a coroutine (unwind, pool) and
//!   the thread-exit policy.
//! * `create`: [`Builder`] and [`Coroutine`].
//!
//! The [`pool`](crate::pool) and the stack-overflow handler stand between `header` and
//! `handle`: they use the header, and the handles use them.

pub(crate) mod create;
pub(crate) mod handle;
pub(crate) mod header;
pub(crate) mod id;
pub(crate) mod state;
pub(crate) mod switch;
pub(crate) mod wake;

pub use create::{Builder, Coroutine};
pub use handle::Status;
pub use header::{CoHandle, Driver};
pub use id::CoId;
pub use switch::{current, current_id, in_coroutine, yield_now};
