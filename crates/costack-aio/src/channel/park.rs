//! How a waiter of a `Send` channel waits: with a [`Waker`] (a task of any loop, or a plain
//! thread), taking itself out of the channel's wait queue if its wait is abandoned.
//!
//! Imports the wakers (`waker`), the mailbox's `lock` and the channel state (`core`).

use super::core::{WaitQueue, Wake};
use crate::mailbox::lock;
use crate::waker::{prepare_park_blocking, Waker};
use std::sync::{Mutex, MutexGuard};

impl Wake for Waker {
    #[inline]
    fn wake(self) {
        Waker::wake(&self);
    }
}

/// Which wait queue of the state `S` a waiter joins.
pub(crate) type Queue<S> = fn(&mut S) -> &mut WaitQueue<Waker>;
/// Whether a waiter of that queue could go on now.
pub(crate) type Ready<'r, S> = &'r dyn Fn(&S) -> bool;

/// Joins `queue` of the state that `g` holds locked, unlocks, and waits to be woken (a task
/// yields to its loop; outside any coroutine, a thread with an event loop runs it meanwhile,
/// whose tasks may be the other side, and any other thread parks). Returns the waiter's ticket, which the caller takes
/// out of the queue (if still there: a spurious resume) when it locks again. If the wait is
/// abandoned by unwinding (a `timeout`, a cancelled task), the waiter leaves the queue; if it
/// had been woken already, it passes the wake-up on to the next waiter.
pub(crate) fn wait<S>(
    m: &Mutex<S>,
    mut g: MutexGuard<'_, S>,
    queue: Queue<S>,
    ready: Ready<S>,
) -> u64 {
    let (waker, park) = prepare_park_blocking();
    let ticket = queue(&mut g).push(waker);
    drop(g);
    let abandon = Abandon {
        m,
        queue,
        ready,
        ticket,
    };
    park.park(None);
    std::mem::forget(abandon);
    ticket
}

/// Takes a waiter out of its queue when its wait ends by unwinding.
struct Abandon<'a, S> {
    m: &'a Mutex<S>,
    queue: Queue<S>,
    ready: Ready<'a, S>,
    ticket: u64,
}

impl<S> Drop for Abandon<'_, S> {
    fn drop(&mut self) {
        leave(self.m, self.queue, self.ready, self.ticket);
    }
}

/// Takes the waiter `ticket` out of `queue`; if it is not there (it was woken) and a waiter
/// could go on, wakes the next one in its place, so that no wake-up is lost.
pub(crate) fn leave<S>(m: &Mutex<S>, queue: Queue<S>, ready: Ready<'_, S>, ticket: u64) {
    let mut g = lock(m);
    if queue(&mut g).remove(ticket) || !ready(&g) {
        return;
    }
    let next = queue(&mut g).pop();
    drop(g);
    if let Some(w) = next {
        w.wake();
    }
}
