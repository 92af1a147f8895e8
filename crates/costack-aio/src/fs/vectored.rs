//! `File`'s vectored transfers (`preadv`/`pwritev`): in a task, one request of the total
//! length through a bounce buffer, scattered or gathered on the loop's thread.
//!
//! Imports `op` (the requests), `request` (a request's trip), `buf` (bounce buffers) and `wait`.

use super::File;
use crate::buf;
use crate::op::sys::{check_offset, MAX_RW};
use crate::op::{read, write, Op};
use crate::request::run_in_task;
use crate::wait::begin_wait;
use std::io::{self, IoSlice, IoSliceMut};

impl File {
    /// Reads into `bufs` in order, from `offset` on; returns how many bytes in all. Like
    /// `preadv(2)`. In a task this is one read of the total length into a bounce buffer,
    /// scattered into `bufs` when it completes.
    ///
    /// # Errors
    /// As [`read_at`](File::read_at).
    pub fn read_vectored_at(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> io::Result<usize> {
        check_offset(offset)?;
        let Some(w) = begin_wait() else {
            return read::blocking_vectored(self.raw(), bufs, offset);
        };
        let total = bufs
            .iter()
            .fold(0usize, |a, b| a.saturating_add(b.len()))
            .min(MAX_RW);
        let bounce = buf::take(total);
        let (r, op) = run_in_task(
            w,
            Some(&self.fd),
            Op::Read {
                buf: bounce,
                len: total,
                offset,
            },
        );
        let Op::Read { buf: bounce, .. } = op else {
            unreachable!()
        };
        if let Ok(n) = r {
            let mut src = &bounce[..n];
            for b in bufs.iter_mut() {
                if src.is_empty() {
                    break;
                }
                let k = b.len().min(src.len());
                b[..k].copy_from_slice(&src[..k]);
                src = &src[k..];
            }
        }
        buf::give(bounce);
        r
    }

    /// Writes `bufs` in order, from `offset` on; returns how many bytes in all. Like
    /// `pwritev(2)`. In a task the slices are gathered into one loop-owned buffer and written
    /// with one request.
    ///
    /// # Errors
    /// As [`write_at`](File::write_at).
    pub fn write_vectored_at(&self, bufs: &[IoSlice<'_>], offset: u64) -> io::Result<usize> {
        check_offset(offset)?;
        let Some(w) = begin_wait() else {
            return write::blocking_vectored(self.raw(), bufs, offset);
        };
        let total = bufs
            .iter()
            .fold(0usize, |a, b| a.saturating_add(b.len()))
            .min(MAX_RW);
        let mut bounce = buf::take(total);
        let mut at = 0;
        for b in bufs {
            let k = b.len().min(total - at);
            bounce[at..at + k].copy_from_slice(&b[..k]);
            at += k;
            if at == total {
                break;
            }
        }
        let (r, op) = run_in_task(
            w,
            Some(&self.fd),
            Op::Write {
                buf: bounce,
                len: total,
                offset,
            },
        );
        if let Op::Write { buf, .. } = op {
            buf::give(buf);
        }
        r
    }
}
