//! The wire of a connection in transmission: bytes in, bytes out, and nothing about what a
//! request means.
//!
//! * [`InBuf`]: the input buffer. Request headers are parsed from it, small write payloads
//!   copied out of it, large ones read straight into their own buffer.
//! * [`Reply`]: one reply as it goes on the wire, a short header and an owned body, built from
//!   [`proto`]'s encoders (simple or structured, as negotiated).
//! * [`Outbox`]: the connection's reply queue and the writer lock in front of the socket; it
//!   batches the replies of requests that finish together into one `writev`.
//! * [`Budget`], [`Ticket`] and [`Memory`]: what a connection may make the server hold. Every
//!   request takes a [`Ticket`] before the reader takes anything more in: a slot (for
//!   requests that run) and the bytes its payload and reply will hold. The ticket travels
//!   with the reply and is given back only once the reply is on the wire (or dropped because
//!   the connection broke), so a client that does not read its replies stops the reader:
//!   TCP then pushes back on it. Bytes beyond a connection's small reserve also come from the
//!   server-wide [`Memory`] budget, shared by every loop thread.
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
use costack_aio::{buf, WakeableSleep};
use std::cell::{Cell, RefCell};
use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::rc::Rc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// A reply waiting to be written: a short header and an owned body (the read data, or a
/// whole chunk), which goes back to the buffer pool once written.
pub(super) struct Reply {
    head: [u8; 28],
    head_len: u8,
    body: Vec<u8>,
    /// What the request holds (slot, bytes), given back once the reply is written (after
    /// the body went back to the pool) or dropped.
    ticket: Option<Ticket>,
}

impl Reply {
    /// The success reply of a request without data: a simple reply, with or without
    /// structured replies (the spec allows it).
    pub(super) fn ok(cookie: u64) -> Reply {
        Reply::head(&proto::simple_reply(0, cookie))
    }

    /// An error reply: a final structured `ERROR` chunk with the message once structured
    /// replies are on, a simple reply otherwise. The message is cut to [`ERROR_MSG_MAX`]
    /// bytes (at a character boundary), so that an error reply's size is known in advance.
    pub(super) fn error(structured: bool, cookie: u64, error: u32, msg: &str) -> Reply {
        let mut cut = msg.len().min(ERROR_MSG_MAX);
        while !msg.is_char_boundary(cut) {
            cut -= 1;
        }
        let msg = &msg[..cut];
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

    /// The bytes this reply makes the connection hold while it waits in the queue: its body
    /// and [`REPLY_COST`].
    pub(super) fn cost(&self) -> usize {
        REPLY_COST + self.body.capacity()
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
            ticket: None,
        }
    }

    /// This reply, holding `ticket` until it is written or dropped.
    pub(super) fn holding(mut self, ticket: Ticket) -> Reply {
        self.ticket = Some(ticket);
        self
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
            return; // (and the ticket comes back)
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
            if batch.capacity() > BATCH_KEEP {
                // Its room was paid for by the tickets just given back: not kept (it would
                // become the queue, holding a burst's worth of memory nobody counts).
                batch = Vec::new();
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
pub(super) const INBUF: usize = 64 * 1024;

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

/// The longest error message sent (in a structured `ERROR` chunk); longer ones are cut.
pub(super) const ERROR_MSG_MAX: usize = 256;

/// What one reply in the queue costs besides its body: the [`Reply`] itself, twice over (the
/// queue's `Vec` may hold as much again in spare capacity as it grows), and the two
/// [`IoSlice`]s a batch being written points at it with.
pub(super) const REPLY_COST: usize =
    2 * std::mem::size_of::<Reply>() + 2 * std::mem::size_of::<IoSlice<'static>>();

/// Room for this many replies is kept in the [`Outbox`]'s queue between batches; a larger
/// batch's `Vec` is dropped once written.
const BATCH_KEEP: usize = 64;

/// What a reply may cost besides its data: [`REPLY_COST`] and the longest error chunk.
pub(super) const REPLY_MAX_OVERHEAD: usize = REPLY_COST + 32 + ERROR_MSG_MAX;

/// Bytes every connection may hold outside the server-wide budget: its input buffer and
/// enough for small requests (a few dozen 4 KiB reads or writes in flight, error replies), so
/// that a well-behaved client is served even while hostile ones hold all of [`Memory`].
pub(super) const RESERVE: usize = 1 << 20;

/// The smallest budget (per connection and server-wide): one request of the largest size
/// ([`proto::MAX_PAYLOAD`]) with its reply and the connection's input buffer fits in it,
/// so a connection that holds nothing else can always take the largest request in.
pub const MIN_BUDGET: usize = proto::MAX_PAYLOAD as usize + (1 << 20);

/// How long a reader waiting for room sleeps before it looks again without being woken: a
/// stop of its loop (which does not wake it) is noticed within this.
const RECHECK: Duration = Duration::from_millis(100);

/// The server-wide byte budget, shared by the connections of every loop thread: the bytes
/// each connection holds beyond its [`RESERVE`] come from here. Readers that wait for room
/// register their [`WakeableSleep`] (which works across threads) and are woken when bytes
/// come back.
#[derive(Debug)]
pub(super) struct Memory {
    /// Bytes one connection may hold (at least [`MIN_BUDGET`]).
    conn: usize,
    /// Bytes all connections may hold beyond their reserves (at least [`MIN_BUDGET`]).
    total: usize,
    state: Mutex<Global>,
}

#[derive(Debug, Default)]
struct Global {
    used: usize,
    /// Readers that found no room, woken (all) when bytes come back.
    waiters: Vec<WakeableSleep>,
    /// How many times `waiters` was emptied: a reader registered in the current round is
    /// not registered again (its retries every [`RECHECK`] would otherwise pile up).
    round: u64,
}

impl Memory {
    /// The budgets of a server: `conn` bytes per connection, `total` across connections
    /// (beyond their reserves); each raised to [`MIN_BUDGET`] if lower.
    pub(super) fn new(conn: usize, total: usize) -> Arc<Memory> {
        Arc::new(Memory {
            conn: conn.max(MIN_BUDGET),
            total: total.max(MIN_BUDGET),
            state: Mutex::new(Global::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Global> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes `n` bytes if they fit; otherwise registers `waker` to be woken when bytes come
    /// back (under the same lock: no wake-up is lost), unless it is registered already:
    /// `registered` is the round it was last registered in.
    fn try_take(&self, n: usize, waker: &WakeableSleep, registered: &Cell<Option<u64>>) -> bool {
        let mut g = self.lock();
        if g.used + n <= self.total {
            g.used += n;
            true
        } else {
            if registered.get() != Some(g.round) {
                g.waiters.push(waker.clone());
                registered.set(Some(g.round));
            }
            false
        }
    }

    /// Gives `n` bytes back and wakes every waiting reader (each looks again).
    fn give(&self, n: usize) {
        let waiters = {
            let mut g = self.lock();
            g.used -= n;
            if !g.waiters.is_empty() {
                g.round += 1;
            }
            std::mem::take(&mut g.waiters)
        };
        for w in waiters {
            w.wake();
        }
    }
}

/// What one connection holds: request slots and bytes. The reader takes a [`Ticket`] before
/// it takes a request in; tickets come back when replies are written.
pub(super) struct Budget {
    memory: Arc<Memory>,
    max_slots: usize,
    slots: Cell<usize>,
    /// Bytes held, the input buffer included.
    used: Cell<usize>,
    /// The reader's sleep while it waits for room.
    wake: WakeableSleep,
    waiting: Cell<bool>,
    /// The round of [`Memory`]'s waiters `wake` was last registered in.
    registered: Cell<Option<u64>>,
}

/// The bytes of `used` that come from the server-wide budget.
#[inline]
fn global_part(used: usize) -> usize {
    used.saturating_sub(RESERVE)
}

impl Budget {
    /// The budget of a new connection with `max_slots` requests in flight at most; it holds
    /// its input buffer ([`INBUF`] bytes) from the start.
    pub(super) fn new(memory: &Arc<Memory>, max_slots: usize) -> Rc<Budget> {
        Rc::new(Budget {
            memory: memory.clone(),
            max_slots,
            slots: Cell::new(0),
            used: Cell::new(INBUF),
            wake: WakeableSleep::new(),
            waiting: Cell::new(false),
            registered: Cell::new(None),
        })
    }

    /// Requests holding a slot: running, or with their reply not yet written.
    pub(super) fn in_flight(&self) -> usize {
        self.slots.get()
    }

    fn try_admit(self: &Rc<Self>, bytes: usize, slot: bool) -> Option<Ticket> {
        if slot && self.slots.get() >= self.max_slots {
            return None;
        }
        let used = self.used.get();
        let new = used + bytes;
        if new > self.memory.conn {
            return None;
        }
        let extra = global_part(new) - global_part(used);
        if extra > 0 && !self.memory.try_take(extra, &self.wake, &self.registered) {
            return None;
        }
        self.used.set(new);
        self.slots.set(self.slots.get() + usize::from(slot));
        Some(Ticket {
            budget: self.clone(),
            bytes,
            slot,
        })
    }

    /// A ticket for `bytes` (and a slot if `slot`), waiting (yielding) until the connection
    /// and the server have room; `None` if `give_up` says so first (it is asked before each
    /// try and at least every 100 ms while waiting). A waiting reader holds nothing extra,
    /// so what it waits for is only ever held by replies on their way out.
    pub(super) fn admit(
        self: &Rc<Self>,
        bytes: usize,
        slot: bool,
        give_up: impl Fn() -> bool,
    ) -> Option<Ticket> {
        loop {
            if give_up() {
                return None;
            }
            if let Some(t) = self.try_admit(bytes, slot) {
                return Some(t);
            }
            self.waiting.set(true);
            self.wake.sleep(RECHECK);
            self.waiting.set(false);
        }
    }

    /// Waits until every ticket has come back: every request replied to (or its reply
    /// dropped).
    pub(super) fn wait_idle(&self) {
        while self.slots.get() > 0 || self.used.get() > INBUF {
            self.waiting.set(true);
            self.wake.sleep(RECHECK);
            self.waiting.set(false);
        }
    }

    fn give_back(&self, bytes: usize, slot: bool) {
        let used = self.used.get();
        let new = used - bytes;
        self.used.set(new);
        self.slots.set(self.slots.get() - usize::from(slot));
        let freed = global_part(used) - global_part(new);
        if freed > 0 {
            self.memory.give(freed);
        }
        if self.waiting.get() {
            self.wake.wake();
        }
    }
}

/// A request's (or an error reply's) hold on its connection's [`Budget`]: a slot and/or
/// bytes, given back when dropped — after the reply it travels with is written.
pub(super) struct Ticket {
    budget: Rc<Budget>,
    bytes: usize,
    slot: bool,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes, self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    fn global_used(m: &Memory) -> usize {
        m.lock().used
    }

    #[test]
    fn a_connection_holds_its_budget_at_most_and_gives_it_back_with_its_tickets() {
        let m = Memory::new(MIN_BUDGET + 8 * MIB, 1 << 40);
        let b = Budget::new(&m, 16);
        assert_eq!(
            b.used.get(),
            INBUF,
            "the input buffer counts from the start"
        );
        let max = proto::MAX_PAYLOAD as usize;
        let t1 = b.try_admit(max, true).unwrap();
        let t2 = b.try_admit(8 * MIB, true).unwrap();
        // Full: room for the input buffer and 1 MiB less 64 KiB.
        assert!(b.try_admit(MIB, false).is_none());
        let t3 = b.try_admit(MIB - INBUF, false).unwrap();
        assert_eq!(b.in_flight(), 2);
        assert_eq!(global_part(b.used.get()), max + 8 * MIB + MIB - RESERVE);
        assert_eq!(global_used(&m), max + 8 * MIB + MIB - RESERVE);
        drop(t1);
        assert_eq!(b.in_flight(), 1);
        assert_eq!(global_used(&m), 8 * MIB + MIB - RESERVE);
        drop((t2, t3));
        assert_eq!(
            (b.in_flight(), b.used.get(), global_used(&m)),
            (0, INBUF, 0)
        );
    }

    #[test]
    fn slots_bound_the_requests_whatever_their_size() {
        let m = Memory::new(0, 0);
        let b = Budget::new(&m, 2);
        let t = [b.try_admit(0, true), b.try_admit(0, true)];
        assert!(b.try_admit(0, true).is_none());
        assert!(
            b.try_admit(10, false).is_some(),
            "an error reply takes no slot"
        );
        drop(t);
        assert!(b.try_admit(0, true).is_some());
    }

    #[test]
    fn the_global_budget_is_shared_but_every_connection_keeps_its_reserve() {
        // Per connection: anything up to MIN_BUDGET; together: MIN_BUDGET beyond reserves.
        let m = Memory::new(0, 0);
        assert_eq!((m.conn, m.total), (MIN_BUDGET, MIN_BUDGET));
        let (a, b) = (Budget::new(&m, 16), Budget::new(&m, 16));
        let big = proto::MAX_PAYLOAD as usize;
        let ta = a.try_admit(big, true).unwrap();
        // b cannot take a large request while a holds the global budget...
        for _ in 0..3 {
            assert!(b.try_admit(big, true).is_none());
        }
        assert_eq!(
            m.lock().waiters.len(),
            1,
            "b waits for global room, registered once"
        );
        // ...but small ones, up to its reserve, still fit.
        let small: Vec<_> = (0..(RESERVE - INBUF) / 8192)
            .map(|_| b.try_admit(8192, false).unwrap())
            .collect();
        assert_eq!(b.used.get(), RESERVE);
        assert_eq!(
            global_used(&m),
            big + INBUF - RESERVE,
            "all of a's, none of b's"
        );
        let extra = b.try_admit(8192, false).unwrap();
        assert_eq!(
            global_used(&m),
            big + INBUF - RESERVE + 8192,
            "beyond its reserve, b takes from the global budget"
        );
        drop(extra);
        // a's bytes come back: b's waiter was woken (its sleep returns at once) and it fits.
        drop(ta);
        assert!(m.lock().waiters.is_empty());
        assert!(b.wake.sleep(Duration::ZERO), "woken");
        // Failing again: registered again, in the new round.
        let ta = a.try_admit(big, true).unwrap();
        assert!(b.try_admit(big, true).is_none());
        assert_eq!(m.lock().waiters.len(), 1);
        drop(ta);
        assert!(b.wake.sleep(Duration::ZERO), "woken again");
        drop(small);
        let tb = b.try_admit(big, true).unwrap();
        assert_eq!(global_used(&m), big + INBUF - RESERVE);
        drop(tb);
        assert_eq!(global_used(&m), 0);
    }

    #[test]
    fn the_outbox_keeps_no_large_queue_once_its_replies_are_written() {
        let (a, mut client) = std::os::unix::net::UnixStream::pair().unwrap();
        const SMALL: usize = 10_000;
        let total = 16 + MIB + 16 * SMALL;
        let reader = std::thread::spawn(move || {
            let mut all = vec![0u8; total];
            client.read_exact(&mut all).unwrap();
        });
        costack_aio::EventLoop::new().block_on(|| {
            let s = Rc::new(Stream::unix(a).unwrap());
            let out = Rc::new(Outbox::new());
            // A large reply the writer is busy with while small ones pile up behind it.
            let (s2, o2) = (s.clone(), out.clone());
            let writer = costack_aio::spawn(move || {
                o2.send(&s2, Reply::read(false, 0, 0, vec![0u8; MIB]), || 1);
            });
            costack_aio::yield_now();
            for cookie in 1..=SMALL as u64 {
                out.send(&s, Reply::ok(cookie), || 2);
            }
            writer.join();
            assert!(out.queue.borrow().is_empty());
            let cap = out.queue.borrow().capacity();
            assert!(
                cap <= BATCH_KEEP,
                "the queue kept room for {cap} replies after a burst"
            );
        });
        reader.join().unwrap();
    }

    #[test]
    fn error_messages_are_cut_at_a_char_boundary() {
        let long = "é".repeat(ERROR_MSG_MAX);
        let r = Reply::error(true, 1, 22, &long);
        let msg_len = r.body.len() - 20 - 6;
        assert_eq!(msg_len, ERROR_MSG_MAX);
        let r = Reply::error(true, 1, 22, &format!("x{long}"));
        assert_eq!(r.body.len() - 20 - 6, ERROR_MSG_MAX - 1);
        assert!(r.cost() <= REPLY_MAX_OVERHEAD);
    }
}
