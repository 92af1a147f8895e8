//! The public loop: [`EventLoop`], and the free functions that reach the thread's loop.
//!
//! Top floor: imports the loop proper (`runtime`), tasks (`task`), bottom halves (`bh`) and the
//! [`LoopHandle`](crate::LoopHandle) (`remote`). How a loop is built is in the `builder`
//! module; how it runs (the ready queue, the one place it waits, shutdown) in `runtime`.

use crate::bh::BottomHalf;
use crate::op::IoBackend;
use crate::remote::LoopHandle;
use crate::runtime::{clear_current, current_loop, expect_loop, Inner};
use crate::task::{spawn_on, JoinHandle, TaskBuilder};
use std::fmt;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::time::Duration;

/// An event loop: runs coroutines (tasks) and resumes them when what they wait for is ready.
///
/// One per thread, like QEMU's `AioContext`: creating it makes it the thread's loop, which the
/// free functions of this crate ([`spawn`](crate::spawn), [`sleep`](crate::sleep), the sockets…) use. It is
/// bound to its thread (`!Send`); other threads reach it through a [`LoopHandle`].
///
/// The loop runs only inside [`block_on`](EventLoop::block_on) (or a
/// [`join`](JoinHandle::join) outside any coroutine). Dropping it drops every task on it: the
/// stacks of suspended tasks unwind, so their sockets close and their guards release; queued
/// callbacks and messages from other threads are dropped unrun, and the worker threads of
/// [`run_blocking`](crate::run_blocking) exit once their current job is done. Destructors that
/// run during that unwinding must not wait (there is no loop left to wake them).
///
/// ```
/// use costack_aio::EventLoop;
///
/// let lp = EventLoop::new();
/// let n = lp.block_on(|| {
///     let h = costack_aio::spawn(|| 6 * 7);
///     h.join()
/// });
/// assert_eq!(n, 42);
/// ```
pub struct EventLoop {
    inner: Rc<Inner>,
}

impl EventLoop {
    /// Wraps a loop that was just made the thread's loop.
    pub(crate) fn from_inner(inner: Rc<Inner>) -> EventLoop {
        EventLoop { inner }
    }
}

impl EventLoop {
    /// Runs `f` as a task and drives the loop until it returns; returns its value, or
    /// continues its panic. Other tasks run meanwhile; those still unfinished when `f` returns
    /// stay on the loop, suspended until the next `block_on`.
    ///
    /// This is how synchronous code calls coroutine code (QEMU's generated `bdrv_*` wrappers):
    /// called from inside a coroutine, `block_on` just calls `f`.
    ///
    /// # Panics
    /// Continuing `f`'s panic; and if the loop is already running (called from a
    /// [`call_soon`](EventLoop::call_soon) callback).
    pub fn block_on<F, T>(&self, f: F) -> T
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        if costack::in_coroutine() {
            return f();
        }
        let h = spawn_on(&self.inner, &TaskBuilder::new(), f);
        h.drive(&self.inner);
        h.join()
    }

    /// Spawns `f` as a task of this loop; it starts when the loop next runs.
    pub fn spawn<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        spawn_on(&self.inner, &TaskBuilder::new(), f)
    }

    /// Queues `f` to run on the loop's thread, outside any coroutine, in FIFO order with the
    /// tasks that are ready (QEMU's bottom halves). It cannot wait; it can spawn or wake.
    pub fn call_soon(&self, f: impl FnOnce() + 'static) {
        self.inner.call_soon(Box::new(f));
    }

    /// A [`BottomHalf`] on this loop: a reusable callback, run in the loop's next turn each
    /// time it is scheduled (at most once pending). See [`BottomHalf`].
    pub fn bottom_half(&self, f: impl FnMut() + 'static) -> BottomHalf {
        BottomHalf::on(&self.inner, Box::new(f))
    }

    /// Runs one turn of the loop and says whether it made progress: QEMU's
    /// `aio_poll(ctx, blocking)`, for driving the loop by hand from outside any coroutine.
    ///
    /// One turn:
    /// 1. the [bottom halves](BottomHalf) scheduled before the call join the ready queue;
    /// 2. the loop looks at I/O, cross-thread messages and timers — without waiting if
    ///    `blocking` is `false` or something is ready; otherwise it waits until at least one
    ///    event comes (readiness, an io_uring completion, a message from another thread, or
    ///    the nearest timer's deadline); what is due wakes its tasks;
    /// 3. every entry of the ready queue at that point runs once: a task is entered, a
    ///    callback ([`call_soon`](EventLoop::call_soon), [`LoopHandle::call_soon`]) or a bottom half
    ///    runs. What they queue in turn (a task that yields, a bottom half scheduled from a
    ///    callback) waits for the next turn, so a turn always ends.
    ///
    /// **Progress** means that step 3 entered a task or ran a callback or a bottom half. An
    /// event that wakes nothing — a stale wake-up, readiness nobody waits for, a cancelled
    /// bottom half — is no progress; so with `blocking == true` the result can still be `false`,
    /// as in QEMU. With `blocking == true` on a loop where nothing could ever happen (no tasks,
    /// no timers, nothing queued, and no [`LoopHandle`] or [`Waker`](crate::Waker) that another
    /// thread could use), it only looks (as with `false`) instead of waiting forever. That is
    /// judged when the wait starts: if the last handle held elsewhere is dropped unused while
    /// the loop waits, the wait goes on, as QEMU's `aio_poll(ctx, true)` on an idle context
    /// does (bound it with a timer or a task's [`sleep`](crate::sleep) if that can happen).
    ///
    /// `while lp.poll(false) {}` runs the loop until it has nothing left to do without waiting.
    ///
    /// ```
    /// use costack_aio::EventLoop;
    /// use std::time::Duration;
    ///
    /// let lp = EventLoop::new();
    /// assert!(!lp.poll(false)); // nothing to do
    /// let h = lp.spawn(|| costack_aio::sleep(Duration::from_millis(5)));
    /// assert!(lp.poll(false)); // the task started, and went to sleep
    /// assert!(!lp.poll(false)); // it sleeps
    /// while !h.is_finished() {
    ///     lp.poll(true); // waits for the timer, then the task finishes
    /// }
    /// assert!(!lp.poll(true)); // nothing could happen any more: no wait
    /// ```
    ///
    /// # Panics
    /// If called while the loop runs (from one of its tasks, callbacks or bottom halves) or
    /// from inside a coroutine; continuing the panic of a callback or bottom half.
    pub fn poll(&self, blocking: bool) -> bool {
        if costack::in_coroutine() {
            panic!("costack-aio: EventLoop::poll cannot be called from inside a coroutine");
        }
        self.inner.poll(blocking)
    }

    /// Sets the limit of adaptive polling (zero turns it off; the default, unless
    /// [`LoopBuilder::poll_max`](crate::LoopBuilder::poll_max) said otherwise). It can be
    /// changed at any time, also from a task of the loop; the window is clamped to the new
    /// limit at once.
    ///
    /// When the loop has nothing to run and would sleep in the kernel until an event or its
    /// next timer, it first polls — looks at the io_uring completion queue (no system call)
    /// and the epoll set (an `epoll_wait` with a zero timeout, one system call) again and
    /// again — for the current window, never past the next timer. If that finds an event, the
    /// loop goes on without sleeping. The window tunes itself after each such wait, as QEMU's
    /// does (`poll-max-ns` with the default `poll-grow` and `poll-shrink`):
    ///
    /// * the event came within the window: the window stays;
    /// * it came later, but within `max`: the window doubles (starting at 4 µs), up to `max`;
    /// * it came later than `max` (or the timer fired after more than `max`): polling could not
    ///   have helped, and the window drops to zero until short waits make it grow again.
    ///
    /// So an idle loop stops polling after its first long wait, and a loop whose events come
    /// in quick succession (a client waiting for each reply) polls for about the gap between
    /// them. The cost is CPU time: see [`LoopBuilder::poll_max`](crate::LoopBuilder::poll_max)
    /// for when it pays.
    ///
    /// ```
    /// use costack_aio::EventLoop;
    /// use std::time::Duration;
    ///
    /// let lp = EventLoop::new();
    /// assert_eq!(lp.poll_max(), Duration::ZERO); // off by default
    /// lp.set_poll_max(Duration::from_secs(1));
    /// lp.block_on(|| {
    ///     // Waits of 1 ms (shorter than the limit) each double the window.
    ///     for _ in 0..3 {
    ///         costack_aio::sleep(Duration::from_millis(1));
    ///     }
    /// });
    /// assert_eq!(lp.poll_window(), Duration::from_micros(16));
    /// lp.set_poll_max(Duration::ZERO);
    /// assert_eq!(lp.poll_window(), Duration::ZERO);
    /// ```
    pub fn set_poll_max(&self, max: Duration) {
        self.inner.set_poll_max(max);
    }

    /// The limit of adaptive polling (zero: off). See [`set_poll_max`](EventLoop::set_poll_max).
    pub fn poll_max(&self) -> Duration {
        self.inner.poll_max()
    }

    /// How long the loop will poll before its next sleep: the self-tuned window, at most
    /// [`poll_max`](EventLoop::poll_max). See [`set_poll_max`](EventLoop::set_poll_max).
    pub fn poll_window(&self) -> Duration {
        self.inner.poll_window()
    }

    /// How many times the loop has looked for events while polling since it was built: each
    /// look is one `epoll_wait` with a zero timeout (a system call) and a look at the io_uring
    /// completion queue. Zero while polling is off. Divide by the operations done to see what
    /// polling costs.
    pub fn poll_count(&self) -> u64 {
        self.inner.poll_count()
    }

    /// A handle other threads can use to run closures and spawn tasks on this loop.
    pub fn handle(&self) -> LoopHandle {
        LoopHandle::new(self.inner.remote().clone())
    }

    /// How many tasks the loop holds (running, ready or waiting).
    pub fn task_count(&self) -> usize {
        self.inner.task_count()
    }

    /// Which path file I/O ([`fs::File`](crate::fs::File)) takes on this loop: io_uring, or
    /// the worker pool. See [`LoopBuilder::io_uring`](crate::LoopBuilder::io_uring).
    ///
    /// ```
    /// use costack_aio::{EventLoop, IoBackend};
    ///
    /// let lp = EventLoop::new();
    /// match lp.io_backend() {
    ///     IoBackend::IoUring => println!("requests go to the kernel's ring"),
    ///     IoBackend::ThreadPool => println!("requests run on worker threads"),
    /// }
    /// ```
    pub fn io_backend(&self) -> IoBackend {
        self.inner.io_backend()
    }

    /// Why this loop does not use io_uring although it was allowed to (the error of
    /// `io_uring_setup`, or the missing kernel feature); `None` when it uses io_uring or was told
    /// not to.
    pub fn io_uring_unavailable_reason(&self) -> Option<&str> {
        self.inner.io_uring_error()
    }
}

impl fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventLoop")
            .field("id", &self.inner.id())
            .field("tasks", &self.task_count())
            .finish()
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        // The thread-local pointer stays set while tasks unwind: their destructors
        // (deregistering sockets, removing timers) use the loop.
        let r = catch_unwind(AssertUnwindSafe(|| self.inner.shutdown()));
        clear_current(&self.inner);
        if let Err(p) = r {
            resume_unwind(p);
        }
    }
}

/// Queues `f` on this thread's event loop: see [`EventLoop::call_soon`].
///
/// # Panics
/// If the thread has no event loop.
pub fn call_soon(f: impl FnOnce() + 'static) {
    expect_loop("call_soon").call_soon(Box::new(f));
}

/// A [`LoopHandle`] to this thread's event loop, if it has one.
pub fn current_handle() -> Option<LoopHandle> {
    current_loop().map(|l| LoopHandle::new(l.remote().clone()))
}
