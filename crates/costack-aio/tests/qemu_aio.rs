//! QEMU's `tests/unit/test-aio.c` coroutine cases, in our terms.

use costack_aio::{call_soon, run_blocking, spawn, suspend, EventLoop, WakeableSleep};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// The address of a local: where the stack is at this depth.
#[inline(never)]
fn stack_mark() -> usize {
    let x = 0u8;
    std::hint::black_box(&x) as *const u8 as usize
}

#[test]
fn two_coroutines_hand_control_to_each_other_25000_times_without_growing_the_stack() {
    const ROUNDS: usize = 25_000;
    let lp = EventLoop::new();
    let (switches, spreads, native) = lp.block_on(|| {
        let a_sleep = WakeableSleep::new();
        let b_sleep = WakeableSleep::new();
        let switches = Rc::new(Cell::new(0usize));
        // Where the loop's own (native) stack is when it runs a callback, min and max.
        let native = Rc::new(Cell::new((usize::MAX, 0usize)));
        let player = |me: WakeableSleep, other: WakeableSleep, first: bool| {
            let switches = switches.clone();
            let native = native.clone();
            spawn(move || {
                let (mut lo, mut hi) = (usize::MAX, 0);
                for i in 0..ROUNDS {
                    if !(first && i == 0) {
                        me.sleep_until_woken();
                    }
                    let m = stack_mark();
                    lo = lo.min(m);
                    hi = hi.max(m);
                    switches.set(switches.get() + 1);
                    if i % 1000 == 0 {
                        let native = native.clone();
                        call_soon(move || {
                            let m = stack_mark();
                            let (lo, hi) = native.get();
                            native.set((lo.min(m), hi.max(m)));
                        });
                    }
                    other.wake();
                }
                hi - lo
            })
        };
        let a = player(a_sleep.clone(), b_sleep.clone(), true);
        let b = player(b_sleep, a_sleep, false);
        let spreads = (a.join(), b.join());
        let (lo, hi) = native.get();
        (switches.get(), spreads, hi - lo)
    });
    assert_eq!(switches, 2 * ROUNDS);
    assert_eq!(
        spreads,
        (0, 0),
        "each coroutine is at the same depth every round"
    );
    assert_eq!(native, 0, "the loop's stack does not grow either");
}

#[test]
fn a_wake_from_a_worker_thread_runs_the_coroutine_on_its_home_loop() {
    let lp = EventLoop::new();
    let home = thread::current().id();
    let (before, after, thread_after, woken_from) = lp.block_on(|| {
        let before = costack::current().unwrap().id();
        let woken_from = Rc::new(Cell::new(None));
        let mut worker = None;
        suspend(|w| {
            worker = Some(thread::spawn(move || {
                thread::sleep(Duration::from_millis(5));
                w.wake();
                thread::current().id()
            }));
        });
        woken_from.set(Some(worker.unwrap().join().unwrap()));
        (
            before,
            costack::current().unwrap().id(),
            thread::current().id(),
            woken_from.get().unwrap(),
        )
    });
    assert_eq!(before, after, "the same coroutine");
    assert_eq!(thread_after, home, "resumed on the loop's thread");
    assert_ne!(woken_from, home, "woken from another thread");
}

#[test]
fn many_cross_thread_wakes_each_resume_their_own_task() {
    let lp = EventLoop::new();
    let n = lp.block_on(|| {
        let hs: Vec<_> = (0..200)
            .map(|i| {
                spawn(move || {
                    let mut t = None;
                    suspend(|w| {
                        t = Some(thread::spawn(move || {
                            thread::sleep(Duration::from_micros(100 * (i % 10)));
                            w.wake();
                        }));
                    });
                    t.unwrap().join().unwrap();
                    i
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join()).sum::<u64>()
    });
    assert_eq!(n, (0..200).sum());
}

#[test]
fn run_blocking_returns_the_workers_value() {
    let lp = EventLoop::new();
    let (v, on) = lp.block_on(|| run_blocking(|| (40 + 2, thread::current().id())));
    assert_eq!(v, 42);
    assert_ne!(on, thread::current().id());
}

#[test]
fn run_blocking_continues_a_panic_in_the_task() {
    let lp = EventLoop::new();
    let r = lp.block_on(|| {
        catch_unwind(AssertUnwindSafe(|| {
            run_blocking(|| -> u32 { panic!("worker failed") })
        }))
    });
    let p = r.unwrap_err();
    assert_eq!(p.downcast_ref::<&str>(), Some(&"worker failed"));
}

#[test]
fn run_blocking_keeps_the_loop_serving_and_the_pool_bounded() {
    let lp = EventLoop::builder().blocking_threads(4).build().unwrap();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let ticks = Rc::new(Cell::new(0));
    let (r, p, t) = (running.clone(), peak.clone(), ticks.clone());
    let t0 = Instant::now();
    let total = lp.block_on(move || {
        // A task that keeps ticking while the blocking work runs.
        let ticker = spawn(move || {
            for _ in 0..10 {
                costack_aio::sleep(Duration::from_millis(2));
                t.set(t.get() + 1);
            }
        });
        let jobs: Vec<_> = (0..16u64)
            .map(|i| {
                let (r, p) = (r.clone(), p.clone());
                spawn(move || {
                    run_blocking(move || {
                        let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                        p.fetch_max(now, Ordering::SeqCst);
                        thread::sleep(Duration::from_millis(10));
                        r.fetch_sub(1, Ordering::SeqCst);
                        i
                    })
                })
            })
            .collect();
        let total: u64 = jobs.into_iter().map(|j| j.join()).sum();
        ticker.join();
        total
    });
    assert_eq!(total, (0..16).sum());
    assert_eq!(
        peak.load(Ordering::SeqCst),
        4,
        "at most 4 workers at once, and all 4 used"
    );
    assert_eq!(ticks.get(), 10, "the loop kept serving its other task");
    // 16 jobs of 10 ms on 4 threads take 4 rounds.
    assert!(t0.elapsed() >= Duration::from_millis(40));
}

#[test]
fn run_blocking_outside_a_coroutine_runs_inline() {
    assert_eq!(
        run_blocking(|| thread::current().id()),
        thread::current().id()
    );
}

// ---------------------------------------------------------------------------------------------
// `aio_poll` progress (test-aio's `test_notify`, `test_timer_schedule`, the event-notifier cases
// with a socket in place of the notifier), with `EventLoop::poll`.

#[test]
fn poll_on_an_idle_loop_makes_no_progress_and_a_blocking_one_does_not_hang() {
    let lp = EventLoop::new();
    assert!(!lp.poll(false));
    let t0 = Instant::now();
    assert!(!lp.poll(true), "nothing could ever happen: no wait");
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(!lp.poll(false));
}

#[test]
fn poll_runs_a_queued_callback_once_and_reports_it() {
    let lp = EventLoop::new();
    let n = Rc::new(Cell::new(0));
    let c = n.clone();
    lp.call_soon(move || c.set(c.get() + 1));
    assert!(lp.poll(false));
    assert_eq!(n.get(), 1);
    assert!(!lp.poll(false));
    assert_eq!(n.get(), 1);
}

#[test]
fn poll_enters_each_ready_task_once_per_turn() {
    let lp = EventLoop::new();
    let steps = Rc::new(Cell::new(0));
    let s = steps.clone();
    let h = lp.spawn(move || {
        for _ in 0..3 {
            s.set(s.get() + 1);
            costack_aio::yield_now();
        }
        s.set(s.get() + 1);
    });
    for turn in 1..=4 {
        assert!(lp.poll(false));
        assert_eq!(steps.get(), turn, "one step per turn");
    }
    assert!(h.is_finished());
    assert!(!lp.poll(false));
}

#[test]
fn poll_on_a_sleeping_task_waits_for_its_timer_only_when_blocking() {
    let lp = EventLoop::new();
    let t0 = Instant::now();
    let h = lp.spawn(|| costack_aio::sleep(Duration::from_millis(10)));
    assert!(lp.poll(false), "the task started");
    assert!(!lp.poll(false), "it sleeps: nothing to do");
    assert!(!h.is_finished());
    let mut progress = 0;
    while !h.is_finished() {
        if lp.poll(true) {
            progress += 1;
        }
    }
    assert_eq!(progress, 1, "the timer woke the task, which finished");
    assert!(t0.elapsed() >= Duration::from_millis(10));
    assert!(!lp.poll(false));
}

#[test]
fn poll_dispatches_readiness_to_the_task_that_waits_for_it() {
    use costack_aio::net::{TcpListener, TcpStream};
    use std::io::{Read, Write};
    let lp = EventLoop::new();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (mut server, _) = l.accept().unwrap();
    let got = Rc::new(Cell::new(0u8));
    let g = got.clone();
    let h = lp.spawn(move || {
        let mut b = [0u8; 1];
        server.read_exact(&mut b).unwrap();
        g.set(b[0]);
    });
    assert!(lp.poll(false), "the task started and waits for the socket");
    assert!(!lp.poll(false), "nothing to read yet");
    client.write_all(&[42]).unwrap(); // outside any coroutine: a plain blocking write
    assert!(lp.poll(true), "the readiness resumed the task");
    assert!(h.is_finished());
    assert_eq!(got.get(), 42);
}

#[test]
fn a_blocking_poll_waits_for_a_call_from_another_thread() {
    let lp = EventLoop::new();
    let handle = lp.handle();
    let n = Rc::new(Cell::new(0));
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let t = thread::spawn(move || {
        rx.recv().unwrap(); // until the loop is about to wait
        handle.call_soon(|| {}).unwrap();
    });
    let c = n.clone();
    lp.call_soon(move || {
        c.set(1);
        tx.send(()).unwrap();
    });
    assert!(lp.poll(false));
    assert_eq!(n.get(), 1);
    let t0 = Instant::now();
    assert!(lp.poll(true), "the other thread's callback ran");
    assert!(t0.elapsed() < Duration::from_secs(10));
    t.join().unwrap();
    assert!(!lp.poll(false));
}

#[test]
fn poll_inside_a_task_is_refused_with_a_clear_panic() {
    let lp = Rc::new(EventLoop::new());
    let l = lp.clone();
    let r = lp.block_on(move || catch_unwind(AssertUnwindSafe(|| l.poll(false))));
    let msg = r.unwrap_err().downcast::<&str>().unwrap();
    assert!(msg.contains("inside a coroutine"), "{msg}");
}

#[test]
fn a_blocking_poll_takes_a_message_sent_before_the_last_handle_was_dropped() {
    let lp = EventLoop::new();
    let n = Arc::new(AtomicUsize::new(0));
    let handle = lp.handle();
    let c = n.clone();
    thread::spawn(move || {
        handle
            .call_soon(move || {
                c.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        // `handle` is dropped here: nobody else can reach the loop.
    })
    .join()
    .unwrap();
    assert!(lp.poll(true));
    assert_eq!(n.load(Ordering::SeqCst), 1);
    assert!(!lp.poll(true), "nothing could happen any more: no wait");
}
