//! `net::lookup_host` and the name lookups of `connect`/`bind`/`send_to`: names are resolved on
//! the loop's worker pool while the loop runs other tasks, addresses never go there. Only
//! `localhost` (success) and `.invalid` names (failure, RFC 6761) are looked up, so nothing
//! depends on the network.
//!
//! Most tests make the pool's only worker busy with a job that a ticking task releases: a
//! lookup that goes through the pool can then only finish after the ticks, and one that does
//! not go there finishes while the worker is still busy. That makes "on the pool, off the
//! loop's thread" an exact, timing-free check.

#[path = "common/threads.rs"]
mod threads;

use costack_aio::net::{lookup_host, TcpListener, TcpStream, UdpSocket};
use costack_aio::{run_blocking, spawn, timeout, EventLoop, JoinHandle};
use std::cell::Cell;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;
use threads::bounded;

const TICKS: u32 = 20;

/// A loop whose pool has one worker.
fn one_worker_loop() -> EventLoop {
    EventLoop::builder().blocking_threads(1).build().unwrap()
}

/// Occupies the pool's only worker until `release` is sent to (or dropped).
fn occupy_worker() -> (JoinHandle<()>, mpsc::Sender<()>) {
    let (release, wait) = mpsc::channel::<()>();
    let job = spawn(move || {
        run_blocking(move || {
            let _ = wait.recv();
        })
    });
    (job, release)
}

/// A task that yields `TICKS` times, counting, then releases the worker.
fn ticker(release: mpsc::Sender<()>) -> (Rc<Cell<u32>>, JoinHandle<()>) {
    let ticks = Rc::new(Cell::new(0));
    let t = ticks.clone();
    let h = spawn(move || {
        for _ in 0..TICKS {
            costack_aio::yield_now();
            t.set(t.get() + 1);
        }
        drop(release);
    });
    (ticks, h)
}

#[test]
fn localhost_resolves_to_loopback_with_the_port() {
    EventLoop::new().block_on(|| {
        let addrs: Vec<SocketAddr> = lookup_host("localhost:4242").unwrap().collect();
        assert!(!addrs.is_empty());
        assert!(
            addrs
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 4242),
            "{addrs:?}"
        );
        let pair: Vec<SocketAddr> = lookup_host(("localhost", 7)).unwrap().collect();
        assert_eq!(
            pair.iter().map(|a| a.ip()).collect::<Vec<_>>(),
            addrs.iter().map(|a| a.ip()).collect::<Vec<_>>()
        );
        assert!(pair.iter().all(|a| a.port() == 7));
    });
}

#[test]
fn an_invalid_name_fails() {
    EventLoop::new().block_on(|| {
        // Each lookup of an `.invalid` name may ask the resolver (glibc does not know the
        // name is reserved), so there are few of them.
        assert!(lookup_host(("nonexistent.invalid", 80)).is_err());
        assert!(TcpStream::connect("nonexistent.invalid:80").is_err());
    });
}

#[test]
fn a_string_without_a_port_is_invalid_input() {
    EventLoop::new().block_on(|| {
        for bad in ["localhost", "", "host:port", "127.0.0.1"] {
            let e = lookup_host(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad:?}: {e}");
        }
        let none: &[SocketAddr] = &[];
        assert_eq!(lookup_host(none).unwrap().count(), 0);
        assert_eq!(
            TcpStream::connect(none).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    });
}

#[test]
fn a_lookup_waits_on_the_pool_while_other_tasks_run() {
    bounded(60, || {
        one_worker_loop().block_on(a_lookup_waits_on_the_pool_while_other_tasks_run_in_a_task)
    });
}

fn a_lookup_waits_on_the_pool_while_other_tasks_run_in_a_task() {
    let (job, release) = occupy_worker();
    let (ticks, t) = ticker(release);
    // Queued behind the busy worker: it can only finish after the ticker released it. Had
    // it run on the loop's thread, it would have returned before the ticker's first tick.
    assert!(lookup_host("nonexistent.invalid:80").is_err());
    assert_eq!(ticks.get(), TICKS);
    job.join();
    t.join();
    // The same for a lookup that succeeds, and for connect given a name.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accept = spawn(move || listener.accept().map(|_| ()).unwrap());
    let (job, release) = occupy_worker();
    let (ticks, t) = ticker(release);
    // localhost may give ::1 before 127.0.0.1; connect tries each in turn.
    let s = TcpStream::connect(("localhost", port)).unwrap();
    assert_eq!(ticks.get(), TICKS);
    assert_eq!(s.peer_addr().unwrap().port(), port);
    accept.join();
    job.join();
    t.join();
}

#[test]
fn addresses_never_go_to_the_pool() {
    bounded(60, || {
        one_worker_loop().block_on(addresses_never_go_to_the_pool_in_a_task)
    });
}

fn addresses_never_go_to_the_pool_in_a_task() {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let addr = listener.local_addr().unwrap();
    let (job, release) = occupy_worker();
    costack_aio::yield_now(); // the worker is busy now
    let accept = spawn(move || listener.accept().map(|_| ()).unwrap());
    // Each would wait for the worker, and time out, if it went to the pool.
    let r = timeout(Duration::from_secs(5), || {
        let v: Vec<_> = lookup_host("127.0.0.1:80").unwrap().collect();
        assert_eq!(v, [SocketAddr::from(([127, 0, 0, 1], 80))]);
        let v: Vec<_> = lookup_host(("::1", 80)).unwrap().collect();
        assert_eq!(v, ["[::1]:80".parse::<SocketAddr>().unwrap()]);
        let v: Vec<_> = lookup_host((IpAddr::V4(Ipv4Addr::LOCALHOST), 9))
            .unwrap()
            .collect();
        assert_eq!(v, [SocketAddr::from(([127, 0, 0, 1], 9))]);
        let s = TcpStream::connect(format!("127.0.0.1:{}", addr.port())).unwrap();
        assert_eq!(s.peer_addr().unwrap(), addr);
        let u = UdpSocket::bind(String::from("127.0.0.1:0")).unwrap();
        u.connect(("127.0.0.1", addr.port())).unwrap();
        let by_ref: &SocketAddr = &addr; // references are addresses too
        u.send_to(b"x", by_ref).unwrap();
    });
    assert!(r.is_ok(), "an address went through the busy pool");
    accept.join();
    drop(release);
    job.join();
}

#[test]
fn a_lookup_cut_by_timeout_leaves_the_queue() {
    bounded(60, || {
        one_worker_loop().block_on(a_lookup_cut_by_timeout_leaves_the_queue_in_a_task)
    });
}

fn a_lookup_cut_by_timeout_leaves_the_queue_in_a_task() {
    let (job, release) = occupy_worker();
    costack_aio::yield_now();
    let r = timeout(Duration::from_millis(20), || lookup_host("localhost:1"));
    assert!(
        r.is_err(),
        "the only worker is busy, yet the lookup finished"
    );
    drop(release);
    job.join();
    // The pool works on: a later lookup goes through.
    assert!(lookup_host("localhost:1").unwrap().count() > 0);
}

#[test]
fn plain_threads_resolve_on_the_calling_thread() {
    bounded(60, || {
        let addrs: Vec<SocketAddr> = lookup_host("localhost:99").unwrap().collect();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 99));
        assert!(lookup_host("nonexistent.invalid:99").is_err());
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let s = TcpStream::connect(("localhost", port)).unwrap();
        assert_eq!(s.peer_addr().unwrap().port(), port);
    });
}
