//! `write`: a positional write from a buffer, on the ring, on a worker, and into the page
//! cache.
//!
//! Ground floor: imports only [`sys`](super::sys).

use super::sys::{positional, retry, IOV_MAX, MAX_RW};
use io_uring::{opcode, squeue, types};
use std::io::{self, IoSlice};
use std::os::fd::RawFd;

/// The ring's opcode for this request.
pub(crate) const OPCODE: u8 = opcode::Write::CODE;

/// The submission queue entry: write `len` bytes of `buf` at `offset`.
///
/// The entry points into `buf`: the caller keeps it alive and unmoved until the completion.
pub(crate) fn sqe(fd: types::Fd, buf: *const u8, len: usize, offset: u64) -> squeue::Entry {
    opcode::Write::new(fd, buf, len as u32)
        .offset(offset)
        .build()
}

/// `pwrite(2)` from `buf`; on a descriptor that cannot seek, `write(2)`.
pub(crate) fn blocking(fd: RawFd, buf: &[u8], offset: u64) -> io::Result<usize> {
    let len = buf.len().min(MAX_RW);
    let p = buf.as_ptr().cast();
    positional(
        // SAFETY: `buf` is valid for reads of `len` bytes for the whole call.
        || unsafe { libc::pwrite(fd, p, len, offset as i64) },
        // SAFETY: as above.
        || unsafe { libc::write(fd, p, len) },
    )
}

/// One `pwritev2(.., RWF_NOWAIT)` from `buf`: a write that the kernel can take without
/// waiting (into the page cache, where the file system supports it). `EAGAIN` when it would
/// wait; `EOPNOTSUPP` where the file system cannot write that way.
pub(crate) fn nowait(fd: RawFd, buf: &[u8], offset: u64) -> io::Result<usize> {
    let iov = libc::iovec {
        iov_base: buf.as_ptr().cast_mut().cast(),
        iov_len: buf.len().min(MAX_RW),
    };
    // SAFETY: the iovec describes `buf`, which stays borrowed for the whole (synchronous) call;
    // the kernel only reads from it.
    retry(|| unsafe { libc::pwritev2(fd, &iov, 1, offset as libc::off_t, libc::RWF_NOWAIT) })
}

/// `pwritev(2)` from `bufs` (at most `IOV_MAX` of them); on a descriptor that cannot seek,
/// `writev(2)`.
pub(crate) fn blocking_vectored(fd: RawFd, bufs: &[IoSlice<'_>], offset: u64) -> io::Result<usize> {
    let n = bufs.len().min(IOV_MAX) as libc::c_int;
    let iov = bufs.as_ptr().cast::<libc::iovec>();
    positional(
        // SAFETY: `IoSlice` is ABI-compatible with `iovec` on Unix, and each slice is valid for
        // reads of its length for the whole call.
        || unsafe { libc::pwritev(fd, iov, n, offset as i64) },
        // SAFETY: as above.
        || unsafe { libc::writev(fd, iov, n) },
    )
}
