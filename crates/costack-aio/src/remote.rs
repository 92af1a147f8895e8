//! Across threads: handles to a loop, and wakers for suspended tasks.
//!
//! A coroutine never changes thread: its stack may hold references to its thread's
//! thread-locals. What crosses threads is *messages*. Each loop has a queue that any thread can
//! push to; pushing to an empty queue writes the loop's eventfd, which ends its wait for I/O,
//! and the loop then runs the messages on its own thread:
//!
//! * a [`LoopHandle`] (`Send + Clone`) sends closures to run there
//!   ([`call_soon`](LoopHandle::call_soon)) or to spawn as tasks ([`spawn`](LoopHandle::spawn));
//! * a [`Waker`] (`Send + Clone`), made by [`suspend`] for one wait of one task, sends "resume
//!   that task" — the task resumes on its home loop, whatever thread called `wake`.
//!
//! ```
//! use costack_aio::{suspend, EventLoop};
//! use std::thread;
//!
//! let lp = EventLoop::new();
//! let on = lp.block_on(|| {
//!     let mut worker = None;
//!     suspend(|waker| {
//!         // Hand the waker to another thread; the task yields until it is used.
//!         worker = Some(thread::spawn(move || waker.wake()));
//!     });
//!     worker.unwrap().join().unwrap();
//!     thread::current().id() // resumed on the loop's own thread
//! });
//! assert_eq!(on, thread::current().id());
//! ```

use crate::runtime::{
    begin_wait, current_loop, expect_loop, forward_result, JoinError, TaskBuilder, TaskKey, Wait,
};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::Thread;
use std::time::Instant;

/// A message for a loop from another thread.
pub(crate) enum Msg {
    Wake(TaskKey),
    /// Wake the task whatever wait it is in (see [`task_waker`]).
    WakeTask(u64),
    Call(Box<dyn FnOnce() + Send>),
}

struct Queue {
    msgs: Vec<Msg>,
    closed: bool,
}

/// The cross-thread side of a loop: its message queue and eventfd.
pub(crate) struct Remote {
    loop_id: u64,
    queue: Mutex<Queue>,
    waker: mio::Waker,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing user-supplied runs under these locks, so poisoning cannot leave them broken.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Remote {
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

    /// Queues `msg` for the loop; gives it back if the loop is gone.
    fn send(&self, msg: Msg) -> Result<(), Msg> {
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
}

/// Resumes one wait of one suspended task, from any thread; or unparks a thread that
/// [`suspend`]ed outside any coroutine. Made by [`suspend`].
///
/// The task resumes on its own loop's thread: waking from another thread queues a message for
/// that loop and wakes it through its eventfd; waking from the loop's own thread just puts the
/// task on the ready queue.
///
/// **A waker is good for one wake of one wait.** The first `wake` (by any clone) ends the wait;
/// a second `wake` of the same wait — from a clone, or called again — does nothing, and so
/// does a wake that comes after the wait ended another way (a timeout, the task being
/// cancelled or its loop dropped). It can never resume the task in a later wait.
#[derive(Clone)]
pub struct Waker {
    kind: WakerKind,
}

#[derive(Clone)]
enum WakerKind {
    Task { remote: Arc<Remote>, key: TaskKey },
    Thread(Arc<ThreadParker>),
}

pub(crate) struct ThreadParker {
    thread: Thread,
    woken: AtomicBool,
}

impl Waker {
    /// Ends the wait this waker was made for, if it is still going on (see the type docs).
    pub fn wake(&self) {
        match &self.kind {
            WakerKind::Task { remote, key } => deliver(remote, Msg::Wake(*key)),
            WakerKind::Thread(p) => {
                p.woken.store(true, Ordering::Release);
                p.thread.unpark();
            }
        }
    }
}

impl fmt::Debug for Waker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            WakerKind::Task { remote, key } => f
                .debug_struct("Waker")
                .field("loop", &remote.loop_id)
                .field("task", &key.co)
                .finish(),
            WakerKind::Thread(p) => f
                .debug_struct("Waker")
                .field("thread", &p.thread.id())
                .finish(),
        }
    }
}

/// The waiting side of a [`Waker`]: a task's wait, or a parked thread.
pub(crate) enum Park {
    Task(Wait),
    Thread(Arc<ThreadParker>),
}

/// Starts a wait of the caller (a task, or a thread outside any coroutine) and returns the
/// waker that ends it and the means to wait.
pub(crate) fn prepare_park() -> (Waker, Park) {
    match begin_wait() {
        Some(w) => (
            Waker {
                kind: WakerKind::Task {
                    remote: w.inner.remote.clone(),
                    key: w.key,
                },
            },
            Park::Task(w),
        ),
        None => {
            let p = Arc::new(ThreadParker {
                thread: std::thread::current(),
                woken: AtomicBool::new(false),
            });
            (
                Waker {
                    kind: WakerKind::Thread(p.clone()),
                },
                Park::Thread(p),
            )
        }
    }
}

impl Park {
    /// Waits for the waker, or until `deadline`. May return early (the caller re-checks its
    /// condition).
    pub(crate) fn park(&self, deadline: Option<Instant>) {
        match self {
            Park::Task(w) => w.park(deadline),
            Park::Thread(p) => {
                while !p.woken.load(Ordering::Acquire) {
                    match deadline {
                        None => std::thread::park(),
                        Some(d) => {
                            let now = Instant::now();
                            if now >= d {
                                return;
                            }
                            std::thread::park_timeout(d - now);
                        }
                    }
                }
            }
        }
    }
}

/// Suspends the caller until the [`Waker`] handed to `f` is woken: the building block for
/// waiting on anything — another thread, a callback, a foreign library.
///
/// `f` runs first, with the waker for this wait; it can store the waker, send it to another
/// thread, or even wake it at once (then `suspend` returns as soon as the loop gets back to the
/// task). In a task the task yields to its loop; outside any coroutine the thread parks.
///
/// `suspend` can also return when the task is resumed for another reason (a spurious resume
/// of costack's resume contract: a wake-up meant for an earlier wait, say), or unwind when a
/// [`timeout`](crate::timeout) expires: like a condition variable, check your condition in a
/// loop and make a new waker for each wait.
///
/// # Panics
/// Inside a coroutine that no task of this thread's loop entered.
pub fn suspend(f: impl FnOnce(Waker)) {
    let (waker, park) = prepare_park();
    f(waker);
    park.park(None);
}

/// Hands `msg` to the loop of `remote`: at once on that loop's own thread, as a message from
/// any other (a wake of a loop that is gone is lost, as nothing waits on it any more).
pub(crate) fn deliver(remote: &Remote, msg: Msg) {
    match current_loop().filter(|l| l.id == remote.loop_id) {
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
pub(crate) fn task_waker(remote: Arc<Remote>, co: u64) -> std::task::Waker {
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

/// A [`Waker`] as a `std::task::Waker`, for futures: waking it ends the same wait.
impl From<Waker> for std::task::Waker {
    fn from(w: Waker) -> std::task::Waker {
        struct AsStd(Waker);
        impl std::task::Wake for AsStd {
            fn wake(self: Arc<Self>) {
                self.0.wake();
            }
            fn wake_by_ref(self: &Arc<Self>) {
                self.0.wake();
            }
        }
        std::task::Waker::from(Arc::new(AsStd(w)))
    }
}

// ---------------------------------------------------------------------------------------------
// One-shot channel

struct Slot<T> {
    value: Option<T>,
    sender_gone: bool,
    receiver: Option<Waker>,
}

/// A channel for one value from any thread to a task (or a thread), used for results that come
/// back from other threads.
pub(crate) struct OneShot<T> {
    slot: Mutex<Slot<T>>,
}

pub(crate) struct Sender<T>(Arc<OneShot<T>>);

pub(crate) fn oneshot<T>() -> (Sender<T>, Arc<OneShot<T>>) {
    let c = Arc::new(OneShot {
        slot: Mutex::new(Slot {
            value: None,
            sender_gone: false,
            receiver: None,
        }),
    });
    (Sender(c.clone()), c)
}

impl<T> Sender<T> {
    pub(crate) fn send(self, v: T) {
        let mut s = lock(&self.0.slot);
        s.value = Some(v);
        // `self` drops next and wakes the receiver.
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut s = lock(&self.0.slot);
        s.sender_gone = true;
        let w = s.receiver.take();
        drop(s);
        if let Some(w) = w {
            w.wake();
        }
    }
}

impl<T> OneShot<T> {
    /// Waits for the value; `None` if the sender was dropped without sending.
    pub(crate) fn recv(&self) -> Option<T> {
        loop {
            let mut s = lock(&self.slot);
            if let Some(v) = s.value.take() {
                return Some(v);
            }
            if s.sender_gone {
                return None;
            }
            let (waker, park) = prepare_park();
            s.receiver = Some(waker);
            drop(s);
            park.park(None);
        }
    }

    fn is_ready(&self) -> bool {
        let s = lock(&self.slot);
        s.value.is_some() || s.sender_gone
    }
}

// ---------------------------------------------------------------------------------------------
// Loop handles

/// A handle to an event loop that any thread can hold (`Send + Sync + Clone`): it runs closures
/// and spawns tasks on that loop, on the loop's own thread.
///
/// ```
/// use costack_aio::EventLoop;
/// use std::thread;
///
/// let lp = EventLoop::new();
/// let handle = lp.handle();
/// let t = thread::spawn(move || {
///     // From another thread: a task on the loop, and its result back here.
///     handle.spawn(|| thread::current().id()).join()
/// });
/// // Drive the loop until the other thread has its answer.
/// let loop_thread = lp.block_on(move || {
///     while !t.is_finished() {
///         costack_aio::sleep(std::time::Duration::from_millis(1));
///     }
///     t.join().unwrap()
/// });
/// assert_eq!(loop_thread, thread::current().id());
/// ```
#[derive(Clone)]
pub struct LoopHandle {
    remote: Arc<Remote>,
}

/// The error when the loop a [`LoopHandle`] refers to has been dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopClosed;

impl fmt::Display for LoopClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the event loop has been dropped")
    }
}

impl std::error::Error for LoopClosed {}

impl LoopHandle {
    pub(crate) fn new(remote: Arc<Remote>) -> LoopHandle {
        LoopHandle { remote }
    }

    /// Runs `f` on the loop's thread, outside any coroutine, after what is queued there
    /// already (see [`EventLoop::call_soon`](crate::EventLoop::call_soon)).
    ///
    /// # Errors
    /// If the loop has been dropped (`f` is dropped).
    pub fn call_soon(&self, f: impl FnOnce() + Send + 'static) -> Result<(), LoopClosed> {
        self.remote
            .send(Msg::Call(Box::new(f)))
            .map_err(|_| LoopClosed)
    }

    /// Spawns `f` as a task on the loop. The result comes back through the returned handle,
    /// which any thread (or a task of any loop) can join.
    ///
    /// If the loop has been dropped, or drops the task before it finishes, joining says so
    /// ([`JoinError::Cancelled`]).
    pub fn spawn<F, T>(&self, f: F) -> RemoteJoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = oneshot::<std::thread::Result<T>>();
        // If the message or the task is dropped unrun, `tx` goes with it: the receiver sees
        // `Cancelled`.
        let _ = self.call_soon(move || {
            let h = expect_loop("spawn").spawn(&TaskBuilder::new(), f);
            forward_result(h, Box::new(move |r| tx.send(r)));
        });
        RemoteJoinHandle { rx }
    }

    /// Whether the loop has been dropped.
    pub fn is_closed(&self) -> bool {
        lock(&self.remote.queue).closed
    }
}

impl fmt::Debug for LoopHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopHandle")
            .field("loop", &self.remote.loop_id)
            .finish()
    }
}

/// The result of a task spawned through a [`LoopHandle`]; `Send`, joinable from any thread or
/// task. Dropping it detaches the task.
pub struct RemoteJoinHandle<T> {
    rx: Arc<OneShot<std::thread::Result<T>>>,
}

impl<T> RemoteJoinHandle<T> {
    /// Waits for the task (yielding in a task, blocking outside coroutines); returns its value
    /// or continues its panic.
    ///
    /// # Panics
    /// Continuing the task's panic, or if the task was dropped before it finished.
    pub fn join(self) -> T {
        crate::runtime::join_value(self.try_join())
    }

    /// Like [`join`](RemoteJoinHandle::join), with the panic or cancellation as an error.
    pub fn try_join(self) -> Result<T, JoinError> {
        match self.rx.recv() {
            Some(Ok(v)) => Ok(v),
            Some(Err(p)) => Err(JoinError::Panicked(p)),
            None => Err(JoinError::Cancelled),
        }
    }

    /// Whether the task is done (finished, panicked or dropped).
    pub fn is_finished(&self) -> bool {
        self.rx.is_ready()
    }
}

impl<T> fmt::Debug for RemoteJoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteJoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}
