//! # costack-nbd: a Network Block Device server written as straight-line code
//!
//! NBD is the protocol QEMU, the Linux kernel, `nbdcopy` and friends use to reach a disk over a
//! socket: a short negotiation, then a stream of requests — read these bytes, write those,
//! flush — each answered with a reply that carries the client's cookie. Replies may come back
//! in any order, so a good server runs many requests at once.
//!
//! The classic way to do that is a state machine per request, or a thread per request. QEMU
//! built its coroutines for exactly this server, and this crate is the same design on
//! [`costack`]: each connection is a coroutine, each request is a coroutine, and each is
//! written as if it blocked:
//!
//! ```text
//! fn run_request(conn, req, payload) {
//!     let (r, _) = backend.write_at_owned(payload, req.offset);  // yields while the kernel works
//!     if fua { backend.flush() }                                 // yields during fdatasync
//!     send(conn, reply)                                          // yields for the lock and the socket
//! }
//! ```
//!
//! The event loop ([`costack_aio`]) resumes whichever coroutine's I/O is ready; nothing in the
//! request code knows it is being interleaved with fifteen others.
//!
//! ## Using it
//!
//! The binary `costack-nbd` serves a file, or an in-memory disk when no file is given:
//!
//! ```sh
//! costack-nbd                                # 1 GiB in memory on 127.0.0.1:10809
//! qemu-img info nbd://127.0.0.1:10809
//! costack-nbd --name disk0 disk.img          # a file, under the export name "disk0"
//! ```
//!
//! As a library, build an [`Export`] and call [`serve`]:
//!
//! ```
//! use costack_nbd::{serve, Config, Export};
//! use std::sync::Arc;
//!
//! let export = Arc::new(Export::memory("demo", 1 << 20, false).unwrap());
//! let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
//! let server = serve(export, listener, Config::default()).unwrap();
//! println!("serving on {}", server.local_addr());
//! server.shutdown().unwrap(); // stop accepting, finish what is in flight, flush
//! ```
//!
//! ## Logging
//!
//! The server emits [`tracing`] events (connections with their `conn` id and `peer`, refused
//! requests, backend errors; the levels are listed in the `server::verbose` module's source)
//! and prints nothing itself: a program that wants them installs a subscriber, as the binary
//! does (`-v`, `RUST_LOG`).
//!
//! ## Modules
//!
//! From the top floor down; each imports only the ones below it:
//!
//! * [`server`]: threads, event loops, accepting and stopping ([`serve`]); inside it, one
//!   connection's transmission phase and the wire under it (private).
//! * [`handshake`]: the option negotiation, and the limits and ids a client meets in it.
//! * [`transport`]: the connection's byte stream (TCP or Unix, TLS switched on by
//!   `STARTTLS`) and the listener (TCP, Unix socket, socket activation); it imports
//!   nothing of the crate.
//! * [`export`]: the [`Export`] (a file, or memory) and the per-thread [`Backend`] requests run
//!   on; [`Faults`] make an export fail on demand, to test what clients do when a disk fails.
//! * [`proto`]: the wire format of both phases and the request rules, pure functions with no
//!   I/O; usable on its own, by a client too.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod export;
pub mod handshake;
pub mod proto;
pub mod server;
pub mod transport;

pub use export::{Backend, Export, FaultOp, FaultRule, Faults, WritePath, ZeroMode};
pub use server::{serve, Config, ServerHandle};

/// The crate README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
