//! TCP, UDP and Unix sockets whose blocking-style I/O yields the task instead of the thread,
//! and name lookup that keeps the loop running.
//!
//! Operations floor: imports readiness (`io`, `reactor`), timers (`time`: a Unix connect to a
//! full backlog retries after a sleep) and the worker pool (`blocking`: name lookup). One file
//! per concept: `tcp`, `unix`, `udp`, `lookup`; this one holds what they share.
//!
//! The stream types implement [`std::io::Read`] and [`std::io::Write`] (for `T` and for `&T`, so a
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
//!
//! [`UdpSocket`] sends and receives datagrams the same way: `recv_from` yields until a
//! datagram arrives. Addresses are given as [`ToSocketAddrs`], whose host names are resolved by
//! [`lookup_host`] on the loop's worker pool (`getaddrinfo` blocks; the loop must not).

/// The readiness branches of a socket type (whose `src` field is its `Source`), for
/// [`select!`](crate::select!); invoked in each socket's file.
macro_rules! ready_branches {
    ($($t:ident),*) => {$(
        impl $t {
            /// A [select](mod@crate::select) branch that fires when the socket is readable (for a
            /// listener: has a connection to accept), or has an error or hang-up to report; see
            /// [`Ready`](crate::io::Ready). It consumes nothing.
            pub fn readable_branch(&self) -> crate::io::Ready<'_> {
                crate::io::Ready::new(&self.src, crate::reactor::Dir::Read)
            }

            /// A [select](mod@crate::select) branch that fires when the socket is writable; see
            /// [`Ready`](crate::io::Ready).
            pub fn writable_branch(&self) -> crate::io::Ready<'_> {
                crate::io::Ready::new(&self.src, crate::reactor::Dir::Write)
            }
        }
    )*};
}

mod lookup;
mod shared;
mod tcp;
mod udp;
mod unix;

pub use lookup::{lookup_host, ToSocketAddrs};
pub use shared::LISTEN_BACKLOG;
pub use tcp::{Incoming, TcpListener, TcpStream};
pub use udp::UdpSocket;
pub use unix::{UnixListener, UnixStream};
