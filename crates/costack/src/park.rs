//! The resume contract: how a coroutine waits, and who resumes it.
//!
//! Every layer of costack suspends coroutines: the locks of [`sync`](crate::sync) until a lock
//! is handed over, the [`generator`](crate::generator) until the next `resume`,
//! [`bridge::await_future`](crate::bridge::await_future) until a future's waker fires, and an
//! event loop (costack-aio) until a socket is ready. They all do it through this module, so
//! that they agree on who enters a suspended coroutine again, when, and on which thread.
//!
//! # Two ways to suspend
//!
//! * **Yield** ([`yield_now`](crate::yield_now), [`Park::yield_until`]): the coroutine goes back to whoever
//!   entered it, which decides when to enter it again. `enter` returns
//!   [`Status::Yielded`](crate::Status). A generator's `suspend` is a yield: its `resume` is
//!   the one that continues it. A driver (below) that sees a yield enters the coroutine again
//!   soon, after the others it has to run: in a task, `costack::yield_now()` lets the other
//!   tasks run and continues.
//! * **Park** ([`Park::suspend`], [`Park::until`]): the coroutine waits for something to
//!   happen — a lock to be handed over, a future to wake, a socket to be ready. Whoever makes
//!   it happen *wakes* it ([`CoHandle::wake`], or a [`Driver`]'s waker); nobody else needs
//!   to do anything. [`CoHandle::is_parked`] tells the two apart.
//!
//! # Chains, roots and drivers
//!
//! Coroutines nest: `main` (or an event loop, or an executor) enters A, A enters B. While B
//! runs, the *chain* is A → B, and A is its *root*. A wait in B is a wait of the whole chain:
//! B parks, A's `enter(B)` sees it and waits with it (B is then [held](CoHandle::is_held): only
//! A enters it again), and so on up to the root, which goes back to the thread. When the wait
//! ends, the wake-up goes to the root: the root is entered again, each coroutine of the chain
//! enters the next one again, and B continues where it parked. So a generator that reads a
//! socket inside an event-loop task suspends the task while it waits, and the task's
//! `resume` call simply takes longer.
//!
//! One consequence: a coroutine that enters others and schedules them itself (a round-robin
//! of its own) cannot have them wait for each other — the first one that waits makes the
//! scheduler wait with it, and the others do not run meanwhile. Schedule such coroutines from
//! outside any coroutine (as `main` does in the [`sync`](crate::sync) examples), or make them
//! tasks of an event loop. A plain [`yield_now`](crate::yield_now) still returns to the
//! enterer, which is free to enter another coroutine.
//!
//! Who enters the root again is its [`Driver`], named with [`CoHandle::set_driver`]:
//!
//! | root                                   | driver                | a wake-up…                                   |
//! |----------------------------------------|-----------------------|----------------------------------------------|
//! | a task of a costack-aio event loop     | the loop              | queues the task on its loop, from any thread  |
//! | a coroutine hosted by [`bridge::as_future`](crate::bridge::as_future) | its future | wakes the future's task, which polls it again |
//! | any other coroutine                    | none: the core        | queues the root behind the running coroutine (deferred wake-up), or enters it at once outside any coroutine |
//!
//! # The rules
//!
//! 1. **Who may resume what.** A parked coroutine is entered again by its enterer (if it is
//!    held) or by whoever its root's driver is. Anybody may *wake* any coroutine of the thread
//!    ([`CoHandle::wake`]); a wake-up is delivered to the root and never enters a held
//!    coroutine directly. Entering a held coroutine from elsewhere panics, as does entering one
//!    that is running, scheduled or finished. Entering a parked, not held coroutine from
//!    elsewhere is allowed and harmless: it is a *spurious resume*.
//! 2. **Spurious resumes are allowed, everywhere.** A wait can be resumed without what it waits
//!    for having happened (a wake-up was for an earlier wait of the same chain, the coroutine
//!    was entered through a handle, a future woke too early). [`Park::until`] and
//!    [`Park::yield_until`] therefore re-check their condition after every resume and suspend
//!    again if it is still false; callers never write that loop themselves.
//! 3. **From where.** Coroutines never change thread. A [`Driver`] is called on the root's
//!    thread; wake-ups from other threads go through the driver's `Send` waker
//!    ([`Park::waker`]), which brings them to that thread. Drivers only *queue* the root: a
//!    wake-up never runs another coroutine in the middle of the code that delivered it, except
//!    the core's outside any coroutine (where nothing else is running).
//! 4. **Cancel.** Dropping the last handle to a suspended coroutine unwinds its stack: its wait
//!    returns by unwinding with a private payload, and every guard on the way releases what it
//!    holds (a lock's waiter leaves the queue, or passes on a lock handed to it). If the
//!    coroutine catches that unwind and waits again, [`Park::new`] (and every wait built on it)
//!    continues the unwind: a cancelled coroutine's waits never return normally (a plain
//!    `yield_now` switches to the dropper, which enters it again at once to go on unwinding).
//! 5. **Panic.** A panic ends the coroutine it happens in and continues in its enterer, with
//!    the same payload — for a held coroutine, in the coroutine that waited with it. A panic in
//!    a coroutine woken by the core's deferred wake-ups continues in the enterer that ran the
//!    wake-up, after the others queued with it have run.
//! 6. **Thread exit.** When a thread exits, its thread-locals are destroyed one by one, in the
//!    reverse order of their first use, and a suspended coroutine may hold a reference into any
//!    of them (it is suspended inside `LocalKey::with`). So once costack's own per-thread state
//!    is being destroyed, no coroutine of the thread is resumed or unwound again: suspended
//!    coroutines are leaked, stacks and all — entering one panics, dropping one does not run
//!    its destructors. costack's state is created with the thread's first coroutine, so every
//!    thread-local first used before that (a thread-local that is set up first and then owns the
//!    coroutines, an event loop kept in one) is destroyed after it, and the coroutines it owns
//!    are leaked. A thread-local first used *later* is destroyed before costack's state, like
//!    any thread-local, and unwinds the coroutines it owns as any value is dropped: as std
//!    requires of every thread-local destructor, they must not depend on thread-locals that
//!    were first used after it (those are gone by then). Coroutines whose destructors matter
//!    should be ended or dropped before the thread returns.
//!
//! # Writing a wait
//!
//! ```
//! use costack::park::Park;
//! use costack::{Coroutine, Status};
//! use std::{cell::Cell, rc::Rc};
//!
//! // A one-shot flag that a coroutine can wait for.
//! let ready = Rc::new(Cell::new(false));
//! let waiter = {
//!     let ready = ready.clone();
//!     Coroutine::new(move || {
//!         Park::new().until(|| ready.get()); // parks until the flag is set and it is woken
//!         "done"
//!     })
//! };
//! assert_eq!(waiter.enter(), Status::Yielded);
//! assert!(waiter.is_parked());
//! assert_eq!(waiter.enter(), Status::Yielded); // a spurious resume: it parks again
//! ready.set(true);
//! waiter.wake(); // outside any coroutine and without a driver: entered at once
//! assert!(waiter.is_finished());
//! ```
//!
//! May import: `coroutine::{header, id, switch}` (the running chain, parking). The locks, the
//! generator and the bridge build on it.

use crate::coroutine::header::{CoHandle, Header};
use crate::coroutine::id::CoId;
use crate::coroutine::switch::{
    continue_cancel, current_header, current_root, park_current, park_outside,
};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::rc::Rc;

pub use crate::coroutine::header::Driver;

/// A wait of the running coroutine: the one type through which costack's layers suspend a
/// coroutine (see the [module documentation](self) for the contract).
///
/// It names the coroutine that waits, and — through [`root`](Park::root) and
/// [`driver`](Park::driver) — who will resume it. It is bound to that coroutine: using it from
/// another one panics.
pub struct Park {
    co: NonNull<Header>,
    _not_send: PhantomData<*const ()>,
}

impl Park {
    /// Starts a wait of the running coroutine.
    ///
    /// # Panics
    /// Outside any coroutine (there is nothing to suspend). In a coroutine that is being dropped
    /// (its forced unwind was caught), the unwind continues instead.
    #[inline]
    pub fn new() -> Park {
        match Park::try_new() {
            Some(p) => p,
            None => park_outside(),
        }
    }

    /// Like [`new`](Park::new), but `None` outside any coroutine (for waits that block the
    /// thread there instead).
    #[inline]
    pub fn try_new() -> Option<Park> {
        let co = NonNull::new(current_header() as *mut Header)?;
        // SAFETY: the running coroutine is live (its enterer keeps it so).
        continue_cancel(unsafe { co.as_ref() });
        Some(Park {
            co,
            _not_send: PhantomData,
        })
    }

    /// [`until`](Park::until) for the locks, whose wait was started (`Park::try_new`) in the
    /// very call that waits, so it is the running coroutine's: no second check.
    #[inline(always)]
    pub(crate) fn until_started_here(&self, mut ready: impl FnMut() -> bool) {
        debug_assert!(self.is_running());
        while !ready() {
            park_current();
        }
    }

    /// [`yield_until`](Park::yield_until) for a caller that has just checked that `co` is the
    /// running coroutine (the generator's exchange, on its hot path): no second check. A
    /// cancelled coroutine still never gets past it: its `yield_now` continues its unwind (when
    /// the dropper enters it again).
    ///
    /// # Safety
    /// `co` is the running coroutine.
    #[inline(always)]
    pub(crate) unsafe fn yield_until_running(co: NonNull<Header>, mut ready: impl FnMut() -> bool) {
        debug_assert!(std::ptr::eq(co.as_ptr(), current_header()));
        while !ready() {
            crate::yield_now();
        }
    }

    /// Whether the waiting coroutine is the running one. Compares addresses only: a `Park`
    /// can outlive its coroutine (it is an ordinary value that can be returned or stored), so
    /// its header is dereferenced only once it is known to be the running coroutine's, which
    /// its enterer keeps alive.
    #[inline(always)]
    fn is_running(&self) -> bool {
        std::ptr::eq(self.co.as_ptr(), current_header())
    }

    #[inline(always)]
    fn check(&self) {
        if !self.is_running() {
            not_current();
        }
    }

    /// The waiting coroutine's header, for the layers of this crate that keep unowned pointers
    /// to waiting coroutines (a lock's waiter node, which lives on that coroutine's stack).
    #[inline(always)]
    pub(crate) fn header(&self) -> NonNull<Header> {
        self.co
    }

    /// The outermost coroutine of the running chain: the one whose driver resumes the chain
    /// when this wait ends. It is the waiting coroutine itself unless that was entered by
    /// another coroutine.
    ///
    /// # Panics
    /// If called from another coroutine than the one that started the wait.
    pub fn root(&self) -> CoHandle {
        self.check();
        let root = current_root();
        // SAFETY: the root of the running chain is live (its enterer keeps it so).
        unsafe { CoHandle::from_header(NonNull::new_unchecked(root as *mut _)) }
    }

    /// The id of [`root`](Park::root), without making a handle.
    ///
    /// # Panics
    /// If called from another coroutine than the one that started the wait.
    pub fn root_id(&self) -> CoId {
        self.check();
        // SAFETY: as in `root`.
        unsafe { (*current_root()).id() }
    }

    /// The [`Driver`] of [`root`](Park::root), if it has one; `None` means the core's deferred
    /// wake-ups resume it.
    ///
    /// # Panics
    /// If called from another coroutine than the one that started the wait.
    pub fn driver(&self) -> Option<Rc<dyn Driver>> {
        self.check();
        // SAFETY: as in `root`.
        unsafe { (*current_root()).driver() }
    }

    /// A [`Waker`](std::task::Waker) that ends this wait from any thread: the root's driver's
    /// ([`Driver::waker`]). `None` if the root has no driver, or one that cannot be reached
    /// from other threads: then only code on this thread can end the wait, with
    /// [`CoHandle::wake`].
    ///
    /// # Panics
    /// If called from another coroutine than the one that started the wait.
    pub fn waker(&self) -> Option<std::task::Waker> {
        let root = self.root();
        root.driver()?.waker(&root)
    }

    /// Parks the coroutine once: it (and the chain that entered it) is suspended until it is
    /// woken or entered again, which may be spuriously. Prefer [`until`](Park::until).
    ///
    /// # Panics
    /// If called from another coroutine than the one that started the wait; continuing a
    /// forced unwind if the coroutine is dropped meanwhile.
    #[inline(always)]
    pub fn suspend(&self) {
        self.check();
        park_current();
    }

    /// Parks the coroutine until `ready()` is true: checks it first, and again after every
    /// resume, parking again while it is false. Whoever makes it true must wake the coroutine
    /// ([`CoHandle::wake`], or the driver's [`waker`](Park::waker)).
    ///
    /// # Panics
    /// As [`suspend`](Park::suspend).
    #[inline(always)]
    pub fn until(&self, ready: impl FnMut() -> bool) {
        self.check();
        // Checked once: a coroutine only ever resumes into itself.
        self.until_started_here(ready);
    }

    /// Yields plainly (back to the enterer, which decides when to continue) until `ready()` is
    /// true, re-checking it after every resume: for waits that the enterer itself ends, like a
    /// generator's `suspend`, which its `resume` ends.
    ///
    /// # Panics
    /// As [`suspend`](Park::suspend).
    #[inline(always)]
    pub fn yield_until(&self, ready: impl FnMut() -> bool) {
        self.check();
        // SAFETY: checked just above (once: a coroutine only ever resumes into itself).
        unsafe { Park::yield_until_running(self.co, ready) };
    }
}

impl Default for Park {
    /// [`Park::new`].
    fn default() -> Park {
        Park::new()
    }
}

/// The id of the outermost coroutine of the running chain (see [`Park::root`]), or `None`
/// outside any coroutine. A query: unlike [`Park::new`], it does not continue a forced unwind,
/// so it can be used in destructors.
pub fn root_id() -> Option<CoId> {
    let root = current_root();
    // SAFETY: the root of the running chain is live (its enterer keeps it so).
    (!root.is_null()).then(|| unsafe { (*root).id() })
}

impl std::fmt::Debug for Park {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Park");
        if self.is_running() {
            // SAFETY: the running coroutine is live (its enterer keeps it so).
            d.field("co", &unsafe { self.co.as_ref() }.id());
        }
        d.finish_non_exhaustive()
    }
}

#[cold]
#[inline(never)]
fn not_current() -> ! {
    panic!("costack: a Park was used from another coroutine than the one whose wait it is")
}
