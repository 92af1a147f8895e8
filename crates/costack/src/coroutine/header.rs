//! The ground floor of a coroutine: its control block ([`Header`]), the state bits, the
//! type-erased closure and result, the thread's running coroutine and list of live coroutines,
//! ids ([`CoId`]), and the two types a header names: [`Driver`] (who resumes it) and the
//! representation of [`CoHandle`] (a counted pointer to a header).
//!
//! Every field of [`Header`] is private to this file; the rest of the crate — the switch, the
//! handles, the pool, the overflow handler, introspection, park, the generator, the locks —
//! goes through its `#[inline]` methods, which compile to the same loads and stores.
//!
//! `CoHandle`'s struct lives here because `Driver::wake` takes one and a header holds a driver;
//! its operations (enter, wake, queries, dropping) live in the handle module above.
//!
//! May import: `id` and `state` (below it), `backend` (the saved context), `stack` (the mapping
//! a header owns), `local` (the live list's head), `asan`.
//! Nothing else of the crate: the pool, the overflow handler and the rest of `coroutine` build
//! on this file, never the reverse.

use super::id::CoId;
use super::state::{READY, STATE_MASK};
use crate::backend::{Context, Entry};
use crate::local::{local, LocalWord};
use crate::stack::Stack;
use std::any::Any;
use std::cell::{Cell, UnsafeCell};
use std::marker::PhantomData;
use std::mem::{size_of, ManuallyDrop};
use std::ptr::{self, NonNull};
use std::rc::Rc;

/// The control block of a coroutine. It lives at the top of the coroutine's own stack.
///
/// `ctx` must stay the first field: the switch code gets a pointer to the context and the
/// coroutine's entry function turns it back into a pointer to the header.
#[repr(C)]
pub(crate) struct Header {
    ctx: UnsafeCell<Context>,
    state: Cell<u8>,
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
    id: CoId,
    name: Option<Box<str>>,
    /// Per-resume data exchanged by typed layers (the generator) on top of the core.
    transfer: Cell<*mut ()>,
    /// Links in this thread's list of live coroutines (for introspection and debuggers).
    live_prev: Cell<*const Header>,
    live_next: Cell<*const Header>,
    /// Who resumes this coroutine when a wait of a chain it heads ends: an event loop, an
    /// executor hosting it. `None`: the core's deferred wake-ups. Last, with the other fields
    /// off the hot paths, so that those keep their cache lines.
    driver: UnsafeCell<Option<Rc<dyn Driver>>>,
    /// AddressSanitizer's bookkeeping for this fiber (feature `asan`).
    #[cfg(feature = "asan")]
    asan: crate::asan::FiberState,
}

impl Header {
    /// Bytes at the top of every stack reserved for its control block (whole pages): its size
    /// plus up to 63 bytes of alignment slack (see [`Header::location`]).
    pub(crate) const RESERVED: usize = (size_of::<Header>() + 63 + 4095) & !4095;

    /// For debuggers: byte offsets inside a control block, in this order: the saved stack
    /// pointer (the start of `ctx`), the next live coroutine, the id (u64), the state byte.
    pub(crate) const DEBUGGER_OFFSETS: [usize; 4] = [
        0,
        std::mem::offset_of!(Header, live_next),
        std::mem::offset_of!(Header, id),
        std::mem::offset_of!(Header, state),
    ];

    /// Where the control block of a coroutine on `stack` lives: at the top, 64-byte aligned.
    #[inline]
    pub(crate) fn location(stack: &Stack) -> *mut Header {
        ((stack.top() as usize - size_of::<Header>()) & !63) as *mut Header
    }

    /// Records the freshly mapped `stack` in the control block at its top, which owns it from
    /// now on (also while the stack goes round the pool).
    ///
    /// # Safety
    /// `hdr` is [`Header::location`] of `stack`.
    #[inline]
    pub(crate) unsafe fn own_stack(hdr: *mut Header, stack: Stack) {
        // SAFETY: `hdr` lies at the top of the stack, aligned (see `location`), inside the
        // mapping; writing through `addr_of_mut!` reads nothing there.
        unsafe { ptr::addr_of_mut!((*hdr).stack).write(ManuallyDrop::new(stack)) };
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
    /// mapped and stays put while the stack goes round the pool, so a pooled create neither
    /// reads nor rewrites it. The new coroutine has one reference (the caller's) and is linked
    /// into this thread's live list. Its first entry runs `entry` (the switch path's
    /// `coroutine_main`, passed in by the creator so that this floor does not import the switch).
    ///
    /// # Safety
    /// `hdr` must be [`Header::location`] of an unused stack whose `stack` field is set, large
    /// enough for the header, a slot of `slot_size` bytes aligned to `slot_align`, and the
    /// coroutine's frames.
    #[inline]
    pub(crate) unsafe fn init<F, R>(
        hdr: *mut Header,
        entry: Entry,
        f: F,
        id: CoId,
        name: Option<Box<str>>,
        slot_size: usize,
        slot_align: usize,
    ) -> NonNull<Header>
    where
        F: FnOnce() -> R + 'static,
        R: 'static,
    {
        let slot = ((hdr as usize - slot_size) & !(slot_align - 1)) as *mut u8;
        // SAFETY: `slot` and `hdr` lie inside the stack (caller's contract), are suitably
        // aligned, and do not overlap: the slot ends at or below `hdr`. Writing through
        // `addr_of_mut!` does not drop the dead values of a pooled control block.
        unsafe {
            ptr::write(slot.cast::<F>(), f);
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
            set!(id, id);
            set!(name, name);
            set!(transfer, Cell::new(ptr::null_mut()));
            set!(live_prev, Cell::new(ptr::null()));
            set!(live_next, Cell::new(ptr::null()));
            #[cfg(feature = "asan")]
            set!(asan, crate::asan::FiberState::new());
            (*(*hdr).ctx.get()).init(slot, &(*hdr).stack, entry);
            (*hdr).link_live();
            NonNull::new_unchecked(hdr)
        }
    }

    /// The stack a (live or pooled) control block owns: the field itself, so that the pool
    /// can take it out of a dead control block, or poison all around it.
    #[inline]
    pub(crate) fn stack_ref(&self) -> &Stack {
        &self.stack
    }

    /// The saved context the backend switches through.
    #[inline(always)]
    pub(crate) fn ctx(&self) -> *mut Context {
        self.ctx.get()
    }

    /// The state byte (state in the low two bits, flags above).
    #[inline(always)]
    pub(crate) fn state(&self) -> u8 {
        self.state.get()
    }

    /// Overwrites the state byte.
    #[inline(always)]
    pub(crate) fn set_state(&self, state: u8) {
        self.state.set(state)
    }

    /// Whether the coroutine is being dropped while suspended (its next yield unwinds it).
    #[inline(always)]
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancel.get()
    }

    /// Marks the coroutine as being dropped: its next yield unwinds it.
    #[inline]
    pub(crate) fn set_cancelled(&self) {
        self.cancel.set(true)
    }

    /// Records the payload of the panic that ended the coroutine.
    #[inline]
    pub(crate) fn set_panic(&self, payload: Box<dyn Any + Send>) {
        self.panic.set(Some(payload))
    }

    /// Takes the payload of the panic that ended the coroutine, if it has not been taken.
    #[inline]
    pub(crate) fn take_panic(&self) -> Option<Box<dyn Any + Send>> {
        self.panic.take()
    }

    /// Strong references: a new one.
    #[inline(always)]
    pub(crate) fn incref(&self) {
        self.refs.set(self.refs.get() + 1)
    }

    /// Strong references: one fewer; returns how many are left.
    #[inline(always)]
    pub(crate) fn decref(&self) -> usize {
        let n = self.refs.get() - 1;
        self.refs.set(n);
        n
    }

    /// Strong references: sets the count (a release holds one of its own while unwinding).
    #[inline]
    pub(crate) fn set_refs(&self, n: usize) {
        self.refs.set(n)
    }

    /// The header of the coroutine that entered this one (null: the thread).
    #[inline(always)]
    pub(crate) fn caller(&self) -> *const Header {
        self.caller.get()
    }

    /// Records who entered this coroutine.
    #[inline(always)]
    pub(crate) fn set_caller(&self, caller: *const Header) {
        self.caller.set(caller)
    }

    /// The next entry of the wake-up queue this coroutine is in (null: last, or in none).
    #[inline]
    pub(crate) fn wake_next(&self) -> *const Header {
        self.wake_next.get()
    }

    /// Sets the next entry of the wake-up queue this coroutine is in.
    #[inline]
    pub(crate) fn set_wake_next(&self, next: *const Header) {
        self.wake_next.set(next)
    }

    /// Takes this coroutine's own queue of deferred wake-ups, as (head, tail), leaving it empty.
    #[inline]
    pub(crate) fn take_wake_queue(&self) -> (*const Header, *const Header) {
        (
            self.wake_head.replace(ptr::null()),
            self.wake_tail.replace(ptr::null()),
        )
    }

    /// Appends `h` to this coroutine's queue of deferred wake-ups (links only: the caller
    /// owns the reference and the flags).
    #[inline]
    pub(crate) fn append_wakeup(&self, h: &Header) {
        let tail = self.wake_tail.replace(h);
        if tail.is_null() {
            self.wake_head.set(h);
        } else {
            // SAFETY: queue entries are live (each holds a strong reference).
            unsafe { (*tail).wake_next.set(h) };
        }
    }

    /// Runs the closure (moving it out of the slot) and stores its result in the slot.
    ///
    /// # Safety
    /// Called once, by the coroutine's entry function: the slot holds the closure.
    #[inline]
    pub(crate) unsafe fn run_closure(&self) {
        // SAFETY: forwarded contract.
        unsafe { (self.vtable.run)(self) }
    }

    /// Takes the closure's result out of the slot, if it is there and unclaimed.
    ///
    /// # Safety
    /// `R` is the coroutine's result type (the one its vtable was built for).
    #[inline]
    pub(crate) unsafe fn take_result<R>(&self) -> Option<R> {
        if !self.has_result.replace(false) {
            return None;
        }
        // SAFETY: has_result says the slot holds an `R` (of the caller's type, per the
        // contract); we cleared the flag so it is read once.
        Some(unsafe { ptr::read(self.slot.cast::<R>()) })
    }

    /// Drops what a freed coroutine leaves in its control block and slot: its name, and the
    /// closure (never entered) or the unclaimed result.
    ///
    /// # Safety
    /// Nothing refers to the header any more, and this is called once, before the stack (on
    /// which the slot lives) goes back to the pool.
    #[inline]
    pub(crate) unsafe fn drop_contents(&self) {
        // SAFETY: per the contract; the name is read once and the slot holds a valid closure
        // (READY) or result (`has_result`), dropped once.
        unsafe {
            let name = ptr::read(&self.name);
            if self.state.get() & STATE_MASK == READY {
                (self.vtable.drop_closure)(self.slot);
            } else if self.has_result.get() {
                (self.vtable.drop_result)(self.slot);
            }
            drop(name);
        }
    }

    /// The coroutine's id.
    #[inline(always)]
    pub(crate) fn id(&self) -> CoId {
        self.id
    }

    /// The name, if any.
    #[inline]
    pub(crate) fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Usable stack size in bytes.
    #[inline]
    pub(crate) fn stack_size(&self) -> usize {
        self.stack.size()
    }

    /// The bounds `(bottom, top)` of the usable stack.
    #[inline]
    pub(crate) fn stack_bounds(&self) -> (*mut u8, *mut u8) {
        (self.stack.bottom(), self.stack.top())
    }

    /// The guard page region below the stack: (start address, length).
    pub(crate) fn guard_range(&self) -> (usize, usize) {
        (self.stack.guard() as usize, self.stack.guard_len())
    }

    /// The stack's high-water mark so far, with the `stack-usage` feature.
    #[inline]
    pub(crate) fn stack_used(&self) -> Option<usize> {
        #[cfg(costack_stack_usage)]
        return Some(self.stack.used());
        #[cfg(not(costack_stack_usage))]
        None
    }

    /// The per-resume slot of typed layers (the generator); null when none is lent.
    #[inline(always)]
    pub(crate) fn transfer(&self) -> *mut () {
        self.transfer.get()
    }

    /// Puts back the per-resume slot that was there before a lend.
    #[inline(always)]
    pub(crate) fn set_transfer(&self, t: *mut ()) {
        self.transfer.set(t)
    }

    /// Lends a per-resume slot (or null), returning the previous one.
    #[inline(always)]
    pub(crate) fn replace_transfer(&self, t: *mut ()) -> *mut () {
        self.transfer.replace(t)
    }

    /// The coroutine's driver, cloned out of its slot.
    #[inline]
    pub(crate) fn driver(&self) -> Option<Rc<dyn Driver>> {
        // SAFETY: single-threaded; the slot is only replaced by `replace_driver` and
        // `take_driver`, and no reference into it outlives this clone.
        unsafe { (*self.driver.get()).clone() }
    }

    /// Whether the coroutine has a driver: a load, no clone.
    #[inline(always)]
    pub(crate) fn has_driver(&self) -> bool {
        // SAFETY: single-threaded, and no reference into the slot outlives this read (see
        // `driver`).
        unsafe { (*self.driver.get()).is_some() }
    }

    /// Puts `driver` in the slot and returns the old one, for the caller to drop.
    pub(crate) fn replace_driver(&self, driver: Option<Rc<dyn Driver>>) -> Option<Rc<dyn Driver>> {
        // SAFETY: single-threaded; no reference into the slot is held across this (readers
        // clone the `Rc` out at once), and the old value is returned, not dropped in place.
        unsafe { ptr::replace(self.driver.get(), driver) }
    }

    /// Takes the driver out of the slot of a coroutine being freed. The slot is usually empty:
    /// looked at first, it costs a load, not a 16-byte store, per coroutine.
    #[inline]
    pub(crate) fn take_driver(&self) -> Option<Rc<dyn Driver>> {
        // SAFETY: single-threaded, and no reference into the slot is held (see `driver`).
        let slot = unsafe { &mut *self.driver.get() };
        if slot.is_some() {
            slot.take()
        } else {
            None
        }
    }

    /// AddressSanitizer's bookkeeping for this fiber.
    #[cfg(feature = "asan")]
    #[inline(always)]
    pub(crate) fn asan(&self) -> &crate::asan::FiberState {
        &self.asan
    }

    /// The first live coroutine of this thread (null if none); the list goes on through
    /// [`next_live`](Header::next_live).
    pub(crate) fn first_live() -> *const Header {
        LIVE_HEAD.load()
    }

    /// The next live coroutine of this thread (null after the last).
    #[inline]
    pub(crate) fn next_live(&self) -> *const Header {
        self.live_next.get()
    }

    /// Adds a new coroutine to the front of this thread's live list.
    #[inline]
    fn link_live(&self) {
        let first = LIVE_HEAD.load();
        LIVE_HEAD.store(self);
        self.live_next.set(first);
        if !first.is_null() {
            // SAFETY: list members are live headers of this thread.
            unsafe { (*first).live_prev.set(self) };
        }
    }

    /// Removes a coroutine that is being freed (or leaked) from this thread's live list.
    #[inline]
    pub(crate) fn unlink_live(&self) {
        let (prev, next) = (self.live_prev.get(), self.live_next.get());
        if !next.is_null() {
            // SAFETY: list members are live headers of this thread.
            unsafe { (*next).live_prev.set(prev) };
        }
        if prev.is_null() {
            // It was the head.
            LIVE_HEAD.store(next);
        } else {
            // SAFETY: as above.
            unsafe { (*prev).live_next.set(next) };
        }
    }
}

local! {
    /// The most recently created live coroutine of this thread; the list goes on through
    /// `live_next`. A `crate::local` word: usable while the thread exits.
    static LIVE_HEAD: *const Header;
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
        // SAFETY: init() wrote an `F` into the slot and nothing has read it since: `run` is
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

/// Who resumes a coroutine at the head of a chain when one of the chain's waits ends: an event
/// loop for its tasks, an executor for the coroutine a future hosts. The contract it takes part
/// in is described in [`park`](crate::park); set one with
/// [`CoHandle::set_driver`](crate::CoHandle::set_driver).
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
/// dropped (see [`Coroutine`](crate::Coroutine) for what dropping does). Handles compare equal
/// when they refer to the same coroutine.
pub struct CoHandle {
    h: NonNull<Header>,
}

impl CoHandle {
    /// A new strong handle to the coroutine `h`.
    ///
    /// # Safety
    /// `h` must be a live coroutine of this thread.
    #[inline]
    pub(crate) unsafe fn from_header(h: NonNull<Header>) -> CoHandle {
        // SAFETY: live per the contract; the handle owns the new reference.
        unsafe { h.as_ref().incref() };
        CoHandle { h }
    }

    /// A handle that takes over a strong reference the caller owns (a new coroutine's first,
    /// a wake-up queue entry's).
    ///
    /// # Safety
    /// `h` is live, and the caller gives up one strong reference to it.
    #[inline(always)]
    pub(crate) unsafe fn adopt(h: NonNull<Header>) -> CoHandle {
        CoHandle { h }
    }

    /// The coroutine's control block.
    #[inline(always)]
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: a handle holds a strong reference, so the header is live.
        unsafe { self.h.as_ref() }
    }

    /// The coroutine's control block, as the pointer the switch and the pool take.
    #[inline(always)]
    pub(crate) fn header_ptr(&self) -> NonNull<Header> {
        self.h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fits_comfortably() {
        // Every backend keeps its saved contexts on the stacks, not in the control block (the
        // ucontext backend's `ucontext_t` is 4 560 bytes on aarch64), so it stays in one page.
        assert!(size_of::<Header>() <= 512, "{}", size_of::<Header>());
    }
}
