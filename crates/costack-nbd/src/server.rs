//! The server: event-loop threads, the accept loop, connections and the transmission phase.
//!
//! # Shape
//!
//! ```text
//!  thread 0                          thread 1 … N-1
//!  ┌──────────────────────────┐      ┌──────────────────────────┐
//!  │ EventLoop                │      │ EventLoop                │
//!  │  acceptor task ──────────┼─────►│  connection task         │   (round robin, through
//!  │  connection task         │      │   └ request tasks (≤16)  │    each loop's LoopHandle)
//!  │   └ request tasks (≤16)  │      │                          │
//!  └──────────────────────────┘      └──────────────────────────┘
//! ```
//!
//! Every thread runs one costack-aio [`EventLoop`]. The first also runs the acceptor, which
//! hands each new connection to the next loop in turn. A connection is one task (a coroutine
//! with its own stack) that does the handshake and then reads requests; every request runs in
//! a task of its own, so a slow one (a flush, a read from disk) never holds up the others, and
//! each is straight-line code:
//!
//! ```text
//! read the payload → check it → backend.write_at_owned(..) → [flush if FUA] → reply
//! ```
//!
//! Replies go out in whatever order requests finish (the spec allows it), each written whole
//! under the connection's [`CoMutex`], so two replies never interleave on the wire. At most
//! `max_in_flight` requests of a connection run at once: the reader waits for a slot
//! ([`CoSemaphore`]) before it reads the next request, which pushes back on the client through
//! TCP.
//!
//! # Bad input
//!
//! A request is checked ([`proto::check`]) before anything runs: errors are replied with the
//! value the spec names and the connection goes on; a `WRITE`'s payload is read (and thrown
//! away) first so the stream stays in step. Two things end a connection: a request header with
//! the wrong magic (nothing after it can be trusted), and a `WRITE` longer than 32 MiB (its
//! payload is not read; the error is replied first). Whatever a connection does, it can only
//! end itself: the others, and every acknowledged write, are untouched.
//!
//! # Shutdown
//!
//! [`ServerHandle::stop`] tells every loop to stop: the acceptor closes, connections still in
//! the handshake are dropped, and connections in transmission stop reading (their socket's
//! read side is shut down) but finish the requests already started and send their replies;
//! requests the client had sent but that had not started are answered `ESHUTDOWN`, as the
//! spec suggests.
//! A connection still busy after [`Config::shutdown_grace`] (a client that does not read its
//! replies) is cut. When every loop is idle the threads exit and [`ServerHandle::join`]
//! flushes the export.

use crate::export::{Backend, Export, ZeroMode};
use crate::handshake::{self, Negotiated};
use crate::proto::{self, cflag, cmd, Check, Limits, Request};
use costack::sync::{CoMutex, CoSemaphore};
use costack_aio::io::AsyncFd;
use costack_aio::net::TcpStream;
use costack_aio::{EventLoop, LoopHandle, WakeableSleep};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

/// Most extents in one `BLOCK_STATUS` reply (the spec's recommended ceiling is 2^20).
pub const MAX_EXTENTS: usize = 1 << 20;

static VERBOSE: AtomicBool = AtomicBool::new(false);

/// Turns connection-level messages on stderr on or off (off by default).
pub fn set_verbose(on: bool) {
    VERBOSE.store(on, Ordering::Relaxed);
}

macro_rules! log {
    ($($t:tt)*) => {
        if VERBOSE.load(Ordering::Relaxed) {
            eprintln!("costack-nbd: {}", format_args!($($t)*));
        }
    };
}

/// Server settings other than the export.
#[derive(Debug, Clone)]
pub struct Config {
    /// Event-loop threads; connections are spread over them (at least 1).
    pub threads: usize,
    /// Requests of one connection that may run at once (at least 1).
    pub max_in_flight: usize,
    /// Stack size of every task (connections and requests), in bytes.
    pub stack_size: usize,
    /// How long a stop waits for connections to finish their requests before it cuts them
    /// (a client that does not read its replies could otherwise hold it up for ever).
    pub shutdown_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            threads: 1,
            max_in_flight: 16,
            stack_size: 256 * 1024,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// A running server. Dropping it stops the server and waits for its threads (like
/// [`shutdown`](ServerHandle::shutdown), without the flush's result).
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    loops: Vec<LoopHandle>,
    threads: Vec<thread::JoinHandle<()>>,
    export: Arc<Export>,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts a graceful stop and returns at once: no new connections, no new requests; the
    /// requests in flight finish and are replied to. Safe to call more than once.
    pub fn stop(&self) {
        for l in &self.loops {
            let _ = l.call_soon(|| with_state(|s| s.stop()));
        }
    }

    /// Waits until every thread has finished, then flushes the export.
    ///
    /// # Errors
    /// The flush's error.
    pub fn join(mut self) -> io::Result<()> {
        self.join_threads();
        self.export.flush_blocking()
    }

    /// [`stop`](ServerHandle::stop), then [`join`](ServerHandle::join).
    ///
    /// # Errors
    /// The flush's error.
    pub fn shutdown(self) -> io::Result<()> {
        self.stop();
        self.join()
    }

    fn join_threads(&mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop();
            self.join_threads();
        }
    }
}

/// Serves `export` on `listener` (bound already) with `cfg`; returns once every loop is
/// running.
///
/// # Errors
/// If the listener cannot be made non-blocking, or a thread or an event loop cannot be
/// created.
pub fn serve(
    export: Arc<Export>,
    listener: std::net::TcpListener,
    cfg: Config,
) -> io::Result<ServerHandle> {
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let n = cfg.threads.max(1);
    // If a thread cannot start, dropping the handle stops (and joins) those that did.
    let mut handle = ServerHandle {
        addr,
        loops: Vec::with_capacity(n),
        threads: Vec::with_capacity(n),
        export,
    };
    let (peers_tx, peers_rx) = mpsc::channel::<Vec<LoopHandle>>();
    let mut acceptor = Some((listener, peers_rx));
    for i in 0..n {
        let (tx, rx) = mpsc::channel::<io::Result<LoopHandle>>();
        let export = handle.export.clone();
        let cfg = cfg.clone();
        let acc = acceptor.take();
        let t = thread::Builder::new()
            .name(format!("nbd-loop-{i}"))
            .spawn(move || loop_thread(export, cfg, acc, tx))?;
        handle.threads.push(t);
        match rx.recv() {
            Ok(Ok(h)) => handle.loops.push(h),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(io::Error::other("an event-loop thread died at start")),
        }
    }
    // The acceptor starts once it knows every loop.
    let _ = peers_tx.send(handle.loops.clone());
    Ok(handle)
}

type Acceptor = (std::net::TcpListener, mpsc::Receiver<Vec<LoopHandle>>);

fn loop_thread(
    export: Arc<Export>,
    cfg: Config,
    acceptor: Option<Acceptor>,
    started: mpsc::Sender<io::Result<LoopHandle>>,
) {
    let lp = match EventLoop::builder().stack_size(cfg.stack_size).build() {
        Ok(lp) => lp,
        Err(e) => {
            let _ = started.send(Err(e));
            return;
        }
    };
    let backend = match export.backend() {
        Ok(b) => b,
        Err(e) => {
            let _ = started.send(Err(e));
            return;
        }
    };
    let _ = started.send(Ok(lp.handle()));
    let acceptor = acceptor.and_then(|(l, rx)| Some((l, rx.recv().ok()?)));
    let state = Rc::new(LoopState {
        backend,
        export,
        max_in_flight: cfg.max_in_flight.max(1),
        stopping: Cell::new(false),
        conns: RefCell::new(HashMap::new()),
        next_conn: Cell::new(0),
        listener: RefCell::new(None),
        idle: WakeableSleep::new(),
        grace: cfg.shutdown_grace,
    });
    STATE.with(|s| *s.borrow_mut() = Some(state.clone()));
    let st = state.clone();
    lp.block_on(move || {
        if let Some((listener, peers)) = acceptor {
            let l = Rc::new(AsyncFd::new(listener));
            *st.listener.borrow_mut() = Some(l.clone());
            let s2 = st.clone();
            costack_aio::spawn(move || accept_loop(s2, l, peers));
        }
        while !(st.stopping.get() && st.conns.borrow().is_empty() && st.listener.borrow().is_none())
        {
            st.idle.sleep_until_woken();
        }
    });
    STATE.with(|s| *s.borrow_mut() = None);
    drop(state);
    drop(lp);
}

/// What one loop thread knows.
struct LoopState {
    export: Arc<Export>,
    backend: Rc<dyn Backend>,
    max_in_flight: usize,
    stopping: Cell<bool>,
    /// Live connections, to stop them.
    conns: RefCell<HashMap<u64, Rc<TcpStream>>>,
    next_conn: Cell<u64>,
    /// The listening socket, on the loop that accepts, until it stops.
    listener: RefCell<Option<Rc<AsyncFd<std::net::TcpListener>>>>,
    /// Wakes the loop's main task when it may be done.
    idle: WakeableSleep,
    /// How long a stop waits for busy connections.
    grace: Duration,
}

thread_local! {
    static STATE: RefCell<Option<Rc<LoopState>>> = const { RefCell::new(None) };
}

fn with_state(f: impl FnOnce(&Rc<LoopState>)) {
    let s = STATE.with(|s| s.borrow().clone());
    if let Some(s) = s {
        f(&s);
    }
}

impl LoopState {
    fn stop(self: &Rc<Self>) {
        if self.stopping.replace(true) {
            return;
        }
        if let Some(l) = self.listener.borrow().as_ref() {
            l.close();
        }
        for c in self.conns.borrow().values() {
            // Readers see end-of-file; requests already read still get their replies.
            let _ = c.shutdown(Shutdown::Read);
        }
        self.idle.wake();
        // A client that does not read its replies would hold the stop up for ever: after the
        // grace period, connections still open are cut (their requests then end at once).
        let st = self.clone();
        costack_aio::spawn(move || {
            costack_aio::sleep(st.grace);
            for c in st.conns.borrow().values() {
                log!("shutdown: cutting a connection that is still busy");
                let _ = c.shutdown(Shutdown::Both);
            }
        });
    }
}

/// Takes a connection out of the loop's table when its task ends (however it ends).
struct ConnGuard {
    state: Rc<LoopState>,
    id: u64,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.state.conns.borrow_mut().remove(&self.id);
        self.state.idle.wake();
    }
}

fn accept_loop(
    state: Rc<LoopState>,
    listener: Rc<AsyncFd<std::net::TcpListener>>,
    peers: Vec<LoopHandle>,
) {
    let mut next = 0usize;
    loop {
        match listener.read_with(|l| l.accept()) {
            Ok((s, peer)) => {
                log!("connection from {peer}");
                let i = next % peers.len();
                next = next.wrapping_add(1);
                if i == 0 {
                    let st = state.clone();
                    costack_aio::spawn(move || connection(st, s));
                } else {
                    let _ = peers[i].call_soon(move || {
                        with_state(|st| {
                            let st = st.clone();
                            costack_aio::spawn(move || connection(st, s));
                        })
                    });
                }
            }
            Err(_) if listener.is_closed() => break,
            Err(e) => {
                // Out of fds, a connection reset before it was accepted...: keep serving.
                log!("accept: {e}");
                costack_aio::sleep(Duration::from_millis(10));
            }
        }
    }
    *state.listener.borrow_mut() = None;
    state.idle.wake();
}

fn connection(state: Rc<LoopState>, s: std::net::TcpStream) {
    let Ok(stream) = TcpStream::from_std(s) else {
        return;
    };
    if state.stopping.get() {
        return;
    }
    let _ = stream.set_nodelay(true);
    let stream = Rc::new(stream);
    let id = state.next_conn.get();
    state.next_conn.set(id + 1);
    state.conns.borrow_mut().insert(id, stream.clone());
    let _guard = ConnGuard {
        state: state.clone(),
        id,
    };
    let neg = match handshake::handshake(&*stream, &state.export) {
        Ok(Some(n)) => n,
        Ok(None) => return,
        Err(e) => {
            log!("handshake: {e}");
            return;
        }
    };
    if state.stopping.get() {
        return;
    }
    transmission(&state, stream, neg);
}

// ---------------------------------------------------------------------------------------------
// Transmission

/// One connection in the transmission phase, shared by its reader and its request tasks.
struct Conn {
    stream: Rc<TcpStream>,
    backend: Rc<dyn Backend>,
    /// Held by the task that writes replies, so replies never interleave.
    writer: CoMutex<()>,
    /// Replies waiting for the writer.
    out: RefCell<Vec<Reply>>,
    /// One permit per request that may run.
    slots: CoSemaphore,
    max_in_flight: usize,
    limits: Limits,
    structured: bool,
    meta_id: u32,
    /// A reply could not be sent: the client is gone.
    broken: Cell<bool>,
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

fn transmission(state: &LoopState, stream: Rc<TcpStream>, neg: Negotiated) {
    let max = state.max_in_flight;
    let conn = Rc::new(Conn {
        stream,
        backend: state.backend.clone(),
        writer: CoMutex::new(()),
        out: RefCell::new(Vec::new()),
        slots: CoSemaphore::new(max),
        max_in_flight: max,
        limits: Limits {
            size: state.backend.len(),
            read_only: state.export.read_only,
            structured: neg.structured,
            meta: neg.meta.is_some(),
        },
        structured: neg.structured,
        meta_id: neg.meta.unwrap_or(0),
        broken: Cell::new(false),
    });
    let mut input = InBuf::new();
    loop {
        if state.stopping.get() {
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
        if conn.broken.get() {
            break;
        }
    }
    // Finish what is in flight: every slot comes back.
    drop(conn.slots.acquire(max));
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
        if conn.broken.get() {
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
            let (r, buf) = b.read_at_owned(pool::take(req.length as usize), offset);
            match r {
                Ok(()) => send_read(conn, &req, buf),
                Err(e) => {
                    pool::give(buf);
                    send_io_error(conn, &req, &e);
                }
            }
            return;
        }
        cmd::WRITE => {
            let data = payload.unwrap_or_default();
            let (r, buf) = b.write_at_owned(data, offset);
            pool::give(buf);
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
                    let chunk = proto::block_status_chunk(req.cookie, conn.meta_id, &ext);
                    send(conn, Reply::body(chunk));
                    return;
                }
                Err(e) => Err(e),
            }
        }
        _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
    };
    match result {
        Ok(()) => send(conn, Reply::head(&proto::simple_reply(0, req.cookie))),
        Err(e) => send_io_error(conn, &req, &e),
    }
}

fn send_io_error(conn: &Conn, req: &Request, e: &io::Error) {
    let msg = format!("{} failed: {e}", cmd::name(req.typ));
    send_error(conn, req, proto::errno_to_nbd(e), &msg);
}

/// Sends an error reply: a structured `ERROR` chunk with the message once structured replies
/// are on, a simple reply otherwise.
fn send_error(conn: &Conn, req: &Request, error: u32, msg: &str) {
    log!("{} error {error}: {msg}", cmd::name(req.typ));
    if conn.structured {
        send(
            conn,
            Reply::body(proto::error_chunk(req.cookie, error, msg)),
        );
    } else {
        send(conn, Reply::head(&proto::simple_reply(error, req.cookie)));
    }
}

fn send_read(conn: &Conn, req: &Request, data: Vec<u8>) {
    let reply = if !conn.structured {
        Reply::with_data(&proto::simple_reply(0, req.cookie), data)
    } else if data.is_empty() {
        let h = proto::chunk_header(
            proto::reply::FLAG_DONE,
            proto::reply::TYPE_NONE,
            req.cookie,
            0,
        );
        Reply::head(&h)
    } else {
        let h = proto::offset_data_header(req.cookie, req.offset, data.len() as u32);
        Reply::with_data(&h, data)
    };
    send(conn, reply);
}

/// A reply waiting to be written: a short header and an owned body (the read data, or a
/// whole chunk), which goes back to the buffer pool once written.
struct Reply {
    head: [u8; 28],
    head_len: u8,
    body: Vec<u8>,
}

impl Reply {
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

/// Queues a reply and writes it, unless another task is writing already — then that task
/// writes this reply too, in the same `writev`.
///
/// Whoever gets the connection's writer lock ([`CoMutex`]) writes every queued reply, in
/// batches of one system call each, until the queue is empty. Before its first batch it lets
/// the other ready tasks run once if more requests are in flight: requests that finish in the
/// same turn of the loop then leave in one `writev` instead of one each. With one request in
/// flight (queue depth 1) nothing waits.
fn send(conn: &Conn, reply: Reply) {
    if conn.broken.get() {
        pool::give(reply.body);
        return;
    }
    conn.out.borrow_mut().push(reply);
    let Some(_writer) = conn.writer.try_lock() else {
        return; // the writer will take it
    };
    if conn.in_flight() > 1 {
        costack_aio::yield_now();
    }
    let mut batch = Vec::new();
    loop {
        std::mem::swap(&mut batch, &mut *conn.out.borrow_mut());
        if batch.is_empty() {
            return;
        }
        let r = write_batch(&conn.stream, &batch);
        for r in batch.drain(..) {
            pool::give(r.body);
        }
        if let Err(e) = r {
            log!("writing replies: {e}");
            conn.broken.set(true);
            for r in conn.out.borrow_mut().drain(..) {
                pool::give(r.body);
            }
            // Wake the reader: nobody can be answered any more.
            let _ = conn.stream.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// Writes whole replies with as few `writev`s as the socket allows.
fn write_batch(s: &TcpStream, batch: &[Reply]) -> io::Result<()> {
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
struct InBuf {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

/// Size of a connection's input buffer.
const INBUF: usize = 64 * 1024;

impl InBuf {
    fn new() -> InBuf {
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
    fn fill(&mut self, s: &TcpStream) -> io::Result<usize> {
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
    fn header(&mut self, s: &TcpStream) -> io::Result<Option<[u8; proto::REQUEST_LEN]>> {
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
    fn payload(&mut self, s: &TcpStream, len: usize) -> io::Result<Vec<u8>> {
        let mut v = pool::take(len);
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
    fn skip(&mut self, s: &TcpStream, len: u32) -> io::Result<()> {
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

/// Per-thread recycling of I/O buffers, so a request does not pay for allocating and zeroing
/// its buffer. Buffers of a power-of-two size from 4 KiB to 2 MiB are kept: 32 of each size
/// up to 128 KiB, fewer above (at most 4 MiB of each size, and at least 2).
mod pool {
    use std::cell::RefCell;

    const MIN_SHIFT: u32 = 12;
    const MAX_SHIFT: u32 = 21;
    const CLASSES: usize = (MAX_SHIFT - MIN_SHIFT + 1) as usize;

    /// How many buffers of size class `c` are kept.
    fn keep(c: usize) -> usize {
        ((4 << 20) >> (c as u32 + MIN_SHIFT)).clamp(2, 32)
    }

    thread_local! {
        static FREE: RefCell<[Vec<Box<[u8]>>; CLASSES]> =
            RefCell::new(std::array::from_fn(|_| Vec::new()));
    }

    fn class_of(cap: usize) -> Option<usize> {
        let shift = cap.trailing_zeros();
        (cap.is_power_of_two() && (MIN_SHIFT..=MAX_SHIFT).contains(&shift))
            .then(|| (shift - MIN_SHIFT) as usize)
    }

    /// A buffer of `len` initialised bytes (contents unspecified).
    pub(super) fn take(len: usize) -> Vec<u8> {
        let cap = len.max(1 << MIN_SHIFT).next_power_of_two();
        let Some(c) = class_of(cap) else {
            return vec![0u8; len];
        };
        let b = FREE.with(|f| f.borrow_mut()[c].pop());
        let mut v = match b {
            Some(b) => Vec::from(b),
            None => vec![0u8; cap],
        };
        v.truncate(len);
        v
    }

    /// Gives a buffer back for reuse.
    pub(super) fn give(mut v: Vec<u8>) {
        let cap = v.capacity();
        let Some(c) = class_of(cap) else { return };
        FREE.with(|f| {
            let mut f = f.borrow_mut();
            if f[c].len() < keep(c) {
                // Only the tail beyond `len` is written (for the usual exact sizes: nothing).
                v.resize(cap, 0);
                f[c].push(v.into_boxed_slice());
            }
        });
    }
}
