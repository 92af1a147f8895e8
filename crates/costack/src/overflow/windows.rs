//! Overflow reports on Windows: a vectored exception handler.
//!
//! The first coroutine a thread creates installs (once per process) a handler that Windows calls
//! before any frame-based (SEH) handler and before Rust's own stack-overflow handler, for every
//! exception on every thread. It looks only at the exceptions an overflow raises, and only
//! while a coroutine runs on the faulting thread:
//!
//! * `EXCEPTION_STACK_OVERFLOW`: the system's own verdict, raised when the growth of the running
//!   stack through its guard pages reaches the thread's guaranteed reserve (the asm backend's
//!   stacks, see `stack/windows.rs`; a fiber's stack, which Windows manages like a thread's). The
//!   handler runs in that reserve. A coroutine is running, so the stack is its own.
//! * `EXCEPTION_GUARD_PAGE` and `EXCEPTION_ACCESS_VIOLATION` (asm backend): the fault address lies
//!   in the coroutine's guard, or its stack pointer has gone below its stack — the same test as
//!   the Unix handler's.
//!
//! Then it reports the coroutine and aborts; everything else continues the search
//! (`EXCEPTION_CONTINUE_SEARCH`), so panics (which Rust raises as exceptions), debuggers and
//! Rust's report for an overflowing thread keep working.
//!
//! The reserve must be large enough to run the handler in: a thread whose guarantee is smaller
//! than [`MIN_GUARANTEE`] (Rust's std asks for 20 KiB on its threads; a thread started by other
//! code may have none) has it raised when it creates its first coroutine.
//!
//! May import: `overflow::report`, `coroutine::switch` (the running coroutine).

use super::report::{is_overflow, report};
use crate::coroutine::switch::current_header;
use std::sync::Once;
use windows_sys::Win32::Foundation::{
    EXCEPTION_ACCESS_VIOLATION, EXCEPTION_GUARD_PAGE, EXCEPTION_STACK_OVERFLOW,
};
use windows_sys::Win32::Storage::FileSystem::WriteFile;
use windows_sys::Win32::System::Console::{GetStdHandle, STD_ERROR_HANDLE};
use windows_sys::Win32::System::Diagnostics::Debug::{
    AddVectoredExceptionHandler, EXCEPTION_CONTINUE_SEARCH, EXCEPTION_POINTERS,
};
use windows_sys::Win32::System::Threading::SetThreadStackGuarantee;

/// The smallest guaranteed stack reserve a thread running coroutines gets: room for the
/// exception dispatch (a `CONTEXT` is 1.2 KiB) and the handler's report.
const MIN_GUARANTEE: u32 = 16 * 1024;

/// Installs the process-wide handler (once) and raises this thread's guaranteed reserve to
/// [`MIN_GUARANTEE`] if it is smaller. Called when a thread creates its first coroutine.
pub(super) fn init_thread() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: registering a handler with the right signature, first in the chain, for the
        // life of the process (it is never removed).
        unsafe { AddVectoredExceptionHandler(1, Some(on_exception)) };
    });
    let mut size = 0u32;
    // SAFETY: with 0 the call only reports this thread's current guarantee into `size`.
    if unsafe { SetThreadStackGuarantee(&mut size) } != 0 && size < MIN_GUARANTEE {
        size = MIN_GUARANTEE;
        // SAFETY: raising this thread's guarantee; the argument is ours.
        unsafe { SetThreadStackGuarantee(&mut size) };
    }
}

/// The vectored handler. Allocates nothing and takes no lock: it may run on the little reserve
/// an overflowed stack has left.
unsafe extern "system" fn on_exception(info: *mut EXCEPTION_POINTERS) -> i32 {
    let cur = current_header();
    if cur.is_null() {
        return EXCEPTION_CONTINUE_SEARCH;
    }
    // SAFETY: Windows passes valid exception and context records to vectored handlers.
    let (code, addr, sp) = unsafe {
        let rec = &*(*info).ExceptionRecord;
        // The second parameter of an access violation or a guard-page fault is the address.
        let addr = (rec.NumberParameters >= 2).then(|| rec.ExceptionInformation[1]);
        (
            rec.ExceptionCode,
            addr,
            (*(*info).ContextRecord).Rsp as usize,
        )
    };
    // SAFETY: the running coroutine's header is live while it runs (its enterer holds it).
    let h = unsafe { &*cur };
    match code {
        EXCEPTION_STACK_OVERFLOW => write_and_abort(report(h, addr, Some(sp)).as_bytes()),
        EXCEPTION_GUARD_PAGE | EXCEPTION_ACCESS_VIOLATION
            if cfg!(costack_asm) && is_overflow(h, addr, Some(sp)) =>
        {
            write_and_abort(report(h, addr, Some(sp)).as_bytes())
        }
        _ => EXCEPTION_CONTINUE_SEARCH,
    }
}

/// Writes the report to stderr and aborts.
fn write_and_abort(report: &[u8]) -> ! {
    let mut written = 0;
    // SAFETY: writing our buffer to the process's stderr handle (an invalid or missing handle
    // makes the call fail, which changes nothing).
    unsafe {
        WriteFile(
            GetStdHandle(STD_ERROR_HANDLE),
            report.as_ptr(),
            report.len() as u32,
            &mut written,
            std::ptr::null_mut(),
        );
    }
    std::process::abort()
}
