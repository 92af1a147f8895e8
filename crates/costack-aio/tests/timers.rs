//! Timers: never early, in deadline order; timeouts; wakeable sleeps.

use costack_aio::net::{TcpListener, TcpStream};
use costack_aio::sync::Mutex;
use costack_aio::{sleep, sleep_until, spawn, timeout, EventLoop, WakeableSleep};
use std::cell::RefCell;
use std::io::{Read, Write};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn timers_never_fire_early_and_fire_in_deadline_order() {
    let lp = EventLoop::new();
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    lp.block_on(move || {
        // Far enough ahead that every task is asleep before the first deadline, even on a
        // loaded machine.
        let start = Instant::now() + Duration::from_millis(100);
        // Deadlines in scrambled order, some equal.
        let hs: Vec<_> = (0..200u64)
            .map(|i| {
                let slot = (i * 7919) % 50;
                let deadline = start + Duration::from_micros(400 * slot);
                let l = l.clone();
                spawn(move || {
                    assert!(
                        Instant::now() < deadline,
                        "the test started too late to check"
                    );
                    sleep_until(deadline);
                    let now = Instant::now();
                    assert!(now >= deadline, "woke {:?} early", deadline - now);
                    l.borrow_mut().push((deadline, i));
                })
            })
            .collect();
        hs.into_iter().for_each(|h| h.join());
    });
    let log = log.borrow();
    assert_eq!(log.len(), 200);
    let deadlines: Vec<_> = log.iter().map(|e| e.0).collect();
    let mut sorted = deadlines.clone();
    sorted.sort();
    assert_eq!(deadlines, sorted, "woken in deadline order");
    // Equal deadlines: in the order the sleeps started.
    for w in log.windows(2) {
        if w[0].0 == w[1].0 {
            assert!(w[0].1 < w[1].1);
        }
    }
}

#[test]
fn sleep_is_not_early_outside_coroutines_either() {
    let t0 = Instant::now();
    sleep(Duration::from_millis(3));
    assert!(t0.elapsed() >= Duration::from_millis(3));
}

fn connected_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    (c, s)
}

#[test]
fn timeout_abandons_a_blocked_read_cleanly_and_the_socket_stays_usable() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let (mut a, mut b) = connected_pair();
        let mut buf = [0u8; 16];
        let t0 = Instant::now();
        let r = timeout(Duration::from_millis(20), || a.read(&mut buf));
        assert!(r.is_err(), "the read had nothing to read");
        assert!(t0.elapsed() >= Duration::from_millis(20));
        // The same socket, afterwards: nothing was lost or consumed.
        b.write_all(b"after").unwrap();
        let n = timeout(Duration::from_secs(5), || a.read(&mut buf))
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"after");
        // And a read that completes in time is untouched by its timeout.
        let w = spawn(move || {
            sleep(Duration::from_millis(2));
            b.write_all(b"in time").unwrap();
            b
        });
        let n = timeout(Duration::from_secs(5), || a.read(&mut buf))
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"in time");
        drop(w.join());
    });
}

#[test]
fn timeout_runs_destructors_of_the_abandoned_code() {
    struct Flag(Rc<RefCell<bool>>);
    impl Drop for Flag {
        fn drop(&mut self) {
            *self.0.borrow_mut() = true;
        }
    }
    let lp = EventLoop::new();
    lp.block_on(|| {
        let dropped = Rc::new(RefCell::new(false));
        let d = dropped.clone();
        let r = timeout(Duration::from_millis(1), move || {
            let _f = Flag(d);
            sleep(Duration::from_secs(3600));
        });
        assert!(r.is_err());
        assert!(*dropped.borrow());
    });
}

#[test]
fn nested_timeouts_report_to_the_right_scope() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        // The inner deadline passes first: the inner scope returns Elapsed, the outer goes on.
        let r = timeout(Duration::from_secs(5), || {
            let inner = timeout(Duration::from_millis(2), || {
                sleep(Duration::from_secs(3600))
            });
            assert!(inner.is_err());
            "outer finished"
        });
        assert_eq!(r, Ok("outer finished"));
        // The outer deadline passes first: the inner scope is unwound through.
        let mut inner_returned = false;
        let r = timeout(Duration::from_millis(2), || {
            let _ = timeout(Duration::from_secs(5), || sleep(Duration::from_secs(3600)));
            inner_returned = true;
        });
        assert!(r.is_err());
        assert!(!inner_returned);
        // A wait that starts after the deadline is interrupted at once; code that does not
        // wait is not.
        let r = timeout(Duration::ZERO, || 5);
        assert_eq!(r, Ok(5));
        let r = timeout(Duration::ZERO, || sleep(Duration::from_millis(1)));
        assert!(r.is_err());
    });
}

#[test]
fn timeout_abandons_a_lock_wait_and_leaves_the_queue() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let m = Arc::new(Mutex::new(0));
        let g = m.lock();
        let m2 = m.clone();
        let waiter = spawn(move || timeout(Duration::from_millis(5), || *m2.lock() += 1));
        assert!(waiter.join().is_err());
        drop(g);
        *m.lock() += 10; // free: the abandoned waiter did not keep a place in the queue
        assert_eq!(*m.lock(), 10);
    });
}

#[test]
fn wakeable_sleep_ends_early_and_remembers_an_early_wake() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let s = WakeableSleep::new();
        // A wake before the sleep is not lost.
        s.wake();
        let t0 = Instant::now();
        assert!(s.sleep(Duration::from_secs(10)));
        assert!(t0.elapsed() < Duration::from_secs(5));
        // Wakes do not count up: two wakes end one sleep.
        s.wake();
        s.wake();
        assert!(s.sleep(Duration::from_secs(10)));
        assert!(
            !s.sleep(Duration::from_millis(2)),
            "nothing pending: it times out"
        );
        // Ended early by another task.
        let s2 = s.clone();
        let w = spawn(move || {
            sleep(Duration::from_millis(2));
            s2.wake();
        });
        let t0 = Instant::now();
        assert!(s.sleep(Duration::from_secs(10)));
        assert!(t0.elapsed() < Duration::from_secs(5));
        w.join();
        // Ended early by another thread.
        let s3 = s.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(2));
            s3.wake();
        });
        assert!(s.sleep(Duration::from_secs(10)));
        t.join().unwrap();
    });
}

#[test]
fn wakeable_sleep_outside_coroutines_blocks_the_thread() {
    let s = WakeableSleep::new();
    let s2 = s.clone();
    let t = std::thread::spawn(move || s2.sleep(Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(5));
    s.wake();
    assert!(t.join().unwrap());
    assert!(!s.sleep(Duration::from_millis(1)));
}
