//! The switch path: entering a coroutine and settling what it left when it switched back,
//! yielding and parking, the loop that runs deferred wake-ups, and which coroutine runs now.
//!
//! # Entering and switching back
//!
//! The enterer marks the coroutine RUNNING, makes it the current one and switches to its stack
//! (`switch_into`). The coroutine switches back by yielding, parking or finishing; a plain
//! yield writes no state, so the enterer's one load and compare after the switch tells the fast
//! path (a yield) from the rest, which `settle` sorts out: a finish, a panic, deferred
//! wake-ups to run (`run_wakeups`, QEMU's `co_queue_wakeup` loop), or a park that the enterer
//! must wait with (see [`park`](crate::park)).
//!
//! The running coroutine is the per-thread word `CURRENT`, set by the enterer before the switch.
//! Who sets it back to the enterer's value depends on the system ([`LEAVER_RESTORES`]): on Unix
//! the enterer, after the switch; on Windows the coroutine, from its `caller`, just before it
//! switches back.
//!
//! May import: `header` and `id` (the control block it switches), `backend` (the switch
//! itself), `local` (the running coroutine), `trace`, `asan`. Not the handles, the pool or the overflow handler.

use super::header::{CoHandle, Header};
use super::id::CoId;
use super::state::{
    FINISHED, HELD, NOT_ENTERABLE, ORPHANED, PANICKED, PARKED, RUNNING, SCHEDULED, STATE_MASK,
    SUSPENDED, WAKEUPS,
};
use crate::backend::{self, Context};
use crate::local::{local, HereWord, LocalWord};
use crate::trace::trace_event;
use std::any::Any;

use std::fmt;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::ptr::{self, NonNull};

local! {
    /// The running coroutine's header, or null when the thread runs on its own stack. A
    /// `crate::local` word: one load, and usable while other thread-locals are destroyed.
    static CURRENT: *const Header;
}

/// Whether a coroutine that switches back to a nested enterer sets `CURRENT` back to the
/// enterer's value itself (its `caller`) just before the switch, instead of the enterer after it.
///
/// On Windows `CURRENT` is a TEB TLS slot, and when the enterer wrote it right after the switch
/// came back, its read at the next enter, a few instructions later, was slow (through `gs:` or
/// the TEB's linear address alike; wine on Zen 5): written by the coroutine before its switch
/// instead, a micro-benchmark's round trip went from 9.5 to 7 ns. On Unix, where `CURRENT` is a native
/// thread-local, the enterer keeps the value in a register and one store suffices, fewer
/// instructions than the coroutine's load of `caller` and store.
///
/// The deferred wake-up loop's enters (not nested: `caller` is null, the enterer's value may
/// not be) still have the enterer write it back after the switch. Between the coroutine's write
/// and its switch only the switch itself runs on its stack (the asm's pushes, or
/// `SwitchToFiber`): a stack overflow there, were its stack that full, would be reported by the
/// overflow handler as its caller's.
const LEAVER_RESTORES: bool = cfg!(windows);

/// The running coroutine's header (null outside any coroutine).
#[inline(always)]
pub(crate) fn current_header() -> *const Header {
    CURRENT.load()
}

/// The outermost coroutine of the running chain — the one its enterer (the thread: `main`, an
/// event loop, an executor's poll, a wake-up loop) entered — or null outside any coroutine.
pub(crate) fn current_root() -> *const Header {
    let mut h = current_header();
    if h.is_null() {
        return h;
    }
    loop {
        // SAFETY: the running coroutine and its callers (the chain) are live: each enterer
        // keeps what it entered alive while it runs.
        let c = unsafe { (*h).caller() };
        if c.is_null() {
            return h;
        }
        h = c;
    }
}

/// The payload that unwinds a suspended coroutine whose last handle was dropped.
///
/// Code that catches panics inside a coroutine (`catch_unwind`) may see it; it should let it
/// continue (`resume_unwind`), as the coroutine cannot be suspended again.
struct ForcedUnwind;

/// The entry function of every coroutine, called by the backend's trampoline on the fresh
/// stack. Runs the closure and records how it ended; when it returns, the backend switches to
/// the enterer for the last time.
pub(crate) extern "C" fn coroutine_main(ctx: *mut Context) {
    // SAFETY: `ctx` is the first field of a `#[repr(C)]` Header, which stays alive while the
    // coroutine runs (the enterer holds a strong reference).
    let h = unsafe { &*(ctx as *const Header) };
    #[cfg(feature = "asan")]
    h.asan().arrived();
    // SAFETY: the slot holds the closure, written by create() and not yet taken.
    let outcome = catch_unwind(AssertUnwindSafe(|| unsafe { h.run_closure() }));
    let mut end = FINISHED | (h.state() & WAKEUPS);
    if let Err(payload) = outcome {
        if !payload.is::<ForcedUnwind>() {
            h.set_panic(payload);
            end |= PANICKED;
        }
    }
    h.set_state(end);
    trace_event!(terminate, h.id());
    #[cfg(feature = "asan")]
    h.asan().leaving_for_good();
    if LEAVER_RESTORES {
        // The backend switches to the enterer when we return (see `LEAVER_RESTORES`).
        CURRENT.store(h.caller());
    }
}

/// Switches into `h` and back once. Returns `true` when the enterer has more to do — the
/// coroutine finished, queued deferred wake-ups, or parked — and must call [`settle`]; after a
/// plain yield (the fast path) the coroutine is already marked suspended.
///
/// The yield side writes no state: the enterer marks the coroutine RUNNING before the switch and
/// SUSPENDED after it, unless the coroutine changed its state meanwhile (finished, parked, or set
/// the WAKEUPS flag), which one load and compare detects.
///
/// # Safety
/// `h` must be a live header of this thread.
///
/// `NESTED`: `h` becomes part of the running chain (its `caller` is the enterer), so a wait in
/// it is a wait of the enterer's chain. Without, it is entered as a chain of its own (the
/// deferred wake-up loop).
#[inline(always)]
unsafe fn switch_into<const NESTED: bool>(h: &Header) -> bool {
    // Tested in memory (`test byte [h.state], imm`); `cannot_enter` reads it again.
    if h.state() & NOT_ENTERABLE != 0 {
        cannot_enter(h);
    }
    // One lookup of the word for the three accesses (on Windows, a TLS index).
    let current = CURRENT.here();
    let prev = current.read();
    h.set_caller(if NESTED { prev } else { ptr::null() });
    h.set_state(RUNNING);
    current.write(h);
    trace_event!(enter, DisplayPtr(prev), h.id());
    #[cfg(feature = "asan")]
    let fake = crate::asan::entering(h.stack_bounds().0, h.stack_size());
    // SAFETY: the state check above guarantees the coroutine is not running anywhere and was
    // prepared by init_header; it only switches back through suspend/finish on its own ctx.
    unsafe { backend::resume(h.ctx()) };
    #[cfg(feature = "asan")]
    crate::asan::returned(fake);
    if !NESTED {
        current.write(prev);
    } else if !LEAVER_RESTORES {
        // `prev` is `h`'s caller, which nobody changes while `h` is on the chain: reading it
        // back from the header, rather than keeping `prev` in a register across the switch
        // (which keeps only two), leaves that register to the enterer's own values.
        current.write(h.caller());
    } // else the coroutine set it back to `prev`, its caller, as it left
    debug_assert_eq!(current.read(), prev);
    if h.state() == RUNNING {
        h.set_state(SUSPENDED);
        false
    } else {
        not_a_plain_yield();
        true
    }
}

/// Called where a switch back was not a plain yield (a finish, a park, queued wake-ups): a cold
/// call, so that the compiler lays the plain yield out as the straight path (without it, the
/// yield's SUSPENDED store was placed out of line, two taken jumps more per round trip).
#[cold]
#[inline(never)]
fn not_a_plain_yield() {
    // Something the optimiser cannot prove away, so that the call (and its hint) stays.
    std::hint::black_box(());
}

/// What a coroutine left for its enterer when it switched back (see [`switch_into`]).
struct Settled {
    finished: bool,
    wakeups: bool,
}

/// Clears the flags `h` set while it ran (but PARKED, which stays while it waits) and says
/// whether it finished and queued wake-ups.
#[inline]
fn settle(h: &Header) -> Settled {
    let s = h.state();
    let finished = s & STATE_MASK == FINISHED;
    h.set_state(if finished {
        FINISHED
    } else {
        SUSPENDED | (s & PARKED)
    });
    Settled {
        finished,
        wakeups: s & WAKEUPS != 0,
    }
}

#[cold]
#[inline(never)]
fn cannot_enter(h: &Header) -> ! {
    let state = h.state();
    let what = if state & ORPHANED != 0 {
        "the thread is exiting and its thread-locals are being destroyed, so coroutines \
         suspended on it are never resumed (they are leaked)"
    } else {
        match state & STATE_MASK {
            RUNNING => {
                "it is already entered (running, or on the chain of coroutines that entered \
                 the running one)"
            }
            FINISHED => "it has finished",
            _ if state & HELD != 0 => {
                "it is waiting, and the coroutine that entered it waits with it and enters it \
                 again when the wait ends (wake it instead)"
            }
            _ => "it is scheduled by a deferred wake-up and will be entered by that",
        }
    };
    panic!("costack: cannot enter coroutine {}: {what}", NameId(h));
}

/// Enters `h`, runs the deferred wake-ups it queued, continues its panic if it panicked, and —
/// inside a coroutine — waits with it if it parked.
///
/// # Safety
/// `h` must be a live header of this thread, kept alive by the caller during the call.
#[inline]
pub(super) unsafe fn enter_header(h: &Header) {
    // SAFETY: forwarded contract.
    if unsafe { switch_into::<true>(h) } && h.state() != FINISHED {
        // Not a plain yield, nor a plain return (no panic, no wake-ups queued).
        // SAFETY: forwarded contract.
        unsafe { after_enter_slow(h) }
    }
}

/// The enterer's work after a coroutine finished, queued wake-ups or parked: run the wake-ups,
/// continue the coroutine's panic (or else a woken one's), if any; and if it parked while the
/// enterer is itself a coroutine, wait with it (the contract in [`park`](crate::park): a wait
/// suspends the whole chain up to whoever resumes its outermost coroutine), entering it again
/// each time the enterer is resumed, until it yields plainly or finishes.
///
/// # Safety
/// `h` must be a live header of this thread, kept alive by the caller during the call.
#[inline(never)]
unsafe fn after_enter_slow(h: &Header) {
    loop {
        let settled = settle(h);
        let mut pending_panic = None;
        if settled.wakeups {
            // SAFETY: `h` is live; its queue holds strong references.
            pending_panic = unsafe { run_wakeups(h) };
        }
        if settled.finished {
            if let Some(payload) = h.take_panic() {
                drop(pending_panic);
                resume_unwind(payload);
            }
        }
        if let Some(payload) = pending_panic {
            resume_unwind(payload);
        }
        // Re-read: the wake-ups may have entered `h` again meanwhile.
        let parked = h.state() & (STATE_MASK | PARKED | NOT_ENTERABLE) == SUSPENDED | PARKED;
        if !parked || current_header().is_null() {
            return; // our caller sees a yield (or the end)
        }
        // SAFETY: forwarded contract; we run inside a coroutine (checked above).
        if !unsafe { wait_with(h) } {
            return;
        }
        // SAFETY: forwarded contract.
        if !unsafe { switch_into::<true>(h) } || h.state() == FINISHED {
            return;
        }
    }
}

/// The running coroutine, which entered `h` and found it parked, waits with it: it marks `h`
/// HELD (so that nobody else enters it, and so that a wake of `h` is routed to us through
/// `caller`), parks itself, and when it is resumed says whether `h` is to be entered again.
///
/// # Safety
/// `h` is a live, suspended and parked header of this thread that the running coroutine
/// entered (its `caller`), and keeps alive during the call.
#[cold]
#[inline(never)]
unsafe fn wait_with(h: &Header) -> bool {
    debug_assert_eq!(h.caller(), current_header());
    /// Lets go of `h` however the wait ends (also when our coroutine is unwound meanwhile).
    struct Unhold<'a>(&'a Header);
    impl Drop for Unhold<'_> {
        fn drop(&mut self) {
            self.0.set_state(self.0.state() & !HELD);
        }
    }
    h.set_state(h.state() | HELD);
    let unhold = Unhold(h);
    park_current();
    drop(unhold);
    // HELD kept everyone else out, so `h` is still suspended where it parked, unless the thread
    // began to exit meanwhile.
    h.state() & (STATE_MASK | ORPHANED) == SUSPENDED
}

/// Parks the running coroutine: like [`yield_now`], but marked as a wait of the resume contract,
/// so that its enterer waits with it (if the enterer is a coroutine) or learns that it waits
/// for a wake-up rather than yielded to be entered again soon (a driver).
///
/// # Panics
/// Outside any coroutine; and, continuing its forced unwind, in a coroutine being dropped.
#[inline(always)]
pub(crate) fn park_current() {
    suspend_running::<true>();
}

/// The one way the running coroutine switches back to its enterer: a plain yield
/// ([`yield_now`]) or, with `PARK`, a park ([`park_current`]), which differ only in the flag
/// the enterer finds (see [`switch_into`]).
///
/// A coroutine being dropped never returns from here: it continues its forced unwind when it
/// is entered again. It is not checked for before the switch (one test less on the fast path):
/// a coroutine being dropped that suspends (its code caught the forced unwind and waits again)
/// switches back to its dropper, the only enterer it can have, which enters it again until it
/// ends (see [`unwind_suspended`]).
#[inline(always)]
fn suspend_running<const PARK: bool>() {
    let current = CURRENT.here();
    let cur = current.read();
    if cur.is_null() {
        if PARK {
            park_outside();
        }
        yield_outside();
    }
    // SAFETY: CURRENT only holds the header of the running coroutine, which its enterer keeps
    // alive while it runs.
    let h = unsafe { &*cur };
    if PARK {
        // The enterer reads the flag after the switch (see `switch_into`).
        h.set_state(h.state() | PARKED);
    }
    // A plain yield changes no state: the enterer marks us suspended when the switch returns.
    trace_event!(yield, h.id(), DisplayPtr(h.caller()));
    #[cfg(feature = "asan")]
    h.asan().leaving();
    if LEAVER_RESTORES {
        // Our enterer runs next (see `LEAVER_RESTORES`); nothing reads the word before it does.
        current.write(h.caller());
    }
    // SAFETY: we run on `h`'s stack (it was CURRENT) and were entered by a resume on its ctx.
    let back = unsafe { backend::suspend(h.ctx()) };
    // SAFETY: `suspend` returns the context it was given, the first field of our `#[repr(C)]`
    // header, which our enterer keeps alive while we run. Using it, rather than `h`, lets the
    // compiler forget `h` across the switch (on x86_64 it comes back in a register).
    let h = unsafe { &*(back as *const Header) };
    #[cfg(feature = "asan")]
    h.asan().arrived();
    // Entered again by its dropper: go on unwinding (also when it was being dropped already
    // before this suspension, see above).
    if h.is_cancelled() {
        forced_unwind();
    }
}

#[cold]
#[inline(never)]
pub(crate) fn park_outside() -> ! {
    panic!("costack: a wait was started outside of any coroutine: there is nothing to suspend")
}

/// Continues the forced unwind of `h`, the running coroutine, if it is being dropped (its code
/// caught the unwind with `catch_unwind` and went on to wait again); does nothing otherwise.
#[inline(always)]
pub(crate) fn continue_cancel(h: &Header) {
    if h.is_cancelled() {
        forced_unwind();
    }
}

/// A FIFO of scheduled coroutines, linked through `wake_next`; each entry owns a strong ref.
struct WakeList {
    head: *const Header,
    tail: *const Header,
}

impl WakeList {
    /// Takes `h`'s queue of deferred wake-ups.
    fn take(h: &Header) -> WakeList {
        let (head, tail) = h.take_wake_queue();
        WakeList { head, tail }
    }

    /// Puts `front` before the entries of `self`.
    fn prepend(&mut self, front: WakeList) {
        if front.head.is_null() {
            return;
        }
        // SAFETY: list entries are live headers (each holds a strong ref).
        unsafe { (*front.tail).set_wake_next(self.head) };
        if self.head.is_null() {
            self.tail = front.tail;
        }
        self.head = front.head;
        std::mem::forget(front);
    }

    /// Takes the first entry with its strong reference.
    fn pop(&mut self) -> Option<CoHandle> {
        let h = NonNull::new(self.head as *mut Header)?;
        // SAFETY: list entries are live headers.
        let hr = unsafe { h.as_ref() };
        self.head = hr.wake_next();
        hr.set_wake_next(ptr::null());
        if self.head.is_null() {
            self.tail = ptr::null();
        }
        hr.set_state(hr.state() & !SCHEDULED);
        // SAFETY: the entry's strong reference moves into the handle.
        Some(unsafe { CoHandle::adopt(h) })
    }
}

impl Drop for WakeList {
    /// Only reached while unwinding from a destructor that panicked in the wake-up loop: the
    /// remaining wake-ups are dropped (their coroutines stay suspended, or are freed).
    fn drop(&mut self) {
        while let Some(co) = self.pop() {
            drop(co);
        }
    }
}

/// Enters, in order, every coroutine that `first` woke, and every one those woke in turn
/// (QEMU's `co_queue_wakeup` loop). Returns the first panic of a woken coroutine, if any.
///
/// # Safety
/// `first` must be a live header of this thread.
//
// Inlined into `after_enter_slow`, its one hot caller, which already saves every register the
// loop's switches clobber: called out of line, a lock's hand-off paid a second prologue and
// epilogue (17 instructions of 283 per hand-off).
#[inline(always)]
unsafe fn run_wakeups(first: &Header) -> Option<Box<dyn Any + Send>> {
    let mut pending = WakeList::take(first);
    let mut first_panic = None;
    while let Some(co) = pending.pop() {
        let h = co.header();
        if h.state() & NOT_ENTERABLE != 0 {
            continue; // it woke itself and then finished
        }
        // SAFETY: `co` keeps `h` alive; it is not scheduled any more and, having been
        // suspended when it was woken, is not on the chain. It is entered as a chain of its
        // own (no `caller`): a wait in it is its own, not ours.
        if unsafe { switch_into::<false>(h) } {
            let settled = settle(h);
            if settled.wakeups {
                pending.prepend(WakeList::take(h));
            }
            if settled.finished {
                if let Some(p) = h.take_panic() {
                    first_panic.get_or_insert(p);
                }
            }
        }
        drop(co);
    }
    first_panic
}

/// Suspends the running coroutine and returns to whoever entered it. Returns when the coroutine
/// is entered again.
///
/// # Panics
/// Outside any coroutine. Also (with a private payload that unwinds the coroutine) when the
/// coroutine is resumed only to be dropped: see [`Coroutine`](crate::Coroutine).
///
/// ```
/// use costack::{yield_now, Coroutine, Status};
///
/// fn deep(n: u32) -> u32 {
///     if n == 0 {
///         yield_now(); // from any depth
///         return 0;
///     }
///     1 + deep(n - 1)
/// }
/// let co = Coroutine::new(|| deep(100));
/// assert_eq!(co.enter(), Status::Yielded);
/// assert_eq!(co.enter(), Status::Finished(100));
/// ```
#[inline]
pub fn yield_now() {
    suspend_running::<false>();
}

#[cold]
#[inline(never)]
fn yield_outside() -> ! {
    panic!("costack::yield_now() called outside of any coroutine: there is nothing to yield to")
}

#[cold]
#[inline(never)]
fn forced_unwind() -> ! {
    resume_unwind(Box::new(ForcedUnwind))
}

/// Whether the caller runs inside a coroutine.
#[inline]
pub fn in_coroutine() -> bool {
    !current_header().is_null()
}

/// A handle to the running coroutine, or `None` outside any coroutine.
///
/// The handle can be stored and used later, by other code on this thread, to enter the
/// coroutine again after it yields: this is how locks and event loops resume coroutines.
///
/// ```
/// use costack::{current, Coroutine};
///
/// let co = Coroutine::new(|| current().unwrap().id());
/// let id = co.id();
/// assert_eq!(co.enter().finished(), Some(id));
/// assert!(current().is_none());
/// ```
#[inline]
pub fn current() -> Option<CoHandle> {
    let h = NonNull::new(current_header() as *mut Header)?;
    // SAFETY: CURRENT is a live header; the new handle takes a strong reference.
    Some(unsafe { CoHandle::from_header(h) })
}

/// The id of the running coroutine, or `None` outside any coroutine. Cheaper than
/// `current().map(|c| c.id())`: no handle is made.
#[inline]
pub fn current_id() -> Option<CoId> {
    let h = current_header();
    // SAFETY: CURRENT is null or the live running coroutine.
    (!h.is_null()).then(|| unsafe { (*h).id() })
}

/// Unwinds a suspended coroutine: enters it with `cancel` set, so that its `yield_now` starts a
/// forced unwind that runs every destructor on its stack. Returns a panic that escaped from a
/// destructor (or was raised instead of the unwind), if the caller may continue it.
///
/// Code that catches the forced unwind and suspends again switches back here (the suspension
/// does not check the flag before its switch, see [`suspend_running`]); it is entered again,
/// which continues the unwind from that suspension, until it ends.
///
/// # Safety
/// `h` is a live, suspended header of this thread.
#[cold]
#[inline(never)]
pub(super) unsafe fn unwind_suspended(h: &Header) -> Option<Box<dyn Any + Send>> {
    h.set_cancelled();
    let mut woken_panic = None;
    loop {
        // SAFETY: forwarded contract (it is suspended: on the first pass by the contract, later
        // as checked below); our reference keeps it alive.
        if unsafe { switch_into::<true>(h) } {
            let settled = settle(h);
            if settled.wakeups {
                // SAFETY: live header.
                let p = unsafe { run_wakeups(h) };
                if woken_panic.is_none() {
                    woken_panic = p;
                }
            }
        }
        // Finished: by this enter, or by one of the wake-ups just run (a handle it made while
        // unwinding, woken there, entered it: its panic, if any, is in `woken_panic`).
        let state = h.state();
        if state & STATE_MASK == FINISHED {
            break;
        }
        // It suspended again while unwinding: enter it again, unless the wake-ups just run
        // woke it through such a handle and it waits in a queue. The queue's strong reference
        // enters it later, when it goes on unwinding; our caller sees that reference and
        // leaves the freeing to it.
        if state & SCHEDULED != 0 {
            return woken_panic.filter(|_| !std::thread::panicking());
        }
        if state & NOT_ENTERABLE != 0 {
            abort_with("a coroutine being dropped suspended itself again while unwinding");
        }
    }
    let p = h.take_panic().or(woken_panic);
    // Continuing a panic from inside another unwind would abort the process; drop it then.
    p.filter(|_| !std::thread::panicking())
}

#[cold]
pub(super) fn abort_with(msg: &str) -> ! {
    eprintln!("costack: fatal: {msg}");
    std::process::abort()
}

/// Formats a header pointer as its coroutine's id, or `main` for null.
#[cfg_attr(not(feature = "trace"), allow(dead_code))]
struct DisplayPtr(*const Header);

impl fmt::Display for DisplayPtr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_null() {
            f.write_str("main")
        } else {
            // SAFETY: non-null header pointers on the chain are live.
            fmt::Display::fmt(unsafe { &(*self.0).id() }, f)
        }
    }
}

/// Formats a coroutine as `co1.2 "name"`.
pub(super) struct NameId<'a>(pub(super) &'a Header);

impl fmt::Display for NameId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.name() {
            Some(n) => write!(f, "{} \"{}\"", self.0.id(), n),
            None => write!(f, "{}", self.0.id()),
        }
    }
}
