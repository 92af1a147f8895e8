//! The wait protocol: how a task waits, and how whatever it waits for resumes it. This is the
//! loop's side of costack's resume contract (`costack::park`).
//!
//! Second floor: imports the loop proper ([`runtime`](crate::runtime)'s `Inner` and the
//! per-thread loop access) and [`key`](crate::key), nothing else. Every operation that can
//! wait — readiness (`io`), file requests (`request`), worker jobs (`blocking`), sleeps and
//! timeouts (`time`), cross-thread wakers (`waker`), joins (`task`) — starts here with
//! [`begin_wait`] and parks with [`Wait::park`].
//!
//! # How a wait works
//!
//! Every coroutine the loop runs is a *task*: an entry in the loop's task table, keyed by the
//! coroutine's [`CoId`](costack::CoId), that owns the only strong
//! [`CoHandle`](costack::CoHandle) the loop keeps. A task that must wait (for a socket, a
//! timer, a worker thread, a lock) starts a *wait*: the task's epoch counter is bumped and the
//! pair `(coroutine id, epoch)` — a [`TaskKey`] — is handed to whatever will end the wait (the
//! fd's waiter list, the timer map, a cross-thread [`Waker`](crate::Waker)). Then the coroutine
//! yields to the loop.
//!
//! Waking a key puts the task on the ready queue only if the task still exists and is still in
//! the very wait the key was made for; the loop bumps the epoch again when it enters the task.
//! So a key is good for one wake of one wait: a second wake, a wake after a timeout ended the
//! wait, or a wake after the task was cancelled or finished, is ignored. Nothing outside the
//! table holds a strong handle, so dropping the table's handle (cancel, shutdown) unwinds a
//! suspended coroutine at once.
//!
//! Every wait in this crate re-checks its condition after it is resumed (the syscall is tried
//! again, the flag is looked at again), so a spurious resume is never confused.
//!
//! # Timeouts
//!
//! A task's active [`timeout`](crate::timeout) scopes are kept in its table entry. Each wait
//! takes the nearest one along: [`Wait::park`] bounds the park by that deadline too, and once
//! it has passed, unwinds the task to the scope with a private payload ([`TimeoutUnwind`]),
//! which `timeout_at` catches.

use crate::key::TaskKey;
use crate::runtime::{current_loop, Inner};
use costack::Park;
use std::panic::resume_unwind;
use std::rc::Rc;
use std::time::Instant;

/// A wait in progress: the loop, the key that ends it, the task's nearest timeout, and the
/// contract's [`Park`] of the waiting coroutine (which may be nested inside the task).
pub(crate) struct Wait {
    pub(crate) inner: Rc<Inner>,
    pub(crate) key: TaskKey,
    timeout: Option<(Instant, u64)>,
    park: Park,
}

/// Starts a wait of the running task: of the task at the root of the running chain, so that a
/// coroutine nested in a task (a generator, say) waits on its behalf. `None` outside any
/// coroutine (the caller then blocks the thread instead).
///
/// # Panics
/// Inside a chain whose root is not a task of this thread's event loop: there is nothing that
/// could wake it. In a task being dropped (its forced unwind was caught), the unwind continues.
#[inline]
pub(crate) fn begin_wait() -> Option<Wait> {
    Park::try_new().map(begin_wait_in)
}

/// [`begin_wait`] for a caller that holds the contract's [`Park`] already: one that first tried
/// to do its work without waiting (the page-cache fast path of `File`) and starts the wait only
/// when it must, so that work which does not wait never looks up the loop or the task.
///
/// # Panics
/// As [`begin_wait`], if the root of the running chain is not a task of this thread's loop.
#[inline]
pub(crate) fn begin_wait_in(park: Park) -> Wait {
    let id = park.root_id().as_u64();
    let Some(inner) = current_loop() else {
        not_a_task()
    };
    let Some((key, timeout)) = inner.begin_task_wait(id) else {
        not_a_task()
    };
    Wait {
        inner,
        key,
        timeout,
        park,
    }
}

/// The id of the task at the root of the running chain, if that root is a task of this
/// thread's loop (and the loop itself).
fn current_task() -> Option<(Rc<Inner>, u64)> {
    let root = costack::park::root_id()?.as_u64();
    let inner = current_loop()?;
    let is_task = inner.has_task(root);
    is_task.then_some((inner, root))
}

#[cold]
#[inline(never)]
fn not_a_task() -> ! {
    panic!(
        "costack-aio: this coroutine is not a task of this thread's event loop (nor entered by \
         one), so nothing could wake it; spawn it with `spawn` or run it with \
         `EventLoop::block_on`"
    )
}

impl Wait {
    /// Parks until the key is woken (or the task is resumed otherwise), or until `deadline`. If
    /// a `timeout` scope of the task expires, unwinds to it instead.
    pub(crate) fn park(&self, deadline: Option<Instant>) {
        if let Some((d, id)) = self.timeout {
            if Instant::now() >= d {
                throw_timeout(id);
            }
        }
        let at = match (deadline, self.timeout) {
            (Some(a), Some((b, _))) => Some(a.min(b)),
            (a, t) => a.or(t.map(|t| t.0)),
        };
        let timer = at.map(|at| TimerGuard::new(&self.inner, at, self.key));
        self.park.suspend();
        drop(timer);
        if let Some((d, id)) = self.timeout {
            if Instant::now() >= d {
                throw_timeout(id);
            }
        }
    }
}

/// The payload that unwinds a task to the `timeout` scope whose deadline passed.
pub(crate) struct TimeoutUnwind(pub(crate) u64);

/// Unwinds the running task to the `timeout` scope `id`.
fn throw_timeout(id: u64) -> ! {
    resume_unwind(Box::new(TimeoutUnwind(id)))
}

/// A timer entry that wakes `key` at `at`, removed when dropped (fired or not).
struct TimerGuard<'a> {
    inner: &'a Inner,
    entry: (Instant, u64),
}

impl<'a> TimerGuard<'a> {
    fn new(inner: &'a Inner, at: Instant, key: TaskKey) -> Self {
        let entry = inner.add_timer(at, key);
        TimerGuard { inner, entry }
    }
}

impl Drop for TimerGuard<'_> {
    fn drop(&mut self) {
        self.inner.remove_timer(self.entry);
    }
}

/// A `timeout` scope of the running task, removed from the task when dropped.
pub(crate) struct TimeoutScope {
    inner: Rc<Inner>,
    task: u64,
    id: u64,
}

impl TimeoutScope {
    /// Adds the scope `id` with `deadline` to the running task, or `None` if the caller is not
    /// a task.
    ///
    /// Starts with the contract's [`Park`], as every wait of a task does: in a task that was
    /// cancelled and caught its unwind (and so is no longer in the table), the unwind continues.
    pub(crate) fn push(deadline: Instant, id: u64) -> Option<TimeoutScope> {
        let task = Park::try_new()?.root_id().as_u64();
        let inner = current_loop()?;
        inner
            .push_timeout(task, deadline, id)
            .then_some(TimeoutScope { inner, task, id })
    }
}

impl Drop for TimeoutScope {
    fn drop(&mut self) {
        self.inner.pop_timeout(self.task, self.id);
    }
}

/// Whether the caller runs in a task of this thread's event loop: a task, or a coroutine that
/// a task entered (whose waits are the task's).
pub fn in_task() -> bool {
    current_task().is_some()
}

/// Lets the other ready tasks run, then continues: the task goes to the back of the ready
/// queue. Outside any coroutine, yields the thread.
///
/// In a task itself, [`costack::yield_now`] does the same. In a coroutine nested in a task
/// (a generator), `costack::yield_now` returns to its enterer, while this one yields the whole
/// task to the loop.
///
/// # Panics
/// Inside a coroutine that no task of this thread's loop entered.
pub fn yield_now() {
    match begin_wait() {
        Some(w) => {
            w.inner.wake(w.key);
            w.park(None);
        }
        None => std::thread::yield_now(),
    }
}
