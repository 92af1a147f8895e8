//! Coroutine synchronisation: waiting yields the coroutine, it never blocks the thread.
//!
//! # Why coroutines need their own locks
//!
//! Coroutines of one thread take turns: one runs until it yields, then another is entered. Code
//! in a coroutine often has to keep some state consistent *across* a yield — a request
//! half-built in a shared buffer, a cache entry being refilled while the I/O that fills it is
//! in flight. Other coroutines must keep out until it is done.
//!
//! A [`std::sync::Mutex`] cannot do that. If coroutine A holds it across a yield and coroutine
//! B, on the same thread, then tries to lock it, B blocks the *thread*: A can never be entered
//! again to unlock it, and the thread is deadlocked. A lock for coroutines must instead suspend
//! the coroutine that waits and let the thread run the others, including the holder.
//!
//! That is what the primitives here do. Each keeps a queue of waiting coroutines. A coroutine
//! that cannot have the lock joins the queue and [yields](crate::yield_now); when the holder
//! lets go, the lock is *handed* to the first waiter, which is woken, and the waiter's call
//! returns with the lock held.
//!
//! # Wake-ups without an event loop
//!
//! Waking does not switch at once. Inside a coroutine, a wake-up queues the woken coroutine
//! behind the running one, and whoever entered the running coroutine enters the woken one right
//! after it yields or terminates (the core's deferred wake-ups, see [`CoHandle::wake`]). So:
//!
//! * the unlocking coroutine keeps running until its next yield — an unlock never switches;
//! * the waiter runs next, before control gets back to the enterer (usually an event loop, or
//!   `main` in tests), with no event loop needed to dispatch it;
//! * a chain of hand-offs never deepens the native stack.
//!
//! Outside any coroutine there is nobody to queue behind: a waiter woken from there (an unlock
//! in `main`, say) is entered at once, and runs until it yields or finishes before the call that
//! woke it returns.
//!
//! A waiter that something else resumes is woken through that instead, by the resume contract
//! ([`park`](crate::park)): a task of an event loop is queued on its loop, a coroutine hosted by
//! an executor ([`bridge::as_future`](crate::bridge::as_future)) has its future woken, and a
//! coroutine nested in another (a generator resumed by a task) is resumed by its enterer, which
//! waits with it. The locks therefore work unchanged in all of these.
//!
//! ```
//! use costack::sync::CoMutex;
//! use costack::{yield_now, Coroutine};
//! use std::{cell::RefCell, rc::Rc};
//!
//! let lock = Rc::new(CoMutex::new(()));
//! let log = Rc::new(RefCell::new(Vec::new()));
//!
//! let (l, g) = (lock.clone(), log.clone());
//! let holder = Coroutine::new(move || {
//!     let guard = l.lock();
//!     g.borrow_mut().push("holder: locked");
//!     yield_now(); // keeps the lock across the yield
//!     drop(guard); // hands the lock to `waiter`, which runs once we are done
//!     g.borrow_mut().push("holder: unlocked, still running");
//! });
//! let (l, g) = (lock.clone(), log.clone());
//! let waiter = Coroutine::new(move || {
//!     g.borrow_mut().push("waiter: locking");
//!     let _guard = l.lock(); // yields until the lock is handed over
//!     g.borrow_mut().push("waiter: locked");
//! });
//!
//! let _ = holder.enter();
//! let _ = waiter.enter(); // waits: returns here
//! let _ = holder.enter(); // the waiter runs right after the holder finishes
//! assert!(waiter.is_finished());
//! assert_eq!(*log.borrow(), [
//!     "holder: locked",
//!     "waiter: locking",
//!     "holder: unlocked, still running",
//!     "waiter: locked",
//! ]);
//! ```
//!
//! # Fairness: FIFO hand-off
//!
//! Every lock here serves its waiters in the order they came, and hands the lock over rather
//! than freeing it: between the unlock and the moment the waiter runs, the lock counts as held
//! by the waiter, so nobody can slip in. A coroutine that unlocks and immediately locks again
//! goes to the back of the queue. The [`CoRwLock`] lets no new reader in while a writer waits,
//! and the [`CoSemaphore`] makes small requests wait behind a large one that does not fit yet.
//! Nobody is starved.
//!
//! # The primitives
//!
//! * [`CoMutex<T>`]: one holder at a time, shaped like `std::sync::Mutex<T>`: [`lock`]
//!   returns a guard that dereferences to the data.
//! * [`CoRwLock<T>`]: many readers or one writer; read guards can be upgraded and write
//!   guards downgraded.
//! * [`CoSemaphore`]: a counter of permits; `acquire(n)` waits for `n` of them.
//! * [`CoQueue`]: a bare queue of waiting coroutines, woken one by one or all at once — the
//!   condition variable of coroutines, for waiting on anything the locks do not express. It can
//!   release a lock while waiting and take it back after ([`CoQueue::wait_with`]).
//!
//! # Where they can be used
//!
//! * Waiting needs a coroutine to suspend. Outside any coroutine, taking a lock that is free
//!   succeeds (handy for setting up or inspecting state from `main`), and taking one that is
//!   held panics. The `try_` methods never wait, anywhere.
//! * These primitives serve the coroutines of one thread. A lock is shared between coroutines by
//!   reference — typically an [`Rc`](std::rc::Rc) — and is not `Sync`; guards are not `Send`.
//!   A lock nobody is using can be moved to another thread with its data.
//! * They are not reentrant: a coroutine that locks a [`CoMutex`] it holds waits for itself
//!   forever, and so does one that takes a [`CoRwLock`] for reading again while a writer is
//!   queued behind its first read lock.
//!
//! # Cancellation: dropping a waiting coroutine
//!
//! Dropping the last handle to a suspended coroutine unwinds its stack (see
//! [`Coroutine`](crate::Coroutine)). If it was waiting, it leaves the queue as it unwinds, and
//! the lock stays consistent: a waiter that had already been handed the lock but had not run
//! yet passes the lock on, and a request that vanishes from the head of a queue lets those
//! behind it through if they can go now. Guards on the unwound stack are dropped like any
//! other value, so they release what they hold.
//!
//! Releasing never waits, so guards are safe to drop there. Taking a lock is not: a destructor
//! that runs during that unwinding and has to *wait* for a lock cannot yield (the coroutine is
//! being torn down), and panicking inside an unwinding destructor aborts the process. Use the
//! `try_` methods in destructors.
//!
//! # Spurious resumes
//!
//! A waiting coroutine resumes only when the primitive hands it what it waits for. Entering it
//! through a [`CoHandle`] (one taken with [`current`](crate::current), say) is harmless: it
//! finds it has not been handed anything and yields again.
//!
//! # Cost
//!
//! Taking a free lock and releasing it with nobody waiting is a flag or counter check and
//! update, with no queue touched. Waiting allocates nothing: the queue entry lives on the waiting
//! coroutine's own stack, linked into the lock for as long as it waits.
//!
//! [`lock`]: CoMutex::lock
//! [`CoHandle`]: crate::CoHandle
//! [`CoHandle::wake`]: crate::CoHandle::wake
//!
//! May import: its own files, on floors: `waiter` and `relock` at the bottom, the locks above
//! them (and `queue`, whose `wait_with` takes any `Relock` guard, uses only the trait). `waiter`
//! alone reaches into the core (`park` and the routed wake-up).

mod mutex;
mod queue;
mod relock;
mod rwlock;
mod semaphore;
mod waiter;

pub use mutex::{CoMutex, CoMutexGuard};
pub use queue::CoQueue;
pub use relock::Relock;
pub use rwlock::{CoRwLock, CoRwLockReadGuard, CoRwLockWriteGuard};
pub use semaphore::{CoSemaphore, CoSemaphorePermit};
