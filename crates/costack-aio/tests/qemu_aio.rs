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
