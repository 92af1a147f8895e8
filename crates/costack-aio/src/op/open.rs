//! `open`: open a path relative to the working directory, on the ring and on a worker.
//!
//! Ground floor: imports only [`sys`](super::sys).

use super::sys::retry;
use io_uring::{opcode, squeue, types};
use std::ffi::CStr;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// The ring's opcode for this request.
pub(crate) const OPCODE: u8 = opcode::OpenAt::CODE;

/// The submission queue entry: `openat(AT_FDCWD, path, flags | O_CLOEXEC, mode)`.
///
/// The entry points into `path`: the caller keeps it alive and unmoved until the completion.
pub(crate) fn sqe(path: &CStr, flags: i32, mode: libc::mode_t) -> squeue::Entry {
    opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr())
        .flags(flags | libc::O_CLOEXEC)
        .mode(mode)
        .build()
}

/// `open(2)` with `flags | O_CLOEXEC` and `mode` (for a file it creates); the new descriptor
/// goes to `opened`.
pub(crate) fn blocking(
    path: &CStr,
    flags: i32,
    mode: libc::mode_t,
    opened: &mut Option<OwnedFd>,
) -> io::Result<usize> {
    let flags = flags | libc::O_CLOEXEC;
    // SAFETY: `path` is a valid NUL-terminated string for the whole call.
    let new = retry(|| unsafe { libc::open(path.as_ptr(), flags, mode as libc::c_uint) as isize })?;
    // SAFETY: open(2) just returned this descriptor; nothing else owns it.
    *opened = Some(unsafe { OwnedFd::from_raw_fd(new as RawFd) });
    Ok(new)
}

/// Takes ownership of the descriptor a completed ring open returned (`res >= 0`).
///
/// # Safety
/// `res` must be a descriptor the kernel just opened for this request, known to nobody else.
pub(crate) unsafe fn adopt(res: i32, opened: &mut Option<OwnedFd>) {
    // SAFETY: by the caller's contract, `res` is a fresh descriptor nobody else owns.
    *opened = Some(unsafe { OwnedFd::from_raw_fd(res) });
}
