//! How a loop is made: [`LoopBuilder`], [`EventLoop::new`] and [`EventLoop::builder`].
//!
//! Top floor: composes the drivers — the reactor (`reactor`), the cross-thread mailbox
//! (`mailbox`), the io_uring ring (`uring`) when file I/O may use it — into the loop proper
//! (`runtime`'s `Inner`), makes it the thread's loop, and hands it out as an
//! [`EventLoop`] (`event_loop`). Nothing imports this module but the crate root.

use crate::event_loop::EventLoop;
use crate::mailbox::Remote;
use crate::op::io_uring_from_env;
use crate::reactor::Reactor;
use crate::runtime::{has_current, set_current, Inner, Parts};
use crate::uring::Uring;
use costack::DEFAULT_STACK_SIZE;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Loop ids: unique in the process, never reused, so a registration or a waker that outlives
/// its loop can tell that it did.
static NEXT_LOOP_ID: AtomicU64 = AtomicU64::new(1);

impl EventLoop {
    /// Creates the thread's event loop with the default options.
    ///
    /// # Panics
    /// If the thread already has one, or epoll cannot be created. See [`LoopBuilder::build`].
    pub fn new() -> EventLoop {
        match EventLoop::builder().build() {
            Ok(l) => l,
            Err(e) => panic!("costack-aio: cannot create an event loop: {e}"),
        }
    }

    /// Options for a new loop.
    pub fn builder() -> LoopBuilder {
        LoopBuilder {
            stack_size: DEFAULT_STACK_SIZE,
            blocking_threads: 64,
            events: 1024,
            io_uring: None,
            poll_max: Duration::ZERO,
        }
    }
}

impl Default for EventLoop {
    fn default() -> Self {
        EventLoop::new()
    }
}

/// Options for an [`EventLoop`]. Made by [`EventLoop::builder`].
#[derive(Debug, Clone)]
pub struct LoopBuilder {
    stack_size: usize,
    blocking_threads: usize,
    events: usize,
    io_uring: Option<bool>,
    poll_max: Duration,
}

impl LoopBuilder {
    /// The default stack size of the loop's tasks (default: costack's, 1 MiB, virtual).
    /// Connection handlers rarely need more than 64–256 KiB.
    pub fn stack_size(mut self, bytes: usize) -> LoopBuilder {
        self.stack_size = bytes;
        self
    }

    /// How many threads [`run_blocking`](crate::run_blocking) may use at once (default 64).
    /// Work beyond that queues.
    pub fn blocking_threads(mut self, n: usize) -> LoopBuilder {
        self.blocking_threads = n.max(1);
        self
    }

    /// How many readiness events one look at I/O takes at most (default 1024).
    pub fn events_capacity(mut self, n: usize) -> LoopBuilder {
        self.events = n.max(16);
        self
    }

    /// Whether file I/O ([`fs::File`](crate::fs::File)) may use io_uring (default: yes,
    /// unless the environment variable `COSTACK_AIO_IO_URING` is `0`, `false`, `off` or `no`).
    ///
    /// `true` is a wish, not a demand: where the kernel has no io_uring, or refuses it (a
    /// sandbox, `kernel.io_uring_disabled`), the loop falls back to its worker pool and
    /// [`EventLoop::io_backend`] says so. `false` always uses the worker pool. An explicit
    /// choice here wins over the environment variable.
    ///
    /// ```
    /// use costack_aio::{EventLoop, IoBackend};
    ///
    /// let lp = EventLoop::builder().io_uring(false).build().unwrap();
    /// assert_eq!(lp.io_backend(), IoBackend::ThreadPool);
    /// ```
    pub fn io_uring(mut self, enabled: bool) -> LoopBuilder {
        self.io_uring = Some(enabled);
        self
    }

    /// Adaptive polling: before the loop sleeps in the kernel, it polls for new events for up
    /// to a self-tuning window of at most `max` (default zero: off), as QEMU's `AioContext`
    /// does with its iothreads' `poll-max-ns`. Changed later with
    /// [`EventLoop::set_poll_max`], where the rules are explained.
    ///
    /// **Cost**: while it polls, the loop's thread keeps its CPU busy (up to `max` per wait,
    /// as long as events keep arriving within `max`) instead of sleeping. That buys latency —
    /// an event found by polling skips the sleep and the wake-up in the kernel, several
    /// microseconds each — only when the loop has a CPU to itself; on a CPU shared with the
    /// threads that produce its events (a client on the same machine, other loops), polling
    /// takes their time. Leave it off unless there are more CPUs than busy threads.
    ///
    /// ```
    /// use costack_aio::EventLoop;
    /// use std::time::Duration;
    ///
    /// let lp = EventLoop::builder().poll_max(Duration::from_micros(32)).build().unwrap();
    /// assert_eq!(lp.poll_max(), Duration::from_micros(32));
    /// assert_eq!(lp.poll_window(), Duration::ZERO); // it grows with short waits
    /// ```
    pub fn poll_max(mut self, max: Duration) -> LoopBuilder {
        self.poll_max = max;
        self
    }

    /// Creates the loop and makes it this thread's loop.
    ///
    /// # Errors
    /// If the thread already has a loop (`AlreadyExists`), or epoll/eventfd cannot be created.
    /// (Failing to set up io_uring is not an error: the loop falls back to its worker pool.)
    pub fn build(self) -> io::Result<EventLoop> {
        if has_current() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "costack-aio: this thread already has an event loop (one loop per thread)",
            ));
        }
        let id = NEXT_LOOP_ID.fetch_add(1, Ordering::Relaxed);
        let (reactor, waker) = Reactor::new(self.events)?;
        let want_uring = self.io_uring.unwrap_or_else(io_uring_from_env);
        let (io_uring_error, uring) = if want_uring {
            match Uring::new().and_then(|u| reactor.watch_uring(u.eventfd()).map(|()| u)) {
                Ok(u) => (None, Some(u)),
                Err(e) => (Some(e.to_string()), None),
            }
        } else {
            (None, None)
        };
        let inner = Inner::new(Parts {
            id,
            reactor,
            remote: Remote::new(id, waker),
            stack_size: self.stack_size,
            blocking_threads: self.blocking_threads,
            io_uring_error,
            uring,
            poll_max: self.poll_max,
        });
        set_current(&inner);
        Ok(EventLoop::from_inner(inner))
    }
}
