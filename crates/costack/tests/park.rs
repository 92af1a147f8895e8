//! The resume contract (`costack::park`): parks and yields, chains and roots, drivers, held
//! coroutines, spurious resumes, cancellation. Every driving loop is bounded.

use costack::park::Park;
use costack::sync::{CoMutex, CoQueue};
use costack::{current, yield_now, CoHandle, Coroutine, Driver, Generator, GeneratorState, Status};
use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

#[path = "common/panics.rs"]
mod panics;
use panics::message_string;

type Log = Rc<RefCell<Vec<String>>>;

fn log() -> Log {
    Rc::default()
}

fn push(l: &Log, s: impl Into<String>) {
    l.borrow_mut().push(s.into());
}

#[test]
fn until_rechecks_after_every_resume() {
    let flag = Rc::new(Cell::new(false));
    let checks = Rc::new(Cell::new(0));
    let (f, c) = (flag.clone(), checks.clone());
    let co = Coroutine::new(move || {
        Park::new().until(|| {
            c.set(c.get() + 1);
            f.get()
        });
        "through"
    });
    assert_eq!(co.enter(), Status::Yielded);
    assert!(co.is_parked());
    assert_eq!(checks.get(), 1);
    for i in 0..3 {
        assert_eq!(co.enter(), Status::Yielded, "spurious resume {i}");
        assert!(co.is_parked());
    }
    assert_eq!(checks.get(), 4);
    flag.set(true);
    assert_eq!(co.enter(), Status::Finished("through"));
    assert_eq!(checks.get(), 5);
}

#[test]
fn a_plain_yield_is_not_a_park() {
    let co = Coroutine::new(|| {
        yield_now();
        Park::new().suspend();
    });
    assert_eq!(co.enter(), Status::Yielded);
    assert!(!co.is_parked() && co.is_suspended());
    assert_eq!(co.enter(), Status::Yielded);
    assert!(co.is_parked() && co.is_suspended());
    assert_eq!(co.enter(), Status::Finished(()));
    assert!(!co.is_parked());
}

#[test]
fn a_wait_in_a_nested_coroutine_suspends_the_chain_up_to_its_root() {
    let l = log();
    let q = Rc::new(CoQueue::new());
    let inner_handle: Rc<RefCell<Option<CoHandle>>> = Rc::default();
    let (l2, q2, ih) = (l.clone(), q.clone(), inner_handle.clone());
    let outer = Coroutine::new(move || {
        let (l3, q3) = (l2.clone(), q2.clone());
        let inner = Coroutine::new(move || {
            push(&l3, "inner waits");
            q3.wait();
            push(&l3, "inner woken");
            5
        });
        *ih.borrow_mut() = Some(inner.handle());
        push(&l2, "outer enters inner");
        // The inner wait is the outer one's: `enter` returns only when the inner coroutine
        // finishes (or yields plainly).
        let r = inner.enter();
        push(&l2, format!("outer sees {r:?}"));
        r.finished().unwrap() * 2
    });
    assert_eq!(outer.enter(), Status::Yielded);
    assert!(
        outer.is_parked(),
        "the outer coroutine waits with the inner one"
    );
    let inner = inner_handle.borrow().clone().unwrap();
    assert!(inner.is_parked() && inner.is_held());
    // Only the outer coroutine may enter the inner one again.
    let err = catch_unwind(AssertUnwindSafe(|| inner.enter())).unwrap_err();
    assert!(
        message_string(&*err).contains("waits with it"),
        "{}",
        message_string(&*err)
    );
    // A spurious resume of the root: the chain looks, and waits again.
    assert_eq!(outer.enter(), Status::Yielded);
    assert!(inner.is_held());
    // Waking the queue (outside any coroutine, no driver): the wake goes to the root, which is
    // entered at once and enters the inner coroutine again.
    assert!(q.wake_next());
    assert!(outer.is_finished());
    assert_eq!(outer.take_result(), Some(10));
    assert!(inner.is_finished() && !inner.is_held());
    assert_eq!(
        *l.borrow(),
        [
            "outer enters inner",
            "inner waits",
            "inner woken",
            "outer sees Finished(5)",
        ]
    );
}

/// A driver that records which roots it was asked to wake.
struct Recorder(RefCell<Vec<CoHandle>>);

impl Driver for Recorder {
    fn wake(&self, root: &CoHandle) {
        self.0.borrow_mut().push(root.clone());
    }
    fn waker(&self, _root: &CoHandle) -> Option<std::task::Waker> {
        None
    }
}

#[test]
fn a_wake_of_a_nested_wait_goes_to_the_roots_driver() {
    let m = Rc::new(CoMutex::new(0));
    let holder = {
        let m = m.clone();
        Coroutine::new(move || {
            let mut g = m.lock();
            yield_now();
            *g += 1;
        })
    };
    assert_eq!(holder.enter(), Status::Yielded);
    let driver = Rc::new(Recorder(RefCell::new(Vec::new())));
    let m2 = m.clone();
    let root = Coroutine::new(move || {
        let m3 = m2.clone();
        let inner = Coroutine::new(move || {
            let mut g = m3.lock();
            *g += 10;
            *g
        });
        inner.enter().finished()
    });
    root.set_driver(Some(driver.clone() as Rc<dyn Driver>));
    assert_eq!(root.enter(), Status::Yielded);
    assert!(root.is_parked());
    assert!(driver.0.borrow().is_empty());
    // The holder unlocks: the lock is handed to the inner coroutine, and the wake-up goes to
    // the root's driver — the core enters nothing itself.
    assert_eq!(holder.enter(), Status::Finished(()));
    assert_eq!(driver.0.borrow().len(), 1);
    assert_eq!(driver.0.borrow()[0], root.handle());
    assert!(root.is_parked(), "the driver decides when to enter it");
    assert_eq!(root.enter(), Status::Finished(Some(11)));
    assert_eq!(*m.try_lock().unwrap(), 11);
    // The driver's handle of the root and the root's reference to the driver form a cycle
    // until the driver lets go of the handle, as a real driver does once it entered the root.
    driver.0.borrow_mut().clear();
}

#[test]
fn wake_of_a_root_with_a_driver_goes_to_the_driver() {
    let driver = Rc::new(Recorder(RefCell::new(Vec::new())));
    let co = Coroutine::new(|| Park::new().suspend());
    co.set_driver(Some(driver.clone() as Rc<dyn Driver>));
    assert!(co.driver().is_some());
    let _ = co.enter();
    co.wake();
    co.wake(); // drivers are told every time; they queue once
    assert_eq!(driver.0.borrow().len(), 2);
    assert!(co.is_parked(), "not entered by the core");
    co.set_driver(None);
    co.wake(); // no driver any more: the core enters it at once
    assert!(co.is_finished());
}

#[test]
fn park_knows_its_root_and_driver() {
    let driver = Rc::new(Recorder(RefCell::new(Vec::new())));
    let co = Coroutine::new(|| {
        let outer_id = current().unwrap().id();
        let inner = Coroutine::new(move || {
            let p = Park::new();
            (
                p.root_id() == outer_id,
                p.root().id() == outer_id,
                p.driver().is_some(),
                p.waker().is_none(),
            )
        });
        inner.enter().finished().unwrap()
    });
    co.set_driver(Some(driver as Rc<dyn Driver>));
    assert_eq!(co.enter(), Status::Finished((true, true, true, true)));
}

#[test]
fn a_park_cannot_be_used_from_another_coroutine() {
    let slot: Rc<RefCell<Option<Park>>> = Rc::default();
    let s = slot.clone();
    let a = Coroutine::new(move || *s.borrow_mut() = Some(Park::new()));
    let _ = a.enter();
    let s = slot.clone();
    let b = Coroutine::new(move || {
        let p = s.borrow_mut().take().unwrap();
        let err = catch_unwind(AssertUnwindSafe(|| p.suspend())).unwrap_err();
        message_string(&*err)
    });
    let msg = b.enter().finished().unwrap();
    assert!(msg.contains("another coroutine"), "{msg}");
}

#[test]
fn a_park_that_outlives_its_coroutine_is_refused_without_touching_it() {
    // The coroutine is gone (its stack back in the pool) when its `Park` is used: the `Park`
    // must not read the freed control block, only compare its address with the running one.
    let co = Coroutine::new(Park::new);
    let p = co.enter().finished().unwrap();
    drop(co);
    assert_eq!(format!("{p:?}"), "Park { .. }");
    let uses: [fn(&Park); 4] = [
        |p| p.suspend(),
        |p| {
            let _ = p.root_id();
        },
        |p| drop(p.waker()),
        |p| p.until(|| false),
    ];
    for use_it in uses {
        let err = catch_unwind(AssertUnwindSafe(|| use_it(&p))).unwrap_err();
        let msg = message_string(&*err);
        assert!(msg.contains("another coroutine"), "{msg}");
    }
}

#[test]
fn park_outside_a_coroutine_panics_clearly() {
    assert!(Park::try_new().is_none());
    let err = catch_unwind(Park::new).unwrap_err();
    assert!(message_string(&*err).contains("outside of any coroutine"));
}

#[test]
fn a_dropped_coroutine_that_catches_its_unwind_cannot_wait_again() {
    let drops = Rc::new(Cell::new(0));
    struct D(Rc<Cell<u32>>);
    impl Drop for D {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }
    let caught = Rc::new(Cell::new(0));
    let (d, c) = (drops.clone(), caught.clone());
    let co = Coroutine::new(move || {
        let _d = D(d);
        let q = CoQueue::new();
        let r = catch_unwind(AssertUnwindSafe(|| q.wait()));
        if r.is_err() {
            c.set(c.get() + 1);
        }
        // A careless handler that waits again: the unwind goes on from here.
        Park::new().suspend();
        unreachable!("a cancelled coroutine does not wait");
    });
    assert_eq!(co.enter(), Status::Yielded);
    drop(co);
    assert_eq!((caught.get(), drops.get()), (1, 1));
}

#[test]
fn a_generator_body_waiting_on_a_lock_makes_a_coroutine_resumer_wait() {
    let m = Rc::new(CoMutex::new(()));
    let guard = m.try_lock().unwrap();
    let m2 = m.clone();
    let g = Rc::new(RefCell::new(Generator::<(), u32, ()>::new(move |y, ()| {
        let _g = m2.lock(); // waits: the resumer waits with it
        y.suspend(1);
        y.suspend(2);
    })));
    let g2 = g.clone();
    let resumer = Coroutine::new(move || {
        let a = g2.borrow_mut().resume(());
        let b = g2.borrow_mut().resume(());
        (a, b)
    });
    assert_eq!(resumer.enter(), Status::Yielded);
    assert!(resumer.is_parked());
    drop(guard); // outside any coroutine: hands the lock over and enters the root now
    assert_eq!(
        resumer.take_result(),
        Some((GeneratorState::Yielded(1), GeneratorState::Yielded(2)))
    );
}

#[test]
fn a_generator_body_waiting_when_resumed_outside_a_coroutine_is_reported_and_recovers() {
    let m = Rc::new(CoMutex::new(()));
    let guard = m.try_lock().unwrap();
    let m2 = m.clone();
    let drops = Rc::new(Cell::new(0u32));
    struct In(Rc<Cell<u32>>, u32);
    impl Drop for In {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }
    let mut g = Generator::<In, u32, u32>::new(move |y, first| {
        let _g = m2.lock();
        let f = first.1;
        drop(first);
        let next = y.suspend(f + 1);
        next.1 * 10
    });
    let err = catch_unwind(AssertUnwindSafe(|| g.resume(In(drops.clone(), 1)))).unwrap_err();
    let msg = message_string(&*err);
    assert!(msg.contains("outside of any coroutine"), "{msg}");
    // Handing the lock over enters the body (no driver, outside any coroutine): it reaches its
    // suspend point with nobody to take the value, and keeps it for the next `resume`.
    drop(guard);
    assert_eq!(
        drops.get(),
        1,
        "the first input was taken and dropped by the body"
    );
    // That `resume` gets the kept value; its own input came while the body was not waiting for
    // one, and is dropped.
    assert_eq!(g.resume(In(drops.clone(), 100)), GeneratorState::Yielded(2));
    assert_eq!(drops.get(), 2);
    assert_eq!(g.resume(In(drops.clone(), 7)), GeneratorState::Complete(70));
    assert_eq!(drops.get(), 3);
}

#[test]
fn entering_from_a_wake_up_loop_starts_a_chain_of_its_own() {
    // A coroutine entered by the deferred wake-up loop that a nested enterer runs is not part of
    // that enterer's chain: its root is itself.
    let woken_root = Rc::new(Cell::new(None));
    let wr = woken_root.clone();
    let sleeper = Coroutine::new(move || {
        yield_now();
        wr.set(Some(Park::new().root_id() == current().unwrap().id()));
    });
    let _ = sleeper.enter();
    let s = sleeper.handle();
    let outer = Coroutine::new(move || {
        let waker = Coroutine::new(move || s.wake());
        let _ = waker.enter(); // the sleeper runs in this enter's wake-up loop
    });
    assert_eq!(outer.enter(), Status::Finished(()));
    assert_eq!(woken_root.get(), Some(true));
}
