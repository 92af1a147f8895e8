//! Multi-producer, single-consumer channels that cross loops and threads.
//!
//! Operations floor (inside `channel`): imports the wakers (`waker`), the mailbox's `lock`,
//! the select protocol (`select`) and the channel's state, errors and waiting (`core`,
//! `error`, `park`).
//!
//! [`bounded`] holds at most `cap` values: [`Sender::send`] waits while it is full. [`unbounded`]
//! never makes a sender wait. Senders and the receiver may live on any loop or plain thread:
//! a send from another thread wakes the receiving task on its own loop (through its eventfd),
//! and a receiver (or a sender waiting for room) on a plain thread blocks the thread.
//!
//! For tasks that all run on one loop, [`channel::local::mpsc`](crate::channel::local::mpsc)
//! does the same without atomics or locks, and is faster.
//!
//! ```
//! use costack_aio::channel::mpsc;
//! use costack_aio::EventLoop;
//! use std::thread;
//!
//! let (tx, rx) = mpsc::bounded(4);
//! let producer = thread::spawn(move || {
//!     for i in 0..10 {
//!         tx.send(i).unwrap(); // blocks this plain thread while the channel is full
//!     }
//!     // `tx` drops here: the receiver sees the end once it has taken every value
//! });
//! let lp = EventLoop::new();
//! let sum: i32 = lp.block_on(move || rx.into_iter().sum()); // the task yields while empty
//! producer.join().unwrap();
//! assert_eq!(sum, 45);
//! ```

use super::core::{wake_all, wake_opt, Chan};
pub use super::error::{SendError, TryRecvError, TrySendError};
use super::park::{leave, wait};
use crate::mailbox::lock;
use crate::select::Selectable;
use crate::waker::Waker;
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

type Shared<T> = Arc<Mutex<Chan<T, Waker>>>;

/// Makes a channel that holds at most `cap` values; a send waits while it is full.
///
/// # Panics
/// If `cap` is 0.
pub fn bounded<T>(cap: usize) -> (Sender<T>, Receiver<T>) {
    make(Some(cap))
}

/// Makes a channel without a bound: a send never waits (and memory grows with what the
/// receiver leaves unread).
pub fn unbounded<T>() -> (Sender<T>, Receiver<T>) {
    make(None)
}

fn make<T>(cap: Option<usize>) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Mutex::new(Chan::new(cap)));
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

/// The sending side of a [`bounded`] or [`unbounded`] channel. Clone it for more producers;
/// it is `Send` and `Sync` (with `T: Send`). When every sender is gone, the receiver gets the
/// values still buffered, then `None`.
pub struct Sender<T> {
    shared: Shared<T>,
}

/// The receiving side of a [`bounded`] or [`unbounded`] channel. It is `Send` (move it to the
/// loop or thread that consumes) but not `Sync`. Dropping it drops the values still buffered
/// and fails the senders, waiting or not.
///
/// It is an [`Iterator`] of the values received: `for v in rx` ends when every sender is gone
/// and the buffer is drained (or the receiver was closed and drained).
pub struct Receiver<T> {
    shared: Shared<T>,
    _not_sync: PhantomData<Cell<()>>,
}

impl<T> Sender<T> {
    /// Sends `v`, waiting while the channel is full (the task yields to its loop; outside any
    /// coroutine the thread blocks). Fails, giving `v` back, if the receiver is closed or
    /// gone — also while waiting: a sender waiting for room is woken with the error when the
    /// receiver drops or closes.
    ///
    /// If a [`timeout`](crate::timeout) expires (or the task is cancelled) while the send waits
    /// for room, the send is abandoned and `v` is dropped, unsent. To keep the value, use
    /// [`try_send`](Sender::try_send), or a select on [`send_branch`](Sender::send_branch).
    ///
    /// # Panics
    /// Inside a coroutine that is not a task of this thread's loop, if it must wait.
    pub fn send(&self, v: T) -> Result<(), SendError<T>> {
        let mut v = v;
        let mut pending = None;
        loop {
            let mut g = lock(&self.shared);
            if let Some(t) = pending.take() {
                g.tx_waiters.remove(t);
            }
            match g.try_send(v) {
                Ok(w) => {
                    drop(g);
                    wake_opt(w);
                    return Ok(());
                }
                Err(TrySendError::Closed(x)) => return Err(SendError(x)),
                Err(TrySendError::Full(x)) => {
                    v = x;
                    pending = Some(wait(
                        &self.shared,
                        g,
                        |c| &mut c.tx_waiters,
                        Chan::send_ready,
                    ));
                }
            }
        }
    }

    /// Sends `v` if that needs no wait: [`Full`](TrySendError::Full) if the channel holds
    /// `cap` values, [`Closed`](TrySendError::Closed) if the receiver is closed or gone; both
    /// give `v` back.
    pub fn try_send(&self, v: T) -> Result<(), TrySendError<T>> {
        let mut g = lock(&self.shared);
        let w = g.try_send(v)?;
        drop(g);
        wake_opt(w);
        Ok(())
    }

    /// Whether the receiver is closed or gone (every send fails from now on).
    pub fn is_closed(&self) -> bool {
        lock(&self.shared).is_closed()
    }

    /// How many values the channel holds now.
    pub fn len(&self) -> usize {
        lock(&self.shared).len()
    }

    /// Whether the channel holds no value now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound of the channel; `None` for an [`unbounded`] one.
    pub fn capacity(&self) -> Option<usize> {
        lock(&self.shared).capacity()
    }

    /// A select branch that sends `value` when there is room; its output is the result of the
    /// send. A branch that loses keeps its value, unsent: get it back with
    /// [`SendBranch::into_value`] (dropping the branch drops it).
    pub fn send_branch(&self, value: T) -> SendBranch<'_, T> {
        SendBranch {
            tx: self,
            value: Some(value),
            ticket: None,
        }
    }
}

impl<T> Clone for Sender<T> {
    /// Another sender of the same channel.
    fn clone(&self) -> Self {
        lock(&self.shared).add_sender();
        Sender {
            shared: self.shared.clone(),
        }
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
        let g = lock(&self.shared);
        f.debug_struct("Sender")
            .field("len", &g.len())
            .field("capacity", &g.capacity())
            .field("closed", &g.is_closed())
            .field("waiting_receivers", &g.rx_waiters.len())
            .field("waiting_senders", &g.tx_waiters.len())
            .finish()
    }
}

impl<T> Receiver<T> {
    /// Receives the next value, waiting while there is none (the task yields to its loop;
    /// outside any coroutine the thread blocks). `None` once every sender is gone (or the
    /// receiver was [`close`](Receiver::close)d) and every buffered value was received.
    ///
    /// A `recv` interrupted by a [`timeout`](crate::timeout) (or a cancel) consumes nothing.
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
                Ok((v, w)) => {
                    drop(g);
                    wake_opt(w);
                    return Some(v);
                }
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => {
                    pending = Some(wait(
                        &self.shared,
                        g,
                        |c| &mut c.rx_waiters,
                        Chan::recv_ready,
                    ));
                }
            }
        }
    }

    /// Receives the next value if one is buffered: [`Empty`](TryRecvError::Empty) if none is
    /// but a sender may still send, [`Disconnected`](TryRecvError::Disconnected) if none ever
    /// will.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        let mut g = lock(&self.shared);
        let (v, w) = g.try_recv()?;
        drop(g);
        wake_opt(w);
        Ok(v)
    }

    /// Refuses new sends (they fail with the value; senders waiting for room are woken with
    /// that error) while the values already buffered can still be received.
    pub fn close(&self) {
        let ws = lock(&self.shared).close();
        wake_all(ws);
    }

    /// Whether no value can come any more: the receiver was closed or every sender is gone.
    /// (Values may still be buffered: see [`len`](Receiver::len).)
    pub fn is_closed(&self) -> bool {
        lock(&self.shared).no_more_sends()
    }

    /// How many values are buffered.
    pub fn len(&self) -> usize {
        lock(&self.shared).len()
    }

    /// Whether no value is buffered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound of the channel; `None` for an [`unbounded`] one.
    pub fn capacity(&self) -> Option<usize> {
        lock(&self.shared).capacity()
    }

    /// A select branch that receives the next value; its output is what
    /// [`recv`](Receiver::recv) would return (`None`: closed and drained). A branch that loses
    /// consumes nothing.
    pub fn recv_branch(&self) -> RecvBranch<'_, T> {
        RecvBranch {
            rx: self,
            ticket: None,
        }
    }
}

impl<T> Iterator for Receiver<T> {
    type Item = T;

    /// [`recv`](Receiver::recv).
    fn next(&mut self) -> Option<T> {
        self.recv()
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let (values, ws) = lock(&self.shared).drop_receiver();
        wake_all(ws);
        drop(values);
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = lock(&self.shared);
        f.debug_struct("Receiver")
            .field("len", &g.len())
            .field("capacity", &g.capacity())
            .field("closed", &g.no_more_sends())
            .field("waiting_receivers", &g.rx_waiters.len())
            .field("waiting_senders", &g.tx_waiters.len())
            .finish()
    }
}

/// A select branch that receives from a [`Receiver`]; made by [`Receiver::recv_branch`].
///
/// Output: `Some(value)`, or `None` when the channel is closed and drained. A branch that
/// loses consumes nothing.
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
            leave(&self.rx.shared, |c| &mut c.rx_waiters, Chan::recv_ready, t);
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
        f.debug_struct("RecvBranch")
            .field("registered", &self.ticket.is_some())
            .finish()
    }
}

/// A select branch that sends a value on a [`Sender`]; made by [`Sender::send_branch`].
///
/// Output: `Ok(())` once sent, or `Err(SendError(value))` if the receiver is closed or gone.
/// A branch that loses keeps its value: [`into_value`](SendBranch::into_value) gives it back.
pub struct SendBranch<'a, T> {
    tx: &'a Sender<T>,
    value: Option<T>,
    ticket: Option<u64>,
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
        match self.tx.try_send(v) {
            Ok(()) => Some(Ok(())),
            Err(TrySendError::Closed(v)) => Some(Err(SendError(v))),
            Err(TrySendError::Full(v)) => {
                self.value = Some(v);
                None
            }
        }
    }

    fn register(&mut self, waker: &Waker) {
        let mut g = lock(&self.tx.shared);
        self.ticket = Some(g.tx_waiters.replace_or_push(self.ticket, waker.clone()));
    }

    fn deregister(&mut self) {
        if let Some(t) = self.ticket.take() {
            leave(&self.tx.shared, |c| &mut c.tx_waiters, Chan::send_ready, t);
        }
    }
}

impl<T> Drop for SendBranch<'_, T> {
    fn drop(&mut self) {
        self.deregister();
    }
}

impl<T> fmt::Debug for SendBranch<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendBranch")
            .field("has_value", &self.value.is_some())
            .field("registered", &self.ticket.is_some())
            .finish()
    }
}
