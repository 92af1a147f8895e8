//! The cross-thread side of a loop: its message queue and the eventfd that wakes it.
//!
//! Ground floor: imports only [`key`](crate::key). Any thread may push a [`Msg`]; pushing to
//! an empty queue writes the loop's eventfd, which ends its wait for I/O, and the loop then
//! runs the messages on its own thread (`Inner::drain_remote` in the `runtime` module). The
//! public types built on it — [`LoopHandle`](crate::LoopHandle), [`Waker`](crate::Waker) — are
//! in the `remote` and `waker` modules.

use crate::key::TaskKey;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// A message for a loop from another thread.
pub(crate) enum Msg {
    /// Wake the task waiting with this key, if it still is.
    Wake(TaskKey),
    /// Wake the task whatever wait it is in (the loop's `Send` waker for futures).
    WakeTask(u64),
    /// Run a closure on the loop's thread.
    Call(Box<dyn FnOnce() + Send>),
}

struct Queue {
    msgs: Vec<Msg>,
    closed: bool,
}

/// A loop's message queue and eventfd (shared, `Arc`, with every handle and waker).
pub(crate) struct Remote {
    loop_id: u64,
    queue: Mutex<Queue>,
    waker: mio::Waker,
}

/// Locks `m`, ignoring poisoning.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing user-supplied runs under these locks, so poisoning cannot leave them broken.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Remote {
    /// The queue of loop `loop_id`, which `waker` wakes.
    pub(crate) fn new(loop_id: u64, waker: mio::Waker) -> Remote {
        Remote {
            loop_id,
            queue: Mutex::new(Queue {
                msgs: Vec::new(),
                closed: false,
            }),
            waker,
        }
    }

    /// The id of the loop this queue belongs to.
    pub(crate) fn loop_id(&self) -> u64 {
        self.loop_id
    }

    /// Queues `msg` for the loop; gives it back if the loop is gone.
    pub(crate) fn send(&self, msg: Msg) -> Result<(), Msg> {
        let mut q = lock(&self.queue);
        if q.closed {
            return Err(msg);
        }
        let was_empty = q.msgs.is_empty();
        q.msgs.push(msg);
        drop(q);
        if was_empty {
            // The loop drains the whole queue when the eventfd fires, so only the push that
            // makes the queue non-empty needs to write it. An error would mean the eventfd
            // is gone, which only happens with the loop.
            let _ = self.waker.wake();
        }
        Ok(())
    }

    /// Moves every queued message into `into`.
    pub(crate) fn take_all(&self, into: &mut Vec<Msg>) {
        let mut q = lock(&self.queue);
        std::mem::swap(&mut q.msgs, into);
    }

    /// Refuses further messages; returns those still queued (to be dropped by the caller,
    /// outside the lock).
    pub(crate) fn close(&self) -> Vec<Msg> {
        let mut q = lock(&self.queue);
        q.closed = true;
        std::mem::take(&mut q.msgs)
    }

    /// Whether the loop has been dropped (the queue refuses messages).
    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.queue).closed
    }
}
