//! Tasks: spawning them, and the handles that join, detach or cancel them.
//!
//! Third floor: imports the loop proper ([`runtime`](crate::runtime): the task table, the run
//! loop), the wait protocol ([`wait`](crate::wait)), and the wakers (`waker`) and the
//! [`Selectable`] protocol (`select`) for [`JoinHandle::join_branch`]. A task is a coroutine in the loop's
//! table (see the `wait` module for how it waits); here is what surrounds it: the body every
//! task runs (`task_main`), the state it shares with its [`JoinHandle`] (its result, or its
//! panic, and who waits to join it), [`JoinError`], and the options of [`TaskBuilder`].

use crate::key::TaskKey;
use crate::runtime::{current_loop, expect_loop, Inner, TaskShared};
use crate::select::Selectable;
use crate::wait::begin_wait;
use crate::waker::Waker;
use costack::Builder;
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::rc::Rc;

/// Spawns `f` as a task of `inner`.
pub(crate) fn spawn_on<F, T>(inner: &Inner, opts: &TaskBuilder, f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    let shared = Rc::new(JoinShared::<T>::new());
    let handle = JoinHandle {
        shared: shared.clone(),
        co: 0,
        loop_id: inner.id(),
    };
    if inner.is_closing() {
        // The loop is shutting down: the task would be dropped at once.
        shared.cancelled.set(true);
        drop(f);
        return handle;
    }
    let s2 = shared.clone();
    let mut b = Builder::new().stack_size(opts.stack_size.unwrap_or(inner.stack_size()));
    if let Some(n) = &opts.name {
        b = b.name(n.clone());
    }
    let co = b.create(move || task_main(s2, f));
    let id = inner.add_task(co.handle(), shared as Rc<dyn TaskShared>);
    JoinHandle { co: id, ..handle }
}

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
    let notify = shared.notify.take();
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
    if let Some(n) = notify {
        n();
    }
}

/// Where the result of a task spawned from another thread goes.
type Forward<T> = Box<dyn FnOnce(std::thread::Result<T>)>;

/// The state a task shares with its [`JoinHandle`].
struct JoinShared<T> {
    result: RefCell<Option<std::thread::Result<T>>>,
    /// Where the result goes instead of `result` (a task spawned from another thread).
    on_done: Cell<Option<Forward<T>>>,
    finished: Cell<bool>,
    cancelled: Cell<bool>,
    joiner: Cell<Option<TaskKey>>,
    /// Called once when the task finishes or is dropped by the loop's shutdown: a select's
    /// join branch, or the [`JoinSet`](crate::JoinSet) that holds the handle.
    notify: Cell<Option<Notify>>,
}

/// What a task calls when it is done (see `JoinShared::notify`).
pub(crate) type Notify = Box<dyn FnOnce()>;

impl<T> JoinShared<T> {
    fn new() -> Self {
        JoinShared {
            result: RefCell::new(None),
            on_done: Cell::new(None),
            finished: Cell::new(false),
            cancelled: Cell::new(false),
            joiner: Cell::new(None),
            notify: Cell::new(None),
        }
    }

    fn is_done(&self) -> bool {
        self.finished.get() || self.cancelled.get()
    }
}

impl<T> TaskShared for JoinShared<T> {
    fn mark_cancelled(&self) {
        self.cancelled.set(true);
        if let Some(n) = self.notify.take() {
            n();
        }
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
    /// thread's loop until then (like [`EventLoop::block_on`](crate::EventLoop::block_on)).
    ///
    /// # Panics
    /// Continuing the task's panic; or if the task was dropped before it finished (its loop
    /// shut down).
    pub fn join(self) -> T {
        join_value(self.try_join())
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
            if self.shared.finished.get() {
                spent();
            }
            match begin_wait() {
                Some(w) => {
                    self.shared.joiner.set(Some(w.key));
                    w.park(None);
                }
                None => match current_loop() {
                    Some(inner) if inner.id() == self.loop_id => {
                        let shared = &self.shared;
                        inner.run_until(&|| shared.is_done());
                    }
                    _ => return Err(JoinError::Cancelled),
                },
            }
        }
    }

    /// A [select](mod@crate::select) branch that fires when the task is done, with what
    /// [`try_join`](JoinHandle::try_join) would return. A losing branch leaves the handle as it
    /// was (joinable, cancellable, usable in the next select); a winning one takes the
    /// result, after which the handle is spent: joining it (or selecting on it) again panics.
    ///
    /// Outside any task, a select runs the thread's loop while it waits (as `join` does), so
    /// the task can finish.
    ///
    /// ```
    /// use costack_aio::select::sleep;
    /// use costack_aio::{spawn, EventLoop};
    /// use std::time::Duration;
    ///
    /// let lp = EventLoop::new();
    /// lp.block_on(|| {
    ///     let mut h = spawn(|| { costack_aio::sleep(Duration::from_millis(20)); "done" });
    ///     let mut ticks = 0;
    ///     let v = loop {
    ///         costack_aio::select! {
    ///             r = h.join_branch() => break r.unwrap(),
    ///             () = sleep(Duration::from_millis(1)) => ticks += 1,
    ///         }
    ///     };
    ///     assert_eq!(v, "done");
    ///     assert!(ticks >= 1);
    /// });
    /// ```
    pub fn join_branch(&mut self) -> JoinBranch<'_, T> {
        JoinBranch { h: self }
    }

    /// Whether the task finished or was dropped (its result can be taken without waiting).
    pub(crate) fn is_done(&self) -> bool {
        self.shared.is_done()
    }

    /// Sets (or clears) what the task calls when it is done; see `JoinShared::notify`.
    pub(crate) fn set_notify(&self, n: Option<Notify>) {
        self.shared.notify.set(n);
    }

    /// Whether the caller runs in this very task (or in a coroutine it entered).
    pub(crate) fn is_current(&self) -> bool {
        current_loop().is_some_and(|l| l.id() == self.loop_id)
            && costack::park::root_id().is_some_and(|r| r.as_u64() == self.co)
    }

    /// Runs `inner`'s loop until the task is done (finished or dropped).
    pub(crate) fn drive(&self, inner: &Inner) {
        let shared = &self.shared;
        inner.run_until(&|| shared.is_done());
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
        self.shared.notify.take();
        if self.shared.is_done() {
            return;
        }
        self.shared.cancelled.set(true);
        let Some(inner) = current_loop().filter(|l| l.id() == self.loop_id) else {
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

#[cold]
#[inline(never)]
fn spent() -> ! {
    panic!("costack-aio: this task's result was already taken by a select's join branch")
}

/// The [select](mod@crate::select) branch of a [`JoinHandle`], made by
/// [`JoinHandle::join_branch`]. Output: the task's `Result<T, JoinError>`.
pub struct JoinBranch<'a, T> {
    h: &'a mut JoinHandle<T>,
}

impl<T> Selectable for JoinBranch<'_, T> {
    type Output = Result<T, JoinError>;

    fn try_select(&mut self) -> Option<Result<T, JoinError>> {
        let shared = &self.h.shared;
        if let Some(r) = shared.result.borrow_mut().take() {
            return Some(r.map_err(JoinError::Panicked));
        }
        if shared.cancelled.get() {
            return Some(Err(JoinError::Cancelled));
        }
        if shared.finished.get() {
            spent();
        }
        None
    }

    fn register(&mut self, waker: &Waker) {
        let w = waker.clone();
        self.h.shared.notify.set(Some(Box::new(move || w.wake())));
    }

    fn deregister(&mut self) {
        self.h.shared.notify.take();
    }
}

impl<T> fmt::Debug for JoinBranch<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("JoinBranch").field(&self.h).finish()
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
// Options

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
    /// Options with the loop's default stack size ([`LoopBuilder::stack_size`](crate::LoopBuilder::stack_size)) and no name.
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
        spawn_on(&expect_loop("spawn"), self, f)
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
    spawn_on(&expect_loop("spawn"), &TaskBuilder::new(), f)
}
