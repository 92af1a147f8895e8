//! UDP: [`UdpSocket`].
//!
//! Operations floor, part of [`net`](super): imports readiness (`io`, `reactor`), the shared
//! helpers of `net` (`shared`) and its name lookup (`lookup`).
//!
//! The socket is a non-blocking `std::net::UdpSocket` beside the loop's readiness state: each
//! call tries the system call and, on `WouldBlock`, waits for the next readiness edge (in a
//! task, by yielding; on a plain thread, in `poll(2)`) and tries again. Everything else —
//! truncation, errors, options — is std's, unchanged.

use super::lookup::{resolve, ToSocketAddrs};
use super::shared::{each_addr, NotSend};
use crate::io::Source;
use crate::reactor::Dir;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

/// A UDP socket whose sends and receives yield the task instead of blocking the thread.
///
/// Every call takes `&self`, so tasks can share one socket (behind an `Rc`, or a reference
/// that outlives them): one may wait in [`recv_from`](UdpSocket::recv_from) while another
/// sends. A call that would block yields the running task until the socket is ready; outside
/// any coroutine it blocks the thread in `poll(2)`, so the socket works on plain threads too.
/// Results and errors are std's: a datagram longer than the buffer is truncated to it (the
/// call returns the buffer's length, the rest of the datagram is lost); on a
/// [connected](UdpSocket::connect) socket, an ICMP "port unreachable" for an earlier send is
/// reported by a later call as `ConnectionRefused`.
///
/// Bound to its thread (`!Send`); move a `std::net::UdpSocket` and wrap it with
/// [`from_std`](UdpSocket::from_std) on the other side.
///
/// ```
/// use costack_aio::net::UdpSocket;
/// use costack_aio::EventLoop;
///
/// EventLoop::new().block_on(|| {
///     let server = UdpSocket::bind("127.0.0.1:0").unwrap();
///     let addr = server.local_addr().unwrap();
///     let echo = costack_aio::spawn(move || {
///         let mut buf = [0; 1500];
///         let (n, peer) = server.recv_from(&mut buf).unwrap(); // yields until a datagram comes
///         server.send_to(&buf[..n], peer).unwrap();
///     });
///     let client = UdpSocket::bind("127.0.0.1:0").unwrap();
///     client.connect(addr).unwrap();
///     client.send(b"ping").unwrap();
///     let mut buf = [0; 16];
///     let n = client.recv(&mut buf).unwrap();
///     assert_eq!(&buf[..n], b"ping");
///     echo.join();
/// });
/// ```
pub struct UdpSocket {
    // Declared first: deregisters before `io` closes the fd.
    src: Source,
    io: std::net::UdpSocket,
    _not_send: NotSend,
}

impl UdpSocket {
    /// Wraps a socket that is non-blocking already.
    fn wrap(io: std::net::UdpSocket) -> UdpSocket {
        UdpSocket {
            src: Source::new(io.as_raw_fd()),
            io,
            _not_send: PhantomData,
        }
    }

    /// Creates a socket bound to the first address that works (port 0: one the kernel picks).
    /// A host name is resolved by [`lookup_host`](super::lookup_host), off the loop's thread.
    ///
    /// # Errors
    /// The last address's error (`AddrInUse`, `AddrNotAvailable`…), or the lookup's.
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<UdpSocket> {
        each_addr(addr, |a| UdpSocket::from_std(std::net::UdpSocket::bind(a)?))
    }

    /// Wraps a std socket (makes it non-blocking).
    pub fn from_std(s: std::net::UdpSocket) -> io::Result<UdpSocket> {
        s.set_nonblocking(true)?;
        Ok(UdpSocket::wrap(s))
    }

    /// Stops watching the socket and gives back the std socket, still non-blocking (call
    /// `set_nonblocking(false)` on it for blocking use).
    pub fn into_std(self) -> std::net::UdpSocket {
        let UdpSocket { src, io, .. } = self;
        drop(src);
        io
    }

    /// Another handle to the same socket (`dup(2)`), watched on its own: both can wait, each
    /// is woken by the socket's readiness. Datagrams go to whichever handle reads first.
    pub fn try_clone(&self) -> io::Result<UdpSocket> {
        // The duplicate shares the open file description, and with it `O_NONBLOCK`.
        Ok(UdpSocket::wrap(self.io.try_clone()?))
    }

    /// Sets the default peer (a non-blocking `connect(2)`, which never waits for UDP):
    /// [`send`](UdpSocket::send) goes there, and only its datagrams are received. The first
    /// address that works is used.
    pub fn connect<A: ToSocketAddrs>(&self, addr: A) -> io::Result<()> {
        each_addr(addr, |a| self.io.connect(a))
    }

    /// Sends `buf` as one datagram to `target` (its first address, if it gives several);
    /// yields while the send buffer is full. The number of bytes sent.
    ///
    /// A host name is looked up on every call (on the worker pool, see
    /// [`lookup_host`](super::lookup_host)): to send to one repeatedly, look it up once and
    /// pass the `SocketAddr`.
    ///
    /// # Errors
    /// `InvalidInput` if `target` gives no address; std's errors otherwise (a datagram larger
    /// than the protocol allows is refused whole, with the system's `EMSGSIZE`).
    pub fn send_to<A: ToSocketAddrs>(&self, buf: &[u8], target: A) -> io::Result<usize> {
        let Some(a) = resolve(&target)?.next() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no addresses to send data to",
            ));
        };
        self.src.io(Dir::Write, || self.io.send_to(buf, a))
    }

    /// Waits for a datagram and receives it into `buf`: the bytes written and the sender. A
    /// datagram longer than `buf` is truncated to `buf.len()`; its tail is lost.
    #[inline]
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.src.io(Dir::Read, || self.io.recv_from(buf))
    }

    /// As [`recv_from`](UdpSocket::recv_from), but leaves the datagram queued (`MSG_PEEK`).
    pub fn peek_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.src.io(Dir::Read, || self.io.peek_from(buf))
    }

    /// Sends `buf` to the [connected](UdpSocket::connect) peer; yields while the send buffer
    /// is full.
    ///
    /// # Errors
    /// the system's `EDESTADDRREQ` if not connected; `ConnectionRefused` if an
    /// earlier datagram to the peer was refused (ICMP port unreachable).
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.src.io(Dir::Write, || self.io.send(buf))
    }

    /// Waits for a datagram from the [connected](UdpSocket::connect) peer and receives it
    /// into `buf` (truncated to `buf.len()`).
    ///
    /// # Errors
    /// `ConnectionRefused` if a datagram sent to the peer was refused (ICMP port unreachable).
    #[inline]
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.src.io(Dir::Read, || self.io.recv(buf))
    }

    /// As [`recv`](UdpSocket::recv), but leaves the datagram queued (`MSG_PEEK`).
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.src.io(Dir::Read, || self.io.peek(buf))
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    /// The [connected](UdpSocket::connect) peer's address (`NotConnected` if none).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.peer_addr()
    }

    /// Sets `SO_BROADCAST` (may send to a broadcast address).
    pub fn set_broadcast(&self, on: bool) -> io::Result<()> {
        self.io.set_broadcast(on)
    }

    /// Whether `SO_BROADCAST` is set.
    pub fn broadcast(&self) -> io::Result<bool> {
        self.io.broadcast()
    }

    /// Sets `IP_MULTICAST_LOOP` (IPv4 multicast sent is also delivered to local sockets).
    pub fn set_multicast_loop_v4(&self, on: bool) -> io::Result<()> {
        self.io.set_multicast_loop_v4(on)
    }

    /// Whether `IP_MULTICAST_LOOP` is set.
    pub fn multicast_loop_v4(&self) -> io::Result<bool> {
        self.io.multicast_loop_v4()
    }

    /// Sets `IP_MULTICAST_TTL` (how many hops IPv4 multicast may travel; 1: the local network).
    pub fn set_multicast_ttl_v4(&self, ttl: u32) -> io::Result<()> {
        self.io.set_multicast_ttl_v4(ttl)
    }

    /// The `IP_MULTICAST_TTL`.
    pub fn multicast_ttl_v4(&self) -> io::Result<u32> {
        self.io.multicast_ttl_v4()
    }

    /// Sets `IPV6_MULTICAST_LOOP` (IPv6 multicast sent is also delivered to local sockets).
    pub fn set_multicast_loop_v6(&self, on: bool) -> io::Result<()> {
        self.io.set_multicast_loop_v6(on)
    }

    /// Whether `IPV6_MULTICAST_LOOP` is set.
    pub fn multicast_loop_v6(&self) -> io::Result<bool> {
        self.io.multicast_loop_v6()
    }

    /// Joins the IPv4 multicast group `group` on the interface with address `interface`
    /// (`0.0.0.0`: the system picks one).
    pub fn join_multicast_v4(&self, group: &Ipv4Addr, interface: &Ipv4Addr) -> io::Result<()> {
        self.io.join_multicast_v4(group, interface)
    }

    /// Joins the IPv6 multicast group `group` on interface number `interface` (0: the system
    /// picks one).
    pub fn join_multicast_v6(&self, group: &Ipv6Addr, interface: u32) -> io::Result<()> {
        self.io.join_multicast_v6(group, interface)
    }

    /// Leaves an IPv4 multicast group (see [`join_multicast_v4`](UdpSocket::join_multicast_v4)).
    pub fn leave_multicast_v4(&self, group: &Ipv4Addr, interface: &Ipv4Addr) -> io::Result<()> {
        self.io.leave_multicast_v4(group, interface)
    }

    /// Leaves an IPv6 multicast group (see [`join_multicast_v6`](UdpSocket::join_multicast_v6)).
    pub fn leave_multicast_v6(&self, group: &Ipv6Addr, interface: u32) -> io::Result<()> {
        self.io.leave_multicast_v6(group, interface)
    }

    /// Sets `IP_TTL` (the time-to-live of unicast IPv4 datagrams sent).
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.io.set_ttl(ttl)
    }

    /// The `IP_TTL`.
    pub fn ttl(&self) -> io::Result<u32> {
        self.io.ttl()
    }

    /// Takes the pending socket error (`SO_ERROR`), such as the `ConnectionRefused` of an
    /// ICMP port unreachable, which the next send or receive would otherwise report.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.io.take_error()
    }

    /// Stops watching the socket: tasks waiting on it wake with a `NotConnected` error, as
    /// does every later send or receive. The fd is released when the socket is dropped.
    pub fn close(&self) {
        self.src.close();
    }
}

impl AsRawFd for UdpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.io.as_raw_fd()
    }
}

impl AsFd for UdpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.as_fd()
    }
}

impl fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpSocket")
            .field("fd", &self.io.as_raw_fd())
            .field("local", &self.io.local_addr().ok())
            .field("peer", &self.io.peer_addr().ok())
            .finish()
    }
}

ready_branches!(UdpSocket);
