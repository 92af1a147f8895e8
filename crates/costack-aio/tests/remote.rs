//! Across threads: loop handles, wakers (and what a second wake does), cross-loop joins.

use costack_aio::{sleep, spawn, suspend, EventLoop, JoinError, Waker};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

#[test]
fn handles_run_closures_on_the_loop_thread_from_many_threads() {
    let lp = EventLoop::new();
    let home = thread::current().id();
    let count = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let h = lp.handle();
            let c = count.clone();
            thread::spawn(move || {
                for _ in 0..1000 {
                    let c = c.clone();
                    h.call_soon(move || {
                        assert_eq!(thread::current().id(), home);
                        c.fetch_add(1, Ordering::Relaxed);
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    let c = count.clone();
    lp.block_on(move || {
        let mut steps = 0;
        while c.load(Ordering::Relaxed) < 4000 {
            steps += 1;
            assert!(
                steps < 30_000,
                "the closures did not all run within 30 000 sleeps of 1 ms"
            );
            sleep(Duration::from_millis(1));
        }
    });
    senders.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(count.load(Ordering::Relaxed), 4000);
}

#[test]
fn a_handle_spawns_tasks_whose_results_come_back_to_any_thread() {
    // The loop runs on its own thread; the test thread is the "other" one.
    let (tx, rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let loop_thread = thread::spawn(move || {
        let lp = EventLoop::new();
        tx.send(lp.handle()).unwrap();
        lp.block_on(move || {
            while stop_rx.try_recv().is_err() {
                sleep(Duration::from_millis(1));
            }
        });
    });
    let h = rx.recv().unwrap();
    let on = h.spawn(|| thread::current().id()).join();
    assert_ne!(on, thread::current().id());
    // A panic comes back as a panic.
    let r = h.spawn(|| -> u8 { panic!("remote boom") }).try_join();
    match r {
        Err(JoinError::Panicked(p)) => assert_eq!(p.downcast_ref::<&str>(), Some(&"remote boom")),
        other => panic!("expected the task's panic, got {other:?}"),
    }
    // Tasks spawned remotely can wait on the loop like any other.
    let v = h
        .spawn(|| {
            sleep(Duration::from_millis(2));
            costack_aio::spawn(|| 20).join() + 1
        })
        .join();
    assert_eq!(v, 21);
    stop_tx.send(()).unwrap();
    loop_thread.join().unwrap();
    // The loop is gone: spawning reports it.
    assert!(h.is_closed());
    assert!(h.call_soon(|| ()).is_err());
    assert!(matches!(
        h.spawn(|| 1).try_join(),
        Err(JoinError::Cancelled)
    ));
}

#[test]
fn a_task_joins_a_task_of_another_loop() {
    let (tx, rx) = mpsc::channel();
    let other = thread::spawn(move || {
        let lp = EventLoop::new();
        tx.send(lp.handle()).unwrap();
        lp.block_on(|| sleep(Duration::from_millis(200)));
    });
    let h = rx.recv().unwrap();
    let lp = EventLoop::new();
    let ticks = Rc::new(Cell::new(0));
    let t = ticks.clone();
    let v = lp.block_on(move || {
        let ticker = spawn(move || {
            for _ in 0..3 {
                sleep(Duration::from_millis(1));
                t.set(t.get() + 1);
            }
        });
        let r = h
            .spawn(|| {
                sleep(Duration::from_millis(20));
                thread::current().id()
            })
            .join(); // yields this task; this loop keeps running the ticker
        ticker.join();
        r
    });
    assert_ne!(v, thread::current().id());
    assert_eq!(ticks.get(), 3);
    other.join().unwrap();
}

/// A second wake of the same wait does nothing; a wake of a wait that is over never ends a
/// later one.
#[test]
fn a_second_wake_of_the_same_wait_is_ignored() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let resumed = Rc::new(Cell::new(0));
        let stored: Rc<RefCell<Vec<Waker>>> = Rc::default();
        let (r, s) = (resumed.clone(), stored.clone());
        let sleeper = spawn(move || {
            suspend(|w| s.borrow_mut().push(w));
            r.set(r.get() + 1);
            suspend(|w| s.borrow_mut().push(w));
            r.set(r.get() + 1);
        });
        costack_aio::yield_now();
        let first = stored.borrow()[0].clone();
        // Twice, from two threads, for the first wait.
        let (a, b) = (first.clone(), first.clone());
        thread::spawn(move || a.wake()).join().unwrap();
        thread::spawn(move || b.wake()).join().unwrap();
        sleep(Duration::from_millis(5));
        assert_eq!(resumed.get(), 1, "resumed once");
        assert_eq!(stored.borrow().len(), 2, "and is in its second wait");
        // The first wait's waker again, locally and from a thread: the second wait goes on.
        first.wake();
        let c = first.clone();
        thread::spawn(move || c.wake()).join().unwrap();
        sleep(Duration::from_millis(5));
        assert_eq!(resumed.get(), 1, "a stale waker does not end a later wait");
        let second = stored.borrow()[1].clone();
        second.wake();
        second.wake();
        sleeper.join();
        assert_eq!(resumed.get(), 2);
    });
}

#[test]
fn waking_a_cancelled_task_or_a_dropped_loop_is_harmless() {
    let lp = EventLoop::new();
    let w = lp.block_on(|| {
        let slot: Rc<RefCell<Option<Waker>>> = Rc::default();
        let s = slot.clone();
        let h = spawn(move || suspend(|w| *s.borrow_mut() = Some(w)));
        costack_aio::yield_now();
        h.cancel();
        let w = slot.borrow_mut().take().unwrap();
        w.wake(); // the task is gone
        let w2 = w.clone();
        thread::spawn(move || w2.wake()).join().unwrap();
        sleep(Duration::from_millis(2));
        w
    });
    drop(lp);
    w.wake(); // the loop is gone
    thread::spawn(move || w.wake()).join().unwrap();
}

/// Outside any coroutine, `suspend` parks the thread until the waker is woken from another
/// thread: it returns only after the waking thread's wake, and sees what that thread did
/// before it.
#[test]
fn suspend_outside_a_coroutine_parks_the_thread() {
    const DELAY: Duration = Duration::from_millis(50);
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let before_wake = Arc::new(AtomicUsize::new(0));
    let mut t = None;
    let t0 = std::time::Instant::now();
    suspend(|w| {
        let (log, before_wake) = (log.clone(), before_wake.clone());
        t = Some(thread::spawn(move || {
            thread::sleep(DELAY);
            before_wake.store(42, Ordering::Relaxed);
            log.lock().unwrap().push("waker: waking");
            w.wake();
        }))
    });
    let elapsed = t0.elapsed();
    log.lock().unwrap().push("main: suspend returned");
    assert!(
        elapsed >= DELAY,
        "returned after {elapsed:?}, before the wake"
    );
    assert_eq!(
        before_wake.load(Ordering::Relaxed),
        42,
        "the wake publishes what the waking thread did before it"
    );
    assert_eq!(
        *log.lock().unwrap(),
        ["waker: waking", "main: suspend returned"]
    );
    t.unwrap().join().unwrap();
}

#[test]
fn current_handle_is_the_loops() {
    assert!(costack_aio::current_handle().is_none());
    let lp = EventLoop::new();
    let h = costack_aio::current_handle().unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let d = done.clone();
    h.call_soon(move || {
        d.store(1, Ordering::SeqCst);
    })
    .unwrap();
    lp.block_on(|| sleep(Duration::from_millis(1)));
    assert_eq!(done.load(Ordering::SeqCst), 1);
}
