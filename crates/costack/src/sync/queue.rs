//! [`CoQueue`]: a queue of waiting coroutines, the condition variable of coroutines.
//!
//! May import: `waiter` and `relock`.

use super::relock::Relock;
use super::waiter::{Parked, WaitList, Waiter};
use std::fmt;

/// A FIFO queue of suspended coroutines: the building block for waiting on a condition
/// (QEMU's `CoQueue`).
///
/// A coroutine calls [`wait`](CoQueue::wait) to suspend itself at the back of the queue;
/// another calls [`wake_next`](CoQueue::wake_next) or [`wake_all`](CoQueue::wake_all) when the
/// condition may have changed. Like a condition variable it carries no state of its own, so
/// the waiter must re-check its condition after waking, in a loop. To wait for a condition
/// that a lock protects, pass the lock's guard to [`wait_with`](CoQueue::wait_with): the lock is
/// released while the coroutine waits and taken back before `wait_with` returns.
///
/// A woken coroutine runs right after the waker yields or terminates (the core's deferred
/// wake-ups). Woken from outside any coroutine, it is entered at once, before `wake_next`
/// returns.
///
/// ```
/// use costack::sync::{CoMutex, CoQueue};
/// use costack::Coroutine;
/// use std::collections::VecDeque;
/// use std::rc::Rc;
///
/// // A producer/consumer pair: the consumer waits while the buffer is empty.
/// let buf = Rc::new(CoMutex::new(VecDeque::new()));
/// let not_empty = Rc::new(CoQueue::new());
///
/// let (b, q) = (buf.clone(), not_empty.clone());
/// let consumer = Coroutine::new(move || {
///     let mut got = Vec::new();
///     while got.len() < 3 {
///         let mut items = b.lock();
///         while items.is_empty() {
///             items = q.wait_with(items); // unlocks while waiting, relocks after
///         }
///         got.extend(items.drain(..));
///     }
///     got
/// });
/// assert!(!consumer.enter().is_finished()); // nothing to eat yet: waiting
/// assert!(!not_empty.is_empty());
///
/// let (b, q) = (buf.clone(), not_empty.clone());
/// let producer = Coroutine::new(move || {
///     for i in 1..=3 {
///         b.lock().push_back(i);
///         q.wake_next(); // the consumer runs when we yield or finish
///         costack::yield_now();
///     }
/// });
/// while !producer.enter().is_finished() {}
/// assert_eq!(consumer.take_result(), Some(vec![1, 2, 3]));
/// ```
///
/// # Dropping a waiting coroutine
///
/// A coroutine dropped while it waits leaves the queue. If it had already been woken but was
/// dropped before it ran, the wake-up passes on to the next waiter, so none is lost.
///
/// # Spurious resumes
///
/// Entering a waiting coroutine through a [`CoHandle`](crate::CoHandle) does not end its wait:
/// it yields again. Only the queue's own wake-ups do.
pub struct CoQueue {
    waiters: WaitList,
}

// SAFETY: the queue holds raw pointers only to the nodes of coroutines that are waiting in it,
// and each of those borrows the queue (it is inside `wait`) for as long as its node is linked.
// A queue that can be moved to another thread is not borrowed, so it is empty: it owns nothing
// tied to this thread.
unsafe impl Send for CoQueue {}

impl Default for CoQueue {
    fn default() -> Self {
        CoQueue::new()
    }
}

impl CoQueue {
    /// An empty queue.
    pub const fn new() -> CoQueue {
        CoQueue {
            waiters: WaitList::new(),
        }
    }

    /// Suspends the running coroutine at the back of the queue until
    /// [`wake_next`](Self::wake_next) or [`wake_all`](Self::wake_all) picks it.
    ///
    /// # Panics
    /// Outside any coroutine.
    #[inline]
    pub fn wait(&self) {
        self.park(false, || {});
    }

    /// Like [`wait`](Self::wait), but at the front of the queue: this coroutine is woken before
    /// those already waiting (for one that was woken, found its condition still false, and
    /// should not lose its turn).
    ///
    /// # Panics
    /// Outside any coroutine.
    #[inline]
    pub fn wait_front(&self) {
        self.park(true, || {});
    }

    /// Releases the lock held by `guard`, waits like [`wait`](Self::wait), then takes the lock
    /// back (waiting for it if need be) and returns the new guard.
    ///
    /// The coroutine is in the queue before the lock is released, so a waker that takes the
    /// lock, changes the condition and wakes the queue cannot be missed. `guard` can be a
    /// [`CoMutexGuard`](super::CoMutexGuard), a read or write guard of a
    /// [`CoRwLock`](super::CoRwLock), or a [`CoSemaphorePermit`](super::CoSemaphorePermit)
    /// (the same number of permits is acquired again).
    ///
    /// # Panics
    /// Outside any coroutine (the guard is then released by the unwinding).
    #[inline]
    pub fn wait_with<G: Relock>(&self, guard: G) -> G {
        self.wait_with_at(guard, false)
    }

    /// [`wait_with`](Self::wait_with) at the front of the queue, like
    /// [`wait_front`](Self::wait_front).
    ///
    /// # Panics
    /// Outside any coroutine.
    #[inline]
    pub fn wait_front_with<G: Relock>(&self, guard: G) -> G {
        self.wait_with_at(guard, true)
    }

    #[inline(always)]
    fn wait_with_at<G: Relock>(&self, guard: G, front: bool) -> G {
        let mut unlocked = None;
        self.park(front, || unlocked = Some(guard.unlock_for_wait()));
        match unlocked {
            Some(u) => G::relock_after_wait(u),
            None => unreachable!("costack: CoQueue::wait_with did not release the lock"),
        }
    }

    /// Links a node for the running coroutine, runs `before_yield` (releasing a lock), waits.
    /// Inlined, so that the coroutine yields at its caller's depth (see `CoMutex::lock`).
    #[inline(always)]
    fn park(&self, front: bool, before_yield: impl FnOnce()) {
        let node = Waiter::new(0, "CoQueue::wait");
        // SAFETY: `parked` is not leaked: it is consumed by `wait` or dropped by unwinding. The
        // queue is borrowed by this call, so it does not move while the node is linked.
        let parked = unsafe {
            Parked::new(&self.waiters, &node, front, |woken| {
                if woken {
                    // Woken, but dropped before it ran: pass the wake-up on.
                    self.wake_next();
                }
            })
        };
        before_yield();
        parked.wait();
    }

    /// Wakes the first waiting coroutine; returns whether there was one.
    ///
    /// Inside a coroutine, the woken one runs after the current one yields or terminates.
    /// Outside any coroutine it is entered now, and runs until it yields or finishes before
    /// this returns (a panic in it continues here).
    pub fn wake_next(&self) -> bool {
        if self.waiters.is_empty() {
            return false;
        }
        self.waiters.grant_one()
    }

    /// Wakes every coroutine waiting now, in queue order, and returns how many.
    ///
    /// Coroutines that start waiting while this runs (possible outside a coroutine, where each
    /// woken one is entered at once and may wait again) are not woken by this call.
    pub fn wake_all(&self) -> usize {
        if self.waiters.is_empty() {
            return 0;
        }
        // Waking from outside a coroutine runs the woken ones on the spot, and they may queue
        // again: serve only those waiting now, detached into a batch on this frame. Nodes can
        // still leave the batch if their coroutine is dropped meanwhile.
        let batch = Batch {
            list: WaitList::new(),
            home: &self.waiters,
        };
        // SAFETY: `batch` stays in this frame, unmoved, until it is dropped at the end of the
        // function; its destructor empties it.
        unsafe { self.waiters.move_all_to(&batch.list) };
        batch.list.grant_while(|_| true)
    }

    /// Whether no coroutine is waiting.
    pub fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }
}

/// The waiters [`CoQueue::wake_all`] still has to wake. If that is cut short by a panic, those
/// left go back to the front of the queue, still waiting.
struct Batch<'a> {
    list: WaitList,
    home: &'a WaitList,
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        // SAFETY: `home` is the queue's list, which does not move while borrowed here.
        unsafe { self.list.move_all_to_front(self.home) };
    }
}

impl fmt::Debug for CoQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoQueue")
            .field("waiters", &self.waiters.len())
            .finish()
    }
}
