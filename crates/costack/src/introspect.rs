//! Introspection: the live coroutines of this thread, for logs, debuggers and tests.
//!
//! [`coroutines`] lists every coroutine of the calling thread that has not been freed yet (a
//! coroutine is freed when its last handle is dropped): its id, name, state, stack size and,
//! with the `stack-usage` feature, how much of the stack it has used so far.
//!
//! ```
//! use costack::{introspect, yield_now, Builder};
//!
//! let co = Builder::new().name("sleeper").create(yield_now);
//! let _ = co.enter();
//! let me = introspect::coroutines().into_iter().find(|c| c.id == co.id()).unwrap();
//! assert_eq!(me.name.as_deref(), Some("sleeper"));
//! assert_eq!(me.state, introspect::State::Suspended);
//! ```
//!
//! For gdb, `scripts/costack-gdb.py` adds `costack list` and `costack bt`, which print the
//! live coroutines of the stopped thread and the backtrace of each suspended one. It finds
//! them through [`costack_gdb_live_head`].
//!
//! May import: `coroutine::header` and `coroutine::id` (it walks the live list read-only).

use crate::coroutine::header::Header;
use crate::coroutine::state::{READY, RUNNING, SCHEDULED, STATE_MASK, SUSPENDED};
use crate::CoId;

/// The state of a coroutine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Created, never entered.
    Ready,
    /// Yielded, waiting to be entered again.
    Suspended,
    /// Entered: running, or on the chain of coroutines that entered the running one.
    Entered,
    /// Its closure has returned or panicked; handles to it remain.
    Finished,
}

/// A snapshot of one live coroutine.
#[derive(Debug, Clone)]
pub struct CoroutineInfo {
    /// Its id.
    pub id: CoId,
    /// Its name, if it has one.
    pub name: Option<String>,
    /// Its state.
    pub state: State,
    /// Whether a deferred wake-up has queued it.
    pub scheduled: bool,
    /// Usable stack size in bytes.
    pub stack_size: usize,
    /// High-water mark of its stack use in bytes (with the `stack-usage` feature).
    pub stack_used: Option<usize>,
}

/// Lists the live coroutines of the calling thread, most recently created first.
pub fn coroutines() -> Vec<CoroutineInfo> {
    let mut out = Vec::new();
    let mut p = Header::first_live();
    while !p.is_null() {
        // SAFETY: the live list only holds headers of this thread that have not been freed.
        let h = unsafe { &*p };
        let bits = h.state();
        out.push(CoroutineInfo {
            id: h.id(),
            name: h.name().map(str::to_owned),
            state: match bits & STATE_MASK {
                READY => State::Ready,
                SUSPENDED => State::Suspended,
                RUNNING => State::Entered,
                _ => State::Finished,
            },
            scheduled: bits & SCHEDULED != 0,
            stack_size: h.stack_size(),
            stack_used: h.stack_used(),
        });
        p = h.next_live();
    }
    out
}

/// For debuggers: the calling thread's most recently created live coroutine, or null. The list
/// continues through the pointer at byte offset `COSTACK_GDB_LAYOUT[1]` of each control block.
#[no_mangle]
pub extern "C" fn costack_gdb_live_head() -> *const u8 {
    Header::first_live().cast()
}

/// For debuggers: byte offsets inside a coroutine's control block, in this order: the switch
/// context, whose first word is the saved stack pointer (what it points at depends on the CPU:
/// `scripts/costack-gdb.py` rebuilds the registers for each), the next live coroutine, the id
/// (u64), the state byte.
#[no_mangle]
pub static COSTACK_GDB_LAYOUT: [usize; 4] = Header::DEBUGGER_OFFSETS;
