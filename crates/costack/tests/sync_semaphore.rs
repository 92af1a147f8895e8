//! CoSemaphore: FIFO service, large requests not starved, dropping waiters and holders.

use costack::sync::CoSemaphore;
use costack::{yield_now, Coroutine, Status};
use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

#[path = "common/deadline.rs"]
mod deadline;

type Log = Rc<RefCell<Vec<String>>>;

/// A coroutine that takes `n` permits, logs, yields once holding them, and gives them back.
fn taker(sem: &Rc<CoSemaphore>, log: &Log, name: &'static str, n: usize) -> Coroutine {
    let (s, l) = (sem.clone(), log.clone());
    Coroutine::new(move || {
        let p = s.acquire(n);
        assert_eq!(p.permits(), n);
        l.borrow_mut().push(format!("{name} got {n}"));
        yield_now();
        drop(p);
    })
}

/// Small requests arriving after a large one wait behind it, even when they would fit.
#[test]
fn large_request_is_not_starved_by_small_ones() {
    let _deadline = deadline::arm();
    let sem = Rc::new(CoSemaphore::new(4));
    let log: Log = Rc::default();
    let a = taker(&sem, &log, "a", 2);
    let big = taker(&sem, &log, "big", 4);
    let b = taker(&sem, &log, "b", 1);
    let c = taker(&sem, &log, "c", 1);
    let _ = a.enter(); // 2 left
    let _ = big.enter(); // waits for 4
    let _ = b.enter(); // 1 would fit, but waits behind big
    let _ = c.enter();
    assert_eq!(sem.available_permits(), 2);
    assert!(sem.try_acquire(1).is_none(), "no barging past a waiter");
    assert_eq!(*log.borrow(), ["a got 2"]);
    let _ = a.enter(); // gives back 2: big runs
    assert_eq!(*log.borrow(), ["a got 2", "big got 4"]);
    let _ = big.enter(); // gives back 4: b and c both run
    assert_eq!(
        *log.borrow(),
        ["a got 2", "big got 4", "b got 1", "c got 1"]
    );
    let _ = b.enter();
    let _ = c.enter();
    assert_eq!(sem.available_permits(), 4);
    assert!(!sem.has_waiters());
}

#[test]
fn try_acquire_forget_and_release() {
    let _deadline = deadline::arm();
    let sem = CoSemaphore::new(3);
    let p = sem.try_acquire(2).unwrap();
    assert!(sem.try_acquire(2).is_none());
    assert_eq!(sem.available_permits(), 1);
    p.forget();
    assert_eq!(sem.available_permits(), 1);
    sem.release(2);
    assert_eq!(sem.available_permits(), 3);
    sem.release(5); // grows the pool
    assert_eq!(sem.available_permits(), 8);
    let p = sem.acquire(0);
    assert_eq!(p.permits(), 0);
    assert_eq!(format!("{sem:?}"), "CoSemaphore { permits: 8, waiters: 0 }");
    assert!(std::ptr::eq(p.semaphore(), &sem));
}

#[test]
fn release_overflow_panics() {
    let _deadline = deadline::arm();
    let sem = CoSemaphore::new(usize::MAX);
    let err = catch_unwind(AssertUnwindSafe(|| sem.release(1))).unwrap_err();
    assert_eq!(
        err.downcast_ref::<&str>(),
        Some(&"costack: CoSemaphore permit count overflow")
    );
    assert_eq!(sem.available_permits(), usize::MAX);
}

#[test]
fn acquire_outside_a_coroutine() {
    let _deadline = deadline::arm();
    let sem = CoSemaphore::new(1);
    let p = sem.acquire(1);
    let err = catch_unwind(AssertUnwindSafe(|| drop(sem.acquire(1)))).unwrap_err();
    assert!(err
        .downcast_ref::<String>()
        .unwrap()
        .contains("CoSemaphore::acquire"));
    drop(p);
    assert_eq!(sem.available_permits(), 1);
}

/// Releasing outside a coroutine enters each waiter it serves at once.
#[test]
fn release_outside_a_coroutine_enters_the_waiters() {
    let _deadline = deadline::arm();
    let sem = Rc::new(CoSemaphore::new(0));
    let log: Log = Rc::default();
    let a = taker(&sem, &log, "a", 1);
    let b = taker(&sem, &log, "b", 2);
    let c = taker(&sem, &log, "c", 1);
    for co in [&a, &b, &c] {
        assert_eq!(co.enter(), Status::Yielded);
    }
    sem.release(3);
    assert_eq!(*log.borrow(), ["a got 1", "b got 2"]);
    let _ = a.enter(); // inside a coroutine: c runs after a finishes
    assert_eq!(*log.borrow(), ["a got 1", "b got 2", "c got 1"]);
    let _ = b.enter();
    let _ = c.enter();
    assert_eq!(sem.available_permits(), 3);
}

/// The large request at the head of the queue is dropped: the small ones behind it fit now.
#[test]
fn dropping_the_head_waiter_lets_smaller_ones_through() {
    let _deadline = deadline::arm();
    let sem = Rc::new(CoSemaphore::new(2));
    let log: Log = Rc::default();
    let big = taker(&sem, &log, "big", 3);
    let small = taker(&sem, &log, "small", 2);
    let _ = big.enter();
    let _ = small.enter();
    assert_eq!(sem.available_permits(), 2);
    drop(big);
    assert_eq!(*log.borrow(), ["small got 2"]);
    let _ = small.enter();
    assert_eq!(sem.available_permits(), 2);
    assert!(!sem.has_waiters());
}

/// Permits held by a coroutine that is dropped come back, and go to the waiters.
#[test]
fn permits_come_back_from_a_dropped_holder() {
    let _deadline = deadline::arm();
    let sem = Rc::new(CoSemaphore::new(2));
    let log: Log = Rc::default();
    let holder = taker(&sem, &log, "holder", 2);
    let waiter = taker(&sem, &log, "waiter", 1);
    let _ = holder.enter();
    let _ = waiter.enter();
    drop(holder);
    assert_eq!(*log.borrow(), ["holder got 2", "waiter got 1"]);
    drop(waiter);
    assert_eq!(sem.available_permits(), 2);
}

/// `Debug` while coroutines are queued: the permits left and the count of waiters.
#[test]
fn debug_shows_the_permits_and_the_waiters() {
    let _deadline = deadline::arm();
    let sem = Rc::new(CoSemaphore::new(2));
    let log: Log = Rc::default();
    let a = taker(&sem, &log, "a", 1);
    let b = taker(&sem, &log, "b", 2);
    let p = sem.acquire(2);
    assert_eq!(format!("{sem:?}"), "CoSemaphore { permits: 0, waiters: 0 }");
    assert_eq!(a.enter(), Status::Yielded);
    assert_eq!(b.enter(), Status::Yielded);
    assert_eq!(format!("{sem:?}"), "CoSemaphore { permits: 0, waiters: 2 }");
    assert_eq!(format!("{p:?}"), "CoSemaphorePermit { permits: 2 }");
    drop(p); // outside a coroutine: `a` is entered at once with 1; `b` needs 2
    assert_eq!(format!("{sem:?}"), "CoSemaphore { permits: 1, waiters: 1 }");
    assert_eq!(a.enter(), Status::Finished(())); // `b` is handed 2 and runs
    assert_eq!(format!("{sem:?}"), "CoSemaphore { permits: 0, waiters: 0 }");
    assert_eq!(b.enter(), Status::Finished(()));
    assert_eq!(format!("{sem:?}"), "CoSemaphore { permits: 2, waiters: 0 }");
    assert_eq!(*log.borrow(), ["a got 1", "b got 2"]);
}
