//! The loop proper: the task table, the ready queue, the one place where the loop waits, and
//! shutdown.
//!
//! First floor: imports the ground floor only — [`key`](crate::key), and the drivers' machinery
//! it composes: the reactor (`reactor`), the timer map (`timers`), the io_uring ring (`uring`),
//! the worker pool (`pool`), the cross-thread mailbox (`mailbox`) and the adaptive polling
//! window (`poll_window`). It never imports the wait
//! protocol (`wait`), the operations built on it (`io`, `fs`, `time`, ...), the tasks (`task`)
//! or the public loop (`event_loop`): they all sit above and call [`Inner`]'s methods. Its fields
//! are private.
//!
//! How a wait refers to a task, and why a stale wake-up is harmless, is explained in the `wait`
//! module; here is the table side of it: an entry per task, keyed by the coroutine's
//! [`CoId`](costack::CoId), that owns the only strong [`CoHandle`] the loop keeps, with the
//! task's epoch counter. Nothing outside the table holds a strong handle, so dropping the
//! table's handle (cancel, shutdown) unwinds a suspended coroutine at once.
//!
//! # The loop in the resume contract
//!
//! The loop is the [`Driver`] of its tasks (`costack::park`): each task's
//! coroutine names it, so a wake-up of anything that waits in a task — a `costack::sync` lock
//! handed over, a future awaited with `costack::bridge::await_future`, a coroutine nested in the
//! task (a generator pulling from a socket) — comes to the loop, which queues the task. A wait
//! is a [`Park`](costack::Park): it finds the task as the root of the running chain (so a
//! nested coroutine waits on its task's behalf), and parks, which suspends the chain up to the
//! task. When the task comes back to the loop, the loop looks at how it left: parked (it waits
//! for a wake-up) or a plain yield (`costack::yield_now`), which puts it back on the ready
//! queue like [`yield_now`](crate::yield_now).

use crate::key::{IdMap, TaskKey};
use crate::mailbox::{Msg, Remote};
use crate::op::IoBackend;
use crate::poll_window::PollWindow;
use crate::pool::Pool;
use crate::reactor::Reactor;
use crate::timers::{TimerAction, Timers};
use crate::uring::Uring;
use costack::{CoHandle, Driver};
use std::any::Any;
use std::cell::{Cell, OnceCell, RefCell};
use std::collections::VecDeque;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::ptr;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

thread_local! {
    /// The thread's event loop, or null. Set by [`set_current`] when a loop is built, cleared
    /// by [`clear_current`] when it is dropped, before the `EventLoop`'s own `Rc` is released,
    /// so a non-null pointer is always live.
    static CURRENT: Cell<*const Inner> = const { Cell::new(ptr::null()) };
}

/// The thread's event loop, if it has one (a new strong reference).
pub(crate) fn current_loop() -> Option<Rc<Inner>> {
    let p = CURRENT.with(|c| c.get());
    if p.is_null() {
        return None;
    }
    // SAFETY: CURRENT is non-null only while the `EventLoop` that owns an `Rc<Inner>` for this
    // pointer is alive (see `clear_current`), and only on its own thread (thread-local), so
    // the allocation is live; taking a new strong count keeps it so for the returned `Rc`.
    unsafe {
        Rc::increment_strong_count(p);
        Some(Rc::from_raw(p))
    }
}

/// The thread's event loop, or a panic that says there is none.
pub(crate) fn expect_loop(what: &str) -> Rc<Inner> {
    match current_loop() {
        Some(l) => l,
        None => panic!(
            "costack-aio: {what} needs an event loop on this thread (create an `EventLoop` first)"
        ),
    }
}

/// Whether this thread has an event loop.
pub(crate) fn has_current() -> bool {
    !CURRENT.with(|c| c.get()).is_null()
}

/// Makes `inner` this thread's loop. The caller keeps `inner` alive until [`clear_current`].
pub(crate) fn set_current(inner: &Rc<Inner>) {
    CURRENT.with(|c| c.set(Rc::as_ptr(inner)));
}

/// Forgets `inner` as this thread's loop (if it is), before its owner releases it.
pub(crate) fn clear_current(inner: &Rc<Inner>) {
    CURRENT.with(|c| {
        if c.get() == Rc::as_ptr(inner) {
            c.set(ptr::null());
        }
    });
}

/// The part of a task's join state the loop needs without knowing `T`.
pub(crate) trait TaskShared {
    /// The task is being dropped on purpose (cancel, shutdown): the forced unwind that follows
    /// must not be mistaken for a panic of the task.
    fn mark_cancelled(&self);
}

/// A task's entry in the table.
pub(crate) struct Task {
    co: CoHandle,
    /// The top of the coroutine's stack, where its control block and its outer frames are.
    stack_top: usize,
    epoch: u32,
    /// A ready-queue entry with the current epoch exists.
    queued: bool,
    shared: Rc<dyn TaskShared>,
    /// The `timeout` scopes active in this task: deadline and scope id.
    timeouts: Vec<(Instant, u64)>,
    /// The `Send` waker of this task for futures it awaits, made on first use.
    waker: Option<std::task::Waker>,
}

/// The loop as the [`Driver`] of its tasks (see the module docs).
struct LoopDriver {
    inner: Weak<Inner>,
}

impl Driver for LoopDriver {
    fn wake(&self, root: &CoHandle) {
        if let Some(inner) = self.inner.upgrade() {
            inner.wake_task(root.id().as_u64());
        }
    }

    fn waker(&self, root: &CoHandle) -> Option<std::task::Waker> {
        let inner = self.inner.upgrade()?;
        let id = root.id().as_u64();
        let mut tasks = inner.tasks.borrow_mut();
        let t = tasks.get_mut(&id)?;
        Some(
            t.waker
                .get_or_insert_with(|| task_waker(inner.remote.clone(), id))
                .clone(),
        )
    }
}

/// A bottom half as the loop sees it (the type is `bh::BottomHalf`'s state): something queued
/// at most once that runs in the turn after it was scheduled.
pub(crate) trait BhRun {
    /// Runs the bottom half if it is still scheduled; whether its callback ran.
    fn run(self: Rc<Self>) -> bool;
}

/// Something to run on the loop's thread, in FIFO order.
enum Runnable {
    Task(TaskKey),
    Call(Box<dyn FnOnce()>),
    Bh(Rc<dyn BhRun>),
}

/// What a loop is built from (see `LoopBuilder::build`).
pub(crate) struct Parts {
    pub(crate) id: u64,
    pub(crate) reactor: Reactor,
    pub(crate) remote: Remote,
    pub(crate) stack_size: usize,
    pub(crate) blocking_threads: usize,
    pub(crate) io_uring_error: Option<String>,
    pub(crate) uring: Option<Uring>,
    /// The limit of the adaptive polling window (zero: off).
    pub(crate) poll_max: Duration,
}

/// The event loop proper, shared (`Rc`) by the `EventLoop`, the thread-local pointer and the
/// waits in progress.
pub(crate) struct Inner {
    id: u64,
    /// The driver every task of this loop names (one, shared).
    driver: Rc<LoopDriver>,
    tasks: RefCell<IdMap<Task>>,
    ready: RefCell<VecDeque<Runnable>>,
    /// Bottom halves scheduled during this turn: they join the ready queue when the next turn
    /// starts.
    bh_next: RefCell<Vec<Rc<dyn BhRun>>>,
    reactor: Reactor,
    timers: RefCell<Timers>,
    remote: Arc<Remote>,
    running: Cell<bool>,
    closing: Cell<bool>,
    stack_size: usize,
    blocking_threads: usize,
    pool: OnceCell<Arc<Pool>>,
    /// Messages taken from the remote queue, kept for their capacity.
    remote_buf: RefCell<Vec<Msg>>,
    /// Why io_uring is not used, when it was wanted but could not be had.
    io_uring_error: Option<String>,
    /// The io_uring driver, when file I/O goes through the ring.
    uring: Option<Uring>,
    /// How long the loop polls before it sleeps (see `poll_window`).
    poll_window: Cell<PollWindow>,
    /// How many looks at the events the loop took while polling (each one an `epoll_wait` with
    /// a zero timeout, after a look at the io_uring completion queue).
    poll_count: Cell<u64>,
}

impl Inner {
    /// Builds the loop from its parts; the caller makes it the thread's loop.
    pub(crate) fn new(p: Parts) -> Rc<Inner> {
        Rc::new_cyclic(|weak| Inner {
            id: p.id,
            driver: Rc::new(LoopDriver {
                inner: weak.clone(),
            }),
            tasks: RefCell::new(IdMap::default()),
            ready: RefCell::new(VecDeque::new()),
            bh_next: RefCell::new(Vec::new()),
            reactor: p.reactor,
            timers: RefCell::new(Timers::default()),
            remote: Arc::new(p.remote),
            running: Cell::new(false),
            closing: Cell::new(false),
            stack_size: p.stack_size,
            blocking_threads: p.blocking_threads,
            pool: OnceCell::new(),
            remote_buf: RefCell::new(Vec::new()),
            io_uring_error: p.io_uring_error,
            uring: p.uring,
            poll_window: Cell::new(PollWindow::new(p.poll_max)),
            poll_count: Cell::new(0),
        })
    }

    /// The loop's id: unique in the process, never reused.
    #[inline]
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Whether the loop is running (a task, callback or bottom half of it is on the stack).
    pub(crate) fn is_running(&self) -> bool {
        self.running.get()
    }

    /// The readiness driver.
    #[inline]
    pub(crate) fn reactor(&self) -> &Reactor {
        &self.reactor
    }

    /// The io_uring driver, when file I/O goes through the ring.
    #[inline]
    pub(crate) fn uring(&self) -> Option<&Uring> {
        self.uring.as_ref()
    }

    /// The cross-thread mailbox.
    #[inline]
    pub(crate) fn remote(&self) -> &Arc<Remote> {
        &self.remote
    }

    /// Which path file I/O takes: the ring when there is one.
    pub(crate) fn io_backend(&self) -> IoBackend {
        if self.uring.is_some() {
            IoBackend::IoUring
        } else {
            IoBackend::ThreadPool
        }
    }

    /// Why io_uring is not used although it was allowed.
    pub(crate) fn io_uring_error(&self) -> Option<&str> {
        self.io_uring_error.as_deref()
    }

    /// The limit of the adaptive polling window (zero: polling off).
    pub(crate) fn poll_max(&self) -> Duration {
        self.poll_window.get().max()
    }

    /// Changes the limit of the adaptive polling window (zero turns polling off).
    pub(crate) fn set_poll_max(&self, max: Duration) {
        let mut w = self.poll_window.get();
        w.set_max(max);
        self.poll_window.set(w);
    }

    /// How long the loop will poll before its next sleep.
    pub(crate) fn poll_window(&self) -> Duration {
        self.poll_window.get().current()
    }

    /// How many looks at the events the loop took while polling, since it was built.
    pub(crate) fn poll_count(&self) -> u64 {
        self.poll_count.get()
    }

    /// The default stack size of tasks.
    pub(crate) fn stack_size(&self) -> usize {
        self.stack_size
    }

    /// Whether the loop is shutting down (new tasks are dropped at once).
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.get()
    }

    /// How many tasks the table holds.
    pub(crate) fn task_count(&self) -> usize {
        self.tasks.borrow().len()
    }

    /// Queues the task `co` to be entered, whatever wait it is in (a wake-up through the
    /// resume contract; the wait re-checks its condition).
    pub(crate) fn wake_task(&self, co: u64) {
        self.queue_task(co, None);
    }

    /// Wakes the task waiting with `key`, if it still is: queues it to be entered.
    #[inline]
    pub(crate) fn wake(&self, key: TaskKey) {
        self.queue_task(key.co, Some(key.epoch));
    }

    /// Queues the task `co` to be entered unless it is gone, already queued, or (with `epoch`)
    /// no longer in the wait that `epoch` names.
    fn queue_task(&self, co: u64, epoch: Option<u32>) {
        let mut tasks = self.tasks.borrow_mut();
        let Some(t) = tasks.get_mut(&co) else { return };
        if t.queued || epoch.is_some_and(|e| e != t.epoch) {
            return;
        }
        t.queued = true;
        let key = TaskKey { co, epoch: t.epoch };
        drop(tasks);
        self.ready.borrow_mut().push_back(Runnable::Task(key));
    }

    /// Carries out a message from another thread (or, from [`deliver`], from this one).
    pub(crate) fn handle(&self, msg: Msg) {
        match msg {
            Msg::Wake(key) => self.wake(key),
            Msg::WakeTask(co) => self.wake_task(co),
            Msg::Call(f) => self.call_soon(f),
        }
    }

    /// Queues a callback to run on the loop's thread.
    pub(crate) fn call_soon(&self, f: Box<dyn FnOnce()>) {
        self.ready.borrow_mut().push_back(Runnable::Call(f));
    }

    /// Queues a bottom half for the next turn of the loop (the caller queues each at most
    /// once); `false` if the loop is shutting down and did not take it.
    pub(crate) fn schedule_bh(&self, bh: Rc<dyn BhRun>) -> bool {
        if self.closing.get() {
            return false;
        }
        self.bh_next.borrow_mut().push(bh);
        true
    }

    /// Starts a turn: the bottom halves scheduled during the last one join the ready queue.
    fn start_turn(&self) {
        let mut next = self.bh_next.borrow_mut();
        if !next.is_empty() {
            self.ready
                .borrow_mut()
                .extend(next.drain(..).map(Runnable::Bh));
        }
    }

    /// Whether something is queued to run (now, or as the next turn starts).
    fn has_ready(&self) -> bool {
        !self.ready.borrow().is_empty() || !self.bh_next.borrow().is_empty()
    }

    /// The loop's worker pool, started on first use.
    pub(crate) fn pool(&self) -> &Arc<Pool> {
        self.pool
            .get_or_init(|| Arc::new(Pool::new(self.blocking_threads)))
    }

    // -----------------------------------------------------------------------------------------
    // The table side of the wait protocol (see the `wait` module)

    /// Adds the coroutine `co` as a task, names the loop as its driver, and queues it to be
    /// entered; returns its id.
    #[inline]
    pub(crate) fn add_task(&self, co: CoHandle, shared: Rc<dyn TaskShared>) -> u64 {
        co.set_driver(Some(self.driver.clone() as Rc<dyn Driver>));
        let id = co.id().as_u64();
        self.tasks.borrow_mut().insert(
            id,
            Task {
                stack_top: co.stack_bounds().1 as usize,
                co,
                epoch: 0,
                queued: true,
                shared,
                timeouts: Vec::new(),
                waker: None,
            },
        );
        self.ready
            .borrow_mut()
            .push_back(Runnable::Task(TaskKey { co: id, epoch: 0 }));
        id
    }

    /// Whether `co` is a task of this loop.
    pub(crate) fn has_task(&self, co: u64) -> bool {
        self.tasks.borrow().contains_key(&co)
    }

    /// Starts a new wait of the task `co`: bumps its epoch. Returns the key of the wait and the
    /// task's nearest `timeout` scope, or `None` if `co` is not a task of this loop.
    #[inline]
    pub(crate) fn begin_task_wait(&self, co: u64) -> Option<(TaskKey, Option<(Instant, u64)>)> {
        let mut tasks = self.tasks.borrow_mut();
        let t = tasks.get_mut(&co)?;
        t.epoch = t.epoch.wrapping_add(1);
        t.queued = false;
        let key = TaskKey { co, epoch: t.epoch };
        let timeout = t.timeouts.iter().copied().min_by_key(|&(d, _)| d);
        Some((key, timeout))
    }

    /// Adds the `timeout` scope `id` to the task `co`; `false` if `co` is not a task.
    pub(crate) fn push_timeout(&self, co: u64, deadline: Instant, id: u64) -> bool {
        let mut tasks = self.tasks.borrow_mut();
        let Some(t) = tasks.get_mut(&co) else {
            return false;
        };
        t.timeouts.push((deadline, id));
        true
    }

    /// Removes the `timeout` scope `id` from the task `co`.
    pub(crate) fn pop_timeout(&self, co: u64, id: u64) {
        let mut tasks = self.tasks.borrow_mut();
        if let Some(t) = tasks.get_mut(&co) {
            t.timeouts.retain(|&(_, i)| i != id);
        }
    }

    /// Adds a timer that wakes `key` at `at`; returns the entry for [`remove_timer`].
    ///
    /// [`remove_timer`]: Inner::remove_timer
    pub(crate) fn add_timer(&self, at: Instant, key: TaskKey) -> (Instant, u64) {
        self.timers.borrow_mut().insert(at, TimerAction::Wake(key))
    }

    /// Adds a timer that runs `f` on the loop's thread at `at` (it must not wait); returns the
    /// entry for [`remove_timer`].
    ///
    /// [`remove_timer`]: Inner::remove_timer
    pub(crate) fn add_timer_call(&self, at: Instant, f: Box<dyn FnOnce()>) -> (Instant, u64) {
        self.timers.borrow_mut().insert(at, TimerAction::Call(f))
    }

    /// Removes a timer entry (fired or not).
    pub(crate) fn remove_timer(&self, entry: (Instant, u64)) {
        let action = self.timers.borrow_mut().remove(entry);
        // A callback's captures are dropped here, outside the borrow.
        drop(action);
    }

    // -----------------------------------------------------------------------------------------
    // The loop

    /// Removes a task from the table: drops the loop's handle (outside the borrow). A
    /// suspended coroutine whose last handle this was unwinds now.
    pub(crate) fn remove_task(&self, co: u64) -> Option<Task> {
        self.tasks.borrow_mut().remove(&co)
    }

    /// Enters the task waiting with `key`, if the key is still good; whether it was entered.
    fn run_task(&self, key: TaskKey) -> bool {
        let co = {
            let mut tasks = self.tasks.borrow_mut();
            match tasks.get_mut(&key.co) {
                Some(t) if t.epoch == key.epoch => {
                    t.queued = false;
                    t.epoch = t.epoch.wrapping_add(1);
                    t.co.clone()
                }
                _ => return false,
            }
        };
        // Someone else may have it now (it was entered through a handle, or a coroutine that
        // entered it waits with it): then they enter it, and it re-checks its condition.
        if !co.can_enter() {
            return false;
        }
        let _ = co.enter();
        if !co.is_finished() && !co.is_parked() && co.can_enter() {
            // A plain `costack::yield_now()`: let the others run, then continue it.
            self.wake_task(key.co);
        }
        // `co` may be the last handle (the task was cancelled while it ran): dropping it here,
        // on the loop's stack, unwinds the coroutine.
        drop(co);
        true
    }

    /// Runs one entry of the ready queue; whether it made progress (a task was entered, a
    /// callback or a bottom half ran).
    #[inline]
    fn run_one(&self, r: Runnable) -> bool {
        match r {
            Runnable::Task(key) => self.run_task(key),
            Runnable::Call(f) => {
                f();
                true
            }
            Runnable::Bh(bh) => bh.run(),
        }
    }

    /// Marks the loop as running until the guard is dropped.
    ///
    /// # Panics
    /// If it is running already (`what` was called from a task or a callback of this loop).
    fn enter_running(&self, what: &str) -> RunningGuard<'_> {
        if self.running.replace(true) {
            panic!(
                "costack-aio: the event loop is already running on this thread ({what} called \
                 from a task, a call_soon callback or a bottom half?)"
            );
        }
        RunningGuard(&self.running)
    }

    /// Starts loading the control block and the top frames of the next ready task into the
    /// cache while the current one runs. With a thousand tasks taking turns, each one's stack is
    /// cold when its turn comes; resuming it would otherwise stall on those misses.
    #[inline]
    fn prefetch_next(&self) {
        #[cfg(target_arch = "x86_64")]
        {
            let ready = self.ready.borrow();
            let Some(Runnable::Task(k)) = ready.front() else {
                return;
            };
            let tasks = self.tasks.borrow();
            let Some(t) = tasks.get(&k.co) else {
                return;
            };
            let mut p = t.stack_top.saturating_sub(PREFETCH_BYTES);
            while p < t.stack_top {
                // SAFETY: a prefetch is only a hint: it does not fault and has no effect on
                // the program's semantics, whatever the address.
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                        p as *const i8,
                    );
                }
                p += 64;
            }
        }
    }

    /// Runs the loop until `done()` says so.
    pub(crate) fn run_until(&self, done: &dyn Fn() -> bool) {
        let _running = self.enter_running("block_on or join");
        loop {
            self.start_turn();
            // Run what is ready, a bounded batch at a time so that I/O is polled regularly.
            for _ in 0..RUN_BUDGET {
                let next = self.ready.borrow_mut().pop_front();
                self.prefetch_next();
                match next {
                    None => break,
                    Some(r) => {
                        self.run_one(r);
                    }
                }
            }
            if done() {
                // Requests queued in this turn go to the kernel now, not at the next run.
                if let Some(u) = &self.uring {
                    u.submit();
                }
                return;
            }
            let timeout = if self.has_ready() {
                Some(Duration::ZERO)
            } else {
                self.next_timer_wait()
            };
            self.wait_for_events(timeout);
            self.fire_timers();
        }
    }

    /// How long the loop may sleep before its nearest timer (`None`: no timers).
    fn next_timer_wait(&self) -> Option<Duration> {
        self.timers
            .borrow()
            .next_deadline()
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Whether nothing could ever make progress on this loop while its thread waits in it: no
    /// tasks, no timers, nothing queued, and nobody elsewhere holding the mailbox (a
    /// `LoopHandle` or a `Waker` could send work from another thread).
    fn idle_for_good(&self) -> bool {
        self.tasks.borrow().is_empty()
            && self.timers.borrow().is_empty()
            && !self.has_ready()
            && Arc::strong_count(&self.remote) == 1
    }

    /// One turn of the loop, QEMU's `aio_poll`: see `EventLoop::poll`. Returns whether it made
    /// progress.
    pub(crate) fn poll(&self, blocking: bool) -> bool {
        let _running = self.enter_running("EventLoop::poll");
        self.start_turn();
        // A loop where nothing could ever happen only looks (messages sent before the last
        // handle was dropped are still taken) instead of waiting forever.
        let timeout = if !blocking || self.has_ready() || self.idle_for_good() {
            Some(Duration::ZERO)
        } else {
            self.next_timer_wait()
        };
        self.wait_for_events(timeout);
        self.fire_timers();
        // What is ready now runs once; what it queues (a task that yields, a bottom half it
        // schedules) waits for the next turn.
        let n = self.ready.borrow().len();
        let mut progress = false;
        for _ in 0..n {
            let next = self.ready.borrow_mut().pop_front();
            match next {
                Some(r) => progress |= self.run_one(r),
                None => break,
            }
        }
        // Requests queued in this turn go to the kernel now, not at the next turn.
        if let Some(u) = &self.uring {
            u.submit();
        }
        progress
    }

    /// The one place where the loop waits: for readiness, the eventfd of cross-thread wake-ups,
    /// the eventfd of io_uring completions, or the next timer (`timeout`; `None` waits
    /// indefinitely).
    ///
    /// With io_uring, the file requests that tasks queued during this turn go to the kernel
    /// first, in one submit, and the completions already there (page-cached reads complete
    /// during the submit) are taken before the wait, which then does not sleep. Why epoll
    /// remains the waiting point is explained in the `uring` module.
    ///
    /// With adaptive polling on (see `poll_window`), a wait that would sleep first polls for
    /// the current window — the io_uring completion queue (no system call) and the epoll set
    /// (an `epoll_wait` with a zero timeout) in turn — and sleeps only if that found nothing;
    /// how long the whole wait lasted then adapts the window.
    fn wait_for_events(&self, timeout: Option<Duration>) {
        let mut timeout = timeout;
        if let Some(u) = &self.uring {
            let again = u.submit();
            if u.reap(&mut |key| self.wake(key)) > 0 || again {
                timeout = Some(Duration::ZERO);
            }
        }
        let window = self.poll_window.get();
        if window.max().is_zero() || timeout == Some(Duration::ZERO) {
            self.look(timeout);
            return;
        }
        let start = Instant::now();
        let limit = timeout.map_or(window.current(), |t| t.min(window.current()));
        let mut found = false;
        if !limit.is_zero() {
            loop {
                self.poll_count.set(self.poll_count.get() + 1);
                if self.look(Some(Duration::ZERO)) {
                    found = true;
                    break;
                }
                if start.elapsed() >= limit {
                    break;
                }
                std::hint::spin_loop();
            }
        }
        if !found {
            let left = timeout.map(|t| t.saturating_sub(start.elapsed()));
            self.look(left);
        }
        let mut window = self.poll_window.get();
        window.adjust(start.elapsed());
        self.poll_window.set(window);
    }

    /// Looks at the epoll set (waiting at most `timeout`) and the io_uring completion queue,
    /// wakes what is due and takes the messages of other threads; whether anything came.
    fn look(&self, timeout: Option<Duration>) -> bool {
        let polled = self.reactor.poll(timeout, &mut |key| self.wake(key));
        let mut reaped = 0;
        if let Some(u) = &self.uring {
            reaped = u.reap(&mut |key| self.wake(key));
        }
        if polled.remote {
            self.drain_remote();
        }
        polled.events > 0 || reaped > 0
    }

    /// Runs the messages other threads sent: wake-ups now, calls in FIFO order.
    fn drain_remote(&self) {
        let mut buf = std::mem::take(&mut *self.remote_buf.borrow_mut());
        self.remote.take_all(&mut buf);
        for msg in buf.drain(..) {
            self.handle(msg);
        }
        *self.remote_buf.borrow_mut() = buf;
    }

    /// Runs what is due among the timers. Without timers (an echo server's turns) it does not
    /// even read the clock.
    fn fire_timers(&self) {
        if self.timers.borrow().is_empty() {
            return;
        }
        let now = Instant::now();
        loop {
            let action = self.timers.borrow_mut().pop_expired(now);
            match action {
                Some(TimerAction::Wake(k)) => self.wake(k),
                Some(TimerAction::Call(f)) => f(),
                None => break,
            }
        }
    }

    /// Drops every task (their stacks unwind), every queued callback and message.
    pub(crate) fn shutdown(&self) {
        self.closing.set(true);
        let mut first_panic: Option<Box<dyn Any + Send>> = None;
        for _ in 0..SHUTDOWN_ROUNDS {
            let tasks: Vec<Task> = self.tasks.borrow_mut().drain().map(|(_, t)| t).collect();
            let mut ready = std::mem::take(&mut *self.ready.borrow_mut());
            ready.extend(self.bh_next.borrow_mut().drain(..).map(Runnable::Bh));
            if tasks.is_empty() && ready.is_empty() {
                break;
            }
            for t in &tasks {
                t.shared.mark_cancelled();
            }
            for t in tasks {
                if let Err(p) = catch_unwind(AssertUnwindSafe(|| drop(t))) {
                    first_panic.get_or_insert(p);
                }
            }
            for r in ready {
                if let Err(p) = catch_unwind(AssertUnwindSafe(|| drop(r))) {
                    first_panic.get_or_insert(p);
                }
            }
        }
        // Requests still in the kernel: withdrawn, and waited for before their buffers go.
        if let Some(u) = &self.uring {
            u.shutdown();
        }
        // Messages from other threads: their closures (and the senders inside) are dropped.
        drop(self.remote.close());
        let timers = self.timers.borrow_mut().take_all();
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| drop(timers))) {
            first_panic.get_or_insert(p);
        }
        if let Some(pool) = self.pool.get() {
            pool.shutdown();
        }
        if let Some(p) = first_panic {
            if !std::thread::panicking() {
                resume_unwind(p);
            }
        }
    }
}

/// How much of the top of the next task's stack `prefetch_next` loads: the control block and
/// the frames of a task suspended in an I/O wait (about 2 KiB deep in the echo server).
const PREFETCH_BYTES: usize = 2304;

/// Tasks (or callbacks) run between two looks at I/O when the ready queue stays busy.
const RUN_BUDGET: usize = 128;

/// Clears the loop's `running` flag when dropped.
struct RunningGuard<'a>(&'a Cell<bool>);

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}
/// Shutdown repeats while unwinding tasks spawn new ones, this many times at most.
const SHUTDOWN_ROUNDS: usize = 64;

/// Hands `msg` to the loop of `remote`: at once on that loop's own thread, as a message from
/// any other (a wake of a loop that is gone is lost, as nothing waits on it any more).
pub(crate) fn deliver(remote: &Remote, msg: Msg) {
    match current_loop().filter(|l| l.id == remote.loop_id()) {
        Some(inner) => inner.handle(msg),
        None => {
            let _ = remote.send(msg);
        }
    }
}

/// The `Send` waker of the task `co` for futures it awaits (the loop's
/// [`Driver::waker`](costack::Driver::waker)): waking it, from any thread, queues the task on
/// its home loop whatever wait it is in; the wait re-checks its condition. One per task,
/// reused for all its awaits.
fn task_waker(remote: Arc<Remote>, co: u64) -> std::task::Waker {
    struct TaskWake {
        remote: Arc<Remote>,
        co: u64,
    }
    impl std::task::Wake for TaskWake {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            deliver(&self.remote, Msg::WakeTask(self.co));
        }
    }
    std::task::Waker::from(Arc::new(TaskWake { remote, co }))
}
