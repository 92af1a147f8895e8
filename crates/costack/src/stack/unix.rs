//! Stacks on Unix: one anonymous private `MAP_NORESERVE` mapping per stack, its lowest page
//! made `PROT_NONE` as the guard. Only the pages a coroutine touches become resident, and
//! `MADV_DONTNEED` gives them back.
//!
//! May import: `stack::error` (the kinds it classifies its errors into).

use super::error::StackErrorKind;
use std::io;
use std::ptr::NonNull;

/// Pages of guard below every stack: one (a fault in it is caught by the `overflow` module's
/// `SIGSEGV` handler, which runs on an alternate signal stack).
pub(super) const GUARD_PAGES: usize = 1;

/// The system page size, read once.
pub(crate) fn page_size() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    let p = PAGE.load(Ordering::Relaxed);
    if p != 0 {
        return p;
    }
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let p = if p > 0 { p as usize } else { 4096 };
    PAGE.store(p, Ordering::Relaxed);
    p
}

/// Maps `len` bytes of stack whose lowest `guard` bytes are made inaccessible. On failure,
/// names the call that failed with its error.
pub(super) fn map(len: usize, guard: usize) -> Result<NonNull<u8>, (&'static str, io::Error)> {
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches no
    // existing memory. The result is checked against MAP_FAILED below.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(("mmap", io::Error::last_os_error()));
    }
    // SAFETY: `ptr` is the start of the mapping we just created, which is longer than `guard`.
    if unsafe { libc::mprotect(ptr, guard, libc::PROT_NONE) } != 0 {
        let err = io::Error::last_os_error();
        // SAFETY: unmapping the mapping we created above and nobody else knows about.
        unsafe { libc::munmap(ptr, len) };
        return Err(("mprotect", err));
    }
    // SAFETY: mmap succeeded, so ptr is not null.
    Ok(unsafe { NonNull::new_unchecked(ptr.cast()) })
}

/// Unmaps a stack.
///
/// # Safety
/// `base` and `len` describe a mapping made by [`map`] that nothing uses any more.
pub(super) unsafe fn unmap(base: NonNull<u8>, len: usize) {
    // SAFETY: per the contract.
    unsafe { libc::munmap(base.as_ptr().cast(), len) };
}

/// Gives `len` bytes from `start` back to the kernel: they read as zeroes again.
///
/// # Safety
/// The range lies inside a stack's usable part that nothing uses now.
pub(super) unsafe fn release(start: *mut u8, len: usize) {
    // SAFETY: per the contract; MADV_DONTNEED on private anonymous memory only resets its
    // contents.
    unsafe { libc::madvise(start.cast(), len, libc::MADV_DONTNEED) };
}

/// Which limit an error of `call` (`mmap` or `mprotect`) means.
pub(super) fn error_kind(call: &'static str, err: &io::Error) -> StackErrorKind {
    if err.raw_os_error() != Some(libc::ENOMEM) {
        return StackErrorKind::Other;
    }
    match map_count_status() {
        Some((used, max)) if used + 16 >= max => StackErrorKind::MapCount,
        // mprotect splitting a mapping fails with ENOMEM only at the map-count limit.
        _ if call == "mprotect" => StackErrorKind::MapCount,
        _ => StackErrorKind::OutOfMemory,
    }
}

/// `vm.max_map_count`, or 0 when /proc cannot tell.
pub(super) fn map_count_limit() -> usize {
    map_count_status().map(|(_, m)| m).unwrap_or(0)
}

/// (mappings in use by this process, vm.max_map_count), when /proc can tell.
fn map_count_status() -> Option<(usize, usize)> {
    let max = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let maps = std::fs::read("/proc/self/maps").ok()?;
    let used = maps.iter().filter(|&&b| b == b'\n').count();
    Some((used, max))
}
