//! A time bound for tests whose way of failing is to hang: a lock whose hand-off loop never
//! ends, a waiter that is never woken. Included with `#[path]`.
//!
//! `let _deadline = deadline::arm();` at the start of a test. If the test has not dropped the
//! guard (by returning or by panicking) within [`LIMIT`], a watchdog thread names it and aborts
//! the test binary, so the run fails in seconds instead of hanging. Aborting is the only way
//! out: a hang may spin inside the library, on the test's own thread, where nothing can
//! interrupt it.

#![allow(dead_code)]

use std::io::Write;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// How long a test may run. The tests that arm it take milliseconds.
pub const LIMIT: Duration = Duration::from_secs(10);

/// How much longer under valgrind (`scripts/valgrind-tests.sh` sets `COSTACK_UNDER_VALGRIND`).
const VALGRIND_FACTOR: u32 = 30;

/// Disarms the deadline when dropped.
#[must_use = "the deadline is disarmed when the guard is dropped"]
pub struct Deadline {
    id: u64,
}

struct Armed {
    id: u64,
    test: String,
    limit: Duration,
    due: Instant,
}

#[derive(Default)]
struct Watchdog {
    /// The last id handed out, and the armed deadlines.
    armed: Mutex<(u64, Vec<Armed>)>,
    changed: Condvar,
}

impl Watchdog {
    fn lock(&self) -> MutexGuard<'_, (u64, Vec<Armed>)> {
        self.armed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Aborts the test binary unless the returned guard is dropped within [`LIMIT`].
pub fn arm() -> Deadline {
    arm_for(LIMIT)
}

/// Aborts the test binary unless the returned guard is dropped within `limit`.
pub fn arm_for(limit: Duration) -> Deadline {
    let limit = if std::env::var_os("COSTACK_UNDER_VALGRIND").is_some() {
        limit * VALGRIND_FACTOR
    } else {
        limit
    };
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let w = watchdog();
    let mut armed = w.lock();
    armed.0 += 1;
    let id = armed.0;
    armed.1.push(Armed {
        id,
        test,
        limit,
        due: Instant::now() + limit,
    });
    drop(armed);
    w.changed.notify_one();
    Deadline { id }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        watchdog().lock().1.retain(|a| a.id != self.id);
    }
}

fn watchdog() -> &'static Watchdog {
    static WATCHDOG: OnceLock<Watchdog> = OnceLock::new();
    let mut first = false;
    let w = WATCHDOG.get_or_init(|| {
        first = true;
        Watchdog::default()
    });
    if first {
        std::thread::Builder::new()
            .name("test deadline watchdog".into())
            .spawn(move || watch(w))
            .expect("cannot start the test deadline watchdog");
    }
    w
}

fn watch(w: &'static Watchdog) {
    let mut armed = w.lock();
    loop {
        let now = Instant::now();
        let next = armed.1.iter().min_by_key(|a| a.due);
        match next {
            None => {
                armed = w
                    .changed
                    .wait(armed)
                    .unwrap_or_else(PoisonError::into_inner)
            }
            Some(a) if a.due <= now => {
                // Straight to the stderr stream: `eprintln!` in a thread spawned by a test goes
                // to that test's captured output, which the abort throws away.
                let _ = writeln!(
                    std::io::stderr(),
                    "\n{} did not finish within {:?}: it hangs. Aborting the test binary.",
                    a.test,
                    a.limit
                );
                std::process::abort();
            }
            Some(a) => {
                let wait = a.due - now;
                armed = w
                    .changed
                    .wait_timeout(armed, wait)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
    }
}
