//! One value, once, across loops and threads.
//!
//! Operations floor (inside `channel`): imports the wakers (`waker`), the mailbox's `lock`,
//! the select protocol (`select`) and the channel's state, errors and waiting (`core`,
//! `error`, `park`).
//!
//! [`Sender::send`] never waits; [`Receiver::recv`] waits for the value (a task yields to its
//! loop, a plain thread blocks, running its event loop meanwhile if it has one) and returns `None` if the sender went away without sending.
//! For tasks of one loop, [`channel::local::oneshot`](crate::channel::local::oneshot) does the
//! same without atomics or locks.
//!
//! ```
//! use costack_aio::channel::oneshot;
//! use costack_aio::EventLoop;
//!
//! let (tx, rx) = oneshot::channel();
//! std::thread::spawn(move || tx.send(6 * 7).unwrap());
//! let lp = EventLoop::new();
//! assert_eq!(lp.block_on(move || rx.recv()), Some(42));
//! ```

use super::core::{wake_all, One};
pub use super::error::{SendError, TryRecvError};
use super::park::{leave, wait};
use crate::mailbox::lock;
use crate::select::Selectable;
use crate::waker::Waker;
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

type Shared<T> = Arc<Mutex<One<T, Waker>>>;

/// Makes a oneshot channel.
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Mutex::new(One::new()));
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver {
            shared,
            _not_sync: PhantomData,
        },
    )
}

/// The sending side of a [`oneshot`](self) channel. Dropping it unsent ends the receiver's
/// wait with `None`.
pub struct Sender<T> {
    shared: Shared<T>,
}

/// The receiving side of a [`oneshot`](self) channel (`Send`, not `Sync`). Dropping it drops
/// the value if one was sent and not received.
pub struct Receiver<T> {
    shared: Shared<T>,
    _not_sync: PhantomData<Cell<()>>,
}

impl<T> Sender<T> {
    /// Sends the value, without waiting; gives it back if the receiver is closed or gone (or
    /// a [`send_branch`](Sender::send_branch) of this sender sent already).
    pub fn send(self, v: T) -> Result<(), T> {
        let ws = lock(&self.shared).send(v)?;
        wake_all(ws);
        Ok(())
    }

    /// A select branch that sends `value`; its output is the result of the send, with the
    /// value in a [`SendError`] if the receiver is closed or gone. A oneshot send never waits,
    /// so the branch is always ready; it sends once: a second branch of the same sender fails
    /// with its value. A branch that loses (another was picked first) keeps its value:
    /// [`SendBranch::into_value`] gives it back.
    pub fn send_branch(&self, value: T) -> SendBranch<'_, T> {
        SendBranch {
            tx: self,
            value: Some(value),
        }
    }

    /// Whether the receiver is closed or gone (a send would fail).
    pub fn is_closed(&self) -> bool {
        lock(&self.shared).is_closed()
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let ws = lock(&self.shared).drop_sender();
        wake_all(ws);
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("oneshot::Sender")
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl<T> Receiver<T> {
    /// Waits for the value (the task yields to its loop; outside any coroutine the thread
    /// blocks, running its event loop meanwhile if it has one). `None` if the sender went away without sending, the receiver was closed before
    /// a value came, or the value was received already.
    ///
    /// A `recv` interrupted by a [`timeout`](crate::timeout) (or a cancel) consumes nothing:
    /// call it again later.
    ///
    /// # Panics
    /// Inside a coroutine that is not a task of this thread's loop, if it must wait.
    pub fn recv(&self) -> Option<T> {
        let mut pending = None;
        loop {
            let mut g = lock(&self.shared);
            if let Some(t) = pending.take() {
                g.rx_waiters.remove(t);
            }
            match g.try_recv() {
                Ok(v) => return Some(v),
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => {
                    pending = Some(wait(
                        &self.shared,
                        g,
                        |c| &mut c.rx_waiters,
                        &One::recv_ready,
                    ));
                }
            }
        }
    }

    /// The value if it was sent: [`Empty`](TryRecvError::Empty) if the sender may still send,
    /// [`Disconnected`](TryRecvError::Disconnected) if no value will come (or it was received).
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        lock(&self.shared).try_recv()
    }

    /// Refuses the send to come (it fails with its value); a value sent already can still be
    /// received.
    pub fn close(&self) {
        lock(&self.shared).close();
    }

    /// A select branch that receives the value; its output is what [`recv`](Receiver::recv)
    /// would return. A branch that loses consumes nothing.
    pub fn recv_branch(&self) -> RecvBranch<'_, T> {
        RecvBranch {
            rx: self,
            ticket: None,
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let v = lock(&self.shared).drop_receiver();
        drop(v);
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = lock(&self.shared);
        f.debug_struct("oneshot::Receiver")
            .field("has_value", &g.has_value())
            .field("waiting_receivers", &g.rx_waiters.len())
            .finish()
    }
}

/// A select branch that receives from a oneshot [`Receiver`]; made by
/// [`Receiver::recv_branch`]. Output: `Some(value)`, or `None` if no value will come. A branch
/// that loses consumes nothing.
pub struct RecvBranch<'a, T> {
    rx: &'a Receiver<T>,
    ticket: Option<u64>,
}

impl<T> Selectable for RecvBranch<'_, T> {
    type Output = Option<T>;

    fn try_select(&mut self) -> Option<Option<T>> {
        match self.rx.try_recv() {
            Ok(v) => Some(Some(v)),
            Err(TryRecvError::Disconnected) => Some(None),
            Err(TryRecvError::Empty) => None,
        }
    }

    fn register(&mut self, waker: &Waker) {
        let mut g = lock(&self.rx.shared);
        self.ticket = Some(g.rx_waiters.replace_or_push(self.ticket, waker.clone()));
    }

    fn deregister(&mut self) {
        if let Some(t) = self.ticket.take() {
            leave(&self.rx.shared, |c| &mut c.rx_waiters, &One::recv_ready, t);
        }
    }
}

impl<T> Drop for RecvBranch<'_, T> {
    fn drop(&mut self) {
        self.deregister();
    }
}

impl<T> fmt::Debug for RecvBranch<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("oneshot::RecvBranch")
            .field("registered", &self.ticket.is_some())
            .finish()
    }
}

/// A select branch that sends on a oneshot [`Sender`]; made by [`Sender::send_branch`].
///
/// Output: `Ok(())` once sent, or `Err(SendError(value))` if the receiver is closed or gone
/// (or this sender sent already). Always ready. A branch that loses keeps its value:
/// [`into_value`](SendBranch::into_value) gives it back.
pub struct SendBranch<'a, T> {
    tx: &'a Sender<T>,
    value: Option<T>,
}

impl<T> SendBranch<'_, T> {
    /// The value, if the branch has not sent it (it lost, or never ran).
    pub fn into_value(mut self) -> Option<T> {
        self.value.take()
    }
}

impl<T> Selectable for SendBranch<'_, T> {
    type Output = Result<(), SendError<T>>;

    fn try_select(&mut self) -> Option<Self::Output> {
        let v = self.value.take()?;
        let r = lock(&self.tx.shared).send(v);
        Some(match r {
            Ok(ws) => {
                wake_all(ws);
                Ok(())
            }
            Err(v) => Err(SendError(v)),
        })
    }

    /// Nothing to do: the branch is always ready.
    fn register(&mut self, _waker: &Waker) {}

    fn deregister(&mut self) {}
}

impl<T> fmt::Debug for SendBranch<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("oneshot::SendBranch")
            .field("has_value", &self.value.is_some())
            .finish()
    }
}
