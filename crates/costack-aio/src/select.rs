//! Waiting on several things at once: the [`select!`](crate::select!) macro, [`select_any`]
//! for any number of branches of one type, and the [`Selectable`] protocol their branches
//! follow.
//!
//! Operations floor: imports the wakers (`waker`) and nothing else of the crate, so that any
//! operation (readiness in `io`, joins in `task`, sets in `joinset`, channels) can offer a
//! branch by implementing [`Selectable`].
//!
//! ```
//! use costack_aio::select::sleep;
//! use costack_aio::{spawn, EventLoop};
//! use std::time::Duration;
//!
//! let lp = EventLoop::new();
//! lp.block_on(|| {
//!     let mut quick = spawn(|| 42);
//!     let mut slow = spawn(|| { costack_aio::sleep(Duration::from_secs(60)); 0 });
//!     let got = costack_aio::select! {
//!         r = slow.join_branch() => r.unwrap(),
//!         r = quick.join_branch() => r.unwrap(),
//!         () = sleep(Duration::from_secs(1)) => -1,
//!     };
//!     assert_eq!(got, 42);
//!     slow.cancel(); // the losing branch left `slow` joinable (or cancellable)
//! });
//! ```
//!
//! # The protocol
//!
//! A select runs every branch's [`try_select`](Selectable::try_select) in turn; the first that
//! returns `Some` wins. If none does, it makes one [`Waker`] for the waiting task (or thread),
//! hands it to every branch's [`register`](Selectable::register), tries them all once more (a
//! value that arrived between the first try and the registration is not missed) and parks —
//! until the waker is woken or the nearest branch [`deadline`](Selectable::deadline) passes;
//! then it tries them all again, and registers again with a fresh waker if none is ready.
//! When the select ends — a branch won, or its task unwinds because a
//! [`timeout`](crate::timeout) expired, the task was cancelled or a branch panicked — every
//! branch is [`deregister`](Selectable::deregister)ed exactly once (a guard does it).
//!
//! A branch takes its value (a message, a join result) only in the `try_select` that returns
//! it, so a branch that loses consumes nothing: no message is lost.
//!
//! # Order
//!
//! Branches are tried in the order they are written, so when several are ready the first one
//! wins (and a branch that is always ready starves those after it). Start the `select!` with
//! `fair;` to rotate the first branch tried from one select to the next (per thread), so that
//! no ready branch waits forever behind another.
//!
//! # Where it works
//!
//! In a task, in a coroutine a task entered (the task waits with it), and outside any
//! coroutine. There, if the thread has an event loop, the select runs that loop while it
//! waits, as [`JoinHandle::join`](crate::JoinHandle::join) does (so a branch can wait for the
//! loop's tasks: a join, a channel they send on); otherwise the thread parks. Outside a task
//! readiness branches look at their fd every millisecond. A select cannot wait in a
//! [`call_soon`](crate::call_soon) callback (the loop is running already): it panics there.
//!
//! # What a losing branch has consumed
//!
//! Nothing, for every branch of this crate:
//!
//! * [`sleep`] / [`sleep_until`]: a timer has no state; a loser just did not fire.
//! * [`Flag::branch`]: a loser leaves the flag raised; the winner lowers it.
//! * [`JoinHandle::join_branch`](crate::JoinHandle::join_branch): the handle stays joinable;
//!   a winner takes the task's result, after which the handle is spent (joining it again
//!   panics with a message).
//! * [`JoinSet::join_next_branch`](crate::JoinSet::join_next_branch): the set keeps every
//!   result it did not hand out.
//! * Readiness ([`AsyncFd::readable_branch`](crate::io::AsyncFd::readable_branch), the
//!   sockets' `readable_branch`/`writable_branch`, [`io::readable_branch`](crate::io::readable_branch)):
//!   readiness is only looked at, never consumed; a winner says the fd *was* ready, and the
//!   read or write that follows may still say `WouldBlock` if someone else drained it.
//!
//! Any other [`Selectable`] (a channel's `recv_branch`, say) works in `select!` the same way;
//! its own docs say what it consumes.

use crate::waker::Waker;
use std::cell::Cell;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// One thing a select can wait for. See the [module docs](self) for the protocol.
///
/// An implementation must keep three rules: `try_select` never waits; after `register`, a
/// change that can make `try_select` succeed wakes the waker (from any thread: the waker is
/// `Send`); and `deregister` is harmless when nothing is registered (a select calls it on
/// every branch, also those it never registered). A `&mut` to a branch is a branch too, so a
/// branch can be kept across selects.
///
/// ```
/// use costack_aio::select::{sleep, Selectable};
/// use costack_aio::{EventLoop, Waker};
/// use std::cell::RefCell;
/// use std::rc::Rc;
/// use std::time::Duration;
///
/// /// A slot for one value, filled by another task.
/// #[derive(Clone, Default)]
/// struct Slot(Rc<RefCell<(Option<u32>, Option<Waker>)>>);
///
/// impl Slot {
///     fn fill(&self, v: u32) {
///         let waker = {
///             let mut s = self.0.borrow_mut();
///             s.0 = Some(v);
///             s.1.take()
///         };
///         if let Some(w) = waker {
///             w.wake();
///         }
///     }
/// }
///
/// impl Selectable for Slot {
///     type Output = u32;
///     fn try_select(&mut self) -> Option<u32> {
///         self.0.borrow_mut().0.take() // takes the value only when it wins
///     }
///     fn register(&mut self, waker: &Waker) {
///         self.0.borrow_mut().1 = Some(waker.clone());
///     }
///     fn deregister(&mut self) {
///         self.0.borrow_mut().1 = None;
///     }
/// }
///
/// let lp = EventLoop::new();
/// lp.block_on(|| {
///     let slot = Slot::default();
///     let s2 = slot.clone();
///     costack_aio::spawn(move || s2.fill(7));
///     let v = costack_aio::select! {
///         v = slot.clone() => v,
///         () = sleep(Duration::from_secs(60)) => 0,
///     };
///     assert_eq!(v, 7);
/// });
/// ```
pub trait Selectable {
    /// What the branch yields when it wins.
    type Output;

    /// Completes the branch if it can do so without waiting, taking its value; `None` leaves
    /// the source untouched.
    fn try_select(&mut self) -> Option<Self::Output>;

    /// Arranges for `waker` to be woken when `try_select` may succeed (wakes may be spurious).
    /// Replaces any waker this branch registered before; `waker` is good for one wake only.
    fn register(&mut self, waker: &Waker);

    /// Withdraws the registration, if any. Called on every branch when the select ends.
    fn deregister(&mut self);

    /// When `try_select` will succeed (or should be tried again) without any wake: a timer's
    /// deadline. The select bounds its park by the nearest one. Asked after `register`; the
    /// default is `None` (the branch is woken through its waker).
    fn deadline(&self) -> Option<Instant> {
        None
    }
}

impl<S: Selectable + ?Sized> Selectable for &mut S {
    type Output = S::Output;

    fn try_select(&mut self) -> Option<S::Output> {
        (**self).try_select()
    }

    fn register(&mut self, waker: &Waker) {
        (**self).register(waker)
    }

    fn deregister(&mut self) {
        (**self).deregister()
    }

    fn deadline(&self) -> Option<Instant> {
        (**self).deadline()
    }
}

/// A boxed branch, so that branches of different types can share one list (a
/// `Vec<Box<dyn Selectable<Output = T>>>` for [`select_any`]).
impl<S: Selectable + ?Sized> Selectable for Box<S> {
    type Output = S::Output;

    fn try_select(&mut self) -> Option<S::Output> {
        (**self).try_select()
    }

    fn register(&mut self, waker: &Waker) {
        (**self).register(waker)
    }

    fn deregister(&mut self) {
        (**self).deregister()
    }

    fn deadline(&self) -> Option<Instant> {
        (**self).deadline()
    }
}

// ---------------------------------------------------------------------------------------------
// Timers

/// A branch that fires once its deadline has passed: [`sleep`] and [`sleep_until`].
///
/// It keeps no registration: the select bounds its park by the deadline. Output: `()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sleep {
    /// `None`: a duration too long to represent, which never fires.
    deadline: Option<Instant>,
}

/// A branch that fires `d` from now (a duration too long for [`Instant`] never fires).
///
/// ```
/// use costack_aio::select::sleep;
/// use std::time::{Duration, Instant};
///
/// // Works on a plain thread too.
/// let t0 = Instant::now();
/// let which = costack_aio::select! {
///     () = sleep(Duration::from_secs(60)) => "late",
///     () = sleep(Duration::from_millis(5)) => "early",
/// };
/// assert_eq!(which, "early");
/// assert!(t0.elapsed() >= Duration::from_millis(5));
/// ```
pub fn sleep(d: Duration) -> Sleep {
    Sleep {
        deadline: Instant::now().checked_add(d),
    }
}

/// A branch that fires once `deadline` has passed (at once if it has already).
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline: Some(deadline),
    }
}

impl Selectable for Sleep {
    type Output = ();

    fn try_select(&mut self) -> Option<()> {
        match self.deadline {
            Some(d) if Instant::now() >= d => Some(()),
            _ => None,
        }
    }

    fn register(&mut self, _: &Waker) {}

    fn deregister(&mut self) {}

    fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

// ---------------------------------------------------------------------------------------------
// Cross-thread wake-ups

/// A flag any thread can raise, with a select branch that fires once it is raised: a
/// cross-thread wake-up for a select (stop requests, "new work" hints).
///
/// [`raise`](Flag::raise) sets the flag and wakes every select waiting on its
/// [`branch`](Flag::branch); the branch that wins lowers it again. Raises do not count:
/// several before a select end that one select. `Send + Sync + Clone`; clones share the flag.
///
/// ```
/// use costack_aio::select::{sleep, Flag};
/// use costack_aio::EventLoop;
/// use std::time::Duration;
///
/// let lp = EventLoop::new();
/// lp.block_on(|| {
///     let stop = Flag::new();
///     let s2 = stop.clone();
///     let t = std::thread::spawn(move || s2.raise());
///     let stopped = costack_aio::select! {
///         () = stop.branch() => true,
///         () = sleep(Duration::from_secs(60)) => false,
///     };
///     assert!(stopped);
///     assert!(!stop.is_raised()); // the winner lowered it
///     t.join().unwrap();
/// });
/// ```
#[derive(Clone, Default)]
pub struct Flag {
    state: Arc<Mutex<FlagState>>,
}

#[derive(Default)]
struct FlagState {
    raised: bool,
    /// The registered branches: their number and waker.
    waiters: Vec<(u64, Waker)>,
    next: u64,
}

impl Flag {
    /// A lowered flag.
    pub fn new() -> Flag {
        Flag::default()
    }

    fn lock(&self) -> MutexGuard<'_, FlagState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Raises the flag and wakes the selects waiting on it (from any thread).
    pub fn raise(&self) {
        let waiters = {
            let mut st = self.lock();
            st.raised = true;
            std::mem::take(&mut st.waiters)
        };
        for (_, w) in waiters {
            w.wake();
        }
    }

    /// Whether the flag is raised.
    pub fn is_raised(&self) -> bool {
        self.lock().raised
    }

    /// A branch that fires (with `()`) once the flag is raised, and lowers it. A losing branch
    /// leaves the flag as it was.
    pub fn branch(&self) -> FlagBranch<'_> {
        let mut st = self.lock();
        st.next += 1;
        FlagBranch {
            flag: self,
            id: st.next,
        }
    }
}

impl fmt::Debug for Flag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("Flag")
            .field("raised", &st.raised)
            .field("waiting", &st.waiters.len())
            .finish()
    }
}

/// The branch of a [`Flag`], made by [`Flag::branch`]. Output: `()`.
#[derive(Debug)]
pub struct FlagBranch<'a> {
    flag: &'a Flag,
    id: u64,
}

impl Selectable for FlagBranch<'_> {
    type Output = ();

    fn try_select(&mut self) -> Option<()> {
        let mut st = self.flag.lock();
        std::mem::take(&mut st.raised).then_some(())
    }

    fn register(&mut self, waker: &Waker) {
        let mut st = self.flag.lock();
        let id = self.id;
        st.waiters.retain(|(i, _)| *i != id);
        st.waiters.push((id, waker.clone()));
    }

    fn deregister(&mut self) {
        let id = self.id;
        self.flag.lock().waiters.retain(|(i, _)| *i != id);
    }
}

// ---------------------------------------------------------------------------------------------
// The executor

use __private::Branch;

/// Deregisters every branch when the select ends, however it ends.
struct Deregister<'a, 'b>(&'a mut [&'b mut dyn Branch]);

impl Drop for Deregister<'_, '_> {
    fn drop(&mut self) {
        for b in self.0.iter_mut() {
            b.deregister();
        }
    }
}

thread_local! {
    /// Where the next `fair` select starts.
    static ROTATE: Cell<usize> = const { Cell::new(0) };
}

/// Tries the branches from `start` round; the index of the first that fires.
fn try_all(branches: &mut [&mut dyn Branch], start: usize) -> Option<usize> {
    let n = branches.len();
    (0..n)
        .map(|k| (start + k) % n)
        .find(|&i| branches[i].try_fire())
}

/// Runs a select over `branches` (not empty) until one fires; returns its index. With `fair`,
/// the first branch tried rotates per thread; otherwise it is branch 0.
fn run(branches: &mut [&mut dyn Branch], fair: bool) -> usize {
    let n = branches.len();
    assert!(n > 0, "costack-aio: a select needs at least one branch");
    let start = if fair {
        ROTATE.with(|r| {
            let s = r.get() % n;
            r.set(s.wrapping_add(1));
            s
        })
    } else {
        0
    };
    let guard = Deregister(branches);
    if let Some(i) = try_all(guard.0, start) {
        return i;
    }
    loop {
        let (waker, park) = crate::waker::prepare_park_driving();
        for b in guard.0.iter_mut() {
            b.register(&waker);
        }
        if let Some(i) = try_all(guard.0, start) {
            return i;
        }
        let deadline = guard.0.iter().filter_map(|b| b.deadline()).min();
        park.park(deadline);
        if let Some(i) = try_all(guard.0, start) {
            return i;
        }
    }
}

/// Waits until one of `branches` fires; returns its index and output, or `None` if there are
/// no branches. Branches are tried in order (the first ready one wins); the others are left
/// untouched (see [what a loser consumed](self#what-a-losing-branch-has-consumed)). For a
/// number of branches known only at run time; for a fixed set of different kinds use
/// [`select!`](crate::select!).
///
/// ```
/// use costack_aio::select::select_any;
/// use costack_aio::{sleep, spawn, EventLoop};
/// use std::time::Duration;
///
/// let lp = EventLoop::new();
/// lp.block_on(|| {
///     let mut hs: Vec<_> = [30, 1, 20]
///         .into_iter()
///         .map(|ms| spawn(move || { sleep(Duration::from_millis(ms)); ms }))
///         .collect();
///     let mut branches: Vec<_> = hs.iter_mut().map(|h| h.join_branch()).collect();
///     let (i, r) = select_any(&mut branches).unwrap();
///     assert_eq!((i, r.unwrap()), (1, 1));
///     drop(branches);
///     assert_eq!(hs.remove(2).join(), 20); // the losers are still joinable
/// });
/// ```
pub fn select_any<S: Selectable>(branches: &mut [S]) -> Option<(usize, S::Output)> {
    if branches.is_empty() {
        return None;
    }
    let mut slots: Vec<__private::Slot<&mut S>> =
        branches.iter_mut().map(__private::Slot::new).collect();
    let mut dyns: Vec<&mut dyn Branch> = slots.iter_mut().map(|s| s as &mut dyn Branch).collect();
    let i = run(&mut dyns, false);
    drop(dyns);
    Some((i, slots[i].take()))
}

/// What the [`select!`](crate::select!) macro expands to. Not a public API.
#[doc(hidden)]
pub mod __private {
    use super::Selectable;
    use crate::waker::Waker;
    use std::time::Instant;

    /// One branch as the executor sees it, whatever its output type: a [`Slot`], which keeps
    /// the winner's output until the arm takes it.
    pub trait Branch {
        /// Tries the branch; `true` if it won (its output is kept).
        fn try_fire(&mut self) -> bool;
        fn register(&mut self, waker: &Waker);
        fn deregister(&mut self);
        fn deadline(&self) -> Option<Instant>;
    }

    /// A branch and, once it won, its output.
    pub struct Slot<S: Selectable> {
        src: S,
        out: Option<S::Output>,
    }

    impl<S: Selectable> Slot<S> {
        pub fn new(src: S) -> Self {
            Slot { src, out: None }
        }

        /// The output of the branch that won.
        pub fn take(&mut self) -> S::Output {
            self.out
                .take()
                .expect("costack-aio: select took the output of a branch that did not win")
        }
    }

    /// Nothing to do: the branch is deregistered already. The impl makes the macro's
    /// `drop` of the branches (which ends their borrows before the arm) a real drop.
    impl<S: Selectable> Drop for Slot<S> {
        fn drop(&mut self) {}
    }

    impl<S: Selectable> Branch for Slot<S> {
        fn try_fire(&mut self) -> bool {
            match self.src.try_select() {
                Some(v) => {
                    self.out = Some(v);
                    true
                }
                None => false,
            }
        }

        fn register(&mut self, waker: &Waker) {
            self.src.register(waker)
        }

        fn deregister(&mut self) {
            self.src.deregister()
        }

        fn deadline(&self) -> Option<Instant> {
            self.src.deadline()
        }
    }

    /// Runs the select; the index of the branch that won.
    pub fn run(branches: &mut [&mut dyn Branch], fair: bool) -> usize {
        super::run(branches, fair)
    }
}

/// Waits on several [`Selectable`] branches at once and runs the arm of the first that fires.
///
/// ```text
/// select! {
///     [fair; | biased;]          // optional: rotate the first branch tried, or not (the default)
///     PATTERN = BRANCH => ARM,   // BRANCH: any expression whose value is `Selectable`
///     ...
/// }
/// ```
///
/// Every `BRANCH` expression is evaluated first, in order. Then the branches are tried in
/// order — the first that is ready wins — and if none is, the caller waits (a task yields to
/// its loop; a plain thread parks) until one fires. The winner's output is bound to its
/// irrefutable `PATTERN` and its `ARM` (an expression, or a block) is the value of the
/// `select!`. Every branch is deregistered and dropped *before* the arm runs, so the arm may
/// use whatever the branches borrowed. The losers consumed nothing (see the
/// [module docs](mod@crate::select#what-a-losing-branch-has-consumed)).
///
/// A [`timeout`](crate::timeout) around a `select!` interrupts it like any wait, and a
/// [`select::sleep`](crate::select::sleep) branch gives the select a deadline of its own. Up to
/// 32 branches.
///
/// ```
/// use costack_aio::io::AsyncFd;
/// use costack_aio::select::sleep;
/// use costack_aio::EventLoop;
/// use std::io::Write;
/// use std::os::unix::net::UnixStream;
/// use std::time::Duration;
///
/// let lp = EventLoop::new();
/// lp.block_on(|| {
///     let (a, b) = UnixStream::pair().unwrap();
///     a.set_nonblocking(true).unwrap();
///     let a = AsyncFd::new(a);
///     let idle = costack_aio::select! {
///         r = a.readable_branch() => { r.unwrap(); false }
///         () = sleep(Duration::from_millis(5)) => true,
///     };
///     assert!(idle); // nothing was written yet
///     (&b).write_all(b"x").unwrap();
///     let idle = costack_aio::select! {
///         r = a.readable_branch() => { r.unwrap(); false }
///         () = sleep(Duration::from_secs(60)) => true,
///     };
///     assert!(!idle);
/// });
/// ```
#[macro_export]
macro_rules! select {
    // The branch parser (internal rules). All branches parsed: the select itself.
    (@munch @fair $f:tt; @idx [$($unused:tt)*]; @done [$( [$i:tt $p:tt $e:tt $b:tt] )+];) => {{
        let mut __sel = ( $( $crate::select::__private::Slot::new($e), )+ );
        let __won = $crate::select::__private::run(
            &mut [ $( &mut __sel.$i as &mut dyn $crate::select::__private::Branch ),+ ],
            $f,
        );
        match __won {
            $(
                $i => {
                    let __out = __sel.$i.take();
                    ::core::mem::drop(__sel);
                    let $p = __out;
                    $b
                }
            )+
            _ => ::core::unreachable!(),
        }
    }};
    (@munch @fair $f:tt; @idx []; @done [$($d:tt)*]; $($rest:tt)+) => {
        ::core::compile_error!("select! takes at most 32 branches")
    };
    // `PATTERN = BRANCH => { block }` with or without a comma after it.
    (@munch @fair $f:tt; @idx [$i:tt $($is:tt)*]; @done [$($d:tt)*];
        $p:pat = $e:expr => $b:block , $($rest:tt)*) => {
        $crate::select!(@munch @fair $f; @idx [$($is)*]; @done [$($d)* [$i $p $e $b]]; $($rest)*)
    };
    (@munch @fair $f:tt; @idx [$i:tt $($is:tt)*]; @done [$($d:tt)*];
        $p:pat = $e:expr => $b:block $($rest:tt)*) => {
        $crate::select!(@munch @fair $f; @idx [$($is)*]; @done [$($d)* [$i $p $e $b]]; $($rest)*)
    };
    // `PATTERN = BRANCH => expression,` or the last one without a comma.
    (@munch @fair $f:tt; @idx [$i:tt $($is:tt)*]; @done [$($d:tt)*];
        $p:pat = $e:expr => $b:expr , $($rest:tt)*) => {
        $crate::select!(@munch @fair $f; @idx [$($is)*]; @done [$($d)* [$i $p $e $b]]; $($rest)*)
    };
    (@munch @fair $f:tt; @idx [$i:tt $($is:tt)*]; @done [$($d:tt)*];
        $p:pat = $e:expr => $b:expr) => {
        $crate::select!(@munch @fair $f; @idx [$($is)*]; @done [$($d)* [$i $p $e $b]];)
    };
    (@munch $($t:tt)*) => {
        ::core::compile_error!("select!: expected `PATTERN = BRANCH => ARM,`")
    };
    // The entry points.
    () => {
        ::core::compile_error!("select! needs at least one branch")
    };
    (biased; $($t:tt)*) => {
        $crate::select!(@munch @fair false; @idx [
            0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
        ]; @done []; $($t)*)
    };
    (fair; $($t:tt)*) => {
        $crate::select!(@munch @fair true; @idx [
            0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
        ]; @done []; $($t)*)
    };
    ($($t:tt)*) => {
        $crate::select!(@munch @fair false; @idx [
            0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
        ]; @done []; $($t)*)
    };
}
