//! The bridge to Rust's async world, both ways.
//!
//! Rust's I/O ecosystem is mostly `async`. A coroutine can use it without becoming `async`
//! itself, and an `async` program can host synchronous code without blocking a thread:
//!
//! * [`await_future`] runs inside a coroutine and drives any [`Future`] to completion. Each time
//!   the future is pending, the coroutine yields; the future's [`Waker`] arranges for the
//!   coroutine to be entered again, and `await_future` polls once more.
//! * [`as_future`] turns a synchronous closure into a [`Future`] of its result by running it as
//!   a coroutine: polling the future enters the coroutine; when the code inside waits on a future
//!   through `await_future`, the coroutine yields and `poll` returns [`Poll::Pending`] instead of
//!   blocking the executor's thread. The waker of the inner future is the outer task's waker, so
//!   the executor polls the outer future again when the inner one can make progress.
//!
//! ```
//! use costack::bridge::{as_future, await_future};
//!
//! // Synchronous code that awaits a future, hosted by an async executor.
//! let fut = as_future(|| {
//!     let a = await_future(async { 20 });
//!     let b = await_future(std::future::ready(22));
//!     a + b
//! });
//! // Any executor will do; here, a minimal one from the standard library's pieces.
//! # fn block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     use std::task::{Context, Poll, Waker};
//! #     let mut f = std::pin::pin!(f);
//! #     let mut cx = Context::from_waker(Waker::noop());
//! #     loop { if let Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
//! # }
//! assert_eq!(block_on(fut), 42);
//! ```
//!
//! # Who re-enters the coroutine
//!
//! A waker must lead back to the coroutine that waits. `await_future` asks, in this order:
//!
//! 1. the future returned by [`as_future`] that is being polled on this thread, if any: its
//!    task's waker is used, and the outer poll re-enters the hosted coroutine;
//! 2. the *suspender* that the code entering coroutines on this thread registered with
//!    [`set_suspender`]: an event loop (costack-aio registers one) hands out a waker that
//!    re-enters the coroutine on its home loop, also when woken from another thread, and
//!    suspends the coroutine until it is woken.
//!
//! With neither, nothing would ever re-enter the coroutine, so `await_future` panics with a
//! message that says so; outside any coroutine it panics too (there is nothing to yield).
//!
//! # Honest about `Send`
//!
//! The future returned by [`as_future`] owns a coroutine stack, which may hold references to
//! thread-locals of the thread it runs on; it is therefore `!Send`. Spawn it with
//! `tokio::task::spawn_local` (inside a `LocalSet`), on a current-thread runtime, or with any
//! single-threaded executor.
//!
//! ```compile_fail
//! fn needs_send<T: Send>(_: T) {}
//! needs_send(costack::bridge::as_future(|| 1)); // error: the future is not `Send`
//! ```
//!
//! # Wake-ups
//!
//! Spurious wake-ups are harmless: the coroutine is entered, `await_future` polls the future
//! again, and yields again if it is still pending. A wake after the outer future completed
//! wakes a finished task, which executors ignore. If the hosted code yields for another reason
//! (a plain [`yield_now`](crate::yield_now)), the outer poll wakes its own task at once, so it
//! is polled again soon, like `tokio::task::yield_now`.
//!
//! Dropping the outer future while the coroutine is suspended drops the coroutine: its stack
//! unwinds, dropping the inner future it was awaiting. A panic in the hosted code continues from
//! the outer future's `poll`.

use crate::coroutine::{current_header, Coroutine, Status};
use std::cell::Cell;
use std::future::Future;
use std::pin::{pin, Pin};
use std::task::{Context, Poll, Waker};

/// The host frame of the `as_future` poll running on this thread: its task's waker, and
/// whether the hosted code yielded because a future it awaits is pending.
struct Host<'a> {
    waker: &'a Waker,
    awaiting: Cell<bool>,
}

/// How an event loop suspends one of its coroutines until a [`Waker`] is woken (see
/// [`set_suspender`]).
///
/// Called inside a coroutine with a callback. If the loop runs this coroutine, it makes a waker
/// for this one wait, calls the callback with it (the callback polls a future, which may keep the
/// waker or wake it at once), suspends the coroutine until the waker is woken (or the coroutine
/// is entered some other way), and returns `true`. If the loop does not run this coroutine it
/// returns `false` without calling the callback.
pub type Suspender = fn(&mut dyn FnMut(&Waker)) -> bool;

thread_local! {
    /// The innermost `CoFuture::poll` on this thread (null when none).
    static HOST: Cell<*const Host<'static>> = const { Cell::new(std::ptr::null()) };
    /// The suspender registered by whoever enters coroutines on this thread (an event loop).
    static SUSPENDER: Cell<Option<Suspender>> = const { Cell::new(None) };
}

/// Registers (or, with `None`, removes) this thread's [`Suspender`], so that [`await_future`]
/// works in coroutines that an event loop runs. Returns the previous one.
pub fn set_suspender(suspender: Option<Suspender>) -> Option<Suspender> {
    SUSPENDER.with(|s| s.replace(suspender))
}

/// Drives `fut` to completion from inside a coroutine, yielding the coroutine while it is
/// pending. See the [module documentation](self) for who re-enters the coroutine.
///
/// # Panics
/// Outside any coroutine; and inside one that nothing would re-enter (not hosted by
/// [`as_future`], and no waker source registered on this thread).
pub fn await_future<F: Future>(fut: F) -> F::Output {
    if current_header().is_null() {
        panic!(
            "costack::bridge::await_future called outside of any coroutine: there is nothing to \
             yield while the future is pending (use an executor's block_on there)"
        );
    }
    let mut fut = pin!(fut);
    // A future that is ready at once needs no waker at all; polling it first with a no-op waker
    // is allowed, since a future must wake the waker of its latest poll.
    if let Poll::Ready(v) = fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        return v;
    }
    loop {
        let host = HOST.with(|h| h.get());
        if !host.is_null() {
            // SAFETY: HOST points to a `Host` on the stack of a `CoFuture::poll` that is below
            // us on this thread (it entered the chain we run on) and restores HOST before it
            // returns or unwinds, so the frame is live.
            let host = unsafe { &*host };
            if let Poll::Ready(v) = fut.as_mut().poll(&mut Context::from_waker(host.waker)) {
                return v;
            }
            host.awaiting.set(true);
            crate::yield_now();
            continue;
        }
        if let Some(suspend) = SUSPENDER.with(|s| s.get()) {
            let mut out = None;
            let handled = suspend(&mut |waker: &Waker| {
                if let Poll::Ready(v) = fut.as_mut().poll(&mut Context::from_waker(waker)) {
                    out = Some(v);
                    waker.wake_by_ref(); // do not stay suspended
                }
            });
            if let Some(v) = out {
                return v;
            }
            if handled {
                continue;
            }
        }
        panic!(
            "costack::bridge::await_future: this coroutine is neither hosted by \
             bridge::as_future nor run by an event loop, so nothing would enter it again when \
             the future is ready"
        );
    }
}

/// Runs the synchronous closure `f` as a coroutine inside a [`Future`] of its result. See the
/// [module documentation](self).
pub fn as_future<F, R>(f: F) -> CoFuture<R>
where
    F: FnOnce() -> R + 'static,
    R: 'static,
{
    CoFuture {
        co: Some(Coroutine::new(f)),
    }
}

/// The future returned by [`as_future`]: a coroutine polled by an async executor.
///
/// It is `!Send` (it owns a coroutine stack); spawn it on a local task set. Polling it after it
/// returned `Ready` panics.
#[must_use = "futures do nothing unless polled"]
pub struct CoFuture<R> {
    co: Option<Coroutine<R>>,
}

impl<R> std::fmt::Debug for CoFuture<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoFuture").field("co", &self.co).finish()
    }
}

impl<R: 'static> CoFuture<R> {
    /// Wraps an already created coroutine (for a custom stack size or name).
    pub fn new(co: Coroutine<R>) -> CoFuture<R> {
        CoFuture { co: Some(co) }
    }
}

impl<R: 'static> Future for CoFuture<R> {
    type Output = R;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<R> {
        let co = self
            .co
            .as_ref()
            .expect("costack::bridge::CoFuture polled after it completed");
        let host = Host {
            waker: cx.waker(),
            awaiting: Cell::new(false),
        };
        /// Restores the previous host frame, also when the coroutine's panic unwinds through.
        struct Restore(*const Host<'static>);
        impl Drop for Restore {
            fn drop(&mut self) {
                HOST.with(|h| h.set(self.0));
            }
        }
        let ptr = (&host as *const Host<'_>).cast::<Host<'static>>();
        let _restore = Restore(HOST.with(|h| h.replace(ptr)));
        let status = co.enter();
        drop(_restore);
        match status {
            Status::Finished(r) => {
                self.co = None;
                Poll::Ready(r)
            }
            Status::Yielded => {
                if !host.awaiting.get() {
                    // A plain yield: nothing else will wake us, so ask to be polled again.
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
        }
    }
}
