//! One connection in the transmission phase: the reader that takes requests in, checks them
//! and dispatches each to a task of its own; the in-flight accounting that bounds how many run
//! at once; what each request does on the backend; and, at a stop, refusing the requests
//! that did not start.
//!
//! ```text
//! reader:   header ─► proto::check ─► ticket ─► [payload] ─► spawn ─┐
//!              ▲                                                    │
//!              └────────────────────────────────────────────────────┘
//! request:  backend call(s) ─► Reply+ticket ─► Outbox::send ─► [writev] ─► ticket back
//! ```
//!
//! A ticket ([`Ticket`](super::wire::Ticket)) is a slot and the bytes the request may hold (its payload, its read
//! data, its reply): the reader waits for one before it reads anything more, and it comes
//! back only once the reply is on the wire. A client that does not read its replies therefore
//! stops the reader once its connection's budget (or the server's) is used up, and TCP
//! pushes back on it; error replies the reader sends itself take a slot and bytes too.
//!
//! What a request means lives here; how its bytes come in and go out lives in the sibling
//! `wire` ([`InBuf`], [`Reply`], [`Outbox`]), so policies about *which* requests a client may
//! send and limits on *how much* it may make the server hold stay apart.
//!
//! May import: the siblings `wire` and `verbose`; [`proto`], [`export`](crate::export) (the
//! [`Backend`]) and [`handshake`](crate::handshake) (what was negotiated). Not the server
//! (`server/mod.rs`), which calls [`transmission`] with what the connection needs from its loop.

// Unused here now (events are `tracing::*!` with fields); kept so code that writes `log!`
// merges without touching imports.
#[allow(unused_imports)]
use super::verbose::log;
use super::verbose::Tag;
use super::wire::{Budget, InBuf, Memory, Outbox, Reply, REPLY_MAX_OVERHEAD};
use crate::export::{Backend, ZeroMode};
use crate::handshake::Negotiated;
use crate::proto::{self, cflag, cmd, Check, Limits, Request};
use crate::transport::Stream;
use costack_aio::buf;
use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::sync::Arc;

/// Most extents in one `BLOCK_STATUS` reply (the spec's recommended ceiling is 2^20).
pub const MAX_EXTENTS: usize = 1 << 20;

/// One connection in the transmission phase, shared by its reader and its request tasks.
struct Conn {
    stream: Rc<Stream>,
    backend: Rc<dyn Backend>,
    /// Replies waiting to be written, and the lock of whoever writes them.
    out: Outbox,
    /// Slots and bytes: what the connection holds, until its replies are on the wire.
    budget: Rc<Budget>,
    limits: Limits,
    meta_id: u32,
    /// Who this is, for the events.
    tag: Tag,
}

/// The most bytes a request can make its connection hold, from taking it in to writing its
/// reply: its payload or read data (the capacity of its buffer), or its `BLOCK_STATUS` extents (at most one per byte, at
/// most [`MAX_EXTENTS`]; 8 bytes each as the backend returns them and 8 more on the wire),
/// and the reply's own overhead.
fn request_cost(req: &Request) -> usize {
    let data = match req.typ {
        // The buffer's capacity: rounded up to a size class of the pool below 2 MiB.
        cmd::READ | cmd::WRITE => match req.length as usize {
            n if n <= buf::MAX_CLASS => n.max(buf::MIN_CLASS).next_power_of_two(),
            n => n,
        },
        cmd::BLOCK_STATUS => {
            let most = if req.flags & cflag::REQ_ONE != 0 {
                1
            } else {
                MAX_EXTENTS.min(req.length as usize)
            };
            16 * most
        }
        _ => 0,
    };
    data + REPLY_MAX_OVERHEAD
}

/// What a connection gets from its loop for the transmission phase.
pub(super) struct Setup<'a> {
    /// The loop's backend of the export.
    pub(super) backend: &'a Rc<dyn Backend>,
    /// The export's read-only flag.
    pub(super) read_only: bool,
    /// At most this many requests run (or wait for their reply to be written) at once.
    pub(super) max_in_flight: usize,
    /// The server's byte budgets (per connection and server-wide).
    pub(super) memory: &'a Arc<Memory>,
    /// Set when the loop stops.
    pub(super) stopping: &'a Cell<bool>,
}

/// Runs the transmission phase of a connection whose handshake agreed on `neg`, until the
/// client disconnects, breaks the protocol, or the loop stops (`setup.stopping`); returns once
/// every request it started has been replied to (the stream is left open for the caller to
/// close).
///
/// At most `setup.max_in_flight` requests run (or wait for their reply to be written) at once,
/// and what the connection holds is bounded by `setup.memory`: when either is reached the
/// reader stops reading until replies have gone out. `tag` names the connection in events.
pub(super) fn transmission(stream: Rc<Stream>, neg: Negotiated, setup: Setup<'_>, tag: &Tag) {
    let Setup {
        backend,
        read_only,
        max_in_flight,
        memory,
        stopping,
    } = setup;
    let conn = Rc::new(Conn {
        stream,
        backend: backend.clone(),
        out: Outbox::new(),
        budget: Budget::new(memory, max_in_flight),
        limits: Limits {
            size: backend.len(),
            read_only,
            structured: neg.structured,
            meta: neg.meta.is_some(),
        },
        meta_id: neg.meta.unwrap_or(0),
        tag: tag.clone(),
    });
    let give_up = || stopping.get() || conn.out.is_broken();
    let mut input = InBuf::new();
    loop {
        if stopping.get() {
            refuse_remaining(&conn, &mut input);
            break;
        }
        let req = match input.header(&conn.stream) {
            Ok(Some(h)) => match Request::decode(&h) {
                Some(r) => r,
                None => {
                    tracing::info!(
                        conn = conn.tag.id,
                        peer = %conn.tag.peer,
                        "bad request magic: disconnecting"
                    );
                    break;
                }
            },
            Ok(None) => break,
            Err(e) => {
                tracing::info!(
                    conn = conn.tag.id,
                    peer = %conn.tag.peer,
                    error = %e,
                    "reading a request failed: disconnecting"
                );
                break;
            }
        };
        tracing::trace!(
            conn = conn.tag.id,
            command = cmd::name(req.typ),
            flags = req.flags,
            offset = req.offset,
            length = req.length,
            cookie = req.cookie,
            "request"
        );
        if req.typ == cmd::DISC {
            break;
        }
        match proto::check(&req, &conn.limits) {
            Check::Ok => {}
            Check::Error(e, msg) => {
                if req.typ == cmd::WRITE && input.skip(&conn.stream, req.length).is_err() {
                    break;
                }
                // The reader answers itself, but its replies count like any other request's,
                // slot and bytes, until they are on the wire: a client that sends invalid
                // requests without reading the errors is stopped after `max_in_flight` of
                // them, as qemu-nbd stops it.
                let reply = error_reply(&conn, &req, e, msg);
                match conn.budget.admit(reply.cost(), true, give_up) {
                    Some(t) => send(&conn, reply.holding(t)),
                    None if stopping.get() => send(&conn, reply),
                    None => break,
                }
                continue;
            }
            Check::ErrorThenDisconnect(e, msg) => {
                send(&conn, error_reply(&conn, &req, e, msg));
                break;
            }
        }
        // Wait for a slot and room for the request's bytes before taking in more (a write's
        // payload included). The ticket is given back once the reply is on the wire.
        let Some(ticket) = conn.budget.admit(request_cost(&req), true, give_up) else {
            if stopping.get() {
                // Keep the stream in step: the refusals go on with the next request.
                if req.typ == cmd::WRITE && input.skip(&conn.stream, req.length).is_err() {
                    break;
                }
                send_error(
                    &conn,
                    &req,
                    proto::err::ESHUTDOWN,
                    "the server is shutting down",
                );
                continue;
            }
            break; // the outbox broke: nobody can be answered
        };
        let payload = if req.typ == cmd::WRITE {
            match input.payload(&conn.stream, req.length as usize) {
                Ok(p) => Some(p),
                Err(e) => {
                    // The client left in the middle of a write: that write never happened.
                    tracing::info!(
                        conn = conn.tag.id,
                        peer = %conn.tag.peer,
                        error = %e,
                        "the client left in the middle of a write payload"
                    );
                    break;
                }
            }
        } else {
            None
        };
        let c = conn.clone();
        costack_aio::spawn(move || {
            let unanswered = CutIfUnanswered(&c);
            let reply = run_request(&c, req, payload);
            std::mem::forget(unanswered);
            send(&c, reply.holding(ticket));
        });
        if conn.out.is_broken() {
            break;
        }
    }
    // Finish what is in flight: every ticket comes back.
    conn.budget.wait_idle();
    // The caller closes the stream, once the connection's place is given back.
}

/// Cuts the connection if dropped: a request task that ends without its reply (the backend
/// panicked) would otherwise leave its client waiting for that reply for ever. Its ticket
/// comes back as the task unwinds.
struct CutIfUnanswered<'a>(&'a Conn);

impl Drop for CutIfUnanswered<'_> {
    fn drop(&mut self) {
        tracing::error!(
            conn = self.0.tag.id,
            peer = %self.0.tag.peer,
            "a request ended without a reply (a panic below the server): disconnecting"
        );
        let _ = self.0.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// Most requests answered `ESHUTDOWN` by one connection at a stop.
const MAX_REFUSED: usize = 4096;

/// At a stop: answers `ESHUTDOWN` to the requests the client had already sent when the stop
/// came, so that it knows to disconnect. The socket's read side is shut down, so reading
/// returns what is queued and then end-of-file: this never waits for the client to send.
/// Each refusal takes its bytes from the connection's budget like any other reply, so it
/// waits for a client that does not read them (until the stop's grace period cuts it).
fn refuse_remaining(conn: &Conn, input: &mut InBuf) {
    for _ in 0..MAX_REFUSED {
        let Ok(Some(h)) = input.header(&conn.stream) else {
            return;
        };
        let Some(req) = Request::decode(&h) else {
            return;
        };
        if req.typ == cmd::DISC {
            return;
        }
        if req.typ == cmd::WRITE
            && (req.length > proto::MAX_PAYLOAD || input.skip(&conn.stream, req.length).is_err())
        {
            return;
        }
        // A refusal holds bytes like any other reply: while the client does not read them,
        // refusing waits (the stop's grace period then cuts the connection).
        let reply = error_reply(
            conn,
            &req,
            proto::err::ESHUTDOWN,
            "the server is shutting down",
        );
        let Some(t) = conn
            .budget
            .admit(reply.cost(), false, || conn.out.is_broken())
        else {
            return;
        };
        send(conn, reply.holding(t));
        if conn.out.is_broken() {
            return;
        }
    }
}

/// Runs one request; its reply.
fn run_request(conn: &Conn, req: Request, payload: Option<Vec<u8>>) -> Reply {
    let b = &*conn.backend;
    let fua = req.flags & cflag::FUA != 0;
    let offset = req.offset;
    let len = u64::from(req.length);
    let result = match req.typ {
        cmd::READ => {
            let (r, buf) = b.read_at_owned(buf::take(req.length as usize), offset);
            return match r {
                Ok(()) => Reply::read(conn.limits.structured, req.cookie, req.offset, buf),
                Err(e) => {
                    buf::give(buf);
                    io_error_reply(conn, &req, &e)
                }
            };
        }
        cmd::WRITE => {
            let data = payload.unwrap_or_default();
            let (r, buf) = b.write_at_owned(data, offset);
            buf::give(buf);
            r.and_then(|()| if fua { b.flush() } else { Ok(()) })
        }
        cmd::FLUSH => b.flush(),
        cmd::TRIM => b
            .trim(offset, len)
            .and_then(|()| if fua { b.flush() } else { Ok(()) }),
        cmd::WRITE_ZEROES => {
            let mode = ZeroMode {
                may_trim: req.flags & cflag::NO_HOLE == 0,
                fast_only: req.flags & cflag::FAST_ZERO != 0,
            };
            b.zero(offset, len, mode)
                .and_then(|()| if fua { b.flush() } else { Ok(()) })
        }
        cmd::CACHE => b.cache(offset, len),
        cmd::BLOCK_STATUS => {
            let max = if req.flags & cflag::REQ_ONE != 0 {
                1
            } else {
                MAX_EXTENTS
            };
            match b.block_status(offset, req.length, max) {
                Ok(ext) => return Reply::block_status(req.cookie, conn.meta_id, &ext),
                Err(e) => Err(e),
            }
        }
        _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
    };
    match result {
        Ok(()) => Reply::ok(req.cookie),
        Err(e) => io_error_reply(conn, &req, &e),
    }
}

fn io_error_reply(conn: &Conn, req: &Request, e: &io::Error) -> Reply {
    let msg = format!("{} failed: {e}", cmd::name(req.typ));
    let error = proto::reply_error(req, e);
    // The backend failed: a problem of the server's storage, not of the client.
    tracing::warn!(
        conn = conn.tag.id,
        peer = %conn.tag.peer,
        command = cmd::name(req.typ),
        offset = req.offset,
        length = req.length,
        error = %e,
        nbd_error = error,
        "backend I/O error"
    );
    Reply::error(conn.limits.structured, req.cookie, error, &msg)
}

/// An error reply (with the message once structured replies are on) to a request refused
/// before it ran, logged at debug level.
fn error_reply(conn: &Conn, req: &Request, error: u32, msg: &str) -> Reply {
    tracing::debug!(
        conn = conn.tag.id,
        peer = %conn.tag.peer,
        command = cmd::name(req.typ),
        offset = req.offset,
        length = req.length,
        nbd_error = error,
        "refused: {msg}"
    );
    Reply::error(conn.limits.structured, req.cookie, error, msg)
}

/// Sends an error reply that holds no ticket (once per connection, at a stop).
fn send_error(conn: &Conn, req: &Request, error: u32, msg: &str) {
    send(conn, error_reply(conn, req, error, msg));
}

/// Hands a reply to the connection's [`Outbox`], which batches it with the replies of the
/// other requests in flight; a [`Ticket`](super::wire::Ticket) it holds comes back once it is written.
#[inline]
fn send(conn: &Conn, reply: Reply) {
    conn.out
        .send(&conn.stream, reply, || conn.budget.in_flight());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::Export;
    use crate::proto::{err, SIMPLE_REPLY_MAGIC};
    use crate::server::wire::{INBUF, MIN_BUDGET};
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    /// A connection over one end of a socket pair, its budget `MIN_BUDGET`; the other end.
    fn conn_pair() -> (Rc<Conn>, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        let backend = Export::memory("t", 1 << 20, false)
            .unwrap()
            .backend()
            .unwrap();
        let conn = Rc::new(Conn {
            stream: Rc::new(Stream::unix(a).unwrap()),
            backend: backend.clone(),
            out: Outbox::new(),
            budget: Budget::new(&Memory::new(0, 0), 16),
            limits: Limits {
                size: backend.len(),
                read_only: false,
                structured: false,
                meta: false,
            },
            meta_id: 0,
            tag: Tag::new("test"),
        });
        (conn, b)
    }

    fn read_req(cookie: u64) -> [u8; proto::REQUEST_LEN] {
        Request {
            flags: 0,
            typ: cmd::READ,
            cookie,
            offset: 0,
            length: 4096,
        }
        .encode()
    }

    /// A backend whose reads panic (a bug below the server).
    struct PanickingReads;

    impl Backend for PanickingReads {
        fn len(&self) -> u64 {
            1 << 20
        }
        fn read_at_owned(&self, _: Vec<u8>, _: u64) -> (io::Result<()>, Vec<u8>) {
            panic!("a bug in the backend");
        }
        fn write_at_owned(&self, buf: Vec<u8>, _: u64) -> (io::Result<()>, Vec<u8>) {
            (Ok(()), buf)
        }
        fn flush(&self) -> io::Result<()> {
            Ok(())
        }
        fn trim(&self, _: u64, _: u64) -> io::Result<()> {
            Ok(())
        }
        fn zero(&self, _: u64, _: u64, _: ZeroMode) -> io::Result<()> {
            Ok(())
        }
        fn cache(&self, _: u64, _: u64) -> io::Result<()> {
            Ok(())
        }
        fn block_status(&self, _: u64, _: u32, _: usize) -> io::Result<Vec<proto::Extent>> {
            Ok(Vec::new())
        }
    }

    #[test]
    fn a_request_that_panics_ends_its_connection_instead_of_leaving_its_client_waiting() {
        let (a, b) = UnixStream::pair().unwrap();
        // The client: a READ, then whatever comes back within 10 s.
        let client = std::thread::spawn(move || {
            let mut b = b;
            b.write_all(&read_req(7)).unwrap();
            b.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            let mut reply = [0u8; 16];
            b.read(&mut reply).map_err(|e| e.kind())
        });
        costack_aio::EventLoop::new().block_on(|| {
            let backend: Rc<dyn Backend> = Rc::new(PanickingReads);
            let memory = Memory::new(0, 0);
            let stopping = Cell::new(false);
            let setup = Setup {
                backend: &backend,
                read_only: false,
                max_in_flight: 16,
                memory: &memory,
                stopping: &stopping,
            };
            let neg = Negotiated {
                structured: false,
                meta: None,
            };
            let stream = Rc::new(Stream::unix(a).unwrap());
            transmission(stream, neg, setup, &Tag::new("test"));
        });
        assert_eq!(
            client.join().unwrap(),
            Ok(0),
            "the client sees its connection end (not a reply that never comes)"
        );
    }

    #[test]
    fn refusals_at_a_stop_wait_for_room_in_the_budget() {
        costack_aio::EventLoop::new().block_on(|| {
            let (conn, mut client) = conn_pair();
            // The connection's budget is full (replies the client has not read, say).
            let full = conn
                .budget
                .admit(MIN_BUDGET - INBUF, false, || false)
                .unwrap();
            for cookie in 0..10 {
                client.write_all(&read_req(cookie)).unwrap();
            }
            client.shutdown(std::net::Shutdown::Write).unwrap();
            let c = conn.clone();
            let refusing = costack_aio::spawn(move || {
                let mut input = InBuf::new();
                refuse_remaining(&c, &mut input);
            });
            for _ in 0..10 {
                costack_aio::yield_now();
            }
            client.set_nonblocking(true).unwrap();
            let mut b = [0u8; 16];
            let r = client.read(&mut b);
            assert_eq!(
                r.map_err(|e| e.kind()),
                Err(io::ErrorKind::WouldBlock),
                "a refusal was sent beyond the connection's budget"
            );
            // Room again: the refusals go out, all ten.
            drop(full);
            refusing.join();
            client.set_nonblocking(false).unwrap();
            let mut replies = [0u8; 16 * 10];
            client.read_exact(&mut replies).unwrap();
            for (cookie, r) in replies.chunks(16).enumerate() {
                assert_eq!(r[0..4], SIMPLE_REPLY_MAGIC.to_be_bytes());
                assert_eq!(r[4..8], err::ESHUTDOWN.to_be_bytes());
                assert_eq!(r[8..16], (cookie as u64).to_be_bytes());
            }
            assert_eq!(conn.budget.in_flight(), 0);
        });
    }
}
