//! The wire of a connection in transmission: bytes in, bytes out, and nothing about what a
//! request means.
//!
//! * [`InBuf`]: the input buffer. Request headers are parsed from it, small write payloads
//!   copied out of it, large ones read straight into their own buffer.
//! * [`Reply`]: one reply as it goes on the wire, a short header and an owned body, built from
//!   [`proto`]'s encoders (simple or structured, as negotiated).
//! * [`Outbox`]: the connection's reply queue and the writer lock in front of the socket; it
//!   batches the replies of requests that finish together into one `writev`.
//!
//! This is the seam where limits on what one client may make the server hold (input, queued
//! replies) belong: everything a connection buffers passes through here.
//!
//! Payloads and read data live in buffers from [`costack_aio::buf`], the loop thread's pool.
//!
//! May import: [`proto`] (sizes and encoders) and the sibling `verbose` (messages). Not the
//! connection (`conn`) nor the server above it: they call in, never the other way.

// Unused here now (events are `tracing::*!` with fields); kept so code that writes `log!`
// merges without touching imports.
#[allow(unused_imports)]
use super::verbose::log;
use crate::proto::{self, Extent};
use crate::transport::Stream;
use costack::sync::CoMutex;
use costack_aio::buf;
use std::cell::{Cell, RefCell};
use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;

/// A reply waiting to be written: a short header and an owned body (the read data, or a
/// whole chunk), which goes back to the buffer pool once written.
pub(super) struct Reply {
    head: [u8; 28],
    head_len: u8,
    body: Vec<u8>,
}

impl Reply {
    /// The success reply of a request without data: a simple reply, with or without
    /// structured replies (the spec allows it).
    pub(super) fn ok(cookie: u64) -> Reply {
        Reply::head(&proto::simple_reply(0, cookie))
    }

    /// An error reply: a final structured `ERROR` chunk with the message once structured
    /// replies are on, a simple reply otherwise.
    pub(super) fn error(structured: bool, cookie: u64, error: u32, msg: &str) -> Reply {
        if structured {
            Reply::body(proto::error_chunk(cookie, error, msg))
        } else {
            Reply::head(&proto::simple_reply(error, cookie))
        }
    }

    /// The reply of a successful `READ` of `data` at `offset`: a simple reply followed by the
    /// data, or one final `OFFSET_DATA` chunk (a bare final `NONE` chunk for zero bytes).
    pub(super) fn read(structured: bool, cookie: u64, offset: u64, data: Vec<u8>) -> Reply {
        if !structured {
            Reply::with_data(&proto::simple_reply(0, cookie), data)
        } else if data.is_empty() {
            let h =
                proto::chunk_header(proto::reply::FLAG_DONE, proto::reply::TYPE_NONE, cookie, 0);
            Reply::head(&h)
        } else {
            let h = proto::offset_data_header(cookie, offset, data.len() as u32);
            Reply::with_data(&h, data)
        }
    }

    /// The reply of a `BLOCK_STATUS` for metadata context `id`: one final chunk.
    pub(super) fn block_status(cookie: u64, id: u32, extents: &[Extent]) -> Reply {
        Reply::body(proto::block_status_chunk(cookie, id, extents))
    }

    fn head(h: &[u8]) -> Reply {
        Reply::with_data(h, Vec::new())
    }

    fn body(body: Vec<u8>) -> Reply {
        Reply::with_data(&[], body)
    }

    fn with_data(h: &[u8], body: Vec<u8>) -> Reply {
        let mut head = [0u8; 28];
        head[..h.len()].copy_from_slice(h);
        Reply {
            head,
            head_len: h.len() as u8,
            body,
        }
    }
}

/// The connection's outgoing side: replies waiting to be written, and the lock that lets one
/// task at a time write them, so two replies never interleave on the wire.
pub(super) struct Outbox {
    /// Held by the task that writes replies.
    writer: CoMutex<()>,
    /// Replies waiting for the writer.
    queue: RefCell<Vec<Reply>>,
    /// A reply could not be sent: the client is gone.
    broken: Cell<bool>,
}

impl Outbox {
    /// An empty outbox.
    pub(super) fn new() -> Outbox {
        Outbox {
            writer: CoMutex::new(()),
            queue: RefCell::new(Vec::new()),
            broken: Cell::new(false),
        }
    }

    /// Whether writing failed: nobody can be answered any more.
    #[inline]
    pub(super) fn is_broken(&self) -> bool {
        self.broken.get()
    }

    /// Queues a reply and writes it, unless another task is writing already — then that
    /// task writes this reply too, in the same `writev`.
    ///
    /// Whoever gets the writer lock ([`CoMutex`]) writes every queued reply, in batches of one
    /// system call each, until the queue is empty. Before its first batch it lets the other
    /// ready tasks run once if more requests are in flight (`in_flight`, asked only then):
    /// requests that finish in the same turn of the loop then leave in one `writev` instead of
    /// one each. With one request in flight (queue depth 1) nothing waits.
    ///
    /// If writing fails the outbox is broken from then on: what is queued is dropped, later
    /// replies too, and `s` is shut down so that the connection's reader wakes up and ends.
    pub(super) fn send(&self, s: &Stream, reply: Reply, in_flight: impl FnOnce() -> usize) {
        if self.broken.get() {
            buf::give(reply.body);
            return;
        }
        self.queue.borrow_mut().push(reply);
        let Some(_writer) = self.writer.try_lock() else {
            return; // the writer will take it
        };
        if in_flight() > 1 {
            costack_aio::yield_now();
        }
        let mut batch = Vec::new();
        loop {
            std::mem::swap(&mut batch, &mut *self.queue.borrow_mut());
            if batch.is_empty() {
                return;
            }
            let r = write_batch(s, &batch);
            for r in batch.drain(..) {
                buf::give(r.body);
            }
            if let Err(e) = r {
                tracing::info!(error = %e, "writing replies failed: the client is gone");
                self.broken.set(true);
                for r in self.queue.borrow_mut().drain(..) {
                    buf::give(r.body);
                }
                // Wake the reader: nobody can be answered any more.
                let _ = s.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

/// Writes whole replies with as few `writev`s as the socket allows.
fn write_batch(s: &Stream, batch: &[Reply]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(batch.len() * 2);
    for r in batch {
        if r.head_len > 0 {
            slices.push(IoSlice::new(&r.head[..usize::from(r.head_len)]));
        }
        if !r.body.is_empty() {
            slices.push(IoSlice::new(&r.body));
        }
    }
    let mut w = s;
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match w.write_vectored(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The connection's input buffer: request headers are parsed from it, and small payloads
/// copied out of it, so one `read` can bring in several requests.
pub(super) struct InBuf {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

/// Size of a connection's input buffer.
const INBUF: usize = 64 * 1024;

impl InBuf {
    pub(super) fn new() -> InBuf {
        InBuf {
            buf: vec![0u8; INBUF].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    fn available(&self) -> usize {
        self.end - self.start
    }

    /// Reads more from the socket (one `read`); 0 at end of file.
    fn fill(&mut self, s: &Stream) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && self.buf.len() - self.end < proto::REQUEST_LEN {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let mut r = s;
        let n = loop {
            match r.read(&mut self.buf[self.end..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => break r?,
            }
        };
        self.end += n;
        Ok(n)
    }

    /// The next request header; `None` at a clean end of file.
    pub(super) fn header(&mut self, s: &Stream) -> io::Result<Option<[u8; proto::REQUEST_LEN]>> {
        while self.available() < proto::REQUEST_LEN {
            if self.fill(s)? == 0 {
                if self.available() == 0 {
                    return Ok(None);
                }
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        let mut h = [0u8; proto::REQUEST_LEN];
        h.copy_from_slice(&self.buf[self.start..self.start + proto::REQUEST_LEN]);
        self.start += proto::REQUEST_LEN;
        Ok(Some(h))
    }

    /// Takes up to `n` buffered bytes into `dst`; how many.
    fn take_into(&mut self, dst: &mut [u8]) -> usize {
        let n = dst.len().min(self.available());
        dst[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        n
    }

    /// A write's payload of `len` bytes.
    pub(super) fn payload(&mut self, s: &Stream, len: usize) -> io::Result<Vec<u8>> {
        let mut v = buf::take(len);
        let mut have = self.take_into(&mut v);
        while have < len {
            if len - have >= INBUF / 2 {
                // Large: straight into the payload, no copy.
                let mut r = s;
                match r.read(&mut v[have..]) {
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(n) => have += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            } else {
                if self.fill(s)? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                have += self.take_into(&mut v[have..]);
            }
        }
        Ok(v)
    }

    /// Reads and drops `len` bytes.
    pub(super) fn skip(&mut self, s: &Stream, len: u32) -> io::Result<()> {
        let mut left = len as usize;
        while left > 0 {
            if self.available() == 0 && self.fill(s)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let n = left.min(self.available());
            self.start += n;
            left -= n;
        }
        Ok(())
    }
}
