//! Unix-domain stream sockets: [`UnixStream`] and [`UnixListener`].
//!
//! Operations floor, part of [`net`](super): imports readiness (`io`, `reactor`), the shared
//! helpers of `net` (`shared`), and timers (`time`: a connect to a full backlog retries after a sleep).

use super::shared::{finish_connect, listen, stream_io, NotSend, LISTEN_BACKLOG};
use crate::io::Source;
use crate::reactor::Dir;
use crate::time::sleep;
use std::fmt;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::marker::PhantomData;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::Path;
use std::time::Duration;

/// A Unix-domain stream socket. Same behaviour as [`TcpStream`](super::TcpStream).
pub struct UnixStream {
    src: Source,
    io: mio::net::UnixStream,
    _not_send: NotSend,
}

stream_io!(UnixStream);

impl UnixStream {
    fn from_mio(io: mio::net::UnixStream) -> UnixStream {
        UnixStream {
            src: Source::new(io.as_raw_fd()),
            io,
            _not_send: PhantomData,
        }
    }

    /// Connects to the socket at `path` (non-blocking; a full backlog is retried).
    pub fn connect<P: AsRef<Path>>(path: P) -> io::Result<UnixStream> {
        let io = loop {
            match mio::net::UnixStream::connect(path.as_ref()) {
                Ok(io) => break io,
                // The listener's backlog is full: wait a little, then try again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => sleep(Duration::from_millis(1)),
                Err(e) => return Err(e),
            }
        };
        let s = UnixStream::from_mio(io);
        finish_connect(&s.src, || s.io.take_error(), || s.io.peer_addr().is_ok())?;
        Ok(s)
    }

    /// A connected pair.
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = mio::net::UnixStream::pair()?;
        Ok((UnixStream::from_mio(a), UnixStream::from_mio(b)))
    }

    /// Wraps a connected std stream (makes it non-blocking).
    pub fn from_std(s: std::os::unix::net::UnixStream) -> io::Result<UnixStream> {
        s.set_nonblocking(true)?;
        Ok(UnixStream::from_mio(mio::net::UnixStream::from_std(s)))
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<std::os::unix::net::SocketAddr> {
        self.io.local_addr()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<std::os::unix::net::SocketAddr> {
        self.io.peer_addr()
    }

    /// Shuts down the read half, the write half, or both.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.io.shutdown(how)
    }

    /// Shuts the socket down and stops watching it; see [`TcpStream::close`](super::TcpStream::close).
    pub fn close(&self) {
        let _ = self.io.shutdown(Shutdown::Both);
        self.src.close();
    }
}

impl fmt::Debug for UnixStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixStream")
            .field("fd", &self.io.as_raw_fd())
            .finish()
    }
}

/// A Unix-domain listening socket.
pub struct UnixListener {
    src: Source,
    io: mio::net::UnixListener,
    _not_send: NotSend,
}

impl UnixListener {
    /// Binds to `path` with a backlog of [`LISTEN_BACKLOG`](super::LISTEN_BACKLOG).
    pub fn bind<P: AsRef<Path>>(path: P) -> io::Result<UnixListener> {
        let io = mio::net::UnixListener::bind(path)?;
        listen(io.as_raw_fd(), LISTEN_BACKLOG)?;
        Ok(UnixListener {
            src: Source::new(io.as_raw_fd()),
            io,
            _not_send: PhantomData,
        })
    }

    /// Waits for a connection.
    pub fn accept(&self) -> io::Result<(UnixStream, std::os::unix::net::SocketAddr)> {
        let (s, a) = self.src.io(Dir::Read, || self.io.accept())?;
        Ok((UnixStream::from_mio(s), a))
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<std::os::unix::net::SocketAddr> {
        self.io.local_addr()
    }

    /// Stops watching the listener; see [`TcpListener::close`](super::TcpListener::close).
    pub fn close(&self) {
        self.src.close();
    }
}

impl AsRawFd for UnixListener {
    fn as_raw_fd(&self) -> RawFd {
        self.io.as_raw_fd()
    }
}

impl fmt::Debug for UnixListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixListener")
            .field("fd", &self.io.as_raw_fd())
            .finish()
    }
}

ready_branches!(UnixStream, UnixListener);
