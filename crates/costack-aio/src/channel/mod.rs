//! Channels between tasks, loops and threads: [`oneshot`] and [`mpsc`] (bounded and
//! unbounded), written in synchronous style — a call that must wait yields the task to its
//! loop.
//!
//! Operations floor: the files below import the wait protocol (`wait`), the wakers (`waker`),
//! the loop proper (`runtime`, for the local flavour), the task keys (`key`), the mailbox's
//! `lock`, and the select protocol (`select`); nothing above.
//!
//! # Two flavours
//!
//! * **`Send` channels**, [`channel::mpsc`](mpsc) and [`channel::oneshot`](oneshot): senders
//!   and receiver may be anywhere — tasks of different loops, plain threads. The state is
//!   behind a `std::sync::Mutex` (an mpsc receiver takes the buffered values out in batches,
//!   so a busy producer and consumer do not meet at the lock for every value); a send that ends a wait on another loop wakes that task
//!   through its loop's eventfd (a [`Waker`](crate::Waker)); a plain thread that must wait
//!   blocks (running its event loop meanwhile, if it has one that is not running).
//! * **Local channels**, [`channel::local::mpsc`](local::mpsc) and
//!   [`channel::local::oneshot`](local::oneshot): every side is on one loop. The types are
//!   not `Send`; the state is an `Rc<RefCell<..>>`, and ending a wait puts the task straight on
//!   the loop's ready queue — no atomics, no lock, no eventfd. Pick these for tasks that talk
//!   to each other on one loop (they are faster); the compiler stops a local channel from
//!   crossing threads, so there is no wrong way to find out.
//!
//! Both have the same API: `send`/`try_send`/`recv`/`try_recv`, `close`, `len`, `is_closed`,
//! errors that give the value back ([`SendError`], [`TrySendError`]), and receivers that are
//! iterators. The waits work with [`timeout`](crate::timeout) (an interrupted `recv` consumes
//! nothing) and with cancelled tasks (a cancelled waiter leaves the channel's wait queue; a
//! wake-up it had received goes to the next waiter).
//!
//! # In a select
//!
//! Every receiver has `recv_branch()` and every sender `send_branch(value)`, which implement
//! [`Selectable`](crate::select::Selectable): a receive branch that loses consumes nothing; a
//! send branch that loses keeps its value unsent (`into_value` gives it back; dropping the
//! branch drops it).
//!
//! ```
//! use costack_aio::channel::{local, mpsc};
//! use costack_aio::EventLoop;
//!
//! let (tx, rx) = mpsc::unbounded(); // Send: from a plain thread to a task
//! std::thread::spawn(move || tx.send("from a thread").unwrap());
//! let lp = EventLoop::new();
//! lp.block_on(move || {
//!     let (ltx, lrx) = local::mpsc::bounded(1); // local: between tasks of this loop
//!     costack_aio::spawn(move || ltx.send(rx.recv().unwrap()).unwrap());
//!     assert_eq!(lrx.recv(), Some("from a thread"));
//!     assert_eq!(lrx.recv(), None); // the task ended, dropping its sender
//! });
//! ```

mod core;
mod error;
pub mod local;
pub mod mpsc;
pub mod oneshot;
mod park;

pub use error::{SendError, TryRecvError, TrySendError};
