//! [`CoSemaphore`]: a counting semaphore for coroutines, FIFO so large requests are not starved.
//!
//! May import: `waiter` and `relock` (its guards are `Relock`).

use super::waiter::{Parked, WaitList, Waiter};
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

/// A counting semaphore for coroutines: a pool of permits that coroutines take and give back,
/// to bound how many of them use a resource at once or how much of it they use together (the
/// model is QEMU's `SharedResource`).
///
/// [`acquire(n)`](CoSemaphore::acquire) takes `n` permits, yielding until they are available;
/// the returned [`CoSemaphorePermit`] gives them back when dropped.
/// [`release(n)`](CoSemaphore::release) adds permits (for example ones whose permit guard was
/// [forgotten](CoSemaphorePermit::forget)).
///
/// Requests are served strictly in order. A request that cannot be met makes those behind it
/// wait too, even small ones that would fit: otherwise a stream of small requests could starve
/// a large one forever. When permits come back, they go to the first waiters for as long as
/// there are enough for the next.
///
/// ```
/// use costack::sync::CoSemaphore;
/// use costack::{yield_now, Coroutine};
/// use std::rc::Rc;
///
/// // At most 4 units of buffer space in flight.
/// let space = Rc::new(CoSemaphore::new(4));
/// let s = space.clone();
/// let small = Coroutine::new(move || {
///     let _p = s.acquire(3);
///     yield_now(); // holds 3 units across the yield
/// });
/// let s = space.clone();
/// let large = Coroutine::new(move || {
///     let _p = s.acquire(4); // must wait for all 4
/// });
/// let s = space.clone();
/// let tiny = Coroutine::new(move || {
///     let _p = s.acquire(1); // would fit now, but queues behind `large`
/// });
/// assert!(!small.enter().is_finished());
/// assert!(!large.enter().is_finished());
/// assert!(!tiny.enter().is_finished());
/// assert_eq!(space.available_permits(), 1);
/// let _ = small.enter(); // gives back 3: `large`, then `tiny`, run after it
/// assert!(large.is_finished() && tiny.is_finished());
/// assert_eq!(space.available_permits(), 4);
/// ```
///
/// # Outside a coroutine
///
/// Acquiring succeeds outside any coroutine when it need not wait, and panics otherwise.
/// Releasing outside a coroutine enters the coroutines it hands permits to at once.
///
/// # Dropping a waiting coroutine
///
/// A coroutine dropped while it waits leaves the queue (which may let those behind it
/// through). One that had been handed its permits but was dropped before it ran gives them
/// back. Permit guards dropped while a coroutine's stack is unwound give their permits back as
/// usual.
pub struct CoSemaphore {
    /// Available permits. Invariant: the first waiter, if any, wants more than this.
    permits: Cell<usize>,
    waiters: WaitList,
}

// SAFETY: a semaphore that can be moved to another thread is not borrowed, so no coroutine
// waits in it (waiters are inside `acquire`, borrowing it) and its queue is empty. Permit guards
// borrow it too; a leaked one only leaves fewer permits.
unsafe impl Send for CoSemaphore {}

/// Permits taken from a [`CoSemaphore`]; gives them back when dropped.
///
/// ```compile_fail,E0277
/// use costack::sync::CoSemaphore;
///
/// fn assert_send<T: Send>(_: T) {}
/// let s = CoSemaphore::new(1);
/// assert_send(s.acquire(1)); // error: `CoSemaphorePermit` is not `Send`
/// ```
#[must_use = "if unused the permits are given back at once"]
pub struct CoSemaphorePermit<'a> {
    sem: &'a CoSemaphore,
    n: usize,
    _not_send: PhantomData<*const ()>,
}

impl CoSemaphore {
    /// A semaphore with `permits` available permits.
    pub const fn new(permits: usize) -> CoSemaphore {
        CoSemaphore {
            permits: Cell::new(permits),
            waiters: WaitList::new(),
        }
    }

    /// Takes `n` permits, waiting (yielding) until they are available and every earlier
    /// request has been served.
    ///
    /// A request for more permits than will ever be available waits forever, and so does
    /// everyone queued behind it.
    ///
    /// # Panics
    /// If it must wait and this is called outside any coroutine.
    #[inline]
    pub fn acquire(&self, n: usize) -> CoSemaphorePermit<'_> {
        let p = self.permits.get();
        if p >= n && self.waiters.is_empty() {
            self.permits.set(p - n);
        } else {
            self.acquire_slow(n);
        }
        self.permit(n)
    }

    /// Inlined, so that the coroutine yields at its caller's depth (see `CoMutex::lock`).
    #[inline(always)]
    fn acquire_slow(&self, n: usize) {
        let node = Waiter::new(n, "CoSemaphore::acquire");
        // SAFETY: `parked` is consumed by `wait` or dropped by unwinding, never leaked; the
        // semaphore is borrowed by this call, so it does not move while the node is linked.
        let parked = unsafe {
            Parked::new(&self.waiters, &node, false, |granted| {
                if granted {
                    // Handed the permits, but dropped before it ran: give them back.
                    self.release(n);
                } else {
                    // The request left the queue: smaller ones behind it may fit now.
                    self.dispatch();
                }
            })
        };
        parked.wait();
    }

    /// Takes `n` permits if that needs no wait: enough are available and nobody is queued
    /// (taking them past a waiter would starve it).
    #[inline]
    pub fn try_acquire(&self, n: usize) -> Option<CoSemaphorePermit<'_>> {
        let p = self.permits.get();
        if p >= n && self.waiters.is_empty() {
            self.permits.set(p - n);
            Some(self.permit(n))
        } else {
            None
        }
    }

    /// Adds `n` permits, and hands them to the waiters at the front of the queue for as long as
    /// there are enough for the next one.
    ///
    /// # Panics
    /// If the count of available permits would overflow `usize`.
    #[inline]
    pub fn release(&self, n: usize) {
        let p = match self.permits.get().checked_add(n) {
            Some(p) => p,
            None => overflow(),
        };
        self.permits.set(p);
        if !self.waiters.is_empty() {
            self.dispatch();
        }
    }

    /// The permits available now.
    pub fn available_permits(&self) -> usize {
        self.permits.get()
    }

    /// Whether coroutines are queued waiting for permits. For diagnostics and tests: it can
    /// change as soon as the caller yields.
    pub fn has_waiters(&self) -> bool {
        !self.waiters.is_empty()
    }

    #[inline(always)]
    fn permit(&self, n: usize) -> CoSemaphorePermit<'_> {
        CoSemaphorePermit {
            sem: self,
            n,
            _not_send: PhantomData,
        }
    }

    /// Serves the waiters at the front of the queue while there are permits for the next.
    #[cold]
    #[inline(never)]
    fn dispatch(&self) {
        // Re-read everything on each round: outside a coroutine, each grant runs the waiter.
        self.waiters.grant_while(|want| {
            let p = self.permits.get();
            if p < want {
                return false;
            }
            self.permits.set(p - want);
            true
        });
    }
}

#[cold]
#[inline(never)]
fn overflow() -> ! {
    panic!("costack: CoSemaphore permit count overflow")
}

impl fmt::Debug for CoSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoSemaphore")
            .field("permits", &self.permits.get())
            .field("waiters", &self.waiters.len())
            .finish()
    }
}

impl<'a> CoSemaphorePermit<'a> {
    /// How many permits this guard holds.
    pub fn permits(&self) -> usize {
        self.n
    }

    /// The semaphore the permits came from.
    pub fn semaphore(&self) -> &'a CoSemaphore {
        self.sem
    }

    /// Keeps the permits taken: dropping the guard this way gives nothing back. Give them back
    /// later with [`CoSemaphore::release`].
    pub fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for CoSemaphorePermit<'_> {
    #[inline]
    fn drop(&mut self) {
        self.sem.release(self.n);
    }
}

impl fmt::Debug for CoSemaphorePermit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoSemaphorePermit")
            .field("permits", &self.n)
            .finish()
    }
}

impl<'a> super::relock::sealed::Sealed for CoSemaphorePermit<'a> {
    type Unlocked = (&'a CoSemaphore, usize);

    fn unlock_for_wait(self) -> (&'a CoSemaphore, usize) {
        (self.sem, self.n) // dropping `self` gives the permits back
    }

    fn relock_after_wait((sem, n): (&'a CoSemaphore, usize)) -> Self {
        sem.acquire(n)
    }
}

impl super::relock::Relock for CoSemaphorePermit<'_> {}
