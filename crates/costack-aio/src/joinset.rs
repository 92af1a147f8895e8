//! Groups of tasks: [`JoinSet`] (results in order of completion) and [`join_all`] /
//! [`try_join_all`] (results in order of the handles).
//!
//! Operations floor: imports tasks (`task`: spawning, [`JoinHandle`]), the loop proper
//! (`runtime`, to drive the loop outside any task, as `JoinHandle::join` does), the wakers
//! (`waker`) and the [`Selectable`] protocol (`select`).
//!
//! Every task in a set is told, when it is done, to put its number on the set's queue of
//! finished tasks and wake the set's waiter; [`JoinSet::join_next`] takes them from that queue,
//! so results come in the order the tasks finished, and waiting costs nothing per task.

use crate::runtime::current_loop;
use crate::select::Selectable;
use crate::task::{JoinError, JoinHandle, TaskBuilder};
use crate::waker::{prepare_park, Park, Waker};
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::panic::resume_unwind;
use std::rc::{Rc, Weak};

/// What the tasks of a set share with it: the numbers of those that are done, in the order
/// they finished, and the waker of whoever waits for the next.
#[derive(Default)]
struct Done {
    queue: VecDeque<u64>,
    waiter: Option<Waker>,
}

/// A set of tasks of this thread's loop, whose results are taken in the order they finish.
///
/// [`spawn`](JoinSet::spawn) adds a task; [`join_next`](JoinSet::join_next) waits for the next
/// one to finish and gives its result (`None` once the set is empty). Dropping the set cancels
/// the tasks still in it: their stacks unwind, running their destructors, as
/// [`JoinHandle::cancel`] does. [`detach_all`](JoinSet::detach_all) lets them run on instead.
///
/// ```
/// use costack_aio::{sleep, EventLoop, JoinSet};
/// use std::time::Duration;
///
/// let lp = EventLoop::new();
/// lp.block_on(|| {
///     let mut set = JoinSet::new();
///     for ms in [30, 10, 20] {
///         set.spawn(move || { sleep(Duration::from_millis(ms)); ms });
///     }
///     let mut order = Vec::new();
///     while let Some(r) = set.join_next() {
///         order.push(r.unwrap());
///     }
///     assert_eq!(order, [10, 20, 30]);
/// });
/// ```
///
/// A task of the set that panics gives [`JoinError::Panicked`]; one dropped by its loop's
/// shutdown gives [`JoinError::Cancelled`]. Outside any task `join_next` drives the thread's
/// loop until a task finishes, as [`JoinHandle::join`] does.
pub struct JoinSet<T> {
    tasks: HashMap<u64, JoinHandle<T>>,
    done: Rc<RefCell<Done>>,
    next: u64,
}

impl<T> Default for JoinSet<T> {
    fn default() -> Self {
        JoinSet::new()
    }
}

impl<T> JoinSet<T> {
    /// An empty set.
    pub fn new() -> JoinSet<T> {
        JoinSet {
            tasks: HashMap::new(),
            done: Rc::default(),
            next: 0,
        }
    }

    /// How many tasks the set holds: running, or finished and not yet joined.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether the set holds no task.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Spawns `f` as a task of this thread's loop, in the set.
    ///
    /// # Panics
    /// If the thread has no event loop.
    pub fn spawn<F>(&mut self, f: F)
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        self.insert(crate::task::spawn(f));
    }

    /// Spawns `f` with the options of `builder` (stack size, name), in the set.
    ///
    /// # Panics
    /// If the thread has no event loop.
    pub fn spawn_with<F>(&mut self, builder: &TaskBuilder, f: F)
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        self.insert(builder.spawn(f));
    }

    /// Adds a task by its handle; returns its number in the set.
    pub(crate) fn insert(&mut self, h: JoinHandle<T>) -> u64 {
        let id = self.next;
        self.next += 1;
        if h.is_done() {
            self.done.borrow_mut().queue.push_back(id);
        } else {
            let done: Weak<RefCell<Done>> = Rc::downgrade(&self.done);
            h.set_notify(Some(Box::new(move || {
                let Some(done) = done.upgrade() else { return };
                let waiter = {
                    let mut d = done.borrow_mut();
                    d.queue.push_back(id);
                    d.waiter.take()
                };
                if let Some(w) = waiter {
                    w.wake();
                }
            })));
        }
        self.tasks.insert(id, h);
        id
    }

    /// The result of a task that is done, and its number, without waiting; `None` if no task
    /// of the set is done.
    fn try_next_with_id(&mut self) -> Option<(u64, Result<T, JoinError>)> {
        loop {
            let id = self.done.borrow_mut().queue.pop_front()?;
            // A number whose handle is gone was aborted or detached since: skip it.
            if let Some(h) = self.tasks.remove(&id) {
                return Some((id, h.try_join()));
            }
        }
    }

    /// Waits for the next task to finish and returns its result and number; `None` if the set
    /// is empty.
    fn next_with_id(&mut self) -> Option<(u64, Result<T, JoinError>)> {
        loop {
            if let Some(r) = self.try_next_with_id() {
                return Some(r);
            }
            if self.tasks.is_empty() {
                return None;
            }
            let (waker, park) = prepare_park();
            match park {
                Park::Task(_) => {
                    self.done.borrow_mut().waiter = Some(waker);
                    // Unwinding here (a timeout, a cancel) leaves a waker that can wake
                    // nothing but this wait, which is over.
                    park.park(None);
                }
                Park::Thread(_) | Park::Drive(..) => self.drive(),
            }
        }
    }

    /// Outside any coroutine: runs the thread's loop until a task of the set is done.
    fn drive(&mut self) {
        match current_loop() {
            Some(inner) => {
                let done = self.done.clone();
                inner.run_until(&|| !done.borrow().queue.is_empty());
            }
            None => {
                // No loop: it shut down, and its tasks were all dropped (and queued as done)
                // then. Whatever is left cannot finish: report them cancelled.
                let mut d = self.done.borrow_mut();
                d.queue.extend(self.tasks.keys().copied());
            }
        }
    }

    /// Waits for the next task of the set to finish and returns its result: results come in
    /// the order the tasks finished. `None` if the set is empty.
    ///
    /// In a task this yields until a task of the set is done; outside any coroutine it drives
    /// the thread's loop until then.
    ///
    /// A task that panicked gives `Err(JoinError::Panicked(payload))`: the panic does not
    /// continue here (see [`join_all`] for that).
    ///
    /// # Panics
    /// In a coroutine that no task of this thread's loop entered, or outside any coroutine
    /// while the loop is already running (a `call_soon` callback).
    pub fn join_next(&mut self) -> Option<Result<T, JoinError>> {
        self.next_with_id().map(|(_, r)| r)
    }

    /// The result of a task of the set that is done, without waiting; `None` if none is (or
    /// the set is empty).
    pub fn try_join_next(&mut self) -> Option<Result<T, JoinError>> {
        self.try_next_with_id().map(|(_, r)| r)
    }

    /// A [select](mod@crate::select) branch that fires with what [`join_next`](JoinSet::join_next)
    /// would return: the result of the next task to finish, or `None` at once if the set is
    /// empty. A losing branch takes nothing: results it did not give stay in the set.
    ///
    /// Outside any task, a select runs the thread's loop while it waits, so the set's tasks
    /// can finish.
    ///
    /// ```
    /// use costack_aio::select::sleep;
    /// use costack_aio::{EventLoop, JoinSet};
    /// use std::time::Duration;
    ///
    /// let lp = EventLoop::new();
    /// lp.block_on(|| {
    ///     let mut set = JoinSet::new();
    ///     set.spawn(|| { costack_aio::sleep(Duration::from_secs(60)); 1 });
    ///     let r = costack_aio::select! {
    ///         r = set.join_next_branch() => r.map(|r| r.unwrap()),
    ///         () = sleep(Duration::from_millis(5)) => Some(0),
    ///     };
    ///     assert_eq!(r, Some(0));
    ///     assert_eq!(set.len(), 1); // still there; dropping the set cancels it
    /// });
    /// ```
    pub fn join_next_branch(&mut self) -> JoinNext<'_, T> {
        JoinNext { set: self }
    }

    /// Cancels every task in the set and empties it: suspended tasks unwind now, running
    /// their destructors (see [`JoinHandle::cancel`]); results not yet joined are dropped.
    ///
    /// Called from one of the set's own tasks, it cancels all the others and leaves the caller
    /// running, detached: it ends when it returns.
    pub fn abort_all(&mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        self.done.borrow_mut().queue.clear();
        let mut me = None;
        for (_, h) in tasks {
            if h.is_current() {
                me = Some(h);
            } else {
                h.cancel();
            }
        }
        if let Some(h) = me {
            h.set_notify(None);
        }
    }

    /// Empties the set without cancelling its tasks: they run on, unobserved, as when a
    /// [`JoinHandle`] is dropped.
    pub fn detach_all(&mut self) {
        for (_, h) in self.tasks.drain() {
            h.set_notify(None);
        }
        self.done.borrow_mut().queue.clear();
    }
}

/// Cancels the tasks still in the set; see [`abort_all`](JoinSet::abort_all).
impl<T> Drop for JoinSet<T> {
    fn drop(&mut self) {
        self.abort_all();
    }
}

impl<T> fmt::Debug for JoinSet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinSet")
            .field("len", &self.tasks.len())
            .field("done", &self.done.borrow().queue.len())
            .finish()
    }
}

/// Collects the handles into a set (in their order).
impl<T> FromIterator<JoinHandle<T>> for JoinSet<T> {
    fn from_iter<I: IntoIterator<Item = JoinHandle<T>>>(iter: I) -> Self {
        let mut set = JoinSet::new();
        for h in iter {
            set.insert(h);
        }
        set
    }
}

/// The [select](mod@crate::select) branch of a [`JoinSet`], made by
/// [`JoinSet::join_next_branch`]. Output: `Option<Result<T, JoinError>>`, as
/// [`JoinSet::join_next`].
pub struct JoinNext<'a, T> {
    set: &'a mut JoinSet<T>,
}

impl<T> Selectable for JoinNext<'_, T> {
    type Output = Option<Result<T, JoinError>>;

    fn try_select(&mut self) -> Option<Self::Output> {
        match self.set.try_join_next() {
            Some(r) => Some(Some(r)),
            None if self.set.is_empty() => Some(None),
            None => None,
        }
    }

    fn register(&mut self, waker: &Waker) {
        self.set.done.borrow_mut().waiter = Some(waker.clone());
    }

    fn deregister(&mut self) {
        self.set.done.borrow_mut().waiter = None;
    }
}

impl<T> fmt::Debug for JoinNext<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("JoinNext").field(&self.set).finish()
    }
}

/// Waits for every task and returns their values in the order of `handles`.
///
/// It waits for all of them even if one panicked; then, if any panicked, continues the panic
/// of the first of them (in the order of `handles`) here, with its payload, as
/// [`JoinHandle::join`] does. Use [`try_join_all`] to get errors as values instead.
///
/// ```
/// use costack_aio::{join_all, sleep, spawn, EventLoop};
/// use std::time::Duration;
///
/// let lp = EventLoop::new();
/// let v = lp.block_on(|| {
///     let hs = [30, 10, 20].map(|ms| spawn(move || { sleep(Duration::from_millis(ms)); ms }));
///     join_all(hs)
/// });
/// assert_eq!(v, [30, 10, 20]);
/// ```
///
/// The handles go into a [`JoinSet`] for the wait: if the caller is unwound while it waits
/// (a [`timeout`](crate::timeout) expired, its task was cancelled), the tasks not yet joined
/// are cancelled with it, not left running unobserved.
///
/// # Panics
/// As described; and, like `join`, if a task was dropped before it finished (its loop shut
/// down).
pub fn join_all<T>(handles: impl IntoIterator<Item = JoinHandle<T>>) -> Vec<T> {
    let mut set: JoinSet<T> = handles.into_iter().collect();
    let n = set.next as usize;
    let mut slots: Vec<Option<Result<T, JoinError>>> = (0..n).map(|_| None).collect();
    while let Some((id, r)) = set.next_with_id() {
        slots[id as usize] = Some(r);
    }
    let mut out = Vec::with_capacity(n);
    let mut first_err = None;
    for r in slots.into_iter().flatten() {
        match r {
            Ok(v) => out.push(v),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        None => out,
        Some(JoinError::Panicked(p)) => resume_unwind(p),
        Some(JoinError::Cancelled) => {
            panic!("costack-aio: joined a task that was dropped before it finished")
        }
    }
}

/// Waits for every task and returns their values in the order of `handles`; or, as soon as
/// one fails (panics, or is dropped by its loop's shutdown), cancels the others and returns
/// that error. As with [`join_all`], unwinding the caller cancels the tasks not yet joined.
///
/// ```
/// use costack_aio::{sleep, spawn, try_join_all, EventLoop, JoinError};
/// use std::time::Duration;
///
/// let lp = EventLoop::new();
/// lp.block_on(|| {
///     let slow = spawn(|| { sleep(Duration::from_secs(60)); 1 });
///     let bad = spawn(|| -> i32 { panic!("boom") });
///     let r = try_join_all([slow, bad]);
///     assert!(matches!(r, Err(JoinError::Panicked(_)))); // and `slow` was cancelled
/// });
/// ```
pub fn try_join_all<T>(
    handles: impl IntoIterator<Item = JoinHandle<T>>,
) -> Result<Vec<T>, JoinError> {
    let mut set: JoinSet<T> = handles.into_iter().collect();
    let n = set.next as usize;
    let mut slots: Vec<Option<T>> = (0..n).map(|_| None).collect();
    while let Some((id, r)) = set.next_with_id() {
        slots[id as usize] = Some(r?);
    }
    Ok(slots.into_iter().flatten().collect())
}
