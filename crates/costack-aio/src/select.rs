//! Waiting on several things at once: the [`Selectable`] protocol.
//!
//! Operations floor: imports the wakers (`waker`). (Skeleton: the select executor and its
//! macro/builder are built on this trait.)
//!
//! # The protocol
//!
//! A select runs every branch's [`try_select`](Selectable::try_select) in turn; the first that
//! returns `Some` wins. If none does, it makes one [`Waker`] for the waiting task, hands it to
//! every branch's [`register`](Selectable::register), tries them all once more (a value that
//! arrived between the first try and the registration is not missed) and parks; when woken it
//! tries again. When the select returns (a branch won, a deadline passed, or its task unwinds)
//! every branch is [`deregister`](Selectable::deregister)ed.
//!
//! A branch takes its value (a message, a permit, a join result) only in the `try_select` that
//! returns it, so a branch that loses consumes nothing: no message is lost.

use crate::waker::Waker;

/// One thing a select can wait for. See the [module docs](self) for the protocol.
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
}
