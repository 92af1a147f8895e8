//! The thread-safe coroutine lock.

use costack_aio::sync::Mutex;
use costack_aio::{spawn, yield_now, EventLoop};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// 4 threads, each with its loop and 100 coroutines, incrementing one counter under one lock.
#[test]
fn four_loops_of_100_coroutines_share_one_lock() {
    const THREADS: usize = 4;
    const TASKS: usize = 100;
    const ROUNDS: usize = 50;
    let counter = Arc::new(Mutex::new(0usize));
    let barrier = Arc::new(Barrier::new(THREADS));
    let t0 = Instant::now();
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let counter = counter.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                let lp = EventLoop::builder().stack_size(64 * 1024).build().unwrap();
                barrier.wait();
                lp.block_on(move || {
                    let tasks: Vec<_> = (0..TASKS)
                        .map(|i| {
                            let counter = counter.clone();
                            spawn(move || {
                                for r in 0..ROUNDS {
                                    let mut n = counter.lock();
                                    let seen = *n;
                                    if (i + r) % 3 == 0 {
                                        yield_now(); // others, here and on other loops, queue up
                                    }
                                    *n = seen + 1;
                                }
                            })
                        })
                        .collect();
                    tasks.into_iter().for_each(|t| t.join());
                });
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(*counter.lock(), THREADS * TASKS * ROUNDS);
    assert!(t0.elapsed() < Duration::from_secs(60));
}

#[test]
fn plain_threads_and_tasks_share_the_lock() {
    let m = Arc::new(Mutex::new(Vec::new()));
    let m2 = m.clone();
    let g = m.lock();
    let t = thread::spawn(move || {
        m2.lock().push("thread"); // blocks the thread until handed the lock
    });
    thread::sleep(Duration::from_millis(5));
    let lp = EventLoop::new();
    let m3 = m.clone();
    let task = lp.spawn(move || m3.lock().push("task"));
    lp.block_on(yield_now); // the task queues (behind the thread, most likely)
    drop(g);
    task.join();
    t.join().unwrap();
    let mut got = m.lock().clone();
    got.sort();
    assert_eq!(got, ["task", "thread"]);
}

#[test]
fn a_cancelled_waiter_passes_the_lock_on() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let m = Arc::new(Mutex::new(0));
        let g = m.lock();
        let (ma, mb) = (m.clone(), m.clone());
        let a = spawn(move || *ma.lock() += 1);
        let b = spawn(move || *mb.lock() += 10);
        yield_now(); // both wait, a first
        drop(g); // handed to a, which has not run yet...
        a.cancel(); // ...and is dropped: it passes the lock to b
        b.join();
        assert_eq!(*m.lock(), 10);
        assert!(m.try_lock().is_some());
    });
}

#[test]
fn guards_unlock_on_panic() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let m = Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let r = spawn(move || {
            let _g = m2.lock();
            panic!("while holding the lock");
        })
        .try_join();
        match r {
            Err(costack_aio::JoinError::Panicked(p)) => {
                assert_eq!(p.downcast_ref::<&str>(), Some(&"while holding the lock"))
            }
            other => panic!("expected the task's panic, got {other:?}"),
        }
        assert_eq!(*m.lock(), 1);
    });
}

#[test]
fn mutex_is_send_and_sync() {
    fn assert_sync<T: Send + Sync>() {}
    assert_sync::<Mutex<Vec<u8>>>();
}
