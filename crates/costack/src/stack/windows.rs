//! Stacks on Windows: one `VirtualAlloc` region per stack, reserved and committed at once.
//!
//! ```text
//!   top     +---------------------------+
//!           |  usable stack (committed, |  PAGE_READWRITE
//!           |  only touched pages are   |
//!           |  backed by memory)        |
//!   bottom  +---------------------------+
//!           |  guard band               |  PAGE_READWRITE | PAGE_GUARD
//!           +---------------------------+
//!           |  floor page               |  PAGE_NOACCESS
//!   base    +---------------------------+  = the TEB's DeallocationStack while it runs
//! ```
//!
//! Windows has no `MAP_NORESERVE`: committed memory counts against the system's commit limit
//! (RAM plus page file) whether it is touched or not; only touched pages use RAM. A thread stack
//! is committed page by page as it grows instead, through a guard page the kernel moves down;
//! a coroutine stack is committed whole so that nothing depends on that growth having happened
//! in order (a function with a large frame may skip pages: MSVC's `__chkstk` does not probe what
//! the TEB's `StackLimit` says is committed).
//!
//! The guard band is what makes an overflow *reportable*. Touching a `PAGE_GUARD` page inside the
//! running stack (the asm backend switches the TEB's stack fields with the stack, so Windows and
//! wine know which stack is running) is taken as stack growth, and when the growth reaches the
//! thread's guaranteed reserve (`SetThreadStackGuarantee`; Rust's std asks for 20 KiB) the
//! system raises `EXCEPTION_STACK_OVERFLOW` with that reserve left usable for the exception
//! handlers — the `overflow` module's vectored handler reports the coroutine and aborts. Without
//! a band, an overflow by `push` or `call` leaves no room on the stack to deliver any exception
//! at all, and the process vanishes. The band (60 KiB) is larger than any guarantee Rust asks for;
//! the floor page below it stays inaccessible, the last stop.
//!
//! May import: `stack::error` (the kinds it classifies its errors into).

use super::error::StackErrorKind;
use std::io;
use std::ptr::NonNull;
use windows_sys::Win32::Foundation::{
    ERROR_COMMITMENT_LIMIT, ERROR_NOT_ENOUGH_MEMORY, ERROR_OUTOFMEMORY,
};
use windows_sys::Win32::System::Memory::{
    VirtualAlloc, VirtualFree, VirtualProtect, MEM_COMMIT, MEM_RELEASE, MEM_RESERVE, MEM_RESET,
    PAGE_GUARD, PAGE_NOACCESS, PAGE_READWRITE,
};
use windows_sys::Win32::System::SystemInformation::{GetSystemInfo, SYSTEM_INFO};

/// Pages below every stack: the no-access floor page and the `PAGE_GUARD` band above it
/// (64 KiB in all with 4 KiB pages).
pub(super) const GUARD_PAGES: usize = 16;

/// The system page size, read once.
pub(crate) fn page_size() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    let p = PAGE.load(Ordering::Relaxed);
    if p != 0 {
        return p;
    }
    // SAFETY: GetSystemInfo fills the struct it is given and cannot fail.
    let p = unsafe {
        let mut info: SYSTEM_INFO = std::mem::zeroed();
        GetSystemInfo(&mut info);
        info.dwPageSize as usize
    };
    let p = if p.is_power_of_two() { p } else { 4096 };
    PAGE.store(p, Ordering::Relaxed);
    p
}

/// Reserves and commits `len` bytes of stack whose lowest `guard` bytes become the floor page
/// and the guard band (see the module documentation). On failure, names the call that failed.
pub(super) fn map(len: usize, guard: usize) -> Result<NonNull<u8>, (&'static str, io::Error)> {
    let page = page_size();
    // SAFETY: a fresh region at an address of the system's choosing touches no existing memory;
    // the result is checked for null.
    let ptr = unsafe {
        VirtualAlloc(
            std::ptr::null(),
            len,
            MEM_RESERVE | MEM_COMMIT,
            PAGE_READWRITE,
        )
    };
    let Some(base) = NonNull::new(ptr.cast::<u8>()) else {
        return Err(("VirtualAlloc", io::Error::last_os_error()));
    };
    let mut old = 0;
    // SAFETY: both ranges lie inside the region just allocated (`guard` < `len`, and `guard`
    // holds at least two pages), which nobody else knows about.
    let protected = unsafe {
        VirtualProtect(ptr, page, PAGE_NOACCESS, &mut old) != 0
            && VirtualProtect(
                ptr.cast::<u8>().add(page).cast(),
                guard - page,
                PAGE_READWRITE | PAGE_GUARD,
                &mut old,
            ) != 0
    };
    if !protected {
        let err = io::Error::last_os_error();
        // SAFETY: releasing the region allocated above.
        unsafe { unmap(base, len) };
        return Err(("VirtualProtect", err));
    }
    Ok(base)
}

/// Releases a stack's region.
///
/// # Safety
/// `base` is a region made by [`map`] that nothing uses any more.
pub(super) unsafe fn unmap(base: NonNull<u8>, _len: usize) {
    // SAFETY: per the contract; MEM_RELEASE takes the base and a size of 0.
    unsafe { VirtualFree(base.as_ptr().cast(), 0, MEM_RELEASE) };
}

/// Tells the system that the contents of `len` bytes from `start` are no longer needed
/// (`MEM_RESET`): it may drop the pages instead of writing them to the page file, and they stop
/// counting in the working set. The range stays committed (so reusing the stack cannot fail),
/// and unlike Linux's `MADV_DONTNEED` the contents are undefined afterwards, not zero.
///
/// # Safety
/// The range lies inside a stack's usable part that nothing uses now.
pub(super) unsafe fn release(start: *mut u8, len: usize) {
    // SAFETY: per the contract; MEM_RESET only changes how the system treats the contents.
    unsafe { VirtualAlloc(start.cast(), len, MEM_RESET, PAGE_NOACCESS) };
}

/// Which limit an error of a memory call means.
pub(super) fn error_kind(_call: &'static str, err: &io::Error) -> StackErrorKind {
    match err.raw_os_error().map(|e| e as u32) {
        Some(ERROR_NOT_ENOUGH_MEMORY | ERROR_OUTOFMEMORY | ERROR_COMMITMENT_LIMIT) => {
            StackErrorKind::OutOfMemory
        }
        _ => StackErrorKind::Other,
    }
}

/// Windows has no limit on the number of mappings.
pub(super) fn map_count_limit() -> usize {
    0
}
