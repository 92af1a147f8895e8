//! Waking a suspended task from anywhere: [`Waker`] and [`suspend`], and the one-shot channel
//! that brings results back from other threads.
//!
//! Third floor: imports the wait protocol (`wait`), the mailbox (`mailbox`), and the loop
//! proper (`runtime`, for `deliver`: a wake on the loop's own thread goes straight to its ready
//! queue; and to run the thread's loop while a select waits outside any task). The public items are re-exported by [`remote`](crate::remote), with the rest of
//! the cross-thread API.

use crate::key::TaskKey;
use crate::mailbox::{lock, Msg, Remote};
use crate::runtime::{current_loop, deliver, Inner};
use crate::wait::{begin_wait, Wait};
use std::fmt;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::Thread;
use std::time::Instant;

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

/// A thread parked outside any coroutine, and whether its waker was used.
pub(crate) struct ThreadParker {
    thread: Thread,
    woken: AtomicBool,
    /// The loop the thread runs while it waits ([`prepare_park_driving`]): a wake also ends
    /// that loop's wait for events.
    poke: Option<Arc<Remote>>,
}

/// A key that names no task (no coroutine has id 0: costack numbers them from its thread
/// number, which starts at 1, times 2^40): waking it does nothing but end the loop's wait for
/// events.
const NO_TASK: TaskKey = TaskKey { co: 0, epoch: 0 };

impl Waker {
    /// Ends the wait this waker was made for, if it is still going on (see the type docs).
    pub fn wake(&self) {
        match &self.kind {
            WakerKind::Task { remote, key } => deliver(remote, Msg::Wake(*key)),
            WakerKind::Thread(p) => {
                p.woken.store(true, Ordering::Release);
                p.thread.unpark();
                if let Some(remote) = &p.poke {
                    deliver(remote, Msg::Wake(NO_TASK));
                }
            }
        }
    }
}

impl Waker {
    /// The loop and the key of the task wait this waker ends; `None` for a parked thread.
    pub(crate) fn task_key(&self) -> Option<(u64, TaskKey)> {
        match &self.kind {
            WakerKind::Task { remote, key } => Some((remote.loop_id(), *key)),
            WakerKind::Thread(_) => None,
        }
    }
}

impl fmt::Debug for Waker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            WakerKind::Task { remote, key } => f
                .debug_struct("Waker")
                .field("loop", &remote.loop_id())
                .field("task", &key.co)
                .finish(),
            WakerKind::Thread(p) => f
                .debug_struct("Waker")
                .field("thread", &p.thread.id())
                .finish(),
        }
    }
}

/// The waiting side of a [`Waker`]: a task's wait, a parked thread, or a thread that runs its
/// loop while it waits.
pub(crate) enum Park {
    Task(Wait),
    Thread(Arc<ThreadParker>),
    Drive(Arc<ThreadParker>, Rc<Inner>),
}

/// Starts a wait of the caller (a task, or a thread outside any coroutine) and returns the
/// waker that ends it and the means to wait.
pub(crate) fn prepare_park() -> (Waker, Park) {
    match begin_wait() {
        Some(w) => (
            Waker {
                kind: WakerKind::Task {
                    remote: w.inner.remote().clone(),
                    key: w.key,
                },
            },
            Park::Task(w),
        ),
        None => {
            let p = Arc::new(ThreadParker {
                thread: std::thread::current(),
                woken: AtomicBool::new(false),
                poke: None,
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

/// As [`prepare_park`]; but outside any coroutine, on a thread that has an event loop (not
/// shutting down), the wait runs that loop (as `JoinHandle::join` does there), so that its tasks can end the wait;
/// the waker then also wakes the loop. A select waits this way.
pub(crate) fn prepare_park_driving() -> (Waker, Park) {
    let (waker, park) = prepare_park();
    let Park::Thread(_) = park else {
        return (waker, park);
    };
    // A loop that is shutting down is not run: its mailbox may be closed already, so that a
    // wake from another thread could not reach it (it would wait for ever).
    let Some(inner) = current_loop().filter(|l| !l.is_closing()) else {
        return (waker, park);
    };
    let p = Arc::new(ThreadParker {
        thread: std::thread::current(),
        woken: AtomicBool::new(false),
        poke: Some(inner.remote().clone()),
    });
    (
        Waker {
            kind: WakerKind::Thread(p.clone()),
        },
        Park::Drive(p, inner),
    )
}

/// As [`prepare_park_driving`], except that on a thread whose loop is running already (the
/// caller is a `call_soon` callback or a bottom half) the thread parks instead of panicking.
/// A blocking channel operation waits this way: outside any task it runs the thread's loop,
/// whose tasks may be the other side, and in a callback it can still be ended by a thread.
pub(crate) fn prepare_park_blocking() -> (Waker, Park) {
    match current_loop() {
        Some(l) if l.is_running() => prepare_park(),
        _ => prepare_park_driving(),
    }
}

impl Park {
    /// Waits for the waker, or until `deadline`. May return early (the caller re-checks its
    /// condition).
    ///
    /// # Panics
    /// `Drive`: if the loop is running already (the caller is a `call_soon` callback).
    pub(crate) fn park(&self, deadline: Option<Instant>) {
        match self {
            Park::Task(w) => w.park(deadline),
            Park::Drive(p, inner) => {
                // A timer entry that wakes no task bounds the loop's wait by the deadline; it is
                // removed however `run_until` ends.
                struct Timer<'a>(&'a Inner, Option<(Instant, u64)>);
                impl Drop for Timer<'_> {
                    fn drop(&mut self) {
                        if let Some(t) = self.1 {
                            self.0.remove_timer(t);
                        }
                    }
                }
                let _timer = Timer(inner, deadline.map(|d| inner.add_timer(d, NO_TASK)));
                inner.run_until(&|| {
                    p.woken.load(Ordering::Acquire) || deadline.is_some_and(|d| Instant::now() >= d)
                });
            }
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

    pub(crate) fn is_ready(&self) -> bool {
        let s = lock(&self.slot);
        s.value.is_some() || s.sender_gone
    }
}
