//! Coroutine ids ([`CoId`]): unique in the process, numbered per thread.
//!
//! May import: `local` (the per-thread counter). The header records an id; the layers above hand them out
//! through `CoId::next`.

use crate::local::{local, LocalWord};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

local! {
    /// The last coroutine id handed out on this thread (0: none yet).
    static LAST_ID: u64;
}

/// A coroutine's id: unique in the process, stable for the coroutine's life, printed as
/// `co<thread>.<n>` (thread numbers count from 1 in the order threads first create a coroutine).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CoId(u64);

const ID_SEQ_BITS: u32 = 40;

impl CoId {
    /// The next id of this thread. `first_on_thread` runs before the thread's first id is
    /// handed out (the layers above set up per-thread state there).
    #[inline]
    pub(crate) fn next(first_on_thread: impl FnOnce()) -> CoId {
        let mut v = LAST_ID.load();
        if v == 0 {
            // This thread's first coroutine: number the thread.
            static THREADS: AtomicU64 = AtomicU64::new(0);
            v = (THREADS.fetch_add(1, Ordering::Relaxed) + 1) << ID_SEQ_BITS;
            first_on_thread();
        }
        v += 1;
        LAST_ID.store(v);
        CoId(v)
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
