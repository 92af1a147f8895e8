//! [`CoRwLock`]: many readers or one writer, FIFO-fair, with upgrade and downgrade.
//!
//! May import: `waiter` and `relock` (its guards are `Relock`).

use super::waiter::{Parked, WaitList, Waiter};
use std::cell::{Cell, UnsafeCell};
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

/// `state` when a writer holds the lock; any smaller value counts the readers.
const WRITER: usize = usize::MAX;
/// The most readers at once (so that the count never reaches `WRITER`).
const MAX_READERS: usize = usize::MAX - 1;
/// `Waiter::want` of a queued reader, and of a queued writer.
const WANT_READ: usize = 0;
const WANT_WRITE: usize = 1;

/// A reader-writer lock for coroutines, protecting a `T` (QEMU's `CoRwlock`).
///
/// Any number of coroutines can hold it for reading ([`read`](CoRwLock::read)), or one for
/// writing ([`write`](CoRwLock::write)). A coroutine that cannot have it yields until it is
/// handed the lock.
///
/// The lock is fair: requests are served in the order they were made. A new reader waits when
/// a writer is queued, even while other readers hold the lock, so a stream of readers cannot
/// starve a writer. When the lock becomes free, the first waiter gets it — and if that is a
/// reader, so do all the readers queued right behind it.
///
/// A read guard can be [upgraded](CoRwLockReadGuard::upgrade) to a write guard, and a write
/// guard [downgraded](CoRwLockWriteGuard::downgrade) to a read guard.
///
/// ```
/// use costack::sync::CoRwLock;
/// use costack::{yield_now, Coroutine};
/// use std::rc::Rc;
///
/// let config = Rc::new(CoRwLock::new(String::from("v1")));
///
/// let c = config.clone();
/// let reader = Coroutine::new(move || {
///     let r = c.read();
///     yield_now(); // readers may hold the lock across yields
///     r.clone()
/// });
/// let c = config.clone();
/// let writer = Coroutine::new(move || {
///     *c.write() = String::from("v2"); // waits until the reader is done
/// });
///
/// assert!(!reader.enter().is_finished()); // reading
/// assert!(!writer.enter().is_finished()); // queued behind the reader
/// assert_eq!(reader.enter().finished().as_deref(), Some("v1"));
/// assert!(writer.is_finished()); // it ran as soon as the reader let go
/// assert_eq!(*config.read(), "v2");
/// ```
///
/// # Outside a coroutine
///
/// Locking succeeds outside any coroutine when it need not wait, and panics otherwise.
/// Releasing outside a coroutine enters the coroutines it hands the lock to at once.
///
/// # Dropping a waiting coroutine
///
/// A coroutine dropped while it waits leaves the queue (which may let those behind it through).
/// One that had been handed the lock but was dropped before it ran releases it. Guards dropped
/// while a coroutine's stack is unwound release the lock as usual.
pub struct CoRwLock<T: ?Sized> {
    /// `WRITER`, or the number of readers. Invariant: when 0, `waiters` is empty, and the first
    /// waiter, if any, cannot be granted.
    state: Cell<usize>,
    waiters: WaitList,
    data: UnsafeCell<T>,
}

// SAFETY: as for `CoMutex`: a lock that can be moved is not borrowed, so no guard refers to it
// and its queue is empty; it owns only the `T`, which is `Send`.
unsafe impl<T: ?Sized + Send> Send for CoRwLock<T> {}

/// Shared access to the data of a [`CoRwLock`]; releases it when dropped.
///
/// ```compile_fail,E0277
/// use costack::sync::CoRwLock;
///
/// fn assert_send<T: Send>(_: T) {}
/// let l = CoRwLock::new(0);
/// assert_send(l.read()); // error: `CoRwLockReadGuard` is not `Send`
/// ```
#[must_use = "if unused the CoRwLock is released at once"]
pub struct CoRwLockReadGuard<'a, T: ?Sized> {
    lock: &'a CoRwLock<T>,
    _not_send: PhantomData<*const ()>,
}

/// Exclusive access to the data of a [`CoRwLock`]; releases it when dropped.
///
/// ```compile_fail,E0277
/// use costack::sync::CoRwLock;
///
/// fn assert_send<T: Send>(_: T) {}
/// let l = CoRwLock::new(0);
/// assert_send(l.write()); // error: `CoRwLockWriteGuard` is not `Send`
/// ```
#[must_use = "if unused the CoRwLock is released at once"]
pub struct CoRwLockWriteGuard<'a, T: ?Sized> {
    lock: &'a CoRwLock<T>,
    _not_send: PhantomData<*const ()>,
}

impl<T> CoRwLock<T> {
    /// A new, unlocked lock holding `data`.
    pub const fn new(data: T) -> CoRwLock<T> {
        CoRwLock {
            state: Cell::new(0),
            waiters: WaitList::new(),
            data: UnsafeCell::new(data),
        }
    }

    /// Consumes the lock and returns the data.
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T: ?Sized> CoRwLock<T> {
    /// Takes the lock for reading, waiting (yielding) while a writer holds it or is queued.
    ///
    /// # Panics
    /// If it must wait and this is called outside any coroutine.
    #[inline]
    pub fn read(&self) -> CoRwLockReadGuard<'_, T> {
        let s = self.state.get();
        if s < MAX_READERS && self.waiters.is_empty() {
            self.state.set(s + 1);
        } else {
            self.wait_for(WANT_READ, "CoRwLock::read");
        }
        self.read_guard()
    }

    /// Takes the lock for reading if that needs no wait: no writer holds it and none is queued.
    #[inline]
    pub fn try_read(&self) -> Option<CoRwLockReadGuard<'_, T>> {
        let s = self.state.get();
        if s < MAX_READERS && self.waiters.is_empty() {
            self.state.set(s + 1);
            Some(self.read_guard())
        } else {
            None
        }
    }

    /// Takes the lock for writing, waiting (yielding) while anyone holds it or is queued.
    ///
    /// # Panics
    /// If it must wait and this is called outside any coroutine.
    #[inline]
    pub fn write(&self) -> CoRwLockWriteGuard<'_, T> {
        if self.state.get() == 0 {
            debug_assert!(self.waiters.is_empty());
            self.state.set(WRITER);
        } else {
            self.wait_for(WANT_WRITE, "CoRwLock::write");
        }
        self.write_guard()
    }

    /// Takes the lock for writing if it is free.
    #[inline]
    pub fn try_write(&self) -> Option<CoRwLockWriteGuard<'_, T>> {
        if self.state.get() == 0 {
            self.state.set(WRITER);
            Some(self.write_guard())
        } else {
            None
        }
    }

    /// Whether a writer holds the lock (or it has been handed to a writer that has not run
    /// yet).
    pub fn is_write_locked(&self) -> bool {
        self.state.get() == WRITER
    }

    /// How many readers hold the lock (counting those it has been handed to that have not run
    /// yet); 0 when it is free or write-locked.
    pub fn reader_count(&self) -> usize {
        match self.state.get() {
            WRITER => 0,
            n => n,
        }
    }

    /// Whether anyone holds the lock, for reading or writing.
    pub fn is_locked(&self) -> bool {
        self.state.get() != 0
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

    #[inline(always)]
    fn read_guard(&self) -> CoRwLockReadGuard<'_, T> {
        CoRwLockReadGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }

    #[inline(always)]
    fn write_guard(&self) -> CoRwLockWriteGuard<'_, T> {
        CoRwLockWriteGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }

    /// Queues the running coroutine as a reader or writer and waits until it is handed the
    /// lock. Inlined, so that the coroutine yields at its caller's depth (see `CoMutex::lock`).
    #[inline(always)]
    fn wait_for(&self, want: usize, op: &'static str) {
        let node = Waiter::new(want, op);
        self.park(&node, false);
    }

    /// Links `node` at the back of the queue and waits until it is granted. With `dispatch`,
    /// first lets in whoever can go now (for `upgrade`, which has just released a read share).
    #[inline(always)]
    fn park(&self, node: &Waiter, dispatch: bool) {
        // SAFETY: `parked` is consumed by `wait` or dropped by unwinding, never leaked; the
        // lock is borrowed by this call, so it does not move while the node is linked.
        let parked = unsafe {
            Parked::new(&self.waiters, node, false, |granted| {
                if !granted {
                    // The request left the queue: those behind it may go now.
                    self.dispatch();
                } else if node.want() == WANT_WRITE {
                    // Handed the lock, but dropped before it ran: release it.
                    self.unlock_write();
                } else {
                    self.unlock_read();
                }
            })
        };
        if dispatch {
            self.dispatch();
        }
        parked.wait();
    }

    #[inline]
    fn unlock_read(&self) {
        let s = self.state.get() - 1;
        self.state.set(s);
        // With readers left, the first waiter (a writer) still cannot go.
        if s == 0 && !self.waiters.is_empty() {
            self.dispatch();
        }
    }

    #[inline]
    fn unlock_write(&self) {
        self.state.set(0);
        if !self.waiters.is_empty() {
            self.dispatch();
        }
    }

    /// Hands the lock to the waiters at the front of the queue for as long as they can have it:
    /// a writer if the lock is free, readers while no writer holds it.
    #[cold]
    #[inline(never)]
    fn dispatch(&self) {
        // Re-read everything on each round: outside a coroutine, each grant runs the waiter.
        self.waiters.grant_while(|want| {
            let s = self.state.get();
            if want == WANT_WRITE {
                if s != 0 {
                    return false;
                }
                self.state.set(WRITER);
            } else {
                if s >= MAX_READERS {
                    return false;
                }
                self.state.set(s + 1);
            }
            true
        });
    }
}

impl<T: Default> Default for CoRwLock<T> {
    fn default() -> Self {
        CoRwLock::new(T::default())
    }
}

impl<T> From<T> for CoRwLock<T> {
    fn from(data: T) -> Self {
        CoRwLock::new(data)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for CoRwLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("CoRwLock");
        match self.try_read() {
            Some(g) => d.field("data", &&*g),
            None => d.field("data", &format_args!("<locked>")),
        };
        d.field("waiters", &self.waiters.len()).finish()
    }
}

impl<'a, T: ?Sized> CoRwLockReadGuard<'a, T> {
    /// Turns shared access into exclusive access.
    ///
    /// If this is the only reader and nobody is queued, the lock becomes a write lock at once.
    /// Otherwise the read lock is *released* and the coroutine queues as a writer, behind
    /// whoever is queued already, and waits: other writers may run before it, so data read
    /// before the upgrade may have changed by the time it returns. Releasing first means two
    /// readers upgrading at the same time do not deadlock.
    ///
    /// ```
    /// use costack::sync::{CoRwLock, CoRwLockReadGuard};
    /// use costack::Coroutine;
    ///
    /// let co = Coroutine::new(|| {
    ///     let lock = CoRwLock::new(1);
    ///     let r = lock.read();
    ///     let seen = *r;
    ///     let mut w = CoRwLockReadGuard::upgrade(r); // sole reader: immediate
    ///     *w = seen + 1; // safe here only because the upgrade did not wait
    ///     drop(w);
    ///     lock.into_inner()
    /// });
    /// assert_eq!(co.enter().finished(), Some(2));
    /// ```
    ///
    /// # Panics
    /// If it must wait and this is called outside any coroutine (the read lock is then still
    /// held by `guard`, and released as the panic unwinds).
    pub fn upgrade(guard: Self) -> CoRwLockWriteGuard<'a, T> {
        let lock = guard.lock;
        if lock.state.get() == 1 && lock.waiters.is_empty() {
            std::mem::forget(guard);
            lock.state.set(WRITER);
            return lock.write_guard();
        }
        lock.upgrade_slow(guard);
        lock.write_guard()
    }

    /// Like [`upgrade`](Self::upgrade), but only if that needs no wait; gives the read guard
    /// back otherwise.
    pub fn try_upgrade(guard: Self) -> Result<CoRwLockWriteGuard<'a, T>, Self> {
        let lock = guard.lock;
        if lock.state.get() == 1 && lock.waiters.is_empty() {
            std::mem::forget(guard);
            lock.state.set(WRITER);
            Ok(lock.write_guard())
        } else {
            Err(guard)
        }
    }

    /// The lock this guard holds.
    pub fn rwlock(guard: &Self) -> &'a CoRwLock<T> {
        guard.lock
    }
}

impl<T: ?Sized> CoRwLock<T> {
    #[cold]
    #[inline(never)]
    fn upgrade_slow(&self, guard: CoRwLockReadGuard<'_, T>) {
        // Outside a coroutine this panics while `guard` still holds the read lock, and the
        // unwinding releases it.
        let node = Waiter::new(WANT_WRITE, "CoRwLockReadGuard::upgrade");
        // Give up the read share, then queue as a writer behind those queued already. If this
        // was the last reader, the first waiter (a writer: readers behind no writer would have
        // been let in) can go now: `park` dispatches once the node is linked.
        std::mem::forget(guard);
        let s = self.state.get() - 1;
        self.state.set(s);
        self.park(&node, s == 0);
    }
}

impl<'a, T: ?Sized> CoRwLockWriteGuard<'a, T> {
    /// Turns exclusive access into shared access, atomically: no writer can get in between.
    /// Never waits; the readers queued at the front are let in with it.
    ///
    /// ```
    /// use costack::sync::{CoRwLock, CoRwLockWriteGuard};
    ///
    /// let lock = CoRwLock::new(Vec::new());
    /// let mut w = lock.write();
    /// w.push(1);
    /// let r = CoRwLockWriteGuard::downgrade(w);
    /// assert_eq!(*r, [1]);
    /// assert!(lock.try_read().is_some()); // other readers are welcome now
    /// ```
    pub fn downgrade(guard: Self) -> CoRwLockReadGuard<'a, T> {
        let lock = guard.lock;
        std::mem::forget(guard);
        lock.state.set(1);
        if !lock.waiters.is_empty() {
            lock.dispatch();
        }
        lock.read_guard()
    }

    /// The lock this guard holds.
    pub fn rwlock(guard: &Self) -> &'a CoRwLock<T> {
        guard.lock
    }
}

impl<T: ?Sized> Deref for CoRwLockReadGuard<'_, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: a read guard proves no writer holds the lock, so no `&mut T` exists.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized> Deref for CoRwLockWriteGuard<'_, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: a write guard proves exclusive access; it is borrowed, so no `&mut T` from it
        // exists meanwhile.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized> DerefMut for CoRwLockWriteGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: a write guard proves exclusive access, and it is borrowed mutably.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T: ?Sized> Drop for CoRwLockReadGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.lock.unlock_read();
    }
}

impl<T: ?Sized> Drop for CoRwLockWriteGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.lock.unlock_write();
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for CoRwLockReadGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for CoRwLockWriteGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for CoRwLockReadGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for CoRwLockWriteGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

impl<'a, T: ?Sized + 'a> super::relock::sealed::Sealed for CoRwLockReadGuard<'a, T> {
    type Unlocked = &'a CoRwLock<T>;

    fn unlock_for_wait(self) -> &'a CoRwLock<T> {
        self.lock // dropping `self` releases the read lock
    }

    fn relock_after_wait(lock: &'a CoRwLock<T>) -> Self {
        lock.read()
    }
}

impl<'a, T: ?Sized + 'a> super::relock::Relock for CoRwLockReadGuard<'a, T> {}

impl<'a, T: ?Sized + 'a> super::relock::sealed::Sealed for CoRwLockWriteGuard<'a, T> {
    type Unlocked = &'a CoRwLock<T>;

    fn unlock_for_wait(self) -> &'a CoRwLock<T> {
        self.lock // dropping `self` releases the write lock
    }

    fn relock_after_wait(lock: &'a CoRwLock<T>) -> Self {
        lock.write()
    }
}

impl<'a, T: ?Sized + 'a> super::relock::Relock for CoRwLockWriteGuard<'a, T> {}
