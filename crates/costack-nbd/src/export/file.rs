//! The file store: an export of a regular file or a block device, and its [`Backend`].
//!
//! `FileStore` serves a regular file (or a block device). Each loop thread has its own
//! [`costack_aio::File`] on it — the loop's file I/O, through io_uring or the loop's worker
//! threads — and every request that has to wait for the kernel goes through it while the
//! request's coroutine yields. Requests that need not wait do not:
//!
//! * reads go through the `File`, whose page-cache fast path (`preadv2(RWF_NOWAIT)` on the loop
//!   thread) copies cached data at once, with no trip through a ring or a worker; only what is
//!   not cached goes further;
//! * writes go where [`WritePath`] says: a `pwrite` into the page cache on the loop thread (the
//!   default, [`WritePath::Inline`]), or the `File` ([`WritePath::Aio`]), which first tries
//!   `pwritev2(RWF_NOWAIT)` where the file system supports it.
//!
//! `FLUSH` and FUA run `fdatasync` through the `File` before the reply. Trims punch holes;
//! zeroes punch holes or use `FALLOC_FL_ZERO_RANGE` (falling back to writing zeroes, except
//! for `FAST_ZERO`, which is refused with `ENOTSUP` instead). Allocation status comes from
//! `lseek(SEEK_DATA/SEEK_HOLE)`, which does not block on a regular file; `CACHE` is
//! `posix_fadvise(WILLNEED)`.
//!
//! Every thread's descriptor refers to the same open file, so there is one page cache and one
//! set of dirty pages: a write acknowledged on one connection is seen by every other, and a
//! flush on any connection covers them all (`NBD_FLAG_CAN_MULTI_CONN`).
//!
//! May import: the sibling `backend` and [`proto`](crate::proto). Only
//! [`Export`](super::Export) builds a store.

use super::backend::{Backend, ZeroMode};
use crate::proto::{Extent, STATE_HOLE, STATE_ZERO};
use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Where file writes go: into the page cache on the loop thread, or through the loop's file
/// I/O while the request's coroutine yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WritePath {
    /// `pwrite` on the loop thread. A buffered write copies into the page cache and returns;
    /// it can stall the loop only when the kernel throttles a writer that has dirtied too much
    /// memory, or when a partial page must first be read from disk. That is the usual case for
    /// a server whose page cache absorbs its writes, and it saves a trip through the kernel's
    /// io_uring workers (which is where io_uring sends buffered writes on ext4) per write.
    #[default]
    Inline,
    /// Through the loop's [`costack_aio::File`] (io_uring, or its worker pool) while the
    /// coroutine yields: never stalls the loop, costs a trip through the kernel's or the pool's
    /// workers per write.
    Aio,
}

/// A file (or block device) export.
#[derive(Debug)]
pub(super) struct FileStore {
    file: std::fs::File,
    size: u64,
    writes: WritePath,
    /// `fallocate(PUNCH_HOLE)` / `ZERO_RANGE` work (cleared on the first `EOPNOTSUPP`).
    can_punch: AtomicBool,
    can_zero_range: AtomicBool,
}

fn is_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL | libc::ENODEV)
    )
}

fn unsupported(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, what.to_owned())
}

impl FileStore {
    pub(super) fn open(path: &Path, read_only: bool, writes: WritePath) -> io::Result<FileStore> {
        let file = OpenOptions::new().read(true).write(!read_only).open(path)?;
        // lseek(SEEK_END) gives the size of block devices too, where metadata says 0.
        // SAFETY: lseek on an fd we own; no memory is passed.
        let end = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_END) };
        if end < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(FileStore {
            file,
            size: end as u64,
            writes,
            can_punch: AtomicBool::new(true),
            can_zero_range: AtomicBool::new(true),
        })
    }

    /// The size in bytes.
    pub(super) fn size(&self) -> u64 {
        self.size
    }

    fn fd(&self) -> libc::c_int {
        self.file.as_raw_fd()
    }

    pub(super) fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
        // SAFETY: fallocate on an fd we own; no memory is passed.
        let r =
            unsafe { libc::fallocate(self.fd(), mode, offset as libc::off_t, len as libc::off_t) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Zeroes a range keeping it allocated; `Unsupported` if the file system cannot.
    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        if !self.can_zero_range.load(Ordering::Relaxed) {
            return Err(unsupported("FALLOC_FL_ZERO_RANGE is not supported here"));
        }
        let r = self.fallocate(
            libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        );
        if let Err(e) = &r {
            if is_unsupported(e) {
                self.can_zero_range.store(false, Ordering::Relaxed);
                return Err(unsupported("FALLOC_FL_ZERO_RANGE is not supported here"));
            }
        }
        r
    }

    /// `lseek` with `whence` from `offset`; `None` for `ENXIO` (no data/hole past `offset`).
    fn seek(&self, offset: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
        // SAFETY: lseek on an fd we own; no memory is passed. The shared file position it
        // moves is not used by anyone (all I/O is positioned).
        let r = unsafe { libc::lseek(self.fd(), offset as libc::off_t, whence) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                return Ok(None);
            }
            return Err(e);
        }
        Ok(Some(r as u64))
    }

    fn block_status(&self, offset: u64, len: u32, max: usize) -> Vec<Extent> {
        let end = offset + u64::from(len);
        let mut out: Vec<Extent> = Vec::new();
        let mut at = offset;
        while at < end && out.len() < max {
            // Where does the current run (data or hole) end?
            let (flags, next) = match self.seek(at, libc::SEEK_DATA) {
                Ok(Some(d)) if d > at => (STATE_HOLE | STATE_ZERO, d),
                Ok(Some(_)) => match self.seek(at, libc::SEEK_HOLE) {
                    Ok(Some(h)) if h > at => (0, h),
                    _ => (0, end),
                },
                // No data after `at`: a hole to the end of the file.
                Ok(None) => (STATE_HOLE | STATE_ZERO, end),
                // The file system cannot tell: say "data", which is always safe.
                Err(_) => (0, end),
            };
            let n = next.min(end) - at;
            match out.last_mut() {
                Some(e) if e.flags == flags => e.length += n as u32,
                _ => out.push(Extent {
                    length: n as u32,
                    flags,
                }),
            }
            at += n;
        }
        if out.is_empty() {
            out.push(Extent {
                length: len.max(1),
                flags: 0,
            });
        }
        out
    }
}

/// Runs `f` with the store on a worker thread while the task yields (directly outside tasks).
fn blocking<T: Send + 'static>(
    store: &Arc<FileStore>,
    f: impl FnOnce(&FileStore) -> T + Send + 'static,
) -> T {
    let s = store.clone();
    costack_aio::run_blocking(move || f(&s))
}

/// A backend for the calling thread's coroutines, with its own [`costack_aio::File`] on the
/// store's open file.
///
/// # Errors
/// If the file cannot be opened again for this thread (out of file descriptors).
pub(super) fn backend(store: &Arc<FileStore>) -> io::Result<Rc<dyn Backend>> {
    Ok(Rc::new(FileBackend::new(store.clone())?))
}

/// A file store as one loop thread sees it: the shared store (its size and capabilities, and
/// the descriptor for inline writes and the `fallocate` calls) and this thread's
/// [`costack_aio::File`] on the same open file, for reads, flushes and queued writes.
struct FileBackend {
    store: Arc<FileStore>,
    aio: costack_aio::File,
}

impl FileBackend {
    fn new(store: Arc<FileStore>) -> io::Result<FileBackend> {
        // The same open file description: one page cache, one set of dirty pages for
        // `fdatasync`, whatever the thread.
        let aio = costack_aio::File::from_std(store.file.try_clone()?);
        Ok(FileBackend { store, aio })
    }
}

impl Backend for FileBackend {
    fn len(&self) -> u64 {
        self.store.size
    }

    fn read_at_owned(&self, buf: Vec<u8>, offset: u64) -> (io::Result<()>, Vec<u8>) {
        // Cached data comes back at once (the `File`'s fast path); the rest through the ring or
        // the worker pool while the request's coroutine yields.
        self.aio.read_exact_at_owned(buf, offset)
    }

    fn write_at_owned(&self, buf: Vec<u8>, offset: u64) -> (io::Result<()>, Vec<u8>) {
        match self.store.writes {
            WritePath::Inline => {
                let r = std::os::unix::fs::FileExt::write_all_at(&self.store.file, &buf, offset);
                (r, buf)
            }
            WritePath::Aio => self.aio.write_all_at_owned(buf, offset),
        }
    }

    fn flush(&self) -> io::Result<()> {
        self.aio.sync_data()
    }

    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 || !self.store.can_punch.load(Ordering::Relaxed) {
            return Ok(());
        }
        match self.aio.punch_hole(offset, len) {
            // A trim is a hint: a file system that cannot punch holes just keeps the data.
            Err(e) if is_unsupported(&e) => {
                self.store.can_punch.store(false, Ordering::Relaxed);
                Ok(())
            }
            r => r,
        }
    }

    fn zero(&self, offset: u64, len: u64, mode: ZeroMode) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        if mode.may_trim && self.store.can_punch.load(Ordering::Relaxed) {
            match self.aio.punch_hole(offset, len) {
                Err(e) if is_unsupported(&e) => {
                    self.store.can_punch.store(false, Ordering::Relaxed)
                }
                r => return r,
            }
        }
        if mode.fast_only {
            // `File::zero_range` falls back to writing zeroes, which is not fast: ask the file
            // system directly, and say ENOTSUP if it cannot.
            return blocking(&self.store, move |s| s.zero_range(offset, len));
        }
        self.aio.zero_range(offset, len)
    }

    fn cache(&self, offset: u64, len: u64) -> io::Result<()> {
        // SAFETY: posix_fadvise on an fd we own; it only starts readahead, no memory passed.
        let r = unsafe {
            libc::posix_fadvise(
                self.store.fd(),
                offset as libc::off_t,
                len as libc::off_t,
                libc::POSIX_FADV_WILLNEED,
            )
        };
        if r != 0 && r != libc::ESPIPE {
            return Err(io::Error::from_raw_os_error(r));
        }
        Ok(())
    }

    fn block_status(&self, offset: u64, len: u32, max_extents: usize) -> io::Result<Vec<Extent>> {
        Ok(self.store.block_status(offset, len, max_extents))
    }
}
