//! # costack-aio: an event loop for code that reads as synchronous
//!
//! A [`costack`] coroutine can yield from any depth of ordinary code. This crate supplies what
//! it yields *to*: an event loop, after QEMU's `AioContext`, that knows what each suspended
//! coroutine waits for — a socket to become readable, a deadline, a result from a worker
//! thread, a lock — and resumes it when that happens. Code that runs on the loop is written
//! as if it blocked:
//!
//! ```
//! use costack_aio::net::{TcpListener, TcpStream};
//! use costack_aio::EventLoop;
//! use std::io::{Read, Write};
//!
//! fn echo(mut stream: TcpStream) -> std::io::Result<()> {
//!     let mut buf = [0; 1024];
//!     loop {
//!         let n = stream.read(&mut buf)?; // yields while there is nothing to read
//!         if n == 0 {
//!             return Ok(());
//!         }
//!         stream.write_all(&buf[..n])?; // yields while the socket buffer is full
//!     }
//! }
//!
//! let lp = EventLoop::new();
//! lp.block_on(|| {
//!     let listener = TcpListener::bind("127.0.0.1:0").unwrap();
//!     let addr = listener.local_addr().unwrap();
//!     costack_aio::spawn(move || {
//!         for stream in listener.incoming() {
//!             costack_aio::spawn(move || echo(stream.unwrap()));
//!         }
//!     });
//!     let mut client = TcpStream::connect(addr).unwrap();
//!     client.write_all(b"hello").unwrap();
//!     let mut reply = [0; 5];
//!     client.read_exact(&mut reply).unwrap();
//!     assert_eq!(&reply, b"hello");
//! });
//! ```
//!
//! Nothing there is `async`: `echo` is the function you would write for a thread per
//! connection. Underneath, each connection is a *task* — a coroutine owned by the loop, with a
//! stack of its own — and each `read` that would block yields that task to the loop, which
//! runs the others until the socket is readable. Thousands of connections share one thread.
//!
//! ## The pieces
//!
//! * **The loop** ([`EventLoop`]): one per thread. [`block_on`](EventLoop::block_on) runs a
//!   closure as a task and drives the loop until it returns — the bridge from synchronous
//!   `main` into coroutine land (inside a coroutine it just calls the closure, like QEMU's
//!   generated wrappers). [`spawn`] starts more tasks; a [`JoinHandle`] joins, detaches (drop)
//!   or cancels one (its stack unwinds). [`call_soon`] queues a callback (QEMU's bottom half).
//!   How waits refer to tasks, and why a stale wake-up is harmless, is explained in the source
//!   of the `wait` module.
//! * **Turns and bottom halves**: [`EventLoop::poll`] runs one turn by hand and says whether it
//!   made progress (QEMU's `aio_poll`); a [`BottomHalf`] is a reusable callback scheduled at
//!   most once, for the next turn (QEMU's `QEMUBH`); a [`RemoteBottomHalf`] schedules one from
//!   any thread.
//! * **Groups and choices**: a [`JoinSet`] joins tasks in the order they finish, [`join_all`]
//!   in the order given; [`select!`] waits for the first of several things (a join, a
//!   readiness, a timer, a channel — any [`select::Selectable`]), the others untouched.
//! * **Readiness and sockets**: [`io`] waits for fds ([`io::AsyncFd`]); [`net`] has TCP and
//!   Unix sockets whose `Read`/`Write` yield on `WouldBlock`.
//!   [`net::UdpSocket`]'s sends and receives yield the same way; [`net::lookup_host`] resolves
//!   host names on the worker pool (so does `connect` given a name), keeping the loop running.
//! * **Time** ([`time`]): [`sleep`], [`sleep_until`], [`timeout`] (abandons a block of code
//!   whose wait overruns a deadline), [`WakeableSleep`], and [`interval`] ([`Interval`]: ticks
//!   at a period, with a [`MissedTickBehavior`]).
//! * **Files** ([`fs`]): [`File`] reads and writes at offsets (and as a cursor: `Read`,
//!   `Write`, `Seek`), syncs, punches holes, opens with [`fs::OpenOptions`]; each
//!   request is issued, the task yields, and the completion re-enters it — through io_uring, or
//!   the worker pool where io_uring is off or refused ([`IoBackend`]).
//!   In a task, reads and writes first try the page cache without waiting (`RWF_NOWAIT`); see
//!   [`File::set_fast_path`].
//! * **Buffers** ([`buf`]): the thread's pool of I/O buffers, [`buf::take`] and [`buf::give`],
//!   which `File`'s bounce buffers use too.
//! * **Blocking work** ([`blocking`]): [`run_blocking`] runs a closure on a worker thread while
//!   the task yields.
//! * **Threads** ([`remote`]): a [`LoopHandle`] runs closures and spawns tasks on a loop from
//!   any thread; [`suspend`] gives a [`Waker`] that resumes a task from any thread — on its own
//!   loop: coroutines never migrate.
//! * **Locks across loops** ([`sync`]): [`sync::Mutex`], for tasks on different threads.
//! * **Signals and child processes**: [`signal::Signals`] receives Unix signals in a task;
//!   [`process::Command`] spawns children whose exit and pipes a task waits for by yielding.
//! * **Channels** ([`channel`]): oneshot and mpsc (bounded, unbounded) whose waits yield the
//!   task; a `Send` flavour across loops and threads, and a faster local one for one loop.
//!
//! ## Rules of the road
//!
//! * Every wait in this crate works inside a task of the thread's loop — also in a coroutine
//!   that a task entered (a `costack::Generator` pulling from a socket, say), whose wait
//!   suspends the task with it — and outside any coroutine (it then blocks the thread, so the
//!   sockets work in plain threads too). In a coroutine that no task entered (one you created
//!   with `costack::Coroutine` and entered from `main`) there is nothing to wake it, so waits
//!   panic and say so. The rules behind this are costack's resume contract (`costack::park`),
//!   in which the loop is the driver of its tasks.
//! * [`costack::yield_now`] in a task lets the other ready tasks run and continues, like this
//!   crate's [`yield_now`]; in a coroutine nested in a task it returns to the enterer, as
//!   always.
//! * The single-thread locks of `costack::sync` and `costack::bridge::await_future` work in
//!   tasks as they are: their wake-ups reach the loop, which resumes the task. Use
//!   [`sync::Mutex`] only to share between threads.
//! * Dropping the loop drops every task on it: suspended stacks unwind, sockets close.
//!
//! ## Readiness and completions
//!
//! Readiness comes from `mio` (epoll on Linux), edge-triggered, registered once per fd on its
//! first wait. File requests go to an io_uring ring per loop (see [`fs`]); the ring's
//! completion eventfd sits in the same epoll set, so the loop still waits in exactly one place
//! (`Inner::wait_for_events` in the `runtime` module). There, each turn, the requests that tasks
//! queued are submitted in one `io_uring_enter`, completions are reaped, and only then does
//! the loop sleep in epoll, if nothing is ready.

//!
//! ## Floor plan (for readers of the source)
//!
//! Each file imports from its own floor or the floors below it, never from above, and no two
//! files import each other in a circle (`scripts/import-cycles.py` checks this in CI).
//!
//! * **Ground floor** — no imports from the crate but each other's ground-floor files: `key`
//!   (the task key of one wait), the drivers' machinery — `reactor` (epoll), `timers` (the
//!   deadline map), `uring` (the io_uring ring), `pool` (worker threads), `mailbox` (the
//!   cross-thread queue) — the file requests `op/` (one file per operation: its io_uring entry
//!   beside its blocking call), and [`buf`].
//! * **The loop proper** — `runtime`: the task table, the ready queue, the one place the loop
//!   waits, shutdown; it composes the machinery and keeps its fields private.
//! * **The wait protocol** — `wait`: how a task waits and is woken (the loop's side of
//!   costack's resume contract).
//!   Beside it, `bh`: bottom halves on the loop's turns ([`BottomHalf`]).
//! * **Operations** — built on `wait`: readiness ([`io`], [`net`]), file requests (`request`,
//!   [`fs`]), worker jobs ([`blocking`]), timers ([`time`]), wakers (`waker`), [`sync`], and
//!   tasks (`task`: [`JoinHandle`], [`TaskBuilder`]), [`signal`] and [`process`]; selects
//!   ([`select`](mod@select): its protocol, which `io`, `net` and `task` implement for their
//!   branches, and the executor) and sets of tasks (`joinset`: [`JoinSet`]); the
//!   channels ([`channel`]).
//! * **Top floor** — [`remote`] ([`LoopHandle`]), `event_loop` ([`EventLoop`]) and `builder`
//!   ([`LoopBuilder`], which composes the drivers into a loop).

#![cfg_attr(docsrs, feature(doc_cfg))]

mod bh;
pub mod blocking;
pub mod buf;
mod builder;
pub mod channel;
mod event_loop;
pub mod fs;
pub mod io;
mod joinset;
mod key;
mod mailbox;
pub mod net;
mod op;
mod poll_window;
mod pool;
pub mod process;
mod reactor;
pub mod remote;
mod request;
mod runtime;
pub mod select;
pub mod signal;
pub mod sync;
mod task;
pub mod time;
mod timers;
mod uring;
mod wait;
mod waker;

pub use bh::{BottomHalf, RemoteBottomHalf};
pub use blocking::run_blocking;
pub use builder::LoopBuilder;
pub use event_loop::{call_soon, current_handle, EventLoop};
pub use fs::{File, IoBackend};
pub use joinset::{join_all, try_join_all, JoinNext, JoinSet};
pub use remote::{suspend, LoopClosed, LoopHandle, RemoteJoinHandle, Waker};
pub use task::{spawn, JoinBranch, JoinError, JoinHandle, TaskBuilder};
pub use time::{interval, interval_at, Interval, MissedTickBehavior};
pub use time::{sleep, sleep_until, timeout, timeout_at, Elapsed, WakeableSleep};
pub use wait::{in_task, yield_now};

/// The crate README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
