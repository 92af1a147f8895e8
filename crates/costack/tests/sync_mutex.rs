//! CoMutex: QEMU's locking scenarios, FIFO hand-off, outside-coroutine behaviour, and what
//! happens when waiting or holding coroutines are dropped.

use costack::sync::CoMutex;
use costack::{current, yield_now, CoHandle, Coroutine, Status};
use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

#[path = "common/deadline.rs"]
mod deadline;
#[path = "common/panics.rs"]
mod panics;

type Log = Rc<RefCell<Vec<String>>>;

fn log() -> Log {
    Rc::new(RefCell::new(Vec::new()))
}

fn push(l: &Log, s: impl Into<String>) {
    l.borrow_mut().push(s.into());
}

/// QEMU's `test_co_mutex_lockable` idea in our terms: the second locker waits, and runs right
/// after the holder yields (here: after it unlocks and then yields).
#[test]
fn second_locker_runs_right_after_holder_yields() {
    let _deadline = deadline::arm();
    let m = Rc::new(CoMutex::new(0));
    let l = log();

    let (m1, l1) = (m.clone(), l.clone());
    let holder = Coroutine::new(move || {
        let mut g = m1.lock();
        push(&l1, "holder locked");
        yield_now();
        *g += 1;
        drop(g);
        push(&l1, "holder unlocked");
        yield_now();
        push(&l1, "holder done");
    });
    let (m2, l2) = (m.clone(), l.clone());
    let waiter = Coroutine::new(move || {
        push(&l2, "waiter locking");
        let mut g = m2.lock();
        push(&l2, format!("waiter locked, saw {}", *g));
        *g += 1;
    });

    assert_eq!(holder.enter(), Status::Yielded);
    assert_eq!(waiter.enter(), Status::Yielded);
    assert!(m.is_locked());
    assert!(m.has_waiters());
    // The holder unlocks and yields: the waiter runs before `enter` returns.
    assert_eq!(holder.enter(), Status::Yielded);
    assert!(waiter.is_finished());
    assert!(!m.is_locked());
    assert_eq!(holder.enter(), Status::Finished(()));
    assert_eq!(
        *l.borrow(),
        [
            "holder locked",
            "waiter locking",
            "holder unlocked",
            "waiter locked, saw 1",
            "holder done"
        ]
    );
    assert_eq!(*m.lock(), 2);
}

/// The second locker runs right after the holder terminates while holding the lock.
#[test]
fn second_locker_runs_right_after_holder_terminates() {
    let _deadline = deadline::arm();
    let m = Rc::new(CoMutex::new(()));
    let l = log();
    let (m1, l1) = (m.clone(), l.clone());
    let holder = Coroutine::new(move || {
        let _g = m1.lock();
        yield_now();
        push(&l1, "holder ends");
    });
    let (m2, l2) = (m.clone(), l.clone());
    let waiter = Coroutine::new(move || {
        let _g = m2.lock();
        push(&l2, "waiter got it");
    });
    let _ = holder.enter();
    let _ = waiter.enter();
    assert_eq!(holder.enter(), Status::Finished(()));
    assert!(waiter.is_finished());
    assert_eq!(*l.borrow(), ["holder ends", "waiter got it"]);
    assert!(!m.is_locked() && !m.has_waiters());
}

/// Waiters get the lock in arrival order, and one that unlocks and locks again queues behind
/// those already waiting.
#[test]
fn fifo_hand_off_and_no_barging() {
    let _deadline = deadline::arm();
    let m = Rc::new(CoMutex::new(()));
    let order = Rc::new(RefCell::new(Vec::new()));
    let cos: Vec<Coroutine> = (0..4)
        .map(|i| {
            let (m, order) = (m.clone(), order.clone());
            Coroutine::new(move || {
                for _ in 0..2 {
                    let g = m.lock();
                    order.borrow_mut().push(i);
                    yield_now();
                    drop(g);
                }
            })
        })
        .collect();
    for c in &cos {
        let _ = c.enter();
    }
    // Round-robin until all finish; entering a waiting coroutine is harmless.
    let mut rounds = 0;
    while cos.iter().any(|c| !c.is_finished()) {
        rounds += 1;
        assert!(rounds < 1000, "did not finish within 1000 rounds");
        for c in cos.iter().filter(|c| !c.is_finished()) {
            let _ = c.enter();
        }
    }
    assert_eq!(*order.borrow(), [0, 1, 2, 3, 0, 1, 2, 3]);
}

#[test]
fn unlock_then_lock_again_queues_behind_the_waiter() {
    let _deadline = deadline::arm();
    let m = Rc::new(CoMutex::new(()));
    let l = log();
    let (m1, l1) = (m.clone(), l.clone());
    let a = Coroutine::new(move || {
        let g = m1.lock();
        yield_now();
        drop(g);
        // The lock went to `b`; this waits behind it, even though `b` has not run yet.
        assert!(m1.is_locked());
        assert!(m1.try_lock().is_none());
        let _g = m1.lock();
        push(&l1, "a again");
    });
    let (m2, l2) = (m.clone(), l.clone());
    let b = Coroutine::new(move || {
        let _g = m2.lock();
        push(&l2, "b");
    });
    let _ = a.enter();
    let _ = b.enter();
    let _ = a.enter(); // a unlocks, waits; b runs then hands back to a
    assert!(a.is_finished() && b.is_finished());
    assert_eq!(*l.borrow(), ["b", "a again"]);
}

#[test]
fn try_lock_and_is_locked() {
    let _deadline = deadline::arm();
    let m = CoMutex::new(5);
    assert!(!m.is_locked());
    let g = m.try_lock().expect("free");
    assert!(m.is_locked());
    assert!(m.try_lock().is_none());
    assert_eq!(*g, 5);
    drop(g);
    assert!(!m.is_locked());
    assert_eq!(format!("{m:?}"), "CoMutex { data: 5, waiters: 0 }");
    let g = m.lock();
    assert_eq!(format!("{m:?}"), "CoMutex { data: <locked>, waiters: 0 }");
    assert_eq!(format!("{g:?} {g}"), "5 5");
}

#[test]
fn lock_outside_a_coroutine_succeeds_when_free() {
    let _deadline = deadline::arm();
    let m = CoMutex::new(vec![1]);
    m.lock().push(2);
    assert_eq!(m.into_inner(), [1, 2]);
}

#[test]
fn lock_outside_a_coroutine_panics_when_taken() {
    let _deadline = deadline::arm();
    let m = CoMutex::new(());
    let _g = m.lock();
    let err = catch_unwind(AssertUnwindSafe(|| {
        let _g2 = m.lock();
    }))
    .unwrap_err();
    let msg = err.downcast_ref::<String>().expect("a String message");
    assert!(msg.contains("CoMutex::lock"), "{msg}");
    assert!(msg.contains("outside of any coroutine"), "{msg}");
    // The failed attempt left nothing behind.
    assert!(m.is_locked());
    assert!(!m.has_waiters());
}

/// Unlocking from outside a coroutine enters the waiter at once.
#[test]
fn unlock_outside_a_coroutine_enters_the_waiter_directly() {
    let _deadline = deadline::arm();
    let m = Rc::new(CoMutex::new(0));
    let g = m.lock();
    let m2 = m.clone();
    let waiter = Coroutine::new(move || {
        *m2.lock() += 1;
    });
    assert_eq!(waiter.enter(), Status::Yielded);
    drop(g);
    assert!(waiter.is_finished());
    assert_eq!(*m.lock(), 1);
}

/// A panic in a waiter entered by an unlock outside any coroutine continues in the unlocker,
/// and the lock is consistent afterwards (the panicking waiter's guard was released).
#[test]
fn panic_of_a_waiter_entered_by_an_outside_unlock() {
    let _deadline = deadline::arm();
    let m = Rc::new(CoMutex::new(0));
    let g = m.lock();
    let m2 = m.clone();
    let waiter = Coroutine::new(move || {
        let _g = m2.lock();
        panic!("waiter fails");
    });
    let _ = waiter.enter();
    let err = catch_unwind(AssertUnwindSafe(|| drop(g))).unwrap_err();
    assert_eq!(err.downcast_ref::<&str>(), Some(&"waiter fails"));
    assert!(waiter.is_finished());
    assert!(!m.is_locked());
}

/// A guard dropped by a panic outside any coroutine still hands the lock over, entering the
/// waiter; if that panics too, its payload is dropped (a second panic out of a destructor would
/// abort) and the first panic goes on.
#[test]
fn waiter_panics_while_an_outside_panic_unwinds() {
    let _deadline = deadline::arm();
    let m = Rc::new(CoMutex::new(0));
    let m2 = m.clone();
    let waiter = Coroutine::new(move || {
        let mut g = m2.lock();
        *g += 1;
        panic!("waiter fails too");
    });
    let err = catch_unwind(AssertUnwindSafe(|| {
        let _g = m.lock();
        let _ = waiter.enter();
        panic!("outer");
    }))
    .unwrap_err();
    assert_eq!(err.downcast_ref::<&str>(), Some(&"outer"));
    assert!(waiter.is_finished());
    assert!(!m.is_locked());
    assert_eq!(*m.lock(), 1);
}

/// Dropping a coroutine that waits for the lock takes it out of the queue; the rest of the
/// queue is unaffected.
#[test]
fn drop_while_waiting_leaves_the_queue() {
    let _deadline = deadline::arm();
    let m = Rc::new(CoMutex::new(Vec::new()));
    let mk = |i: u32| {
        let m = m.clone();
        Coroutine::new(move || {
            m.lock().push(i);
        })
    };
    let g = m.lock();
    let (a, b, c) = (mk(1), mk(2), mk(3));
    for co in [&a, &b, &c] {
        assert_eq!(co.enter(), Status::Yielded);
    }
    drop(b); // from the middle
    drop(g); // a, then c
    assert!(a.is_finished() && c.is_finished());
    assert_eq!(*m.lock(), [1, 3]);
    let g = m.lock();
    let d = mk(4);
    let _ = d.enter();
    drop(d); // the only waiter
    assert!(!m.has_waiters());
    drop(g);
    assert!(!m.is_locked());
}

/// A guard on the stack of a coroutine dropped while it holds the lock is released by the forced
/// unwind, and the lock goes to the next waiter.
#[test]
fn guard_dropped_by_forced_unwind_hands_the_lock_on() {
    let _deadline = deadline::arm();
    let m = Rc::new(CoMutex::new(0));
    let m1 = m.clone();
    let holder = Coroutine::new(move || {
        let mut g = m1.lock();
        *g = 1;
        yield_now(); // dropped here
        *g = 100;
    });
    let m2 = m.clone();
    let waiter = Coroutine::new(move || {
        let mut g = m2.lock();
        *g += 10;
    });
    let _ = holder.enter();
    let _ = waiter.enter();
    drop(holder); // unwinds: the guard hands the lock to the waiter, which runs after it
    assert!(waiter.is_finished());
    assert_eq!(*m.lock(), 11);
}

/// A waiter that is entered through a handle (not by the lock) does not take the lock: it
/// yields again and keeps its place.
#[test]
fn spurious_resume_keeps_waiting() {
    let _deadline = deadline::arm();
    let m = Rc::new(CoMutex::new(()));
    let me: Rc<RefCell<Option<CoHandle>>> = Rc::default();
    let got = Rc::new(Cell::new(false));
    let g = m.lock();
    let (m2, me2, got2) = (m.clone(), me.clone(), got.clone());
    let waiter = Coroutine::new(move || {
        *me2.borrow_mut() = current();
        let _g = m2.lock();
        got2.set(true);
    });
    let _ = waiter.enter();
    let h = me.borrow_mut().take().unwrap();
    for _ in 0..3 {
        assert_eq!(h.enter(), Status::Yielded);
        assert!(!got.get());
    }
    // A deferred wake from another coroutine is just as spurious.
    let h2 = h.clone();
    let waker = Coroutine::new(move || h2.wake());
    let _ = waker.enter();
    assert!(!got.get());
    drop(g);
    assert!(got.get());
}

/// The lock's hand-off coexists with a wake-up someone else already scheduled for the waiter:
/// it runs once, with the lock.
#[test]
fn hand_off_to_a_waiter_already_scheduled() {
    let _deadline = deadline::arm();
    let m = Rc::new(CoMutex::new(0));
    let me: Rc<RefCell<Option<CoHandle>>> = Rc::default();
    let (m1, me1) = (m.clone(), me.clone());
    let waiter = Coroutine::new(move || {
        *me1.borrow_mut() = current();
        *m1.lock() += 1;
    });
    let m2 = m.clone();
    let holder = Coroutine::new(move || {
        let g = m2.lock();
        yield_now();
        // Schedule the waiter by hand, then hand it the lock.
        me.borrow().as_ref().unwrap().wake();
        drop(g);
    });
    let _ = holder.enter();
    let _ = waiter.enter();
    assert_eq!(holder.enter(), Status::Finished(()));
    assert!(waiter.is_finished());
    assert_eq!(*m.lock(), 1);
}

/// A waiter that was handed the lock but is dropped before it runs passes the lock on. The only
/// way there: a panic in the wake-up loop drops the wake-ups still queued, and with them the
/// last handle to the waiter.
#[test]
fn waiter_dropped_after_hand_off_passes_the_lock_on() {
    let _deadline = deadline::arm();
    let m = Rc::new(CoMutex::new(Vec::new()));
    let slot: Rc<RefCell<Option<(CoHandle, CoHandle)>>> = Rc::default();

    let (m0, slot0) = (m.clone(), slot.clone());
    let holder = Coroutine::new(move || {
        let g = m0.lock();
        yield_now();
        let (bomb, granted) = slot0.borrow_mut().take().unwrap();
        bomb.wake(); // runs first after we finish
        drop(g); // hands the lock to `granted`, queued behind the bomb
        drop((bomb, granted)); // the wake-up queue holds the last handles now
    });
    // Yields again when woken, and panics with its own payload when unwound for being dropped:
    // that panic escapes the wake-up loop, which drops the rest of its queue.
    panics::forced_unwind_type();
    let bomb = Coroutine::new(|| loop {
        if let Err(p) = catch_unwind(yield_now) {
            assert!(panics::is_forced_unwind(&*p), "not the forced unwind");
            panic!("bomb");
        }
    });
    let mk = |i: u32| {
        let m = m.clone();
        Coroutine::new(move || {
            let mut g = m.lock();
            g.push(i);
            yield_now();
        })
    };
    let (granted, next) = (mk(1), mk(2));

    let _ = holder.enter();
    let _ = bomb.enter();
    let _ = granted.enter();
    let _ = next.enter();
    *slot.borrow_mut() = Some((bomb.handle(), granted.handle()));
    drop((bomb, granted));

    let err = catch_unwind(AssertUnwindSafe(|| holder.enter())).unwrap_err();
    assert_eq!(err.downcast_ref::<&str>(), Some(&"bomb"));
    // `granted` never ran: it passed the lock to `next`, which took it and yielded.
    assert!(m.is_locked());
    assert!(!m.has_waiters());
    assert_eq!(next.enter(), Status::Finished(()));
    assert_eq!(*m.lock(), [2]);
    assert!(!m.has_waiters());
}

/// `Debug` while coroutines are queued: the count of waiters, and a lock handed to a waiter that
/// has not run yet shows as locked.
#[test]
fn debug_shows_the_waiters_and_a_hand_off() {
    let _deadline = deadline::arm();
    let m = Rc::new(CoMutex::new(7));
    let l = log();
    let mk = |name: &'static str| {
        let (m, l) = (m.clone(), l.clone());
        Coroutine::new(move || {
            let mut g = m.lock();
            *g += 1;
            yield_now();
            drop(g);
            push(&l, format!("{name} unlocked: {m:?}"));
        })
    };
    let (a, b) = (mk("a"), mk("b"));
    let g = m.lock();
    assert_eq!(format!("{m:?}"), "CoMutex { data: <locked>, waiters: 0 }");
    assert_eq!(a.enter(), Status::Yielded);
    assert_eq!(format!("{m:?}"), "CoMutex { data: <locked>, waiters: 1 }");
    assert_eq!(b.enter(), Status::Yielded);
    assert_eq!(format!("{m:?}"), "CoMutex { data: <locked>, waiters: 2 }");
    drop(g); // outside a coroutine: `a` is entered at once, and yields holding the lock
    assert_eq!(format!("{m:?}"), "CoMutex { data: <locked>, waiters: 1 }");
    assert_eq!(a.enter(), Status::Finished(())); // hands the lock to `b`, which runs next
    assert_eq!(format!("{m:?}"), "CoMutex { data: <locked>, waiters: 0 }");
    assert_eq!(b.enter(), Status::Finished(()));
    assert_eq!(format!("{m:?}"), "CoMutex { data: 9, waiters: 0 }");
    assert_eq!(
        *l.borrow(),
        [
            // Handed to `b`, which had not run yet: still locked.
            "a unlocked: CoMutex { data: <locked>, waiters: 0 }",
            "b unlocked: CoMutex { data: 9, waiters: 0 }",
        ]
    );
}
