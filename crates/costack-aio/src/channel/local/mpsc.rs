//! Multi-producer, single-consumer channels for the tasks of one loop.
//!
//! Operations floor (inside `channel`): imports the select protocol (`select`), the wakers
//! (`waker`), and the channel's state, errors and local waiting (`core`, `error`, `local`).
//!
//! The same API as [`channel::mpsc`](crate::channel::mpsc), for a sender and receiver on one
//! loop: the types are not `Send`, the state is a `RefCell`, and a wake-up puts the waiting
//! task straight on the loop's ready queue. [`bounded`] holds at most `cap` values and
//! [`Sender::send`] waits while it is full; [`unbounded`] never makes a sender wait. See the
//! [`local`](super) module for when to use which flavour.
//!
//! ```
//! use costack_aio::channel::local::mpsc;
//! use costack_aio::EventLoop;
//!
//! let lp = EventLoop::new();
//! let got = lp.block_on(|| {
//!     let (tx, rx) = mpsc::bounded(2);
//!     let producer = costack_aio::spawn(move || {
//!         for i in 0..5 {
//!             tx.send(i).unwrap(); // yields while 2 values wait
//!         }
//!     });
//!     let got: Vec<i32> = rx.collect(); // yields while empty; ends when `tx` is gone
//!     producer.join();
//!     got
//! });
//! assert_eq!(got, [0, 1, 2, 3, 4]);
//! ```

use super::{leave, wait, Waiter};
use crate::channel::core::{wake_all, wake_opt, Chan};
pub use crate::channel::error::{SendError, TryRecvError, TrySendError};
use crate::select::Selectable;
use crate::waker::Waker;
use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

type Shared<T> = Rc<RefCell<Chan<T, Waiter>>>;

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
    let shared = Rc::new(RefCell::new(Chan::new(cap)));
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

/// The sending side of a [`bounded`] or [`unbounded`] channel, for tasks of one loop (not
/// `Send`). Clone it for more producers. When every sender is gone, the receiver gets the
/// values still buffered, then `None`.
pub struct Sender<T> {
    shared: Shared<T>,
}

/// The receiving side of a [`bounded`] or [`unbounded`] channel, for tasks of one loop (not
/// `Send`). Dropping it drops the values still buffered and fails the senders, waiting or
/// not.
///
/// It is an [`Iterator`] of the values received: `for v in rx` ends when every sender is gone
/// and the buffer is drained (or the receiver was closed and drained).
pub struct Receiver<T> {
    shared: Shared<T>,
}

impl<T> Sender<T> {
    /// Sends `v`, waiting while the channel is full (the task yields to its loop; outside any
    /// coroutine the thread's loop runs until it can go on). Fails, giving `v` back, if the
    /// receiver is closed or gone — also while waiting: a sender waiting for room is woken
    /// with the error when the receiver drops or closes.
    ///
    /// If a [`timeout`](crate::timeout) expires (or the task is cancelled) while the send waits
    /// for room, the send is abandoned and `v` is dropped, unsent. To keep the value, use
    /// [`try_send`](Sender::try_send), or a select on [`send_branch`](Sender::send_branch).
    ///
    /// # Panics
    /// If it must wait: inside a coroutine that is not a task of this thread's loop; outside
    /// any coroutine, on a thread without a loop or in a callback of the running loop.
    pub fn send(&self, v: T) -> Result<(), SendError<T>> {
        let mut v = v;
        let mut pending = None;
        loop {
            let mut g = self.shared.borrow_mut();
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
                    drop(g);
                    pending = wait(&self.shared, |c| &mut c.tx_waiters, Chan::send_ready);
                }
            }
        }
    }

    /// Sends `v` if that needs no wait: [`Full`](TrySendError::Full) if the channel holds
    /// `cap` values, [`Closed`](TrySendError::Closed) if the receiver is closed or gone; both
    /// give `v` back.
    pub fn try_send(&self, v: T) -> Result<(), TrySendError<T>> {
        let mut g = self.shared.borrow_mut();
        let w = g.try_send(v)?;
        drop(g);
        wake_opt(w);
        Ok(())
    }

    /// Whether the receiver is closed or gone (every send fails from now on).
    pub fn is_closed(&self) -> bool {
        self.shared.borrow().is_closed()
    }

    /// How many values the channel holds now.
    pub fn len(&self) -> usize {
        self.shared.borrow().len()
    }

    /// Whether the channel holds no value now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound of the channel; `None` for an [`unbounded`] one.
    pub fn capacity(&self) -> Option<usize> {
        self.shared.borrow().capacity()
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
        self.shared.borrow_mut().add_sender();
        Sender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let ws = self.shared.borrow_mut().drop_sender();
        wake_all(ws);
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = self.shared.borrow();
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
    /// outside any coroutine the thread's loop runs until it can go on). `None` once every
    /// sender is gone (or the receiver was [`close`](Receiver::close)d) and every buffered
    /// value was received.
    ///
    /// A `recv` interrupted by a [`timeout`](crate::timeout) (or a cancel) consumes nothing.
    ///
    /// # Panics
    /// If it must wait: inside a coroutine that is not a task of this thread's loop; outside
    /// any coroutine, on a thread without a loop or in a callback of the running loop.
    pub fn recv(&self) -> Option<T> {
        let mut pending = None;
        loop {
            let mut g = self.shared.borrow_mut();
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
                    drop(g);
                    pending = wait(&self.shared, |c| &mut c.rx_waiters, Chan::recv_ready);
                }
            }
        }
    }

    /// Receives the next value if one is buffered: [`Empty`](TryRecvError::Empty) if none is
    /// but a sender may still send, [`Disconnected`](TryRecvError::Disconnected) if none ever
    /// will.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        let mut g = self.shared.borrow_mut();
        let (v, w) = g.try_recv()?;
        drop(g);
        wake_opt(w);
        Ok(v)
    }

    /// Refuses new sends (they fail with the value; senders waiting for room are woken with
    /// that error) while the values already buffered can still be received.
    pub fn close(&self) {
        let ws = self.shared.borrow_mut().close();
        wake_all(ws);
    }

    /// Whether no value can come any more: the receiver was closed or every sender is gone.
    /// (Values may still be buffered: see [`len`](Receiver::len).)
    pub fn is_closed(&self) -> bool {
        self.shared.borrow().no_more_sends()
    }

    /// How many values are buffered.
    pub fn len(&self) -> usize {
        self.shared.borrow().len()
    }

    /// Whether no value is buffered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound of the channel; `None` for an [`unbounded`] one.
    pub fn capacity(&self) -> Option<usize> {
        self.shared.borrow().capacity()
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
        let (values, ws) = self.shared.borrow_mut().drop_receiver();
        wake_all(ws);
        drop(values);
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = self.shared.borrow();
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
        let mut g = self.rx.shared.borrow_mut();
        self.ticket = Some(
            g.rx_waiters
                .replace_or_push(self.ticket, Waiter::Waker(waker.clone())),
        );
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
        let mut g = self.tx.shared.borrow_mut();
        self.ticket = Some(
            g.tx_waiters
                .replace_or_push(self.ticket, Waiter::Waker(waker.clone())),
        );
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
