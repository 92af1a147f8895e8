//! Name lookup that keeps the loop running: [`lookup_host`], and [`ToSocketAddrs`], the address
//! argument of the sockets' `connect`, `bind` and `send_to`.
//!
//! Operations floor, part of [`net`](super): imports the worker pool (`blocking`).
//!
//! Resolving a host name (`getaddrinfo`) is a blocking call with no non-blocking form: it may
//! read files, ask a DNS server and wait seconds for the answer. Made on the loop's thread, it
//! would stall every task. So a name goes to the loop's worker pool
//! ([`run_blocking`](crate::run_blocking)) while the task yields; an address needs no lookup
//! and is used as it is, without a trip to the pool.
//!
//! # Why a trait of our own
//!
//! [`std::net::ToSocketAddrs`] cannot tell a caller whether a value is a name or an address
//! without resolving it (which is the blocking call), and a generic `A: std::net::ToSocketAddrs`
//! cannot be sent to a worker thread (it need not be `Send`, nor `'static`: `&str` is the
//! common case). [`ToSocketAddrs`] is implemented for the same types as std's (sealed: only
//! those), and each implementation knows which case it is in: an address is returned at once,
//! a name is copied into an owned `String` (with its port) and that is resolved on the pool.

use crate::blocking::run_blocking;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Values that give one or more socket addresses: what [`TcpStream::connect`],
/// [`TcpListener::bind`], [`UdpSocket::bind`], [`UdpSocket::connect`] and
/// [`UdpSocket::send_to`] take, and [`lookup_host`] resolves.
///
/// Implemented for the types [`std::net::ToSocketAddrs`] is: [`SocketAddr`],
/// [`SocketAddrV4`], [`SocketAddrV6`], `(IpAddr, u16)`, `(Ipv4Addr, u16)`, `(Ipv6Addr, u16)`,
/// `(&str, u16)`, `(String, u16)`, `&str` and `String` (`"host:port"`), `[SocketAddr]` (as
/// `&[SocketAddr]`), and references to any of these. Sealed: it cannot be implemented outside
/// this crate.
///
/// A string that parses as an address (`"127.0.0.1:80"`, `"[::1]:80"`, `("10.0.0.1", 80)`) is
/// used as it is; any other is a host name, resolved by [`lookup_host`] on the loop's worker
/// pool.
///
/// [`TcpStream::connect`]: super::TcpStream::connect
/// [`TcpListener::bind`]: super::TcpListener::bind
/// [`UdpSocket::bind`]: super::UdpSocket::bind
/// [`UdpSocket::connect`]: super::UdpSocket::connect
/// [`UdpSocket::send_to`]: super::UdpSocket::send_to
pub trait ToSocketAddrs: sealed::Sealed {}

pub(crate) mod sealed {
    use super::Addrs;
    use std::io;

    /// The one method of [`ToSocketAddrs`](super::ToSocketAddrs), out of users' reach.
    pub trait Sealed {
        /// The addresses: at once for an address, through the worker pool for a name.
        fn resolve(&self) -> io::Result<Addrs>;
    }
}

/// The addresses a [`ToSocketAddrs`] gave: one without allocating (the common case, and the
/// one on `send_to`'s path), or a list.
pub enum Addrs {
    /// A single address (taken by the first `next`).
    One(Option<SocketAddr>),
    /// A resolved name or a slice of addresses.
    Many(std::vec::IntoIter<SocketAddr>),
}

impl Iterator for Addrs {
    type Item = SocketAddr;

    #[inline]
    fn next(&mut self) -> Option<SocketAddr> {
        match self {
            Addrs::One(a) => a.take(),
            Addrs::Many(it) => it.next(),
        }
    }
}

/// The addresses `addr` gives (resolving a name on the worker pool).
#[inline]
pub(super) fn resolve<A: ToSocketAddrs + ?Sized>(addr: &A) -> io::Result<Addrs> {
    addr.resolve()
}

/// Resolves `host` — a `"name:port"` string, a `(name, port)` pair, or an address — to socket
/// addresses, as [`std::net::ToSocketAddrs`] does, but without blocking the loop: a name is
/// resolved on the loop's worker pool ([`run_blocking`](crate::run_blocking)) while the
/// running task yields, so the loop goes on running the other tasks. An address is returned
/// as it is, without a trip to the pool. Outside any coroutine the name is resolved on the
/// calling thread.
///
/// In a [`timeout`](crate::timeout) scope that expires while the lookup waits for a worker, the
/// lookup is taken off the pool's queue; one that a worker has started runs to its end there
/// (a thread cannot be stopped in `getaddrinfo`) and its result is dropped.
///
/// ```
/// use costack_aio::net::lookup_host;
/// use costack_aio::EventLoop;
///
/// EventLoop::new().block_on(|| {
///     let addrs: Vec<_> = lookup_host("localhost:8080").unwrap().collect();
///     assert!(addrs.iter().all(|a| a.port() == 8080 && a.ip().is_loopback()));
///     // An address needs no lookup.
///     let addrs: Vec<_> = lookup_host(("127.0.0.1", 53)).unwrap().collect();
///     assert_eq!(addrs, ["127.0.0.1:53".parse().unwrap()]);
///     // `.invalid` never resolves (RFC 6761).
///     assert!(lookup_host("nonexistent.invalid:80").is_err());
/// });
/// ```
///
/// # Errors
/// What `getaddrinfo` reports for a name that does not resolve; `InvalidInput` for a string
/// that is neither an address nor `host:port`.
///
/// # Panics
/// Inside a coroutine that is not a task of this thread's loop (as every wait).
pub fn lookup_host<A: ToSocketAddrs>(host: A) -> io::Result<std::vec::IntoIter<SocketAddr>> {
    Ok(resolve(&host)?.collect::<Vec<_>>().into_iter())
}

/// Resolves an owned name on the worker pool (on the calling thread outside any coroutine).
fn lookup<N>(name: N) -> io::Result<Addrs>
where
    N: std::net::ToSocketAddrs + Send + 'static,
{
    let v = run_blocking(move || name.to_socket_addrs().map(Iterator::collect::<Vec<_>>))?;
    Ok(Addrs::Many(v.into_iter()))
}

macro_rules! addr_impls {
    ($($t:ty),*) => {$(
        impl ToSocketAddrs for $t {}
        impl sealed::Sealed for $t {
            #[inline]
            fn resolve(&self) -> io::Result<Addrs> {
                Ok(Addrs::One(Some(SocketAddr::from(*self))))
            }
        }
    )*};
}

addr_impls!(
    SocketAddr,
    SocketAddrV4,
    SocketAddrV6,
    (IpAddr, u16),
    (Ipv4Addr, u16),
    (Ipv6Addr, u16)
);

impl ToSocketAddrs for str {}
impl sealed::Sealed for str {
    fn resolve(&self) -> io::Result<Addrs> {
        match self.parse::<SocketAddr>() {
            Ok(a) => Ok(Addrs::One(Some(a))),
            Err(_) => lookup(self.to_owned()),
        }
    }
}

impl ToSocketAddrs for String {}
impl sealed::Sealed for String {
    fn resolve(&self) -> io::Result<Addrs> {
        self.as_str().resolve()
    }
}

impl ToSocketAddrs for (&str, u16) {}
impl sealed::Sealed for (&str, u16) {
    fn resolve(&self) -> io::Result<Addrs> {
        let (host, port) = *self;
        match host.parse::<IpAddr>() {
            Ok(ip) => Ok(Addrs::One(Some(SocketAddr::new(ip, port)))),
            Err(_) => lookup((host.to_owned(), port)),
        }
    }
}

impl ToSocketAddrs for (String, u16) {}
impl sealed::Sealed for (String, u16) {
    fn resolve(&self) -> io::Result<Addrs> {
        (self.0.as_str(), self.1).resolve()
    }
}

impl ToSocketAddrs for [SocketAddr] {}
impl sealed::Sealed for [SocketAddr] {
    fn resolve(&self) -> io::Result<Addrs> {
        Ok(Addrs::Many(Vec::from(self).into_iter()))
    }
}

impl<T: ToSocketAddrs + ?Sized> ToSocketAddrs for &T {}
impl<T: ToSocketAddrs + ?Sized> sealed::Sealed for &T {
    #[inline]
    fn resolve(&self) -> io::Result<Addrs> {
        (**self).resolve()
    }
}
