//! What the socket types of [`net`](super) share: the listen backlog, the `!Send` marker, the
//! loop over the addresses of a [`ToSocketAddrs`](super::ToSocketAddrs), the wait for a
//! non-blocking connect, and the `Read`/`Write` impls of the stream sockets.
//!
//! Operations floor, part of `net`: imports readiness (`io`, `reactor`) and `net`'s name
//! lookup (`lookup`).

use super::lookup::{self, ToSocketAddrs};
use crate::io::Source;
use crate::reactor::Dir;
use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::os::fd::RawFd;

/// The listen backlog of [`TcpListener::bind`](super::TcpListener::bind) and
/// [`UnixListener::bind`](super::UnixListener::bind) (the kernel caps it
/// at `net.core.somaxconn`).
pub const LISTEN_BACKLOG: i32 = 1024;

/// Not `Send`, not `Sync`: a socket's registration belongs to its thread's loop.
pub(super) type NotSend = PhantomData<*const ()>;

pub(super) fn listen(fd: RawFd, backlog: i32) -> io::Result<()> {
    // SAFETY: listen(2) on an fd we own; it only reads its arguments.
    if unsafe { libc::listen(fd, backlog) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Tries `f` for each address `addr` resolves to, in turn; the first success, or the last
/// error if none works.
pub(super) fn each_addr<A: ToSocketAddrs, T>(
    addr: A,
    mut f: impl FnMut(SocketAddr) -> io::Result<T>,
) -> io::Result<T> {
    let mut last = None;
    for a in lookup::resolve(&addr)? {
        match f(a) {
            Ok(t) => return Ok(t),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "no addresses to connect to")
    }))
}

macro_rules! stream_io {
    ($t:ty) => {
        impl Read for &$t {
            #[inline]
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let len = buf.len();
                self.src.read(len, || (&self.io).read(buf))
            }
            fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
                self.src.io(Dir::Read, || (&self.io).read_vectored(bufs))
            }
        }

        impl Write for &$t {
            #[inline]
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.src.io(Dir::Write, || (&self.io).write(buf))
            }
            fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                self.src.io(Dir::Write, || (&self.io).write_vectored(bufs))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }

        impl Read for $t {
            #[inline]
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                (&*self).read(buf)
            }
            fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
                (&*self).read_vectored(bufs)
            }
        }

        impl Write for $t {
            #[inline]
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                (&*self).write(buf)
            }
            fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                (&*self).write_vectored(bufs)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }

        impl AsRawFd for $t {
            fn as_raw_fd(&self) -> RawFd {
                self.io.as_raw_fd()
            }
        }

        impl AsFd for $t {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.io.as_fd()
            }
        }
    };
}

/// Waits for a non-blocking connect on `src` to finish; `check` reports its outcome
/// (`take_error`, then `peer_addr`, which fails with `NotConnected` while it is in progress).
pub(super) fn finish_connect(
    src: &Source,
    mut check: impl FnMut() -> io::Result<Option<io::Error>>,
    mut connected: impl FnMut() -> bool,
) -> io::Result<()> {
    loop {
        src.wait(Dir::Write)?;
        if let Some(e) = check()? {
            return Err(e);
        }
        if connected() {
            return Ok(());
        }
    }
}

pub(super) use stream_io;
