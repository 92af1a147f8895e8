//! TCP and Unix sockets whose blocking-style I/O yields the task instead of the thread.
//!
//! Operations floor: imports readiness (`io`, `reactor`) and timers (`time`: a Unix connect
//! to a full backlog retries after a sleep).
//!
//! These types implement [`std::io::Read`] and [`std::io::Write`] (for `T` and for `&T`, so a
//! reader and a writer task can share one socket). A call that would block yields the
//! running task until the socket is ready, then continues; to the code that made the call it
//! looks exactly like a blocking socket. So `read_exact`, `write_all`, [`std::io::BufReader`]
//! and its `lines()`, a serde reader — any synchronous code — runs unchanged in a task:
//!
//! ```
//! use costack_aio::net::{TcpListener, TcpStream};
//! use costack_aio::EventLoop;
//! use std::io::{BufRead, BufReader, Write};
//!
//! let lp = EventLoop::new();
//! lp.block_on(|| {
//!     let listener = TcpListener::bind("127.0.0.1:0").unwrap();
//!     let addr = listener.local_addr().unwrap();
//!     let server = costack_aio::spawn(move || {
//!         let (stream, _) = listener.accept().unwrap();
//!         for line in BufReader::new(&stream).lines() {
//!             let line = line.unwrap();
//!             writeln!(&stream, "{}", line.to_uppercase()).unwrap();
//!         }
//!     });
//!     let client = TcpStream::connect(addr).unwrap();
//!     writeln!(&client, "hello").unwrap();
//!     let mut reply = String::new();
//!     BufReader::new(&client).read_line(&mut reply).unwrap();
//!     assert_eq!(reply, "HELLO\n");
//!     drop(client); // the server's lines() ends
//!     server.join();
//! });
//! ```
//!
//! Outside any coroutine the same calls block the thread (in `poll(2)`), so the types work in
//! plain threads too. Sockets are bound to their thread (`!Send`); move a `std` socket and wrap
//! it with `from_std` on the other side.
//!
//! `close(&self)` shuts a socket down while other tasks may be waiting on it: they get a
//! `NotConnected` error (see [`io`](crate::io#closing-under-a-waiter)).

use crate::io::Source;
use crate::reactor::Dir;
use crate::time::sleep;
use std::fmt;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::marker::PhantomData;
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::Path;
use std::time::Duration;

/// The listen backlog of [`TcpListener::bind`] and [`UnixListener::bind`] (the kernel caps it
/// at `net.core.somaxconn`).
pub const LISTEN_BACKLOG: i32 = 1024;

/// Not `Send`, not `Sync`: a socket's registration belongs to its thread's loop.
type NotSend = PhantomData<*const ()>;

fn listen(fd: RawFd, backlog: i32) -> io::Result<()> {
    // SAFETY: listen(2) on an fd we own; it only reads its arguments.
    if unsafe { libc::listen(fd, backlog) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Tries `connect` for each address in turn; the last error if none works.
fn each_addr<A: ToSocketAddrs, T>(
    addr: A,
    mut f: impl FnMut(SocketAddr) -> io::Result<T>,
) -> io::Result<T> {
    let mut last = None;
    for a in addr.to_socket_addrs()? {
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
fn finish_connect(
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

/// A TCP connection. See the [module docs](self).
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
    /// Name resolution (`to_socket_addrs`) blocks the thread: give addresses, or resolve in
    /// [`run_blocking`](crate::run_blocking).
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
    /// [`LISTEN_BACKLOG`].
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

/// A Unix-domain stream socket. Same behaviour as [`TcpStream`].
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

    /// Shuts the socket down and stops watching it; see [`TcpStream::close`].
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
    /// Binds to `path` with a backlog of [`LISTEN_BACKLOG`].
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

    /// Stops watching the listener; see [`TcpListener::close`].
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

/// The readiness branches of the sockets, for [`select!`](crate::select!).
macro_rules! ready_branches {
    ($($t:ident),*) => {$(
        impl $t {
            /// A [select](mod@crate::select) branch that fires when the socket is readable (for a
            /// listener: has a connection to accept), or has an error or hang-up to report; see
            /// [`Ready`](crate::io::Ready). It consumes nothing.
            pub fn readable_branch(&self) -> crate::io::Ready<'_> {
                crate::io::Ready::new(&self.src, Dir::Read)
            }

            /// A [select](mod@crate::select) branch that fires when the socket is writable; see
            /// [`Ready`](crate::io::Ready).
            pub fn writable_branch(&self) -> crate::io::Ready<'_> {
                crate::io::Ready::new(&self.src, Dir::Write)
            }
        }
    )*};
}

ready_branches!(TcpStream, TcpListener, UnixStream, UnixListener);
