//! One connection in the transmission phase: the reader that takes requests in, checks them
//! and dispatches each to a task of its own; the in-flight accounting that bounds how many run
//! at once; what each request does on the backend; and, at a stop, refusing the requests
//! that did not start.
//!
//! ```text
//! reader:   header ─► proto::check ─► slot ─► [payload] ─► spawn ─┐
//!              ▲                                                  │
//!              └──────────────────────────────────────────────────┘
//! request:  backend call(s) ─► Reply ─► Outbox::send ─► [writev]   (then the slot comes back)
//! ```
//!
//! What a request means lives here; how its bytes come in and go out lives in the sibling
//! `wire` ([`InBuf`], [`Reply`], [`Outbox`]), so policies about *which* requests a client may
//! send and limits on *how much* it may make the server hold stay apart.
//!
//! May import: the siblings `wire` and `verbose`; [`proto`], [`export`](crate::export) (the
//! [`Backend`]) and [`handshake`](crate::handshake) (what was negotiated). Not the server
//! (`server/mod.rs`), which calls [`transmission`] with what the connection needs from its loop.

use super::verbose::log;
use super::wire::{InBuf, Outbox, Reply};
use crate::export::{Backend, ZeroMode};
use crate::handshake::Negotiated;
use crate::proto::{self, cflag, cmd, Check, Limits, Request};
use costack::sync::CoSemaphore;
use costack_aio::buf;
use costack_aio::net::TcpStream;
use std::cell::Cell;
use std::io;
use std::net::Shutdown;
use std::rc::Rc;

/// Most extents in one `BLOCK_STATUS` reply (the spec's recommended ceiling is 2^20).
pub const MAX_EXTENTS: usize = 1 << 20;

/// One connection in the transmission phase, shared by its reader and its request tasks.
struct Conn {
    stream: Rc<TcpStream>,
    backend: Rc<dyn Backend>,
    /// Replies waiting to be written, and the lock of whoever writes them.
    out: Outbox,
    /// One permit per request that may run.
    slots: CoSemaphore,
    max_in_flight: usize,
    limits: Limits,
    meta_id: u32,
}

impl Conn {
    /// Requests running now.
    fn in_flight(&self) -> usize {
        self.max_in_flight - self.slots.available_permits()
    }
}

/// Gives a request's slot back when its task ends, however it ends.
struct Slot(Rc<Conn>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.slots.release(1);
    }
}

/// Runs the transmission phase of a connection whose handshake agreed on `neg`, until the
/// client disconnects, breaks the protocol, or the loop stops (`stopping`); returns once every
/// request it started has been replied to.
///
/// `backend` is the loop's backend of the export, `read_only` the export's, and at most
/// `max_in_flight` requests run at once.
pub(super) fn transmission(
    stream: Rc<TcpStream>,
    neg: Negotiated,
    backend: &Rc<dyn Backend>,
    read_only: bool,
    max_in_flight: usize,
    stopping: &Cell<bool>,
) {
    let conn = Rc::new(Conn {
        stream,
        backend: backend.clone(),
        out: Outbox::new(),
        slots: CoSemaphore::new(max_in_flight),
        max_in_flight,
        limits: Limits {
            size: backend.len(),
            read_only,
            structured: neg.structured,
            meta: neg.meta.is_some(),
        },
        meta_id: neg.meta.unwrap_or(0),
    });
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
                    log!("bad request magic: disconnecting");
                    break;
                }
            },
            Ok(None) => break,
            Err(e) => {
                log!("reading a request: {e}");
                break;
            }
        };
        if req.typ == cmd::DISC {
            break;
        }
        match proto::check(&req, &conn.limits) {
            Check::Ok => {}
            Check::Error(e, msg) => {
                if req.typ == cmd::WRITE && input.skip(&conn.stream, req.length).is_err() {
                    break;
                }
                send_error(&conn, &req, e, msg);
                continue;
            }
            Check::ErrorThenDisconnect(e, msg) => {
                send_error(&conn, &req, e, msg);
                break;
            }
        }
        // Wait for a free slot before taking in more (a write's payload included): at most
        // `max_in_flight` requests' buffers per connection.
        conn.slots.acquire(1).forget();
        let slot = Slot(conn.clone());
        let payload = if req.typ == cmd::WRITE {
            match input.payload(&conn.stream, req.length as usize) {
                Ok(p) => Some(p),
                Err(e) => {
                    // The client left in the middle of a write: that write never happened.
                    log!("reading a write payload: {e}");
                    break;
                }
            }
        } else {
            None
        };
        costack_aio::spawn(move || {
            let slot = slot;
            run_request(&slot.0, req, payload);
        });
        if conn.out.is_broken() {
            break;
        }
    }
    // Finish what is in flight: every slot comes back.
    drop(conn.slots.acquire(max_in_flight));
    let _ = conn.stream.shutdown(Shutdown::Both);
}

/// Most requests answered `ESHUTDOWN` by one connection at a stop.
const MAX_REFUSED: usize = 4096;

/// At a stop: answers `ESHUTDOWN` to the requests the client had already sent when the stop
/// came, so that it knows to disconnect. The socket's read side is shut down, so reading
/// returns what is queued and then end-of-file: this never waits for the client.
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
        send_error(
            conn,
            &req,
            proto::err::ESHUTDOWN,
            "the server is shutting down",
        );
        if conn.out.is_broken() {
            return;
        }
    }
}

/// Runs one request and sends its reply.
fn run_request(conn: &Conn, req: Request, payload: Option<Vec<u8>>) {
    let b = &*conn.backend;
    let fua = req.flags & cflag::FUA != 0;
    let offset = req.offset;
    let len = u64::from(req.length);
    let result = match req.typ {
        cmd::READ => {
            let (r, buf) = b.read_at_owned(buf::take(req.length as usize), offset);
            match r {
                Ok(()) => send_read(conn, &req, buf),
                Err(e) => {
                    buf::give(buf);
                    send_io_error(conn, &req, &e);
                }
            }
            return;
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
                Ok(ext) => {
                    send(conn, Reply::block_status(req.cookie, conn.meta_id, &ext));
                    return;
                }
                Err(e) => Err(e),
            }
        }
        _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
    };
    match result {
        Ok(()) => send(conn, Reply::ok(req.cookie)),
        Err(e) => send_io_error(conn, &req, &e),
    }
}

fn send_io_error(conn: &Conn, req: &Request, e: &io::Error) {
    let msg = format!("{} failed: {e}", cmd::name(req.typ));
    send_error(conn, req, proto::reply_error(req, e), &msg);
}

/// Sends an error reply (with the message once structured replies are on).
fn send_error(conn: &Conn, req: &Request, error: u32, msg: &str) {
    log!("{} error {error}: {msg}", cmd::name(req.typ));
    send(
        conn,
        Reply::error(conn.limits.structured, req.cookie, error, msg),
    );
}

fn send_read(conn: &Conn, req: &Request, data: Vec<u8>) {
    send(
        conn,
        Reply::read(conn.limits.structured, req.cookie, req.offset, data),
    );
}

/// Hands a reply to the connection's [`Outbox`], which batches it with the replies of the
/// other requests in flight.
#[inline]
fn send(conn: &Conn, reply: Reply) {
    conn.out.send(&conn.stream, reply, || conn.in_flight());
}
