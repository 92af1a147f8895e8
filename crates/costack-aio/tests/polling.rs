//! Adaptive polling (`LoopBuilder::poll_max`, `EventLoop::set_poll_max`): off by default, the
//! window's growth and reset as the loop really waits, and that events found while polling
//! are delivered like any other.

use costack_aio::net::TcpListener;
use costack_aio::{sleep, EventLoop};
use std::io::{Read, Write};
use std::time::Duration;

const US: Duration = Duration::from_micros(1);

/// Serves `rounds` 8-byte echoes to a client thread; the loop waits for each request.
fn echo_rounds(lp: &EventLoop, rounds: usize) {
    lp.block_on(move || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_nodelay(true).unwrap();
            for i in 0..rounds as u64 {
                s.write_all(&i.to_le_bytes()).unwrap();
                let mut b = [0; 8];
                s.read_exact(&mut b).unwrap();
                assert_eq!(u64::from_le_bytes(b), i);
            }
        });
        let (mut s, _) = listener.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut b = [0; 8];
        for _ in 0..rounds {
            s.read_exact(&mut b).unwrap();
            s.write_all(&b).unwrap();
        }
        costack_aio::run_blocking(move || client.join().unwrap());
    });
}

/// `n` timer waits of `ms` milliseconds each, in one `block_on`.
fn sleeps(lp: &EventLoop, n: usize, ms: u64) {
    lp.block_on(move || {
        for _ in 0..n {
            sleep(Duration::from_millis(ms));
        }
    });
}

#[test]
fn off_by_default_the_loop_never_polls() {
    let lp = EventLoop::new();
    assert_eq!(lp.poll_max(), Duration::ZERO);
    echo_rounds(&lp, 200);
    sleeps(&lp, 3, 1);
    assert_eq!(lp.poll_count(), 0);
    assert_eq!(lp.poll_window(), Duration::ZERO);
}

#[test]
fn waits_longer_than_the_limit_never_start_polling() {
    let lp = EventLoop::builder().poll_max(10 * US).build().unwrap();
    sleeps(&lp, 5, 2);
    assert_eq!(lp.poll_count(), 0);
    assert_eq!(lp.poll_window(), Duration::ZERO);
}

#[test]
fn each_wait_within_the_limit_doubles_the_window_up_to_the_limit() {
    let lp = EventLoop::builder()
        .poll_max(Duration::from_secs(30))
        .build()
        .unwrap();
    // Eight timer waits of 1 ms: each lasts longer than the window (at most 512 µs here) and
    // less than the limit, so each one doubles it; from the second on, each one polls first.
    sleeps(&lp, 8, 1);
    assert_eq!(lp.poll_window(), 512 * US);
    assert!(lp.poll_count() >= 7, "{}", lp.poll_count());
    // A lower limit clamps the window at once; zero turns polling off.
    lp.set_poll_max(20 * US);
    assert_eq!(lp.poll_window(), 20 * US);
    lp.set_poll_max(Duration::ZERO);
    let before = lp.poll_count();
    sleeps(&lp, 3, 1);
    assert_eq!(lp.poll_count(), before);
    assert_eq!(lp.poll_window(), Duration::ZERO);
}

#[test]
fn a_long_wait_resets_the_window() {
    let lp = EventLoop::builder()
        .poll_max(Duration::from_millis(20))
        .build()
        .unwrap();
    // Waits of 1 ms, well within the limit even on a loaded machine, grow the window ...
    sleeps(&lp, 3, 1);
    assert_eq!(lp.poll_window(), 16 * US);
    // ... and one three times the limit resets it.
    sleeps(&lp, 1, 60);
    assert_eq!(lp.poll_window(), Duration::ZERO);
}

#[test]
fn events_found_while_polling_are_delivered() {
    let lp = EventLoop::builder()
        .poll_max(Duration::from_secs(30))
        .build()
        .unwrap();
    // Grow the window first, so that the echo's waits poll.
    sleeps(&lp, 6, 1);
    let before = lp.poll_count();
    echo_rounds(&lp, 300);
    assert!(lp.poll_count() > before);
    // A message from another thread ends a poll too.
    let h = lp.handle();
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(2));
        h.call_soon(move || tx.send(7).unwrap()).unwrap();
    });
    lp.block_on(move || {
        costack_aio::run_blocking(move || t.join().unwrap());
    });
    assert_eq!(rx.try_recv(), Ok(7));
}
