//! [`CoMutex`]: mutual exclusion between coroutines, with FIFO hand-off.
//!
//! May import: `waiter` and `relock` (its guards are `Relock`).

use super::waiter::{Parked, WaitList, Waiter};
use std::cell::{Cell, UnsafeCell};
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

/// A mutual-exclusion lock for coroutines, protecting a `T` (QEMU's `CoMutex`).
///
/// Shaped like [`std::sync::Mutex`]: [`lock`](CoMutex::lock) returns a guard that dereferences
/// to the data and unlocks when dropped. The difference is what happens when the lock is taken:
/// the coroutine *yields* until the lock is handed to it, and the thread goes on running other
/// coroutines. A guard may therefore be held across [`yield_now`](crate::yield_now) and across
/// anything that yields.
///
/// Unlocking hands the lock straight to the first waiter, in strict FIFO order: the lock stays
/// locked, now on the waiter's behalf, and the waiter runs right after the unlocking coroutine
/// yields or terminates. A coroutine that unlocks and locks again at once therefore queues
/// behind the waiters; nobody is starved.
///
/// ```
/// use costack::sync::CoMutex;
/// use costack::{yield_now, Coroutine};
/// use std::rc::Rc;
///
/// let counter = Rc::new(CoMutex::new(0));
/// let workers: Vec<_> = (0..3)
///     .map(|_| {
///         let counter = counter.clone();
///         Coroutine::new(move || {
///             let mut n = counter.lock();
///             let seen = *n;
///             yield_now(); // others queue up meanwhile; nobody sees a half-done update
///             *n = seen + 1;
///         })
///     })
///     .collect();
/// // A round-robin scheduler. Entering a coroutine that waits for the lock is harmless: it
/// // just yields again. Each unlock hands the lock to the next in line, which runs as soon
/// // as the unlocking coroutine finishes.
/// while workers.iter().any(|w| !w.is_finished()) {
///     for w in workers.iter().filter(|w| !w.is_finished()) {
///         let _ = w.enter();
///     }
/// }
/// assert_eq!(*counter.lock(), 3); // free again: locking outside a coroutine works
/// ```
///
/// # Outside a coroutine
///
/// [`lock`](CoMutex::lock) succeeds outside any coroutine when the lock is free, and panics
/// when it is taken: there is nothing to suspend. Unlocking outside a coroutine enters the next
/// waiter at once, before the guard's drop returns.
///
/// # Dropping a waiting coroutine
///
/// A coroutine dropped while it waits leaves the queue. One that had been handed the lock but
/// was dropped before it ran passes the lock on. A guard dropped while a coroutine's stack is
/// unwound (a panic, or the coroutine being dropped) unlocks as usual.
///
/// # Not reentrant
///
/// Locking a mutex that the same coroutine holds waits forever (until the coroutine is dropped).
pub struct CoMutex<T: ?Sized> {
    locked: Cell<bool>,
    /// Coroutines waiting for the lock. Invariant: non-empty only while `locked`.
    waiters: WaitList,
    data: UnsafeCell<T>,
}

// SAFETY: a `CoMutex` that can be moved to another thread is not borrowed, so no guard refers
// to it and no coroutine waits in it: its queue is empty, and it owns nothing tied to this
// thread but the `T`, which is `Send`. (A waiting coroutine is inside `lock`, borrowing the
// mutex; a leaked guard leaves only the `locked` flag set.)
unsafe impl<T: ?Sized + Send> Send for CoMutex<T> {}

/// Proof that the running code holds a [`CoMutex`]; dereferences to the data and unlocks when
/// dropped. Made by [`CoMutex::lock`] and [`CoMutex::try_lock`].
///
/// A guard is bound to its thread:
///
/// ```compile_fail,E0277
/// use costack::sync::CoMutex;
///
/// fn assert_send<T: Send>(_: T) {}
/// let m = CoMutex::new(0);
/// assert_send(m.lock()); // error: `CoMutexGuard` is not `Send`
/// ```
#[must_use = "if unused the CoMutex unlocks at once"]
pub struct CoMutexGuard<'a, T: ?Sized> {
    lock: &'a CoMutex<T>,
    _not_send: PhantomData<*const ()>,
}

impl<T> CoMutex<T> {
    /// A new, unlocked mutex holding `data`.
    pub const fn new(data: T) -> CoMutex<T> {
        CoMutex {
            locked: Cell::new(false),
            waiters: WaitList::new(),
            data: UnsafeCell::new(data),
        }
    }

    /// Consumes the mutex and returns the data.
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T: ?Sized> CoMutex<T> {
    /// Takes the lock, waiting for it if it is held: the running coroutine yields and is
    /// entered again once the lock has been handed to it. Waiters get the lock in the order
    /// they asked.
    ///
    /// # Panics
    /// If the lock is held and this is called outside any coroutine.
    #[inline]
    pub fn lock(&self) -> CoMutexGuard<'_, T> {
        if self.locked.get() {
            self.lock_slow();
        } else {
            self.locked.set(true);
        }
        CoMutexGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }

    // Inlined into `lock`, so that the coroutine yields at the call depth of the code that
    // locks. A coroutine suspended deeper than where it is resumed (or the reverse) costs the
    // CPU's return-address predictor a misprediction per frame of difference, on every switch:
    // keeping the wait inline made a contended hand-off between two coroutines 3x faster.
    #[inline(always)]
    fn lock_slow(&self) {
        let node = Waiter::new(0, "CoMutex::lock");
        // SAFETY: `parked` is consumed by `wait` or dropped by unwinding, never leaked; the
        // mutex is borrowed by this call, so it does not move while the node is linked.
        let parked = unsafe {
            Parked::new(&self.waiters, &node, false, |granted| {
                if granted {
                    // Handed the lock, but dropped before it ran: pass it on.
                    self.unlock();
                }
            })
        };
        parked.wait();
        // Granted: `unlock` left `locked` set on our behalf.
        debug_assert!(self.locked.get());
    }

    /// Takes the lock if it is free, without waiting; works outside a coroutine too.
    #[inline]
    pub fn try_lock(&self) -> Option<CoMutexGuard<'_, T>> {
        if self.locked.get() {
            return None;
        }
        self.locked.set(true);
        Some(CoMutexGuard {
            lock: self,
            _not_send: PhantomData,
        })
    }

    /// Whether the lock is held (or has been handed to a waiter that has not run yet).
    #[inline]
    pub fn is_locked(&self) -> bool {
        self.locked.get()
    }

    /// Whether coroutines are queued waiting for the lock. For diagnostics and tests: it can
    /// change as soon as the caller yields.
    pub fn has_waiters(&self) -> bool {
        !self.waiters.is_empty()
    }

    /// A mutable reference to the data, without locking: the `&mut` proves nobody else holds
    /// the lock.
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }

    /// Releases the lock, or hands it to the first waiter.
    #[inline]
    fn unlock(&self) {
        if self.waiters.is_empty() {
            self.locked.set(false);
        } else {
            self.hand_off();
        }
    }

    #[cold]
    #[inline(never)]
    fn hand_off(&self) {
        // `locked` stays set: the lock passes to the waiter without ever being free.
        self.waiters.grant_one();
    }
}

impl<T: Default> Default for CoMutex<T> {
    fn default() -> Self {
        CoMutex::new(T::default())
    }
}

impl<T> From<T> for CoMutex<T> {
    fn from(data: T) -> Self {
        CoMutex::new(data)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for CoMutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("CoMutex");
        match self.try_lock() {
            Some(g) => d.field("data", &&*g),
            None => d.field("data", &format_args!("<locked>")),
        };
        d.field("waiters", &self.waiters.len()).finish()
    }
}

impl<'a, T: ?Sized> CoMutexGuard<'a, T> {
    /// The mutex this guard holds.
    pub fn mutex(guard: &Self) -> &'a CoMutex<T> {
        guard.lock
    }
}

impl<T: ?Sized> Deref for CoMutexGuard<'_, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the guard proves the lock is held by its owner, and the guard is borrowed, so
        // no `&mut T` from a guard exists meanwhile.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized> DerefMut for CoMutexGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves exclusive access, and it is borrowed mutably.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T: ?Sized> Drop for CoMutexGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.lock.unlock();
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for CoMutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for CoMutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

impl<'a, T: ?Sized + 'a> super::relock::sealed::Sealed for CoMutexGuard<'a, T> {
    type Unlocked = &'a CoMutex<T>;

    fn unlock_for_wait(self) -> &'a CoMutex<T> {
        self.lock // dropping `self` unlocks
    }

    fn relock_after_wait(lock: &'a CoMutex<T>) -> Self {
        lock.lock()
    }
}

impl<'a, T: ?Sized + 'a> super::relock::Relock for CoMutexGuard<'a, T> {}
