//! The state of a channel, shared by both flavours: the buffer, the counts, and the queues of
//! waiters, with the rules of sending, receiving and closing. Nothing here waits or locks: the
//! flavours (`local` with a `RefCell`, the `Send` one with a `Mutex`) hold the state, call
//! these methods, and wake the waiters these methods hand back.
//!
//! Imports only the errors (`error`).

use super::error::{TryRecvError, TrySendError};
use std::collections::VecDeque;

/// Something that ends one wait when woken: a task key of the thread's loop (local flavour) or
/// a [`Waker`](crate::Waker).
pub(crate) trait Wake {
    fn wake(self);
}

/// The waiters of one side of a channel, in FIFO order. Each has a ticket (increasing, so the
/// queue is sorted by ticket and found by binary search); a waiter that is woken is taken out,
/// and one that gives up takes itself out.
pub(crate) struct WaitQueue<W> {
    queue: VecDeque<(u64, W)>,
    next: u64,
}

impl<W> WaitQueue<W> {
    pub(crate) const fn new() -> Self {
        WaitQueue {
            queue: VecDeque::new(),
            next: 0,
        }
    }

    /// Adds a waiter at the back; returns its ticket.
    #[inline]
    pub(crate) fn push(&mut self, w: W) -> u64 {
        let t = self.next;
        self.next += 1;
        self.queue.push_back((t, w));
        t
    }

    fn find(&self, ticket: u64) -> Option<usize> {
        self.queue.binary_search_by_key(&ticket, |e| e.0).ok()
    }

    /// Replaces the waiter of `ticket` if it is still queued, or queues `w` anew (a select
    /// branch registering again). Returns the ticket.
    pub(crate) fn replace_or_push(&mut self, ticket: Option<u64>, w: W) -> u64 {
        if let Some(i) = ticket.and_then(|t| self.find(t)) {
            self.queue[i].1 = w;
            return self.queue[i].0;
        }
        self.push(w)
    }

    /// Takes the waiter of `ticket` out; false if it is not queued (it was woken).
    #[inline]
    pub(crate) fn remove(&mut self, ticket: u64) -> bool {
        if self.queue.is_empty() {
            return false;
        }
        match self.find(ticket) {
            Some(i) => {
                self.queue.remove(i);
                true
            }
            None => false,
        }
    }

    /// Takes the first waiter out, to be woken.
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<W> {
        self.queue.pop_front().map(|e| e.1)
    }

    /// Takes every waiter out, to be woken.
    pub(crate) fn take_all(&mut self) -> Vec<W> {
        self.queue.drain(..).map(|e| e.1).collect()
    }

    /// How many waiters are queued.
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }
}

/// Wakes every waiter of `ws`.
pub(crate) fn wake_all<W: Wake>(ws: Vec<W>) {
    for w in ws {
        w.wake();
    }
}

/// Wakes `w`, if any.
#[inline]
pub(crate) fn wake_opt<W: Wake>(w: Option<W>) {
    if let Some(w) = w {
        w.wake();
    }
}

/// The state of an mpsc channel.
pub(crate) struct Chan<T, W> {
    buf: VecDeque<T>,
    /// `usize::MAX` for an unbounded channel.
    cap: usize,
    senders: usize,
    /// The receiver was closed or dropped: no new sends.
    closed: bool,
    /// Receivers waiting for a value (normally one; a shared receiver may have more).
    pub(crate) rx_waiters: WaitQueue<W>,
    /// Senders waiting for room.
    pub(crate) tx_waiters: WaitQueue<W>,
}

impl<T, W> Chan<T, W> {
    /// A channel with one sender, holding at most `cap` values (`None`: unbounded).
    ///
    /// # Panics
    /// If `cap` is `Some(0)`.
    pub(crate) fn new(cap: Option<usize>) -> Self {
        assert!(
            cap != Some(0),
            "costack-aio: a bounded channel needs a capacity of at least 1"
        );
        Chan {
            buf: VecDeque::new(),
            cap: cap.unwrap_or(usize::MAX),
            senders: 1,
            closed: false,
            rx_waiters: WaitQueue::new(),
            tx_waiters: WaitQueue::new(),
        }
    }

    /// Queues `v` if there is room; on success, the receiver to wake.
    #[inline]
    pub(crate) fn try_send(&mut self, v: T) -> Result<Option<W>, TrySendError<T>> {
        self.try_send_counting(v, 0)
    }

    /// [`try_send`](Chan::try_send), counting `held` more values against the capacity (values
    /// the receiver took out of the buffer but has not handed out yet).
    #[inline]
    pub(crate) fn try_send_counting(
        &mut self,
        v: T,
        held: usize,
    ) -> Result<Option<W>, TrySendError<T>> {
        if self.closed {
            return Err(TrySendError::Closed(v));
        }
        if !self.has_room(held) {
            return Err(TrySendError::Full(v));
        }
        self.buf.push_back(v);
        Ok(self.rx_waiters.pop())
    }

    /// Whether one more value fits, with `held` values held outside the buffer.
    #[inline]
    pub(crate) fn has_room(&self, held: usize) -> bool {
        self.buf.len().saturating_add(held) < self.cap
    }

    /// Moves every buffered value to the back of `into`; returns how many.
    pub(crate) fn take_buf(&mut self, into: &mut VecDeque<T>) -> usize {
        let n = self.buf.len();
        if into.is_empty() {
            std::mem::swap(&mut self.buf, into);
        } else {
            into.extend(self.buf.drain(..));
        }
        n
    }

    /// Takes the first value; on success, the sender to wake (one waiting for room).
    #[inline]
    pub(crate) fn try_recv(&mut self) -> Result<(T, Option<W>), TryRecvError> {
        match self.buf.pop_front() {
            Some(v) => Ok((v, self.tx_waiters.pop())),
            None if self.senders == 0 || self.closed => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Whether a receiver waiting now could go on: a value is there or none will come.
    #[inline]
    pub(crate) fn recv_ready(&self) -> bool {
        !self.buf.is_empty() || self.senders == 0 || self.closed
    }

    /// Whether a sender waiting now could go on: there is room or the receiver is gone.
    #[inline]
    pub(crate) fn send_ready(&self) -> bool {
        self.closed || self.has_room(0)
    }

    pub(crate) fn add_sender(&mut self) {
        self.senders = self
            .senders
            .checked_add(1)
            .expect("costack-aio: too many senders");
    }

    /// One sender is gone; if it was the last, the waiting receivers to wake.
    pub(crate) fn drop_sender(&mut self) -> Vec<W> {
        self.senders -= 1;
        if self.senders == 0 {
            self.rx_waiters.take_all()
        } else {
            Vec::new()
        }
    }

    /// Refuses new sends; returns the waiting senders to wake (they fail).
    pub(crate) fn close(&mut self) -> Vec<W> {
        self.closed = true;
        self.tx_waiters.take_all()
    }

    /// The receiver is gone: closes, and hands back the buffered values (to be dropped by the
    /// caller outside its lock, as their destructors may use the channel) and the waiting
    /// senders to wake.
    pub(crate) fn drop_receiver(&mut self) -> (VecDeque<T>, Vec<W>) {
        let ws = self.close();
        (std::mem::take(&mut self.buf), ws)
    }

    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    /// The capacity, `None` if unbounded.
    pub(crate) fn capacity(&self) -> Option<usize> {
        (self.cap != usize::MAX).then_some(self.cap)
    }

    /// Whether the receiver was closed or dropped.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether no value can come any more: the receiver was closed or every sender is gone.
    pub(crate) fn no_more_sends(&self) -> bool {
        self.closed || self.senders == 0
    }
}

/// The state of a oneshot channel.
pub(crate) struct One<T, W> {
    value: Option<T>,
    /// The sender is still there and has not sent.
    sender: bool,
    /// The receiver was closed or dropped.
    closed: bool,
    /// Receivers waiting for the value.
    pub(crate) rx_waiters: WaitQueue<W>,
}

impl<T, W> One<T, W> {
    pub(crate) fn new() -> Self {
        One {
            value: None,
            sender: true,
            closed: false,
            rx_waiters: WaitQueue::new(),
        }
    }

    /// Stores `v` (the sender is used up); the receivers to wake. `Err(v)` if the receiver is
    /// closed or gone.
    pub(crate) fn send(&mut self, v: T) -> Result<Vec<W>, T> {
        if self.closed || !self.sender {
            return Err(v);
        }
        self.sender = false;
        self.value = Some(v);
        Ok(self.rx_waiters.take_all())
    }

    /// The sender is gone (sent or not): the receivers to wake.
    pub(crate) fn drop_sender(&mut self) -> Vec<W> {
        self.sender = false;
        self.rx_waiters.take_all()
    }

    pub(crate) fn try_recv(&mut self) -> Result<T, TryRecvError> {
        match self.value.take() {
            Some(v) => Ok(v),
            None if self.sender && !self.closed => Err(TryRecvError::Empty),
            None => Err(TryRecvError::Disconnected),
        }
    }

    pub(crate) fn recv_ready(&self) -> bool {
        self.value.is_some() || !self.sender || self.closed
    }

    /// Refuses the send to come (a value sent already stays).
    pub(crate) fn close(&mut self) {
        self.closed = true;
    }

    /// The receiver is gone: the value, if any, to be dropped outside the lock.
    pub(crate) fn drop_receiver(&mut self) -> Option<T> {
        self.closed = true;
        self.value.take()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether a value is waiting to be received.
    pub(crate) fn has_value(&self) -> bool {
        self.value.is_some()
    }
}
