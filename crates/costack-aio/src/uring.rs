//! The io_uring driver: one ring per loop, for file I/O.
//!
//! Ground floor: imports only [`key`](crate::key) and the requests ([`op`](crate::op), whose
//! files encode each request's entry). The loop (`runtime`) owns the ring, submits and reaps
//! once per turn; the task's side of a request (start it, park, take the result, orphan it on
//! unwind) is in the `request` module.
//!
//! # A request's life
//!
//! 1. A task calls, say, `File::read_at`. The request ([`Op`]: its buffer, its path…) moves
//!    into a *slot* of the driver, together with a reference to the file descriptor; the
//!    submission queue entry written into the ring points into the slot's buffer. Slot index
//!    and generation are the entry's `user_data`.
//! 2. The task yields (it does not enter the kernel: the entry just sits in the ring's shared
//!    memory).
//! 3. When the loop is about to look for events (`Inner::wait_for_events`), it submits every
//!    entry its tasks queued during that turn in one `io_uring_enter`, then reads the completion
//!    queue. Reads of page-cached data complete inside that system call, so their completions
//!    are there at once.
//! 4. A completion marks the slot done and wakes its task, which takes the result and the
//!    request (its buffer) back out of the slot.
//!
//! # Cancellation
//!
//! If the task unwinds while its request is in flight (cancelled, timed out, its loop
//! dropped), a guard marks the slot *orphaned* and queues an `IORING_OP_ASYNC_CANCEL` for it.
//! The slot keeps the buffer and the descriptor until the request's own completion arrives —
//! `-ECANCELED` if the cancel caught it, its normal result if not — and only then frees them.
//! So the kernel never writes into freed memory, and never reaches a descriptor number that was
//! closed and reused. When the loop itself is dropped, it withdraws everything in flight and
//! waits for the completions; a request that is still not complete after a few seconds has its
//! buffer *leaked*, never freed.
//!
//! # Waiting: epoll stays the one place
//!
//! Sockets and timers keep going through epoll (mio), and the ring's completions join them
//! there: an eventfd is registered with the ring (`IORING_REGISTER_EVENTFD`) and sits in the
//! epoll set. The alternative — moving readiness and timers into the ring (poll requests,
//! timeout requests, waiting in `io_uring_enter`) — would give two readiness paths to keep
//! equal (the worker-pool fallback needs epoll anyway), for no gain where it matters: a busy
//! loop does not sleep, and the completions of page-cached reads arrive during the submit, so
//! they never need the eventfd at all. The eventfd is edge-triggered and never read: every
//! completion posted while the loop may be asleep signals it, and each signal raises a new
//! edge (its counter saturates harmlessly).
//!
//! # Overflow
//!
//! The completion queue is sized for many requests in flight; if it still overflows, the
//! kernel keeps the extra completions (`IORING_FEAT_NODROP`, required) and the loop flushes
//! them with its next submit.

use crate::key::TaskKey;
use crate::op::{Op, RING_OPCODES, TRUNCATE_OPCODE};
use io_uring::{opcode, register::Probe, IoUring};
use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Submission queue entries. A loop turn runs at most 128 tasks, so one turn's requests fit.
const SQ_ENTRIES: u32 = 256;
/// Completion queue entries: room for many requests in flight (reads from pipes, slow disks).
const CQ_ENTRIES: u32 = 4096;
/// The `user_data` of cancel requests, whose completions are ignored.
const CANCEL_UD: u64 = u64::MAX;
/// How long a dropped loop waits for its requests in flight before it leaks their buffers.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// Which state a slot is in.
enum State {
    Free,
    /// In the kernel; the task to wake, if it waits.
    Pending(Option<TaskKey>),
    /// Completed with this result; the task has not taken it yet.
    Done(i32),
    /// In the kernel, and its task is gone: free the slot when it completes.
    Orphaned,
}

struct Slot {
    gen: u32,
    state: State,
    /// What the kernel may touch until the completion: the request's buffer or path, and the
    /// descriptor.
    op: Option<Op>,
    fd: Option<Arc<OwnedFd>>,
}

#[derive(Default)]
struct Slots {
    v: Vec<Slot>,
    free: Vec<u32>,
    /// Slots that are `Pending` or `Orphaned`.
    in_flight: usize,
}

/// A request in flight: slot index and generation, as packed into `user_data`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct OpId {
    idx: u32,
    gen: u32,
}

impl OpId {
    fn user_data(self) -> u64 {
        (u64::from(self.gen) << 32) | u64::from(self.idx)
    }

    fn from_user_data(ud: u64) -> OpId {
        OpId {
            idx: ud as u32,
            gen: (ud >> 32) as u32,
        }
    }
}

impl Slots {
    fn get(&mut self, id: OpId) -> Option<&mut Slot> {
        self.v
            .get_mut(id.idx as usize)
            .filter(|s| s.gen == id.gen && !matches!(s.state, State::Free))
    }

    fn alloc(&mut self, op: Op, fd: Option<Arc<OwnedFd>>, key: TaskKey) -> OpId {
        self.in_flight += 1;
        let state = State::Pending(Some(key));
        match self.free.pop() {
            Some(idx) => {
                let s = &mut self.v[idx as usize];
                s.state = state;
                s.op = Some(op);
                s.fd = fd;
                OpId { idx, gen: s.gen }
            }
            None => {
                // The `user_data` of cancels, u64::MAX, is never a slot's: that would take
                // 2^32 slots.
                let idx = u32::try_from(self.v.len()).expect("too many requests in flight");
                self.v.push(Slot {
                    gen: 0,
                    state,
                    op: Some(op),
                    fd,
                });
                OpId { idx, gen: 0 }
            }
        }
    }

    /// Frees a slot; gives back what it held (for the caller to drop outside the borrow, or to
    /// return to the task).
    fn release(&mut self, idx: u32) -> (Option<Op>, Option<Arc<OwnedFd>>) {
        let s = &mut self.v[idx as usize];
        s.state = State::Free;
        s.gen = s.gen.wrapping_add(1);
        self.free.push(idx);
        (s.op.take(), s.fd.take())
    }
}

/// The loop's ring and the requests in flight on it.
pub(crate) struct Uring {
    ring: RefCell<IoUring>,
    slots: RefCell<Slots>,
    /// Signalled by the kernel for each completion; watched by the loop's epoll.
    eventfd: OwnedFd,
    /// The kernel has `IORING_OP_FTRUNCATE` (Linux 6.9); else `set_len` uses the worker pool.
    can_truncate: bool,
}

fn unsupported(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("io_uring without {what}"),
    )
}

impl Uring {
    /// Sets up a ring with what file I/O needs, or says why it cannot.
    pub(crate) fn new() -> io::Result<Uring> {
        let ring = IoUring::builder()
            .setup_cqsize(CQ_ENTRIES)
            .setup_clamp()
            .build(SQ_ENTRIES)?;
        if !ring.params().is_feature_nodrop() {
            return Err(unsupported("IORING_FEAT_NODROP (Linux 5.5)"));
        }
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        let cancel = (opcode::AsyncCancel::CODE, "IORING_OP_ASYNC_CANCEL");
        for (code, name) in RING_OPCODES.into_iter().chain([cancel]) {
            if !probe.is_supported(code) {
                return Err(unsupported(name));
            }
        }
        let can_truncate = probe.is_supported(TRUNCATE_OPCODE);
        // SAFETY: eventfd(2) takes only integers.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if efd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: eventfd just returned this descriptor; nothing else owns it.
        let eventfd = unsafe { OwnedFd::from_raw_fd(efd) };
        ring.submitter().register_eventfd(eventfd.as_raw_fd())?;
        Ok(Uring {
            ring: RefCell::new(ring),
            slots: RefCell::new(Slots::default()),
            eventfd,
            can_truncate,
        })
    }

    /// The eventfd the kernel signals for completions, for the loop's epoll set.
    pub(crate) fn eventfd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    /// How many requests are in the kernel (including those whose task is gone).
    pub(crate) fn in_flight(&self) -> usize {
        self.slots.borrow().in_flight
    }

    /// Hands the queued entries to the kernel (one `io_uring_enter`), if there are any or the
    /// kernel holds overflowed completions. Returns whether something is left for another try
    /// soon (the kernel was busy, or took only part of the queue).
    pub(crate) fn submit(&self) -> bool {
        let mut ring = self.ring.borrow_mut();
        let (pending, overflow) = {
            let sq = ring.submission();
            (!sq.is_empty(), sq.cq_overflow())
        };
        if !pending && !overflow {
            return false;
        }
        match ring.submit() {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EAGAIN | libc::EBUSY | libc::EINTR)
                ) => {}
            Err(e) => panic!("costack-aio: io_uring_enter failed: {e}"),
        }
        let sq = ring.submission();
        !sq.is_empty() || sq.cq_overflow()
    }

    /// Takes every completion from the queue: marks slots done and wakes their tasks, frees
    /// the slots of orphaned requests. Returns how many completions there were.
    pub(crate) fn reap(&self, wake: &mut dyn FnMut(TaskKey)) -> usize {
        let mut ring = self.ring.borrow_mut();
        let mut slots = self.slots.borrow_mut();
        let mut n = 0;
        let mut garbage = Vec::new();
        for cqe in ring.completion() {
            n += 1;
            let ud = cqe.user_data();
            if ud == CANCEL_UD {
                continue;
            }
            let id = OpId::from_user_data(ud);
            let res = cqe.result();
            let Some(slot) = slots.get(id) else {
                continue;
            };
            if let Some(op) = &mut slot.op {
                op.completed(res);
            }
            match slot.state {
                State::Pending(waiter) => {
                    slot.state = State::Done(res);
                    slots.in_flight -= 1;
                    if let Some(k) = waiter {
                        wake(k);
                    }
                }
                State::Orphaned => {
                    slots.in_flight -= 1;
                    garbage.push(slots.release(id.idx));
                }
                State::Done(_) | State::Free => {}
            }
        }
        drop(slots);
        drop(ring);
        // Buffers and descriptors of orphaned requests: the kernel is done with them now.
        drop(garbage);
        n
    }

    /// Makes room in the submission queue if it is full: submits, and reaps what completed
    /// (waking tasks through `wake`). Returns whether there is room now; if not, the kernel
    /// cannot take more yet, and the caller lets the loop run a turn before it tries again.
    pub(crate) fn make_room(&self, wake: &mut dyn FnMut(TaskKey)) -> bool {
        if !self.ring.borrow_mut().submission().is_full() {
            return true;
        }
        // More requests in one turn than the ring holds: an extra submit.
        self.submit();
        self.reap(wake);
        !self.ring.borrow_mut().submission().is_full()
    }

    /// Whether the kernel has `IORING_OP_FTRUNCATE` (else `set_len` goes to a worker).
    pub(crate) fn can_truncate(&self) -> bool {
        self.can_truncate
    }

    /// Queues `op` on `fd` for the task waiting with `key`.
    pub(crate) fn start(&self, fd: Option<Arc<OwnedFd>>, op: Op, key: TaskKey) -> OpId {
        let mut slots = self.slots.borrow_mut();
        let id = slots.alloc(op, fd, key);
        let slot = &mut slots.v[id.idx as usize];
        let raw = slot.fd.as_ref().map_or(libc::AT_FDCWD, |f| f.as_raw_fd());
        let op = slot.op.as_mut().expect("just stored");
        // The entry points into the slot's `Op` (a `Vec`'s or a `CString`'s heap memory),
        // which the slot keeps, unmoved, until the completion is reaped.
        let sqe = op.sqe(raw).user_data(id.user_data());
        drop(slots);
        // SAFETY: every buffer, path and descriptor the entry refers to is owned by the slot
        // `id` and stays valid until its completion is reaped (see `reap`; `orphan` does not
        // free a slot in flight, and a dropped loop waits for its requests or leaks them).
        let pushed = unsafe { self.ring.borrow_mut().submission().push(&sqe) };
        pushed.expect("make_room() made room and nothing ran since");
        id
    }

    /// Sets the task to wake when `id` completes.
    pub(crate) fn set_waiter(&self, id: OpId, key: TaskKey) {
        if let Some(s) = self.slots.borrow_mut().get(id) {
            if let State::Pending(w) = &mut s.state {
                *w = Some(key);
            }
        }
    }

    /// The result and the request, if `id` has completed (the slot is freed).
    pub(crate) fn take_done(&self, id: OpId) -> Option<(i32, Op)> {
        let mut slots = self.slots.borrow_mut();
        let res = match slots.get(id)?.state {
            State::Done(res) => res,
            _ => return None,
        };
        let (op, fd) = slots.release(id.idx);
        drop(slots);
        drop(fd);
        Some((res, op.expect("a done slot holds its request")))
    }

    /// The task of `id` is gone: a request still in flight keeps its slot (and buffer) until
    /// its completion, and is asked to stop; a completed one is freed now.
    pub(crate) fn orphan(&self, id: OpId) {
        let mut slots = self.slots.borrow_mut();
        let Some(s) = slots.get(id) else { return };
        match s.state {
            State::Pending(_) => {
                s.state = State::Orphaned;
                drop(slots);
                self.push_cancel(id);
            }
            State::Done(_) => {
                let held = slots.release(id.idx);
                drop(slots);
                drop(held);
            }
            State::Orphaned | State::Free => {}
        }
    }

    /// Queues a cancel of `id`. Best effort: the request completes by itself anyway.
    fn push_cancel(&self, id: OpId) {
        let sqe = opcode::AsyncCancel::new(id.user_data())
            .build()
            .user_data(CANCEL_UD);
        for _ in 0..2 {
            // SAFETY: a cancel refers to no memory: its `addr` is the target's user_data.
            if unsafe { self.ring.borrow_mut().submission().push(&sqe) }.is_ok() {
                return;
            }
            let _ = self.ring.borrow().submit();
        }
    }

    /// For a loop being dropped: withdraws every request in flight and waits for their
    /// completions, so that their buffers can be freed. Requests still in the kernel after
    /// `SHUTDOWN_WAIT` keep their buffers forever (leaked, never freed).
    pub(crate) fn shutdown(&self) {
        if self.in_flight() == 0 {
            return;
        }
        let ids: Vec<OpId> = {
            let slots = self.slots.borrow();
            (0..slots.v.len() as u32)
                .filter_map(|idx| {
                    let s = &slots.v[idx as usize];
                    matches!(s.state, State::Pending(_) | State::Orphaned)
                        .then_some(OpId { idx, gen: s.gen })
                })
                .collect()
        };
        for id in ids {
            if let Some(s) = self.slots.borrow_mut().get(id) {
                s.state = State::Orphaned;
            }
            self.push_cancel(id);
        }
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        while self.in_flight() > 0 {
            self.submit();
            self.reap(&mut |_| {});
            let now = Instant::now();
            if self.in_flight() == 0 || now >= deadline {
                break;
            }
            let ms = (deadline - now).as_millis().min(100) as i32;
            let mut p = libc::pollfd {
                fd: self.eventfd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd that outlives the call.
            unsafe { libc::poll(&mut p, 1, ms) };
        }
        let mut slots = self.slots.borrow_mut();
        if slots.in_flight > 0 {
            for s in &mut slots.v {
                if matches!(s.state, State::Pending(_) | State::Orphaned) {
                    // The kernel may still use these: never free them.
                    std::mem::forget(s.op.take());
                    std::mem::forget(s.fd.take());
                    s.state = State::Free;
                }
            }
            slots.in_flight = 0;
        }
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        self.shutdown();
    }
}
