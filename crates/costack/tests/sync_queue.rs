//! CoQueue: order of wake-ups, waiting at the front, releasing a lock while waiting, waking
//! from outside a coroutine, dropping waiters.

use costack::sync::{CoMutex, CoQueue, CoRwLock, CoSemaphore};
use costack::{current, yield_now, CoHandle, Coroutine, Status};
use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

#[path = "common/deadline.rs"]
mod deadline;

type Log = Rc<RefCell<Vec<u32>>>;

fn waiter(q: &Rc<CoQueue>, log: &Log, i: u32) -> Coroutine {
    let (q, log) = (q.clone(), log.clone());
    Coroutine::new(move || {
        q.wait();
        log.borrow_mut().push(i);
    })
}

/// A coroutine that runs `f` and finishes.
fn run(f: impl FnOnce() + 'static) {
    assert_eq!(Coroutine::new(f).enter(), Status::Finished(()));
}

#[test]
fn wake_next_in_fifo_order_after_the_waker_yields() {
    let _deadline = deadline::arm();
    let q = Rc::new(CoQueue::new());
    let log: Log = Rc::default();
    let ws: Vec<Coroutine> = (1..=3).map(|i| waiter(&q, &log, i)).collect();
    for w in &ws {
        assert_eq!(w.enter(), Status::Yielded);
    }
    assert!(!q.is_empty());
    let (q2, l2) = (q.clone(), log.clone());
    run(move || {
        assert!(q2.wake_next());
        assert!(q2.wake_next());
        l2.borrow_mut().push(0); // the woken run after this coroutine terminates
    });
    assert_eq!(*log.borrow(), [0, 1, 2]);
    assert!(!ws[2].is_finished());
    assert!(q.wake_next()); // outside: entered at once
    assert_eq!(*log.borrow(), [0, 1, 2, 3]);
    assert!(!q.wake_next());
    assert!(q.is_empty());
}

#[test]
fn wait_front_goes_first() {
    let _deadline = deadline::arm();
    let q = Rc::new(CoQueue::new());
    let log: Log = Rc::default();
    let a = waiter(&q, &log, 1);
    let (q2, l2) = (q.clone(), log.clone());
    let front = Coroutine::new(move || {
        q2.wait_front();
        l2.borrow_mut().push(2);
    });
    let _ = a.enter();
    let _ = front.enter();
    assert_eq!(q.wake_all(), 2);
    assert_eq!(*log.borrow(), [2, 1]);
}

/// `wake_all` outside a coroutine enters each waiter at once; those that wait again are not
/// woken a second time by the same call.
#[test]
fn wake_all_outside_wakes_only_those_waiting_at_the_call() {
    let _deadline = deadline::arm();
    let q = Rc::new(CoQueue::new());
    let rounds = Rc::new(Cell::new(0));
    let cos: Vec<Coroutine> = (0..3)
        .map(|_| {
            let (q, r) = (q.clone(), rounds.clone());
            Coroutine::new(move || loop {
                q.wait();
                r.set(r.get() + 1);
                // Bounded: the test wakes the queue twice, three waiters each time.
                assert!(
                    r.get() <= 6,
                    "woken without a wake-up: the wait did not wait"
                );
            })
        })
        .collect();
    for c in &cos {
        let _ = c.enter();
    }
    assert_eq!(q.wake_all(), 3);
    assert_eq!(rounds.get(), 3);
    assert_eq!(q.wake_all(), 3);
    assert_eq!(rounds.get(), 6);
    drop(cos);
    assert!(q.is_empty());
    assert_eq!(q.wake_all(), 0);
}

/// `wake_all` from inside a coroutine: all run after the waker, in order.
#[test]
fn wake_all_inside_a_coroutine() {
    let _deadline = deadline::arm();
    let q = Rc::new(CoQueue::new());
    let log: Log = Rc::default();
    let ws: Vec<Coroutine> = (1..=4).map(|i| waiter(&q, &log, i)).collect();
    for w in &ws {
        let _ = w.enter();
    }
    let (q2, l2) = (q.clone(), log.clone());
    run(move || {
        assert_eq!(q2.wake_all(), 4);
        l2.borrow_mut().push(0);
    });
    assert_eq!(*log.borrow(), [0, 1, 2, 3, 4]);
    assert!(ws.iter().all(|w| w.is_finished()));
}

/// During an outside `wake_all`, a woken coroutine drops another that is still to be woken by
/// the same call: it is skipped, safely.
#[test]
fn wake_all_outside_when_a_woken_one_drops_a_later_one() {
    let _deadline = deadline::arm();
    let q = Rc::new(CoQueue::new());
    let log: Log = Rc::default();
    let victim_slot: Rc<RefCell<Option<Coroutine>>> = Rc::default();
    let (q1, l1, slot) = (q.clone(), log.clone(), victim_slot.clone());
    let killer = Coroutine::new(move || {
        q1.wait();
        l1.borrow_mut().push(1);
        drop(slot.borrow_mut().take());
    });
    let victim = waiter(&q, &log, 2);
    let last = waiter(&q, &log, 3);
    let _ = killer.enter();
    let _ = victim.enter();
    let _ = last.enter();
    *victim_slot.borrow_mut() = Some(victim);
    assert_eq!(q.wake_all(), 2);
    assert_eq!(*log.borrow(), [1, 3]);
    assert!(q.is_empty());
}

/// The condition-variable pattern with a mutex: the lock is released while waiting, so the
/// producer can take it, and taken back before `wait_with` returns.
#[test]
fn wait_with_mutex_releases_and_retakes() {
    let _deadline = deadline::arm();
    let m = Rc::new(CoMutex::new(0));
    let q = Rc::new(CoQueue::new());
    let (m1, q1) = (m.clone(), q.clone());
    let consumer = Coroutine::new(move || {
        let mut g = m1.lock();
        let mut waits = 0;
        while *g < 3 {
            // Bounded: one wait per increment by the producer.
            waits += 1;
            assert!(waits <= 3, "woken without a wake-up: the wait did not wait");
            g = q1.wait_with(g);
        }
        (*g, waits)
    });
    assert_eq!(consumer.enter(), Status::Yielded);
    assert!(!m.is_locked(), "released while waiting");
    // A producer that wakes the consumer while holding the lock, then yields: the consumer runs,
    // and waits for the lock to come back.
    let (m2, q2) = (m.clone(), q.clone());
    let producer = Coroutine::new(move || {
        for _ in 0..3 {
            let mut g = m2.lock();
            *g += 1;
            q2.wake_next();
            yield_now();
            drop(g); // hands the lock to the consumer
        }
    });
    let mut steps = 0;
    while !producer.enter().is_finished() {
        steps += 1;
        assert!(
            steps < 1000,
            "the producer did not finish within 1000 steps"
        );
        assert!(!consumer.is_finished());
    }
    assert!(consumer.is_finished());
    assert_eq!(consumer.take_result(), Some((3, 3)));
    assert!(!m.is_locked() && q.is_empty());
}

/// The same with the locks of the other kinds.
#[test]
fn wait_with_rwlock_and_semaphore_guards() {
    let _deadline = deadline::arm();
    let lock = Rc::new(CoRwLock::new(0));
    let sem = Rc::new(CoSemaphore::new(2));
    let q = Rc::new(CoQueue::new());
    let (l1, s1, q1) = (lock.clone(), sem.clone(), q.clone());
    let co = Coroutine::new(move || {
        let r = *q1.wait_with(l1.read());
        let w = *q1.wait_front_with(l1.write());
        let p = q1.wait_with(s1.acquire(2)).permits();
        (r, w, p)
    });
    let _ = co.enter();
    assert!(!lock.is_locked());
    assert!(q.wake_next());
    assert!(
        !lock.is_locked(),
        "waiting again, with the write lock released"
    );
    assert!(q.wake_next());
    assert_eq!(sem.available_permits(), 2);
    assert!(q.wake_next());
    assert!(co.is_finished());
    assert_eq!(co.take_result(), Some((0, 0, 2)));
    assert_eq!(sem.available_permits(), 2);
}

#[test]
fn wait_outside_a_coroutine_panics() {
    let _deadline = deadline::arm();
    let q = CoQueue::new();
    let err = catch_unwind(AssertUnwindSafe(|| q.wait())).unwrap_err();
    let msg = err.downcast_ref::<String>().unwrap();
    assert!(msg.contains("CoQueue::wait would have to wait"), "{msg}");
    assert!(msg.contains("outside of any coroutine"), "{msg}");
    let m = CoMutex::new(());
    let err = catch_unwind(AssertUnwindSafe(|| drop(q.wait_with(m.lock())))).unwrap_err();
    assert!(err
        .downcast_ref::<String>()
        .unwrap()
        .contains("CoQueue::wait"));
    assert!(!m.is_locked(), "the guard was released by the unwinding");
    assert!(q.is_empty());
}

#[test]
fn drop_while_waiting_leaves_the_queue() {
    let _deadline = deadline::arm();
    let q = Rc::new(CoQueue::new());
    let log: Log = Rc::default();
    let (a, b, c) = (
        waiter(&q, &log, 1),
        waiter(&q, &log, 2),
        waiter(&q, &log, 3),
    );
    for w in [&a, &b, &c] {
        let _ = w.enter();
    }
    drop(a);
    drop(c);
    assert!(q.wake_next());
    assert!(!q.wake_next());
    assert_eq!(*log.borrow(), [2]);
    assert_eq!(format!("{q:?}"), "CoQueue { waiters: 0 }");
}

/// A coroutine dropped while waiting in `wait_with` does not take the lock back.
#[test]
fn drop_while_waiting_with_a_lock() {
    let _deadline = deadline::arm();
    let m = Rc::new(CoMutex::new(()));
    let q = Rc::new(CoQueue::new());
    let (m1, q1) = (m.clone(), q.clone());
    let co = Coroutine::new(move || {
        let _g = q1.wait_with(m1.lock());
    });
    let _ = co.enter();
    let g = m.lock();
    drop(co);
    assert!(q.is_empty());
    drop(g);
    assert!(!m.is_locked());
}

/// Entering a waiting coroutine through its handle does not end the wait.
#[test]
fn spurious_resume_keeps_waiting() {
    let _deadline = deadline::arm();
    let q = Rc::new(CoQueue::new());
    let me: Rc<RefCell<Option<CoHandle>>> = Rc::default();
    let done = Rc::new(Cell::new(false));
    let (q1, me1, d1) = (q.clone(), me.clone(), done.clone());
    let co = Coroutine::new(move || {
        *me1.borrow_mut() = current();
        q1.wait();
        d1.set(true);
    });
    let _ = co.enter();
    let h = me.borrow_mut().take().unwrap();
    assert_eq!(h.enter(), Status::Yielded);
    assert!(!done.get());
    assert!(!q.is_empty());
    q.wake_next();
    assert!(done.get());
}

/// `Debug` while coroutines are queued: the count of waiters.
#[test]
fn debug_shows_the_waiters() {
    let _deadline = deadline::arm();
    let q = Rc::new(CoQueue::new());
    let log: Log = Rc::default();
    let ws: Vec<Coroutine> = (1..=3).map(|i| waiter(&q, &log, i)).collect();
    assert_eq!(format!("{q:?}"), "CoQueue { waiters: 0 }");
    for w in &ws {
        assert_eq!(w.enter(), Status::Yielded);
    }
    assert_eq!(format!("{q:?}"), "CoQueue { waiters: 3 }");
    assert!(q.wake_next());
    assert_eq!(format!("{q:?}"), "CoQueue { waiters: 2 }");
    assert_eq!(q.wake_all(), 2);
    assert_eq!(format!("{q:?}"), "CoQueue { waiters: 0 }");
    assert_eq!(*log.borrow(), [1, 2, 3]);
}
