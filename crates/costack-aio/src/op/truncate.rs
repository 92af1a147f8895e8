//! `truncate`: set a file's length, on the ring (Linux 6.9 and later) and on a worker.
//!
//! Ground floor: imports only [`sys`](super::sys).

use super::sys::{einval, retry};
use io_uring::{opcode, squeue, types};
use std::io;
use std::os::fd::RawFd;

/// The ring's opcode for this request (optional: without it, the request goes to a worker).
pub(crate) const OPCODE: u8 = opcode::Ftruncate::CODE;

/// The submission queue entry: `ftruncate(fd, len)`.
pub(crate) fn sqe(fd: types::Fd, len: u64) -> squeue::Entry {
    opcode::Ftruncate::new(fd, len).build()
}

/// `ftruncate(2)`.
pub(crate) fn blocking(fd: RawFd, len: u64) -> io::Result<usize> {
    let len = i64::try_from(len).map_err(|_| einval())?;
    // SAFETY: ftruncate takes only integers.
    retry(|| unsafe { libc::ftruncate(fd, len) as isize })
}
