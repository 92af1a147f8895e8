//! Blocking work on worker threads: [`run_blocking`].
//!
//! Third floor: imports the wait protocol (`wait`), the worker pool itself (`pool`) and the
//! one-shot channel that brings the result back (`waker`).
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

use crate::pool::Pool;
use crate::wait::{begin_wait, Wait};
use crate::waker::oneshot;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::Arc;

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
