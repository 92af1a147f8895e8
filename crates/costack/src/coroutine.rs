//! Coroutines: create, enter, yield.
//!
//! # The model
//!
//! A coroutine is a closure with a stack of its own. [`Coroutine::new`] prepares one without
//! running it. [`Coroutine::enter`] switches to its stack and runs it until it either calls
//! [`yield_now`] — from any call depth — or returns; then `enter` returns to the caller and says
//! which happened. Entering it again continues right after the `yield_now`. This is QEMU's
//! coroutine model: the code inside reads as ordinary synchronous code, and whoever entered it
//! (an event loop, a lock, another coroutine) decides when it continues.
//!
//! The coroutines that are running form a chain: `main` entered A, A entered B, and so on.
//! Only the last one runs; the others are *entered* but wait for the one they entered. A yield
//! returns to the previous link of the chain. Entering a coroutine that is already on the chain
//! would make the chain a loop, so it panics; so does entering a finished one.
//!
//! # Handles and lifetime
//!
//! [`Coroutine<R>`] is the typed handle that [`Coroutine::new`] returns; [`CoHandle`] is an
//! untyped, cloneable handle ([`current`] gives one for the running coroutine) that can be stored
//! — in a wait queue, an I/O request — and used later to enter the coroutine again. Handles are
//! reference counted. When the last one goes:
//!
//! * a coroutine that never ran just drops its closure;
//! * a finished one drops its unclaimed result;
//! * a suspended one is *unwound*: it is entered once more, its `yield_now` panics with a private
//!   payload, and the unwinding runs every destructor on its stack before the stack is reused.
//!   A destructor must not wait (yield) during that unwinding: the coroutine cannot be suspended
//!   again, so such a yield panics, and a panic inside a destructor that runs during unwinding
//!   aborts the process. Use non-waiting calls (`try_lock` and the like) in destructors.
//!
//! The control block, the closure and the result all live at the top of the coroutine's own
//! stack, and stacks come from a per-thread [`pool`], so creating, running and dropping
//! a coroutine allocates nothing in steady state.
//!
//! # Panics
//!
//! A panic inside a coroutine ends it; the enterer's `enter` call then continues the panic with
//! the original payload (so the enterer can `catch_unwind` it).
//!
//! # Threads
//!
//! Handles are neither `Send` nor `Sync`: a suspended stack can hold references to thread-locals,
//! so a coroutine only ever runs on the thread that created it.
//!
//! # Deferred wake-ups
//!
//! [`CoHandle::wake`] called inside a coroutine does not switch: it queues the target, which is
//! entered right after the current coroutine yields or terminates, in FIFO order, by a loop in
//! the enterer (QEMU's `co_queue_wakeup`). The target's own wake-ups are run by the same loop, so
//! a chain of coroutines waking each other never deepens the native stack. Outside any coroutine,
//! `wake` enters the target at once.

use crate::backend::{self, Context};
use crate::pool;
use crate::stack::{page_size, Stack, StackError, DEFAULT_STACK_SIZE, MIN_STACK_SIZE};
use crate::trace::trace_event;
use std::any::Any;
use std::cell::{Cell, UnsafeCell};
use std::fmt;
use std::marker::PhantomData;
use std::mem::{align_of, size_of, ManuallyDrop};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::ptr::{self, NonNull};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

// States of a coroutine (the low two bits of `Header::state`).
/// Created, never entered.
const READY: u8 = 0;
/// Yielded; waiting to be entered again.
const SUSPENDED: u8 = 1;
/// Entered: running, or on the chain of coroutines that entered the running one.
const RUNNING: u8 = 2;
/// Its closure returned or panicked.
const FINISHED: u8 = 3;
/// Flag on READY/SUSPENDED: queued by a deferred wake-up, to be entered by the wake-up loop.
const SCHEDULED: u8 = 4;
/// Flag on RUNNING (and FINISHED until its enterer settles it): the coroutine queued deferred
/// wake-ups that its enterer must run when it switches back.
const WAKEUPS: u8 = 8;
/// Flag on FINISHED until its enterer settles it: the closure panicked (payload in `panic`).
const PANICKED: u8 = 16;
/// Flag on SUSPENDED (set on RUNNING by the coroutine itself just before it switches back): it
/// is suspended in a wait of the resume contract ([`park`](crate::park)), not in a plain yield.
/// Whatever ends the wait wakes it through [`wake_routed`].
const PARKED: u8 = 32;
/// Flag on SUSPENDED|PARKED: the coroutine that entered it (`held_by`) waits with it, and is
/// the only one that enters it again (see [`wait_with`]).
const HELD: u8 = 64;
/// Flag on SUSPENDED: the thread is exiting and its thread-locals are being destroyed; the
/// coroutine will never run again, and is leaked rather than unwound (see [`ExitGuard`]).
const ORPHANED: u8 = 128;
/// The bits that say which state; the others are flags.
const STATE_MASK: u8 = 3;
/// A coroutine can be entered only if none of these is set: bit 1 of the state (RUNNING or
/// FINISHED), or a flag saying that somebody else will enter it (scheduled, held) or nobody
/// may (orphaned). PARKED does not stop an entry: a wait re-checks its condition when resumed.
const NOT_ENTERABLE: u8 = 2 | SCHEDULED | HELD | ORPHANED;

/// The control block of a coroutine. It lives at the top of the coroutine's own stack.
///
/// `ctx` must stay the first field: the switch code gets a pointer to the context and the
/// coroutine's entry function turns it back into a pointer to the header.
#[repr(C)]
pub(crate) struct Header {
    ctx: UnsafeCell<Context>,
    pub(crate) state: Cell<u8>,
    /// Set when the coroutine is being dropped while suspended: `yield_now` starts unwinding.
    cancel: Cell<bool>,
    /// The slot holds the closure's return value, not yet claimed.
    has_result: Cell<bool>,
    /// Strong handles, deferred-wake queue entries and running drops.
    refs: Cell<usize>,
    /// The header of the coroutine (or null for the thread) that entered this one, set at every
    /// entry. Meaningful while the coroutine runs (the chain) and while it is HELD.
    caller: Cell<*const Header>,
    /// Link in the wake-up queue this coroutine is in, if it is scheduled.
    wake_next: Cell<*const Header>,
    /// This coroutine's queue of deferred wake-ups (run after it yields or terminates).
    wake_head: Cell<*const Header>,
    wake_tail: Cell<*const Header>,
    /// The payload of the panic that ended the coroutine, until the enterer continues it.
    panic: Cell<Option<Box<dyn Any + Send>>>,
    vtable: &'static VTable,
    /// Where the closure, and later its result, are stored (just below the header).
    slot: *mut u8,
    /// The stack this header lives on; taken out when the coroutine is freed.
    stack: ManuallyDrop<Stack>,
    pub(crate) id: CoId,
    name: Option<Box<str>>,
    /// Per-resume data exchanged by typed layers (the generator) on top of the core.
    pub(crate) transfer: Cell<*mut ()>,
    /// Links in this thread's list of live coroutines (for introspection and debuggers).
    pub(crate) live_prev: Cell<*const Header>,
    pub(crate) live_next: Cell<*const Header>,
    /// Who resumes this coroutine when a wait of a chain it heads ends: an event loop, an
    /// executor hosting it. `None`: the core's deferred wake-ups (see [`wake_routed`]). Last, with
    /// the other fields off the hot paths, so that those keep their cache lines.
    driver: UnsafeCell<Option<Rc<dyn Driver>>>,
    /// AddressSanitizer's bookkeeping for this fiber (feature `asan`).
    #[cfg(feature = "asan")]
    asan: crate::asan::FiberState,
}

impl Header {
    /// Bytes at the top of every stack reserved for its control block (whole pages): its size
    /// plus up to 63 bytes of alignment slack (see [`Header::location`]).
    pub(crate) const RESERVED: usize = (size_of::<Header>() + 63 + 4095) & !4095;

    /// Where the control block of a coroutine on `stack` lives: at the top, 64-byte aligned.
    pub(crate) fn location(stack: &Stack) -> *mut Header {
        ((stack.top() as usize - size_of::<Header>()) & !63) as *mut Header
    }

    /// The stack a (live or pooled) control block owns.
    pub(crate) fn stack_ref(&self) -> &Stack {
        &self.stack
    }

    /// Takes the stack out of a pooled control block, to unmap it.
    ///
    /// # Safety
    /// `h` is a dead control block (its coroutine freed) that still owns its stack, and is not
    /// used again.
    pub(crate) unsafe fn take_stack(h: NonNull<Header>) -> Stack {
        // SAFETY: per the contract the field is valid and read once.
        unsafe { ptr::read(&*h.as_ref().stack) }
    }

    /// Overwrites a pooled stack with `byte`, all but the control block's `stack` field.
    ///
    /// # Safety
    /// `h` is a dead control block in the pool: nothing reads its other fields or its stack
    /// before a new coroutine writes them.
    pub(crate) unsafe fn poison_dead(h: NonNull<Header>, byte: u8) {
        // SAFETY: per the contract; the ranges lie inside the stack and skip `stack`.
        unsafe {
            let stack = ptr::read(&*h.as_ref().stack);
            let (bottom, top) = (stack.bottom(), stack.top());
            std::mem::forget(stack);
            let field = ptr::addr_of!((*h.as_ptr()).stack) as *mut u8;
            let field_end = field.add(size_of::<ManuallyDrop<Stack>>());
            ptr::write_bytes(bottom, byte, field as usize - bottom as usize);
            ptr::write_bytes(field_end, byte, top as usize - field_end as usize);
        }
    }

    /// The guard page region below the stack: (start address, length).
    pub(crate) fn guard_range(&self) -> (usize, usize) {
        (self.stack.guard() as usize, self.stack.guard_len())
    }

    /// The id as a number.
    pub(crate) fn id_raw(&self) -> u64 {
        self.id.0
    }

    /// The name, if any.
    pub(crate) fn name_str(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Usable stack size in bytes.
    pub(crate) fn stack_size(&self) -> usize {
        self.stack.size()
    }

    /// The raw state byte (state in the low two bits, flags above).
    pub(crate) fn state_bits(&self) -> u8 {
        self.state.get()
    }

    /// The stack's high-water mark so far, with the `stack-usage` feature.
    pub(crate) fn stack_used(&self) -> Option<usize> {
        #[cfg(feature = "stack-usage")]
        return Some(self.stack.used());
        #[cfg(not(feature = "stack-usage"))]
        None
    }

    /// The first live coroutine of this thread (null if none).
    pub(crate) fn first_live() -> *const Header {
        LIVE_HEAD.with(|h| h.get())
    }
}

/// Type-erased operations on the closure `F` and result `R` stored in a header's slot.
struct VTable {
    /// Moves the closure out of the slot, calls it and stores the result in the slot.
    run: unsafe fn(&Header),
    drop_closure: unsafe fn(*mut u8),
    drop_result: unsafe fn(*mut u8),
}

struct VTableFor<F, R>(PhantomData<(F, R)>);

impl<F: FnOnce() -> R, R> VTableFor<F, R> {
    const VTABLE: VTable = VTable {
        run: Self::run,
        drop_closure: Self::drop_closure,
        drop_result: Self::drop_result,
    };

    /// # Safety
    /// The slot holds a valid `F`, which this moves out.
    unsafe fn run(h: &Header) {
        // SAFETY: create() wrote an `F` into the slot and nothing has read it since: `run` is
        // called once, by the coroutine's entry function.
        let f = unsafe { ptr::read(h.slot.cast::<F>()) };
        let r = f();
        // SAFETY: the slot is sized and aligned for `R` too, and holds nothing live now.
        unsafe { ptr::write(h.slot.cast::<R>(), r) };
        h.has_result.set(true);
    }

    /// # Safety
    /// The slot holds a valid `F` that nobody will use again.
    unsafe fn drop_closure(slot: *mut u8) {
        // SAFETY: per the contract.
        unsafe { ptr::drop_in_place(slot.cast::<F>()) }
    }

    /// # Safety
    /// The slot holds a valid `R` that nobody will use again.
    unsafe fn drop_result(slot: *mut u8) {
        // SAFETY: per the contract.
        unsafe { ptr::drop_in_place(slot.cast::<R>()) }
    }
}

thread_local! {
    /// The running coroutine's header, or null when the thread runs on its own stack.
    /// A `const` Cell of a raw pointer: no lazy initialisation and no destructor, so it is a
    /// plain `fs:`-relative load and stays usable while other thread-locals are destroyed.
    static CURRENT: Cell<*const Header> = const { Cell::new(ptr::null()) };
    /// The last coroutine id handed out on this thread (0: none yet).
    static LAST_ID: Cell<u64> = const { Cell::new(0) };
    /// The most recently created live coroutine of this thread; the list goes on through
    /// `live_next`.
    static LIVE_HEAD: Cell<*const Header> = const { Cell::new(ptr::null()) };
}

#[inline(always)]
fn current_ptr() -> *const Header {
    CURRENT.with(|c| c.get())
}

/// The running coroutine's header (null outside any coroutine), for the layers above.
#[inline(always)]
pub(crate) fn current_header() -> *const Header {
    current_ptr()
}

/// The outermost coroutine of the running chain — the one its enterer (the thread: `main`, an
/// event loop, an executor's poll, a wake-up loop) entered — or null outside any coroutine.
pub(crate) fn current_root() -> *const Header {
    let mut h = current_ptr();
    if h.is_null() {
        return h;
    }
    loop {
        // SAFETY: the running coroutine and its callers (the chain) are live: each enterer
        // keeps what it entered alive while it runs.
        let c = unsafe { (*h).caller.get() };
        if c.is_null() {
            return h;
        }
        h = c;
    }
}

impl Header {
    /// The coroutine's driver, cloned out of its slot.
    pub(crate) fn driver(&self) -> Option<Rc<dyn Driver>> {
        // SAFETY: single-threaded; the slot is only replaced by `CoHandle::set_driver`, and no
        // reference into it outlives this clone.
        unsafe { (*self.driver.get()).clone() }
    }
}

#[inline(always)]
fn set_current(h: *const Header) {
    CURRENT.with(|c| c.set(h))
}

/// The payload that unwinds a suspended coroutine whose last handle was dropped.
///
/// Code that catches panics inside a coroutine (`catch_unwind`) may see it; it should let it
/// continue (`resume_unwind`), as the coroutine cannot be suspended again.
struct ForcedUnwind;

/// A coroutine's id: unique in the process, stable for the coroutine's life, printed as
/// `co<thread>.<n>` (thread numbers count from 1 in the order threads first create a coroutine).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CoId(u64);

const ID_SEQ_BITS: u32 = 40;

impl CoId {
    fn next() -> CoId {
        LAST_ID.with(|last| {
            let mut v = last.get();
            if v == 0 {
                // This thread's first coroutine: number the thread, and make sure a stack
                // overflow in a coroutine will be reported.
                static THREADS: AtomicU64 = AtomicU64::new(0);
                v = (THREADS.fetch_add(1, Ordering::Relaxed) + 1) << ID_SEQ_BITS;
                crate::overflow::init_thread();
                // Arm the thread-exit policy (see `ExitGuard`); a thread already tearing down
                // its thread-locals has no guard left to arm.
                let _ = EXIT_GUARD.try_with(|_| ());
            }
            v += 1;
            last.set(v);
            CoId(v)
        })
    }

    /// The id as a number (thread number in the high 24 bits, sequence in the low 40).
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for CoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "co{}.{}",
            self.0 >> ID_SEQ_BITS,
            self.0 & ((1 << ID_SEQ_BITS) - 1)
        )
    }
}

impl fmt::Debug for CoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What happened when a coroutine was entered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a coroutine that yielded is not finished"]
pub enum Status<R> {
    /// The coroutine called [`yield_now`]; enter it again to continue it.
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

/// Rounds a requested stack size the way [`Stack::new`] does, so pooled stacks match.
#[inline]
fn round_stack_size(size: usize) -> usize {
    if size == DEFAULT_STACK_SIZE {
        return size; // a multiple of every page size Linux uses, up to 1 MiB
    }
    let page = page_size();
    size.max(MIN_STACK_SIZE).saturating_add(page - 1) & !(page - 1)
}

/// Room that must stay free below the closure for the coroutine's own frames.
const MIN_FREE_STACK: usize = 8 * 1024;

/// Configures a coroutine before creating it: stack size and name.
///
/// ```
/// use costack::{Builder, Status};
///
/// let co = Builder::new()
///     .stack_size(64 * 1024)
///     .name("worker")
///     .create(|| costack::current().unwrap().name().map(str::to_owned));
/// assert_eq!(co.enter(), Status::Finished(Some("worker".to_owned())));
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    stack_size: usize,
    name: Option<Box<str>>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// A builder with the default stack size ([`DEFAULT_STACK_SIZE`], 1 MiB) and no name.
    pub fn new() -> Builder {
        Builder {
            stack_size: DEFAULT_STACK_SIZE,
            name: None,
        }
    }

    /// The usable stack size in bytes (rounded up to whole pages and to at least 16 KiB).
    pub fn stack_size(mut self, bytes: usize) -> Builder {
        self.stack_size = bytes;
        self
    }

    /// A name, shown in panics about the coroutine, trace output and debugging tools.
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.name = Some(name.into().into_boxed_str());
        self
    }

    /// Creates the coroutine; it does not run until entered.
    ///
    /// # Panics
    /// If no stack can be mapped (the message names the limit that was hit: memory or
    /// `vm.max_map_count`), or if the closure or its result does not fit in half the stack.
    pub fn create<F, R>(self, f: F) -> Coroutine<R>
    where
        F: FnOnce() -> R + 'static,
        R: 'static,
    {
        match self.try_create(f) {
            Ok(co) => co,
            Err(e) => panic!("costack: {e}"),
        }
    }

    /// Creates the coroutine, or says why its stack could not be mapped.
    ///
    /// # Panics
    /// If the closure or its result does not fit in half the stack.
    pub fn try_create<F, R>(self, f: F) -> Result<Coroutine<R>, StackError>
    where
        F: FnOnce() -> R + 'static,
        R: 'static,
    {
        let size = round_stack_size(self.stack_size);
        let slot_size = size_of::<F>().max(size_of::<R>());
        let slot_align = align_of::<F>().max(align_of::<R>()).max(16);
        let needed = size_of::<Header>() + 64 + slot_size + slot_align + MIN_FREE_STACK;
        if slot_size > size / 2 || needed > size {
            panic!(
                "costack: a coroutine closure or result of {slot_size} bytes does not fit in a \
                 {size}-byte stack; box it or use a larger stack"
            );
        }
        let hdr = match pool::take(size) {
            Some(h) => h.as_ptr(),
            None => {
                let stack = fresh_stack(size).map_err(|e| *e)?;
                let hdr = Header::location(&stack);
                // SAFETY: `hdr` lies at the top of the new stack, aligned (see `location`).
                unsafe { ptr::addr_of_mut!((*hdr).stack).write(ManuallyDrop::new(stack)) };
                hdr
            }
        };
        // SAFETY: `hdr` is the control-block location of an unused stack whose `stack` field is
        // set; the layout leaves the header, slot and MIN_FREE_STACK bytes inside it (checked
        // above).
        let h = unsafe { init_header::<F, R>(hdr, f, self.name, slot_size, slot_align) };
        Ok(Coroutine {
            handle: CoHandle { h },
            _result: PhantomData,
        })
    }
}

/// Maps a new stack. Out of line, and with the error boxed, so that the common path (a pooled
/// stack) moves the `Stack` around as plain words.
#[cold]
#[inline(never)]
fn fresh_stack(size: usize) -> Result<Stack, Box<StackError>> {
    Stack::new(size).map_err(Box::new)
}

/// Lays out a fresh coroutine at the top of a stack whose control block is at `hdr`:
///
/// ```text
///   top  +------------------+
///        | Header           |  64-byte aligned (its `stack` field owns the mapping)
///        +------------------+
///        | slot: F, then R  |  aligned for both
///        +------------------+
///        | resume address   |  <- initial sp (trampoline)
///        | frames ...       |
/// bottom +------------------+
/// ```
///
/// Every field but `stack` is written here, one by one: `stack` was set when the stack was
/// mapped and stays put while the stack goes round the pool, so a pooled create neither reads
/// nor rewrites it.
///
/// # Safety
/// `hdr` must be [`Header::location`] of an unused stack whose `stack` field is set, large
/// enough for the header, a slot of `slot_size` bytes aligned to `slot_align`, and the
/// coroutine's frames.
#[inline]
unsafe fn init_header<F, R>(
    hdr: *mut Header,
    f: F,
    name: Option<Box<str>>,
    slot_size: usize,
    slot_align: usize,
) -> NonNull<Header>
where
    F: FnOnce() -> R + 'static,
    R: 'static,
{
    let slot = ((hdr as usize - slot_size) & !(slot_align - 1)) as *mut u8;
    // SAFETY: `slot` and `hdr` lie inside the stack (caller's contract), are suitably aligned,
    // and do not overlap: the slot ends at or below `hdr`. Writing through `addr_of_mut!` does
    // not drop the dead values of a pooled control block.
    unsafe {
        ptr::write(slot.cast::<F>(), f);
        let bottom = (*hdr).stack.bottom();
        macro_rules! set {
            ($field:ident, $value:expr) => {
                ptr::addr_of_mut!((*hdr).$field).write($value)
            };
        }
        set!(ctx, UnsafeCell::new(Context::new()));
        set!(state, Cell::new(READY));
        set!(cancel, Cell::new(false));
        set!(has_result, Cell::new(false));
        set!(refs, Cell::new(1));
        set!(caller, Cell::new(ptr::null()));
        set!(driver, UnsafeCell::new(None));
        set!(wake_next, Cell::new(ptr::null()));
        set!(wake_head, Cell::new(ptr::null()));
        set!(wake_tail, Cell::new(ptr::null()));
        set!(panic, Cell::new(None));
        set!(vtable, &VTableFor::<F, R>::VTABLE);
        set!(slot, slot);
        set!(id, CoId::next());
        set!(name, name);
        set!(transfer, Cell::new(ptr::null_mut()));
        set!(live_prev, Cell::new(ptr::null()));
        set!(live_next, Cell::new(ptr::null()));
        #[cfg(feature = "asan")]
        set!(asan, crate::asan::FiberState::new());
        (*(*hdr).ctx.get()).init(slot, bottom);
        link_live(&*hdr);
        NonNull::new_unchecked(hdr)
    }
}

/// Adds a new coroutine to the front of this thread's live list.
#[inline]
fn link_live(h: &Header) {
    LIVE_HEAD.with(|head| {
        let first = head.replace(h);
        h.live_next.set(first);
        if !first.is_null() {
            // SAFETY: list members are live headers of this thread.
            unsafe { (*first).live_prev.set(h) };
        }
    });
}

/// Removes a coroutine that is being freed from this thread's live list.
#[inline]
fn unlink_live(h: &Header) {
    let (prev, next) = (h.live_prev.get(), h.live_next.get());
    if !next.is_null() {
        // SAFETY: list members are live headers of this thread.
        unsafe { (*next).live_prev.set(prev) };
    }
    if prev.is_null() {
        // It was the head. (At thread exit the thread-local may be gone: nothing to fix then.)
        let _ = LIVE_HEAD.try_with(|head| head.set(next));
    } else {
        // SAFETY: as above.
        unsafe { (*prev).live_next.set(next) };
    }
}

/// The entry function of every coroutine, called by the backend's trampoline on the fresh
/// stack. Runs the closure and records how it ended; when it returns, the backend switches to
/// the enterer for the last time.
pub(crate) extern "C" fn coroutine_main(ctx: *mut Context) {
    // SAFETY: `ctx` is the first field of a `#[repr(C)]` Header, which stays alive while the
    // coroutine runs (the enterer holds a strong reference).
    let h = unsafe { &*(ctx as *const Header) };
    #[cfg(feature = "asan")]
    h.asan.arrived();
    // SAFETY: the slot holds the closure, written by create() and not yet taken.
    let outcome = catch_unwind(AssertUnwindSafe(|| unsafe { (h.vtable.run)(h) }));
    let mut end = FINISHED | (h.state.get() & WAKEUPS);
    if let Err(payload) = outcome {
        if !payload.is::<ForcedUnwind>() {
            h.panic.set(Some(payload));
            end |= PANICKED;
        }
    }
    h.state.set(end);
    trace_event!(terminate, h.id);
    #[cfg(feature = "asan")]
    h.asan.leaving_for_good();
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
    let state = h.state.get();
    if state & NOT_ENTERABLE != 0 {
        cannot_enter(h, state);
    }
    let prev = current_ptr();
    h.caller.set(if NESTED { prev } else { ptr::null() });
    h.state.set(RUNNING);
    set_current(h);
    trace_event!(enter, DisplayPtr(prev), h.id);
    #[cfg(feature = "asan")]
    let fake = crate::asan::entering(h.stack.bottom(), h.stack.size());
    // SAFETY: the state check above guarantees the coroutine is not running anywhere and was
    // prepared by init_header; it only switches back through suspend/finish on its own ctx.
    unsafe { backend::resume(h.ctx.get()) };
    #[cfg(feature = "asan")]
    crate::asan::returned(fake);
    set_current(prev);
    if h.state.get() == RUNNING {
        h.state.set(SUSPENDED);
        false
    } else {
        true
    }
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
    let s = h.state.get();
    let finished = s & STATE_MASK == FINISHED;
    h.state.set(if finished {
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
fn cannot_enter(h: &Header, state: u8) -> ! {
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
unsafe fn enter_header(h: &Header) {
    // SAFETY: forwarded contract.
    if unsafe { switch_into::<true>(h) } && h.state.get() != FINISHED {
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
            if let Some(payload) = h.panic.take() {
                drop(pending_panic);
                resume_unwind(payload);
            }
        }
        if let Some(payload) = pending_panic {
            resume_unwind(payload);
        }
        // Re-read: the wake-ups may have entered `h` again meanwhile.
        let parked = h.state.get() & (STATE_MASK | PARKED | NOT_ENTERABLE) == SUSPENDED | PARKED;
        if !parked || current_ptr().is_null() {
            return; // our caller sees a yield (or the end)
        }
        // SAFETY: forwarded contract; we run inside a coroutine (checked above).
        if !unsafe { wait_with(h) } {
            return;
        }
        // SAFETY: forwarded contract.
        if !unsafe { switch_into::<true>(h) } || h.state.get() == FINISHED {
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
    debug_assert_eq!(h.caller.get(), current_ptr());
    /// Lets go of `h` however the wait ends (also when our coroutine is unwound meanwhile).
    struct Unhold<'a>(&'a Header);
    impl Drop for Unhold<'_> {
        fn drop(&mut self) {
            self.0.state.set(self.0.state.get() & !HELD);
        }
    }
    h.state.set(h.state.get() | HELD);
    let unhold = Unhold(h);
    park_current();
    drop(unhold);
    // HELD kept everyone else out, so `h` is still suspended where it parked, unless the thread
    // began to exit meanwhile.
    h.state.get() & (STATE_MASK | ORPHANED) == SUSPENDED
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
/// the enterer finds (see [`switch_into`]). Continues a forced unwind before and after the
/// switch: a coroutine being dropped cannot suspend.
#[inline(always)]
fn suspend_running<const PARK: bool>() {
    let cur = current_ptr();
    if cur.is_null() {
        if PARK {
            park_outside();
        }
        yield_outside();
    }
    // SAFETY: CURRENT only holds the header of the running coroutine, which its enterer keeps
    // alive while it runs.
    let h = unsafe { &*cur };
    if h.cancel.get() {
        forced_unwind();
    }
    if PARK {
        // The enterer reads the flag after the switch (see `switch_into`).
        h.state.set(h.state.get() | PARKED);
    }
    // A plain yield changes no state: the enterer marks us suspended when the switch returns.
    trace_event!(yield, h.id, DisplayPtr(h.caller.get()));
    #[cfg(feature = "asan")]
    h.asan.leaving();
    // SAFETY: we run on `h`'s stack (it is CURRENT) and were entered by a resume on its ctx.
    unsafe { backend::suspend(h.ctx.get()) };
    #[cfg(feature = "asan")]
    h.asan.arrived();
    if h.cancel.get() {
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
    if h.cancel.get() {
        forced_unwind();
    }
}

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
    let mut s = unsafe { t.as_ref() }.state.get();
    while s & HELD != 0 {
        // SAFETY: as above.
        t = unsafe { NonNull::new_unchecked(t.as_ref().caller.get() as *mut Header) };
        // SAFETY: as above.
        s = unsafe { t.as_ref() }.state.get();
    }
    if s & NOT_ENTERABLE != 0 {
        return None;
    }
    // SAFETY: live (above). The driver is cloned out of its slot at once, so that its `wake`
    // may replace it (`set_driver`) without invalidating a reference of ours.
    if let Some(d) = unsafe { t.as_ref() }.driver() {
        // SAFETY: live; the handle takes its own reference.
        d.wake(&unsafe { handle_from_header(t) });
        return None;
    }
    let cur = current_ptr();
    if cur.is_null() {
        // SAFETY: live; the handle takes its own reference.
        return Some(unsafe { handle_from_header(t) });
    }
    // SAFETY: `cur` is the running coroutine; `t` is live and idle (checked above), and nothing
    // ran since.
    unsafe { enqueue_wakeup(&*cur, t) };
    None
}

/// A FIFO of scheduled coroutines, linked through `wake_next`; each entry owns a strong ref.
struct WakeList {
    head: *const Header,
    tail: *const Header,
}

impl WakeList {
    /// Takes `h`'s queue of deferred wake-ups.
    fn take(h: &Header) -> WakeList {
        WakeList {
            head: h.wake_head.replace(ptr::null()),
            tail: h.wake_tail.replace(ptr::null()),
        }
    }

    /// Puts `front` before the entries of `self`.
    fn prepend(&mut self, front: WakeList) {
        if front.head.is_null() {
            return;
        }
        // SAFETY: list entries are live headers (each holds a strong ref).
        unsafe { (*front.tail).wake_next.set(self.head) };
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
        self.head = hr.wake_next.replace(ptr::null());
        if self.head.is_null() {
            self.tail = ptr::null();
        }
        hr.state.set(hr.state.get() & !SCHEDULED);
        // The entry's strong reference moves into the handle.
        Some(CoHandle { h })
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
#[inline(never)]
unsafe fn run_wakeups(first: &Header) -> Option<Box<dyn Any + Send>> {
    let mut pending = WakeList::take(first);
    let mut first_panic = None;
    while let Some(co) = pending.pop() {
        let h = co.header();
        if h.state.get() & NOT_ENTERABLE != 0 {
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
                if let Some(p) = h.panic.take() {
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
/// coroutine is resumed only to be dropped: see [`Coroutine`].
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
    !current_ptr().is_null()
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
    let h = NonNull::new(current_ptr() as *mut Header)?;
    // SAFETY: CURRENT is a live header; the new handle takes a strong reference.
    unsafe { incref(h) };
    Some(CoHandle { h })
}

/// The id of the running coroutine, or `None` outside any coroutine. Cheaper than
/// `current().map(|c| c.id())`: no handle is made.
#[inline]
pub fn current_id() -> Option<CoId> {
    let h = current_ptr();
    // SAFETY: CURRENT is null or the live running coroutine.
    (!h.is_null()).then(|| unsafe { (*h).id })
}

/// # Safety
/// `h` must be live.
#[inline(always)]
unsafe fn incref(h: NonNull<Header>) {
    // SAFETY: per the contract.
    let r = unsafe { &h.as_ref().refs };
    r.set(r.get() + 1);
}

/// Who resumes a coroutine at the head of a chain when one of the chain's waits ends: an event
/// loop for its tasks, an executor for the coroutine a future hosts. The contract it takes part
/// in is described in [`park`](crate::park); set one with [`CoHandle::set_driver`].
///
/// A coroutine holds a strong reference to its driver. A driver that queues handles of the
/// roots it is asked to wake (a run queue) should let go of each once it has entered it, or
/// the two keep each other alive.
pub trait Driver {
    /// A wait of the chain headed by `root` has ended (or may have: spurious wake-ups are
    /// allowed): arrange for `root` to be entered again soon, on this thread.
    ///
    /// Called on `root`'s thread, from wherever the wait was ended — often inside another
    /// coroutine, in the middle of a lock's unlock. It should only queue `root`, not enter it.
    fn wake(&self, root: &CoHandle);

    /// A [`Waker`](std::task::Waker) that leads to [`wake`](Driver::wake)`(root)` on `root`'s
    /// thread when woken from any thread, for futures awaited in the chain
    /// ([`bridge::await_future`](crate::bridge::await_future)); `None` if this driver cannot
    /// be reached from other threads.
    fn waker(&self, root: &CoHandle) -> Option<std::task::Waker>;
}

/// An untyped, cloneable handle to a coroutine of this thread.
///
/// Any handle can enter the coroutine; the coroutine lives until the last handle to it is
/// dropped (see [`Coroutine`] for what dropping does). Handles compare equal when they refer to
/// the same coroutine.
pub struct CoHandle {
    h: NonNull<Header>,
}

impl CoHandle {
    #[inline(always)]
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: a handle holds a strong reference, so the header is live.
        unsafe { self.h.as_ref() }
    }

    /// Enters the coroutine: it runs until it yields or finishes. Its return value, if it
    /// finished, stays with the coroutine ([`Coroutine::take_result`]).
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
        let state = hr.state.get();
        if state & (2 | SCHEDULED | ORPHANED) != 0 {
            cannot_wake(hr, state);
        }
        // SAFETY: `self` keeps the header alive.
        if let Some(co) = unsafe { wake_routed(self.h) } {
            let _ = co.enter();
        }
    }

    /// Whether the coroutine is suspended in a wait of the resume contract ([`park`]) rather
    /// than in a plain [`yield_now`]: something will wake it when what it waits for happens.
    /// Drivers use it to tell "enter me again soon" (a plain yield) from "leave me until I am
    /// woken" (a wait).
    ///
    /// [`park`]: crate::park
    #[inline]
    pub fn is_parked(&self) -> bool {
        self.header().state.get() & (STATE_MASK | PARKED) == SUSPENDED | PARKED
    }

    /// Whether the coroutine waits inside the coroutine that entered it, which waits with it and
    /// alone enters it again (see [`park`](crate::park)). Entering it from anywhere else panics;
    /// waking it reaches the outermost coroutine of that chain.
    #[inline]
    pub fn is_held(&self) -> bool {
        self.header().state.get() & HELD != 0
    }

    /// Whether [`enter`](Self::enter) would run the coroutine now rather than panic: it is
    /// ready or suspended, and not scheduled, held, or orphaned by a thread exit.
    #[inline]
    pub fn can_enter(&self) -> bool {
        self.header().state.get() & NOT_ENTERABLE == 0
    }

    /// Names the [`Driver`] that resumes this coroutine when a wait of a chain it heads ends
    /// (`None`: the core's deferred wake-ups). Event loops and executors set it on the
    /// coroutines they own; see [`park`](crate::park).
    pub fn set_driver(&self, driver: Option<Rc<dyn Driver>>) {
        // SAFETY: single-threaded; no reference into the slot is held across this (readers
        // clone the `Rc` out at once), and the old value is dropped after the slot is written.
        let old = unsafe { ptr::replace(self.header().driver.get(), driver) };
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
        self.header().state.get() & STATE_MASK == RUNNING
    }

    /// Whether the coroutine's closure has returned or panicked.
    #[inline]
    pub fn is_finished(&self) -> bool {
        self.header().state.get() & STATE_MASK == FINISHED
    }

    /// Whether the coroutine has run and is waiting to be entered again.
    pub fn is_suspended(&self) -> bool {
        self.header().state.get() & STATE_MASK == SUSPENDED
    }

    /// Whether a deferred wake-up has queued the coroutine.
    pub fn is_scheduled(&self) -> bool {
        self.header().state.get() & SCHEDULED != 0
    }

    /// The coroutine's id.
    pub fn id(&self) -> CoId {
        self.header().id
    }

    /// The coroutine's name, if it was given one ([`Builder::name`]).
    pub fn name(&self) -> Option<&str> {
        self.header().name.as_deref()
    }

    /// The usable size of the coroutine's stack in bytes.
    pub fn stack_size(&self) -> usize {
        self.header().stack.size()
    }

    /// The high-water mark of the coroutine's stack use in bytes, counted from the top of the
    /// stack (its control block and closure included). Only with the `stack-usage` feature,
    /// which paints new stacks so that the mark can be found; `None` without it.
    pub fn stack_used(&self) -> Option<usize> {
        self.header().stack_used()
    }

    /// The bounds `(bottom, top)` of the coroutine's usable stack; for debugging tools.
    pub fn stack_bounds(&self) -> (*const u8, *const u8) {
        let s = &self.header().stack;
        (s.bottom(), s.top())
    }
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
    hr.state.set(hr.state.get() | SCHEDULED);
    // SAFETY: live header; the queue entry owns this new reference.
    unsafe { incref(h) };
    cur.state.set(cur.state.get() | WAKEUPS);
    let tail = cur.wake_tail.replace(hr);
    if tail.is_null() {
        cur.wake_head.set(hr);
    } else {
        // SAFETY: queue entries are live.
        unsafe { (*tail).wake_next.set(hr) };
    }
}

/// A new strong handle to the coroutine `h`.
///
/// # Safety
/// `h` must be a live coroutine of this thread.
pub(crate) unsafe fn handle_from_header(h: NonNull<Header>) -> CoHandle {
    // SAFETY: live per the contract; the handle owns the new reference.
    unsafe { incref(h) };
    CoHandle { h }
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
        unsafe { incref(self.h) };
        CoHandle { h: self.h }
    }
}

impl PartialEq for CoHandle {
    fn eq(&self, other: &Self) -> bool {
        self.h == other.h
    }
}

impl Eq for CoHandle {}

impl std::hash::Hash for CoHandle {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.h.hash(state)
    }
}

impl fmt::Debug for CoHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = self.header();
        let state = match h.state.get() & STATE_MASK {
            READY => "ready",
            SUSPENDED => "suspended",
            RUNNING => "entered",
            _ => "finished",
        };
        f.debug_struct("CoHandle")
            .field("id", &h.id)
            .field("name", &h.name)
            .field("state", &state)
            .finish()
    }
}

impl Drop for CoHandle {
    #[inline]
    fn drop(&mut self) {
        let r = &self.header().refs;
        let n = r.get() - 1;
        r.set(n);
        if n == 0 {
            // SAFETY: that was the last reference.
            unsafe { release(self.h) };
        }
    }
}

/// Frees a coroutine whose last reference is gone: unwinds it if it is suspended, drops its
/// closure or unclaimed result, and gives its stack back to the pool.
///
/// # Safety
/// `h` is live and has no references left.
#[inline]
unsafe fn release(h: NonNull<Header>) {
    // SAFETY: per the contract, the header is live.
    let hr = unsafe { h.as_ref() };
    let mut panic = None;
    let state = hr.state.get();
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
            hr.refs.set(1);
            // SAFETY: live, suspended header of this thread.
            panic = unsafe { unwind_suspended(hr) };
            let n = hr.refs.get() - 1;
            hr.refs.set(n);
            if n != 0 {
                // It stored a handle to itself while unwinding; that handle frees it later.
                if let Some(p) = panic {
                    resume_unwind(p);
                }
                return;
            }
        }
        _ => abort_with("a running coroutine lost its last handle"),
    }
    unlink_live(hr);
    #[cfg(feature = "stack-usage")]
    crate::pool::note_stack_used(hr.stack.used());
    debug_assert!(hr.state.get() & PANICKED == 0, "an unclaimed panic payload");
    // SAFETY: nothing refers to the header any more; the driver (tasks, hosted coroutines) is
    // taken out of the slot and dropped after the stack went back to the pool. The slot is
    // usually empty: looked at first, it costs a load, not a 16-byte store, per coroutine.
    let slot = unsafe { &mut *hr.driver.get() };
    let driver = if slot.is_some() { slot.take() } else { None };

    /// Hands the stack to the pool when dropped, also if a destructor below panics.
    struct ToPool(NonNull<Header>);
    impl Drop for ToPool {
        fn drop(&mut self) {
            // SAFETY: the coroutine is freed: nothing refers to its control block any more.
            unsafe { pool::put(self.0) }
        }
    }
    let _to_pool = ToPool(h);
    // SAFETY: nothing refers to the header any more; take the name out and drop the closure or
    // result in the slot, which lives on the stack (so before the stack goes to the pool).
    unsafe {
        let name = ptr::read(&hr.name);
        if hr.state.get() & STATE_MASK == READY {
            (hr.vtable.drop_closure)(hr.slot);
        } else if hr.has_result.get() {
            (hr.vtable.drop_result)(hr.slot);
        }
        drop(name);
    }
    drop(_to_pool);
    drop(driver);
    if let Some(p) = panic {
        resume_unwind(p);
    }
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
    hr.state.set(SUSPENDED | ORPHANED);
    unlink_live(hr);
}

thread_local! {
    /// Set when the thread's thread-locals begin to be destroyed (see [`ExitGuard`]). A `const`
    /// Cell with no destructor: readable until the thread is gone.
    static EXITING: Cell<bool> = const { Cell::new(false) };
    /// Sets `EXITING` when destroyed; registered with the thread's first coroutine.
    static EXIT_GUARD: ExitGuard = const { ExitGuard };
}

/// Whether this thread's costack state is being torn down (it is exiting).
#[inline]
fn thread_exiting() -> bool {
    EXITING.with(|e| e.get())
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
struct ExitGuard;

impl Drop for ExitGuard {
    fn drop(&mut self) {
        EXITING.with(|e| e.set(true));
        let mut p = Header::first_live();
        while !p.is_null() {
            // SAFETY: the live list holds live headers of this thread; nothing runs while we
            // walk it.
            let h = unsafe { &*p };
            if h.state.get() & STATE_MASK == SUSPENDED {
                h.state.set(h.state.get() | ORPHANED);
            }
            p = h.live_next.get();
        }
    }
}

/// Unwinds a suspended coroutine: enters it with `cancel` set, so that its `yield_now` starts a
/// forced unwind that runs every destructor on its stack. Returns a panic that escaped from a
/// destructor (or was raised instead of the unwind), if the caller may continue it.
///
/// # Safety
/// `h` is a live, suspended header of this thread.
#[cold]
#[inline(never)]
unsafe fn unwind_suspended(h: &Header) -> Option<Box<dyn Any + Send>> {
    h.cancel.set(true);
    // SAFETY: forwarded contract; our reference keeps it alive.
    let settled = if unsafe { switch_into::<true>(h) } {
        settle(h)
    } else {
        Settled {
            finished: false,
            wakeups: false,
        }
    };
    let woken_panic = if settled.wakeups {
        // SAFETY: live header.
        unsafe { run_wakeups(h) }
    } else {
        None
    };
    if !settled.finished {
        abort_with("a coroutine being dropped suspended itself again while unwinding");
    }
    let p = h.panic.take().or(woken_panic);
    // Continuing a panic from inside another unwind would abort the process; drop it then.
    p.filter(|_| !std::thread::panicking())
}

#[cold]
fn abort_with(msg: &str) -> ! {
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
            fmt::Display::fmt(unsafe { &(*self.0).id }, f)
        }
    }
}

/// Formats a coroutine as `co1.2 "name"`.
struct NameId<'a>(&'a Header);

impl fmt::Display for NameId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0.name {
            Some(n) => write!(f, "{} \"{}\"", self.0.id, n),
            None => write!(f, "{}", self.0.id),
        }
    }
}

/// A coroutine whose closure returns `R`: the handle [`Coroutine::new`] returns.
///
/// It dereferences to [`CoHandle`] for everything that does not depend on `R`.
///
/// Dropping the last handle to a coroutine that is suspended unwinds its stack, so every
/// destructor on it runs; the coroutine is entered one last time for that, and any
/// `yield_now` it reaches while unwinding panics. A coroutine that was never entered just drops
/// its closure.
///
/// ```
/// use costack::{yield_now, Coroutine, Status};
///
/// let co = Coroutine::new(|| {
///     for _ in 0..5 {
///         yield_now();
///     }
///     "done"
/// });
/// let mut enters = 1;
/// while co.enter() == Status::Yielded {
///     enters += 1;
/// }
/// assert_eq!(enters, 6); // 5 yields take 6 enters
/// ```
pub struct Coroutine<R = ()> {
    handle: CoHandle,
    _result: PhantomData<fn() -> R>,
}

impl<R: 'static> Coroutine<R> {
    /// Creates a coroutine with a default stack (1 MiB, from the thread's pool when it has
    /// one); it does not run until entered.
    ///
    /// # Panics
    /// If no stack can be mapped; the message names the limit hit. See [`Coroutine::try_new`].
    #[inline]
    pub fn new<F>(f: F) -> Coroutine<R>
    where
        F: FnOnce() -> R + 'static,
    {
        Builder::new().create(f)
    }

    /// Creates a coroutine, or says which limit (memory, `vm.max_map_count`) stopped it.
    #[inline]
    pub fn try_new<F>(f: F) -> Result<Coroutine<R>, StackError>
    where
        F: FnOnce() -> R + 'static,
    {
        Builder::new().try_create(f)
    }

    /// Enters the coroutine: it runs on its own stack until it yields or returns.
    ///
    /// # Panics
    /// If the coroutine is already entered (itself, or an ancestor on the chain), has finished,
    /// or is scheduled by a deferred wake-up; and, with the original payload, if the coroutine
    /// panics.
    #[inline]
    pub fn enter(&self) -> Status<R> {
        let h = self.handle.header();
        // SAFETY: `self` keeps the header alive for the whole call.
        unsafe { enter_header(h) };
        if h.state.get() == FINISHED {
            match self.take_result() {
                Some(r) => Status::Finished(r),
                None => unreachable!("costack: finished coroutine without a result"),
            }
        } else {
            Status::Yielded
        }
    }

    /// Takes the return value of a coroutine that finished while entered through a
    /// [`CoHandle`]; `None` if it has not finished or the value was taken already.
    pub fn take_result(&self) -> Option<R> {
        let h = self.handle.header();
        if !h.has_result.replace(false) {
            return None;
        }
        // SAFETY: has_result says the slot holds an `R` (the vtable was built for this `R`:
        // only `Coroutine<R>` of the matching type is ever created over it); we cleared the flag
        // so it is read once.
        Some(unsafe { ptr::read(h.slot.cast::<R>()) })
    }

    /// An untyped handle to this coroutine.
    pub fn handle(&self) -> CoHandle {
        self.handle.clone()
    }
}

impl<R> std::ops::Deref for Coroutine<R> {
    type Target = CoHandle;

    fn deref(&self) -> &CoHandle {
        &self.handle
    }
}

impl<R> fmt::Debug for Coroutine<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.handle, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fits_comfortably() {
        // The ucontext backend keeps two ucontext_t (about 1 KiB each) in it.
        let limit = if cfg!(feature = "ucontext") {
            4096
        } else {
            512
        };
        assert!(size_of::<Header>() <= limit, "{}", size_of::<Header>());
    }
}
