//! Readiness through mio: the registered fds and the tasks waiting on them.
//!
//! Ground floor: imports only [`key`](crate::key). The loop (`runtime`) owns the reactor and
//! polls it; tasks wait on it through the `io` module.
//!
//! Every fd is registered once, edge-triggered, for both directions. A task that gets
//! `WouldBlock` adds its key to the fd's reader or writer list and yields; an event for the fd
//! wakes the whole list (the woken tasks retry their syscall; one that loses the race waits
//! again). Edge triggering is what makes "try the syscall first, wait only on `WouldBlock`"
//! correct: any data that arrives after a syscall found none raises a new edge.
//!
//! Each fd also keeps a readiness bit per direction, shared with its `Source`: an edge sets it
//! (waiter or not), and the source clears it when a system call shows the fd drained
//! (`WouldBlock`, or a stream read that returned less than asked). A hang-up or an error sets
//! a second, sticky bit: a peer's FIN may arrive with the last data, and once that data is read
//! the socket is still readable (end of file) but will never raise another edge. While it is clear the source
//! skips the system call and waits for the next edge: on an echo-style connection that saves
//! the `read` that would only say `EAGAIN`. Both happen on the loop's thread, the clear with no
//! yield between the system call and it, so no edge can slip between them.

use crate::key::TaskKey;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::Duration;

/// The token of the loop's cross-thread waker (eventfd).
const WAKER_TOKEN: Token = Token(usize::MAX);
/// The token of the io_uring completion eventfd: it only ends the wait; the loop reads the
/// completion queue after every wait anyway.
const URING_TOKEN: Token = Token(usize::MAX - 1);

/// Which way a task waits on an fd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    Read,
    Write,
}

/// Readiness bits (see [`Entry::ready`]).
pub(crate) const READ_READY: u8 = 1;
pub(crate) const WRITE_READY: u8 = 2;
/// Sticky: the peer closed its side (or the socket has an error). A drained socket in this
/// state stays readable (the next read returns 0 or the error) and raises no further edge, so
/// this bit is never cleared.
pub(crate) const READ_CLOSED: u8 = 4;
/// Sticky, as `READ_CLOSED`, for writing.
pub(crate) const WRITE_CLOSED: u8 = 8;

impl Dir {
    /// The bit that says an edge arrived.
    pub(crate) fn bit(self) -> u8 {
        match self {
            Dir::Read => READ_READY,
            Dir::Write => WRITE_READY,
        }
    }

    /// The bits that say a system call would not block: an edge arrived, or the direction is
    /// closed for good.
    pub(crate) fn ready_mask(self) -> u8 {
        match self {
            Dir::Read => READ_READY | READ_CLOSED,
            Dir::Write => WRITE_READY | WRITE_CLOSED,
        }
    }
}

/// The tasks waiting on one fd in one direction. Almost always one: it is kept inline, so that
/// an event does not chase a pointer to a separate allocation.
#[derive(Default)]
struct Waiters {
    first: Option<TaskKey>,
    more: Vec<TaskKey>,
}

impl Waiters {
    /// Adds `key`, replacing an older key of the same task.
    fn add(&mut self, key: TaskKey) {
        match &mut self.first {
            None => self.first = Some(key),
            Some(k) if k.co == key.co => *k = key,
            Some(_) => {
                if let Some(k) = self.more.iter_mut().find(|k| k.co == key.co) {
                    *k = key;
                } else {
                    self.more.push(key);
                }
            }
        }
    }

    /// Removes `key` (this very wait of its task), if it is there.
    fn remove(&mut self, key: TaskKey) {
        if self.first == Some(key) {
            self.first = self.more.pop();
        } else if let Some(i) = self.more.iter().position(|&k| k == key) {
            self.more.swap_remove(i);
        }
    }

    /// Wakes and removes them all.
    fn wake_all(&mut self, wake: &mut dyn FnMut(TaskKey)) {
        if let Some(k) = self.first.take() {
            wake(k);
        }
        for k in self.more.drain(..) {
            wake(k);
        }
    }

    fn take_into(&mut self, out: &mut Vec<TaskKey>) {
        out.extend(self.first.take());
        out.append(&mut self.more);
    }
}

struct Entry {
    /// Bumped when the slot is freed, so that late events for the old fd are ignored.
    gen: u32,
    in_use: bool,
    /// Shared with the fd's `Source`: a bit is set when an edge arrives for that direction,
    /// and cleared by the source when a system call shows the fd is not ready any more.
    ready: Rc<Cell<u8>>,
    readers: Waiters,
    writers: Waiters,
}

pub(crate) struct Reactor {
    poll: RefCell<Poll>,
    events: RefCell<Events>,
    registry: Registry,
    entries: RefCell<Vec<Entry>>,
    free: RefCell<Vec<u32>>,
}

/// A registration: slot and generation, as encoded in the mio token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    idx: u32,
    gen: u32,
}

impl Slot {
    fn token(self) -> Token {
        Token(((self.gen as usize) << 32) | self.idx as usize)
    }

    fn from_token(t: Token) -> Slot {
        Slot {
            idx: t.0 as u32,
            gen: (t.0 >> 32) as u32,
        }
    }
}

impl Reactor {
    /// The reactor and the waker other threads use to interrupt its wait.
    pub(crate) fn new(events: usize) -> io::Result<(Reactor, mio::Waker)> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = mio::Waker::new(&registry, WAKER_TOKEN)?;
        Ok((
            Reactor {
                poll: RefCell::new(poll),
                events: RefCell::new(Events::with_capacity(events)),
                registry,
                entries: RefCell::new(Vec::new()),
                free: RefCell::new(Vec::new()),
            },
            waker,
        ))
    }

    /// Adds the eventfd that io_uring signals for completions to the epoll set.
    pub(crate) fn watch_uring(&self, eventfd: RawFd) -> io::Result<()> {
        self.registry
            .register(&mut SourceFd(&eventfd), URING_TOKEN, Interest::READABLE)
    }

    /// Registers `fd` (edge-triggered, both directions); events set bits in `ready`.
    pub(crate) fn register(&self, fd: RawFd, ready: Rc<Cell<u8>>) -> io::Result<Slot> {
        let slot = {
            let mut entries = self.entries.borrow_mut();
            match self.free.borrow_mut().pop() {
                Some(idx) => {
                    let e = &mut entries[idx as usize];
                    e.in_use = true;
                    e.ready = ready;
                    Slot { idx, gen: e.gen }
                }
                None => {
                    let idx = u32::try_from(entries.len()).expect("too many registered fds");
                    entries.push(Entry {
                        gen: 0,
                        in_use: true,
                        ready,
                        readers: Waiters::default(),
                        writers: Waiters::default(),
                    });
                    Slot { idx, gen: 0 }
                }
            }
        };
        let r = self.registry.register(
            &mut SourceFd(&fd),
            slot.token(),
            Interest::READABLE | Interest::WRITABLE,
        );
        if let Err(e) = r {
            self.free_slot(slot);
            return Err(e);
        }
        Ok(slot)
    }

    /// Removes `fd` from epoll and frees its slot; returns the tasks that were still waiting on
    /// it (for the caller to wake).
    pub(crate) fn deregister(&self, slot: Slot, fd: RawFd) -> Vec<TaskKey> {
        let _ = self.registry.deregister(&mut SourceFd(&fd));
        self.free_slot(slot)
    }

    fn free_slot(&self, slot: Slot) -> Vec<TaskKey> {
        let mut entries = self.entries.borrow_mut();
        let Some(e) = entries.get_mut(slot.idx as usize) else {
            return Vec::new();
        };
        if !e.in_use || e.gen != slot.gen {
            return Vec::new();
        }
        e.in_use = false;
        e.gen = e.gen.wrapping_add(1);
        let mut waiters = Vec::new();
        e.readers.take_into(&mut waiters);
        e.writers.take_into(&mut waiters);
        self.free.borrow_mut().push(slot.idx);
        waiters
    }

    /// Adds a waiter for `dir` on the fd of `slot`. A previous key of the same task is replaced,
    /// so that waits abandoned by a timeout do not pile up.
    pub(crate) fn add_waiter(&self, slot: Slot, dir: Dir, key: TaskKey) {
        let mut entries = self.entries.borrow_mut();
        let e = &mut entries[slot.idx as usize];
        debug_assert!(e.in_use && e.gen == slot.gen);
        match dir {
            Dir::Read => e.readers.add(key),
            Dir::Write => e.writers.add(key),
        }
    }

    /// Withdraws the waiter `key` for `dir` from the fd of `slot`, if the slot is still that
    /// fd's and the key still there (a select that ended without this fd firing).
    pub(crate) fn remove_waiter(&self, slot: Slot, dir: Dir, key: TaskKey) {
        let mut entries = self.entries.borrow_mut();
        let Some(e) = entries.get_mut(slot.idx as usize) else {
            return;
        };
        if !e.in_use || e.gen != slot.gen {
            return;
        }
        match dir {
            Dir::Read => e.readers.remove(key),
            Dir::Write => e.writers.remove(key),
        }
    }

    /// Waits for events (at most `timeout`; `None`: no limit) and wakes the tasks waiting on
    /// the fds that became ready. Says how many events came and whether the cross-thread waker
    /// fired.
    pub(crate) fn poll(&self, timeout: Option<Duration>, wake: &mut dyn FnMut(TaskKey)) -> Polled {
        let mut poll = self.poll.borrow_mut();
        let mut events = self.events.borrow_mut();
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == io::ErrorKind::Interrupted {
                // A signal ended the wait: an event of sorts (the wait is over).
                return Polled {
                    events: 1,
                    remote: false,
                };
            }
            panic!("costack-aio: epoll_wait failed: {e}");
        }
        let mut remote = false;
        let mut n = 0;
        let mut entries = self.entries.borrow_mut();
        for ev in events.iter() {
            n += 1;
            if ev.token() == WAKER_TOKEN {
                remote = true;
                continue;
            }
            if ev.token() == URING_TOKEN {
                continue;
            }
            let slot = Slot::from_token(ev.token());
            let Some(e) = entries.get_mut(slot.idx as usize) else {
                continue;
            };
            if !e.in_use || e.gen != slot.gen {
                continue; // an event for an fd that was deregistered since
            }
            let mut bits = 0;
            if ev.is_read_closed() || ev.is_error() {
                bits |= READ_CLOSED;
            }
            if ev.is_write_closed() || ev.is_error() {
                bits |= WRITE_CLOSED;
            }
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                e.ready.set(e.ready.get() | READ_READY | bits);
                e.readers.wake_all(wake);
            }
            if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
                e.ready.set(e.ready.get() | WRITE_READY | bits);
                e.writers.wake_all(wake);
            }
        }
        Polled { events: n, remote }
    }
}

/// What one look at the epoll set found.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Polled {
    /// How many events came (readiness, the cross-thread waker, the io_uring eventfd).
    pub(crate) events: usize,
    /// The cross-thread waker fired: messages wait in the mailbox.
    pub(crate) remote: bool,
}
