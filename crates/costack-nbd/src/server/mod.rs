//! The server: event-loop threads, the accept loop, connections and how they stop.
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
//! under the connection's writer lock (a [`CoMutex`](costack::sync::CoMutex)), so two replies
//! never interleave on the wire. At most `max_in_flight` requests of a connection run (or
//! wait for their reply to be written) at once, and what a connection holds — payloads, read
//! data, replies not yet written — is bounded by [`Config::conn_buffer`] and, across all
//! connections, [`Config::total_buffer`]: the reader waits for a slot and room before it reads
//! the next request, which pushes back on the client through TCP. A client that never reads
//! its replies therefore costs the server a bounded amount of memory, and the others are
//! still served (each connection keeps a small reserve outside the shared budget).
//!
//! Memory goes back once idle: every loop trims its buffer pool each second
//! ([`costack_aio::buf::trim`]). (The binary also pins glibc's mmap threshold so that large
//! buffers are unmapped when freed; a program serving through the library may want the
//! same.)
//!
//! # Bad input
//!
//! A request is checked ([`proto::check`](crate::proto::check)) before anything runs: errors
//! are replied with the value the spec names and the connection goes on; a `WRITE`'s payload
//! is read (and thrown away) first so the stream stays in step. Two things end a connection: a
//! request header with the wrong magic (nothing after it can be trusted), and a `WRITE` longer
//! than 32 MiB (its payload is not read; the error is replied first). Whatever a connection
//! does, it can only end itself: the others, and every acknowledged write, are untouched.
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

//!
//! # Floors
//!
//! ```text
//! server (this file)   threads, loops, accept, handshake hand-off, stop   → conn, verbose
//!   conn               transmission: dispatch, in-flight slots, refusing   → wire, verbose
//!   wire               input buffer, replies, batched writes               → verbose
//!   verbose            set_verbose and the log! macro                      (nothing)
//! ```
//!
//! Each file imports only the ones below it (and [`proto`](crate::proto),
//! [`export`](crate::export), [`handshake`] of the crate). This file owns
//! the per-loop state ([`Config`], the connection table, the stop); a connection gets from it
//! only what it needs (the backend, the export's read-only flag, the in-flight limit and the
//! stop flag) as arguments.

mod conn;
mod verbose;
mod wire;

pub use conn::MAX_EXTENTS;
pub use verbose::set_verbose;
pub use wire::MIN_BUDGET;

use crate::export::{Backend, Export};
use crate::handshake;
use costack_aio::io::AsyncFd;
use costack_aio::net::TcpStream;
use costack_aio::{EventLoop, LoopHandle, WakeableSleep};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;
use verbose::log;

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
    /// Bytes one connection may make the server hold: write payloads, read data and replies
    /// not yet written (error replies too), its input buffer. When they are reached the
    /// connection stops reading until replies have gone out, and TCP pushes back on the
    /// client. At least [`MIN_BUDGET`] (one request of the largest size always fits); twice
    /// that by default (66 MiB): two 32 MiB requests in flight, or thousands of small ones.
    pub conn_buffer: usize,
    /// Bytes all connections together may hold beyond a small reserve each (1 MiB, enough
    /// for small requests: a client is served even when others hold all of this budget).
    /// The server's buffers are then bounded by `total_buffer + connections × 1 MiB`, plus
    /// what each loop thread's buffer pool keeps idle (at most
    /// [`POOL_BYTES`](costack_aio::buf::POOL_BYTES), given back within 2 s once idle). At
    /// least [`MIN_BUDGET`]; by default an eighth of the machine's memory, between 256 MiB
    /// and 1 GiB ([`default_total_buffer`]).
    pub total_buffer: usize,
}

/// The default [`Config::total_buffer`]: an eighth of the machine's physical memory, at least
/// 256 MiB and at most 1 GiB.
///
/// An eighth leaves the rest of the machine (an in-memory export, the page cache a file
/// export runs on, other services) its memory whatever the clients do, while 256 MiB still
/// lets eight clients stream 32 MiB requests at once; above 1 GiB more buffering gains no
/// throughput (each connection is held to [`Config::conn_buffer`] anyway).
///
/// ```
/// let t = costack_nbd::server::default_total_buffer();
/// assert!((256 << 20..=1 << 30).contains(&t));
/// ```
pub fn default_total_buffer() -> usize {
    // SAFETY: sysconf only reads system values.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let ram = usize::try_from(pages)
        .unwrap_or(0)
        .saturating_mul(usize::try_from(page).unwrap_or(0));
    (ram / 8).clamp(256 << 20, 1 << 30)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            threads: 1,
            max_in_flight: 16,
            stack_size: 256 * 1024,
            shutdown_grace: Duration::from_secs(10),
            conn_buffer: 2 * MIN_BUDGET,
            total_buffer: default_total_buffer(),
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
    let memory = wire::Memory::new(cfg.conn_buffer, cfg.total_buffer);
    let (peers_tx, peers_rx) = mpsc::channel::<Vec<LoopHandle>>();
    let mut acceptor = Some((listener, peers_rx));
    for i in 0..n {
        let (tx, rx) = mpsc::channel::<io::Result<LoopHandle>>();
        let export = handle.export.clone();
        let cfg = cfg.clone();
        let acc = acceptor.take();
        let memory = memory.clone();
        let t = thread::Builder::new()
            .name(format!("nbd-loop-{i}"))
            .spawn(move || loop_thread(export, cfg, memory, acc, tx))?;
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
    memory: Arc<wire::Memory>,
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
        memory,
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
        let s1 = st.clone();
        costack_aio::spawn(move || trimmer(&s1));
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

/// How often a loop gives idle buffers back: a buffer of its pool unused for a whole period
/// goes back to the allocator (see [`costack_aio::buf::trim`]).
const TRIM_PERIOD: Duration = Duration::from_secs(1);

/// Gives the loop's idle pool buffers back every [`TRIM_PERIOD`], until the loop stops; after
/// a burst, what the pool kept is freed within two periods.
fn trimmer(state: &LoopState) {
    while !state.stopping.get() {
        costack_aio::sleep(TRIM_PERIOD);
        costack_aio::buf::trim();
    }
}

/// What one loop thread knows.
struct LoopState {
    export: Arc<Export>,
    backend: Rc<dyn Backend>,
    max_in_flight: usize,
    /// The server's byte budgets, shared by every loop.
    memory: Arc<wire::Memory>,
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
    conn::transmission(
        stream,
        neg,
        &state.backend,
        state.export.read_only,
        state.max_in_flight,
        &state.memory,
        &state.stopping,
    );
}
