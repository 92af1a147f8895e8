//! The event loop: the task table, the ready queue, and the one place where the loop waits.
//!
//! # How a wait works
//!
//! Every coroutine the loop runs is a *task*: an entry in the loop's task table, keyed by the
//! coroutine's [`CoId`](costack::CoId), that owns the only strong [`CoHandle`] the loop keeps.
//! A task that must wait (for a socket, a timer, a worker thread, a lock) starts a *wait*: the
//! task's epoch counter is bumped and the pair `(coroutine id, epoch)` — a [`TaskKey`] — is
//! handed to whatever will end the wait (the fd's waiter list, the timer map, a cross-thread
//! [`Waker`](crate::Waker)). Then the coroutine yields to the loop.
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
//! # The loop in the resume contract
//!
//! The loop is the [`Driver`] of its tasks (`costack::park`): each task's
//! coroutine names it, so a wake-up of anything that waits in a task — a `costack::sync` lock
//! handed over, a future awaited with `costack::bridge::await_future`, a coroutine nested in the
//! task (a generator pulling from a socket) — comes to the loop, which queues the task. A wait
//! is a [`Park`]: it finds the task as the root of the running chain (so a
//! nested coroutine waits on its task's behalf), and parks, which suspends the chain up to the
//! task. When the task comes back to the loop, the loop looks at how it left: parked (it waits
//! for a wake-up) or a plain yield (`costack::yield_now`), which puts it back on the ready
//! queue like [`yield_now`].

use crate::blocking::Pool;
use crate::fs::{BufPool, IoBackend};
use crate::reactor::Reactor;
use crate::remote::{LoopHandle, Msg, Remote};
use crate::time::{TimeoutUnwind, Timers};
use crate::uring::Uring;
use costack::{Builder, CoHandle, Driver, Park, DEFAULT_STACK_SIZE};
use std::any::Any;
use std::cell::{Cell, OnceCell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::ptr;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

thread_local! {
    /// The thread's event loop, or null. Set by `EventLoop::build`, cleared by its `Drop`
    /// before the `EventLoop`'s own `Rc` is released, so a non-null pointer is always live.
    static CURRENT: Cell<*const Inner> = const { Cell::new(ptr::null()) };
}

/// Loop ids: unique in the process, never reused, so a registration or a waker that outlives
/// its loop can tell that it did.
static NEXT_LOOP_ID: AtomicU64 = AtomicU64::new(1);

/// The thread's event loop, if it has one (a new strong reference).
pub(crate) fn current_loop() -> Option<Rc<Inner>> {
    let p = CURRENT.with(|c| c.get());
    if p.is_null() {
        return None;
    }
    // SAFETY: CURRENT is non-null only while the `EventLoop` that owns an `Rc<Inner>` for this
    // pointer is alive (see `EventLoop::drop`), and only on its own thread (thread-local), so
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

/// Identifies one wait of one task: see the module docs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct TaskKey {
    pub(crate) co: u64,
    pub(crate) epoch: u32,
}

/// Hashes coroutine ids (sequential numbers) with one multiplication.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0 ^ u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ self.0.rotate_left(5)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// The part of a task's join state the loop needs without knowing `T`.
pub(crate) trait TaskShared {
    /// The task is being dropped on purpose (cancel, shutdown): the forced unwind that follows
    /// must not be mistaken for a panic of the task.
    fn mark_cancelled(&self);
}

struct Task {
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
pub(crate) struct LoopDriver {
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
                .get_or_insert_with(|| crate::remote::task_waker(inner.remote.clone(), id))
                .clone(),
        )
    }
}

/// Something to run on the loop's thread, in FIFO order.
pub(crate) enum Runnable {
    Task(TaskKey),
    Call(Box<dyn FnOnce()>),
}

/// The event loop proper, shared (`Rc`) by the `EventLoop`, the thread-local pointer and the
/// waits in progress.
pub(crate) struct Inner {
    pub(crate) id: u64,
    /// The driver every task of this loop names (one, shared).
    driver: Rc<LoopDriver>,
    tasks: RefCell<IdMap<Task>>,
    ready: RefCell<VecDeque<Runnable>>,
    pub(crate) reactor: Reactor,
    pub(crate) timers: RefCell<Timers>,
    pub(crate) remote: Arc<Remote>,
    running: Cell<bool>,
    closing: Cell<bool>,
    stack_size: usize,
    blocking_threads: usize,
    pool: OnceCell<Arc<Pool>>,
    /// Messages taken from the remote queue, kept for their capacity.
    remote_buf: RefCell<Vec<Msg>>,
    /// Which path file I/O takes (see the `fs` module).
    pub(crate) io_backend: IoBackend,
    /// Why io_uring is not used, when it was wanted but could not be had.
    io_uring_error: Option<String>,
    /// Loop-owned bounce buffers for file I/O.
    pub(crate) bufs: RefCell<BufPool>,
    /// The io_uring driver, when file I/O goes through the ring.
    pub(crate) uring: Option<Uring>,
}

impl Inner {
    /// Queues the task `co` to be entered, whatever wait it is in (a wake-up through the
    /// resume contract; the wait re-checks its condition).
    pub(crate) fn wake_task(&self, co: u64) {
        self.queue_task(co, None);
    }

    /// Wakes the task waiting with `key`, if it still is: queues it to be entered.
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

    /// Carries out a message from another thread (or, from [`remote::deliver`], from this one).
    ///
    /// [`remote::deliver`]: crate::remote::deliver
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

    /// The loop's worker pool, started on first use.
    pub(crate) fn pool(&self) -> &Arc<Pool> {
        self.pool
            .get_or_init(|| Arc::new(Pool::new(self.blocking_threads)))
    }

    /// Spawns `f` as a task of this loop.
    pub(crate) fn spawn<F, T>(&self, opts: &TaskBuilder, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        let shared = Rc::new(JoinShared::<T>::new());
        let handle = JoinHandle {
            shared: shared.clone(),
            co: 0,
            loop_id: self.id,
        };
        if self.closing.get() {
            // The loop is shutting down: the task would be dropped at once.
            shared.cancelled.set(true);
            drop(f);
            return handle;
        }
        let s2 = shared.clone();
        let mut b = Builder::new().stack_size(opts.stack_size.unwrap_or(self.stack_size));
        if let Some(n) = &opts.name {
            b = b.name(n.clone());
        }
        let co = b.create(move || task_main(s2, f));
        co.set_driver(Some(self.driver.clone() as Rc<dyn Driver>));
        let id = co.id().as_u64();
        self.tasks.borrow_mut().insert(
            id,
            Task {
                stack_top: co.stack_bounds().1 as usize,
                co: co.handle(),
                epoch: 0,
                queued: true,
                shared: shared as Rc<dyn TaskShared>,
                timeouts: Vec::new(),
                waker: None,
            },
        );
        self.ready
            .borrow_mut()
            .push_back(Runnable::Task(TaskKey { co: id, epoch: 0 }));
        JoinHandle { co: id, ..handle }
    }

    /// Removes a task from the table: drops the loop's handle (outside the borrow). A
    /// suspended coroutine whose last handle this was unwinds now.
    fn remove_task(&self, co: u64) -> Option<Task> {
        self.tasks.borrow_mut().remove(&co)
    }

    /// Enters the task waiting with `key`, if the key is still good.
    fn run_task(&self, key: TaskKey) {
        let co = {
            let mut tasks = self.tasks.borrow_mut();
            match tasks.get_mut(&key.co) {
                Some(t) if t.epoch == key.epoch => {
                    t.queued = false;
                    t.epoch = t.epoch.wrapping_add(1);
                    t.co.clone()
                }
                _ => return,
            }
        };
        // Someone else may have it now (it was entered through a handle, or a coroutine that
        // entered it waits with it): then they enter it, and it re-checks its condition.
        if !co.can_enter() {
            return;
        }
        let _ = co.enter();
        if !co.is_finished() && !co.is_parked() && co.can_enter() {
            // A plain `costack::yield_now()`: let the others run, then continue it.
            self.wake_task(key.co);
        }
        // `co` may be the last handle (the task was cancelled while it ran): dropping it here,
        // on the loop's stack, unwinds the coroutine.
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
    fn run_until(&self, done: &dyn Fn() -> bool) {
        if self.running.replace(true) {
            panic!(
                "costack-aio: the event loop is already running on this thread (block_on or \
                 join called from a call_soon callback?)"
            );
        }
        struct Reset<'a>(&'a Cell<bool>);
        impl Drop for Reset<'_> {
            fn drop(&mut self) {
                self.0.set(false);
            }
        }
        let _reset = Reset(&self.running);
        loop {
            // Run what is ready, a bounded batch at a time so that I/O is polled regularly.
            for _ in 0..RUN_BUDGET {
                let next = self.ready.borrow_mut().pop_front();
                self.prefetch_next();
                match next {
                    None => break,
                    Some(Runnable::Task(key)) => self.run_task(key),
                    Some(Runnable::Call(f)) => f(),
                }
            }
            if done() {
                // Requests queued in this turn go to the kernel now, not at the next run.
                if let Some(u) = &self.uring {
                    u.submit();
                }
                return;
            }
            let timeout = if !self.ready.borrow().is_empty() {
                Some(Duration::ZERO)
            } else {
                self.timers
                    .borrow()
                    .next_deadline()
                    .map(|d| d.saturating_duration_since(Instant::now()))
            };
            self.wait_for_events(timeout);
            self.fire_timers();
        }
    }

    /// The one place where the loop waits: for readiness, the eventfd of cross-thread wake-ups,
    /// the eventfd of io_uring completions, or the next timer (`timeout`; `None` waits
    /// indefinitely).
    ///
    /// With io_uring, the file requests that tasks queued during this turn go to the kernel
    /// first, in one submit, and the completions already there (page-cached reads complete
    /// during the submit) are taken before the wait, which then does not sleep. Why epoll
    /// remains the waiting point is explained in the `uring` module.
    fn wait_for_events(&self, timeout: Option<Duration>) {
        let mut timeout = timeout;
        if let Some(u) = &self.uring {
            let again = u.submit();
            if u.reap(&mut |key| self.wake(key)) > 0 || again {
                timeout = Some(Duration::ZERO);
            }
        }
        let remote = self.reactor.poll(timeout, &mut |key| self.wake(key));
        if let Some(u) = &self.uring {
            u.reap(&mut |key| self.wake(key));
        }
        if remote {
            self.drain_remote();
        }
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

    fn fire_timers(&self) {
        let now = Instant::now();
        loop {
            let key = self.timers.borrow_mut().pop_expired(now);
            match key {
                Some(k) => self.wake(k),
                None => break,
            }
        }
    }

    /// Drops every task (their stacks unwind), every queued callback and message.
    fn shutdown(&self) {
        self.closing.set(true);
        let mut first_panic: Option<Box<dyn Any + Send>> = None;
        for _ in 0..SHUTDOWN_ROUNDS {
            let tasks: Vec<Task> = self.tasks.borrow_mut().drain().map(|(_, t)| t).collect();
            let ready = std::mem::take(&mut *self.ready.borrow_mut());
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
        self.timers.borrow_mut().clear();
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
/// Shutdown repeats while unwinding tasks spawn new ones, this many times at most.
const SHUTDOWN_ROUNDS: usize = 64;

/// The body of every task: runs `f`, stores its result (or panic) for the `JoinHandle`, wakes
/// the joiner, and removes the task from the table.
fn task_main<F, T>(shared: Rc<JoinShared<T>>, f: F)
where
    F: FnOnce() -> T,
{
    let r = catch_unwind(AssertUnwindSafe(f));
    if r.is_err() && shared.cancelled.get() {
        // The coroutine is being dropped (cancel or shutdown): let the core's unwind go on.
        if let Err(p) = r {
            resume_unwind(p);
        }
        return;
    }
    let me = costack::current().map(|c| c.id().as_u64());
    match shared.on_done.take() {
        Some(forward) => forward(r),
        None => *shared.result.borrow_mut() = Some(r),
    }
    shared.finished.set(true);
    let joiner = shared.joiner.take();
    drop(shared);
    if let Some(inner) = current_loop() {
        if let Some(me) = me {
            // The enterer holds a handle while we run, so this is not the last one.
            drop(inner.remove_task(me));
        }
        if let Some(j) = joiner {
            inner.wake(j);
        }
    }
}

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
pub(crate) fn begin_wait() -> Option<Wait> {
    let park = Park::try_new()?;
    let id = park.root_id().as_u64();
    let Some(inner) = current_loop() else {
        not_a_task()
    };
    let mut tasks = inner.tasks.borrow_mut();
    let Some(t) = tasks.get_mut(&id) else {
        drop(tasks);
        not_a_task()
    };
    t.epoch = t.epoch.wrapping_add(1);
    t.queued = false;
    let key = TaskKey {
        co: id,
        epoch: t.epoch,
    };
    let timeout = earliest(&t.timeouts);
    drop(tasks);
    Some(Wait {
        inner,
        key,
        timeout,
        park,
    })
}

fn earliest(timeouts: &[(Instant, u64)]) -> Option<(Instant, u64)> {
    timeouts.iter().copied().min_by_key(|&(d, _)| d)
}

/// The id of the task at the root of the running chain, if that root is a task of this
/// thread's loop (and the loop itself).
fn current_task() -> Option<(Rc<Inner>, u64)> {
    let root = costack::park::root_id()?.as_u64();
    let inner = current_loop()?;
    let is_task = inner.tasks.borrow().contains_key(&root);
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
        let entry = inner.timers.borrow_mut().insert(at, key);
        TimerGuard { inner, entry }
    }
}

impl Drop for TimerGuard<'_> {
    fn drop(&mut self) {
        self.inner.timers.borrow_mut().remove(self.entry);
    }
}

/// Adds a `timeout` scope to the running task; returns the loop and the task, or `None` if the
/// caller is not a task.
///
/// Starts with the contract's [`Park`], as every wait of a task does: in a task that was
/// cancelled and caught its unwind (and so is no longer in the table), the unwind continues.
pub(crate) fn push_timeout(deadline: Instant, id: u64) -> Option<(Rc<Inner>, u64)> {
    let task = Park::try_new()?.root_id().as_u64();
    let inner = current_loop()?;
    let mut tasks = inner.tasks.borrow_mut();
    let t = tasks.get_mut(&task)?;
    t.timeouts.push((deadline, id));
    drop(tasks);
    Some((inner, task))
}

/// Removes the `timeout` scope `id` from the task `task`.
pub(crate) fn pop_timeout(inner: &Inner, task: u64, id: u64) {
    let mut tasks = inner.tasks.borrow_mut();
    if let Some(t) = tasks.get_mut(&task) {
        t.timeouts.retain(|&(_, i)| i != id);
    }
}

/// Whether the caller runs in a task of this thread's event loop: a task, or a coroutine that
/// a task entered (whose waits are the task's).
pub fn in_task() -> bool {
    current_task().is_some()
}

// ---------------------------------------------------------------------------------------------
// Join handles

/// Where the result of a task spawned from another thread goes.
type Forward<T> = Box<dyn FnOnce(std::thread::Result<T>)>;

/// The state a task shares with its [`JoinHandle`].
pub(crate) struct JoinShared<T> {
    result: RefCell<Option<std::thread::Result<T>>>,
    /// Where the result goes instead of `result` (a task spawned from another thread).
    on_done: Cell<Option<Forward<T>>>,
    finished: Cell<bool>,
    cancelled: Cell<bool>,
    joiner: Cell<Option<TaskKey>>,
}

impl<T> JoinShared<T> {
    fn new() -> Self {
        JoinShared {
            result: RefCell::new(None),
            on_done: Cell::new(None),
            finished: Cell::new(false),
            cancelled: Cell::new(false),
            joiner: Cell::new(None),
        }
    }

    fn is_done(&self) -> bool {
        self.finished.get() || self.cancelled.get()
    }
}

impl<T> TaskShared for JoinShared<T> {
    fn mark_cancelled(&self) {
        self.cancelled.set(true);
    }
}

/// Why [`JoinHandle::try_join`] (or [`RemoteJoinHandle::try_join`](crate::RemoteJoinHandle))
/// has no value to give.
pub enum JoinError {
    /// The task panicked; here is the payload, for [`std::panic::resume_unwind`].
    Panicked(Box<dyn Any + Send + 'static>),
    /// The task was dropped before it finished: cancelled, or its loop shut down.
    Cancelled,
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Panicked(_) => f.write_str("Panicked(..)"),
            JoinError::Cancelled => f.write_str("Cancelled"),
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Panicked(_) => f.write_str("the task panicked"),
            JoinError::Cancelled => f.write_str("the task was dropped before it finished"),
        }
    }
}

impl std::error::Error for JoinError {}

/// The result of a task spawned on this thread's loop: [`join`](JoinHandle::join) it, drop it
/// to let the task run on unobserved (detach), or [`cancel`](JoinHandle::cancel) it.
///
/// ```
/// use costack_aio::{sleep, EventLoop};
/// use std::time::Duration;
///
/// let lp = EventLoop::new();
/// let sum = lp.block_on(|| {
///     let a = costack_aio::spawn(|| { sleep(Duration::from_millis(2)); 20 });
///     let b = costack_aio::spawn(|| 22);
///     a.join() + b.join() // each join yields until its task is done
/// });
/// assert_eq!(sum, 42);
/// ```
pub struct JoinHandle<T> {
    shared: Rc<JoinShared<T>>,
    co: u64,
    loop_id: u64,
}

/// What `join` returns for a `try_join` result: the value, or the task's panic continued, or a
/// panic saying the task was dropped unfinished.
pub(crate) fn join_value<T>(r: Result<T, JoinError>) -> T {
    match r {
        Ok(v) => v,
        Err(JoinError::Panicked(p)) => resume_unwind(p),
        Err(JoinError::Cancelled) => {
            panic!("costack-aio: joined a task that was dropped before it finished")
        }
    }
}

impl<T> JoinHandle<T> {
    /// Waits for the task and returns its value; if the task panicked, continues the panic
    /// here with the same payload.
    ///
    /// Inside a task this yields until the task is done. Outside any coroutine it drives the
    /// thread's loop until then (like [`EventLoop::block_on`]).
    ///
    /// # Panics
    /// Continuing the task's panic; or if the task was dropped before it finished (its loop
    /// shut down).
    pub fn join(self) -> T {
        crate::runtime::join_value(self.try_join())
    }

    /// Like [`join`](JoinHandle::join), but returns a panic or a cancellation as an error.
    pub fn try_join(self) -> Result<T, JoinError> {
        loop {
            if let Some(r) = self.shared.result.borrow_mut().take() {
                return r.map_err(JoinError::Panicked);
            }
            if self.shared.cancelled.get() {
                return Err(JoinError::Cancelled);
            }
            match begin_wait() {
                Some(w) => {
                    self.shared.joiner.set(Some(w.key));
                    w.park(None);
                }
                None => match current_loop() {
                    Some(inner) if inner.id == self.loop_id => {
                        let shared = &self.shared;
                        inner.run_until(&|| shared.is_done());
                    }
                    _ => return Err(JoinError::Cancelled),
                },
            }
        }
    }

    /// Whether the task has finished (returned or panicked).
    pub fn is_finished(&self) -> bool {
        self.shared.finished.get()
    }

    /// Drops the task: if it is suspended its stack unwinds now, running every destructor on
    /// it (sockets close, guards release). A task that already finished just drops its result.
    ///
    /// A task that cancels itself does not return from `cancel`: it unwinds as soon as it
    /// yields to the loop.
    pub fn cancel(self) {
        if self.shared.is_done() {
            return;
        }
        self.shared.cancelled.set(true);
        let Some(inner) = current_loop().filter(|l| l.id == self.loop_id) else {
            return;
        };
        // Whether the caller runs in that very task (or in a coroutine it entered).
        let is_self = costack::park::root_id().is_some_and(|r| r.as_u64() == self.co);
        let task = inner.remove_task(self.co);
        drop(task);
        if is_self {
            // Our enterer holds the last handle: when we yield, it drops it and we unwind.
            loop {
                costack::park::Park::new().suspend();
            }
        }
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("finished", &self.shared.finished.get())
            .field("cancelled", &self.shared.cancelled.get())
            .finish()
    }
}

/// Sets where a task's result goes instead of its join handle (tasks spawned from another
/// thread send it back through a channel).
pub(crate) fn forward_result<T>(h: JoinHandle<T>, f: Forward<T>) {
    h.shared.on_done.set(Some(f));
}

// ---------------------------------------------------------------------------------------------
// The public loop

/// Options for a task: stack size and name. Made by [`TaskBuilder::new`].
///
/// ```
/// use costack_aio::{EventLoop, TaskBuilder};
///
/// let lp = EventLoop::new();
/// let name = lp.block_on(|| {
///     TaskBuilder::new()
///         .stack_size(64 * 1024)
///         .name("handler")
///         .spawn(|| costack::current().unwrap().name().map(str::to_owned))
///         .join()
/// });
/// assert_eq!(name.as_deref(), Some("handler"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct TaskBuilder {
    stack_size: Option<usize>,
    name: Option<String>,
}

impl TaskBuilder {
    /// Options with the loop's default stack size ([`LoopBuilder::stack_size`]) and no name.
    pub fn new() -> TaskBuilder {
        TaskBuilder::default()
    }

    /// The task's stack size in bytes (virtual; only touched pages cost memory).
    pub fn stack_size(mut self, bytes: usize) -> TaskBuilder {
        self.stack_size = Some(bytes);
        self
    }

    /// The task's name, shown in panics about its coroutine and in traces.
    pub fn name(mut self, name: impl Into<String>) -> TaskBuilder {
        self.name = Some(name.into());
        self
    }

    /// Spawns the task on this thread's event loop.
    ///
    /// # Panics
    /// If the thread has no event loop, or no stack can be mapped.
    pub fn spawn<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        expect_loop("spawn").spawn(self, f)
    }
}

/// Options for an [`EventLoop`]. Made by [`EventLoop::builder`].
#[derive(Debug, Clone)]
pub struct LoopBuilder {
    stack_size: usize,
    blocking_threads: usize,
    events: usize,
    io_uring: Option<bool>,
}

impl LoopBuilder {
    /// The default stack size of the loop's tasks (default: costack's, 1 MiB, virtual).
    /// Connection handlers rarely need more than 64–256 KiB.
    pub fn stack_size(mut self, bytes: usize) -> LoopBuilder {
        self.stack_size = bytes;
        self
    }

    /// How many threads [`run_blocking`](crate::run_blocking) may use at once (default 64).
    /// Work beyond that queues.
    pub fn blocking_threads(mut self, n: usize) -> LoopBuilder {
        self.blocking_threads = n.max(1);
        self
    }

    /// How many readiness events one look at I/O takes at most (default 1024).
    pub fn events_capacity(mut self, n: usize) -> LoopBuilder {
        self.events = n.max(16);
        self
    }

    /// Whether file I/O ([`fs::File`](crate::fs::File)) may use io_uring (default: yes,
    /// unless the environment variable `COSTACK_AIO_IO_URING` is `0`, `false`, `off` or `no`).
    ///
    /// `true` is a wish, not a demand: where the kernel has no io_uring, or refuses it (a
    /// sandbox, `kernel.io_uring_disabled`), the loop falls back to its worker pool and
    /// [`EventLoop::io_backend`] says so. `false` always uses the worker pool. An explicit
    /// choice here wins over the environment variable.
    ///
    /// ```
    /// use costack_aio::{EventLoop, IoBackend};
    ///
    /// let lp = EventLoop::builder().io_uring(false).build().unwrap();
    /// assert_eq!(lp.io_backend(), IoBackend::ThreadPool);
    /// ```
    pub fn io_uring(mut self, enabled: bool) -> LoopBuilder {
        self.io_uring = Some(enabled);
        self
    }

    /// Creates the loop and makes it this thread's loop.
    ///
    /// # Errors
    /// If the thread already has a loop (`AlreadyExists`), or epoll/eventfd cannot be created.
    /// (Failing to set up io_uring is not an error: the loop falls back to its worker pool.)
    pub fn build(self) -> io::Result<EventLoop> {
        if !CURRENT.with(|c| c.get()).is_null() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "costack-aio: this thread already has an event loop (one loop per thread)",
            ));
        }
        let id = NEXT_LOOP_ID.fetch_add(1, Ordering::Relaxed);
        let (reactor, waker) = Reactor::new(self.events)?;
        let want_uring = self.io_uring.unwrap_or_else(crate::fs::io_uring_from_env);
        let (io_backend, io_uring_error, uring) = if want_uring {
            match Uring::new().and_then(|u| reactor.watch_uring(u.eventfd()).map(|()| u)) {
                Ok(u) => (IoBackend::IoUring, None, Some(u)),
                Err(e) => (IoBackend::ThreadPool, Some(e.to_string()), None),
            }
        } else {
            (IoBackend::ThreadPool, None, None)
        };
        let inner = Rc::new_cyclic(|weak| Inner {
            id,
            driver: Rc::new(LoopDriver {
                inner: weak.clone(),
            }),
            tasks: RefCell::new(IdMap::default()),
            ready: RefCell::new(VecDeque::new()),
            reactor,
            timers: RefCell::new(Timers::default()),
            remote: Arc::new(Remote::new(id, waker)),
            running: Cell::new(false),
            closing: Cell::new(false),
            stack_size: self.stack_size,
            blocking_threads: self.blocking_threads,
            pool: OnceCell::new(),
            remote_buf: RefCell::new(Vec::new()),
            io_backend,
            io_uring_error,
            bufs: RefCell::new(BufPool::default()),
            uring,
        });
        CURRENT.with(|c| c.set(Rc::as_ptr(&inner)));
        Ok(EventLoop { inner })
    }
}

/// An event loop: runs coroutines (tasks) and resumes them when what they wait for is ready.
///
/// One per thread, like QEMU's `AioContext`: creating it makes it the thread's loop, which the
/// free functions of this crate ([`spawn`], [`sleep`](crate::sleep), the sockets…) use. It is
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
    /// Creates the thread's event loop with the default options.
    ///
    /// # Panics
    /// If the thread already has one, or epoll cannot be created. See [`LoopBuilder::build`].
    pub fn new() -> EventLoop {
        match EventLoop::builder().build() {
            Ok(l) => l,
            Err(e) => panic!("costack-aio: cannot create an event loop: {e}"),
        }
    }

    /// Options for a new loop.
    pub fn builder() -> LoopBuilder {
        LoopBuilder {
            stack_size: DEFAULT_STACK_SIZE,
            blocking_threads: 64,
            events: 1024,
            io_uring: None,
        }
    }

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
        let h = self.inner.spawn(&TaskBuilder::new(), f);
        let shared = h.shared.clone();
        self.inner.run_until(&|| shared.is_done());
        h.join()
    }

    /// Spawns `f` as a task of this loop; it starts when the loop next runs.
    pub fn spawn<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        self.inner.spawn(&TaskBuilder::new(), f)
    }

    /// Queues `f` to run on the loop's thread, outside any coroutine, in FIFO order with the
    /// tasks that are ready (QEMU's bottom halves). It cannot wait; it can spawn or wake.
    pub fn call_soon(&self, f: impl FnOnce() + 'static) {
        self.inner.call_soon(Box::new(f));
    }

    /// A handle other threads can use to run closures and spawn tasks on this loop.
    pub fn handle(&self) -> LoopHandle {
        LoopHandle::new(self.inner.remote.clone())
    }

    /// How many tasks the loop holds (running, ready or waiting).
    pub fn task_count(&self) -> usize {
        self.inner.tasks.borrow().len()
    }

    /// Which path file I/O ([`fs::File`](crate::fs::File)) takes on this loop: io_uring, or
    /// the worker pool. See [`LoopBuilder::io_uring`].
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
        self.inner.io_backend
    }

    /// Why this loop does not use io_uring although it was allowed to (the error of
    /// `io_uring_setup`, or the missing kernel feature); `None` when it uses io_uring or was told
    /// not to.
    pub fn io_uring_unavailable_reason(&self) -> Option<&str> {
        self.inner.io_uring_error.as_deref()
    }
}

impl Default for EventLoop {
    fn default() -> Self {
        EventLoop::new()
    }
}

impl fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventLoop")
            .field("id", &self.inner.id)
            .field("tasks", &self.task_count())
            .finish()
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        // The thread-local pointer stays set while tasks unwind: their destructors
        // (deregistering sockets, removing timers) use the loop.
        let r = catch_unwind(AssertUnwindSafe(|| self.inner.shutdown()));
        CURRENT.with(|c| {
            if c.get() == Rc::as_ptr(&self.inner) {
                c.set(ptr::null());
            }
        });
        if let Err(p) = r {
            resume_unwind(p);
        }
    }
}

/// Spawns `f` as a task of this thread's event loop and returns its [`JoinHandle`].
///
/// # Panics
/// If the thread has no event loop.
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    expect_loop("spawn").spawn(&TaskBuilder::new(), f)
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
    current_loop().map(|l| LoopHandle::new(l.remote.clone()))
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
