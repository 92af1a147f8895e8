//! Echo benchmark: the synchronous-style costack server of `examples/echo.rs` against a tokio
//! echo server, on the same machine, in one run, driven by the same client.
//!
//! Each server gets one thread (a costack `EventLoop`; a tokio current-thread runtime), the
//! client gets another (a costack loop with one task per connection). Every connection sends a
//! 64-byte request and waits for the echo before sending the next; requests per second are
//! counted over a fixed window after a warm-up, at 1, 64 and 1 000 connections, alternating
//! the servers over several rounds (the best round of each is reported). Beside requests per
//! second, each row gives the server thread's CPU time per request, read from
//! `/proc/self/task/<tid>/schedstat`: on a machine where the client shares the cores with the
//! server (and with whatever else runs), that is the steadier measure of the server's cost.
//!
//! ```sh
//! cargo run --release -p costack-aio --example echo_bench            # 2 s windows, 3 rounds
//! cargo run --release -p costack-aio --example echo_bench -- 1 1     # 1 s, 1 round
//! cargo run --release -p costack-aio --example echo_bench -- 2 3 1000 # only 1 000 connections
//! ```

#[path = "echo.rs"]
#[allow(dead_code)]
mod echo;

use costack_aio::net::{TcpListener, TcpStream};
use costack_aio::{EventLoop, TaskBuilder};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

const REQUEST: usize = 64;
const WARMUP: Duration = Duration::from_millis(300);

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
            let lp = EventLoop::builder()
                .stack_size(echo::CONNECTION_STACK)
                .build()
                .unwrap();
            let _ = lp.block_on(move || {
                let l = TcpListener::bind("127.0.0.1:0").unwrap();
                tx.send(Server {
                    addr: l.local_addr().unwrap(),
                    tid: gettid(),
                })
                .unwrap();
                echo::serve(l)
            });
        })
        .unwrap();
    rx.recv().unwrap()
}

fn start_tokio_server() -> Server {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name("tokio-server".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(Server {
                    addr: l.local_addr().unwrap(),
                    tid: gettid(),
                })
                .unwrap();
                loop {
                    let (mut s, _) = l.accept().await.unwrap();
                    s.set_nodelay(true).unwrap();
                    tokio::spawn(async move {
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            let n = match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    });
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
}

/// Runs `conns` request/response connections against `server`; what the window measured,
/// after the warm-up.
fn run_client(server: Server, conns: usize, window: Duration) -> Sample {
    let addr = server.addr;
    thread::Builder::new()
        .name("client".into())
        .spawn(move || {
            let lp = EventLoop::builder().stack_size(64 * 1024).build().unwrap();
            lp.block_on(move || {
                let count = Rc::new(Cell::new(0u64));
                let stop = Rc::new(Cell::new(false));
                let tasks: Vec<_> = (0..conns)
                    .map(|c| {
                        let (count, stop) = (count.clone(), stop.clone());
                        TaskBuilder::new().stack_size(64 * 1024).spawn(move || {
                            let mut s = TcpStream::connect(addr).unwrap();
                            s.set_nodelay(true).unwrap();
                            let req = [c as u8; REQUEST];
                            let mut back = [0u8; REQUEST];
                            while !stop.get() {
                                s.write_all(&req).unwrap();
                                s.read_exact(&mut back).unwrap();
                                assert_eq!(back, req);
                                count.set(count.get() + 1);
                            }
                        })
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
        None => vec![1, 64, 1000],
    };
    let window = Duration::from_secs_f64(secs);
    let costack = start_costack_server();
    let tokio = start_tokio_server();
    println!(
        "echo benchmark: {REQUEST}-byte requests, {secs} s windows, best of {rounds} rounds, \
         one server thread each, same client"
    );
    println!(
        "{:>12} {:>14} {:>14} {:>7} {:>16} {:>16} {:>7}",
        "connections",
        "costack req/s",
        "tokio req/s",
        "ratio",
        "costack ns/req",
        "tokio ns/req",
        "ratio"
    );
    let best = |a: Sample, b: Sample| if b.req_per_s > a.req_per_s { b } else { a };
    for conns in counts {
        let (mut c, mut t) = (Sample::default(), Sample::default());
        for _ in 0..rounds {
            c = best(c, run_client(costack, conns, window));
            t = best(t, run_client(tokio, conns, window));
        }
        println!(
            "{conns:>12} {:>14.0} {:>14.0} {:>7.3} {:>16.0} {:>16.0} {:>7.3}",
            c.req_per_s,
            t.req_per_s,
            c.req_per_s / t.req_per_s,
            c.server_ns_per_req,
            t.server_ns_per_req,
            t.server_ns_per_req / c.server_ns_per_req,
        );
    }
    println!(
        "ratio: costack / tokio for req/s, tokio / costack for the server's CPU time per \
         request (above 1: costack is better)"
    );
}
