//! The server's messages: events of the [`tracing`] facade, with levels and fields, and the
//! plain `log!` macro.
//!
//! The library only *emits* events; the program that embeds it decides where they go and which
//! levels it keeps, by installing a `tracing` subscriber (the `costack-nbd` binary installs one
//! that prints timestamped lines on stderr, filtered by `-v` or `RUST_LOG`). Without a
//! subscriber an event costs a cached check of its call site. Levels:
//!
//! | level | what |
//! |---|---|
//! | `error` | nothing yet (the server itself cannot fail once started) |
//! | `warn` | problems of the server: accepting fails, a backend I/O error, a connection cut at a stop |
//! | `info` | connections: accepted (`peer`), negotiated (`export`), closed; a client that breaks the protocol or leaves mid-request |
//! | `debug` | error replies (`command`, `error`) for requests the checks refuse |
//! | `trace` | every request (`command`, `offset`, `length`, `cookie`) |
//!
//! Events of one connection carry its `conn` id (unique in the process) and, where known,
//! its `peer`. The fields are passed to every event rather than through an entered span: a
//! connection is a coroutine that yields in the middle of its work, so a span entered by one
//! would be seen by whichever coroutine the loop runs next.
//!
//! The ground floor of the server: it imports nothing of the crate, and every sibling
//! (`wire`, `conn`, the server itself) may import it.

use std::sync::atomic::{AtomicU64, Ordering};

/// The plain form: an `info`-level event with a formatted message and no fields, for code
/// that has nothing more structured to say. Prefer `tracing::{warn, info, debug, trace}!` with
/// fields (`conn`, `peer`, `command`, `error`) where they are known.
#[allow(unused_macros)]
macro_rules! log {
    ($($t:tt)*) => {
        ::tracing::info!($($t)*)
    };
}
// The other modules of the server may not use it right now; it stays for those that will.
#[allow(unused_imports)]
pub(super) use log;

/// Who a connection is, for its events: `conn` and `peer` fields.
#[derive(Debug, Clone)]
pub(super) struct Tag {
    /// The connection's id: 0 for the first connection the process accepted, then 1, 2...
    pub id: u64,
    /// The client's address as text (`unix` on a Unix socket).
    pub peer: String,
}

impl Tag {
    /// The next id, with `peer` (the stream's peer, as [`Stream::peer`] gives it).
    ///
    /// [`Stream::peer`]: crate::transport::Stream::peer
    pub(super) fn new(peer: &str) -> Tag {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        Tag {
            id,
            peer: peer.to_owned(),
        }
    }
}
