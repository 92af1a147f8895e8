//! Blocking work on worker threads: [`run_blocking`].
//!
//! Some work cannot yield: a system call with no non-blocking form (`fsync`, `getaddrinfo`,
//! file I/O on most file systems), a library that blocks, a long computation. Running it on the
//! loop's thread would stall every task. `run_blocking` sends it to a pool of worker threads
//! (QEMU's thread pool), yields, and resumes the task with the result when the worker is done.
//!
//! Each loop has its own pool, started on first use, of at most
//! [`LoopBuilder::blocking_threads`](crate::LoopBuilder::blocking_threads) threads (64 by
//! default); work beyond that waits in a FIFO queue. Idle workers exit after a few seconds.
//!
//! # Cancellation
//!
//! A task that is cancelled (or whose [`timeout`](crate::timeout) expires) while its work still
//! waits in the queue takes the work off the queue: it never runs, as QEMU's thread pool does
//! with a cancelled request that has not started. Work that a worker has already started is
//! not interrupted — a thread cannot be stopped safely in the middle of a system call or of
//! foreign code — it runs to completion on its worker and its result is dropped.

use crate::remote::oneshot;
use crate::runtime::{begin_wait, Wait};
use std::collections::VecDeque;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

type Job = Box<dyn FnOnce() + Send>;

/// How long an idle worker waits for work before it exits.
const IDLE_EXIT: Duration = Duration::from_secs(5);

struct State {
    /// Queued jobs with their tickets, in FIFO order.
    jobs: VecDeque<(u64, Job)>,
    /// The ticket of the next job.
    next: u64,
    threads: usize,
    idle: usize,
    shutdown: bool,
}

/// A loop's worker pool.
pub(crate) struct Pool {
    state: Mutex<State>,
    cond: Condvar,
    max: usize,
}

impl Pool {
    pub(crate) fn new(max: usize) -> Pool {
        Pool {
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                next: 0,
                threads: 0,
                idle: 0,
                shutdown: false,
            }),
            cond: Condvar::new(),
            max,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Jobs run outside the lock, so a poisoned lock cannot hide a broken state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `job` and returns its ticket (for [`withdraw`](Pool::withdraw)); starts a worker
    /// if none is idle and the limit allows.
    fn submit(self: &std::sync::Arc<Self>, job: Job) -> u64 {
        let mut st = self.lock();
        let ticket = st.next;
        st.next += 1;
        if st.shutdown {
            return ticket; // `job` is dropped: its result channel reports the loss
        }
        st.jobs.push_back((ticket, job));
        if st.idle > 0 {
            drop(st);
            self.cond.notify_one();
            return ticket;
        }
        if st.threads < self.max {
            st.threads += 1;
            drop(st);
            let pool = self.clone();
            let spawned = std::thread::Builder::new()
                .name("costack-blocking".into())
                .spawn(move || pool.work());
            if spawned.is_err() {
                // No thread: the job waits for a running worker, if there is any.
                let mut st = self.lock();
                st.threads -= 1;
                if st.threads == 0 {
                    st.jobs.clear();
                }
            }
        }
        ticket
    }

    /// Takes the job `ticket` off the queue if no worker has started it yet; returns it (to be
    /// dropped by the caller, outside the lock) if it did.
    fn withdraw(&self, ticket: u64) -> Option<Job> {
        let mut st = self.lock();
        let i = st.jobs.iter().position(|(t, _)| *t == ticket)?;
        st.jobs.remove(i).map(|(_, job)| job)
    }

    fn work(&self) {
        let mut st = self.lock();
        loop {
            if let Some((_, job)) = st.jobs.pop_front() {
                drop(st);
                job(); // catches its own panics
                st = self.lock();
                continue;
            }
            if st.shutdown {
                break;
            }
            st.idle += 1;
            let (s, t) = self
                .cond
                .wait_timeout(st, IDLE_EXIT)
                .unwrap_or_else(PoisonError::into_inner);
            st = s;
            st.idle -= 1;
            if t.timed_out() && st.jobs.is_empty() {
                break;
            }
        }
        st.threads -= 1;
    }

    /// Lets the workers finish what they run and exit; queued jobs are dropped.
    pub(crate) fn shutdown(&self) {
        let mut st = self.lock();
        st.shutdown = true;
        let jobs = std::mem::take(&mut st.jobs);
        drop(st);
        self.cond.notify_all();
        drop(jobs);
    }
}

/// Runs `f` on a worker thread of the loop's pool and returns its result; the running task
/// yields meanwhile, so the loop goes on serving the others. A panic in `f` continues in the
/// task with the same payload. Outside any coroutine, `f` simply runs on the calling thread.
///
/// If the task is cancelled (or times out) while `f` waits in the queue, `f` is taken off the
/// queue and never runs (it is dropped). If that happens while `f` runs, `f` runs to completion
/// on its worker and its result is dropped.
///
/// ```
/// use costack_aio::{run_blocking, EventLoop};
///
/// let lp = EventLoop::new();
/// let (value, worker) = lp.block_on(|| {
///     run_blocking(|| (6 * 7, std::thread::current().name().map(str::to_owned)))
/// });
/// assert_eq!(value, 42);
/// assert_eq!(worker.as_deref(), Some("costack-blocking"));
/// ```
///
/// # Panics
/// Continuing `f`'s panic; if the loop shuts down its pool first; inside a coroutine that is
/// not a task of this thread's loop.
pub fn run_blocking<F, T>(f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match begin_wait() {
        Some(w) => run_blocking_in(w, f),
        None => f(),
    }
}

/// [`run_blocking`] for a task whose wait has begun already.
pub(crate) fn run_blocking_in<F, T>(w: Wait, f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let Wait { inner, .. } = w;
    let (tx, rx) = oneshot::<std::thread::Result<T>>();
    let pool = inner.pool().clone();
    drop(inner);
    let ticket = pool.submit(Box::new(move || {
        let r = catch_unwind(AssertUnwindSafe(f));
        tx.send(r);
    }));
    /// Takes the job off the queue if the task stops waiting for it (unwinds) before a worker
    /// starts it; after the job ran, finds nothing to take.
    struct Withdraw(Arc<Pool>, u64);
    impl Drop for Withdraw {
        fn drop(&mut self) {
            drop(self.0.withdraw(self.1));
        }
    }
    let withdraw = Withdraw(pool, ticket);
    let r = rx.recv();
    drop(withdraw);
    match r {
        Some(Ok(v)) => v,
        Some(Err(p)) => resume_unwind(p),
        None => panic!("costack-aio: the blocking pool shut down before running the work"),
    }
}
