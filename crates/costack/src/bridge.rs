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
//! A waker must lead back to the coroutine that waits. `await_future` follows the resume
//! contract ([`park`](crate::park)): it hands the future the waker of the *driver* of the
//! outermost coroutine of the running chain ([`Park::waker`]):
//!
//! * a coroutine hosted by [`as_future`]: the waker of the task that polls that future, so the
//!   executor polls it again and the poll enters the coroutine;
//! * a task of an event loop (costack-aio): a waker that resumes the task on its home loop,
//!   also when woken from another thread.
//!
//! The waker belongs to `await_future`'s own frame, so it stays valid however the coroutine is
//! suspended meanwhile — even by the future's own `poll` yielding or waiting for a lock. Nested
//! coroutines are fine: a generator resumed inside a hosted coroutine can await a future, and
//! the hosted coroutine waits with it.
//!
//! With no driver at the root, nothing would ever re-enter the coroutine from another thread,
//! so `await_future` panics with a message that says so; outside any coroutine it panics too
//! (there is nothing to yield).
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
//! again, and waits again if it is still pending. A wake after the outer future completed
//! wakes a finished task, which executors ignore. If the hosted code yields plainly (a
//! [`yield_now`](crate::yield_now)), the outer poll wakes its own task at once, so it is polled
//! again soon, like `tokio::task::yield_now`; if it waits (a future, a lock), the poll returns
//! [`Poll::Pending`] and the wait's waker brings the task back.
//!
//! Dropping the outer future while the coroutine is suspended drops the coroutine: its stack
//! unwinds, dropping the inner future it was awaiting. A panic in the hosted code continues from
//! the outer future's `poll`.
//!
//! May import: `coroutine::{create, handle, header}` and `park`.

use crate::coroutine::create::Coroutine;
use crate::coroutine::handle::Status;
use crate::coroutine::header::{CoHandle, Driver};
use crate::park::Park;
use std::cell::RefCell;
use std::future::Future;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Drives `fut` to completion from inside a coroutine, parking the coroutine while it is
/// pending. See the [module documentation](self) for who re-enters the coroutine.
///
/// # Panics
/// Outside any coroutine; and inside one whose chain has no driver that could be woken from a
/// future (not hosted by [`as_future`], not an event loop's task).
pub fn await_future<F: Future>(fut: F) -> F::Output {
    let Some(park) = Park::try_new() else {
        panic!(
            "costack::bridge::await_future called outside of any coroutine: there is nothing to \
             yield while the future is pending (use an executor's block_on there)"
        );
    };
    let mut fut = pin!(fut);
    // A future that is ready at once needs no waker at all; polling it first with a no-op waker
    // is allowed, since a future must wake the waker of its latest poll.
    if let Poll::Ready(v) = fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        return v;
    }
    loop {
        // The driver's waker for this wait, owned by this frame; asked for again after every
        // resume, because the chain's root (and so its driver) or the executor's waker may have
        // changed meanwhile.
        let waker = park.waker().unwrap_or_else(|| no_driver());
        if let Poll::Ready(v) = fut.as_mut().poll(&mut Context::from_waker(&waker)) {
            return v;
        }
        park.suspend();
    }
}

#[cold]
#[inline(never)]
fn no_driver() -> ! {
    panic!(
        "costack::bridge::await_future: this coroutine is neither hosted by bridge::as_future \
         nor run by an event loop, so nothing would enter it again when the future is ready"
    )
}

/// Runs the synchronous closure `f` as a coroutine inside a [`Future`] of its result. See the
/// [module documentation](self).
pub fn as_future<F, R>(f: F) -> CoFuture<R>
where
    F: FnOnce() -> R + 'static,
    R: 'static,
{
    CoFuture::new(Coroutine::new(f))
}

/// The future returned by [`as_future`]: a coroutine polled by an async executor.
///
/// It is `!Send` (it owns a coroutine stack); spawn it on a local task set. Polling it after it
/// returned `Ready` panics.
#[must_use = "futures do nothing unless polled"]
pub struct CoFuture<R> {
    co: Option<Coroutine<R>>,
    host: Rc<Host>,
}

/// The driver of a hosted coroutine: the waker of the latest poll of its future.
struct Host {
    waker: RefCell<Option<Waker>>,
}

impl Driver for Host {
    fn wake(&self, _root: &CoHandle) {
        // Cloned out first: waking may run executor code, which must not find the cell borrowed.
        let w = self.waker.borrow().clone();
        if let Some(w) = w {
            w.wake();
        }
    }

    fn waker(&self, _root: &CoHandle) -> Option<Waker> {
        self.waker.borrow().clone()
    }
}

impl<R> std::fmt::Debug for CoFuture<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoFuture").field("co", &self.co).finish()
    }
}

impl<R: 'static> CoFuture<R> {
    /// Wraps an already created coroutine (for a custom stack size or name). The future becomes
    /// the coroutine's [`Driver`].
    pub fn new(co: Coroutine<R>) -> CoFuture<R> {
        let host = Rc::new(Host {
            waker: RefCell::new(None),
        });
        co.set_driver(Some(host.clone() as Rc<dyn Driver>));
        CoFuture { co: Some(co), host }
    }
}

impl<R: 'static> Future for CoFuture<R> {
    type Output = R;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<R> {
        let co = self
            .co
            .as_ref()
            .expect("costack::bridge::CoFuture polled after it completed");
        {
            let mut w = self.host.waker.borrow_mut();
            match &mut *w {
                Some(old) if old.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
        }
        match co.enter() {
            Status::Finished(r) => {
                self.co = None;
                Poll::Ready(r)
            }
            Status::Yielded => {
                if !co.is_parked() {
                    // A plain yield: nothing else will wake us, so ask to be polled again.
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
        }
    }
}
