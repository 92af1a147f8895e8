//! Coroutine locks that tasks of different loops — different threads — can share.
//!
//! Operations floor: imports only the wakers (`waker`).
//!
//! [`costack::sync`] has the single-thread locks: plain `Cell`s and costack's deferred
//! wake-ups, no atomics, as fast as a lock can be when every contender lives on one thread.
//! QEMU's `CoMutex` is also used across `AioContext`s, and that needs two things the core does
//! not have: atomic state, and a way to wake a waiter that lives on another thread — which only
//! the event loop has (its eventfd). So the thread-safe lock lives here, beside the core's
//! rather than replacing it: the core's single-thread speed stays untouched, and code that
//! needs to share a lock between loops says so by its type.
//!
//! [`Mutex`] is `Sync`: put it in an `Arc`, lock it from tasks of any loop (or from plain
//! threads). A task that finds it locked yields — its loop goes on running other tasks — and
//! is resumed on its own loop when the lock is handed to it.
//!
//! ```
//! use costack_aio::sync::Mutex;
//! use costack_aio::EventLoop;
//! use std::sync::Arc;
//! use std::thread;
//!
//! let counter = Arc::new(Mutex::new(0u64));
//! let threads: Vec<_> = (0..2)
//!     .map(|_| {
//!         let counter = counter.clone();
//!         thread::spawn(move || {
//!             let lp = EventLoop::new();
//!             lp.block_on(move || {
//!                 let tasks: Vec<_> = (0..10)
//!                     .map(|_| {
//!                         let counter = counter.clone();
//!                         costack_aio::spawn(move || {
//!                             for _ in 0..10 {
//!                                 let mut n = counter.lock();
//!                                 let seen = *n;
//!                                 costack_aio::yield_now(); // hold it across a yield
//!                                 *n = seen + 1;
//!                             }
//!                         })
//!                     })
//!                     .collect();
//!                 tasks.into_iter().for_each(|t| t.join());
//!             })
//!         })
//!     })
//!     .collect();
//! threads.into_iter().for_each(|t| t.join().unwrap());
//! assert_eq!(*counter.lock(), 200);
//! ```

use crate::waker::{prepare_park, Waker};
use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex as StdMutex, MutexGuard as StdGuard, PoisonError};

const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1;
/// Locked, and the queue may be non-empty: unlocking must look at it.
const CONTENDED: u32 = 2;

struct Waiters {
    queue: VecDeque<(u64, Waker)>,
    next_ticket: u64,
    /// The waiter the lock was handed to, until it takes it.
    granted: Option<u64>,
}

/// A mutual-exclusion lock for tasks of any loop (and threads), protecting a `T`.
///
/// Shaped like [`std::sync::Mutex`], but waiting yields the task instead of blocking the
/// thread, so a guard may be held across yields and waits. Unlocking hands the lock straight to
/// the first waiter (FIFO, no barging, nobody starves), which resumes on its own loop.
/// Outside any coroutine, `lock` blocks the thread until the lock is handed to it.
///
/// The uncontended path is one compare-and-swap to lock and one to unlock; the waiter queue
/// (behind a `std::sync::Mutex`) is touched only under contention.
///
/// A waiting task that is cancelled or interrupted by [`timeout`](crate::timeout) leaves the
/// queue; if the lock had been handed to it already, it passes it on. The lock is not
/// poisoned by panics (the guard just unlocks).
///
/// See the [module docs](self) for an example.
pub struct Mutex<T: ?Sized> {
    state: AtomicU32,
    waiters: StdMutex<Waiters>,
    data: UnsafeCell<T>,
}

// SAFETY: the lock gives one holder at a time access to the `T` (it moves between threads
// with the lock, hence `T: Send`); everything else in it is atomics and a std Mutex.
unsafe impl<T: ?Sized + Send> Send for Mutex<T> {}
// SAFETY: as above: shared references only reach the `T` through a guard, and the lock
// protocol allows one guard at a time.
unsafe impl<T: ?Sized + Send> Sync for Mutex<T> {}

/// Holds a [`Mutex`]; dereferences to the data and unlocks when dropped.
///
/// Bound to its thread (`!Send`) like a std guard: the task that locked, which never leaves
/// its thread, unlocks.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct MutexGuard<'a, T: ?Sized> {
    lock: &'a Mutex<T>,
    _not_send: PhantomData<*const ()>,
}

// SAFETY: a shared guard only gives `&T`, so sharing it needs `T: Sync`.
unsafe impl<T: ?Sized + Sync> Sync for MutexGuard<'_, T> {}

impl<T> Mutex<T> {
    /// An unlocked mutex holding `value`.
    pub const fn new(value: T) -> Mutex<T> {
        Mutex {
            state: AtomicU32::new(UNLOCKED),
            waiters: StdMutex::new(Waiters {
                queue: VecDeque::new(),
                next_ticket: 0,
                granted: None,
            }),
            data: UnsafeCell::new(value),
        }
    }

    /// The data, taking the mutex apart.
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T: ?Sized> Mutex<T> {
    fn waiters(&self) -> StdGuard<'_, Waiters> {
        // Nothing user-supplied runs under this lock (wakers are used after it is released).
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn guard(&self) -> MutexGuard<'_, T> {
        MutexGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }

    /// Takes the lock if it is free.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        self.state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| self.guard())
    }

    /// Takes the lock, waiting (yielding the task, or blocking the thread outside any
    /// coroutine) until it is handed over.
    ///
    /// # Panics
    /// Inside a coroutine that is not a task of this thread's loop, if the lock is taken.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        if let Some(g) = self.try_lock() {
            return g;
        }
        self.lock_slow()
    }

    #[cold]
    fn lock_slow(&self) -> MutexGuard<'_, T> {
        let mut w = self.waiters();
        // Under the queue lock, announce a waiter; if the lock was released meanwhile, it is
        // ours (CONTENDED is harmless: the unlock finds the queue empty).
        if self.state.swap(CONTENDED, Ordering::Acquire) == UNLOCKED {
            return self.guard();
        }
        let ticket = w.next_ticket;
        w.next_ticket += 1;
        let (waker, mut park) = prepare_park();
        w.queue.push_back((ticket, waker));
        drop(w);
        // Leaves the queue (or passes the lock on) if we unwind while waiting.
        let abandon = Abandon { lock: self, ticket };
        loop {
            park.park(None);
            let mut w = self.waiters();
            if w.granted == Some(ticket) {
                w.granted = None;
                drop(w);
                std::mem::forget(abandon);
                return self.guard();
            }
            // Resumed for another reason: renew the waker, which was good for one wait only.
            let (waker, p) = prepare_park();
            if let Some(entry) = w.queue.iter_mut().find(|e| e.0 == ticket) {
                entry.1 = waker;
            }
            park = p;
        }
    }

    /// Unlocks: hands the lock to the first waiter, or frees it.
    fn unlock(&self) {
        if self
            .state
            .compare_exchange(LOCKED, UNLOCKED, Ordering::Release, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
        self.unlock_slow();
    }

    #[cold]
    fn unlock_slow(&self) {
        let mut w = self.waiters();
        match w.queue.pop_front() {
            Some((ticket, waker)) => {
                // The lock stays locked, now on the waiter's behalf.
                w.granted = Some(ticket);
                if w.queue.is_empty() {
                    self.state.store(LOCKED, Ordering::Relaxed);
                }
                drop(w);
                waker.wake();
            }
            None => {
                self.state.store(UNLOCKED, Ordering::Release);
            }
        }
    }

    /// The data, through a unique borrow (no locking needed).
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }
}

/// Undoes a wait that is abandoned by unwinding (timeout, cancel).
struct Abandon<'a, T: ?Sized> {
    lock: &'a Mutex<T>,
    ticket: u64,
}

impl<T: ?Sized> Drop for Abandon<'_, T> {
    fn drop(&mut self) {
        let mut w = self.lock.waiters();
        if w.granted == Some(self.ticket) {
            // Handed to us, but we will not take it: pass it on.
            w.granted = None;
            drop(w);
            self.lock.unlock_slow();
        } else {
            w.queue.retain(|e| e.0 != self.ticket);
        }
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the guard proves we hold the lock: nobody else accesses the data.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only borrow through the guard.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.unlock();
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Mutex");
        match self.try_lock() {
            Some(g) => d.field("data", &&*g),
            None => d.field("data", &format_args!("<locked>")),
        };
        d.finish()
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Self {
        Mutex::new(T::default())
    }
}
