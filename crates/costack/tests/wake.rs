//! Deferred wake-ups (QEMU's `co_queue_wakeup`).

use costack::{current, yield_now, Builder, CoHandle, Coroutine, Status};
use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

#[test]
fn woken_coroutines_run_after_the_waker_yields_in_fifo_order() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let sleepers: Vec<_> = (0..3)
        .map(|i| {
            let l = log.clone();
            Coroutine::new(move || {
                yield_now();
                l.borrow_mut().push(format!("sleeper {i}"));
            })
        })
        .collect();
    for s in &sleepers {
        let _ = s.enter();
    }
    let handles: Vec<CoHandle> = sleepers.iter().map(|s| s.handle()).collect();
    let l = log.clone();
    let waker = Coroutine::new(move || {
        for h in handles.iter().rev() {
            h.wake();
            assert!(h.is_scheduled());
        }
        l.borrow_mut().push("waker yields".into());
        yield_now();
        l.borrow_mut().push("waker resumed".into());
    });
    assert_eq!(waker.enter(), Status::Yielded);
    log.borrow_mut().push("main".into());
    assert_eq!(
        *log.borrow(),
        [
            "waker yields",
            "sleeper 2",
            "sleeper 1",
            "sleeper 0",
            "main"
        ]
    );
    assert!(sleepers.iter().all(|s| s.is_finished()));
    let _ = waker.enter();
}

#[test]
fn wake_outside_a_coroutine_enters_directly() {
    let hit = Rc::new(RefCell::new(false));
    let h2 = hit.clone();
    let co = Coroutine::new(move || {
        yield_now();
        *h2.borrow_mut() = true;
    });
    let _ = co.enter();
    co.wake();
    assert!(*hit.borrow());
    assert!(co.is_finished());
}

#[test]
fn wake_runs_after_nested_yield_before_the_outer_continues() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    let sleeper = Coroutine::new(move || {
        yield_now();
        l.borrow_mut().push("sleeper");
    });
    let _ = sleeper.enter();
    let s = sleeper.handle();
    let l = log.clone();
    let outer = Coroutine::new(move || {
        let l2 = l.clone();
        let inner = Coroutine::new(move || {
            s.wake();
            l2.borrow_mut().push("inner yields");
            yield_now();
        });
        let _ = inner.enter();
        l.borrow_mut().push("outer continues");
    });
    let _ = outer.enter();
    assert_eq!(
        *log.borrow(),
        ["inner yields", "sleeper", "outer continues"]
    );
}

#[test]
fn double_wake_and_waking_running_or_finished_panic() {
    let sleeper = Coroutine::new(yield_now);
    let _ = sleeper.enter();
    let s = sleeper.handle();
    let co = Coroutine::new(move || {
        s.wake();
        let err = catch_unwind(AssertUnwindSafe(|| s.wake())).unwrap_err();
        let m1 = err.downcast_ref::<String>().cloned().unwrap();
        let me = current().unwrap();
        let err = catch_unwind(AssertUnwindSafe(|| me.wake())).unwrap_err();
        let m2 = err.downcast_ref::<String>().cloned().unwrap();
        // Entering a scheduled coroutine directly is misuse too.
        let err = catch_unwind(AssertUnwindSafe(|| s.enter())).unwrap_err();
        let m3 = err.downcast_ref::<String>().cloned().unwrap();
        (m1, m2, m3)
    });
    let (m1, m2, m3) = co.enter().finished().unwrap();
    assert!(m1.contains("already scheduled"), "{m1}");
    assert!(m2.contains("entered"), "{m2}");
    assert!(m3.contains("scheduled"), "{m3}");
    assert!(sleeper.is_finished());
    let fin = sleeper.handle();
    let err = catch_unwind(AssertUnwindSafe(|| {
        let c = Coroutine::new(move || fin.wake());
        let _ = c.enter();
    }))
    .unwrap_err();
    assert!(err.downcast_ref::<String>().unwrap().contains("finished"));
}

/// A chain of 100 000 coroutines, each creating the next, waking it and terminating, run on a
/// thread whose own stack is only 256 KiB: if the wake-up loop recursed, the native stack would
/// overflow. (Each coroutine is freed when it ends, so only a few exist at a time.)
#[test]
fn chain_of_100_000_wakes_does_not_grow_the_native_stack() {
    const N: usize = 100_000;
    fn link(i: usize, ids: Rc<RefCell<Vec<usize>>>) {
        ids.borrow_mut().push(i);
        if i + 1 < N {
            let ids = ids.clone();
            let next = Builder::new()
                .stack_size(16 * 1024)
                .create(move || link(i + 1, ids));
            next.wake(); // entered after we terminate; the queue keeps it alive
        }
    }
    let t = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            let ids = Rc::new(RefCell::new(Vec::with_capacity(N)));
            let first = Coroutine::new({
                let ids = ids.clone();
                move || link(0, ids)
            });
            assert!(first.enter().is_finished());
            let ids = ids.borrow();
            ids.len() == N && ids.iter().enumerate().all(|(k, &i)| k == i)
        })
        .unwrap();
    assert!(t.join().unwrap(), "all 100 000 ran, in order");
}

#[test]
fn dropping_the_last_handle_of_a_scheduled_coroutine_still_runs_it() {
    let ran = Rc::new(RefCell::new(false));
    let r = ran.clone();
    let sleeper = Coroutine::new(move || {
        yield_now();
        *r.borrow_mut() = true;
    });
    let _ = sleeper.enter();
    let h = sleeper.handle();
    drop(sleeper);
    let waker = Coroutine::new(move || {
        h.wake();
        drop(h); // the wake-up queue keeps it alive
    });
    let _ = waker.enter();
    assert!(*ran.borrow());
}

#[test]
fn a_panicking_woken_coroutine_continues_in_the_enterer_after_the_others_ran() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    let bad = Coroutine::new(move || {
        yield_now();
        l.borrow_mut().push("bad");
        panic!("woken and failed");
    });
    let l = log.clone();
    let good = Coroutine::new(move || {
        yield_now();
        l.borrow_mut().push("good");
    });
    let _ = bad.enter();
    let _ = good.enter();
    let (b, g) = (bad.handle(), good.handle());
    let waker = Coroutine::new(move || {
        b.wake();
        g.wake();
    });
    let err = catch_unwind(AssertUnwindSafe(|| waker.enter())).unwrap_err();
    assert_eq!(err.downcast_ref::<&str>(), Some(&"woken and failed"));
    assert_eq!(*log.borrow(), ["bad", "good"]);
    assert!(good.is_finished());
}
