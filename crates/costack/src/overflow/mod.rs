//! Stack-overflow reports.
//!
//! A coroutine that runs off the end of its stack touches the guard below it (see `stack`), and
//! the system raises a fault: left alone, a bare "Segmentation fault" or a silent exit with no
//! hint of which coroutine, or that it was an overflow at all. So the first coroutine a thread
//! creates installs (once per process) a handler that recognises only an overflow of the
//! coroutine running on the faulting thread, prints which coroutine (id, name) overflowed a stack
//! of what size, and aborts; every other fault goes on to whoever handled it before. How the
//! handler is hooked in is each system's own:
//!
//! * `unix`: a `SIGSEGV` handler on an alternate signal stack, chaining to the previous one;
//! * `windows`: a vectored exception handler, called first, that passes on what is not ours.
//!
//! What both share — recognising an overflow and composing the report without allocating — is
//! in `report`.
//!
//! May import: its files (`report`, and the system's). The builder calls it; it calls nothing
//! above.

mod report;
#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as os;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as os;

/// Installs the process-wide handler (once) and whatever this thread needs for it. Called when a
/// thread creates its first coroutine.
pub(crate) fn init_thread() {
    os::init_thread();
}
