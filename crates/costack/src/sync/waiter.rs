//! The machinery every lock in [`sync`](super) shares: intrusive wait lists whose nodes live on
//! the waiting coroutines' stacks, the wait loop, and waking.
//!
//! # The protocol
//!
//! A coroutine that must wait puts a `Waiter` on its own stack and links it into the lock's
//! `WaitList` through a `Parked` guard, then yields until a waker sets the node's `granted`
//! flag. A waker (an unlock, a release, `wake_next`) first updates the lock's state on the
//! waiter's behalf — the lock is *handed* to it — then pops the node, sets `granted` and wakes
//! the coroutine. Because the hand-off happens before the waiter runs again, nobody can barge in
//! between, and the woken coroutine has nothing to re-check.
//!
//! Every lock hands off through one loop, `WaitList::grant_while`: while there is a first
//! waiter, the lock's own `admit` step decides whether it may go and updates the state on its
//! behalf, and the loop grants and wakes it. (`WaitList::grant_one` is that loop for exactly one
//! waiter, for a mutex's hand-off and a queue's `wake_next`.) The locks differ only in `admit`:
//! the semaphore takes the permits the waiter wants, the rwlock lets in a writer if the lock is
//! free or readers while no writer holds it, a queue's `wake_all` admits everyone.
//!
//! A node holds an *unowned* pointer to its coroutine's header. A strong handle would be a
//! reference cycle (the handle would live on the very stack it keeps alive), so the coroutine
//! could never be dropped. The pointer is valid while the node is linked because the node lives
//! on that coroutine's stack, and the `Parked` guard unlinks it before the stack goes away:
//! when a suspended coroutine is dropped, the core unwinds its stack and the guard's destructor
//! runs. The destructor then tells the lock what it lost — a queued request that vanished, or a
//! hand-off that its recipient never took — so the lock can pass it on.
//!
//! # Waiting and waking: the resume contract
//!
//! The wait is a [`Park`] of the waiting coroutine, [`until`](Park::until) its node's `granted`
//! flag is set; a waker wakes it through the contract's routing (`wake_routed`). So the locks
//! work wherever a coroutine runs: in a plain coroutine entered from `main` (the core's
//! deferred wake-ups resume it), in an event loop's task (the loop resumes it), in a coroutine
//! hosted by an executor (the executor polls it again), or nested inside any of these (the
//! chain waits with it). See [`park`](crate::park).
//!
//! # Spurious resumes
//!
//! Anyone holding a [`CoHandle`](crate::CoHandle) to a waiting coroutine can enter it (unless
//! its enterer holds it). [`Park::until`] therefore trusts only the node's `granted` flag: it
//! parks again until that is set.
//!
//! # Waking
//!
//! Inside a coroutine a wake only queues the target — behind the running coroutine (the core's
//! deferred wake-ups) or with its driver — so no other coroutine runs while a lock updates its
//! state. Outside any coroutine a target without a driver is entered at once and may do
//! anything before the wake returns — including dropping other waiters of the same list. The
//! locks therefore re-read their state after every wake, never keep a node pointer across one,
//! and collect a panic of a coroutine entered this way in `Wakeups` to continue it after the
//! remaining waiters have been served.
//!
//! May import: `coroutine::{header, wake}` and `park`. Every lock of `sync` imports it; it imports
//! none of them.

use crate::coroutine::header::{CoHandle, Header};
use crate::coroutine::wake::wake_routed;
use crate::park::Park;
use std::any::Any;
use std::cell::Cell;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::ptr::{self, NonNull};

/// A waiting coroutine's entry in a [`WaitList`]. It lives on that coroutine's stack.
pub(crate) struct Waiter {
    /// The waiting coroutine's wait (its header is unowned: see the module docs).
    park: Park,
    prev: Cell<*const Waiter>,
    next: Cell<*const Waiter>,
    /// The list the node is linked into, or null.
    list: Cell<*const WaitList>,
    /// Set by the waker when it unlinks the node and hands the coroutine what it waited for.
    granted: Cell<bool>,
    /// What the waiter asks for, in the lock's own terms (permits, reader or writer).
    want: usize,
}

impl Waiter {
    /// A node for the running coroutine, asking for `want`.
    ///
    /// # Panics
    /// Outside any coroutine, with a message naming `op`: there is nothing to suspend.
    #[inline]
    pub(crate) fn new(want: usize, op: &'static str) -> Waiter {
        let park = match Park::try_new() {
            Some(p) => p,
            None => must_wait_outside(op),
        };
        Waiter {
            park,
            prev: Cell::new(ptr::null()),
            next: Cell::new(ptr::null()),
            list: Cell::new(ptr::null()),
            granted: Cell::new(false),
            want,
        }
    }

    /// What the waiter asks for.
    #[inline]
    pub(crate) fn want(&self) -> usize {
        self.want
    }

    fn is_linked(&self) -> bool {
        !self.list.get().is_null()
    }

    /// Unlinks the node from whatever list it is in; no-op if it is in none.
    fn unlink(&self) {
        let list = self.list.get();
        if list.is_null() {
            return;
        }
        // SAFETY: a linked node's `list` points at the live list it is in (lists do not move
        // while non-empty: see `WaitList`), and its neighbours are live linked nodes.
        unsafe { (*list).remove(self) }
    }
}

#[cold]
#[inline(never)]
fn must_wait_outside(op: &str) -> ! {
    panic!(
        "costack: {op} would have to wait, but it was called outside of any coroutine: there is \
         nothing to suspend (it succeeds outside a coroutine only when it need not wait)"
    )
}

/// A FIFO of [`Waiter`]s, doubly linked through the nodes, so that a node can leave from the
/// middle in O(1) when its coroutine is dropped.
///
/// A list must not move while it is non-empty: nodes point back at it. The locks guarantee it
/// because every linked node belongs to a coroutine that is inside a method of the lock, and so
/// holds a shared borrow of it; the batch lists of [`CoQueue::wake_all`](super::CoQueue) live in
/// that method's frame.
pub(crate) struct WaitList {
    head: Cell<*const Waiter>,
    tail: Cell<*const Waiter>,
}

impl WaitList {
    /// An empty list.
    pub(crate) const fn new() -> WaitList {
        WaitList {
            head: Cell::new(ptr::null()),
            tail: Cell::new(ptr::null()),
        }
    }

    /// Whether no node is linked.
    #[inline(always)]
    pub(crate) fn is_empty(&self) -> bool {
        self.head.get().is_null()
    }

    /// What the first waiter asks for, if there is one.
    #[inline]
    pub(crate) fn front_want(&self) -> Option<usize> {
        // SAFETY: linked nodes are live (they unlink themselves before they go away).
        NonNull::new(self.head.get() as *mut Waiter).map(|n| unsafe { n.as_ref().want })
    }

    /// The number of linked nodes (walks the list).
    pub(crate) fn len(&self) -> usize {
        let mut n = 0;
        let mut p = self.head.get();
        while !p.is_null() {
            n += 1;
            // SAFETY: linked nodes are live.
            p = unsafe { (*p).next.get() };
        }
        n
    }

    /// Links `node` at the back, or at the front with `front`.
    ///
    /// # Safety
    /// `node` is not linked, and stays at its address and alive until it is unlinked; `self`
    /// does not move until it is empty again.
    #[inline]
    unsafe fn link(&self, node: &Waiter, front: bool) {
        debug_assert!(!node.is_linked());
        let me: *const Waiter = node;
        node.list.set(self);
        if front {
            let head = self.head.replace(me);
            node.prev.set(ptr::null());
            node.next.set(head);
            if head.is_null() {
                self.tail.set(me);
            } else {
                // SAFETY: the old head is a live linked node.
                unsafe { (*head).prev.set(me) };
            }
        } else {
            let tail = self.tail.replace(me);
            node.next.set(ptr::null());
            node.prev.set(tail);
            if tail.is_null() {
                self.head.set(me);
            } else {
                // SAFETY: the old tail is a live linked node.
                unsafe { (*tail).next.set(me) };
            }
        }
    }

    /// Unlinks `node`, which must be linked into `self`.
    fn remove(&self, node: &Waiter) {
        debug_assert!(ptr::eq(node.list.get(), self));
        let (prev, next) = (node.prev.get(), node.next.get());
        if prev.is_null() {
            self.head.set(next);
        } else {
            // SAFETY: linked neighbours are live.
            unsafe { (*prev).next.set(next) };
        }
        if next.is_null() {
            self.tail.set(prev);
        } else {
            // SAFETY: linked neighbours are live.
            unsafe { (*next).prev.set(prev) };
        }
        node.prev.set(ptr::null());
        node.next.set(ptr::null());
        node.list.set(ptr::null());
    }

    /// The one dispatch loop of every lock: while there is a first waiter and `admit(want)`
    /// says it may have what it asks for — after updating the lock's state on its behalf —
    /// unlinks it, marks it granted and wakes it ([`grant_front`](Self::grant_front)). Returns
    /// how many were granted. A panic of a waiter entered directly (outside any coroutine)
    /// continues once the loop is over (see [`Wakeups`]).
    ///
    /// `admit` runs again before every grant and must re-read the lock's state: outside a
    /// coroutine each grant runs the waiter before the next round.
    #[inline(always)]
    pub(crate) fn grant_while(&self, mut admit: impl FnMut(usize) -> bool) -> usize {
        let mut wakeups = Wakeups::new();
        let mut n = 0;
        while let Some(want) = self.front_want() {
            if !admit(want) {
                break;
            }
            self.grant_front(&mut wakeups);
            n += 1;
        }
        wakeups.finish();
        n
    }

    /// Grants the first waiter, if there is one, what the caller has already set aside for it
    /// (a mutex's hand-off, a queue's wake): [`grant_while`](Self::grant_while) for exactly one
    /// waiter, without a loop. Returns whether there was one.
    #[inline(always)]
    pub(crate) fn grant_one(&self) -> bool {
        let mut wakeups = Wakeups::new();
        let granted = self.grant_front(&mut wakeups);
        wakeups.finish();
        granted
    }

    /// Unlinks the first node, marks it granted and wakes its coroutine. Returns whether there
    /// was one.
    ///
    /// The caller has already updated the lock's state on the waiter's behalf. Outside a
    /// coroutine the waiter runs before this returns, so the caller must re-read any state it
    /// needs afterwards.
    #[inline]
    fn grant_front(&self, wakeups: &mut Wakeups) -> bool {
        let Some(node) = NonNull::new(self.head.get() as *mut Waiter) else {
            return false;
        };
        // SAFETY: the head is a live linked node.
        let node = unsafe { node.as_ref() };
        self.remove(node);
        node.granted.set(true);
        // SAFETY: the node was linked until a moment ago and nothing has run since, so its
        // coroutine, on whose stack it lives, is live. The node must not be touched any more:
        // once its coroutine runs, it may be gone.
        unsafe { wakeups.wake(node.park.header()) };
        true
    }

    /// Moves every node of `self` to the back of `to`.
    ///
    /// # Safety
    /// `to` does not move until it is empty again.
    pub(crate) unsafe fn move_all_to(&self, to: &WaitList) {
        while let Some(node) = NonNull::new(self.head.get() as *mut Waiter) {
            // SAFETY: a live linked node; it stays where it is (the `link` contract carries
            // over from when it was first linked), and `to` does not move (our contract).
            unsafe {
                let node = node.as_ref();
                self.remove(node);
                to.link(node, false);
            }
        }
    }

    /// Moves every node of `self` to the front of `to`, in order.
    ///
    /// # Safety
    /// As for [`move_all_to`](Self::move_all_to).
    pub(crate) unsafe fn move_all_to_front(&self, to: &WaitList) {
        while let Some(node) = NonNull::new(self.tail.get() as *mut Waiter) {
            // SAFETY: as in `move_all_to`.
            unsafe {
                let node = node.as_ref();
                self.remove(node);
                to.link(node, true);
            }
        }
    }
}

/// Wakes coroutines for a lock, and keeps the first panic of a coroutine that it entered
/// directly (outside any coroutine) to continue it once the lock has served everyone it should.
struct Wakeups {
    panic: Option<Box<dyn Any + Send>>,
}

impl Wakeups {
    #[inline]
    fn new() -> Wakeups {
        Wakeups { panic: None }
    }

    /// Wakes `co`, which was just granted what it waited for, through the resume contract.
    ///
    /// A coroutine whose chain is running (it is checking its flag before it suspends) or
    /// already queued needs no wake.
    ///
    /// # Safety
    /// `co` is a live coroutine of this thread.
    #[inline]
    unsafe fn wake(&mut self, co: NonNull<Header>) {
        // SAFETY: live per the contract.
        if let Some(co) = unsafe { wake_routed(co) } {
            self.enter_now(co);
        }
    }

    /// Outside any coroutine, with no driver: enters `co` now. Out of line, so that the common
    /// case (a deferred wake-up inside a coroutine) saves no registers for it.
    #[cold]
    #[inline(never)]
    fn enter_now(&mut self, co: CoHandle) {
        // Dropping `co` inside may free the coroutine (unwinding it), which can panic too.
        let r = catch_unwind(AssertUnwindSafe(move || {
            let _ = co.enter();
            drop(co);
        }));
        if let Err(p) = r {
            self.panic.get_or_insert(p);
        }
    }

    /// Continues the first panic of a coroutine entered directly, if there was one — unless the
    /// thread is already unwinding (a guard dropped by a panic outside any coroutine): a second
    /// panic out of a destructor would abort the process, so the payload is dropped, as the
    /// core does for wake-ups.
    #[inline]
    fn finish(mut self) {
        if let Some(p) = self.panic.take() {
            if !std::thread::panicking() {
                resume_unwind(p);
            }
        }
    }
}

/// Links a [`Waiter`] into a list for the duration of a wait, and cleans up if the waiting
/// coroutine is unwound instead: unlinks the node, then calls `abandon(granted)` so the lock
/// can re-examine its queue (`false`: the request vanished from it) or pass on what was handed
/// to a coroutine that never resumed to take it (`true`).
pub(crate) struct Parked<'a, F: FnOnce(bool)> {
    node: &'a Waiter,
    abandon: ManuallyDrop<F>,
    _not_send: PhantomData<*const ()>,
}

impl<'a, F: FnOnce(bool)> Parked<'a, F> {
    /// Links `node` at the back of `list`, or at its front with `front`.
    ///
    /// # Safety
    /// The returned guard must not be leaked (`mem::forget`): its destructor or
    /// [`wait`](Self::wait) is what unlinks the node before its frame goes. `list` does not
    /// move while the node is linked.
    #[inline(always)]
    pub(crate) unsafe fn new(list: &WaitList, node: &'a Waiter, front: bool, abandon: F) -> Self {
        // SAFETY: the node is borrowed for 'a, so it stays put and alive while this guard
        // lives, and the guard unlinks it before 'a ends (caller's contract). `list` per the
        // caller's contract.
        unsafe { list.link(node, front) };
        Parked {
            node,
            abandon: ManuallyDrop::new(abandon),
            _not_send: PhantomData,
        }
    }

    /// Suspends the coroutine until a waker grants the node. A resume without a grant (someone
    /// entered the coroutine through a handle) just yields again.
    ///
    /// If the coroutine is dropped meanwhile, `yield_now` unwinds it and the guard's destructor
    /// cleans up.
    #[inline(always)]
    pub(crate) fn wait(self) {
        // The node (and its park) was made by the waiting coroutine in the lock call that is
        // waiting here (see `Waiter::new`).
        self.node
            .park
            .until_started_here(|| self.node.granted.get());
        let mut this = ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped, so `abandon` is dropped exactly once, here. The
        // node was unlinked by the waker that granted it.
        unsafe { ManuallyDrop::drop(&mut this.abandon) };
    }
}

impl<F: FnOnce(bool)> Drop for Parked<'_, F> {
    fn drop(&mut self) {
        self.node.unlink();
        // SAFETY: taken once: `drop` runs once and `wait` does not drop the guard.
        let abandon = unsafe { ManuallyDrop::take(&mut self.abandon) };
        abandon(self.node.granted.get());
    }
}
