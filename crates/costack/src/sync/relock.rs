//! [`Relock`]: the guards that a [`CoQueue`](crate::sync::CoQueue) wait can release and take
//! back, sealed so that only the locks of this module implement it.
//!
//! May import: nothing of the crate. Each lock implements the trait for its guards.

/// A guard that [`CoQueue::wait_with`](crate::sync::CoQueue::wait_with) can release while the
/// coroutine waits and take back after: [`CoMutexGuard`](crate::sync::CoMutexGuard),
/// [`CoRwLockReadGuard`](crate::sync::CoRwLockReadGuard),
/// [`CoRwLockWriteGuard`](crate::sync::CoRwLockWriteGuard) and
/// [`CoSemaphorePermit`](crate::sync::CoSemaphorePermit). Implemented only by those (the trait
/// is sealed).
pub trait Relock: sealed::Sealed {}

pub(crate) mod sealed {
    /// The workings of [`Relock`](super::Relock), hidden from users.
    pub trait Sealed: Sized {
        /// What is left of the guard while the lock is released: enough to take it again.
        type Unlocked;

        /// Releases the lock.
        fn unlock_for_wait(self) -> Self::Unlocked;

        /// Takes the lock again, waiting if need be.
        fn relock_after_wait(unlocked: Self::Unlocked) -> Self;
    }
}
