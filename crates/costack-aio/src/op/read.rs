//! `read`: a positional read into a buffer, on the ring, on a worker, and on the page cache.
//!
//! Ground floor: imports only [`sys`](super::sys).

use super::sys::{positional, retry, IOV_MAX, MAX_RW};
use io_uring::{opcode, squeue, types};
use std::io::{self, IoSliceMut};
use std::os::fd::RawFd;

/// The ring's opcode for this request.
pub(crate) const OPCODE: u8 = opcode::Read::CODE;

/// The submission queue entry: read `len` bytes at `offset` into `buf`.
///
/// The entry points into `buf`: the caller keeps it alive and unmoved until the completion.
pub(crate) fn sqe(fd: types::Fd, buf: *mut u8, len: usize, offset: u64) -> squeue::Entry {
    opcode::Read::new(fd, buf, len as u32)
        .offset(offset)
        .build()
}

/// `pread(2)` into `buf`; on a descriptor that cannot seek, `read(2)` (as io_uring does).
pub(crate) fn blocking(fd: RawFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let len = buf.len().min(MAX_RW);
    let p = buf.as_mut_ptr().cast();
    positional(
        // SAFETY: `buf` is valid for writes of `len` bytes for the whole call.
        || unsafe { libc::pread(fd, p, len, offset as i64) },
        // SAFETY: as above.
        || unsafe { libc::read(fd, p, len) },
    )
}

/// One `preadv2(.., RWF_NOWAIT)` into `buf`: what the page cache holds, without waiting for
/// the device. `EAGAIN` when the data is not cached; `EOPNOTSUPP` (or `EINVAL`, `ENOSYS` on
/// old kernels) where the file cannot be read that way.
pub(crate) fn nowait(fd: RawFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len().min(MAX_RW),
    };
    // SAFETY: the iovec describes `buf`, which is writable and exclusively borrowed for the
    // whole (synchronous) call.
    retry(|| unsafe { libc::preadv2(fd, &iov, 1, offset as libc::off_t, libc::RWF_NOWAIT) })
}

/// `preadv(2)` into `bufs` (at most `IOV_MAX` of them); on a descriptor that cannot seek,
/// `readv(2)`.
pub(crate) fn blocking_vectored(
    fd: RawFd,
    bufs: &mut [IoSliceMut<'_>],
    offset: u64,
) -> io::Result<usize> {
    let n = bufs.len().min(IOV_MAX) as libc::c_int;
    let iov = bufs.as_ptr().cast::<libc::iovec>();
    positional(
        // SAFETY: `IoSliceMut` is ABI-compatible with `iovec` on Unix, and each slice is valid for
        // writes of its length for the whole call.
        || unsafe { libc::preadv(fd, iov, n, offset as i64) },
        // SAFETY: as above.
        || unsafe { libc::readv(fd, iov, n) },
    )
}
