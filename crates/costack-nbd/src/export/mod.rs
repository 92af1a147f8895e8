//! What the server serves: an export, and the backends that store its bytes.
//!
//! # Two halves
//!
//! An export is shared by every event-loop thread, but the I/O on it happens in coroutines, each
//! bound to its thread. So it comes in two halves:
//!
//! * an [`Export`] (`Send + Sync`): the store itself — a file, or memory — with its size, name
//!   and whether it is read-only; made once, shared by all threads through an `Arc`;
//! * a [`Backend`] per loop thread, made by [`Export::backend`]: the object the request
//!   coroutines call. Its methods look blocking; inside a task they *yield* while the work is
//!   done elsewhere (a worker thread, the kernel), so one slow request never stalls the others.
//!
//! # The memory store
//!
//! [`MemStore`] keeps the export in 64 KiB chunks allocated on first write, each behind its own
//! reader-writer lock (the threads of the server may touch the same chunk). A chunk never
//! written, or trimmed away, is a hole that reads as zeroes, and `BLOCK_STATUS` says so. Nothing
//! in it blocks for long, so its backend does the copy on the loop thread.
//!
//! # The file store
//!
//! [`FileStore`] serves a regular file (or a block device). Each loop thread has its own
//! [`costack_aio::File`] on it — the loop's file I/O, through io_uring or the loop's worker
//! threads — and every request that has to wait for the kernel goes through it while the
//! request's coroutine yields. In front of it sit two fast paths that never wait:
//!
//! * reads first try `preadv2(RWF_NOWAIT)` on the loop thread: data in the page cache is
//!   copied at once, with no trip through a ring or a worker; only what is not cached (the
//!   kernel says `EAGAIN`) goes through the `File`;
//! * writes try `pwritev2(RWF_NOWAIT)` where the file system supports it; otherwise they go
//!   where [`WritePath`] says: a `pwrite` into the page cache on the loop thread (the default,
//!   [`WritePath::Inline`]), or the `File` ([`WritePath::Aio`]).
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

use crate::proto::{Extent, STATE_HOLE, STATE_ZERO};
use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

/// How a write-zeroes request may be carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ZeroMode {
    /// The client allows a hole (no `NO_HOLE` flag).
    pub may_trim: bool,
    /// `FAST_ZERO`: fail with `ENOTSUP` unless it is faster than writing zeroes.
    pub fast_only: bool,
}

/// The per-thread I/O interface of an export, used by the request coroutines.
///
/// Every method may yield the calling task (never the thread) while the work is done. Offsets
/// and lengths have been checked against [`len`](Backend::len) before any call.
pub trait Backend {
    /// The export's size in bytes.
    fn len(&self) -> u64;

    /// Whether the export is empty (size 0).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills all of `buf` from `offset` and gives the buffer back (zero-copy for backends that
    /// hand buffers to the kernel).
    fn read_at_owned(&self, buf: Vec<u8>, offset: u64) -> (io::Result<()>, Vec<u8>);

    /// Writes all of `buf` at `offset` and gives the buffer back.
    fn write_at_owned(&self, buf: Vec<u8>, offset: u64) -> (io::Result<()>, Vec<u8>);

    /// Makes every write completed so far durable (`fdatasync`).
    fn flush(&self) -> io::Result<()>;

    /// Discards a range (advisory: it may do nothing).
    fn trim(&self, offset: u64, len: u64) -> io::Result<()>;

    /// Makes a range read as zeroes. With `fast_only`, fails with `ErrorKind::Unsupported`
    /// (`ENOTSUP` on the wire) without changing anything unless it is cheaper than a write.
    fn zero(&self, offset: u64, len: u64, mode: ZeroMode) -> io::Result<()>;

    /// A hint that the range will be read soon.
    fn cache(&self, offset: u64, len: u64) -> io::Result<()>;

    /// The allocation status (`base:allocation`) of the range, as consecutive extents starting
    /// at `offset`: at least one, at most `max_extents`, covering at most `len` bytes.
    fn block_status(&self, offset: u64, len: u32, max_extents: usize) -> io::Result<Vec<Extent>>;
}

/// Where file writes go when the kernel cannot take them without blocking (`RWF_NOWAIT`
/// is not supported for buffered writes on most file systems).
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

/// An export: a name, a store, and whether clients may write. Shared by every thread.
#[derive(Debug)]
pub struct Export {
    /// The name clients ask for (the empty name always selects it too).
    pub name: String,
    /// A line for humans (`NBD_INFO_DESCRIPTION`, `LIST`).
    pub description: String,
    /// Refuse writes.
    pub read_only: bool,
    store: Store,
}

#[derive(Debug)]
enum Store {
    Memory(Arc<MemStore>),
    File(Arc<FileStore>),
}

impl Export {
    /// An in-memory export of `size` bytes, all zero (and all hole) at first.
    ///
    /// # Errors
    /// If `size` is larger than [`MemStore::MAX_SIZE`].
    pub fn memory(name: &str, size: u64, read_only: bool) -> io::Result<Export> {
        Ok(Export {
            name: name.to_owned(),
            description: format!("costack-nbd in-memory export, {size} bytes"),
            read_only,
            store: Store::Memory(Arc::new(MemStore::new(size)?)),
        })
    }

    /// An export of the file (or block device) at `path`, opened read-write unless `read_only`.
    ///
    /// # Errors
    /// If the file cannot be opened, or its size cannot be found.
    pub fn file(name: &str, path: &Path, read_only: bool, writes: WritePath) -> io::Result<Export> {
        let store = FileStore::open(path, read_only, writes)?;
        Ok(Export {
            name: name.to_owned(),
            description: format!("costack-nbd export of {}", path.display()),
            read_only,
            store: Store::File(Arc::new(store)),
        })
    }

    /// The size in bytes.
    pub fn size(&self) -> u64 {
        match &self.store {
            Store::Memory(m) => m.size,
            Store::File(f) => f.size,
        }
    }

    /// Whether `name` selects this export: its own name, or the empty (default) name.
    pub fn matches(&self, name: &str) -> bool {
        name.is_empty() || name == self.name
    }

    /// A backend for the calling thread's coroutines.
    ///
    /// # Errors
    /// If the file cannot be opened again for this thread (out of file descriptors).
    pub fn backend(&self) -> io::Result<Rc<dyn Backend>> {
        Ok(match &self.store {
            Store::Memory(m) => Rc::new(MemBackend(m.clone())),
            Store::File(f) => Rc::new(FileBackend::new(f.clone())?),
        })
    }

    /// Flushes the store from any thread, outside coroutines (at shutdown).
    pub fn flush_blocking(&self) -> io::Result<()> {
        match &self.store {
            Store::Memory(_) => Ok(()),
            Store::File(f) => f.sync(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Memory

/// Chunk size of the memory store: the unit of allocation and of locking.
const CHUNK: usize = 64 * 1024;
const CHUNK_U64: u64 = CHUNK as u64;

type Chunk = RwLock<Option<Box<[u8]>>>;

/// An export kept in memory, in lazily allocated 64 KiB chunks.
pub struct MemStore {
    size: u64,
    chunks: Box<[Chunk]>,
}

impl std::fmt::Debug for MemStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemStore")
            .field("size", &self.size)
            .finish()
    }
}

/// Splits `[offset, offset + len)` into per-chunk pieces: (chunk index, offset in chunk,
/// length, offset of the piece from `offset`).
fn pieces(offset: u64, len: u64) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    let end = offset + len;
    let mut at = offset;
    std::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let idx = (at / CHUNK_U64) as usize;
        let within = (at % CHUNK_U64) as usize;
        let n = (CHUNK - within).min((end - at) as usize);
        let piece = (idx, within, n, (at - offset) as usize);
        at += n as u64;
        Some(piece)
    })
}

impl MemStore {
    /// The largest memory export: 256 GiB (the chunk index alone takes 96 MiB then).
    pub const MAX_SIZE: u64 = 256 << 30;

    /// A store of `size` zero bytes.
    ///
    /// # Errors
    /// `InvalidInput` if `size` exceeds [`MemStore::MAX_SIZE`].
    pub fn new(size: u64) -> io::Result<MemStore> {
        if size > Self::MAX_SIZE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "an in-memory export can be at most {} GiB",
                    Self::MAX_SIZE >> 30
                ),
            ));
        }
        let n = size.div_ceil(CHUNK_U64) as usize;
        let chunks = (0..n).map(|_| RwLock::new(None)).collect();
        Ok(MemStore { size, chunks })
    }

    fn new_chunk() -> Box<[u8]> {
        vec![0u8; CHUNK].into_boxed_slice()
    }

    /// Copies `buf.len()` bytes at `offset` into `buf`.
    pub fn read(&self, buf: &mut [u8], offset: u64) {
        for (i, within, n, at) in pieces(offset, buf.len() as u64) {
            let c = self.chunks[i]
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            let dst = &mut buf[at..at + n];
            match &*c {
                Some(data) => dst.copy_from_slice(&data[within..within + n]),
                None => dst.fill(0),
            }
        }
    }

    /// Copies `data` to `offset`.
    pub fn write(&self, data: &[u8], offset: u64) {
        for (i, within, n, at) in pieces(offset, data.len() as u64) {
            let src = &data[at..at + n];
            let mut c = self.chunks[i]
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if c.is_none() {
                if src.iter().all(|&b| b == 0) {
                    continue; // zeroes over a hole: nothing to store
                }
                *c = Some(Self::new_chunk());
            }
            if let Some(d) = c.as_mut() {
                d[within..within + n].copy_from_slice(src);
            }
        }
    }

    /// Zeroes a range: whole chunks become holes when `may_trim`, else they stay allocated.
    pub fn zero(&self, offset: u64, len: u64, may_trim: bool) {
        for (i, within, n, _) in pieces(offset, len) {
            let mut c = self.chunks[i]
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if n == CHUNK && may_trim {
                *c = None;
                continue;
            }
            match c.as_mut() {
                Some(d) => d[within..within + n].fill(0),
                None if !may_trim => *c = Some(Self::new_chunk()),
                None => {}
            }
        }
    }

    /// Frees the whole chunks of a range (partial chunks are left as they are).
    pub fn trim(&self, offset: u64, len: u64) {
        for (i, _, n, _) in pieces(offset, len) {
            if n == CHUNK {
                *self.chunks[i]
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = None;
            }
        }
    }

    /// Allocation status from `offset`, at most `max` extents covering at most `len` bytes.
    pub fn block_status(&self, offset: u64, len: u32, max: usize) -> Vec<Extent> {
        let mut out: Vec<Extent> = Vec::new();
        for (i, _, n, _) in pieces(offset, u64::from(len)) {
            let hole = self.chunks[i]
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .is_none();
            let flags = if hole { STATE_HOLE | STATE_ZERO } else { 0 };
            if let Some(e) = out.last_mut().filter(|e| e.flags == flags) {
                e.length += n as u32;
            } else if out.len() == max {
                break;
            } else {
                out.push(Extent {
                    length: n as u32,
                    flags,
                });
            }
        }
        out
    }
}

struct MemBackend(Arc<MemStore>);

impl Backend for MemBackend {
    fn len(&self) -> u64 {
        self.0.size
    }

    fn read_at_owned(&self, mut buf: Vec<u8>, offset: u64) -> (io::Result<()>, Vec<u8>) {
        self.0.read(&mut buf, offset);
        (Ok(()), buf)
    }

    fn write_at_owned(&self, buf: Vec<u8>, offset: u64) -> (io::Result<()>, Vec<u8>) {
        self.0.write(&buf, offset);
        (Ok(()), buf)
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        self.0.trim(offset, len);
        Ok(())
    }

    fn zero(&self, offset: u64, len: u64, mode: ZeroMode) -> io::Result<()> {
        // Always fast: no payload crosses the network, holes cost nothing.
        self.0.zero(offset, len, mode.may_trim);
        Ok(())
    }

    fn cache(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }

    fn block_status(&self, offset: u64, len: u32, max_extents: usize) -> io::Result<Vec<Extent>> {
        Ok(self.0.block_status(offset, len, max_extents))
    }
}

// ---------------------------------------------------------------------------------------------
// File

/// A file (or block device) export.
#[derive(Debug)]
pub struct FileStore {
    file: Arc<std::fs::File>,
    path: PathBuf,
    size: u64,
    writes: WritePath,
    /// `pwritev2(RWF_NOWAIT)` works on this file system (cleared on the first `EOPNOTSUPP`).
    nowait_writes: AtomicBool,
    /// `fallocate(PUNCH_HOLE)` / `ZERO_RANGE` work (cleared on the first `EOPNOTSUPP`).
    can_punch: AtomicBool,
    can_zero_range: AtomicBool,
}

fn cvt(r: libc::c_long) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
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
    fn open(path: &Path, read_only: bool, writes: WritePath) -> io::Result<FileStore> {
        let file = OpenOptions::new().read(true).write(!read_only).open(path)?;
        // lseek(SEEK_END) gives the size of block devices too, where metadata says 0.
        // SAFETY: lseek on an fd we own; no memory is passed.
        let end = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_END) };
        if end < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(FileStore {
            file: Arc::new(file),
            path: path.to_owned(),
            size: end as u64,
            writes,
            nowait_writes: AtomicBool::new(true),
            can_punch: AtomicBool::new(true),
            can_zero_range: AtomicBool::new(true),
        })
    }

    fn fd(&self) -> libc::c_int {
        self.file.as_raw_fd()
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// One `preadv2(.., RWF_NOWAIT)` into `buf`; the number of bytes read.
    fn pread_nowait(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: the iovec describes `buf`, which is writable and exclusively borrowed for the
        // whole (synchronous) call.
        let r =
            unsafe { libc::preadv2(self.fd(), &iov, 1, offset as libc::off_t, libc::RWF_NOWAIT) };
        cvt(r as libc::c_long)
    }

    /// One `pwritev2(.., RWF_NOWAIT)` from `buf`; the number of bytes written.
    fn pwrite_nowait(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        let iov = libc::iovec {
            iov_base: buf.as_ptr().cast_mut().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: the iovec describes `buf`, which stays borrowed for the whole (synchronous)
        // call; the kernel only reads from it.
        let r =
            unsafe { libc::pwritev2(self.fd(), &iov, 1, offset as libc::off_t, libc::RWF_NOWAIT) };
        cvt(r as libc::c_long)
    }

    /// Reads what the page cache has, without blocking; returns how many bytes it got.
    fn read_nowait(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.pread_nowait(&mut buf[done..], offset + done as u64) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => done += n,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => break,
                Err(e) if is_unsupported(&e) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// Writes what can be written without blocking; returns how many bytes it wrote.
    fn write_nowait(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        if !self.nowait_writes.load(Ordering::Relaxed) {
            return Ok(0);
        }
        let mut done = 0;
        while done < buf.len() {
            match self.pwrite_nowait(&buf[done..], offset + done as u64) {
                Ok(n) => done += n,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => break,
                Err(e) if is_unsupported(&e) => {
                    self.nowait_writes.store(false, Ordering::Relaxed);
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(done)
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

/// A file store as one loop thread sees it: the shared store (for the non-blocking fast paths
/// and metadata) and this thread's [`costack_aio::File`] on the same open file, for everything
/// that has to wait.
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

    /// Reads all of `buf[done..]` through the loop's file I/O.
    fn read_rest(&self, buf: Vec<u8>, done: usize, offset: u64) -> (io::Result<()>, Vec<u8>) {
        if done > 0 {
            let mut buf = buf;
            let r = self
                .aio
                .read_exact_at(&mut buf[done..], offset + done as u64);
            return (r, buf);
        }
        let len = buf.len();
        let (r, mut buf) = self.aio.read_at_owned(buf, offset);
        match r {
            Ok(n) if n == len => (Ok(()), buf),
            Ok(0) => (Err(io::ErrorKind::UnexpectedEof.into()), buf),
            Ok(n) => {
                let r = self.aio.read_exact_at(&mut buf[n..], offset + n as u64);
                (r, buf)
            }
            Err(e) => (Err(e), buf),
        }
    }

    /// Writes all of `buf[done..]` through the loop's file I/O.
    fn write_rest(&self, buf: Vec<u8>, done: usize, offset: u64) -> (io::Result<()>, Vec<u8>) {
        if done > 0 {
            let r = self.aio.write_all_at(&buf[done..], offset + done as u64);
            return (r, buf);
        }
        let len = buf.len();
        let (r, buf) = self.aio.write_at_owned(buf, offset);
        match r {
            Ok(n) if n == len => (Ok(()), buf),
            Ok(n) => {
                let r = self.aio.write_all_at(&buf[n..], offset + n as u64);
                (r, buf)
            }
            Err(e) => (Err(e), buf),
        }
    }
}

impl Backend for FileBackend {
    fn len(&self) -> u64 {
        self.store.size
    }

    fn read_at_owned(&self, mut buf: Vec<u8>, offset: u64) -> (io::Result<()>, Vec<u8>) {
        let done = match self.store.read_nowait(&mut buf, offset) {
            Ok(n) => n,
            Err(e) => return (Err(e), buf),
        };
        if done == buf.len() {
            return (Ok(()), buf);
        }
        self.read_rest(buf, done, offset)
    }

    fn write_at_owned(&self, buf: Vec<u8>, offset: u64) -> (io::Result<()>, Vec<u8>) {
        let done = match self.store.write_nowait(&buf, offset) {
            Ok(n) => n,
            Err(e) => return (Err(e), buf),
        };
        if done == buf.len() {
            return (Ok(()), buf);
        }
        match self.store.writes {
            WritePath::Inline => {
                let r = std::os::unix::fs::FileExt::write_all_at(
                    &*self.store.file,
                    &buf[done..],
                    offset + done as u64,
                );
                (r, buf)
            }
            WritePath::Aio => self.write_rest(buf, done, offset),
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

impl FileStore {
    /// The path the store was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_store_reads_what_was_written() {
        let m = MemStore::new(300_000).unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8 + 1).collect();
        m.write(&data, 50_000);
        let mut back = vec![0u8; 200_000];
        m.read(&mut back, 50_000);
        assert_eq!(back, data);
        let mut edge = vec![9u8; 10];
        m.read(&mut edge, 299_990);
        assert_eq!(edge, [0; 10]);
    }

    #[test]
    fn memory_store_zero_and_trim() {
        let m = MemStore::new(4 * CHUNK_U64).unwrap();
        m.write(&vec![7u8; 4 * CHUNK], 0);
        m.zero(100, 3 * CHUNK_U64, true);
        let mut b = vec![0u8; 4 * CHUNK];
        m.read(&mut b, 0);
        assert!(b[..100].iter().all(|&x| x == 7));
        assert!(b[100..100 + 3 * CHUNK].iter().all(|&x| x == 0));
        assert!(b[100 + 3 * CHUNK..].iter().all(|&x| x == 7));
        // Chunks 1 and 2 were zeroed whole: holes now.
        let st = m.block_status(0, 4 * CHUNK as u32, 100);
        assert_eq!(
            st,
            [
                Extent {
                    length: CHUNK as u32,
                    flags: 0
                },
                Extent {
                    length: 2 * CHUNK as u32,
                    flags: STATE_HOLE | STATE_ZERO
                },
                Extent {
                    length: CHUNK as u32,
                    flags: 0
                },
            ]
        );
        assert_eq!(m.block_status(0, 4 * CHUNK as u32, 1).len(), 1);
        m.trim(0, 4 * CHUNK_U64);
        assert_eq!(m.block_status(0, 4 * CHUNK as u32, 100).len(), 1);
        // NO_HOLE zeroing allocates.
        m.zero(0, CHUNK_U64, false);
        assert_eq!(m.block_status(0, CHUNK as u32, 100)[0].flags, 0);
    }

    #[test]
    fn memory_store_size_limit() {
        assert!(MemStore::new(MemStore::MAX_SIZE + 1).is_err());
    }
}
