//! UDP echo benchmark: a synchronous-style costack UDP echo server against a tokio one, on the
//! same machine, in one run, driven by the same client. The UDP counterpart of `echo_bench`.
//!
//! Each server gets one thread (a costack `EventLoop`; a tokio current-thread runtime) and one
//! socket, served by one task: receive a datagram, send it back to its sender. The client gets
//! another thread (a costack loop with one task per simulated client, each with a connected
//! socket of its own). Every client sends a 64-byte request and waits for the echo before
//! sending the next; requests per second are counted over a fixed window after a warm-up, at
//! 1, 16 and 64 clients, alternating which server goes first from round to round (the best
//! round of each is reported). Beside requests per second, each row gives the server thread's
//! CPU time per request, read from `/proc/self/task/<tid>/schedstat`.
//!
//! UDP may drop a datagram (on loopback: when a receive buffer is full). A client that gets no
//! echo within 200 ms sends its request again, with the next sequence number, and counts a
//! loss; echoes of older requests are ignored. The losses are printed: a benchmark with
//! losses measures the retry timer, not the servers.
//!
//! ```sh
//! cargo run --release -p costack-aio --example udp_echo_bench              # 2 s windows, 3 rounds
//! cargo run --release -p costack-aio --example udp_echo_bench -- 1 1       # 1 s, 1 round
//! cargo run --release -p costack-aio --example udp_echo_bench -- 2 3 64    # only 64 clients
//! ```
//!
//! Each row also ends in a `RESULT` line (clients, then req/s and server ns/req of costack and
//! of tokio, then the losses) for `scripts/udp-bench.sh`, which runs this several times in
//! separate processes and reports the medians.

use costack_aio::net::UdpSocket;
use costack_aio::{EventLoop, TaskBuilder};
use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

const REQUEST: usize = 64;
const WARMUP: Duration = Duration::from_millis(300);
/// How long a client waits for an echo before it sends its request again.
const RETRY: Duration = Duration::from_millis(200);

/// A server: its address and the kernel id of its thread.
#[derive(Clone, Copy)]
struct Server {
    addr: SocketAddr,
    tid: i32,
}

/// The CPU time a thread of this process has used, in nanoseconds (`/proc/.../schedstat`).
fn thread_cpu_ns(tid: i32) -> u64 {
    let path = format!("/proc/self/task/{tid}/schedstat");
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

fn start_costack_server() -> Server {
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name("costack-server".into())
        .spawn(move || {
            EventLoop::new().block_on(move || {
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                tx.send(Server {
                    addr: s.local_addr().unwrap(),
                    tid: gettid(),
                })
                .unwrap();
                let mut buf = [0u8; 2048];
                loop {
                    let (n, peer) = s.recv_from(&mut buf).unwrap();
                    s.send_to(&buf[..n], peer).unwrap();
                }
            });
        })
        .unwrap();
    rx.recv().unwrap()
}

fn start_tokio_server() -> Server {
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name("tokio-server".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .unwrap();
            rt.block_on(async move {
                let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                tx.send(Server {
                    addr: s.local_addr().unwrap(),
                    tid: gettid(),
                })
                .unwrap();
                let mut buf = [0u8; 2048];
                loop {
                    let (n, peer) = s.recv_from(&mut buf).await.unwrap();
                    s.send_to(&buf[..n], peer).await.unwrap();
                }
            });
        })
        .unwrap();
    rx.recv().unwrap()
}

/// What one window measured.
#[derive(Clone, Copy, Default)]
struct Sample {
    req_per_s: f64,
    /// The server thread's CPU time per request.
    server_ns_per_req: f64,
    /// Requests sent again because no echo came within `RETRY` (over the whole run).
    losses: u64,
}

/// One client: request, wait for its echo (resending after `RETRY`), until `stop`.
fn client(addr: SocketAddr, c: usize, count: &Cell<u64>, losses: &Cell<u64>, stop: &Cell<bool>) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect(addr).unwrap();
    let mut req = [c as u8; REQUEST];
    let mut back = [0u8; REQUEST];
    let mut seq = 0u64;
    while !stop.get() {
        seq += 1;
        req[..8].copy_from_slice(&seq.to_le_bytes());
        s.send(&req).unwrap();
        loop {
            match costack_aio::timeout(RETRY, || s.recv(&mut back)) {
                Ok(r) => {
                    let n = r.unwrap();
                    if back[..n] == req {
                        break;
                    }
                    // The late echo of a request sent again since: not this one's.
                }
                Err(_) => {
                    losses.set(losses.get() + 1);
                    seq += 1;
                    req[..8].copy_from_slice(&seq.to_le_bytes());
                    s.send(&req).unwrap();
                }
            }
        }
        count.set(count.get() + 1);
    }
}

/// Runs `clients` request/response clients against `server`; what the window measured, after
/// the warm-up.
fn run_client(server: Server, clients: usize, window: Duration) -> Sample {
    let addr = server.addr;
    thread::Builder::new()
        .name("client".into())
        .spawn(move || {
            let lp = EventLoop::builder().stack_size(64 * 1024).build().unwrap();
            lp.block_on(move || {
                let count = Rc::new(Cell::new(0u64));
                let losses = Rc::new(Cell::new(0u64));
                let stop = Rc::new(Cell::new(false));
                let tasks: Vec<_> = (0..clients)
                    .map(|c| {
                        let (count, losses, stop) = (count.clone(), losses.clone(), stop.clone());
                        TaskBuilder::new()
                            .stack_size(64 * 1024)
                            .spawn(move || client(addr, c, &count, &losses, &stop))
                    })
                    .collect();
                costack_aio::sleep(WARMUP);
                let start_count = count.get();
                let cpu0 = thread_cpu_ns(server.tid);
                let t0 = std::time::Instant::now();
                costack_aio::sleep(window);
                let n = count.get() - start_count;
                let cpu = thread_cpu_ns(server.tid) - cpu0;
                let secs = t0.elapsed().as_secs_f64();
                stop.set(true);
                for t in tasks {
                    t.join();
                }
                Sample {
                    req_per_s: n as f64 / secs,
                    server_ns_per_req: cpu as f64 / n.max(1) as f64,
                    losses: losses.get(),
                }
            })
        })
        .unwrap()
        .join()
        .unwrap()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let secs: f64 = args.next().map_or(2.0, |a| a.parse().unwrap());
    let rounds: usize = args.next().map_or(3, |a| a.parse().unwrap());
    let counts: Vec<usize> = match args.next() {
        Some(list) => list.split(',').map(|c| c.parse().unwrap()).collect(),
        None => vec![1, 16, 64],
    };
    let window = Duration::from_secs_f64(secs);
    let costack = start_costack_server();
    let tokio = start_tokio_server();
    println!(
        "UDP echo benchmark: {REQUEST}-byte datagrams, {secs} s windows, best of {rounds} \
         rounds, one server thread each, same client"
    );
    println!(
        "{:>8} {:>14} {:>14} {:>7} {:>16} {:>16} {:>7} {:>7}",
        "clients",
        "costack req/s",
        "tokio req/s",
        "ratio",
        "costack ns/req",
        "tokio ns/req",
        "ratio",
        "losses"
    );
    let best = |a: Sample, b: Sample| {
        let losses = a.losses + b.losses;
        let s = if b.req_per_s > a.req_per_s { b } else { a };
        Sample { losses, ..s }
    };
    for clients in counts {
        let (mut c, mut t) = (Sample::default(), Sample::default());
        for round in 0..rounds {
            if round % 2 == 0 {
                c = best(c, run_client(costack, clients, window));
                t = best(t, run_client(tokio, clients, window));
            } else {
                t = best(t, run_client(tokio, clients, window));
                c = best(c, run_client(costack, clients, window));
            }
        }
        println!(
            "{clients:>8} {:>14.0} {:>14.0} {:>7.3} {:>16.0} {:>16.0} {:>7.3} {:>7}",
            c.req_per_s,
            t.req_per_s,
            c.req_per_s / t.req_per_s,
            c.server_ns_per_req,
            t.server_ns_per_req,
            t.server_ns_per_req / c.server_ns_per_req,
            c.losses + t.losses,
        );
        println!(
            "RESULT {clients} {:.0} {:.0} {:.0} {:.0} {}",
            c.req_per_s,
            c.server_ns_per_req,
            t.req_per_s,
            t.server_ns_per_req,
            c.losses + t.losses
        );
    }
    println!(
        "ratio: costack / tokio for req/s, tokio / costack for the server's CPU time per \
         request (above 1: costack is better)"
    );
}
