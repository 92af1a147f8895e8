//! Channels for the tasks of one loop: `!Send`, no atomics, no locks.
//!
//! Operations floor (inside `channel`): imports the wait protocol (`wait`), the loop proper
//! (`runtime`: the thread's loop, to drive it outside any task), the task keys (`key`), the
//! wakers (`waker`, which select branches register) and the channel's state (`core`).
//!
//! The state sits in an `Rc<RefCell<..>>`; a task that waits leaves its task key in the
//! channel's wait queue and the side that ends the wait queues the task on the loop directly
//! (no eventfd, no message). Use these when every sender and the receiver live on one loop —
//! tasks that talk to each other, a connection's reader and writer tasks. When a side is on
//! another loop or a plain thread, use [`channel::mpsc`](crate::channel::mpsc) and
//! [`channel::oneshot`](crate::channel::oneshot) (the compiler says so: these types are not
//! `Send`):
//!
//! ```compile_fail
//! let (tx, rx) = costack_aio::channel::local::mpsc::unbounded::<u32>();
//! std::thread::spawn(move || tx.send(1)); // error: `Rc<..>` cannot be sent between threads
//! # drop(rx);
//! ```
//!
//! Outside any coroutine (in `main`, say, with the loop not running), a call that must wait
//! runs the thread's loop until it can go on, as [`JoinHandle::join`](crate::JoinHandle::join)
//! does; without a loop on the thread it panics, since nothing could ever wake it. (As with a
//! std channel, a `recv` outside any task whose only senders are held by the caller itself,
//! not by a task, waits for ever.)

pub mod mpsc;
pub mod oneshot;

use super::core::{WaitQueue, Wake};
use crate::key::TaskKey;
use crate::runtime::{current_loop, Inner};
use crate::wait::begin_wait;
use crate::waker::Waker;
use std::cell::RefCell;
use std::rc::Rc;

/// A waiter of a local channel: a task of the thread's loop (a plain wait), or a select's
/// waker.
pub(crate) enum Waiter {
    Task(Rc<Inner>, TaskKey),
    Waker(Waker),
}

impl Wake for Waiter {
    #[inline]
    fn wake(self) {
        match self {
            Waiter::Task(inner, key) => inner.wake(key),
            Waiter::Waker(w) => w.wake(),
        }
    }
}

/// Which wait queue of the state `S` a waiter joins.
pub(crate) type Queue<S> = fn(&mut S) -> &mut WaitQueue<Waiter>;
/// Whether a waiter of that queue could go on now.
pub(crate) type Ready<S> = fn(&S) -> bool;

/// Waits until a waiter of `queue` could go on: in a task, joins the queue and yields to the
/// loop (returns the ticket, which the caller takes out of the queue, if still there, before
/// trying again); outside any coroutine, runs the thread's loop until `ready` (returns
/// `None`). A wait abandoned by unwinding (a `timeout`, a cancelled task) leaves the queue,
/// passing on a wake-up it had received.
///
/// # Panics
/// Outside any coroutine on a thread without a loop, or with the loop already running (in a
/// `call_soon` callback): nothing could wake the caller.
pub(crate) fn wait<S>(cell: &RefCell<S>, queue: Queue<S>, ready: Ready<S>) -> Option<u64> {
    match begin_wait() {
        Some(w) => {
            let ticket = queue(&mut cell.borrow_mut()).push(Waiter::Task(w.inner.clone(), w.key));
            let abandon = Abandon {
                cell,
                queue,
                ready,
                ticket,
            };
            w.park(None);
            std::mem::forget(abandon);
            Some(ticket)
        }
        None => {
            drive(&|| ready(&cell.borrow()));
            None
        }
    }
}

/// Runs the thread's loop until `done`.
fn drive(done: &dyn Fn() -> bool) {
    match current_loop() {
        Some(inner) => inner.run_until(done),
        None => panic!(
            "costack-aio: a local channel must wait, outside any task, on a thread without an \
             event loop: nothing could ever wake it (use try_send/try_recv, or the Send \
             channels of `costack_aio::channel` between threads)"
        ),
    }
}

/// Takes a waiter out of its queue when its wait ends by unwinding.
struct Abandon<'a, S> {
    cell: &'a RefCell<S>,
    queue: Queue<S>,
    ready: Ready<S>,
    ticket: u64,
}

impl<S> Drop for Abandon<'_, S> {
    fn drop(&mut self) {
        leave(self.cell, self.queue, self.ready, self.ticket);
    }
}

/// Takes the waiter `ticket` out of `queue`; if it is not there (it was woken) and a waiter
/// could go on, wakes the next one in its place, so that no wake-up is lost.
pub(crate) fn leave<S>(cell: &RefCell<S>, queue: Queue<S>, ready: Ready<S>, ticket: u64) {
    let mut s = cell.borrow_mut();
    if queue(&mut s).remove(ticket) || !ready(&s) {
        return;
    }
    let next = queue(&mut s).pop();
    drop(s);
    if let Some(w) = next {
        w.wake();
    }
}
