//! Files: positional reads and writes that yield the task, by completion.
//!
//! # The pattern
//!
//! A [`File`] method called in a task does what QEMU's `raw` block driver does in a coroutine:
//! it *issues* the request (a read of 4 KiB at some offset, a `fsync`, a `fallocate`), *yields*
//! to the loop, and the loop *re-enters* the task when the request completes, with the result.
//! To the code that called it, `read_at` looks like `pread(2)`:
//!
//! ```
//! use costack_aio::{EventLoop, File};
//!
//! let path = std::env::temp_dir().join(format!("costack-fs-doc-{}", std::process::id()));
//! let lp = EventLoop::new();
//! let text = lp.block_on({
//!     let path = path.clone();
//!     move || {
//!         let f = File::create(&path).unwrap(); // opened through the loop
//!         f.write_all_at(b"hello, world", 0).unwrap(); // yields until the write completes
//!         f.sync_data().unwrap();
//!         let mut buf = [0; 5];
//!         f.read_exact_at(&mut buf, 7).unwrap();
//!         buf
//!     }
//! });
//! assert_eq!(&text, b"world");
//! std::fs::remove_file(path).unwrap();
//! ```
//!
//! Many tasks can have requests in flight at once; the loop goes on running the others
//! meanwhile. Every positional transfer names its offset, so tasks sharing a `File` never
//! disturb each other.
//!
//! For code that wants a stream, a `File` is also a cursor, like [`std::fs::File`]: it
//! implements [`Read`](std::io::Read), [`Write`](std::io::Write) and [`Seek`](std::io::Seek)
//! (for `File` and `&File`) over `read_at`/`write_at`, with the position kept in the `File`
//! (see [the cursor](File#the-cursor)). [`OpenOptions`] opens files with std's choice of flags.
//!
//! # Two ways to the kernel
//!
//! * **io_uring** (the default where the kernel allows it): each request becomes a submission
//!   queue entry. A task only writes the entry into the ring's memory and yields; the loop hands
//!   every entry that its tasks produced during one turn to the kernel in *one*
//!   `io_uring_enter`, just before it looks for events. Completions come back in the ring;
//!   the loop reads them and wakes the tasks. A read of data in the page cache completes inside
//!   that same system call, so a turn of the loop costs one system call for any number of such
//!   reads.
//! * **The worker pool** (the fallback): each request runs as a blocking system call on one of
//!   the loop's worker threads (see [`blocking`](crate::blocking)), like QEMU's thread pool.
//!
//! Both give the same results and the same errors. The loop picks one when it is built:
//! io_uring unless [`LoopBuilder::io_uring(false)`](crate::LoopBuilder::io_uring) or the
//! environment variable `COSTACK_AIO_IO_URING=0` says otherwise, or the kernel refuses it (too
//! old, `kernel.io_uring_disabled`, a seccomp sandbox) — then it falls back by itself.
//! [`EventLoop::io_backend`](crate::EventLoop::io_backend) says which it got.
//!
//! # Who owns the buffer
//!
//! A task can be cancelled, or time out, while its request is in the kernel. Its stack unwinds
//! at once — but the kernel may still write into the request's buffer (a read), or read from it
//! (a write), until the request completes. io_uring's classic use-after-free is freeing that
//! buffer early. Here the buffer of a request in flight always belongs to the loop (or to the
//! worker thread running it), never to the task's stack:
//!
//! * the borrowing methods ([`read_at`](File::read_at), [`write_at`](File::write_at), the
//!   vectored ones) copy through a *bounce buffer* that the loop owns: a cancelled read leaves
//!   the caller's slice untouched, and the bounce buffer is freed (or reused) only when the
//!   completion arrives;
//! * the owning methods ([`read_at_owned`](File::read_at_owned),
//!   [`write_at_owned`](File::write_at_owned)) hand their `Vec` to the loop for the duration
//!   and give it back with the result — no copy; if the task is cancelled, the `Vec` is freed
//!   when the completion arrives;
//! * the file descriptor, too, stays open until every request on it has completed, even if
//!   the `File` is dropped first, so a request can never reach a descriptor number that the
//!   kernel has handed to someone else meanwhile.
//!
//! A cancelled task's request is also withdrawn from the kernel where it can be (a read from a
//! pipe that nobody writes to completes at once with `ECANCELED`); one that cannot (a disk read
//! already under way) just finishes, and its result is dropped.
//!
//! # Outside a task
//!
//! Outside any coroutine (a plain thread, `main`, a [`call_soon`](crate::call_soon) callback)
//! the same methods make the blocking system call directly (`pread`, `pwrite`, `fsync`…), with
//! no copy. Inside a coroutine that is not a task of the thread's loop they panic, as every wait
//! of this crate does.
//!
//! # Errors
//!
//! Errors are [`io::Error`]s with the kernel's errno ([`io::Error::raw_os_error`]): `EBADF`
//! for a write to a file opened read-only, `ENOSPC` when the file system is full, `EFBIG`
//! past the file size limit. A read that reaches the end of the file is a *short read* (the
//! count says how much was there; `0` at or past the end), as with `pread`;
//! [`read_exact_at`](File::read_exact_at) turns that into [`io::ErrorKind::UnexpectedEof`].
//! An offset above `i64::MAX` is `EINVAL`. One transfer moves at most 2 GiB − 4 KiB (Linux's
//! own limit); the loops of `read_exact_at` and `write_all_at` take care of larger buffers.
//!
//! On a descriptor that cannot seek (a pipe), io_uring and the worker pool both ignore the
//! offset and read or write the stream; pass `0`.
//!
//! Metadata calls ([`len`](File::len), [`metadata`](File::metadata),
//! [`set_permissions`](File::set_permissions), and [`Seek`](std::io::Seek) from the end) run on
//! the loop's thread: they do not wait for the device on local file systems, and QEMU's `raw`
//! driver does the same.
//!
//! # The page-cache fast path
//!
//! Most reads of a busy server hit the page cache, where the data is a copy away. So in a task,
//! [`read_at`](File::read_at) and [`read_at_owned`](File::read_at_owned) first try
//! `preadv2(RWF_NOWAIT)` on the loop's thread: the kernel copies what is cached and says
//! `EAGAIN` instead of waiting for the device. Only what it could not give goes through
//! io_uring or the worker pool. A read of cached data thus costs one system call and does not
//! yield the task at all. [`write_at`](File::write_at) and
//! [`write_at_owned`](File::write_at_owned) likewise try `pwritev2(RWF_NOWAIT)`, where the file
//! system takes buffered writes that way; the first `EOPNOTSUPP` turns that off for the `File`.
//! Results and errors are the same either way.
//!
//! Work the page cache can do is not a wait, so it also completes in a coroutine that no task
//! entered (where a request that must wait panics, as every wait of this crate does: nothing
//! could wake it), and it does not look up the loop at all.
//!
//! [`File::set_fast_path(false)`](File::set_fast_path) sends every request through the ring or
//! the pool. Do that when copying on the loop's thread is the wrong trade: large transfers
//! (each cached megabyte copied there delays every other task of the loop), or to measure the
//! backends themselves. A file opened with `O_DIRECT` starts with it off: there `RWF_NOWAIT`
//! does not stop at the cache but reads the device on the loop's thread.
//!
//! Like a socket that has data, a cached read does not yield: a task that reads cached data in
//! a loop keeps the event loop until it waits for something, so such a loop should call
//! [`costack::yield_now`] now and then if other tasks must run meanwhile.
//!
//! # Modules behind `File`
//!
//! What each request is, encoded for the ring and run as a blocking call, is in the `op`
//! module (one file per operation); the trip of a request through the ring or the pool, while
//! the task waits, in `request`; the ring in `uring`. Bounce buffers come from
//! [`buf`](crate::buf).
//!
//! Operations floor, above `request`: imports `op`, `request`, `buf` and the wait protocol
//! (`wait`).

use crate::op::sys::{check_offset, einval, CREATE_MODE};
use crate::op::{read, write, Op};
use crate::request::{run_here, run_in_task};
use crate::wait::begin_wait;
use costack::Park;
use std::cell::Cell;
use std::ffi::CString;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

pub use crate::op::{IoBackend, IO_URING_ENV};
pub use options::OpenOptions;

mod cursor;
mod fast;
mod options;
mod vectored;

// ---------------------------------------------------------------------------------------------
// File

/// A file whose I/O yields the task instead of blocking the thread: see the
/// [module docs](self).
///
/// Its transfers are positional (`read_at`, `write_at`, …), so tasks can share one `File`
/// (`&File`, or an `Rc<File>`) and have requests in flight on it at once. It is also a cursor
/// (see below). Bound to its thread (`!Send`): move a [`std::fs::File`] between threads and
/// wrap it with [`File::from_std`].
///
/// ```
/// use costack_aio::{EventLoop, File};
/// use std::rc::Rc;
///
/// let path = std::env::temp_dir().join(format!("costack-file-doc-{}", std::process::id()));
/// let lp = EventLoop::new();
/// lp.block_on({
///     let path = path.clone();
///     move || {
///         let f = Rc::new(File::create(&path).unwrap());
///         // Eight tasks write their 4 KiB blocks concurrently...
///         let writers: Vec<_> = (0..8u8)
///             .map(|i| {
///                 let f = f.clone();
///                 costack_aio::spawn(move || f.write_all_at(&[i; 4096], u64::from(i) * 4096))
///             })
///             .collect();
///         for w in writers {
///             w.join().unwrap();
///         }
///         // ...and an owned buffer comes back with the data, no copy.
///         let (n, buf) = f.read_at_owned(vec![0; 4096], 5 * 4096);
///         assert_eq!(n.unwrap(), 4096);
///         assert!(buf.iter().all(|&b| b == 5));
///         assert_eq!(f.len().unwrap(), 8 * 4096);
///     }
/// });
/// std::fs::remove_file(path).unwrap();
/// ```
///
/// # The cursor
///
/// [`Read`](std::io::Read), [`Write`](std::io::Write) and [`Seek`](std::io::Seek), for `File`
/// and for `&File` as std has them, read and write at a position kept in the `File` (not the
/// kernel's file offset, which is never used): `read` is `read_at(buf, pos)` and moves the
/// position by the count, and so does `write`. In append mode (`O_APPEND`, from
/// [`OpenOptions::append`]) every `write` goes to the end of the file, and the position is
/// the file's length afterwards. [`SeekFrom::End`](std::io::SeekFrom::End) is from the
/// file's length (`fstat`; for a block device, its size, from `lseek`); seeking before the start or past `i64::MAX` is `EINVAL`
/// ([`io::ErrorKind::InvalidInput`]) and leaves the position as it was; past the end is
/// allowed (reads there give 0, writes extend the file). The positional methods neither use
/// nor move the position. A `File` starts at position 0; [`from_std`](File::from_std) takes
/// the std file's position.
///
/// The position is one value: tasks that use the cursor of one `File` at the same time (one
/// waiting in a `read` while another reads) may read the same bytes; share a `File` between
/// tasks with the positional methods.
///
/// ```
/// use costack_aio::{EventLoop, File};
/// use std::io::{Read, Seek, SeekFrom, Write};
///
/// let path = std::env::temp_dir().join(format!("costack-cursor-doc-{}", std::process::id()));
/// let lp = EventLoop::new();
/// lp.block_on({
///     let path = path.clone();
///     move || {
///         let mut f = File::create(&path).unwrap();
///         f.write_all(b"hello, world").unwrap();
///         assert_eq!(f.seek(SeekFrom::End(-5)).unwrap(), 7);
///         let mut s = String::new();
///         f.read_to_string(&mut s).unwrap();
///         assert_eq!(s, "world");
///     }
/// });
/// std::fs::remove_file(path).unwrap();
/// ```
pub struct File {
    /// Shared with the requests in flight, so that the descriptor outlives them.
    fd: Arc<OwnedFd>,
    /// Try `RWF_NOWAIT` first (the page-cache fast path); see [`File::set_fast_path`].
    fast: Cell<bool>,
    /// `preadv2(RWF_NOWAIT)` works on this file (cleared on the first "unsupported" error).
    nowait_reads: Cell<bool>,
    /// `pwritev2(RWF_NOWAIT)` works on this file (cleared on the first "unsupported" error).
    nowait_writes: Cell<bool>,
    /// The cursor's position (see [the cursor](File#the-cursor)).
    pos: Cell<u64>,
    /// Opened with `O_APPEND`: the cursor's writes go to the end.
    append: bool,
    _not_send: PhantomData<*const ()>,
}

impl File {
    fn from_owned(fd: OwnedFd) -> File {
        // With `O_DIRECT`, `RWF_NOWAIT` does not stop at the page cache: the kernel reads the
        // device on the calling thread, which would hold the whole loop. Such files start with
        // the fast path off.
        // SAFETY: F_GETFL on a descriptor we own reads its status flags.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
        let direct = flags >= 0 && flags & libc::O_DIRECT != 0;
        let append = flags >= 0 && flags & libc::O_APPEND != 0;
        File {
            fd: Arc::new(fd),
            fast: Cell::new(!direct),
            nowait_reads: Cell::new(true),
            nowait_writes: Cell::new(true),
            pos: Cell::new(0),
            append,
            _not_send: PhantomData,
        }
    }

    /// Opens `path` with `flags`, creating it with `mode` (less the umask) if the flags say so,
    /// through the loop in a task.
    fn open_with(path: &Path, flags: i32, mode: libc::mode_t) -> io::Result<File> {
        let path = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "file name contained an unexpected NUL byte",
            )
        })?;
        let op = Op::Open {
            path,
            flags,
            mode,
            opened: None,
        };
        let (r, op) = match begin_wait() {
            Some(w) => run_in_task(w, None, op),
            None => run_here(None, op),
        };
        r?;
        match op {
            Op::Open {
                opened: Some(fd), ..
            } => Ok(File::from_owned(fd)),
            _ => unreachable!("a successful open gives a descriptor"),
        }
    }

    /// Opens an existing file for reading only (through the loop in a task).
    ///
    /// # Errors
    /// As `open(2)`: `ENOENT`, `EACCES`, …
    pub fn open(path: impl AsRef<Path>) -> io::Result<File> {
        File::open_with(path.as_ref(), libc::O_RDONLY, CREATE_MODE)
    }

    /// Opens an existing file for reading and writing.
    ///
    /// # Errors
    /// As `open(2)`; `ENOENT` if the file does not exist.
    pub fn open_rw(path: impl AsRef<Path>) -> io::Result<File> {
        File::open_with(path.as_ref(), libc::O_RDWR, CREATE_MODE)
    }

    /// Opens a file for reading and writing, creating it (mode `0666` less the umask) or
    /// truncating it to length 0.
    ///
    /// # Errors
    /// As `open(2)`.
    pub fn create(path: impl AsRef<Path>) -> io::Result<File> {
        File::open_with(
            path.as_ref(),
            libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC,
            CREATE_MODE,
        )
    }

    /// A blank [`OpenOptions`] (nothing set), as [`std::fs::File::options`].
    pub fn options() -> OpenOptions {
        OpenOptions::new()
    }

    /// Wraps an open [`std::fs::File`] (opened with whatever `OpenOptions` you need,
    /// `O_DIRECT` included). The cursor starts at the std file's position (`0` where it has
    /// none, as a pipe).
    pub fn from_std(f: std::fs::File) -> File {
        // SAFETY: lseek on a descriptor `f` owns takes only integers.
        let at = unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_CUR) };
        let file = File::from_owned(OwnedFd::from(f));
        file.pos.set(u64::try_from(at).unwrap_or(0));
        file
    }

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Runs `op` in the caller's task, or blocking outside one.
    fn run(&self, op: Op) -> (io::Result<usize>, Op) {
        match begin_wait() {
            Some(w) => run_in_task(w, Some(&self.fd), op),
            None => run_here(Some(&self.fd), op),
        }
    }

    /// Turns the page-cache fast path on or off for this `File` (on by default): whether reads
    /// and writes in a task first try `preadv2`/`pwritev2` with `RWF_NOWAIT` on the loop's
    /// thread, before they go through io_uring or the worker pool. See the
    /// [module docs](self#the-page-cache-fast-path) for when to turn it off.
    ///
    /// ```
    /// use costack_aio::{EventLoop, File};
    ///
    /// let lp = EventLoop::new();
    /// lp.block_on(|| {
    ///     let f = File::open("/proc/self/stat").unwrap();
    ///     assert!(f.fast_path());
    ///     f.set_fast_path(false); // every read goes through the ring or the pool
    ///     let mut buf = [0; 16];
    ///     assert!(f.read_at(&mut buf, 0).unwrap() > 0);
    /// });
    /// ```
    pub fn set_fast_path(&self, enabled: bool) {
        self.fast.set(enabled);
    }

    /// Whether the page-cache fast path is on for this `File` (see
    /// [`set_fast_path`](File::set_fast_path)).
    pub fn fast_path(&self) -> bool {
        self.fast.get()
    }

    /// Reads up to `buf.len()` bytes at `offset`; returns how many (`0` at or past the end of
    /// the file). Like `pread(2)`.
    ///
    /// In a task, what the page cache holds is copied at once (see the
    /// [fast path](self#the-page-cache-fast-path)); the rest comes through a bounce buffer that
    /// the loop owns, so a cancelled or timed-out task's `buf` is never written after it is
    /// gone. Use [`read_at_owned`](File::read_at_owned) to avoid that copy.
    ///
    /// # Errors
    /// The kernel's: `EBADF` if the file is not open for reading, `EISDIR`, `EIO`, …
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        check_offset(offset)?;
        match Park::try_new() {
            Some(park) => self.read_in_task(park, buf, offset),
            None => read::blocking(self.raw(), buf, offset),
        }
    }

    /// Writes up to `buf.len()` bytes at `offset`; returns how many. Like `pwrite(2)` (on a
    /// file opened with `O_APPEND` the data goes to the end, whatever `offset`).
    ///
    /// In a task, the [fast path](self#the-page-cache-fast-path) is tried first; otherwise the
    /// data is copied into a buffer the loop owns.
    ///
    /// # Errors
    /// The kernel's: `EBADF` if the file is not open for writing, `ENOSPC`, `EFBIG`, `EIO`, …
    pub fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        check_offset(offset)?;
        match Park::try_new() {
            Some(park) => self.write_in_task(park, buf, offset),
            None => write::blocking(self.raw(), buf, offset),
        }
    }

    /// Fills `buf` from `offset`, reading as often as it takes (std's
    /// [`FileExt::read_exact_at`] over
    /// [`read_at`](File::read_at)).
    ///
    /// # Errors
    /// [`io::ErrorKind::UnexpectedEof`] if the file ends first (how much of `buf` was
    /// filled is then unspecified); the kernel's errors as [`read_at`](File::read_at).
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }

    /// Fills all of the owned `buf` from `offset`: [`read_at_owned`](File::read_at_owned),
    /// then [`read_exact_at`](File::read_exact_at) for whatever it left.
    ///
    /// # Errors
    /// As [`read_exact_at`](File::read_exact_at).
    pub fn read_exact_at_owned(&self, buf: Vec<u8>, offset: u64) -> (io::Result<()>, Vec<u8>) {
        let (r, mut buf) = self.read_at_owned(buf, offset);
        let r = r.and_then(|n| self.read_exact_at(&mut buf[n..], offset + n as u64));
        (r, buf)
    }

    /// Writes all of `buf` at `offset`, writing as often as it takes (std's
    /// [`FileExt::write_all_at`] over
    /// [`write_at`](File::write_at)).
    ///
    /// # Errors
    /// [`io::ErrorKind::WriteZero`] if a write makes no progress; the kernel's errors as
    /// [`write_at`](File::write_at) (`ENOSPC` once the file system is full: what was written
    /// before it stays written).
    pub fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }

    /// Writes all of the owned `buf` at `offset`: [`write_at_owned`](File::write_at_owned),
    /// then [`write_all_at`](File::write_all_at) for whatever it left.
    ///
    /// # Errors
    /// As [`write_all_at`](File::write_all_at).
    pub fn write_all_at_owned(&self, buf: Vec<u8>, offset: u64) -> (io::Result<()>, Vec<u8>) {
        let (r, buf) = self.write_at_owned(buf, offset);
        let r = r.and_then(|n| self.write_all_at(&buf[n..], offset + n as u64));
        (r, buf)
    }

    /// Reads up to `buf.len()` bytes at `offset` straight into `buf` (no copy) and gives the
    /// buffer back with the count. The buffer's length is the request: `buf.len()` bytes are
    /// asked for, `buf[..n]` hold the data, the rest is left as it was.
    ///
    /// In a task, the [fast path](self#the-page-cache-fast-path) reads what is cached straight
    /// into `buf` first. While a request is in flight the `Vec` belongs to the loop: if the
    /// task is cancelled, it is freed only when the completion arrives.
    ///
    /// ```
    /// use costack_aio::{EventLoop, File};
    ///
    /// let lp = EventLoop::new();
    /// lp.block_on(|| {
    ///     let f = File::open("/proc/self/stat").unwrap();
    ///     let (r, buf) = f.read_at_owned(vec![0; 64], 0);
    ///     let n = r.unwrap();
    ///     assert!(n > 0 && buf.len() == 64);
    /// });
    /// ```
    pub fn read_at_owned(&self, buf: Vec<u8>, offset: u64) -> (io::Result<usize>, Vec<u8>) {
        let mut buf = buf;
        if let Err(e) = check_offset(offset) {
            return (Err(e), buf);
        }
        let Some(park) = Park::try_new() else {
            let r = read::blocking(self.raw(), &mut buf, offset);
            return (r, buf);
        };
        self.read_owned_in_task(park, buf, offset)
    }

    /// Writes `buf[..]` at `offset` straight from `buf` (no copy) and gives the buffer back
    /// with the count. While the request is in flight the `Vec` belongs to the loop, as with
    /// [`read_at_owned`](File::read_at_owned).
    pub fn write_at_owned(&self, buf: Vec<u8>, offset: u64) -> (io::Result<usize>, Vec<u8>) {
        if let Err(e) = check_offset(offset) {
            return (Err(e), buf);
        }
        let Some(park) = Park::try_new() else {
            let r = write::blocking(self.raw(), &buf, offset);
            return (r, buf);
        };
        self.write_owned_in_task(park, buf, offset)
    }

    /// Flushes the file's data and metadata to the device (`fsync(2)`).
    ///
    /// # Errors
    /// The kernel's: `EIO` (a write-back failed), `EROFS`/`EINVAL` for files that cannot be
    /// synced.
    pub fn sync_all(&self) -> io::Result<()> {
        self.run(Op::Sync { data_only: false }).0.map(drop)
    }

    /// Flushes the file's data, and only the metadata needed to read it back
    /// (`fdatasync(2)`).
    ///
    /// # Errors
    /// As [`sync_all`](File::sync_all).
    pub fn sync_data(&self) -> io::Result<()> {
        self.run(Op::Sync { data_only: true }).0.map(drop)
    }

    /// Deallocates `len` bytes from `offset` (`fallocate` with
    /// `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`): they read as zeroes afterwards and no
    /// longer take space; the file's length does not change.
    ///
    /// # Errors
    /// `EOPNOTSUPP` where the file system cannot punch holes; `EINVAL` for `len == 0`; the
    /// kernel's others.
    pub fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        check_offset(offset)?;
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        self.run(Op::Fallocate { mode, offset, len }).0.map(drop)
    }

    /// Makes `len` bytes from `offset` read as zeroes (`fallocate` with
    /// `FALLOC_FL_ZERO_RANGE`), extending the file if the range goes past its end. Where the
    /// file system does not support that (`EOPNOTSUPP`), writes zeroes instead.
    ///
    /// # Errors
    /// `EINVAL` for `len == 0`; the kernel's others (`ENOSPC`…).
    pub fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        check_offset(offset)?;
        let mode = libc::FALLOC_FL_ZERO_RANGE;
        match self.run(Op::Fallocate { mode, offset, len }).0 {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => self.write_zeroes(offset, len),
            Err(e) => Err(e),
        }
    }

    /// Writes `len` zero bytes from `offset`, a megabyte at a time.
    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        const CHUNK: u64 = 1 << 20;
        let end = offset.checked_add(len).ok_or_else(einval)?;
        check_offset(end)?;
        let zeroes = vec![0u8; CHUNK.min(len) as usize];
        let mut at = offset;
        while at < end {
            let k = (end - at).min(CHUNK) as usize;
            self.write_all_at(&zeroes[..k], at)?;
            at += k as u64;
        }
        Ok(())
    }

    /// The file's length in bytes (`fstat(2)`, on the calling thread).
    ///
    /// # Errors
    /// The kernel's.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> io::Result<u64> {
        self.stat().map(|st| st.st_size as u64)
    }

    /// The file's metadata, as [`std::fs::File::metadata`] (`statx`/`fstat` on the calling
    /// thread).
    ///
    /// # Errors
    /// The kernel's.
    pub fn metadata(&self) -> io::Result<std::fs::Metadata> {
        self.with_std(|f| f.metadata())
    }

    /// Changes the file's permissions, as [`std::fs::File::set_permissions`] (`fchmod(2)` on the
    /// calling thread).
    ///
    /// # Errors
    /// The kernel's: `EPERM` if the caller does not own the file, `EROFS`…
    pub fn set_permissions(&self, perm: std::fs::Permissions) -> io::Result<()> {
        self.with_std(|f| f.set_permissions(perm))
    }

    /// Runs `f` with this descriptor as a [`std::fs::File`], which is never closed.
    fn with_std<R>(&self, f: impl FnOnce(&std::fs::File) -> R) -> R {
        // SAFETY: the descriptor stays open while `self` is borrowed, and the `ManuallyDrop`
        // keeps the std `File` from closing it (even if `f` panics): `f` only borrows it.
        let file = ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(self.raw()) });
        f(&file)
    }

    /// `fstat(2)` of the file, on the calling thread.
    fn stat(&self) -> io::Result<libc::stat> {
        // SAFETY: `stat` is plain data; fstat fills it or fails.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `st` is a valid, writable `stat` for the whole call.
        if unsafe { libc::fstat(self.raw(), &mut st) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(st)
    }

    /// Truncates or extends the file to `len` bytes (`ftruncate(2)`); an extension reads as
    /// zeroes.
    ///
    /// # Errors
    /// `EINVAL` if `len` is above `i64::MAX` or the file is not open for writing; `EFBIG`…
    pub fn set_len(&self, len: u64) -> io::Result<()> {
        check_offset(len)?;
        self.run(Op::Truncate { len }).0.map(drop)
    }
}

impl OpenOptions {
    /// Opens `path` with these options (through the loop in a task, blocking outside one).
    ///
    /// # Errors
    /// `EINVAL` for the combinations refused (see [`OpenOptions`]), and a path with a NUL byte
    /// ([`io::ErrorKind::InvalidInput`]); the kernel's: `ENOENT`, `EEXIST` for `create_new`,
    /// `EACCES`, `EISDIR`…
    pub fn open(&self, path: impl AsRef<Path>) -> io::Result<File> {
        File::open_with(path.as_ref(), self.flags()?, self.mode_bits())
    }
}

impl AsRawFd for File {
    fn as_raw_fd(&self) -> RawFd {
        self.raw()
    }
}

impl AsFd for File {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<std::fs::File> for File {
    fn from(f: std::fs::File) -> File {
        File::from_std(f)
    }
}

impl fmt::Debug for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("File").field("fd", &self.raw()).finish()
    }
}

/// std's positional-I/O trait, so that code written against it works on a `File` (in a task,
/// each call is the inherent method's: the page cache first, then the loop).
impl FileExt for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        File::read_at(self, buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        File::write_at(self, buf, offset)
    }
}
