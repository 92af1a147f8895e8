//! `JoinSet`, `join_all` and `try_join_all`: completion order, cancellation on drop (counting
//! destructors), panics, sets used outside tasks, dropped from their own tasks, and in selects.

use costack_aio::select::{sleep as sleep_branch, Flag};
use costack_aio::{
    join_all, sleep, spawn, timeout, try_join_all, yield_now, EventLoop, JoinError, JoinSet,
    TaskBuilder,
};
use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::time::Duration;

/// Counts its drops.
struct Guard(Rc<Cell<usize>>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

/// A task body that yields `n` times, then returns `v`.
fn after_yields(n: usize, v: u32) -> impl FnOnce() -> u32 {
    move || {
        for _ in 0..n {
            yield_now();
        }
        v
    }
}

#[test]
fn results_come_in_the_order_the_tasks_finish() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let mut set = JoinSet::new();
        assert!(set.is_empty());
        for (n, v) in [(5, 50), (1, 10), (9, 90), (3, 30), (0, 0)] {
            set.spawn(after_yields(n, v));
        }
        assert_eq!(set.len(), 5);
        assert!(set.try_join_next().is_none()); // none has run yet
        let mut got = Vec::new();
        while let Some(r) = set.join_next() {
            got.push(r.unwrap());
            assert_eq!(set.len(), 5 - got.len());
        }
        assert_eq!(got, [0, 10, 30, 50, 90]);
        assert!(set.is_empty());
        assert!(set.join_next().is_none());
    });
}

#[test]
fn try_join_next_takes_only_what_is_done() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let mut set = JoinSet::new();
        set.spawn(after_yields(0, 1));
        set.spawn(after_yields(100, 2));
        yield_now(); // the first finishes, the second is still yielding
        assert_eq!(set.try_join_next().unwrap().unwrap(), 1);
        assert!(set.try_join_next().is_none());
        assert_eq!(set.len(), 1);
        assert_eq!(set.join_next().unwrap().unwrap(), 2);
    });
}

#[test]
fn a_panicking_task_gives_panicked_and_the_others_go_on() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let mut set = JoinSet::new();
        set.spawn(after_yields(2, 7));
        set.spawn(|| -> u32 { panic!("task failed") });
        match set.join_next() {
            Some(Err(JoinError::Panicked(p))) => {
                assert_eq!(*p.downcast::<&str>().unwrap(), "task failed")
            }
            other => panic!("expected the panic first, got {other:?}"),
        }
        assert_eq!(set.join_next().unwrap().unwrap(), 7);
        assert!(set.join_next().is_none());
    });
}

#[test]
fn dropping_the_set_cancels_its_tasks_and_unwinds_their_stacks() {
    let lp = EventLoop::new();
    let drops = Rc::new(Cell::new(0));
    let finished = Rc::new(Cell::new(0));
    let (d, f) = (drops.clone(), finished.clone());
    lp.block_on(move || {
        let mut set = JoinSet::new();
        for i in 0..6 {
            let g = Guard(d.clone());
            let f = f.clone();
            set.spawn(move || {
                let _g = g;
                if i % 2 == 0 {
                    sleep(Duration::from_secs(3600)); // started, suspended
                }
                f.set(f.get() + 1);
            });
        }
        set.spawn({
            let g = Guard(d.clone());
            move || drop(g) // finishes before the drop: its result is just dropped
        });
        // Let the tasks run until the sleepers are suspended; the odd ones finished.
        yield_now();
        assert_eq!((d.get(), f.get()), (4, 3));
        drop(set);
        // The three sleepers unwound at once.
        assert_eq!((d.get(), f.get()), (7, 3));
    });
    assert_eq!((drops.get(), finished.get()), (7, 3));
    assert_eq!(lp.task_count(), 0);
}

#[test]
fn tasks_that_never_ran_are_dropped_with_the_set() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let drops = Rc::new(Cell::new(0));
        let ran = Rc::new(Cell::new(false));
        let mut set = JoinSet::new();
        for _ in 0..3 {
            let g = Guard(drops.clone());
            let ran = ran.clone();
            set.spawn(move || {
                let _g = g;
                ran.set(true);
            });
        }
        drop(set); // before any of them ran
        assert_eq!(drops.get(), 3);
        yield_now();
        assert!(!ran.get());
    });
}

#[test]
fn abort_all_empties_the_set_and_detach_all_lets_tasks_run_on() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let drops = Rc::new(Cell::new(0));
        let mut set = JoinSet::new();
        for _ in 0..3 {
            let g = Guard(drops.clone());
            set.spawn(move || {
                let _g = g;
                sleep(Duration::from_secs(3600));
            });
        }
        yield_now();
        set.abort_all();
        assert_eq!(drops.get(), 3);
        assert!(set.is_empty());
        assert!(set.join_next().is_none());

        // The same set again, detached this time.
        let done = Rc::new(Cell::new(0));
        for n in [1, 2] {
            let done = done.clone();
            set.spawn(move || {
                for _ in 0..n {
                    yield_now();
                }
                done.set(done.get() + 1);
            });
        }
        set.detach_all();
        assert!(set.is_empty());
        drop(set);
        for _ in 0..4 {
            yield_now();
        }
        assert_eq!(done.get(), 2);
    });
}

#[test]
fn join_next_outside_any_task_drives_the_loop() {
    let lp = EventLoop::new();
    let mut set = JoinSet::new();
    set.spawn_with(&TaskBuilder::new().name("a"), || {
        sleep(Duration::from_millis(10));
        "slow"
    });
    set.spawn(|| "quick");
    assert_eq!(set.join_next().unwrap().unwrap(), "quick");
    assert_eq!(set.join_next().unwrap().unwrap(), "slow");
    assert!(set.join_next().is_none());
    drop(lp);
}

#[test]
fn a_set_outlives_its_loop_with_cancelled_results() {
    let lp = EventLoop::new();
    let mut set = JoinSet::new();
    set.spawn(|| sleep(Duration::from_secs(3600)));
    set.spawn(|| ());
    drop(lp); // shuts down: both tasks are dropped unfinished
    let mut cancelled = 0;
    while let Some(r) = set.join_next() {
        assert!(matches!(r, Err(JoinError::Cancelled)));
        cancelled += 1;
    }
    assert_eq!(cancelled, 2);
}

#[test]
fn dropping_the_set_from_one_of_its_own_tasks_cancels_the_others_only() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let drops = Rc::new(Cell::new(0));
        let set: Rc<RefCell<Option<JoinSet<()>>>> = Rc::new(RefCell::new(Some(JoinSet::new())));
        let me_done = Rc::new(Cell::new(false));
        for _ in 0..3 {
            let g = Guard(drops.clone());
            set.borrow_mut().as_mut().unwrap().spawn(move || {
                let _g = g;
                sleep(Duration::from_secs(3600));
            });
        }
        let (s2, md) = (set.clone(), me_done.clone());
        set.borrow_mut().as_mut().unwrap().spawn(move || {
            let taken = s2.borrow_mut().take();
            drop(taken); // drops the set this task is in
            yield_now(); // still running: it was detached, not cancelled
            md.set(true);
        });
        yield_now();
        yield_now();
        assert_eq!(drops.get(), 3);
        assert!(me_done.get());
        assert!(set.borrow().is_none());
    });
}

#[test]
fn join_next_branch_in_a_select_and_under_a_timeout() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let go = Flag::new();
        let g2 = go.clone();
        let mut set = JoinSet::new();
        set.spawn(move || {
            costack_aio::select! { () = g2.branch() => 1 } // finishes when told to
        });
        // The timer wins; the set keeps its task.
        let r = costack_aio::select! {
            r = set.join_next_branch() => r.map(Result::unwrap),
            () = sleep_branch(Duration::from_millis(2)) => Some(0),
        };
        assert_eq!(r, Some(0));
        assert_eq!(set.len(), 1);
        // A timeout interrupts join_next; nothing is lost.
        assert!(timeout(Duration::from_millis(2), || set.join_next()).is_err());
        assert_eq!(set.len(), 1);
        go.raise();
        let r = costack_aio::select! {
            r = set.join_next_branch() => r.map(Result::unwrap),
            () = sleep_branch(Duration::from_secs(60)) => Some(0),
        };
        assert_eq!(r, Some(1));
        // An empty set's branch fires at once with None.
        let r = costack_aio::select! {
            r = set.join_next_branch() => r.map(Result::unwrap),
            () = sleep_branch(Duration::from_secs(60)) => Some(0),
        };
        assert_eq!(r, None);
    });
}

#[test]
fn join_all_keeps_the_input_order_and_continues_a_panic_after_all_finished() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let hs = [(4, 40), (0, 0), (2, 20)].map(|(n, v)| spawn(after_yields(n, v)));
        assert_eq!(join_all(hs), [40, 0, 20]);
        assert_eq!(join_all(Vec::<costack_aio::JoinHandle<u8>>::new()), []);

        let finished = Rc::new(Cell::new(0));
        let f = finished.clone();
        let slow = spawn(move || {
            for _ in 0..5 {
                yield_now();
            }
            f.set(1);
        });
        let bad = spawn(|| panic!("first"));
        let bad2 = spawn(|| panic!("second"));
        let e = catch_unwind(AssertUnwindSafe(|| join_all([bad2, slow, bad]))).unwrap_err();
        // The first panic in input order continues, after every task finished.
        assert_eq!(*e.downcast::<&str>().unwrap(), "second");
        assert_eq!(finished.get(), 1);
    });
}

#[test]
fn try_join_all_returns_the_first_error_and_cancels_the_rest() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let hs = [(3, 3), (1, 1)].map(|(n, v)| spawn(after_yields(n, v)));
        assert_eq!(try_join_all(hs).unwrap(), [3, 1]);

        let drops = Rc::new(Cell::new(0));
        let g = Guard(drops.clone());
        let slow = spawn(move || {
            let _g = g;
            sleep(Duration::from_secs(3600));
            0
        });
        let bad = spawn(|| -> i32 {
            yield_now();
            panic!("boom")
        });
        match try_join_all([slow, bad]) {
            Err(JoinError::Panicked(p)) => assert_eq!(*p.downcast::<&str>().unwrap(), "boom"),
            other => panic!("expected the panic, got {other:?}"),
        }
        assert_eq!(drops.get(), 1); // the slow one was cancelled
    });
}

#[test]
fn a_join_next_branch_outside_any_task_runs_the_loop() {
    let lp = EventLoop::new();
    let mut set = JoinSet::new();
    set.spawn(|| {
        yield_now();
        1
    });
    let r = costack_aio::select! {
        r = set.join_next_branch() => r.map(Result::unwrap),
        () = sleep_branch(Duration::from_secs(60)) => Some(0),
    };
    assert_eq!(r, Some(1));
    assert!(set.is_empty());
    drop(lp);
}

// ---------------------------------------------------------------------------------------------
// Model: join_next gives every task's result once, in the order the tasks finished.

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]

    #[test]
    fn join_next_gives_every_result_once_in_completion_order(
        tasks in proptest::collection::vec((0usize..6, proptest::bool::weighted(0.2)), 0..20),
        join_every in 1usize..4,
    ) {
        let lp = EventLoop::new();
        lp.block_on(move || {
            let finished: Rc<RefCell<Vec<usize>>> = Rc::default();
            let mut set = JoinSet::new();
            let mut got = Vec::new();
            for (i, &(yields, panics)) in tasks.iter().enumerate() {
                let finished = finished.clone();
                set.spawn(move || {
                    for _ in 0..yields {
                        yield_now();
                    }
                    finished.borrow_mut().push(i);
                    if panics {
                        panic!("task {i}");
                    }
                    i
                });
                // Join some while others are still being added.
                if i % join_every == 0 {
                    if let Some(r) = set.join_next() {
                        got.push(r);
                    }
                }
            }
            while let Some(r) = set.join_next() {
                got.push(r);
            }
            let order = finished.borrow().clone();
            assert_eq!(got.len(), tasks.len());
            assert_eq!(order.len(), tasks.len());
            for (r, &i) in got.into_iter().zip(&order) {
                match r {
                    Ok(v) => assert_eq!((v, tasks[i].1), (i, false)),
                    Err(JoinError::Panicked(p)) => {
                        assert!(tasks[i].1);
                        assert_eq!(*p.downcast::<String>().unwrap(), format!("task {i}"));
                    }
                    Err(e) => panic!("task {i}: {e:?}"),
                }
            }
        });
    }
}
