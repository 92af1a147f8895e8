//! Across threads: handles to a loop, and wakers for suspended tasks.
//!
//! Top floor: imports tasks (`task`: a remote spawn is a task whose result is forwarded), the
//! loop proper (`runtime`), the mailbox (`mailbox`) and the wakers (`waker`, whose public items
//! are re-exported here).
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

pub use crate::waker::{suspend, Waker};

use crate::mailbox::{Msg, Remote};
use crate::runtime::expect_loop;
use crate::task::{forward_result, join_value, spawn_on, JoinError, TaskBuilder};
use crate::waker::{oneshot, OneShot};
use std::fmt;
use std::sync::Arc;

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
            let h = spawn_on(&expect_loop("spawn"), &TaskBuilder::new(), f);
            forward_result(h, Box::new(move |r| tx.send(r)));
        });
        RemoteJoinHandle { rx }
    }

    /// Whether the loop has been dropped.
    pub fn is_closed(&self) -> bool {
        self.remote.is_closed()
    }
}

impl fmt::Debug for LoopHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopHandle")
            .field("loop", &self.remote.loop_id())
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
        join_value(self.try_join())
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
