//! TCP: [`TcpStream`] and [`TcpListener`].
//!
//! Operations floor, part of [`net`](super): imports readiness (`io`, `reactor`), the shared
//! helpers of `net` (`shared`) and its name lookup (`lookup`: a host name is resolved on the loop's
//! worker pool, not on the loop's thread).

use super::lookup::ToSocketAddrs;
use super::shared::{each_addr, finish_connect, listen, stream_io, NotSend, LISTEN_BACKLOG};
use crate::io::Source;
use crate::reactor::Dir;
use std::fmt;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::marker::PhantomData;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

/// A TCP connection. See the [module docs](super).
pub struct TcpStream {
    // Declared first: deregisters before `io` closes the fd.
    src: Source,
    io: mio::net::TcpStream,
    _not_send: NotSend,
}

stream_io!(TcpStream);

impl TcpStream {
    fn from_mio(io: mio::net::TcpStream) -> TcpStream {
        TcpStream {
            src: Source::new(io.as_raw_fd()),
            io,
            _not_send: PhantomData,
        }
    }

    /// Opens a connection: a non-blocking `connect`, then (in a task) a yield until it
    /// completes. Tries each address in turn.
    ///
    /// A host name (`"localhost:80"`, `("example.com", 443)`) is resolved by
    /// [`lookup_host`](super::lookup_host), on the loop's worker pool, so that the loop goes on
    /// running the other tasks meanwhile; an address (`SocketAddr`, `"127.0.0.1:80"`) is used
    /// as it is. See [`ToSocketAddrs`](super::ToSocketAddrs).
    pub fn connect<A: ToSocketAddrs>(addr: A) -> io::Result<TcpStream> {
        each_addr(addr, |a| {
            let s = TcpStream::from_mio(mio::net::TcpStream::connect(a)?);
            finish_connect(&s.src, || s.io.take_error(), || s.io.peer_addr().is_ok())?;
            Ok(s)
        })
    }

    /// Wraps a connected std stream (makes it non-blocking).
    pub fn from_std(s: std::net::TcpStream) -> io::Result<TcpStream> {
        s.set_nonblocking(true)?;
        Ok(TcpStream::from_mio(mio::net::TcpStream::from_std(s)))
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.peer_addr()
    }

    /// Sets `TCP_NODELAY` (no Nagle delay for small writes).
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.io.set_nodelay(on)
    }

    /// Whether `TCP_NODELAY` is set.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.io.nodelay()
    }

    /// Shuts down the read half, the write half, or both (`shutdown(2)`).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.io.shutdown(how)
    }

    /// Takes the pending socket error (`SO_ERROR`).
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.io.take_error()
    }

    /// Shuts the connection down both ways and stops watching it: tasks waiting on it wake
    /// with a `NotConnected` error, as does every later operation. The fd is released when
    /// the stream is dropped.
    pub fn close(&self) {
        let _ = self.io.shutdown(Shutdown::Both);
        self.src.close();
    }
}

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpStream")
            .field("fd", &self.io.as_raw_fd())
            .field("local", &self.io.local_addr().ok())
            .field("peer", &self.io.peer_addr().ok())
            .finish()
    }
}

/// A TCP listening socket.
///
/// [`accept`](TcpListener::accept) yields the task until a connection arrives. The usual
/// server is a loop that accepts and spawns a task per connection:
///
/// ```no_run
/// use costack_aio::net::TcpListener;
/// use costack_aio::EventLoop;
/// use std::io::{Read, Write};
///
/// EventLoop::new().block_on(|| {
///     let listener = TcpListener::bind("127.0.0.1:7000").unwrap();
///     for stream in listener.incoming() {
///         let mut stream = stream.unwrap();
///         costack_aio::spawn(move || {
///             let mut buf = [0; 4096];
///             while let Ok(n @ 1..) = stream.read(&mut buf) {
///                 stream.write_all(&buf[..n]).unwrap();
///             }
///         });
///     }
/// });
/// ```
pub struct TcpListener {
    src: Source,
    io: mio::net::TcpListener,
    _not_send: NotSend,
}

impl TcpListener {
    /// Binds to the first address that works, with `SO_REUSEADDR` and a backlog of
    /// [`LISTEN_BACKLOG`](super::LISTEN_BACKLOG). A host name is resolved as by [`TcpStream::connect`].
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<TcpListener> {
        each_addr(addr, |a| {
            let io = mio::net::TcpListener::bind(a)?;
            listen(io.as_raw_fd(), LISTEN_BACKLOG)?;
            Ok(TcpListener::from_mio(io))
        })
    }

    fn from_mio(io: mio::net::TcpListener) -> TcpListener {
        TcpListener {
            src: Source::new(io.as_raw_fd()),
            io,
            _not_send: PhantomData,
        }
    }

    /// Wraps a bound std listener (makes it non-blocking).
    pub fn from_std(l: std::net::TcpListener) -> io::Result<TcpListener> {
        l.set_nonblocking(true)?;
        Ok(TcpListener::from_mio(mio::net::TcpListener::from_std(l)))
    }

    /// Waits for a connection and returns it with the peer's address.
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (s, a) = self.src.io(Dir::Read, || self.io.accept())?;
        Ok((TcpStream::from_mio(s), a))
    }

    /// An endless iterator of accepted connections.
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    /// Stops watching the listener: tasks waiting in `accept` wake with a `NotConnected`
    /// error. The fd is released when the listener is dropped.
    pub fn close(&self) {
        self.src.close();
    }
}

impl AsRawFd for TcpListener {
    fn as_raw_fd(&self) -> RawFd {
        self.io.as_raw_fd()
    }
}

impl AsFd for TcpListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.as_fd()
    }
}

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpListener")
            .field("fd", &self.io.as_raw_fd())
            .field("local", &self.io.local_addr().ok())
            .finish()
    }
}

/// The iterator of [`TcpListener::incoming`].
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a TcpListener,
}

impl Iterator for Incoming<'_> {
    type Item = io::Result<TcpStream>;

    fn next(&mut self) -> Option<io::Result<TcpStream>> {
        Some(self.listener.accept().map(|(s, _)| s))
    }
}

ready_branches!(TcpStream, TcpListener);
