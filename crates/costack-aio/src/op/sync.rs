//! `sync`: `fsync`, or `fdatasync`, on the ring and on a worker.
//!
//! Ground floor: imports only [`sys`](super::sys).

use super::sys::retry;
use io_uring::{opcode, squeue, types};
use std::io;
use std::os::fd::RawFd;

/// The ring's opcode for this request.
pub(crate) const OPCODE: u8 = opcode::Fsync::CODE;

/// The submission queue entry: `fsync`, or `fdatasync` with `data_only`.
pub(crate) fn sqe(fd: types::Fd, data_only: bool) -> squeue::Entry {
    let flags = if data_only {
        types::FsyncFlags::DATASYNC
    } else {
        types::FsyncFlags::empty()
    };
    opcode::Fsync::new(fd).flags(flags).build()
}

/// `fsync(2)`, or `fdatasync(2)` with `data_only`.
pub(crate) fn blocking(fd: RawFd, data_only: bool) -> io::Result<usize> {
    // SAFETY: fsync/fdatasync take only a descriptor.
    retry(|| unsafe {
        (if data_only {
            libc::fdatasync(fd)
        } else {
            libc::fsync(fd)
        }) as isize
    })
}
