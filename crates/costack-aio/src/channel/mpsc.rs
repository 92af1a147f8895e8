//! Multi-producer, single-consumer channels that cross loops and threads.
//!
//! Operations floor (inside `channel`): imports the wakers (`waker`), the mailbox's `lock`,
//! the select protocol (`select`) and the channel's state, errors and waiting (`core`,
//! `error`, `park`).
//!
//! [`bounded`] holds at most `cap` values: [`Sender::send`] waits while it is full. [`unbounded`]
//! never makes a sender wait. Senders and the receiver may live on any loop or plain thread:
//! a send from another thread wakes the receiving task on its own loop (through its eventfd),
//! and a receiver (or a sender waiting for room) on a plain thread blocks the thread — or, on a
//! thread with an event loop (not running), runs that loop meanwhile, as
//! [`JoinHandle::join`](crate::JoinHandle::join) does, so that its tasks can be the other side.
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
use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};

/// The state of a channel, with what the receiver and the senders share without the lock.
///
/// The receiver takes the buffer in batches (every value there, in one lock) into a cache of
/// its own, and hands them out from it without locking, so that a producer and a consumer on
/// two threads do not contend for the lock at every value. The values in the cache still
/// count against the capacity: `held` says how many there are, and a sender whose count (under
/// the lock) says the channel is full reads it before deciding so.
struct Shared<T> {
    chan: Mutex<Locked<T>>,
    /// Values in the receiver's cache: taken from the buffer, not yet received.
    held: AtomicUsize,
    /// A sender may wait for room: set (under the lock) by a sender that joins the queue,
    /// cleared (under the lock) when the receiver finds the queue empty. A receiver that
    /// hands out a value from its cache looks at it to know whether to wake a sender.
    tx_waiting: AtomicBool,
}

struct Locked<T> {
    chan: Chan<T, Waker>,
    /// An upper bound of `held` (which only the receiver lowers, without the lock): while
    /// the buffer plus this leaves room, there is room, and `held` need not be read.
    held_seen: usize,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, Locked<T>> {
        lock(&self.chan)
    }

    /// Whether a sender waiting for room could go on (for `leave`).
    fn send_ready(&self, l: &Locked<T>) -> bool {
        l.chan.is_closed() || l.chan.has_room(self.held.load(SeqCst))
    }

    /// Queues `v` if there is room; on success, the receiver to wake.
    fn try_send(&self, l: &mut Locked<T>, v: T) -> Result<Option<Waker>, TrySendError<T>> {
        match l.chan.try_send_counting(v, l.held_seen) {
            Err(TrySendError::Full(v)) => {
                l.held_seen = self.held.load(SeqCst);
                l.chan.try_send_counting(v, l.held_seen)
            }
            r => r,
        }
    }
}

type Rx<T> = Arc<Shared<T>>;

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
    let shared = Arc::new(Shared {
        chan: Mutex::new(Locked {
            chan: Chan::new(cap),
            held_seen: 0,
        }),
        held: AtomicUsize::new(0),
        tx_waiting: AtomicBool::new(false),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver {
            shared,
            cache: RefCell::new(VecDeque::new()),
        },
    )
}

/// The sending side of a [`bounded`] or [`unbounded`] channel. Clone it for more producers;
/// it is `Send` and `Sync` (with `T: Send`). When every sender is gone, the receiver gets the
/// values still buffered, then `None`.
pub struct Sender<T> {
    shared: Rx<T>,
}

/// The receiving side of a [`bounded`] or [`unbounded`] channel. It is `Send` (move it to the
/// loop or thread that consumes) but not `Sync`. Dropping it drops the values still buffered
/// and fails the senders, waiting or not.
///
/// It is an [`Iterator`] of the values received: `for v in rx` ends when every sender is gone
/// and the buffer is drained (or the receiver was closed and drained).
pub struct Receiver<T> {
    shared: Rx<T>,
    /// Values taken from the buffer in a batch, handed out by `recv` (see [`Shared`]).
    cache: RefCell<VecDeque<T>>,
}

impl<T> Sender<T> {
    /// Sends `v`, waiting while the channel is full (the task yields to its loop; outside any
    /// coroutine the thread blocks, running its event loop meanwhile if it has one). Fails, giving `v` back, if the receiver is closed or
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
        let sh = &*self.shared;
        let mut v = v;
        let mut pending = None;
        loop {
            let mut g = sh.lock();
            if let Some(t) = pending.take() {
                g.chan.tx_waiters.remove(t);
            }
            match sh.try_send(&mut g, v) {
                Ok(w) => {
                    drop(g);
                    wake_opt(w);
                    return Ok(());
                }
                Err(TrySendError::Closed(x)) => return Err(SendError(x)),
                Err(TrySendError::Full(x)) => {
                    v = x;
                    // Say that a sender waits, then look again: a receiver that handed out a
                    // value meanwhile (lowering `held`) either sees the flag or is seen here.
                    sh.tx_waiting.store(true, SeqCst);
                    if sh.send_ready(&g) {
                        continue;
                    }
                    pending = Some(wait(&sh.chan, g, |l| &mut l.chan.tx_waiters, &|l| {
                        sh.send_ready(l)
                    }));
                }
            }
        }
    }

    /// Sends `v` if that needs no wait: [`Full`](TrySendError::Full) if the channel holds
    /// `cap` values, [`Closed`](TrySendError::Closed) if the receiver is closed or gone; both
    /// give `v` back.
    pub fn try_send(&self, v: T) -> Result<(), TrySendError<T>> {
        let mut g = self.shared.lock();
        let w = self.shared.try_send(&mut g, v)?;
        drop(g);
        wake_opt(w);
        Ok(())
    }

    /// Whether the receiver is closed or gone (every send fails from now on).
    pub fn is_closed(&self) -> bool {
        self.shared.lock().chan.is_closed()
    }

    /// How many values the channel holds now.
    pub fn len(&self) -> usize {
        self.shared.lock().chan.len() + self.shared.held.load(SeqCst)
    }

    /// Whether the channel holds no value now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound of the channel; `None` for an [`unbounded`] one.
    pub fn capacity(&self) -> Option<usize> {
        self.shared.lock().chan.capacity()
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
        self.shared.lock().chan.add_sender();
        Sender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let ws = self.shared.lock().chan.drop_sender();
        wake_all(ws);
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = self.shared.lock();
        f.debug_struct("Sender")
            .field("len", &(g.chan.len() + self.shared.held.load(SeqCst)))
            .field("capacity", &g.chan.capacity())
            .field("closed", &g.chan.is_closed())
            .field("waiting_receivers", &g.chan.rx_waiters.len())
            .field("waiting_senders", &g.chan.tx_waiters.len())
            .finish()
    }
}

impl<T> Receiver<T> {
    /// Receives the next value, waiting while there is none (the task yields to its loop;
    /// outside any coroutine the thread blocks, running its event loop meanwhile if it has
    /// one). `None` once every sender is gone (or the
    /// receiver was [`close`](Receiver::close)d) and every buffered value was received.
    ///
    /// A `recv` interrupted by a [`timeout`](crate::timeout) (or a cancel) consumes nothing.
    ///
    /// # Panics
    /// Inside a coroutine that is not a task of this thread's loop, if it must wait.
    pub fn recv(&self) -> Option<T> {
        let sh = &*self.shared;
        let mut pending = None;
        loop {
            if let Some(v) = self.take_cached() {
                return Some(v);
            }
            let mut g = sh.lock();
            if let Some(t) = pending.take() {
                g.chan.rx_waiters.remove(t);
            }
            if self.refill(&mut g) {
                continue;
            }
            if g.chan.no_more_sends() {
                return None;
            }
            pending = Some(wait(&sh.chan, g, |l| &mut l.chan.rx_waiters, &|l| {
                l.chan.recv_ready()
            }));
        }
    }

    /// Hands out the first cached value, and wakes a sender waiting for the room it leaves.
    #[inline]
    fn take_cached(&self) -> Option<T> {
        let v = self.cache.borrow_mut().pop_front()?;
        let sh = &*self.shared;
        sh.held.fetch_sub(1, SeqCst);
        if sh.tx_waiting.load(SeqCst) {
            let mut g = sh.lock();
            let w = g.chan.tx_waiters.pop();
            if g.chan.tx_waiters.len() == 0 {
                sh.tx_waiting.store(false, SeqCst);
            }
            drop(g);
            wake_opt(w);
        }
        Some(v)
    }

    /// Moves the buffer into the (empty) cache; whether there was anything.
    fn refill(&self, g: &mut Locked<T>) -> bool {
        let mut cache = self.cache.borrow_mut();
        let n = g.chan.take_buf(&mut cache);
        if n == 0 {
            return false;
        }
        self.shared.held.fetch_add(n, SeqCst);
        g.held_seen += n;
        true
    }

    /// Receives the next value if one is buffered: [`Empty`](TryRecvError::Empty) if none is
    /// but a sender may still send, [`Disconnected`](TryRecvError::Disconnected) if none ever
    /// will.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        if let Some(v) = self.take_cached() {
            return Ok(v);
        }
        let mut g = self.shared.lock();
        if self.refill(&mut g) {
            drop(g);
            return Ok(self.take_cached().expect("refilled"));
        }
        Err(if g.chan.no_more_sends() {
            TryRecvError::Disconnected
        } else {
            TryRecvError::Empty
        })
    }

    /// Refuses new sends (they fail with the value; senders waiting for room are woken with
    /// that error) while the values already buffered can still be received.
    pub fn close(&self) {
        let ws = self.shared.lock().chan.close();
        wake_all(ws);
    }

    /// Whether no value can come any more: the receiver was closed or every sender is gone.
    /// (Values may still be buffered: see [`len`](Receiver::len).)
    pub fn is_closed(&self) -> bool {
        self.shared.lock().chan.no_more_sends()
    }

    /// How many values are buffered.
    pub fn len(&self) -> usize {
        self.cache.borrow().len() + self.shared.lock().chan.len()
    }

    /// Whether no value is buffered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound of the channel; `None` for an [`unbounded`] one.
    pub fn capacity(&self) -> Option<usize> {
        self.shared.lock().chan.capacity()
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
        let cache = std::mem::take(self.cache.get_mut());
        let mut g = self.shared.lock();
        let (values, ws) = g.chan.drop_receiver();
        self.shared.held.store(0, SeqCst);
        drop(g);
        wake_all(ws);
        drop(values);
        drop(cache);
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = self.shared.lock();
        f.debug_struct("Receiver")
            .field("len", &(self.cache.borrow().len() + g.chan.len()))
            .field("capacity", &g.chan.capacity())
            .field("closed", &g.chan.no_more_sends())
            .field("waiting_receivers", &g.chan.rx_waiters.len())
            .field("waiting_senders", &g.chan.tx_waiters.len())
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
        let mut g = self.rx.shared.lock();
        self.ticket = Some(
            g.chan
                .rx_waiters
                .replace_or_push(self.ticket, waker.clone()),
        );
    }

    fn deregister(&mut self) {
        if let Some(t) = self.ticket.take() {
            let ready = |l: &Locked<T>| l.chan.recv_ready();
            leave(&self.rx.shared.chan, |l| &mut l.chan.rx_waiters, &ready, t);
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

    /// Joins the senders waiting for room (the select tries the branch again afterwards, which
    /// sees room made meanwhile).
    fn register(&mut self, waker: &Waker) {
        let sh = &*self.tx.shared;
        let mut g = sh.lock();
        self.ticket = Some(
            g.chan
                .tx_waiters
                .replace_or_push(self.ticket, waker.clone()),
        );
        sh.tx_waiting.store(true, SeqCst);
    }

    fn deregister(&mut self) {
        if let Some(t) = self.ticket.take() {
            let sh = &*self.tx.shared;
            leave(
                &sh.chan,
                |l| &mut l.chan.tx_waiters,
                &|l| sh.send_ready(l),
                t,
            );
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
