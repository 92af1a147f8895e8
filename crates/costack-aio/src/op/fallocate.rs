//! `fallocate`: allocate, punch or zero a range, on the ring and on a worker.
//!
//! Ground floor: imports only [`sys`](super::sys).

use super::sys::retry;
use io_uring::{opcode, squeue, types};
use std::io;
use std::os::fd::RawFd;

/// The ring's opcode for this request.
pub(crate) const OPCODE: u8 = opcode::Fallocate::CODE;

/// The submission queue entry: `fallocate(fd, mode, offset, len)`.
pub(crate) fn sqe(fd: types::Fd, mode: i32, offset: u64, len: u64) -> squeue::Entry {
    opcode::Fallocate::new(fd, len)
        .offset(offset)
        .mode(mode)
        .build()
}

/// `fallocate(2)`.
pub(crate) fn blocking(fd: RawFd, mode: i32, offset: u64, len: u64) -> io::Result<usize> {
    // SAFETY: fallocate takes only integers.
    retry(|| unsafe { libc::fallocate(fd, mode, offset as i64, len as i64) as isize })
}
