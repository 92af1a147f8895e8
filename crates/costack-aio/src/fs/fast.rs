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
use std::cell::Cell;
use std::io;

/// Errors after which the `RWF_NOWAIT` calls are not tried again on a `File`: the file (a pipe,
/// a file system without the flag, an old kernel) cannot be read or written that way.
fn nowait_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL | libc::ENODEV | libc::ESPIPE)
    )
}

/// Runs one `RWF_NOWAIT` call if the fast path is on and `works` (the per-direction flag of a
/// `File`); `None` if it is off or failed (the caller then takes the slow path, which reports any
/// error the same way), and `works` cleared for good after an error that says the file cannot be
/// used that way.
#[inline(always)]
fn try_nowait(
    on: bool,
    works: &Cell<bool>,
    call: impl FnOnce() -> io::Result<usize>,
) -> Option<usize> {
    if !(on && works.get()) {
        return None;
    }
    match call() {
        Ok(n) => Some(n),
        Err(e) => {
            if nowait_unsupported(&e) {
                works.set(false);
            }
            None
        }
    }
}

/// The result of a transfer whose first `done` bytes the fast path moved and whose rest went
/// through the loop with result `rest`: that result when the fast path moved nothing, else a
/// count, short if the rest failed (as `pread` reports an error only when nothing was read).
#[inline]
fn after_fast(done: usize, rest: io::Result<usize>) -> io::Result<usize> {
    if done == 0 {
        rest
    } else {
        Ok(done + rest.unwrap_or(0))
    }
}

/// What the page cache gave a read of `len` bytes.
enum Cached {
    /// All of it, or all there is up to the end of the file: the read is done.
    Done(usize),
    /// The first `n` bytes; the rest must come from the device.
    Part(usize),
    /// Nothing (not cached, or the fast path is off): the whole read must wait.
    Nothing,
}

impl File {
    /// The fast path of a read: one `preadv2(RWF_NOWAIT)` into `buf`.
    #[inline(always)]
    pub(super) fn read_nowait(&self, buf: &mut [u8], offset: u64) -> Option<usize> {
        try_nowait(self.fast.get(), &self.nowait_reads, || {
            read::nowait(self.raw(), buf, offset)
        })
    }

    /// The fast path of a write: one `pwritev2(RWF_NOWAIT)` from `buf`.
    #[inline]
    pub(super) fn write_nowait(&self, buf: &[u8], offset: u64) -> Option<usize> {
        try_nowait(self.fast.get(), &self.nowait_writes, || {
            write::nowait(self.raw(), buf, offset)
        })
    }

    /// Reads what the page cache holds of `buf` (at most `MAX_RW` bytes) at `offset`, and says
    /// whether that is the whole read. Inlined into the callers: a cached read is little more
    /// than the system call, and a call frame here was a sixth of its user-space instructions.
    #[inline(always)]
    fn read_cached(&self, buf: &mut [u8], offset: u64) -> Cached {
        match self.read_nowait(buf, offset) {
            Some(n) if n == buf.len() || n == 0 || self.ends_at(offset + n as u64) => {
                Cached::Done(n)
            }
            Some(n) => Cached::Part(n),
            None => Cached::Nothing,
        }
    }

    /// Whether `pos` is at or past the end of this file, if it is a regular file (`fstat`, on
    /// the loop's thread): then a short fast read is all there is, as `pread` would say.
    pub(super) fn ends_at(&self, pos: u64) -> bool {
        self.stat().is_ok_and(|st| {
            (st.st_mode & libc::S_IFMT) == libc::S_IFREG && st.st_size as u64 <= pos
        })
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
        let done = match self.read_cached(&mut buf[..len], offset) {
            Cached::Done(n) => return Ok(n),
            Cached::Part(n) => n,
            Cached::Nothing => 0,
        };
        let w = begin_wait_in(park);
        let rest = self.read_slow(w, &mut buf[done..len], offset + done as u64);
        after_fast(done, rest)
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
        let rest = self.write_slow(w, &buf[done..len], offset + done as u64);
        after_fast(done, rest)
    }

    /// An owned read in a coroutine: the fast path into `buf` itself, then the ring or the pool
    /// with `buf` (no copy), or a bounce buffer for the rest of a partly cached read.
    #[inline]
    pub(super) fn read_owned_in_task(
        &self,
        park: Park,
        mut buf: Vec<u8>,
        offset: u64,
    ) -> (io::Result<usize>, Vec<u8>) {
        let len = buf.len().min(MAX_RW);
        match self.read_cached(&mut buf[..len], offset) {
            Cached::Done(n) => return (Ok(n), buf),
            Cached::Part(n) => {
                let w = begin_wait_in(park);
                let rest = self.read_slow(w, &mut buf[n..len], offset + n as u64);
                return (after_fast(n, rest), buf);
            }
            Cached::Nothing => {}
        }
        let w = begin_wait_in(park);
        let (r, op) = run_in_task(w, Some(&self.fd), Op::Read { buf, len, offset });
        let Op::Read { buf, .. } = op else {
            unreachable!()
        };
        (r, buf)
    }

    /// An owned write in a coroutine: the fast path from `buf`, then the ring or the pool with
    /// `buf` (no copy), or a bounce buffer for the rest of a partly taken write.
    #[inline]
    pub(super) fn write_owned_in_task(
        &self,
        park: Park,
        buf: Vec<u8>,
        offset: u64,
    ) -> (io::Result<usize>, Vec<u8>) {
        let len = buf.len().min(MAX_RW);
        match self.write_nowait(&buf[..len], offset) {
            Some(n) if n == len => return (Ok(n), buf),
            Some(n) if n > 0 => {
                let w = begin_wait_in(park);
                let rest = self.write_slow(w, &buf[n..len], offset + n as u64);
                return (after_fast(n, rest), buf);
            }
            _ => {}
        }
        let w = begin_wait_in(park);
        let (r, op) = run_in_task(w, Some(&self.fd), Op::Write { buf, len, offset });
        let Op::Write { buf, .. } = op else {
            unreachable!()
        };
        (r, buf)
    }
}
