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
//! # Limits
//!
//! What a client can hold without doing anything useful is bounded:
//!
//! * **The handshake has a deadline** ([`Config::handshake_timeout`], 10 s by default, as
//!   qemu-nbd's): from the moment a connection is accepted until the client picks an export,
//!   whatever it sends or does not send in between. The deadline is a
//!   [`timeout`](costack_aio::timeout) around the whole negotiation, so every wait inside it
//!   is cut short; the connection is then closed (and logged). Transmission has no deadline.
//! * **Connections are counted** ([`Config::max_connections`], 512 by default), across every
//!   thread, those in the handshake included. The acceptor takes a connection beyond the
//!   limit out of the backlog and closes it at once, so the client reads end-of-file instead
//!   of waiting; a connection's place is given back by a guard, however it ends.
//! * **Running out of file descriptors** does not stop the acceptor nor make it spin, nor
//!   lock clients out once descriptors are free again. While `accept` fails with
//!   `EMFILE`/`ENFILE` the acceptor tries again every 100 ms, and new clients wait in the
//!   listen backlog: as with qemu-nbd, they are served as soon as a descriptor is free (stalled
//!   handshakes free theirs at their deadline). If the shortage outlasts the handshake
//!   deadline by 5 s — the descriptors are then held by connections no deadline ends — the
//!   acceptor sheds the waiting clients through a spare descriptor it holds for this: each is
//!   accepted and closed at once, and reads end-of-file instead of waiting for ever. Other
//!   failures of `accept` are retried at once when they belonged to one connection
//!   (`ECONNABORTED`, network errors passed on by Linux), or after a short back-off (100 ms
//!   when short of descriptors or kernel memory, 1 s for anything unknown), so a lasting
//!   failure costs next to no CPU.
//!
//! Raise the process's `RLIMIT_NOFILE` above `max_connections` plus a few dozen (the loops'
//! own descriptors) for the limit on connections, rather than the descriptors, to be what
//! refuses clients first.
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
//! server (this file)   threads, loops, accept, handshake hand-off, stop   → conn, limits, verbose
//!   conn               transmission: dispatch, in-flight slots, refusing   → wire, verbose
//!   limits             connection count, spare fd, accept errors           (nothing)
//!   wire               input buffer, replies, batched writes               → verbose
//!   verbose            what the tracing events mean, the log! macro        (nothing)
//! ```
//!
//! Each file imports only the ones below it (and [`proto`](crate::proto),
//! [`export`](crate::export), [`handshake`] and [`transport`](crate::transport) of the
//! crate: the connection's [`Stream`] and the [`Listener`]). This file owns
//! the per-loop state ([`Config`], the connection table, the stop); a connection gets from it
//! only what it needs (the backend, the export's read-only flag, the in-flight limit and the
//! stop flag) as arguments.

mod conn;
mod limits;
mod verbose;
mod wire;

pub use conn::MAX_EXTENTS;
pub use wire::MIN_BUDGET;

use crate::export::{Backend, Export};
use crate::handshake;
use crate::transport::{Accepted, ListenAddr, Listener, Stream, TlsMode};
use costack_aio::io::AsyncFd;
use costack_aio::{EventLoop, LoopHandle, WakeableSleep};
use limits::{Admitted, AfterError, ConnCount, Shortage, Spare, Took};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;
// Unused here now (events are `tracing::*!` with fields); kept so code that writes `log!`
// merges without touching imports.
#[allow(unused_imports)]
use verbose::log;

/// Server settings other than the export.
///
/// The defaults suit a server facing clients it does not trust; the limits (see
/// [Limits](self#limits)) can be changed or turned off:
///
/// ```
/// use costack_nbd::Config;
/// use std::time::Duration;
///
/// let cfg = Config {
///     threads: 2,
///     handshake_timeout: Some(Duration::from_secs(30)), // slow clients on a slow link
///     max_connections: 64,
///     ..Config::default()
/// };
/// assert_eq!(Config::default().handshake_timeout, Some(Duration::from_secs(10)));
/// assert_eq!(Config::default().max_connections, 512);
/// # let _ = cfg;
/// ```
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
    /// How long a client has to finish the whole handshake, from the moment its connection is
    /// accepted until it enters transmission (`GO`/`EXPORT_NAME`); a client still negotiating
    /// then is disconnected, and its place counts no more against
    /// [`max_connections`](Config::max_connections). The deadline covers everything the
    /// handshake waits for, however the client spreads its bytes. `None` or zero: no
    /// deadline. Default: 10 s, as qemu-nbd's. Transmission itself has no deadline (an idle
    /// client may stay).
    pub handshake_timeout: Option<Duration>,
    /// The most connections open at once, across every thread, those still in the handshake
    /// included. A connection beyond it is accepted and closed at once (the client reads
    /// end-of-file instead of waiting in the listen backlog). 0: no limit (as qemu-nbd's
    /// `--shared=0`). Default: 512 — far more than the clients of one disk (QEMU opens at most
    /// 16 connections to an export with multi-conn), and less than the usual 1024 file
    /// descriptors per process.
    pub max_connections: usize,
    /// TLS: off, offered, or required before anything else (see [`TlsMode`]).
    pub tls: TlsMode,
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
    /// The limit of each loop thread's adaptive polling (see
    /// [`EventLoop::set_poll_max`](costack_aio::EventLoop::set_poll_max)); zero, the default,
    /// turns it off. Polling trades a busy CPU for the latency of a sleep and a wake-up per
    /// request: it pays only when each loop thread has a CPU of its own.
    pub poll_max: Duration,
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
            handshake_timeout: Some(Duration::from_secs(10)),
            max_connections: 512,
            tls: TlsMode::Off,
            conn_buffer: 2 * MIN_BUDGET,
            total_buffer: default_total_buffer(),
            poll_max: Duration::ZERO,
        }
    }
}

/// A running server. Dropping it stops the server and waits for its threads (like
/// [`shutdown`](ServerHandle::shutdown), without the flush's result).
#[derive(Debug)]
pub struct ServerHandle {
    addr: ListenAddr,
    loops: Vec<LoopHandle>,
    threads: Vec<thread::JoinHandle<()>>,
    export: Arc<Export>,
}

impl ServerHandle {
    /// The TCP address the server listens on; for a Unix socket, the unspecified address
    /// `0.0.0.0:0` (see [`address`](ServerHandle::address)).
    pub fn local_addr(&self) -> SocketAddr {
        match &self.addr {
            ListenAddr::Tcp(a) => *a,
            ListenAddr::Unix(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        }
    }

    /// Where the server listens: a TCP address or a Unix socket's path.
    pub fn address(&self) -> &ListenAddr {
        &self.addr
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

/// Serves `export` on `listener` (bound already: a `std::net::TcpListener`, or any
/// [`Listener`]) with `cfg`; returns once every loop is running.
///
/// # Errors
/// If the listener cannot be made non-blocking, or a thread or an event loop cannot be
/// created.
pub fn serve(
    export: Arc<Export>,
    listener: impl Into<Listener>,
    cfg: Config,
) -> io::Result<ServerHandle> {
    let listener = listener.into();
    let addr = listener.address()?;
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

type Acceptor = (Listener, mpsc::Receiver<Vec<LoopHandle>>);

fn loop_thread(
    export: Arc<Export>,
    cfg: Config,
    memory: Arc<wire::Memory>,
    acceptor: Option<Acceptor>,
    started: mpsc::Sender<io::Result<LoopHandle>>,
) {
    let lp = match EventLoop::builder()
        .stack_size(cfg.stack_size)
        .poll_max(cfg.poll_max)
        .build()
    {
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
    // The acceptor's spare descriptor is open before the server reports it started: what
    // the server holds when `serve` returns is what it holds when idle.
    let spare = acceptor.as_ref().map(|_| Spare::new());
    let _ = started.send(Ok(lp.handle()));
    let acceptor = acceptor.and_then(|(l, rx)| Some((l, rx.recv().ok()?, spare?)));
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
        handshake_timeout: cfg.handshake_timeout.filter(|d| !d.is_zero()),
        tls: cfg.tls.clone(),
    });
    STATE.with(|s| *s.borrow_mut() = Some(state.clone()));
    let st = state.clone();
    lp.block_on(move || {
        let s1 = st.clone();
        costack_aio::spawn(move || trimmer(&s1));
        if let Some((listener, peers, spare)) = acceptor {
            let l = Rc::new(AsyncFd::new(listener));
            *st.listener.borrow_mut() = Some(l.clone());
            let s2 = st.clone();
            let count = ConnCount::new(cfg.max_connections);
            costack_aio::spawn(move || accept_loop(s2, l, peers, count, spare));
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
    conns: RefCell<HashMap<u64, Rc<Stream>>>,
    next_conn: Cell<u64>,
    /// The listening socket, on the loop that accepts, until it stops.
    listener: RefCell<Option<Rc<AsyncFd<Listener>>>>,
    /// Wakes the loop's main task when it may be done.
    idle: WakeableSleep,
    /// How long a stop waits for busy connections.
    grace: Duration,
    /// [`Config::handshake_timeout`] (`None`: none).
    handshake_timeout: Option<Duration>,
    /// TLS for the handshake.
    tls: TlsMode,
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
                tracing::warn!(
                    peer = %c.peer(),
                    grace = ?st.grace,
                    "shutdown: cutting a connection that is still busy"
                );
                let _ = c.shutdown(Shutdown::Both);
            }
        });
    }
}

/// Takes a connection out of the loop's table, and gives its place in the connection count
/// back, when its task ends (however it ends).
struct ConnGuard {
    state: Rc<LoopState>,
    id: u64,
    place: Option<Admitted>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        // The place first: the socket closes after it, so a client that has read end-of-file
        // finds the place free when it connects again.
        self.place = None;
        self.state.conns.borrow_mut().remove(&self.id);
        self.state.idle.wake();
    }
}

fn accept_loop(
    state: Rc<LoopState>,
    listener: Rc<AsyncFd<Listener>>,
    peers: Vec<LoopHandle>,
    count: ConnCount,
    mut spare: Spare,
) {
    let mut next = 0usize;
    let mut shortage = Shortage::new(limits::shed_after(state.handshake_timeout));
    loop {
        let shed = shortage.shedding();
        match listener.read_with(|l| spare.accept(shed, || l.accept())) {
            Ok(Took::Conn((s, peer))) => {
                shortage.accepted();
                let Some(place) = count.admit() else {
                    tracing::warn!(%peer, open = count.open(), "connection refused: at the connection limit");
                    continue; // `s` is closed: the client reads end-of-file
                };
                tracing::info!(%peer, "connection accepted");
                let i = next % peers.len();
                next = next.wrapping_add(1);
                if i == 0 {
                    let st = state.clone();
                    costack_aio::spawn(move || connection(st, s, place));
                } else {
                    // If that loop is gone, the closure is dropped: so are `s` and `place`.
                    let _ = peers[i].call_soon(move || {
                        with_state(|st| {
                            let st = st.clone();
                            costack_aio::spawn(move || connection(st, s, place));
                        })
                    });
                }
            }
            Ok(Took::Shed) => {
                tracing::warn!("out of file descriptors for too long: refused a connection")
            }
            Err(_) if listener.is_closed() => break,
            Err(e) => {
                if shortage.failed(&e) {
                    // Clients wait in the backlog until a descriptor is free (see `limits`).
                    tracing::warn!(error = %e, "out of file descriptors: new clients wait");
                }
                match limits::after_error(&e) {
                    AfterError::Retry => {
                        tracing::info!(error = %e, "accept failed: trying again")
                    }
                    AfterError::BackOff(d) => {
                        tracing::debug!(error = %e, "accept failed: trying again in {d:?}");
                        costack_aio::sleep(d);
                        spare.refill();
                    }
                }
            }
        }
    }
    *state.listener.borrow_mut() = None;
    state.idle.wake();
}

fn connection(state: Rc<LoopState>, s: Accepted, place: Admitted) {
    let Ok(stream) = Stream::from_accepted(s) else {
        return;
    };
    if state.stopping.get() {
        return;
    }
    let _ = stream.set_nodelay(true);
    let stream = Rc::new(stream);
    let id = state.next_conn.get();
    state.next_conn.set(id + 1);
    let tag = verbose::Tag::new(stream.peer());
    state.conns.borrow_mut().insert(id, stream.clone());
    let guard = ConnGuard {
        state: state.clone(),
        id,
        place: Some(place),
    };
    let shake = || handshake::handshake(&*stream, &state.export, &state.tls);
    let result = match state.handshake_timeout {
        // The whole handshake: every wait inside it is cut short at the deadline.
        Some(d) => costack_aio::timeout(d, shake).unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("not finished within {d:?}: disconnected"),
            ))
        }),
        None => shake(),
    };
    let neg = match result {
        Ok(Some(n)) => n,
        Ok(None) => {
            tracing::info!(conn = tag.id, peer = %tag.peer, "client left in the handshake");
            // The place, then the socket (as after transmission); with TLS up, close_notify
            // first (a hard disconnect "SHOULD shutdown TLS first").
            drop(guard);
            stream.close();
            return;
        }
        Err(e) => {
            tracing::info!(conn = tag.id, peer = %tag.peer, error = %e, "handshake failed");
            drop(guard);
            stream.close();
            return;
        }
    };
    tracing::info!(
        conn = tag.id,
        peer = %tag.peer,
        export = %state.export.name,
        structured = neg.structured,
        "negotiated: transmission starts"
    );
    if state.stopping.get() {
        return;
    }
    let setup = conn::Setup {
        backend: &state.backend,
        read_only: state.export.read_only,
        max_in_flight: state.max_in_flight,
        memory: &state.memory,
        stopping: &state.stopping,
    };
    conn::transmission(stream.clone(), neg, setup, &tag);
    // The place first, then the socket: a client that reconnects as soon as it reads
    // end-of-file finds its place free (whichever loop its new connection lands on).
    drop(guard);
    stream.close();
    tracing::info!(conn = tag.id, peer = %tag.peer, "connection closed");
}
