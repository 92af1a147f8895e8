//! Routing a wake-up: the resume contract's "this wait has ended", delivered to whoever resumes
//! the waiting chain — its driver, the core's deferred wake-up queue of the running coroutine,
//! or (outside any coroutine) the caller, who enters it at once.
//!
//! May import: `header` (the control blocks and their handles) and `switch` (which coroutine
//! runs now). The handles' `wake` and the locks' waiter nodes build on it.

use super::header::{CoHandle, Header};
use super::state::{HELD, NOT_ENTERABLE, SCHEDULED, WAKEUPS};
use super::switch::current_header;
use std::ptr::NonNull;

/// The contract's wake-up of the coroutine `h`: delivers it to whoever resumes `h`. A HELD
/// coroutine is entered again by its enterer, which waits with it, so the wake goes up the chain
/// of waiting enterers to its outermost coroutine (the root). Nothing is done if the root is
/// running or on the chain (it re-checks its condition before it suspends), already scheduled,
/// finished or orphaned. Otherwise the root's driver, if it has one, is asked to enter it; without
/// one the core does: queued behind the running coroutine (a deferred wake-up), or — outside any
/// coroutine — returned, for the caller to enter now (and to decide what to do with a panic).
///
/// # Safety
/// `h` must be a live coroutine of this thread.
#[inline]
pub(crate) unsafe fn wake_routed(h: NonNull<Header>) -> Option<CoHandle> {
    let mut t = h;
    // SAFETY: a HELD coroutine's `caller` waits in `wait_with`, which keeps it live and clears
    // HELD before it stops waiting; the first one is live per the contract.
    let mut s = unsafe { t.as_ref() }.state();
    while s & HELD != 0 {
        // SAFETY: as above.
        t = unsafe { NonNull::new_unchecked(t.as_ref().caller() as *mut Header) };
        // SAFETY: as above.
        s = unsafe { t.as_ref() }.state();
    }
    if s & NOT_ENTERABLE != 0 {
        return None;
    }
    let cur = current_header();
    // SAFETY: live (above).
    if cur.is_null() || unsafe { t.as_ref() }.has_driver() {
        // SAFETY: live (above).
        return unsafe { wake_driven_or_outside(t) };
    }
    // SAFETY: `cur` is the running coroutine; `t` is live and idle (checked above), and nothing
    // ran since.
    unsafe { enqueue_wakeup(&*cur, t) };
    None
}

/// [`wake_routed`] of an idle root `t` that has a driver, or is woken outside any coroutine:
/// out of line, so that the common case, a deferred wake-up queued behind the running
/// coroutine, keeps few registers (a lock's hand-off inlines it).
///
/// # Safety
/// `t` is a live, idle coroutine of this thread (the root of its chain).
#[cold]
#[inline(never)]
unsafe fn wake_driven_or_outside(t: NonNull<Header>) -> Option<CoHandle> {
    // SAFETY: live per the contract. The driver is cloned out of its slot at once, so that
    // its `wake` may replace it (`set_driver`) without invalidating a reference of ours.
    if let Some(d) = unsafe { t.as_ref() }.driver() {
        // SAFETY: live; the handle takes its own reference.
        d.wake(&unsafe { CoHandle::from_header(t) });
        return None;
    }
    // No driver, so we run outside any coroutine: the caller enters it now.
    debug_assert!(current_header().is_null());
    // SAFETY: live; the handle takes its own reference.
    Some(unsafe { CoHandle::from_header(t) })
}

/// Appends the idle coroutine `h` to `cur`'s deferred wake-up queue, which takes a strong
/// reference to it.
///
/// # Safety
/// `cur` is the running coroutine; `h` is live, suspended or never entered, and not scheduled.
#[inline]
unsafe fn enqueue_wakeup(cur: &Header, h: NonNull<Header>) {
    // SAFETY: live per the contract.
    let hr = unsafe { h.as_ref() };
    hr.set_state(hr.state() | SCHEDULED);
    // The queue entry owns this new reference.
    hr.incref();
    cur.set_state(cur.state() | WAKEUPS);
    cur.append_wakeup(hr);
}
