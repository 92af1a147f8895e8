//! Behaviour of the core: QEMU's coroutine unit tests ported in our own code, plus panics,
//! drops, misuse, deep stacks, many coroutines and deferred wake-ups.

use costack::{current, in_coroutine, pool, yield_now, Builder, CoHandle, Coroutine, Status};
use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

#[path = "common/panics.rs"]
mod panics;

/// Enough `enter`s for any coroutine here to finish: a loop that drives one to the end fails
/// instead of hanging if it never does.
const STEP_LIMIT: u32 = 10_000;

/// Extracts the message of a panic payload.
fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else {
        "<non-string payload>".into()
    }
}

#[test]
fn current_is_the_created_coroutine() {
    let slot: Rc<RefCell<Option<CoHandle>>> = Rc::default();
    let s = slot.clone();
    let co = Coroutine::new(move || {
        *s.borrow_mut() = current();
    });
    assert!(co.enter().is_finished());
    let seen = slot
        .borrow_mut()
        .take()
        .expect("current() inside a coroutine");
    assert_eq!(seen, co.handle());
    assert_eq!(seen.id(), co.id());
}

#[test]
fn in_coroutine_reports_where_we_run() {
    assert!(!in_coroutine());
    assert!(current().is_none());
    let co = Coroutine::new(|| {
        let inside = in_coroutine();
        let inner = Coroutine::new(in_coroutine);
        (inside, inner.enter().finished().unwrap())
    });
    assert_eq!(co.enter().finished(), Some((true, true)));
    assert!(!in_coroutine());
}

#[test]
fn entered_inside_nesting_and_after_yield() {
    let co = Coroutine::new(|| {
        let me = current().unwrap();
        assert!(me.is_entered());
        let outer = me.clone();
        let inner = Coroutine::new(move || {
            // Both the inner coroutine and the one that entered it are entered.
            assert!(current().unwrap().is_entered());
            assert!(outer.is_entered());
            yield_now();
        });
        assert!(!inner.is_entered());
        assert_eq!(inner.enter(), Status::Yielded);
        assert!(!inner.is_entered());
        assert!(inner.is_suspended());
        yield_now();
        assert_eq!(inner.enter(), Status::Finished(()));
        assert!(!inner.is_entered());
    });
    assert!(!co.is_entered());
    assert_eq!(co.enter(), Status::Yielded);
    assert!(!co.is_entered(), "a yielded coroutine is not entered");
    assert!(co.enter().is_finished());
    assert!(!co.is_entered());
    assert!(co.is_finished());
}

#[test]
fn five_yields_take_six_enters() {
    let done = Rc::new(Cell::new(0));
    let d = done.clone();
    let co = Coroutine::new(move || {
        for _ in 0..5 {
            d.set(d.get() + 1);
            yield_now();
        }
    });
    let mut enters = 0;
    loop {
        enters += 1;
        assert!(
            enters < STEP_LIMIT,
            "the coroutine did not finish within {STEP_LIMIT} steps"
        );
        if co.enter().is_finished() {
            break;
        }
    }
    assert_eq!(enters, 6);
    assert_eq!(done.get(), 5);
}

/// Enters a chain of `depth` coroutines, each entering the next, and returns how many ran.
fn nest(depth: u32) -> u32 {
    fn level(remaining: u32, count: Rc<Cell<u32>>) {
        count.set(count.get() + 1);
        if remaining > 1 {
            let c = count.clone();
            let child = Builder::new()
                .stack_size(64 * 1024)
                .create(move || level(remaining - 1, c));
            assert!(child.enter().is_finished());
        }
    }
    let count = Rc::new(Cell::new(0));
    let c = count.clone();
    let root = Coroutine::new(move || level(depth, c));
    assert!(root.enter().is_finished());
    count.get()
}

#[test]
fn nesting_128_deep() {
    assert_eq!(nest(128), 128);
}

#[test]
fn nesting_1000_deep() {
    assert_eq!(nest(1000), 1000);
}

#[test]
fn nested_yields_return_to_the_enterer_in_order() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    let outer = Coroutine::new(move || {
        let l2 = l.clone();
        let inner = Coroutine::new(move || {
            l2.borrow_mut().push("inner 1");
            yield_now();
            l2.borrow_mut().push("inner 2");
        });
        l.borrow_mut().push("outer 1");
        let _ = inner.enter();
        l.borrow_mut().push("outer 2");
        yield_now();
        l.borrow_mut().push("outer 3");
        let _ = inner.enter();
        l.borrow_mut().push("outer 4");
    });
    log.borrow_mut().push("main 1");
    let _ = outer.enter();
    log.borrow_mut().push("main 2");
    let _ = outer.enter();
    log.borrow_mut().push("main 3");
    assert_eq!(
        *log.borrow(),
        [
            "main 1", "outer 1", "inner 1", "outer 2", "main 2", "outer 3", "inner 2", "outer 4",
            "main 3"
        ]
    );
}

#[test]
fn main_and_coroutine_interleave_in_order() {
    // QEMU's /basic/order: record each step on both sides.
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    let co = Coroutine::new(move || {
        l.borrow_mut().push(2);
        yield_now();
        l.borrow_mut().push(4);
    });
    log.borrow_mut().push(1);
    let _ = co.enter();
    log.borrow_mut().push(3);
    let _ = co.enter();
    log.borrow_mut().push(5);
    assert_eq!(*log.borrow(), [1, 2, 3, 4, 5]);
}

#[test]
fn pool_is_bounded_and_trimmable() {
    pool::trim();
    pool::set_capacity(4);
    let cos: Vec<_> = (0..10).map(|i| Coroutine::new(move || i)).collect();
    for co in &cos {
        assert!(co.enter().is_finished());
    }
    drop(cos);
    assert_eq!(pool::len(), 4);
    pool::set_capacity(2);
    assert_eq!(pool::len(), 2);
    pool::trim();
    assert_eq!(pool::len(), 0);
    pool::set_capacity(pool::DEFAULT_CAPACITY);
}

#[test]
fn try_new_creates_on_the_default_stack() {
    let co = Coroutine::try_new(|| 5u32).expect("a default stack");
    assert_eq!(co.stack_size(), costack::DEFAULT_STACK_SIZE);
    assert_eq!(co.name(), None);
    assert_eq!(co.enter(), Status::Finished(5));
}

#[test]
fn a_closure_too_big_for_its_stack_panics_naming_both_sizes() {
    let big = [7u8; 9000];
    let r = catch_unwind(|| Builder::new().stack_size(16 * 1024).create(move || big[0]));
    let payload = r.expect_err("a 9000-byte closure does not fit in half of 16 KiB");
    let msg = payload
        .downcast_ref::<String>()
        .expect("a formatted message");
    // The size named is the stack's, rounded up to whole pages (16384 with 4 or 16 KiB pages).
    assert!(
        msg.ends_with("-byte stack; box it or use a larger stack"),
        "{msg}"
    );
    assert!(msg.starts_with("costack: a coroutine closure or result of 9000 bytes"));
}

#[test]
fn pool_bound_holds_when_its_list_has_room() {
    // Warm the pool's list so that it has spare room, then lower the bound below what it
    // holds: the freed stacks must be unmapped, not pushed into the room left.
    pool::trim();
    pool::set_capacity(8);
    let cos: Vec<_> = (0..8).map(|i| Coroutine::new(move || i)).collect();
    for co in &cos {
        assert!(co.enter().is_finished());
    }
    drop(cos);
    assert_eq!(pool::len(), 8);
    pool::set_capacity(3);
    assert_eq!(pool::len(), 3);
    let cos: Vec<_> = (0..5).map(|i| Coroutine::new(move || i)).collect();
    assert_eq!(pool::len(), 0);
    drop(cos);
    assert_eq!(pool::len(), 3);
    pool::set_capacity(0);
    assert_eq!(pool::len(), 0);
    drop(Coroutine::new(|| ()));
    assert_eq!(pool::len(), 0, "capacity 0 turns pooling off");
    pool::set_capacity(pool::DEFAULT_CAPACITY);
}

#[test]
fn panic_continues_in_the_enterer_with_its_payload() {
    #[derive(Debug, PartialEq)]
    struct Boom(u32);
    let co = Coroutine::new(|| {
        yield_now();
        std::panic::panic_any(Boom(42));
    });
    let _ = co.enter();
    let err = catch_unwind(AssertUnwindSafe(|| co.enter())).expect_err("the panic crosses");
    assert_eq!(err.downcast_ref::<Boom>(), Some(&Boom(42)));
    assert!(co.is_finished());
    // Entering it again is misuse: finished.
    let err = catch_unwind(AssertUnwindSafe(|| co.enter())).unwrap_err();
    assert!(panic_message(err).contains("finished"));
}

#[test]
fn panic_crosses_nested_coroutines() {
    let co = Coroutine::new(|| {
        let inner = Coroutine::new(|| -> () { panic!("deep trouble") });
        let r = catch_unwind(AssertUnwindSafe(|| inner.enter()));
        let msg = panic_message(r.unwrap_err());
        assert_eq!(msg, "deep trouble");
        let inner2 = Coroutine::new(|| -> () { panic!("uncaught in the middle") });
        let _ = inner2.enter();
    });
    let err = catch_unwind(AssertUnwindSafe(|| co.enter())).unwrap_err();
    assert_eq!(panic_message(err), "uncaught in the middle");
}

/// Counts its drops.
struct Counted(Rc<Cell<u32>>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

#[test]
fn dropping_a_suspended_coroutine_runs_its_destructors() {
    let drops = Rc::new(Cell::new(0));
    let d = drops.clone();
    let reached_end = Rc::new(Cell::new(false));
    let r = reached_end.clone();
    let co = Coroutine::new(move || {
        let _a = Counted(d.clone());
        fn deeper(d: Rc<Cell<u32>>) {
            let _b = Counted(d.clone());
            let _c = Counted(d);
            yield_now();
        }
        deeper(d.clone());
        let _d = Counted(d);
        yield_now();
        r.set(true);
    });
    assert_eq!(co.enter(), Status::Yielded);
    assert_eq!(drops.get(), 0);
    drop(co);
    // _a, _b, _c and the closure's captured `d` clones (not Counted) — three Counted dropped.
    assert_eq!(drops.get(), 3);
    assert!(!reached_end.get());
}

#[test]
fn dropping_a_never_entered_coroutine_drops_its_closure() {
    let drops = Rc::new(Cell::new(0));
    let c = Counted(drops.clone());
    let co = Coroutine::new(move || {
        let _keep = &c;
        unreachable!("never entered");
    });
    drop(co);
    assert_eq!(drops.get(), 1);
}

#[test]
fn unclaimed_results_are_dropped() {
    let drops = Rc::new(Cell::new(0));
    let d = drops.clone();
    let co = Coroutine::new(move || Counted(d));
    let h = co.handle();
    assert_eq!(h.enter(), Status::Finished(()));
    drop(co);
    assert_eq!(drops.get(), 0, "a handle still refers to the coroutine");
    drop(h);
    assert_eq!(drops.get(), 1);
}

#[test]
fn results_finished_through_a_handle_can_be_taken() {
    let co = Coroutine::new(|| String::from("kept"));
    assert_eq!(co.handle().enter(), Status::Finished(()));
    assert_eq!(co.take_result().as_deref(), Some("kept"));
    assert_eq!(co.take_result(), None);
}

#[test]
fn dropping_nested_suspended_coroutines_unwinds_both() {
    let drops = Rc::new(Cell::new(0));
    let d = drops.clone();
    let outer = Coroutine::new(move || {
        let _o = Counted(d.clone());
        let d2 = d.clone();
        let inner = Coroutine::new(move || {
            let _i = Counted(d2);
            yield_now();
        });
        let _ = inner.enter();
        yield_now();
        drop(inner);
    });
    let _ = outer.enter();
    drop(outer);
    assert_eq!(drops.get(), 2);
}

#[test]
fn dropping_a_suspended_coroutine_while_panicking() {
    let drops = Rc::new(Cell::new(0));
    let d = drops.clone();
    let r = catch_unwind(AssertUnwindSafe(move || {
        let co = Coroutine::new(move || {
            let _x = Counted(d);
            yield_now();
        });
        let _ = co.enter();
        panic!("enterer fails while the coroutine is suspended");
    }));
    let err = r.expect_err("the enterer's panic");
    assert_eq!(
        panic_message(err),
        "enterer fails while the coroutine is suspended"
    );
    assert_eq!(
        drops.get(),
        1,
        "the coroutine's stack was unwound during the panic"
    );
}

#[test]
fn a_coroutine_that_catches_the_forced_unwind_still_ends() {
    panics::forced_unwind_type(); // measured before, not during, the unwind under test
    let caught = Rc::new(Cell::new(None));
    let c = caught.clone();
    let co = Coroutine::new(move || {
        let r = catch_unwind(yield_now);
        // Being dropped: the unwind was caught. Yielding again just unwinds again.
        c.set(Some(r.map_err(|p| panics::is_forced_unwind(&*p))));
        yield_now();
        unreachable!();
    });
    let _ = co.enter();
    drop(co); // must return, not hang or crash
    assert_eq!(
        caught.get(),
        Some(Err(true)),
        "yield_now unwound with costack's forced unwind"
    );
}

#[test]
fn a_dropped_coroutine_that_catches_its_unwind_at_every_yield_ends_when_it_lets_go() {
    // Measured before, not during, the unwind under test.
    panics::forced_unwind_type();
    // (caught unwinds, yields that returned normally after the drop began, destructor runs)
    let seen = Rc::new(Cell::new((0u32, 0u32, 0u32)));
    struct D(Rc<Cell<(u32, u32, u32)>>);
    impl Drop for D {
        fn drop(&mut self) {
            let (c, r, d) = self.0.get();
            self.0.set((c, r, d + 1));
        }
    }
    let s = seen.clone();
    let co = Coroutine::new(move || {
        let _d = D(s.clone());
        let me = current().unwrap().id();
        let mut dropping = false;
        for _ in 0..3 {
            match catch_unwind(yield_now) {
                Ok(()) if dropping => {
                    let (c, r, d) = s.get();
                    s.set((c, r + 1, d));
                }
                Ok(()) => {}
                Err(p) => {
                    assert!(panics::is_forced_unwind(&*p));
                    // Still this coroutine, running on its own stack.
                    assert_eq!(current().map(|c| c.id()), Some(me));
                    dropping = true;
                    let (c, r, d) = s.get();
                    s.set((c + 1, r, d));
                }
            }
        }
        yield_now(); // not caught: the unwind ends the coroutine here
        unreachable!("a coroutine being dropped never returns from a yield");
    });
    assert_eq!(co.enter(), Status::Yielded);
    assert_eq!(co.enter(), Status::Yielded);
    drop(co);
    assert_eq!(
        seen.get(),
        (2, 0, 1),
        "two caught unwinds, no normal return, one drop"
    );
    assert!(!in_coroutine(), "the thread is back outside any coroutine");
}

#[test]
fn a_coroutine_dropped_inside_another_that_yields_again_while_unwinding_leaves_it_running() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    let outer = Coroutine::new(move || {
        let l2 = l.clone();
        let inner = Coroutine::new(move || {
            if catch_unwind(yield_now).is_err() {
                l2.borrow_mut().push("inner caught");
                yield_now(); // back to the dropper, which enters it again to go on unwinding
            }
            unreachable!();
        });
        let outer_id = current().unwrap().id();
        assert_eq!(inner.enter(), Status::Yielded);
        drop(inner);
        assert_eq!(
            current().map(|c| c.id()),
            Some(outer_id),
            "the dropper is current again"
        );
        l.borrow_mut().push("outer yields");
        yield_now();
        l.borrow_mut().push("outer resumed");
        7
    });
    assert_eq!(outer.enter(), Status::Yielded);
    assert_eq!(outer.enter(), Status::Finished(7));
    assert_eq!(
        *log.borrow(),
        ["inner caught", "outer yields", "outer resumed"]
    );
}

#[test]
fn a_dropped_coroutine_woken_by_its_own_wake_up_while_unwinding_ends_once() {
    // While unwinding, `victim` makes a handle to itself, wakes `helper` and yields again
    // (caught). Its dropper runs the wake-up: `helper` wakes `victim`, which is entered from
    // that wake-up loop and ends there; the dropper then finds it finished.
    let log = Rc::new(RefCell::new(Vec::new()));
    let me_slot: Rc<RefCell<Option<CoHandle>>> = Rc::default();
    let (l, m) = (log.clone(), me_slot.clone());
    let helper = Coroutine::new(move || {
        yield_now();
        l.borrow_mut().push("helper runs");
        let victim = m.borrow_mut().take().unwrap();
        victim.wake();
        l.borrow_mut().push("helper woke victim");
    });
    assert_eq!(helper.enter(), Status::Yielded);
    let helper_handle = helper.handle();
    let (l, m) = (log.clone(), me_slot.clone());
    struct Logged(Rc<RefCell<Vec<&'static str>>>);
    impl Drop for Logged {
        fn drop(&mut self) {
            self.0.borrow_mut().push("victim dropped its locals");
        }
    }
    let victim = Coroutine::new(move || {
        let _g = Logged(l.clone());
        if catch_unwind(yield_now).is_err() {
            l.borrow_mut().push("victim caught");
            *m.borrow_mut() = current();
            helper_handle.wake();
            yield_now();
        }
        unreachable!();
    });
    assert_eq!(victim.enter(), Status::Yielded);
    drop(victim);
    assert_eq!(
        *log.borrow(),
        [
            "victim caught",
            "helper runs",
            "helper woke victim",
            "victim dropped its locals"
        ]
    );
    assert!(helper.is_finished());
    assert!(me_slot.borrow().is_none());
}

#[test]
fn reentering_itself_panics() {
    let co = Coroutine::new(|| {
        let me = current().unwrap();
        let err = catch_unwind(AssertUnwindSafe(|| me.enter())).unwrap_err();
        panic_message(err)
    });
    let msg = co.enter().finished().unwrap();
    assert!(msg.contains("already entered"), "{msg}");
}

#[test]
fn entering_an_ancestor_panics() {
    let outer = Coroutine::new(|| {
        let me = current().unwrap();
        let inner = Coroutine::new(move || {
            let err = catch_unwind(AssertUnwindSafe(|| me.enter())).unwrap_err();
            panic_message(err)
        });
        inner.enter().finished().unwrap()
    });
    let msg = outer.enter().finished().unwrap();
    assert!(msg.contains("already entered"), "{msg}");
}

#[test]
fn yield_outside_a_coroutine_panics() {
    let err = catch_unwind(yield_now).unwrap_err();
    assert!(panic_message(err).contains("outside of any coroutine"));
}

#[test]
fn half_a_megabyte_of_a_one_megabyte_stack() {
    #[inline(never)]
    fn use_stack() -> u64 {
        let mut big = [0u8; 512 * 1024];
        for (i, b) in big.iter_mut().enumerate() {
            *b = i as u8;
        }
        std::hint::black_box(&mut big);
        yield_now();
        big.iter().map(|&b| b as u64).sum()
    }
    let co = Coroutine::new(use_stack);
    assert_eq!(co.stack_size(), 1 << 20);
    assert_eq!(co.enter(), Status::Yielded);
    let expected: u64 = (0..512 * 1024u64).map(|i| i % 256).sum();
    assert_eq!(co.enter(), Status::Finished(expected));
}

#[test]
fn ten_thousand_live_suspended_coroutines() {
    let total = Rc::new(Cell::new(0u64));
    let cos: Vec<_> = (0..10_000u64)
        .map(|i| {
            let t = total.clone();
            Builder::new().stack_size(16 * 1024).create(move || {
                yield_now();
                t.set(t.get() + i);
            })
        })
        .collect();
    for co in &cos {
        assert_eq!(co.enter(), Status::Yielded);
    }
    for co in cos.iter().rev() {
        assert!(co.enter().is_finished());
    }
    assert_eq!(total.get(), (0..10_000u64).sum());
}

#[test]
fn names_and_ids() {
    let a = Builder::new().name("alpha").create(|| ());
    let b = Coroutine::new(|| ());
    assert_eq!(a.name(), Some("alpha"));
    assert_eq!(b.name(), None);
    assert_ne!(a.id(), b.id());
    let shown = a.id().to_string();
    assert!(shown.starts_with("co"), "{shown}");
    assert!(format!("{a:?}").contains("alpha"));
    let err = catch_unwind(AssertUnwindSafe(|| {
        let _ = a.enter();
        let _ = a.enter();
    }))
    .unwrap_err();
    let msg = panic_message(err);
    assert!(msg.contains("alpha") && msg.contains("finished"), "{msg}");
}

#[test]
fn status_helpers() {
    assert!(Status::Finished(1).is_finished());
    assert!(!Status::<u8>::Yielded.is_finished());
    assert_eq!(Status::Finished(3).finished(), Some(3));
    assert_eq!(Status::<u8>::Yielded.finished(), None);
}

#[test]
fn coroutines_are_bound_to_their_thread_but_threads_each_have_their_own() {
    let handles: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let co = Coroutine::new(move || {
                    yield_now();
                    t * 2
                });
                let _ = co.enter();
                co.enter().finished().unwrap()
            })
        })
        .collect();
    let got: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(got, [0, 2, 4, 6]);
}
