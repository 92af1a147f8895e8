//! Bottom halves: reusable callbacks that are scheduled at most once and run in the loop's next
//! turn (QEMU's `QEMUBH`).
//!
//! Second floor, beside `wait`: imports the loop proper (`runtime`: the thread's loop and its
//! queue of bottom halves) and the mailbox (`mailbox`, for [`RemoteBottomHalf`]). The public loop (`event_loop`) re-exports [`BottomHalf`] and
//! makes them with [`EventLoop::bottom_half`](crate::EventLoop::bottom_half).
//!
//! The rules are on [`BottomHalf`].

use crate::mailbox::{Msg, Remote};
use crate::runtime::{expect_loop, BhRun, Inner};
use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// The callback of a bottom half.
type Callback = Box<dyn FnMut()>;

/// A reusable callback that runs in the loop's next turn when scheduled, QEMU's `QEMUBH`.
/// Bound to its thread (`!Send`).
///
/// ```
/// use costack_aio::{BottomHalf, EventLoop};
/// use std::cell::Cell;
/// use std::rc::Rc;
///
/// let lp = EventLoop::new();
/// let runs = Rc::new(Cell::new(0));
/// let r = runs.clone();
/// let bh = BottomHalf::new(move || r.set(r.get() + 1));
/// bh.schedule();
/// bh.schedule(); // already pending: still one run
/// assert!(lp.poll(false)); // the turn ran the bottom half
/// assert_eq!(runs.get(), 1);
/// assert!(!lp.poll(false)); // nothing left to do
/// bh.schedule();
/// bh.cancel();
/// assert!(!lp.poll(false));
/// assert_eq!(runs.get(), 1);
/// ```
///
/// # Rules
///
/// A [`BottomHalf`] owns a callback (`FnMut`, run on the loop's thread, outside any coroutine:
/// it cannot wait, but it can spawn, wake, schedule). [`schedule`](BottomHalf::schedule) asks
/// for one run of it:
///
/// * **At most once pending.** Scheduling it again before it runs changes nothing: it runs
///   once.
/// * **In the next turn.** The loop works in turns (one [`EventLoop::poll`], or one round of a
///   running [`block_on`](crate::EventLoop::block_on): run what is ready, then look at I/O and
///   timers). A bottom half runs in the turn that starts after it was scheduled, after the
///   tasks that were ready before it. Scheduled from inside its own callback, it runs again in
///   the next turn, never twice in one turn, so a bottom half that re-schedules itself does not
///   starve I/O.
/// * [`cancel`](BottomHalf::cancel) withdraws a pending run; dropping the `BottomHalf`
///   cancels it too and drops the callback (at once, or after it returns when dropped from
///   inside it — QEMU's "delete from callback").
/// * If the loop is gone (dropped), scheduling does nothing.
/// * Other threads schedule it through a [`RemoteBottomHalf`] ([`remote`](BottomHalf::remote)).
///
/// A callback that re-schedules itself needs its own `BottomHalf`: keep that in an
/// `Rc<RefCell<Option<BottomHalf>>>` and give the callback a `Weak` to it (a strong `Rc` would
/// be a cycle that is only broken by taking the `BottomHalf` out of the cell, which the
/// callback may do itself).
///
/// [`call_soon`](crate::call_soon) stays the way to queue a one-off closure in FIFO order with
/// the tasks of the current turn.
///
/// [`EventLoop::poll`]: crate::EventLoop::poll
pub struct BottomHalf {
    state: Rc<BhState>,
}

struct BhState {
    /// Unique in the process: how a [`RemoteBottomHalf`]'s message finds it.
    id: u64,
    inner: Weak<Inner>,
    /// Shared with the [`RemoteBottomHalf`]s, once one was made: a cross-thread schedule is on
    /// its way.
    remote_pending: OnceCell<Arc<AtomicBool>>,
    /// A run is pending.
    scheduled: Cell<bool>,
    /// An entry for this bottom half is in the loop's queues (at most one).
    queued: Cell<bool>,
    /// The `BottomHalf` was dropped: never run again.
    deleted: Cell<bool>,
    /// The callback; taken out while it runs.
    cb: RefCell<Option<Callback>>,
}

impl BottomHalf {
    /// A bottom half on this thread's event loop, not scheduled.
    ///
    /// # Panics
    /// If the thread has no event loop.
    pub fn new(f: impl FnMut() + 'static) -> BottomHalf {
        BottomHalf::on(&expect_loop("BottomHalf::new"), Box::new(f))
    }

    /// A bottom half on the loop `inner`.
    pub(crate) fn on(inner: &Rc<Inner>, f: Callback) -> BottomHalf {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        BottomHalf {
            state: Rc::new(BhState {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                inner: Rc::downgrade(inner),
                remote_pending: OnceCell::new(),
                scheduled: Cell::new(false),
                queued: Cell::new(false),
                deleted: Cell::new(false),
                cb: RefCell::new(Some(f)),
            }),
        }
    }

    /// Asks for one run of the callback in the loop's next turn; does nothing if a run is
    /// pending already (see the [rules](BottomHalf#rules)).
    pub fn schedule(&self) {
        schedule(&self.state);
    }

    /// A handle that schedules this bottom half from any thread (`Send + Sync + Clone`).
    ///
    /// ```
    /// use costack_aio::EventLoop;
    /// use std::cell::Cell;
    /// use std::rc::Rc;
    ///
    /// let lp = EventLoop::new();
    /// let runs = Rc::new(Cell::new(0));
    /// let r = runs.clone();
    /// let bh = lp.bottom_half(move || r.set(r.get() + 1));
    /// let remote = bh.remote();
    /// std::thread::spawn(move || assert!(remote.schedule())).join().unwrap();
    /// assert!(lp.poll(true)); // the message arrives and schedules it…
    /// while runs.get() == 0 {
    ///     lp.poll(true); // …for the next turn
    /// }
    /// assert_eq!(runs.get(), 1);
    /// ```
    pub fn remote(&self) -> RemoteBottomHalf {
        let st = &self.state;
        let pending = st.remote_pending.get_or_init(|| {
            REMOTE_BHS.with(|m| m.borrow_mut().insert(st.id, Rc::downgrade(st)));
            Arc::new(AtomicBool::new(false))
        });
        let remote = st.inner.upgrade().map(|inner| inner.remote().clone());
        RemoteBottomHalf {
            remote,
            id: st.id,
            pending: pending.clone(),
        }
    }

    /// Withdraws the pending run, if any; the bottom half can be scheduled again.
    pub fn cancel(&self) {
        self.state.scheduled.set(false);
    }

    /// Whether a run is pending.
    pub fn is_scheduled(&self) -> bool {
        self.state.scheduled.get()
    }
}

impl Drop for BottomHalf {
    fn drop(&mut self) {
        let st = &self.state;
        st.deleted.set(true);
        st.scheduled.set(false);
        if st.remote_pending.get().is_some() {
            // `try_with`: the thread's locals may be gone already (a bottom half dropped by
            // another thread-local's destructor).
            let _ = REMOTE_BHS.try_with(|m| m.borrow_mut().remove(&st.id));
        }
        // Outside the borrow: the callback's captures may do anything when dropped. While the
        // callback runs the slot is empty, and `run` drops it when it returns.
        let cb = st.cb.borrow_mut().take();
        drop(cb);
    }
}

impl fmt::Debug for BottomHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BottomHalf")
            .field("scheduled", &self.is_scheduled())
            .finish()
    }
}

/// Asks for one run of the bottom half `st` (see [`BottomHalf::schedule`]).
fn schedule(st: &Rc<BhState>) {
    if st.scheduled.replace(true) || st.queued.get() {
        return;
    }
    if let Some(inner) = st.inner.upgrade() {
        if inner.schedule_bh(st.clone()) {
            st.queued.set(true);
        }
    }
}

thread_local! {
    /// The bottom halves of this thread that have a [`RemoteBottomHalf`], by id.
    static REMOTE_BHS: RefCell<HashMap<u64, Weak<BhState>>> = RefCell::new(HashMap::new());
}

/// Schedules a [`BottomHalf`] from any thread: made by [`BottomHalf::remote`].
///
/// [`schedule`](RemoteBottomHalf::schedule) sends a message to the bottom half's loop, which
/// schedules it there (for the turn after the message arrives); the rules of
/// [`BottomHalf`] apply. While one message is on its way, further `schedule`s (from any clone)
/// send nothing, so a flood of them costs one message. Once the `BottomHalf` is dropped,
/// scheduling does nothing.
#[derive(Clone)]
pub struct RemoteBottomHalf {
    /// The loop's mailbox (`None`: the loop was gone when the handle was made).
    remote: Option<Arc<Remote>>,
    id: u64,
    pending: Arc<AtomicBool>,
}

impl RemoteBottomHalf {
    /// Asks for one run of the bottom half, from any thread. Returns `false` if its loop has
    /// been dropped (nothing will run).
    pub fn schedule(&self) -> bool {
        let Some(remote) = &self.remote else {
            return false;
        };
        if self.pending.swap(true, Ordering::AcqRel) {
            return !remote.is_closed();
        }
        let (id, pending) = (self.id, self.pending.clone());
        let msg = Msg::Call(Box::new(move || {
            // Cleared first: a schedule that comes after this sends a new message.
            pending.store(false, Ordering::Release);
            let st = REMOTE_BHS.with(|m| m.borrow().get(&id).and_then(Weak::upgrade));
            if let Some(st) = st {
                schedule(&st);
            }
        }));
        if remote.send(msg).is_err() {
            self.pending.store(false, Ordering::Release);
            return false;
        }
        true
    }
}

impl fmt::Debug for RemoteBottomHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteBottomHalf")
            .field("id", &self.id)
            .field("pending", &self.pending.load(Ordering::Relaxed))
            .finish()
    }
}

impl BhRun for BhState {
    fn run(self: Rc<Self>) -> bool {
        self.queued.set(false);
        if !self.scheduled.replace(false) || self.deleted.get() {
            return false;
        }
        let Some(cb) = self.cb.borrow_mut().take() else {
            return false;
        };
        /// Puts the callback back when it returns or panics, unless its `BottomHalf` was
        /// dropped meanwhile.
        struct Running<'a> {
            st: &'a BhState,
            cb: Option<Callback>,
        }
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                if !self.st.deleted.get() {
                    *self.st.cb.borrow_mut() = self.cb.take();
                }
            }
        }
        let mut running = Running {
            st: &self,
            cb: Some(cb),
        };
        if let Some(f) = running.cb.as_mut() {
            f();
        }
        drop(running);
        true
    }
}
