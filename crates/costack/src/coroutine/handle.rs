//! The handles: what [`CoHandle`] does — enter, wake, the state queries, the driver — and what
//! happens when the last handle to a coroutine goes (it is freed, after an unwind if it was
//! suspended, and its stack goes back to the pool), with the thread-exit policy that turns
//! that unwind into a leak once the thread's thread-locals are being destroyed.
//!
//! May import: `header`, `id`, `switch` and `wake` below it, and the `pool`, which takes the
//! stack of a freed coroutine. The typed handle and the builder build on this file.

use super::header::{CoHandle, Driver, Header};
use super::id::CoId;
use super::state::{
    FINISHED, HELD, NOT_ENTERABLE, ORPHANED, PANICKED, PARKED, READY, RUNNING, SCHEDULED,
    STATE_MASK, SUSPENDED,
};
use super::switch::{abort_with, enter_header, unwind_suspended, NameId};
use super::wake::wake_routed;
use crate::local::{local, LocalWord};
use crate::pool;
use std::fmt;
use std::panic::resume_unwind;
use std::ptr::NonNull;
use std::rc::Rc;

/// What happened when a coroutine was entered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a coroutine that yielded is not finished"]
pub enum Status<R> {
    /// The coroutine called [`yield_now`](crate::yield_now); enter it again to continue it.
    Yielded,
    /// The coroutine's closure returned this value.
    Finished(R),
}

impl<R> Status<R> {
    /// Whether the coroutine finished.
    pub fn is_finished(&self) -> bool {
        matches!(self, Status::Finished(_))
    }

    /// The return value, if the coroutine finished.
    pub fn finished(self) -> Option<R> {
        match self {
            Status::Finished(r) => Some(r),
            Status::Yielded => None,
        }
    }
}

impl CoHandle {
    /// Enters the coroutine: it runs until it yields or finishes. Its return value, if it
    /// finished, stays with the coroutine
    /// ([`Coroutine::take_result`](crate::Coroutine::take_result)).
    ///
    /// # Panics
    /// If the coroutine is already entered (running or on the chain), finished, or scheduled by
    /// a deferred wake-up; and, continuing its panic, if the coroutine panics.
    #[inline]
    pub fn enter(&self) -> Status<()> {
        // SAFETY: `self` keeps the header alive for the whole call.
        unsafe { enter_header(self.header()) };
        if self.is_finished() {
            Status::Finished(())
        } else {
            Status::Yielded
        }
    }

    /// Wakes the coroutine, QEMU style: makes sure it is entered again soon by whoever is
    /// responsible for it (the resume contract, see [`park`](crate::park)).
    ///
    /// * A coroutine that has a [`Driver`] (an event loop's task, a coroutine hosted by an
    ///   executor) is handed to that driver, which enters it when it next can.
    /// * A coroutine that waits inside a coroutine that entered it (a generator reading a socket
    ///   inside a task) is entered again by that enterer: the wake goes up to the outermost
    ///   coroutine of that chain and is delivered there.
    /// * Otherwise, inside a coroutine, the target is queued and entered right after the current
    ///   coroutine yields or terminates (FIFO, without deepening the native stack); outside any
    ///   coroutine, it is entered now.
    ///
    /// A wake of a coroutine whose chain is already running or queued does nothing more.
    ///
    /// # Panics
    /// If the target is already scheduled, entered, or finished, or if its thread is exiting.
    ///
    /// ```
    /// use costack::{current, yield_now, Coroutine};
    /// use std::{cell::RefCell, rc::Rc};
    ///
    /// let log = Rc::new(RefCell::new(Vec::new()));
    /// let (l1, l2) = (log.clone(), log.clone());
    /// let sleeper = Coroutine::new(move || {
    ///     l1.borrow_mut().push("sleeper waits");
    ///     yield_now();
    ///     l1.borrow_mut().push("sleeper woken");
    /// });
    /// let _ = sleeper.enter();
    /// let s = sleeper.handle();
    /// let waker = Coroutine::new(move || {
    ///     s.wake(); // runs after this coroutine finishes
    ///     l2.borrow_mut().push("waker done");
    /// });
    /// let _ = waker.enter();
    /// assert_eq!(*log.borrow(), ["sleeper waits", "waker done", "sleeper woken"]);
    /// ```
    pub fn wake(&self) {
        let hr = self.header();
        let state = hr.state();
        if state & (2 | SCHEDULED | ORPHANED) != 0 {
            cannot_wake(hr, state);
        }
        // SAFETY: `self` keeps the header alive.
        if let Some(co) = unsafe { wake_routed(self.header_ptr()) } {
            let _ = co.enter();
        }
    }

    /// Whether the coroutine is suspended in a wait of the resume contract ([`park`]) rather
    /// than in a plain [`yield_now`](crate::yield_now): something will wake it when what it
    /// waits for happens. Drivers use it to tell "enter me again soon" (a plain yield) from
    /// "leave me until I am woken" (a wait).
    ///
    /// [`park`]: crate::park
    #[inline]
    pub fn is_parked(&self) -> bool {
        self.header().state() & (STATE_MASK | PARKED) == SUSPENDED | PARKED
    }

    /// Whether the coroutine waits inside the coroutine that entered it, which waits with it and
    /// alone enters it again (see [`park`](crate::park)). Entering it from anywhere else panics;
    /// waking it reaches the outermost coroutine of that chain.
    #[inline]
    pub fn is_held(&self) -> bool {
        self.header().state() & HELD != 0
    }

    /// Whether [`enter`](Self::enter) would run the coroutine now rather than panic: it is
    /// ready or suspended, and not scheduled, held, or orphaned by a thread exit.
    #[inline]
    pub fn can_enter(&self) -> bool {
        self.header().state() & NOT_ENTERABLE == 0
    }

    /// Names the [`Driver`] that resumes this coroutine when a wait of a chain it heads ends
    /// (`None`: the core's deferred wake-ups). Event loops and executors set it on the
    /// coroutines they own; see [`park`](crate::park).
    pub fn set_driver(&self, driver: Option<Rc<dyn Driver>>) {
        // The old driver is dropped after the slot is written.
        let old = self.header().replace_driver(driver);
        drop(old);
    }

    /// The coroutine's [`Driver`], if one was set.
    pub fn driver(&self) -> Option<Rc<dyn Driver>> {
        self.header().driver()
    }

    /// Whether the coroutine is entered now: running, or on the chain of coroutines that
    /// entered the running one.
    #[inline]
    pub fn is_entered(&self) -> bool {
        self.header().state() & STATE_MASK == RUNNING
    }

    /// Whether the coroutine's closure has returned or panicked.
    #[inline]
    pub fn is_finished(&self) -> bool {
        self.header().state() & STATE_MASK == FINISHED
    }

    /// Whether the coroutine has run and is waiting to be entered again.
    pub fn is_suspended(&self) -> bool {
        self.header().state() & STATE_MASK == SUSPENDED
    }

    /// Whether a deferred wake-up has queued the coroutine.
    pub fn is_scheduled(&self) -> bool {
        self.header().state() & SCHEDULED != 0
    }

    /// The coroutine's id.
    pub fn id(&self) -> CoId {
        self.header().id()
    }

    /// The coroutine's name, if it was given one ([`Builder::name`](crate::Builder::name)).
    pub fn name(&self) -> Option<&str> {
        self.header().name()
    }

    /// The usable size of the coroutine's stack in bytes.
    pub fn stack_size(&self) -> usize {
        self.header().stack_size()
    }

    /// The high-water mark of the coroutine's stack use in bytes, counted from the top of the
    /// stack (its control block and closure included). Only with the `stack-usage` feature,
    /// which paints new stacks so that the mark can be found; `None` without it, and on the
    /// `fibers` backend (Windows allocates a fiber's stack).
    pub fn stack_used(&self) -> Option<usize> {
        self.header().stack_used()
    }

    /// The bounds `(bottom, top)` of the coroutine's usable stack; for debugging tools.
    pub fn stack_bounds(&self) -> (*const u8, *const u8) {
        let (bottom, top) = self.header().stack_bounds();
        (bottom, top)
    }
}

#[cold]
#[inline(never)]
fn cannot_wake(h: &Header, state: u8) -> ! {
    let what = if state & ORPHANED != 0 {
        "its thread is exiting (coroutines suspended on it are never resumed)"
    } else if state & SCHEDULED != 0 {
        "it is already scheduled"
    } else if state & STATE_MASK == RUNNING {
        "it is entered (running, or on the chain)"
    } else {
        "it has finished"
    };
    panic!("costack: cannot wake coroutine {}: {what}", NameId(h));
}

impl Clone for CoHandle {
    #[inline]
    fn clone(&self) -> Self {
        // SAFETY: `self` keeps the header live; the clone takes its own reference.
        unsafe { CoHandle::from_header(self.header_ptr()) }
    }
}

impl PartialEq for CoHandle {
    fn eq(&self, other: &Self) -> bool {
        self.header_ptr() == other.header_ptr()
    }
}

impl Eq for CoHandle {}

impl std::hash::Hash for CoHandle {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.header_ptr().hash(state)
    }
}

impl fmt::Debug for CoHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = self.header();
        let state = match h.state() & STATE_MASK {
            READY => "ready",
            SUSPENDED => "suspended",
            RUNNING => "entered",
            _ => "finished",
        };
        f.debug_struct("CoHandle")
            .field("id", &h.id())
            .field("name", &h.name())
            .field("state", &state)
            .finish()
    }
}

impl Drop for CoHandle {
    #[inline(always)]
    fn drop(&mut self) {
        if self.header().decref() == 0 {
            // SAFETY: that was the last reference.
            unsafe { drop_last(self.header_ptr()) };
        }
    }
}

/// The drop of a coroutine's last handle: frees it at once if it is settled (finished or never
/// entered, the common case), else [`release`] unwinds or leaks it first. Out of line, so that
/// dropping one of several handles stays a decrement and a test wherever it is inlined.
///
/// # Safety
/// `h` is live and has no references left.
#[inline(never)]
unsafe fn drop_last(h: NonNull<Header>) {
    // SAFETY: per the contract, the header is live.
    let state = unsafe { h.as_ref() }.state();
    if state == FINISHED || state == READY {
        // SAFETY: no references left, and the coroutine is settled.
        unsafe { free(h) };
    } else {
        // SAFETY: forwarded contract.
        unsafe { release(h) };
    }
}

/// Frees a coroutine whose last reference is gone: unwinds it if it is suspended, drops its
/// closure or unclaimed result, and gives its stack back to the pool.
///
/// # Safety
/// `h` is live and has no references left.
#[inline(never)]
unsafe fn release(h: NonNull<Header>) {
    // SAFETY: per the contract, the header is live.
    let hr = unsafe { h.as_ref() };
    let mut panic = None;
    let state = hr.state();
    match state {
        // Settled: a finished or never-entered coroutine carries no flags.
        FINISHED | READY => {}
        _ if state & STATE_MASK == SUSPENDED && (state & ORPHANED != 0 || thread_exiting()) => {
            // SAFETY: forwarded contract.
            unsafe { leak_suspended(h) };
            return;
        }
        _ if state & STATE_MASK == SUSPENDED => {
            // The unwinding coroutine may create handles to itself (`current()`); hold a
            // reference of our own so that they do not free it under us.
            hr.set_refs(1);
            // SAFETY: live, suspended header of this thread.
            panic = unsafe { unwind_suspended(hr) };
            if hr.decref() != 0 {
                // It stored a handle to itself while unwinding; that handle frees it later.
                if let Some(p) = panic {
                    resume_unwind(p);
                }
                return;
            }
        }
        _ => abort_with("a running coroutine lost its last handle"),
    }
    // SAFETY: settled (finished or never entered), no references left.
    unsafe { free(h) };
    if let Some(p) = panic {
        resume_unwind(p);
    }
}

/// Frees a settled coroutine whose last reference is gone: drops its closure or unclaimed
/// result and gives its stack back to the pool. Inlined into [`drop_last`], where a finished
/// or never-entered coroutine, the common case, goes straight here; [`release`] (out of line)
/// first unwinds a suspended one.
///
/// # Safety
/// `h` is live, finished or never entered, and has no references left.
#[inline(always)]
unsafe fn free(h: NonNull<Header>) {
    // SAFETY: per the contract, the header is live.
    let hr = unsafe { h.as_ref() };
    hr.unlink_live();
    #[cfg(costack_stack_usage)]
    pool::note_stack_used(hr.stack_ref().used());
    debug_assert!(hr.state() & PANICKED == 0, "an unclaimed panic payload");
    // The driver (tasks, hosted coroutines) is taken out of its slot and dropped after the
    // stack went back to the pool.
    let driver = hr.take_driver();

    /// Hands the stack to the pool when dropped, also if a destructor below panics.
    struct ToPool(NonNull<Header>);
    impl Drop for ToPool {
        #[inline]
        fn drop(&mut self) {
            // SAFETY: the coroutine is freed: nothing refers to its control block any more.
            unsafe { pool::put(self.0) }
        }
    }
    let _to_pool = ToPool(h);
    // SAFETY: nothing refers to the header any more; the closure or result in the slot lives
    // on the stack, so it is dropped before the stack goes to the pool (`_to_pool`).
    unsafe { hr.drop_contents() };
    drop(_to_pool);
    drop(driver);
}

/// Gives up a suspended coroutine whose thread is exiting: it is neither resumed nor unwound,
/// and its stack stays mapped (frames on it may still be linked into wait lists elsewhere).
///
/// # Safety
/// `h` is live, suspended, and has no references left.
#[cold]
#[inline(never)]
unsafe fn leak_suspended(h: NonNull<Header>) {
    // SAFETY: live per the contract.
    let hr = unsafe { h.as_ref() };
    hr.set_state(SUSPENDED | ORPHANED);
    hr.unlink_live();
}

local! {
    /// Set when the thread's thread-locals begin to be destroyed (see [`ExitGuard`]). A
    /// `crate::local` word: readable until the thread is gone.
    static EXITING: bool;
}

#[cfg(not(windows))]
thread_local! {
    /// Sets `EXITING` when destroyed; registered with the thread's first coroutine.
    static EXIT_GUARD: ExitGuard = const { ExitGuard };
}

/// Arms the thread-exit policy (see [`ExitGuard`]); called before the thread's first coroutine
/// is created. A thread already tearing down its thread-locals has no guard left to arm.
#[cfg(not(windows))]
pub(super) fn arm_exit_guard() {
    let _ = EXIT_GUARD.try_with(|_| ());
}

/// Arms the thread-exit policy: on Windows the policy is a TLS callback (see
/// [`ON_THREAD_EXIT`]), linked in here.
#[cfg(windows)]
pub(super) fn arm_exit_guard() {
    // SAFETY: reading the callback pointer keeps its static (and its section) in the image;
    // `_tls_used` is the TLS directory the loader finds the callbacks through.
    unsafe {
        std::ptr::from_ref(&ON_THREAD_EXIT).read_volatile();
        std::ptr::from_ref(&TLS_USED).read_volatile();
    }
}

/// Whether this thread's costack state is being torn down (it is exiting).
#[inline]
fn thread_exiting() -> bool {
    EXITING.load()
}

/// Marks the thread as exiting and every suspended coroutine of it as orphaned (see
/// [`ExitGuard`]).
fn orphan_suspended() {
    EXITING.store(true);
    let mut p = Header::first_live();
    while !p.is_null() {
        // SAFETY: the live list holds live headers of this thread; nothing runs while we walk
        // it.
        let h = unsafe { &*p };
        if h.state() & STATE_MASK == SUSPENDED {
            h.set_state(h.state() | ORPHANED);
        }
        p = h.next_live();
    }
}

#[cfg(windows)]
extern "C" {
    /// The image's TLS directory (the C runtime defines it).
    #[link_name = "_tls_used"]
    static TLS_USED: u8;
}

/// Windows' thread-exit policy. std runs thread-local destructors from a TLS callback in
/// section `.CRT$XLB`, in the order their keys were created *in the process* (the GNU target
/// has no native thread-locals), so a destructor cannot be relied on to run before those of the
/// thread-locals a coroutine borrows. The loader calls TLS callbacks in the order of their
/// section names, so this one, in `.CRT$XLAB`, runs before std's, before any thread-local of the
/// exiting thread is destroyed: it applies [`ExitGuard`]'s policy to all of them at once.
#[cfg(windows)]
#[used]
#[unsafe(link_section = ".CRT$XLAB")]
static ON_THREAD_EXIT: unsafe extern "system" fn(
    *mut std::ffi::c_void,
    u32,
    *mut std::ffi::c_void,
) = on_thread_exit;

#[cfg(windows)]
unsafe extern "system" fn on_thread_exit(
    _: *mut std::ffi::c_void,
    reason: u32,
    _: *mut std::ffi::c_void,
) {
    use windows_sys::Win32::System::SystemServices::{DLL_PROCESS_DETACH, DLL_THREAD_DETACH};
    if reason == DLL_THREAD_DETACH || reason == DLL_PROCESS_DETACH {
        orphan_suspended();
    }
}

/// The thread-exit policy. Thread-locals are destroyed one by one when a thread exits, in the
/// reverse order of their first use. A coroutine suspended inside `A.with(|a| ..)` holds a
/// reference to `A`'s value; if a later destructor — of a thread-local `B` that owns the
/// coroutine, say — unwound or resumed it after `A` was destroyed, the coroutine would read a
/// freed value. So once this guard is destroyed, coroutines of the thread are never resumed or
/// unwound again: every suspended one is marked ORPHANED (entering it panics, dropping its last
/// handle leaks it, stack and all), and so is any that is dropped suspended afterwards.
///
/// The guard is registered when the thread creates its first coroutine, so it is destroyed
/// before every thread-local first used before that moment, and after those first used later.
/// (Windows: see [`ON_THREAD_EXIT`], which runs before every thread-local destructor.)
#[cfg(not(windows))]
struct ExitGuard;

#[cfg(not(windows))]
impl Drop for ExitGuard {
    fn drop(&mut self) {
        orphan_suspended();
    }
}
