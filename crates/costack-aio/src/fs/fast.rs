//! `File`'s transfers inside a task: the page-cache fast path (`RWF_NOWAIT`), then the ring or
//! the worker pool through a bounce buffer for what it did not do.
//!
//! Imports `op` (the requests and their `nowait` calls), `request` (a request's trip), `buf`
//! (bounce buffers) and `wait` (the wait the trip parks in). The public methods that call
//! these are in the parent module.

use super::File;
use crate::buf;
use crate::op::sys::MAX_RW;
use crate::op::{read, write, Op};
use crate::request::run_in_task;
use crate::wait::{begin_wait_in, Wait};
use costack::Park;
use std::io;

/// Errors after which the `RWF_NOWAIT` calls are not tried again on a `File`: the file (a pipe,
/// a file system without the flag, an old kernel) cannot be read or written that way.
fn nowait_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL | libc::ENODEV | libc::ESPIPE)
    )
}

impl File {
    /// The fast path of a read: one `preadv2(RWF_NOWAIT)` into `buf`. `None` if it is off or
    /// failed (the caller then takes the slow path, which reports any error the same way).
    #[inline]
    pub(super) fn read_nowait(&self, buf: &mut [u8], offset: u64) -> Option<usize> {
        if !(self.fast.get() && self.nowait_reads.get()) {
            return None;
        }
        match read::nowait(self.raw(), buf, offset) {
            Ok(n) => Some(n),
            Err(e) => {
                if nowait_unsupported(&e) {
                    self.nowait_reads.set(false);
                }
                None
            }
        }
    }

    /// The fast path of a write: one `pwritev2(RWF_NOWAIT)` from `buf`, as
    /// [`read_nowait`](File::read_nowait).
    #[inline]
    pub(super) fn write_nowait(&self, buf: &[u8], offset: u64) -> Option<usize> {
        if !(self.fast.get() && self.nowait_writes.get()) {
            return None;
        }
        match write::nowait(self.raw(), buf, offset) {
            Ok(n) => Some(n),
            Err(e) => {
                if nowait_unsupported(&e) {
                    self.nowait_writes.set(false);
                }
                None
            }
        }
    }

    /// Whether `pos` is at or past the end of this file, if it is a regular file (`fstat`, on
    /// the loop's thread): then a short fast read is all there is, as `pread` would say.
    pub(super) fn ends_at(&self, pos: u64) -> bool {
        // SAFETY: `stat` is plain data; fstat fills it or fails.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `st` is a valid, writable `stat` for the whole call.
        if unsafe { libc::fstat(self.raw(), &mut st) } < 0 {
            return false;
        }
        (st.st_mode & libc::S_IFMT) == libc::S_IFREG && st.st_size as u64 <= pos
    }

    /// Reads `buf` at `offset` through the ring or the pool (a bounce buffer), in the task
    /// waiting with `w`.
    pub(super) fn read_slow(&self, w: Wait, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let len = buf.len().min(MAX_RW);
        let bounce = buf::take(len);
        let (r, op) = run_in_task(
            w,
            Some(&self.fd),
            Op::Read {
                buf: bounce,
                len,
                offset,
            },
        );
        let Op::Read { buf: bounce, .. } = op else {
            unreachable!()
        };
        if let Ok(n) = r {
            buf[..n].copy_from_slice(&bounce[..n]);
        }
        buf::give(bounce);
        r
    }

    /// Writes `buf` at `offset` through the ring or the pool (a bounce buffer), in the task
    /// waiting with `w`.
    pub(super) fn write_slow(&self, w: Wait, buf: &[u8], offset: u64) -> io::Result<usize> {
        let len = buf.len().min(MAX_RW);
        let mut bounce = buf::take(len);
        bounce[..len].copy_from_slice(&buf[..len]);
        let (r, op) = run_in_task(
            w,
            Some(&self.fd),
            Op::Write {
                buf: bounce,
                len,
                offset,
            },
        );
        if let Op::Write { buf, .. } = op {
            buf::give(buf);
        }
        r
    }

    /// A read in a coroutine: the fast path, then the ring or the pool for what it did not give
    /// (the wait begins only then, so a read served from the page cache never looks up the loop).
    #[inline]
    pub(super) fn read_in_task(
        &self,
        park: Park,
        buf: &mut [u8],
        offset: u64,
    ) -> io::Result<usize> {
        let len = buf.len().min(MAX_RW);
        let done = match self.read_nowait(&mut buf[..len], offset) {
            // All of it, or up to the end of the file.
            Some(n) if n == len || n == 0 || self.ends_at(offset + n as u64) => return Ok(n),
            Some(n) => n,
            None => 0,
        };
        let w = begin_wait_in(park);
        if done == 0 {
            return self.read_slow(w, buf, offset);
        }
        // Part of it was cached: the rest as a read of its own, a short count if that fails
        // (as `pread` reports an error after some bytes).
        let rest = self.read_slow(w, &mut buf[done..len], offset + done as u64);
        Ok(done + rest.unwrap_or(0))
    }

    /// A write in a coroutine: the fast path, then the ring or the pool for what it did not
    /// take (the wait begins only then).
    #[inline]
    pub(super) fn write_in_task(&self, park: Park, buf: &[u8], offset: u64) -> io::Result<usize> {
        let len = buf.len().min(MAX_RW);
        let done = match self.write_nowait(&buf[..len], offset) {
            Some(n) if n == len => return Ok(n),
            Some(n) => n,
            None => 0,
        };
        let w = begin_wait_in(park);
        if done == 0 {
            return self.write_slow(w, buf, offset);
        }
        let rest = self.write_slow(w, &buf[done..len], offset + done as u64);
        Ok(done + rest.unwrap_or(0))
    }
}
