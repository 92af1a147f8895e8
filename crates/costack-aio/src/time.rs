//! Timers: sleeping, deadlines on whole blocks of code, sleeps that can be cut short, and
//! intervals.
//!
//! Operations floor: imports the wait protocol (`wait`: a wait's deadline, `timeout` scopes),
//! the wakers (`waker`), the [`Selectable`] protocol (`select`) and the loop proper (`runtime`:
//! the timer entry of an [`Interval`]'s select branch). The loop's timer map itself is in
//! `timers`.
//!
//! A task that sleeps yields to the loop; the loop's wait for I/O is bounded by the nearest
//! deadline, and when it passes the sleeper is resumed. Timers never fire early (the loop
//! rounds its wait up and checks the clock), and those due at the same time fire in the order
//! of their deadlines, then of their creation.
//!
//! [`timeout`] puts a deadline on a block of ordinary code: every wait inside it — a socket
//! read, a sleep, a join, a lock — is cut short when the deadline passes, and the block is
//! abandoned by unwinding its stack up to `timeout`, which returns [`Elapsed`]. The wait that
//! was interrupted is withdrawn cleanly (a socket read that was interrupted consumed nothing;
//! the socket can be used again).
//!
//! ```
//! use costack_aio::{sleep, timeout, EventLoop};
//! use std::time::{Duration, Instant};
//!
//! let lp = EventLoop::new();
//! lp.block_on(|| {
//!     let t0 = Instant::now();
//!     sleep(Duration::from_millis(10));
//!     assert!(t0.elapsed() >= Duration::from_millis(10));
//!
//!     let r = timeout(Duration::from_millis(10), || {
//!         sleep(Duration::from_secs(3600));
//!         "slept"
//!     });
//!     assert!(r.is_err());
//!     assert_eq!(timeout(Duration::from_secs(1), || "quick"), Ok("quick"));
//! });
//! ```
//!
//! [`interval`] and [`interval_at`] make an [`Interval`], which ticks at a fixed period; what it
//! does with ticks that come late is its [`MissedTickBehavior`].
//!
//! # Deadlines on any wait
//!
//! In a task, [`timeout_at`] *is* the deadline for any wait: every wait of this crate (sockets,
//! files, joins, locks, sleeps, [`suspend`](crate::suspend), a select) goes through the wait
//! protocol, which bounds it by the task's nearest `timeout` scope, so no wait needs a
//! deadline argument of its own. Outside any coroutine, a wait blocks the thread in the kernel
//! (`poll(2)`, a thread park), and nothing can abandon it from outside, so `timeout_at` is
//! refused there (it panics); use the waits that take a deadline themselves — [`sleep_until`],
//! [`WakeableSleep::sleep_until`], [`Interval::tick`] — or run the code as a task
//! ([`EventLoop::block_on`](crate::EventLoop::block_on)) and put a `timeout` around it.

use crate::runtime::{current_loop, Inner};
use crate::select::Selectable;
use crate::wait::{begin_wait, in_task, TimeoutScope, TimeoutUnwind};
use crate::waker::{prepare_park, Waker};
use std::fmt;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Suspends the running task for `d`; outside any coroutine, sleeps the thread.
///
/// # Panics
/// Inside a coroutine that is not a task of this thread's loop.
pub fn sleep(d: Duration) {
    match Instant::now().checked_add(d) {
        Some(deadline) => sleep_until(deadline),
        None => sleep_forever(),
    }
}

fn sleep_forever() -> ! {
    match begin_wait() {
        Some(w) => loop {
            w.park(None);
        },
        None => loop {
            std::thread::park();
        },
    }
}

/// Suspends the running task until `deadline`; outside any coroutine, sleeps the thread.
///
/// # Panics
/// Inside a coroutine that is not a task of this thread's loop.
pub fn sleep_until(deadline: Instant) {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        match begin_wait() {
            Some(w) => w.park(Some(deadline)),
            None => std::thread::sleep(deadline - now),
        }
    }
}

/// The error of [`timeout`]: the deadline passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed(());

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for std::io::Error {
    fn from(e: Elapsed) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::TimedOut, e)
    }
}

/// Runs `f` in the running task with a deadline `d` from now; see [`timeout_at`].
pub fn timeout<R>(d: Duration, f: impl FnOnce() -> R) -> Result<R, Elapsed> {
    match Instant::now().checked_add(d) {
        Some(deadline) => timeout_at(deadline, f),
        None => Ok(f()),
    }
}

/// Runs `f` in the running task; if any wait inside it is still going on at `deadline` (or
/// starts after it), `f` is abandoned: its stack unwinds up to here, running its destructors,
/// and `Err(Elapsed)` is returned. Code that does not wait is never interrupted.
///
/// Timeouts nest; the one whose deadline passed is the one that returns `Elapsed`.
///
/// `f` is unwound with a private panic payload (no panic message is printed), so this needs
/// `panic = "unwind"` (as dropping a suspended coroutine does). Code inside `f` that catches
/// panics should let unknown payloads continue, as for any panic.
///
/// # Panics
/// Outside a task of this thread's event loop: there is no loop to interrupt the waits.
pub fn timeout_at<R>(deadline: Instant, f: impl FnOnce() -> R) -> Result<R, Elapsed> {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    let Some(scope) = TimeoutScope::push(deadline, id) else {
        panic!("costack-aio: timeout() can only be used in a task of an event loop");
    };
    let r = catch_unwind(AssertUnwindSafe(f));
    drop(scope);
    match r {
        Ok(v) => Ok(v),
        Err(p) => match p.downcast::<TimeoutUnwind>() {
            Ok(t) if t.0 == id => Err(Elapsed(())),
            Ok(t) => resume_unwind(t),
            Err(p) => resume_unwind(p),
        },
    }
}

/// A sleep that another task or thread can end early, where a wake that comes before the
/// sleep is not lost (QEMU's `qemu_co_sleep_ns_wakeable`, with a memory).
///
/// [`wake`](WakeableSleep::wake) ends the current [`sleep`](WakeableSleep::sleep) at once;
/// if nobody sleeps, it is remembered and the next `sleep` returns at once. Wakes do not
/// count: several before a sleep end just that one sleep. It is `Send + Sync + Clone`:
/// clones share the state, and `wake` works from any thread (the sleeper resumes on its own
/// loop). It also works outside coroutines, where `sleep` blocks the thread.
///
/// ```
/// use costack_aio::{EventLoop, WakeableSleep};
/// use std::time::Duration;
///
/// let lp = EventLoop::new();
/// lp.block_on(|| {
///     let s = WakeableSleep::new();
///     let s2 = s.clone();
///     let waker = costack_aio::spawn(move || s2.wake());
///     assert!(s.sleep(Duration::from_secs(60))); // woken long before the minute is up
///     waker.join();
///     s.wake(); // nobody sleeps: remembered
///     assert!(s.sleep(Duration::from_secs(60)));
///     assert!(!s.sleep(Duration::from_millis(1))); // nothing pending: times out
/// });
/// ```
#[derive(Clone, Default)]
pub struct WakeableSleep {
    state: Arc<Mutex<SleepState>>,
}

#[derive(Default)]
struct SleepState {
    pending: bool,
    sleeper: Option<Waker>,
}

impl WakeableSleep {
    /// A sleep with no wake pending.
    pub fn new() -> WakeableSleep {
        WakeableSleep::default()
    }

    fn lock(&self) -> MutexGuard<'_, SleepState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sleeps for `d` at most. Returns `true` if it was woken (or a wake was pending), `false`
    /// if the time ran out.
    ///
    /// Only one sleeper at a time is expected; if two sleep at once, a wake ends the one that
    /// started last.
    pub fn sleep(&self, d: Duration) -> bool {
        match Instant::now().checked_add(d) {
            Some(deadline) => self.sleep_until(deadline),
            None => self.sleep_until_opt(None),
        }
    }

    /// Sleeps until `deadline` at most; see [`sleep`](WakeableSleep::sleep).
    pub fn sleep_until(&self, deadline: Instant) -> bool {
        self.sleep_until_opt(Some(deadline))
    }

    /// Sleeps until woken, however long that takes.
    pub fn sleep_until_woken(&self) {
        self.sleep_until_opt(None);
    }

    fn sleep_until_opt(&self, deadline: Option<Instant>) -> bool {
        loop {
            let mut st = self.lock();
            if st.pending {
                st.pending = false;
                st.sleeper = None;
                return true;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                st.sleeper = None;
                return false;
            }
            let (waker, park) = prepare_park();
            st.sleeper = Some(waker);
            drop(st);
            // If we are unwound here (timeout, cancel), the stale waker left behind is harmless:
            // it can wake nothing but the wait it was made for, which is over.
            park.park(deadline);
        }
    }

    /// Ends the current sleep, or makes the next one return at once.
    pub fn wake(&self) {
        let mut st = self.lock();
        st.pending = true;
        let sleeper = st.sleeper.take();
        drop(st);
        if let Some(w) = sleeper {
            w.wake();
        }
    }
}

impl fmt::Debug for WakeableSleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("WakeableSleep")
            .field("pending", &st.pending)
            .field("sleeping", &st.sleeper.is_some())
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Intervals

/// What an [`Interval`] does when ticks were missed: when [`tick`](Interval::tick) is called so
/// late that the *following* tick is already due too (the task was busy, or the loop was
/// blocked, for a period or more).
///
/// Say the period is 10 ms, ticks are scheduled at 0, 10, 20, 30 … ms, and the tick scheduled at
/// 10 ms is only taken at 35 ms. It returns `10 ms` (a tick always returns the time it was
/// scheduled for); then:
///
/// * [`Burst`](MissedTickBehavior::Burst) — the ticks of 20 and 30 ms are returned at once, one
///   per call, without waiting, until the schedule has caught up; then 40, 50 … as planned.
///   The number of ticks over a long run is kept.
/// * [`Delay`](MissedTickBehavior::Delay) — the schedule restarts from the late tick: the next
///   one is a full period after it was taken, at 45 ms, then 55, 65 … The spacing between
///   ticks is kept.
/// * [`Skip`](MissedTickBehavior::Skip) — the missed ticks are dropped: the next one is the
///   first of the original schedule still ahead, 40 ms, then 50 … The phase of the schedule is
///   kept.
///
/// A tick that is late by less than a period changes nothing under any of them: the next one
/// stays where it was planned. The default is `Burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MissedTickBehavior {
    /// Return the missed ticks at once, back to back, until caught up.
    #[default]
    Burst,
    /// Schedule the next tick a period after the late one was taken.
    Delay,
    /// Drop the missed ticks; keep to the original schedule's phase.
    Skip,
}

/// Ticks at a fixed period: [`tick`](Interval::tick) waits for the next tick and returns the
/// time it was scheduled for. Made by [`interval`] and [`interval_at`].
///
/// Like [`sleep_until`], `tick` yields the task in a task of the loop and sleeps the thread
/// outside any coroutine. Ticks never come early; what happens when they come late is set by
/// [`MissedTickBehavior`]. In a select, [`tick_branch`](Interval::tick_branch) is a branch.
///
/// ```
/// use costack_aio::time::interval;
/// use costack_aio::EventLoop;
/// use std::time::Duration;
///
/// let lp = EventLoop::new();
/// lp.block_on(|| {
///     let mut every = interval(Duration::from_millis(2));
///     let first = every.tick(); // the first tick is at once
///     let second = every.tick();
///     let third = every.tick();
///     assert_eq!(second - first, Duration::from_millis(2));
///     assert_eq!(third - second, Duration::from_millis(2));
/// });
/// ```
#[derive(Debug)]
pub struct Interval {
    /// When the next tick is due; `None` past the end of `Instant`'s range (never).
    next: Option<Instant>,
    period: Duration,
    missed: MissedTickBehavior,
}

/// An [`Interval`] whose first tick is at once, then every `period`.
///
/// # Panics
/// If `period` is zero (a tick could never wait).
pub fn interval(period: Duration) -> Interval {
    interval_at(Instant::now(), period)
}

/// An [`Interval`] whose first tick is at `start`, then every `period`.
///
/// # Panics
/// If `period` is zero (a tick could never wait).
pub fn interval_at(start: Instant, period: Duration) -> Interval {
    assert!(
        !period.is_zero(),
        "costack-aio: an interval's period must be greater than zero"
    );
    Interval {
        next: Some(start),
        period,
        missed: MissedTickBehavior::default(),
    }
}

impl Interval {
    /// Waits until the next tick is due and returns the time it was scheduled for; the tick
    /// after it is scheduled by the [`MissedTickBehavior`].
    ///
    /// # Panics
    /// Inside a coroutine that is not a task of this thread's loop.
    pub fn tick(&mut self) -> Instant {
        match self.next {
            Some(at) => {
                sleep_until(at);
                self.take(at, Instant::now())
            }
            None => sleep_forever(),
        }
    }

    /// Takes the tick scheduled at `at`, at `now`; schedules the next one.
    fn take(&mut self, at: Instant, now: Instant) -> Instant {
        let planned = at.checked_add(self.period);
        self.next = match planned {
            Some(p) if now >= p => match self.missed {
                MissedTickBehavior::Burst => Some(p),
                MissedTickBehavior::Delay => now.checked_add(self.period),
                MissedTickBehavior::Skip => {
                    // The first tick of the schedule `at + k * period` that is after `now`.
                    let behind = (now - at).as_nanos();
                    let period = self.period.as_nanos();
                    let k = behind / period + 1;
                    u32::try_from(k)
                        .ok()
                        .and_then(|k| self.period.checked_mul(k))
                        .and_then(|d| at.checked_add(d))
                        .or_else(|| now.checked_add(self.period))
                }
            },
            p => p,
        };
        at
    }

    /// The tick now, if it is due, without waiting (what a select's branch takes).
    fn try_tick(&mut self) -> Option<Instant> {
        let at = self.next?;
        let now = Instant::now();
        (now >= at).then(|| self.take(at, now))
    }

    /// When the next tick is due (`None` if never: past the range of `Instant`).
    pub fn next_tick(&self) -> Option<Instant> {
        self.next
    }

    /// The period between ticks.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Restarts the schedule: the next tick is a full period from now.
    pub fn reset(&mut self) {
        self.next = Instant::now().checked_add(self.period);
    }

    /// Restarts the schedule from `at`: the next tick is due then.
    pub fn reset_at(&mut self, at: Instant) {
        self.next = Some(at);
    }

    /// What this interval does when ticks are missed.
    pub fn missed_tick_behavior(&self) -> MissedTickBehavior {
        self.missed
    }

    /// Sets what this interval does when ticks are missed (from the next tick on).
    pub fn set_missed_tick_behavior(&mut self, behavior: MissedTickBehavior) {
        self.missed = behavior;
    }

    /// This interval's next tick as a branch of a select ([`Selectable`]): it wins when the
    /// tick is due, with the time the tick was scheduled for, as [`tick`](Interval::tick)
    /// returns it. A branch that loses takes no tick.
    ///
    /// While registered, the branch keeps a timer for the tick: on the loop in a task, or a
    /// helper thread sleeping until the tick (ended by [`deregister`](Selectable::deregister))
    /// outside any coroutine.
    ///
    /// ```
    /// use costack_aio::select::Selectable;
    /// use costack_aio::time::interval;
    /// use std::time::Duration;
    ///
    /// let mut every = interval(Duration::from_secs(60));
    /// let mut branch = every.tick_branch();
    /// assert!(branch.try_select().is_some()); // the first tick is due at once
    /// assert!(branch.try_select().is_none()); // the next is a minute away
    /// ```
    pub fn tick_branch(&mut self) -> TickBranch<'_> {
        TickBranch {
            interval: self,
            registration: None,
        }
    }
}

/// A select's branch for the next tick of an [`Interval`]; see
/// [`Interval::tick_branch`].
#[derive(Debug)]
pub struct TickBranch<'a> {
    interval: &'a mut Interval,
    registration: Option<TickRegistration>,
}

/// How a registered branch will be woken at the tick.
enum TickRegistration {
    /// A timer entry on the loop.
    Loop(Rc<Inner>, (Instant, u64)),
    /// A helper thread that sleeps until the tick; dropping the sender ends it early. It holds
    /// a clone of the waker, which may keep a loop's mailbox open (a select on a thread that
    /// drives its loop): deregistering joins it, so that the clone is gone when the branch
    /// is, and a blocking `EventLoop::poll` does not wait for a wake that can no longer come.
    Thread(mpsc::Sender<()>, std::thread::JoinHandle<()>),
}

impl fmt::Debug for TickRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TickRegistration::Loop(_, (at, _)) => f.debug_tuple("Loop").field(at).finish(),
            TickRegistration::Thread(..) => f.write_str("Thread"),
        }
    }
}

impl Selectable for TickBranch<'_> {
    type Output = Instant;

    fn try_select(&mut self) -> Option<Instant> {
        self.interval.try_tick()
    }

    fn register(&mut self, waker: &Waker) {
        self.deregister();
        let Some(at) = self.interval.next else {
            return; // never due: nothing to wake
        };
        let waker = waker.clone();
        let in_task = current_loop().filter(|_| in_task());
        self.registration = Some(match in_task {
            Some(inner) => {
                let entry = inner.add_timer_call(at, Box::new(move || waker.wake()));
                TickRegistration::Loop(inner, entry)
            }
            None => {
                let (tx, rx) = mpsc::channel::<()>();
                let w = waker.clone();
                let spawned = std::thread::Builder::new().spawn(move || {
                    let wait = at.saturating_duration_since(Instant::now());
                    if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(wait) {
                        w.wake();
                    }
                });
                match spawned {
                    Ok(t) => TickRegistration::Thread(tx, t),
                    // No thread left: wake at once, so that the select looks again instead of
                    // waiting for nothing (it polls, but does not hang).
                    Err(_) => {
                        waker.wake();
                        return;
                    }
                }
            }
        });
    }

    fn deregister(&mut self) {
        match self.registration.take() {
            Some(TickRegistration::Loop(inner, entry)) => inner.remove_timer(entry),
            Some(TickRegistration::Thread(tx, t)) => {
                drop(tx); // ends the thread's sleep at once
                let _ = t.join();
            }
            None => {}
        }
    }
}

impl Drop for TickBranch<'_> {
    fn drop(&mut self) {
        self.deregister();
    }
}
