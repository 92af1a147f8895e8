//! The loop's worker threads: a pool that runs blocking jobs (QEMU's thread pool).
//!
//! Ground floor: imports nothing from this crate. Each loop has one, started on first use, of
//! at most [`LoopBuilder::blocking_threads`](crate::LoopBuilder::blocking_threads) threads;
//! jobs beyond that wait in a FIFO queue, idle workers exit after a few seconds. A queued job
//! can be withdrawn before a worker starts it. What runs here and how a task waits for it is
//! the `blocking` module's business ([`run_blocking`](crate::run_blocking)); file requests on
//! the worker-pool backend come here too (the `request` module).

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

pub(crate) type Job = Box<dyn FnOnce() + Send>;

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
    pub(crate) fn submit(self: &std::sync::Arc<Self>, job: Job) -> u64 {
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
    pub(crate) fn withdraw(&self, ticket: u64) -> Option<Job> {
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
