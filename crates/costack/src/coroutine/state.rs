//! The states of a coroutine and the flags beside them: the bits of its control block's state
//! byte, and which of them forbid entering it.
//!
//! May import: nothing of the crate.

// States of a coroutine (the low two bits of the state byte).
/// Created, never entered.
pub(crate) const READY: u8 = 0;
/// Yielded; waiting to be entered again.
pub(crate) const SUSPENDED: u8 = 1;
/// Entered: running, or on the chain of coroutines that entered the running one.
pub(crate) const RUNNING: u8 = 2;
/// Its closure returned or panicked.
pub(crate) const FINISHED: u8 = 3;
/// Flag on READY/SUSPENDED: queued by a deferred wake-up, to be entered by the wake-up loop.
pub(crate) const SCHEDULED: u8 = 4;
/// Flag on RUNNING (and FINISHED until its enterer settles it): the coroutine queued deferred
/// wake-ups that its enterer must run when it switches back.
pub(crate) const WAKEUPS: u8 = 8;
/// Flag on FINISHED until its enterer settles it: the closure panicked (payload in `panic`).
pub(crate) const PANICKED: u8 = 16;
/// Flag on SUSPENDED (set on RUNNING by the coroutine itself just before it switches back): it
/// is suspended in a wait of the resume contract ([`park`](crate::park)), not in a plain yield.
/// Whatever ends the wait wakes it through the switch's routed wake-up.
pub(crate) const PARKED: u8 = 32;
/// Flag on SUSPENDED|PARKED: the coroutine that entered it (`caller`) waits with it, and is
/// the only one that enters it again.
pub(crate) const HELD: u8 = 64;
/// Flag on SUSPENDED: the thread is exiting and its thread-locals are being destroyed; the
/// coroutine will never run again, and is leaked rather than unwound (the thread-exit policy
/// of the handle module).
pub(crate) const ORPHANED: u8 = 128;
/// The bits that say which state; the others are flags.
pub(crate) const STATE_MASK: u8 = 3;
/// A coroutine can be entered only if none of these is set: bit 1 of the state (RUNNING or
/// FINISHED), or a flag saying that somebody else will enter it (scheduled, held) or nobody
/// may (orphaned). PARKED does not stop an entry: a wait re-checks its condition when resumed.
pub(crate) const NOT_ENTERABLE: u8 = 2 | SCHEDULED | HELD | ORPHANED;
