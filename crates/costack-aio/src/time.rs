//! Timers: sleeping, deadlines on whole blocks of code, and sleeps that can be cut short.
//!
//! Third floor: imports the wait protocol (`wait`: a wait's deadline, `timeout` scopes) and the
//! wakers (`waker`). The loop's timer map itself is in `timers`.
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

use crate::wait::{begin_wait, TimeoutScope, TimeoutUnwind};
use crate::waker::{prepare_park, Waker};
use std::fmt;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
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

fn sleep_forever() {
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
