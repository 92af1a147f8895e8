//! Unix signals, received in a task (or a plain thread): [`Signals`].
//!
//! Operations floor: imports readiness ([`io`](crate::io), to wait for the listener's eventfd),
//! the [`Selectable`] protocol (`select`) and the wakers (`waker`); nothing above.
//!
//! ```
//! use costack_aio::signal::{Signals, SIGUSR1};
//! use costack_aio::EventLoop;
//!
//! let lp = EventLoop::new();
//! lp.block_on(|| {
//!     let mut signals = Signals::new(&[SIGUSR1]).unwrap();
//!     // Anyone may send it: another process, another thread, or this one.
//!     // SAFETY: raise(3) only sends a signal to this thread; SIGUSR1 has a handler now.
//!     unsafe { libc::raise(SIGUSR1) };
//!     assert_eq!(signals.recv().unwrap(), SIGUSR1); // yields until it has arrived
//!     assert_eq!(signals.try_recv(), None);
//! });
//! ```
//!
//! # What a listener receives
//!
//! Every [`Signals`] receives every delivery of its signals that happens after it was created,
//! independently of the other listeners: several listeners of one loop, of different loops, or
//! of plain threads each get their own copy. Deliveries are *counted*: a signal that arrives
//! while the listener is busy (or before anyone calls [`recv`](Signals::recv)) waits in the
//! listener, and each delivery is received exactly once. Nothing is lost between turns of the
//! loop.
//!
//! Counting happens where the process *handles* a signal, so the kernel's own rules apply
//! first: a standard signal (`SIGINT`, `SIGUSR1`, …) sent twice before the process handles the
//! first is pending only once and arrives once; real-time signals (`SIGRTMIN()`..) are queued
//! by the kernel and each one arrives. Between different signals the order of arrival is not
//! kept: [`recv`](Signals::recv) takes the pending signals in turn.
//!
//! # How it works, and why not `signalfd`
//!
//! The first listener of a signal installs a process-wide handler for it (through the
//! `signal-hook-registry` crate, which chains any handler installed before and is shared with
//! tokio and signal-hook, so that they cooperate). Each listener registers its own action with
//! that handler: in signal context it only increments the listener's counter for the signal and
//! writes to the listener's eventfd, both async-signal-safe. [`recv`](Signals::recv) takes from
//! the counters and, when they are all zero, waits for the eventfd to become readable — in a
//! task by yielding to its loop (readiness through epoll, like a socket), outside any coroutine
//! by blocking in `poll(2)`.
//!
//! `signalfd(2)` would avoid the handler, but it only sees signals that are *blocked in every
//! thread* of the process (otherwise the kernel delivers the signal to a thread that does not
//! block it, by its default action). A library cannot guarantee that: threads started before
//! the listener, or by other libraries, keep their own masks. A handler works whatever the
//! masks are. (A signal blocked in every thread is never handled, and so never received here.)
//!
//! # When the last listener is dropped
//!
//! Dropping a listener removes its action. The process-wide handler stays installed — as with
//! tokio — and, with no action left, the signal is *ignored*: a `SIGTERM` or `SIGINT` that
//! arrives after the last listener of it was dropped no longer ends the process. (A handler
//! that was installed before the first listener, by other code, keeps being called.) Keep a
//! listener alive for as long as the program should react to the signal.
//!
//! # In a select
//!
//! [`Signals::recv_branch`] is a [select](mod@crate::select) branch. A select parks with a
//! [`Waker`], which a signal handler cannot wake (waking takes locks), so the first branch that
//! registers starts a process-wide helper thread, `costack-signals`: the handler also writes to
//! the helper's eventfd, and the helper wakes the registered wakers of the listeners that have
//! deliveries pending. The helper thread stays for the life of the process; without selects on
//! signals it is never started.
//!
//! System calls interrupted by the handler are restarted where the kernel can (`SA_RESTART`);
//! this crate retries the rest.

use crate::select::Selectable;
use crate::waker::Waker;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

pub use libc::{
    SIGALRM, SIGCHLD, SIGHUP, SIGINT, SIGPIPE, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH,
};

/// What the actions in signal context share with their listener: a counter per signal and the
/// eventfd that wakes the listener.
struct Shared {
    /// `(signal, deliveries not yet received)`, one entry per distinct signal.
    counts: Box<[(libc::c_int, AtomicU64)]>,
    /// Non-blocking, close-on-exec; written by the actions, drained by the listener. Closed
    /// only when the last action holding it has been removed (the registry drops an action
    /// once no handler can still be running it).
    efd: OwnedFd,
}

impl Shared {
    /// Signal context: counts one delivery of the signal at `idx` and wakes the listener (and
    /// the select helper, if there is one).
    fn deliver(&self, idx: usize) {
        self.counts[idx].1.fetch_add(1, Ordering::SeqCst);
        signal_eventfd(self.efd.as_raw_fd());
        let helper = HELPER_FD.load(Ordering::SeqCst);
        if helper >= 0 {
            signal_eventfd(helper);
        }
    }

    /// Resets the eventfd (non-blocking: does nothing if it is not readable).
    fn drain(&self) {
        drain_eventfd(self.efd.as_raw_fd());
    }

    fn pending(&self) -> u64 {
        self.counts
            .iter()
            .map(|(_, c)| c.load(Ordering::SeqCst))
            .sum()
    }
}

/// Adds one to the eventfd `fd`. Async-signal-safe.
fn signal_eventfd(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: write(2) is async-signal-safe; the callers pass an eventfd that is open for as
    // long as they can call this (a listener's, kept by its actions; the helper's, never
    // closed) and `one` is 8 readable bytes. A full counter (EAGAIN) means the fd is readable
    // already; nothing else can fail usefully here.
    unsafe { libc::write(fd, (&one as *const u64).cast(), std::mem::size_of::<u64>()) };
}

/// Resets the non-blocking eventfd `fd` (does nothing if it is not readable).
fn drain_eventfd(fd: RawFd) {
    let mut v: u64 = 0;
    // SAFETY: the callers pass an open eventfd (see `signal_eventfd`) and `v` is 8 writable
    // bytes. EAGAIN (nothing to drain) is the only error an eventfd read can give here.
    unsafe { libc::read(fd, (&mut v as *mut u64).cast(), std::mem::size_of::<u64>()) };
}

/// A new non-blocking, close-on-exec eventfd.
fn new_eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd(2) with valid flags; no memory is passed.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by eventfd(2), is open and owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A listener for Unix signals: receives every delivery, after its creation, of the signals
/// it was made for. See the [module docs](self) for the guarantees.
///
/// `recv` yields the calling task until a signal arrives (outside any coroutine it blocks the
/// thread). A `Signals` is `Send` and `Sync`; it can be moved to another thread or loop between
/// waits.
///
/// As an iterator it yields `recv`'s results forever:
///
/// ```
/// use costack_aio::signal::{Signals, SIGUSR2};
///
/// let signals = Signals::new(&[SIGUSR2]).unwrap();
/// for _ in 0..3 {
///     // SAFETY: raise(3) only sends a signal to this thread; SIGUSR2 has a handler now.
///     unsafe { libc::raise(SIGUSR2) };
/// }
/// // On a plain thread: three raises, each handled before the next, arrive three times.
/// let got: Vec<i32> = signals.take(3).map(Result::unwrap).collect();
/// assert_eq!(got, [SIGUSR2; 3]);
/// ```
pub struct Signals {
    shared: Arc<Shared>,
    /// The actions registered for this listener, removed on drop.
    ids: Vec<signal_hook_registry::SigId>,
    /// Where the next [`try_recv`](Signals::try_recv) starts looking, so that a flood of one
    /// signal does not hide the others.
    cursor: usize,
}

impl Signals {
    /// Starts listening for `signals` (duplicates are ignored).
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidInput`] if `signals` is empty, or holds a number that is not a
    /// signal, or one that cannot or must not be handled (`SIGKILL`, `SIGSTOP`, `SIGILL`,
    /// `SIGFPE`, `SIGSEGV`, or a real-time signal the C library keeps for itself); the error of
    /// `eventfd(2)` if no descriptor is left.
    pub fn new(signals: &[libc::c_int]) -> io::Result<Signals> {
        let mut list: Vec<libc::c_int> = signals.to_vec();
        list.sort_unstable();
        list.dedup();
        if list.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "costack-aio: Signals::new needs at least one signal",
            ));
        }
        for &s in &list {
            check_signal(s)?;
        }
        let efd = new_eventfd()?;
        let shared = Arc::new(Shared {
            counts: list.iter().map(|&s| (s, AtomicU64::new(0))).collect(),
            efd,
        });
        let mut this = Signals {
            shared,
            ids: Vec::with_capacity(list.len()),
            cursor: 0,
        };
        for (idx, &sig) in list.iter().enumerate() {
            let sh = this.shared.clone();
            // SAFETY: the action only does an atomic increment and a write(2) (see
            // `Shared::deliver`): async-signal-safe, no allocation, no lock, no panic. It holds
            // its own `Arc`, so the eventfd outlives every run of it; the registry drops the
            // action only after no handler can be running it any more.
            let r = unsafe { signal_hook_registry::register(sig, move || sh.deliver(idx)) };
            match r {
                Ok(id) => this.ids.push(id),
                // `this` drops here and removes the actions registered so far.
                Err(e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("costack-aio: cannot handle signal {sig}: {e}"),
                    ))
                }
            }
        }
        Ok(this)
    }

    /// The signals this listener receives, in ascending order.
    pub fn signals(&self) -> impl Iterator<Item = libc::c_int> + '_ {
        self.shared.counts.iter().map(|(s, _)| *s)
    }

    /// How many deliveries wait to be received (of all its signals together).
    pub fn pending(&self) -> u64 {
        self.shared.pending()
    }

    /// Takes one delivery that has arrived already, without waiting; `None` if there is none.
    pub fn try_recv(&mut self) -> Option<libc::c_int> {
        // Drain first, then look: a delivery after the look writes the eventfd again, so the
        // wait that follows a `None` cannot miss it.
        self.shared.drain();
        let n = self.shared.counts.len();
        for k in 0..n {
            let idx = (self.cursor + k) % n;
            let (sig, count) = &self.shared.counts[idx];
            // Only this listener takes from its counters (`&mut self`), so a non-zero count
            // stays non-zero until the decrement.
            if count.load(Ordering::SeqCst) > 0 {
                count.fetch_sub(1, Ordering::SeqCst);
                self.cursor = (idx + 1) % n;
                return Some(*sig);
            }
        }
        None
    }

    /// Waits for the next delivery and returns its signal number. In a task the task yields to
    /// its loop meanwhile (the loop waits for the listener's eventfd with its other fds);
    /// outside any coroutine the thread blocks in `poll(2)`. Returns at once if a delivery is
    /// pending. Bound it with [`timeout`](crate::timeout) in a task.
    ///
    /// # Errors
    /// If the loop cannot watch the eventfd (`epoll_ctl` out of memory or over the user's
    /// limit of watched descriptors).
    ///
    /// # Panics
    /// Inside a coroutine that no task of this thread's loop entered.
    pub fn recv(&mut self) -> io::Result<libc::c_int> {
        loop {
            if let Some(sig) = self.try_recv() {
                return Ok(sig);
            }
            crate::io::wait_readable(self.shared.efd.as_fd())?;
        }
    }
}

impl Signals {
    /// A [select](mod@crate::select) branch that receives the next delivery, as
    /// [`try_recv`](Signals::try_recv) would: a branch that loses takes nothing. See the
    /// [module docs](self#in-a-select) for the helper thread it needs.
    pub fn recv_branch(&mut self) -> RecvBranch<'_> {
        RecvBranch {
            signals: self,
            registered: false,
        }
    }
}

/// A [select](mod@crate::select) branch that receives one signal of a [`Signals`]; made by
/// [`Signals::recv_branch`]. Its output is the signal number.
///
/// The protocol by hand (a select does this for you):
///
/// ```
/// use costack_aio::select::Selectable;
/// use costack_aio::signal::{Signals, SIGUSR1};
///
/// let mut signals = Signals::new(&[SIGUSR1]).unwrap();
/// let mut branch = signals.recv_branch();
/// assert_eq!(branch.try_select(), None);
/// let mut got = None;
/// while got.is_none() {
///     costack_aio::suspend(|waker| {
///         branch.register(&waker);
///         // SAFETY: raise(3) only sends a signal to this thread, which has a handler for it.
///         unsafe { libc::raise(SIGUSR1) };
///     }); // parked until the helper thread wakes the waker
///     got = branch.try_select();
/// }
/// branch.deregister();
/// assert_eq!(got, Some(SIGUSR1));
/// ```
pub struct RecvBranch<'a> {
    signals: &'a mut Signals,
    registered: bool,
}

impl Selectable for RecvBranch<'_> {
    type Output = libc::c_int;

    fn try_select(&mut self) -> Option<libc::c_int> {
        self.signals.try_recv()
    }

    fn register(&mut self, waker: &Waker) {
        let shared = &self.signals.shared;
        match helper() {
            Some(h) => {
                let mut waiting = h.lock();
                waiting.retain(|(s, _)| !Arc::ptr_eq(s, shared));
                waiting.push((shared.clone(), waker.clone()));
                drop(waiting);
                self.registered = true;
                // A delivery counted before the push may have been looked at by the helper
                // already: wake at once if one is pending (the select tries again).
                if shared.pending() > 0 {
                    waker.wake();
                }
            }
            // No helper (no descriptor or thread left): wake at once, so that the select
            // looks again instead of waiting for nothing (it polls, but does not hang).
            None => waker.wake(),
        }
    }

    fn deregister(&mut self) {
        if std::mem::take(&mut self.registered) {
            if let Some(h) = helper() {
                let shared = &self.signals.shared;
                h.lock().retain(|(s, _)| !Arc::ptr_eq(s, shared));
            }
        }
    }
}

impl Drop for RecvBranch<'_> {
    fn drop(&mut self) {
        self.deregister();
    }
}

impl fmt::Debug for RecvBranch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvBranch")
            .field("signals", &self.signals)
            .field("registered", &self.registered)
            .finish()
    }
}

/// The helper's eventfd, written by every action once the helper exists (-1 before). Never
/// closed.
static HELPER_FD: AtomicI32 = AtomicI32::new(-1);

/// The select helper: the listeners whose recv branches are registered, with their wakers.
struct Helper {
    waiting: Mutex<Vec<(Arc<Shared>, Waker)>>,
}

impl Helper {
    fn lock(&self) -> MutexGuard<'_, Vec<(Arc<Shared>, Waker)>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The helper thread: waits for deliveries, wakes the wakers of the listeners that have
    /// some pending (each waker once: it is removed with its wake).
    fn run(&self, efd: OwnedFd) {
        loop {
            let mut p = libc::pollfd {
                fd: efd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd that outlives the call. EINTR just loops.
            unsafe { libc::poll(&mut p, 1, -1) };
            drain_eventfd(efd.as_raw_fd());
            let mut ready = Vec::new();
            self.lock().retain(|(s, w)| {
                let pending = s.pending() > 0;
                if pending {
                    ready.push(w.clone());
                }
                !pending
            });
            for w in ready {
                w.wake();
            }
        }
    }
}

/// The select helper, started on first use; `None` if it could not be started.
fn helper() -> Option<&'static Helper> {
    static HELPER: OnceLock<Option<&'static Helper>> = OnceLock::new();
    *HELPER.get_or_init(|| {
        let efd = new_eventfd().ok()?;
        let raw = efd.as_raw_fd();
        let h: &'static Helper = Box::leak(Box::new(Helper {
            waiting: Mutex::new(Vec::new()),
        }));
        std::thread::Builder::new()
            .name("costack-signals".into())
            .spawn(move || h.run(efd))
            .ok()?;
        // The thread owns the fd and never ends, so the fd stays open from here on.
        HELPER_FD.store(raw, Ordering::SeqCst);
        Some(h)
    })
}

impl Iterator for Signals {
    type Item = io::Result<libc::c_int>;

    /// [`recv`](Signals::recv): never `None`.
    fn next(&mut self) -> Option<io::Result<libc::c_int>> {
        Some(self.recv())
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        // Waits until no handler runs an old action; then the actions (and their `Arc`s) drop.
        // (A registered `RecvBranch` borrows `self`, so it has been dropped, and deregistered.)
        for id in self.ids.drain(..) {
            signal_hook_registry::unregister(id);
        }
    }
}

impl fmt::Debug for Signals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signals")
            .field("signals", &self.signals().collect::<Vec<_>>())
            .field("pending", &self.pending())
            .finish()
    }
}

/// Refuses what is not a signal, or cannot or must not be handled, before the registry sees it
/// (the registry panics on the forbidden ones).
fn check_signal(sig: libc::c_int) -> io::Result<()> {
    let bad = |why: &str| {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("costack-aio: cannot listen for signal {sig}: {why}"),
        ))
    };
    if sig < 1 || sig > libc::SIGRTMAX() {
        return bad("not a signal number");
    }
    if signal_hook_registry::FORBIDDEN.contains(&sig) {
        return bad(
            "it cannot be caught, or must not be (SIGKILL, SIGSTOP, SIGILL, SIGFPE, SIGSEGV)",
        );
    }
    if sig > libc::SIGSYS && sig < libc::SIGRTMIN() {
        return bad("the C library keeps this real-time signal for itself");
    }
    Ok(())
}
