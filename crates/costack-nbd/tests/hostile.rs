//! Hostile clients against the `costack-nbd` binary, in a process of its own so that its
//! memory can be read from `/proc/PID/status`: clients that never read their replies, that
//! flood the server with invalid requests, that burst with 32 MiB requests. The server's
//! memory must stay under a bound derived from its budgets while a well-behaved client on
//! another connection is served within a deadline, and must go back down once idle.
//!
//! The server runs with `--conn-buffer 64M --total-buffer 96M` and 2 threads, serving 64 MiB
//! in memory: hostile clients read regions nobody wrote (zeroes: no page of the export is
//! allocated), the good client writes 4 KiB blocks in the first MiB.

mod common;

use common::*;
use costack_nbd::proto::{cmd, Request};
use costack_nbd::{Config, Export};
use std::io::{ErrorKind, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const MAX_REQ: u32 = 32 << 20;

/// The budgets the server runs with (see the crate's `Config::conn_buffer` and
/// `Config::total_buffer`).
const CONN_BUFFER: u64 = 64 * MIB;
const TOTAL_BUFFER: u64 = 96 * MIB;

/// What the server holds besides the budgets: its baseline (binary, threads, stacks of the
/// request tasks that run, the loops' buffer pools) and each connection's reserve and input
/// buffer. Measured at about 10 MiB; the margin is for the allocator's slack.
const SLACK: u64 = 48 * MIB;

/// The server process (the binary), killed when dropped.
struct Server(BinServer);

impl Server {
    fn start() -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_costack-nbd"));
        // A server that does not bound its memory (the old one took 16 GiB in a second) must
        // fail here rather than take the machine: 4 GiB of address space at most.
        // SAFETY: setrlimit is async-signal-safe, and the closure touches nothing else of the
        // parent between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 4 << 30,
                    rlim_max: 4 << 30,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.args(["-p", "0", "-x", "test", "--size", "64M", "--threads", "2"])
            .args(["--conn-buffer", &format!("{}M", CONN_BUFFER / MIB)])
            .args(["--total-buffer", &format!("{}M", TOTAL_BUFFER / MIB)]);
        Server(BinServer::start(&mut cmd))
    }

    /// A field of `/proc/PID/status` in bytes (`VmHWM`, `VmRSS`).
    fn status(&self, field: &str) -> u64 {
        let st = std::fs::read_to_string(format!("/proc/{}/status", self.0.child.id())).unwrap();
        let line = st
            .lines()
            .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
            .unwrap_or_else(|| panic!("no {field} in /proc/PID/status"));
        let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kb * 1024
    }

    fn hwm(&self) -> u64 {
        self.status("VmHWM")
    }

    fn rss(&self) -> u64 {
        self.status("VmRSS")
    }
}

/// A client that sends requests in a thread of its own and never reads a reply, until
/// stopped (or the server closes the connection). Counts the requests it got out.
struct Hostile {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Hostile {
    /// Sends `first` once, then `each` over and over (each a request header, no payload).
    fn start(addr: SocketAddr, first: Option<Request>, each: Request) -> Hostile {
        let (c, _) = Client::open(addr, false);
        let mut s = c.s;
        s.set_write_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (stop2, sent2) = (stop.clone(), sent.clone());
        let thread = thread::spawn(move || {
            let mut reqs = first.into_iter().map(|r| r.encode());
            let mut cookie = 1u64;
            loop {
                let bytes = reqs.next().unwrap_or_else(|| {
                    cookie += 1;
                    Request { cookie, ..each }.encode()
                });
                let mut at = 0;
                while at < bytes.len() {
                    if stop2.load(Ordering::Relaxed) {
                        return;
                    }
                    match s.write(&bytes[at..]) {
                        Ok(n) => at += n,
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(_) => return, // the server closed the connection
                    }
                }
                sent2.fetch_add(1, Ordering::Relaxed);
            }
        });
        Hostile {
            stop,
            sent,
            thread: Some(thread),
        }
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Stops sending and closes the connection.
    fn leave(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_req(offset: u64, length: u32) -> Request {
    Request {
        flags: 0,
        typ: cmd::READ,
        cookie: 1,
        offset,
        length,
    }
}

/// Waits until `h` has got no request out for 300 ms (its socket is full), at most 20 s.
fn stalled(h: &Hostile) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = (h.sent(), Instant::now());
    while last.1.elapsed() < Duration::from_millis(300) {
        assert!(Instant::now() < deadline, "the server kept reading");
        thread::sleep(Duration::from_millis(20));
        if h.sent() != last.0 {
            last = (h.sent(), Instant::now());
        }
    }
}

/// Waits until the hostile clients stop getting requests out (the server stopped reading:
/// their sockets are full) for 300 ms, watching the server's peak memory meanwhile; at most
/// `within`. Fails as soon as the peak goes over `bound` (the old code grew without end).
fn until_stalled(srv: &Server, hostiles: &[&Hostile], bound: u64, within: Duration) {
    let deadline = Instant::now() + within;
    let total = || hostiles.iter().map(|h| h.sent()).sum::<u64>();
    let mut last = (total(), Instant::now());
    loop {
        let hwm = srv.hwm();
        assert!(
            hwm <= bound,
            "VmHWM {} MiB over the bound {} MiB after {} requests",
            hwm / MIB,
            bound / MIB,
            total()
        );
        let now = total();
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() >= Duration::from_millis(300) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the server kept reading: {now} requests taken in, VmHWM {} MiB",
            hwm / MIB
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// A well-behaved client: `n` 4 KiB writes, each read back, within `deadline`; while it
/// runs, the server's peak memory stays under `bound`.
fn good_client(srv: &Server, n: u64, deadline: Duration, bound: u64) {
    let addr = srv.0.addr;
    let t0 = Instant::now();
    let worker = thread::spawn(move || {
        let (mut c, _) = Client::open(addr, true);
        for i in 0..n {
            let data = pattern(4096, i as u8);
            let off = (i % 256) * 4096;
            assert_eq!(c.write(off, &data), 0);
            assert_eq!(c.read(off, 4096).unwrap(), data);
        }
        c.disconnect();
    });
    while !worker.is_finished() {
        assert!(
            t0.elapsed() < deadline,
            "the good client was not served within {deadline:?}"
        );
        let hwm = srv.hwm();
        assert!(
            hwm <= bound,
            "VmHWM {} MiB over {} MiB",
            hwm / MIB,
            bound / MIB
        );
        thread::sleep(Duration::from_millis(20));
    }
    worker.join().unwrap();
}

/// Waits until the server's RSS is at most `bound`, at most `within`.
fn rss_down_to(srv: &Server, bound: u64, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        let rss = srv.rss();
        if rss <= bound {
            return rss;
        }
        assert!(
            Instant::now() < deadline,
            "VmRSS still {} MiB after {within:?} idle (bound {} MiB)",
            rss / MIB,
            bound / MIB
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Table row 1: 4 connections pipeline 32 MiB READs and never read the replies. The global
/// budget bounds them all together; the good client is served meanwhile.
#[test]
fn unread_32m_reads_on_4_connections_stay_under_the_global_budget() {
    let srv = Server::start();
    let base = srv.rss();
    let bound = base + TOTAL_BUFFER + SLACK;
    let hostiles: Vec<Hostile> = (0..4u64)
        .map(|i| Hostile::start(srv.0.addr, None, read_req(i * 8 * MIB, MAX_REQ)))
        .collect();
    let refs: Vec<&Hostile> = hostiles.iter().collect();
    until_stalled(&srv, &refs, bound, Duration::from_secs(20));
    good_client(&srv, 200, Duration::from_secs(20), bound);
    let hwm = srv.hwm();
    eprintln!(
        "row 1: baseline {} MiB, VmHWM {} MiB (bound {} MiB), {} requests sent",
        base / MIB,
        hwm / MIB,
        bound / MIB,
        refs.iter().map(|h| h.sent()).sum::<u64>()
    );
    assert!(hwm <= bound);
    for h in hostiles {
        h.leave();
    }
}

/// Table row 2: one unread 32 MiB READ, then a flood of invalid requests (READs past the
/// end: each answered with an error by the reader). The error replies hold a slot and their
/// bytes like any request until they are written, so the reader stops after
/// `max_in_flight` of them (as qemu-nbd does): the server holds the read's 32 MiB and little
/// else (it held 47 MiB over its baseline when error replies were counted in bytes only).
/// After the client leaves, memory goes back.
#[test]
fn a_flood_of_invalid_requests_behind_an_unread_read_is_bounded() {
    let srv = Server::start();
    let base = srv.rss();
    let bound = base + u64::from(MAX_REQ) + 8 * MIB;
    let h = Hostile::start(
        srv.0.addr,
        Some(read_req(0, MAX_REQ)),
        read_req(1 << 40, 4096),
    );
    until_stalled(&srv, &[&h], bound, Duration::from_secs(20));
    good_client(&srv, 200, Duration::from_secs(20), bound);
    let sent = h.sent();
    let hwm = srv.hwm();
    h.leave();
    let rss = rss_down_to(&srv, base + 16 * MIB, Duration::from_secs(10));
    eprintln!(
        "row 2: baseline {} MiB, VmHWM {} MiB (bound {} MiB), {sent} requests sent, \
         VmRSS {} MiB after the client left",
        base / MIB,
        hwm / MIB,
        bound / MIB,
        rss / MIB
    );
    assert!(hwm <= bound);
}

/// Table row 4: a burst of large requests from several clients (which read their replies),
/// then idle: RSS comes back near the baseline within seconds.
#[test]
fn memory_goes_back_after_a_burst_of_large_requests() {
    let srv = Server::start();
    let addr = srv.0.addr;
    let base = srv.rss();
    let workers: Vec<_> = (0..4u64)
        .map(|i| {
            thread::spawn(move || {
                let (mut c, _) = Client::open(addr, i % 2 == 0);
                let sizes = [MAX_REQ, 3 << 20, 8 << 20, 5 << 20 | 4096, 17 << 20];
                // Pipelined: 8 requests out, then their replies.
                for round in 0..3u64 {
                    let mut cookies = Vec::new();
                    for (k, &len) in sizes.iter().cycle().take(8).enumerate() {
                        let cookie = c.cookie();
                        let off = ((round * 8 + k as u64) * 3 * MIB) % (32 * MIB);
                        c.send(cmd::READ, 0, cookie, off, len, &[]);
                        cookies.push(cookie);
                    }
                    for _ in &cookies {
                        let r = c.read_full_reply();
                        assert_eq!(r.last().unwrap().error(), 0);
                    }
                }
                // Some large writes too (of zeroes, in the last 8 MiB).
                for k in 0..4u64 {
                    assert_eq!(
                        c.write(56 * MIB, &vec![0u8; (2 << 20) + k as usize * 4096]),
                        0
                    );
                }
                c.disconnect();
            })
        })
        .collect();
    let mut peak = 0;
    for w in workers {
        while !w.is_finished() {
            peak = peak.max(srv.rss());
            thread::sleep(Duration::from_millis(10));
        }
        w.join().unwrap();
    }
    let hwm = srv.hwm();
    assert!(
        hwm > base + 32 * MIB,
        "the burst did not happen: VmHWM {hwm}"
    );
    // What stays: the baseline and the export's 2 MiB written, with slack; the loops' pools
    // (8 MiB each) give their buffers back within two trim periods (2 s).
    let bound = base + 8 * MIB;
    let t0 = Instant::now();
    let rss = rss_down_to(&srv, bound, Duration::from_secs(5));
    eprintln!(
        "row 4: baseline {} MiB, VmHWM {} MiB, VmRSS {} MiB {:?} after the burst (bound {} MiB)",
        base / MIB,
        hwm / MIB,
        rss / MIB,
        t0.elapsed(),
        bound / MIB
    );
}

/// A reader waiting for room in its budget still notices a stop: the stop answers what it
/// can, cuts the connection after the grace period (the client reads nothing), and the
/// server is done soon after.
#[test]
fn a_stop_ends_a_connection_stalled_on_its_budget() {
    let srv = TestServer::start(
        Export::memory("test", 64 * MIB, false).unwrap(),
        Config {
            conn_buffer: 0, // the least: one 32 MiB request at a time
            total_buffer: 0,
            shutdown_grace: Duration::from_millis(500),
            ..Config::default()
        },
    );
    let h = Hostile::start(srv.addr, None, read_req(0, MAX_REQ));
    stalled(&h);
    let t0 = Instant::now();
    srv.shutdown();
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(5), "the stop took {took:?}");
    h.leave();
}
