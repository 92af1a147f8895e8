//! Readiness: waiting until a file descriptor can be read or written.
//!
//! Third floor: imports the wait protocol (`wait`), the readiness driver (`reactor`), the
//! loop proper (`runtime`, to find the reactor of the loop a registration belongs to), and,
//! for the readiness branches of a select ([`Ready`]), the [`Selectable`] protocol (`select`),
//! the wakers (`waker`) and the task keys (`key`).
//!
//! The sockets in [`net`](crate::net) are built on this: they try the system call first and,
//! when the kernel says `WouldBlock`, wait for readiness and try again. That is all it takes for
//! `std::io::Read`/`Write` code to run unchanged in a task. For your own fds (a pipe, a
//! tty, an eventfd, a device) [`AsyncFd`] does the same:
//!
//! ```
//! use costack_aio::io::AsyncFd;
//! use costack_aio::EventLoop;
//! use std::io::{Read, Write};
//! use std::os::unix::net::UnixStream;
//!
//! let lp = EventLoop::new();
//! lp.block_on(|| {
//!     let (a, b) = UnixStream::pair().unwrap();
//!     a.set_nonblocking(true).unwrap();
//!     let a = AsyncFd::new(a);
//!     let writer = costack_aio::spawn(move || {
//!         costack_aio::sleep(std::time::Duration::from_millis(5));
//!         (&b).write_all(b"ping").unwrap();
//!         b
//!     });
//!     a.readable().unwrap(); // yields until the writer has written
//!     let mut buf = [0; 4];
//!     let n = a.read_with(|s| (&*s).read(&mut buf)).unwrap();
//!     assert_eq!(&buf[..n], b"ping");
//!     drop(writer.join());
//! });
//! ```
//!
//! # Outside a coroutine
//!
//! Waiting outside any coroutine blocks the thread in `poll(2)`, so the same types also work
//! from plain threads (without a loop, or beside it).
//!
//! # Closing under a waiter
//!
//! [`AsyncFd::close`] (and `close` on the sockets) may be called while other tasks wait on the
//! fd: they wake with an [`io::ErrorKind::NotConnected`] error, and every later operation fails
//! the same way. The descriptor itself is released only when the object is dropped, so that no
//! task's system call can ever reach a descriptor number that the kernel has already handed to
//! someone else.

use crate::key::TaskKey;
use crate::reactor::{Dir, Slot};
use crate::runtime::{current_loop, Inner};
use crate::select::Selectable;
use crate::wait::begin_wait;
use crate::waker::Waker;
use std::cell::Cell;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The loop-side state of one fd: its registration (made on the first wait in a task) and
/// whether it was closed.
pub(crate) struct Source {
    fd: RawFd,
    reg: Cell<Option<(u64, Slot)>>,
    closed: Cell<bool>,
    /// Readiness bits, shared with the reactor (see the `reactor` module). Meaningful only
    /// while registered: before that, system calls are always tried.
    ready: Rc<Cell<u8>>,
}

pub(crate) fn closed_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "costack-aio: the file descriptor was closed",
    )
}

impl Source {
    pub(crate) fn new(fd: RawFd) -> Source {
        Source {
            fd,
            reg: Cell::new(None),
            closed: Cell::new(false),
            ready: Rc::new(Cell::new(0)),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Runs the non-blocking `op` until it does not say `WouldBlock`, waiting for `dir` in
    /// between.
    #[inline]
    pub(crate) fn io<R>(&self, dir: Dir, mut op: impl FnMut() -> io::Result<R>) -> io::Result<R> {
        loop {
            if self.closed.get() {
                return Err(closed_error());
            }
            if self.known_not_ready(dir) {
                self.wait(dir)?;
                continue;
            }
            match op() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.clear_ready(dir);
                    self.wait(dir)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => return r,
            }
        }
    }

    /// A stream read of up to `len` bytes: as [`io`](Source::io), and a read that returns
    /// less than asked (the socket is drained) clears the read readiness, so that the next
    /// read waits for an edge instead of making a system call that would say `WouldBlock`.
    #[inline]
    pub(crate) fn read(
        &self,
        len: usize,
        op: impl FnMut() -> io::Result<usize>,
    ) -> io::Result<usize> {
        let n = self.io(Dir::Read, op)?;
        if n > 0 && n < len {
            self.clear_ready(Dir::Read);
        }
        Ok(n)
    }

    #[inline]
    fn known_not_ready(&self, dir: Dir) -> bool {
        self.ready.get() & dir.ready_mask() == 0 && self.reg.get().is_some()
    }

    #[inline]
    fn clear_ready(&self, dir: Dir) {
        self.ready.set(self.ready.get() & !dir.bit());
    }

    /// Waits for the next readiness edge in `dir` (in a task), or for readiness (outside any
    /// coroutine, in `poll(2)`). The caller retries its operation afterwards.
    pub(crate) fn wait(&self, dir: Dir) -> io::Result<()> {
        if self.closed.get() {
            return Err(closed_error());
        }
        let Some(w) = begin_wait() else {
            poll_fd(self.fd, dir, -1)?;
            // No loop tracks edges for a thread: say it is ready, the system call will tell.
            self.ready.set(self.ready.get() | dir.bit());
            return Ok(());
        };
        let slot = self.slot_in(&w.inner)?;
        w.inner.reactor().add_waiter(slot, dir, w.key);
        w.park(None);
        if self.closed.get() {
            return Err(closed_error());
        }
        Ok(())
    }

    /// The fd's registration with `inner`'s reactor, made now if need be.
    fn slot_in(&self, inner: &Inner) -> io::Result<Slot> {
        match self.reg.get() {
            Some((id, slot)) if id == inner.id() => Ok(slot),
            _ => {
                // Not registered yet, or registered with a loop of this thread that is gone
                // (whose epoll instance went with it): register with this one. Registering
                // reports the fd's current readiness as an edge.
                self.ready.set(0);
                let slot = inner.reactor().register(self.fd, self.ready.clone())?;
                self.reg.set(Some((inner.id(), slot)));
                Ok(slot)
            }
        }
    }

    /// Waits until the fd is ready for `dir` (level: returns at once if it already is).
    pub(crate) fn wait_ready(&self, dir: Dir) -> io::Result<()> {
        loop {
            if self.closed.get() {
                return Err(closed_error());
            }
            if poll_fd(self.fd, dir, 0)? {
                return Ok(());
            }
            self.wait(dir)?;
        }
    }

    /// Marks the fd closed, takes it out of the loop and wakes its waiters (with an error).
    pub(crate) fn close(&self) {
        if self.closed.replace(true) {
            return;
        }
        self.deregister();
    }

    fn deregister(&self) {
        let Some((id, slot)) = self.reg.take() else {
            return;
        };
        if let Some(inner) = current_loop().filter(|l| l.id() == id) {
            for k in inner.reactor().deregister(slot, self.fd) {
                inner.wake(k);
            }
        }
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        self.deregister();
    }
}

/// `poll(2)` on one fd for `dir`; `timeout_ms` as poll's (-1: no limit). Whether it is ready
/// (an error or hang-up counts as ready: the next system call reports it).
fn poll_fd(fd: RawFd, dir: Dir, timeout_ms: i32) -> io::Result<bool> {
    let events = match dir {
        Dir::Read => libc::POLLIN,
        Dir::Write => libc::POLLOUT,
    };
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    loop {
        // SAFETY: `p` is one valid pollfd that outlives the call; nfds is 1.
        let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if p.revents & libc::POLLNVAL != 0 {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        return Ok(r > 0);
    }
}

/// A file descriptor watched by the event loop: wait until it is readable or writable.
///
/// `T` owns the fd (a `File`, an `OwnedFd`, a std socket…), which must be in non-blocking
/// mode for [`read_with`](AsyncFd::read_with)/[`write_with`](AsyncFd::write_with) to make
/// sense. There is no `get_mut`: replacing the object would leave the loop watching an fd
/// number that is no longer this one's. The fd is registered with the thread's loop on the first wait in a task, and
/// deregistered when the `AsyncFd` is dropped or closed. See the [module docs](self).
pub struct AsyncFd<T: AsRawFd> {
    // Declared first: deregisters before `inner` closes the fd.
    src: Source,
    inner: T,
}

impl<T: AsRawFd> AsyncFd<T> {
    /// Watches `inner`'s fd. Does not change its flags: make it non-blocking yourself.
    pub fn new(inner: T) -> AsyncFd<T> {
        AsyncFd {
            src: Source::new(inner.as_raw_fd()),
            inner,
        }
    }

    /// Waits until the fd is readable (or has an error or hang-up to report). Returns at once
    /// if it already is.
    ///
    /// # Errors
    /// If the fd was [closed](AsyncFd::close), or is not a valid fd.
    pub fn readable(&self) -> io::Result<()> {
        self.src.wait_ready(Dir::Read)
    }

    /// Waits until the fd is writable (or has an error or hang-up to report).
    ///
    /// # Errors
    /// As [`readable`](AsyncFd::readable).
    pub fn writable(&self) -> io::Result<()> {
        self.src.wait_ready(Dir::Write)
    }

    /// A [select](mod@crate::select) branch that fires when the fd is readable (or has an error or
    /// hang-up to report), with `Ok(())`, as [`readable`](AsyncFd::readable) returns; or with
    /// the error `readable` would give. It consumes nothing: see [`Ready`].
    pub fn readable_branch(&self) -> Ready<'_> {
        Ready::new(&self.src, Dir::Read)
    }

    /// A [select](mod@crate::select) branch that fires when the fd is writable; see
    /// [`readable_branch`](AsyncFd::readable_branch).
    pub fn writable_branch(&self) -> Ready<'_> {
        Ready::new(&self.src, Dir::Write)
    }

    /// Runs the non-blocking read `op` until it does not fail with `WouldBlock`, waiting for
    /// readability in between.
    pub fn read_with<R>(&self, mut op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        self.src.io(Dir::Read, || op(&self.inner))
    }

    /// Runs the non-blocking write `op` until it does not fail with `WouldBlock`, waiting for
    /// writability in between.
    pub fn write_with<R>(&self, mut op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        self.src.io(Dir::Write, || op(&self.inner))
    }

    /// Stops watching the fd: tasks waiting on it wake with a `NotConnected` error, and so do
    /// all later waits. The fd itself stays open until the `AsyncFd` is dropped.
    pub fn close(&self) {
        self.src.close();
    }

    /// Whether [`close`](AsyncFd::close) was called.
    pub fn is_closed(&self) -> bool {
        self.src.is_closed()
    }

    /// The watched object.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Stops watching and gives the object back.
    pub fn into_inner(self) -> T {
        let AsyncFd { src, inner } = self;
        drop(src);
        inner
    }
}

impl<T: AsRawFd> AsRawFd for AsyncFd<T> {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }
}

impl<T: AsRawFd + AsFd> AsFd for AsyncFd<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

impl<T: AsRawFd + fmt::Debug> fmt::Debug for AsyncFd<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncFd")
            .field("inner", &self.inner)
            .field("closed", &self.src.is_closed())
            .finish()
    }
}

/// Waits until `fd` is readable: in a task, by yielding to the loop; outside any coroutine, by
/// blocking the thread in `poll(2)`. Registers the fd with the loop for the duration of the
/// wait only; for repeated waits keep an [`AsyncFd`].
///
/// # Errors
/// If the fd is not valid, or is registered with the loop already (it belongs to an
/// [`AsyncFd`] or a socket of this crate: wait through that instead).
pub fn wait_readable(fd: BorrowedFd<'_>) -> io::Result<()> {
    Source::new(fd.as_raw_fd()).wait_ready(Dir::Read)
}

/// Waits until `fd` is writable; see [`wait_readable`].
pub fn wait_writable(fd: BorrowedFd<'_>) -> io::Result<()> {
    Source::new(fd.as_raw_fd()).wait_ready(Dir::Write)
}

/// A branch for [`select!`](crate::select!) that fires when `fd` is readable; see [`Ready`].
/// While the branch waits in a task, a duplicate of the fd (made on the first wait, closed
/// when the branch is dropped) is registered with the loop, never `fd` itself: so the branch
/// also works on an fd that an [`AsyncFd`] or a socket of this crate has registered, and does
/// not keep them from registering it meanwhile (for those, their own `readable_branch` costs
/// less: it needs no duplicate).
///
/// # Errors
/// The branch fires with an error if the fd is not valid, or cannot be duplicated (the
/// process is out of fds).
pub fn readable_branch(fd: BorrowedFd<'_>) -> Ready<'_> {
    Ready::owned(fd, Dir::Read)
}

/// A branch that fires when `fd` is writable; see [`readable_branch`].
pub fn writable_branch(fd: BorrowedFd<'_>) -> Ready<'_> {
    Ready::owned(fd, Dir::Write)
}

/// How often a readiness branch of a select on a plain thread looks at its fd (nothing tells
/// a parked thread that an fd became ready).
const THREAD_POLL: Duration = Duration::from_millis(1);

/// The source a [`Ready`] branch watches: an fd's own; or a bare fd, with the duplicate that
/// the branch registers with the loop once it waits in a task (epoll keys a registration by
/// fd number, so the fd itself might be registered already, or be registered meanwhile).
enum SrcRef<'a> {
    Borrowed(&'a Source),
    Owned(BorrowedFd<'a>, Option<Dup>),
}

/// The duplicate of a bare fd that a [`Ready`] branch registers. The fields drop in order: the
/// source leaves the loop, then the duplicate closes.
struct Dup {
    src: Source,
    _fd: OwnedFd,
}

/// A [select](mod@crate::select) branch that fires when an fd is ready for reading or writing
/// (level-triggered: at once if it already is), with `Ok(())`, or with an error (the fd was
/// [closed](AsyncFd::close), is not valid, or could not be registered with the loop).
///
/// Made by [`AsyncFd::readable_branch`], the sockets' `readable_branch`/`writable_branch`
/// ([`TcpStream`](crate::net::TcpStream), …) and [`readable_branch`]/[`writable_branch`].
///
/// **Consumes nothing**: readiness is only looked at (`poll(2)` with no wait), so a losing
/// branch leaves the fd as it was, and a winning one says the fd was ready when the select
/// looked — the read or write that follows can still say `WouldBlock` if another task drained
/// the fd in between (the crate's own `read`/`write` then just wait again).
///
/// In a task it waits on the loop's reactor (its waiter is withdrawn when the select ends);
/// on a plain thread the select looks at the fd every millisecond.
pub struct Ready<'a> {
    src: SrcRef<'a>,
    dir: Dir,
    /// The waiter this branch added: the loop, the fd's slot and the key.
    reg: Option<(u64, Slot, TaskKey)>,
    /// Registered for a parked thread: the select should look again soon.
    polling: bool,
    /// An error from registering, to fire with.
    err: Option<io::Error>,
}

impl<'a> Ready<'a> {
    pub(crate) fn new(src: &'a Source, dir: Dir) -> Ready<'a> {
        Ready {
            src: SrcRef::Borrowed(src),
            dir,
            reg: None,
            polling: false,
            err: None,
        }
    }

    fn owned(fd: BorrowedFd<'a>, dir: Dir) -> Ready<'a> {
        Ready {
            src: SrcRef::Owned(fd, None),
            dir,
            reg: None,
            polling: false,
            err: None,
        }
    }

    /// The fd the branch watches (a bare fd itself, not its duplicate).
    fn fd(&self) -> RawFd {
        match &self.src {
            SrcRef::Borrowed(s) => s.fd,
            SrcRef::Owned(fd, _) => fd.as_raw_fd(),
        }
    }

    /// Whether the fd's owner closed it (a bare fd cannot be closed under a branch).
    fn is_closed(&self) -> bool {
        matches!(&self.src, SrcRef::Borrowed(s) if s.is_closed())
    }

    /// The registration with `inner`'s reactor, made now if need be (for a bare fd, of its
    /// duplicate, made now if need be).
    fn slot_in(&mut self, inner: &Inner) -> io::Result<Slot> {
        match &mut self.src {
            SrcRef::Borrowed(s) => s.slot_in(inner),
            SrcRef::Owned(fd, dup) => {
                let d = match dup {
                    Some(d) => d,
                    None => {
                        let fd = fd.try_clone_to_owned()?;
                        dup.insert(Dup {
                            src: Source::new(fd.as_raw_fd()),
                            _fd: fd,
                        })
                    }
                };
                d.src.slot_in(inner)
            }
        }
    }
}

impl Selectable for Ready<'_> {
    type Output = io::Result<()>;

    fn try_select(&mut self) -> Option<io::Result<()>> {
        if let Some(e) = self.err.take() {
            return Some(Err(e));
        }
        if self.is_closed() {
            return Some(Err(closed_error()));
        }
        match poll_fd(self.fd(), self.dir, 0) {
            Ok(true) => Some(Ok(())),
            Ok(false) => None,
            Err(e) => Some(Err(e)),
        }
    }

    fn register(&mut self, waker: &Waker) {
        self.deregister();
        if self.is_closed() {
            return; // `try_select` fires with the error; a closed fd stays out of the loop
        }
        let inner = waker
            .task_key()
            .and_then(|(id, key)| Some((current_loop().filter(|l| l.id() == id)?, key)));
        let Some((inner, key)) = inner else {
            self.polling = true;
            return;
        };
        match self.slot_in(&inner) {
            Ok(slot) => {
                inner.reactor().add_waiter(slot, self.dir, key);
                self.reg = Some((inner.id(), slot, key));
            }
            Err(e) => self.err = Some(e),
        }
    }

    fn deregister(&mut self) {
        self.polling = false;
        let Some((id, slot, key)) = self.reg.take() else {
            return;
        };
        if let Some(inner) = current_loop().filter(|l| l.id() == id) {
            inner.reactor().remove_waiter(slot, self.dir, key);
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.polling.then(|| Instant::now() + THREAD_POLL)
    }
}

impl Drop for Ready<'_> {
    fn drop(&mut self) {
        self.deregister();
    }
}

impl fmt::Debug for Ready<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ready")
            .field("fd", &self.fd())
            .field("dir", &self.dir)
            .field("registered", &self.reg.is_some())
            .finish()
    }
}
