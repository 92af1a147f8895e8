//! Bottom halves: QEMU's `tests/unit/test-aio.c` bottom-half cases with their exact counts,
//! and the rules of `BottomHalf` (at most once pending, next turn, cancel, drop).

use costack_aio::{sleep, spawn, BottomHalf, EventLoop};
use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A counter and a bottom half that bumps it (QEMU's `BHTestData` with `bh_test_cb`, without
/// the re-scheduling).
fn counting(lp: &EventLoop) -> (Rc<Cell<u32>>, BottomHalf) {
    let n = Rc::new(Cell::new(0));
    let c = n.clone();
    (n, lp.bottom_half(move || c.set(c.get() + 1)))
}

#[test]
fn bh_schedule() {
    let lp = EventLoop::new();
    let (n, bh) = counting(&lp);
    bh.schedule();
    assert_eq!(n.get(), 0);
    assert!(lp.poll(true));
    assert_eq!(n.get(), 1);
    assert!(!lp.poll(false));
    assert_eq!(n.get(), 1);
    drop(bh);
}

/// A bottom half that re-schedules itself from its callback until it has run `max` times
/// (`bh_test_cb` with `data->max`).
fn self_scheduling(lp: &EventLoop, max: u32) -> (Rc<Cell<u32>>, Rc<RefCell<Option<BottomHalf>>>) {
    let n = Rc::new(Cell::new(0));
    let slot: Rc<RefCell<Option<BottomHalf>>> = Rc::new(RefCell::new(None));
    let (c, s) = (n.clone(), Rc::downgrade(&slot));
    let bh = lp.bottom_half(move || {
        c.set(c.get() + 1);
        if c.get() < max {
            if let Some(s) = s.upgrade() {
                s.borrow().as_ref().unwrap().schedule();
            }
        }
    });
    *slot.borrow_mut() = Some(bh);
    (n, slot)
}

#[test]
fn bh_schedule10() {
    let lp = EventLoop::new();
    let (n, bh) = self_scheduling(&lp, 10);
    bh.borrow().as_ref().unwrap().schedule();
    assert_eq!(n.get(), 0);
    assert!(lp.poll(false));
    assert_eq!(
        n.get(),
        1,
        "re-scheduled from its callback: not again in the same turn"
    );
    assert!(lp.poll(true));
    assert_eq!(n.get(), 2);
    let mut polls = 0;
    while n.get() < 10 {
        assert!(lp.poll(true));
        polls += 1;
    }
    assert_eq!(polls, 8, "one run per turn");
    assert_eq!(n.get(), 10);
    assert!(!lp.poll(false));
    assert_eq!(n.get(), 10);
}

#[test]
fn bh_cancel() {
    let lp = EventLoop::new();
    let (n, bh) = counting(&lp);
    bh.schedule();
    assert_eq!(n.get(), 0);
    bh.cancel();
    assert!(!bh.is_scheduled());
    assert_eq!(n.get(), 0);
    assert!(!lp.poll(false));
    assert_eq!(n.get(), 0);
}

#[test]
fn bh_delete() {
    let lp = EventLoop::new();
    let (n, bh) = counting(&lp);
    bh.schedule();
    assert_eq!(n.get(), 0);
    drop(bh);
    assert_eq!(n.get(), 0);
    assert!(!lp.poll(false));
    assert_eq!(n.get(), 0);
}

/// QEMU's `bh_delete_cb`: re-schedules itself until it has run `max` times, then deletes itself
/// (drops its own `BottomHalf`) from inside the callback.
fn deleting(lp: &EventLoop, max: u32) -> (Rc<Cell<u32>>, Rc<RefCell<Option<BottomHalf>>>) {
    let n = Rc::new(Cell::new(0));
    let slot: Rc<RefCell<Option<BottomHalf>>> = Rc::new(RefCell::new(None));
    let (c, s) = (n.clone(), slot.clone());
    let bh = lp.bottom_half(move || {
        c.set(c.get() + 1);
        if c.get() < max {
            s.borrow().as_ref().unwrap().schedule();
        } else {
            let me = s.borrow_mut().take();
            drop(me); // while its callback runs
        }
    });
    *slot.borrow_mut() = Some(bh);
    (n, slot)
}

#[test]
fn bh_delete_from_cb() {
    let lp = EventLoop::new();
    let (n, bh) = deleting(&lp, 1);
    bh.borrow().as_ref().unwrap().schedule();
    assert_eq!(n.get(), 0);
    while n.get() < 1 {
        lp.poll(true);
    }
    assert_eq!(n.get(), 1);
    assert!(bh.borrow().is_none());
    assert!(!lp.poll(false));
    // The callback (and the slot it captured) was dropped when it returned.
    assert_eq!(Rc::strong_count(&bh), 1);
}

#[test]
fn bh_delete_from_cb_many() {
    let lp = EventLoop::new();
    let maxes = [1, 3, 2, 4];
    let bhs: Vec<_> = maxes.iter().map(|&m| deleting(&lp, m)).collect();
    for (_, bh) in &bhs {
        bh.borrow().as_ref().unwrap().schedule();
    }
    for (n, _) in &bhs {
        assert_eq!(n.get(), 0);
    }
    assert!(lp.poll(false));
    for (n, _) in &bhs {
        assert_eq!(n.get(), 1);
    }
    assert!(bhs[0].1.borrow().is_none());
    assert!(bhs[1..].iter().all(|(_, bh)| bh.borrow().is_some()));
    let mut turns = 1;
    while bhs.iter().zip(maxes).any(|((n, _), m)| n.get() < m) {
        assert!(lp.poll(false));
        turns += 1;
    }
    assert_eq!(turns, 4, "the longest runs 4 times, once per turn");
    for ((n, bh), m) in bhs.iter().zip(maxes) {
        assert_eq!(n.get(), m);
        assert!(bh.borrow().is_none());
    }
    assert!(!lp.poll(false));
}

#[test]
fn bh_flush() {
    let lp = EventLoop::new();
    let (n, bh) = counting(&lp);
    bh.schedule();
    assert_eq!(n.get(), 0);
    let mut turns = 0;
    while lp.poll(false) {
        turns += 1;
    }
    assert_eq!(turns, 1);
    assert_eq!(n.get(), 1);
    assert!(!lp.poll(false));
    assert_eq!(n.get(), 1);
    drop(bh);
}

#[test]
fn scheduling_twice_before_it_runs_runs_it_once() {
    let lp = EventLoop::new();
    let (n, bh) = counting(&lp);
    bh.schedule();
    bh.schedule();
    assert!(bh.is_scheduled());
    assert!(lp.poll(false));
    assert!(!bh.is_scheduled());
    assert!(!lp.poll(false));
    assert_eq!(n.get(), 1);
}

#[test]
fn cancel_then_schedule_again_runs_it_once() {
    let lp = EventLoop::new();
    let (n, bh) = counting(&lp);
    for _ in 0..1000 {
        bh.schedule();
        bh.cancel();
    }
    bh.schedule();
    assert!(lp.poll(false));
    assert!(!lp.poll(false));
    assert_eq!(n.get(), 1);
}

#[test]
fn a_bottom_half_runs_after_the_tasks_ready_before_it() {
    let lp = EventLoop::new();
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    let bh = lp.bottom_half(move || l.borrow_mut().push("bh"));
    let l = log.clone();
    let _task = lp.spawn(move || l.borrow_mut().push("task"));
    bh.schedule();
    assert!(lp.poll(false));
    assert_eq!(*log.borrow(), ["task", "bh"]);
}

#[test]
fn a_bottom_half_scheduled_by_a_task_runs_while_block_on_drives_the_loop() {
    let lp = EventLoop::new();
    let (n, bh) = counting(&lp);
    let bh = Rc::new(bh);
    let b = bh.clone();
    let c = n.clone();
    let seen = lp.block_on(move || {
        b.schedule();
        sleep(Duration::from_millis(1));
        c.get()
    });
    assert_eq!(seen, 1);
    assert_eq!(n.get(), 1);
}

#[test]
fn a_bottom_half_that_reschedules_itself_forever_does_not_starve_timers() {
    let lp = EventLoop::new();
    let n = Rc::new(Cell::new(0u64));
    let slot: Rc<RefCell<Option<BottomHalf>>> = Rc::new(RefCell::new(None));
    let (c, s) = (n.clone(), Rc::downgrade(&slot));
    *slot.borrow_mut() = Some(lp.bottom_half(move || {
        c.set(c.get() + 1);
        if let Some(s) = s.upgrade() {
            s.borrow().as_ref().unwrap().schedule();
        }
    }));
    slot.borrow().as_ref().unwrap().schedule();
    let t0 = Instant::now();
    lp.block_on(|| {
        sleep(Duration::from_millis(20));
        let other = spawn(|| 7);
        assert_eq!(other.join(), 7);
    });
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert!(n.get() > 0, "it ran while the task slept");
    slot.borrow_mut().take();
    let before = n.get();
    assert!(!lp.poll(false), "dropped: it no longer runs");
    assert_eq!(n.get(), before);
}

#[test]
fn a_panicking_callback_continues_out_of_poll_and_the_bottom_half_stays_usable() {
    let lp = EventLoop::new();
    let n = Rc::new(Cell::new(0));
    let c = n.clone();
    let bh = lp.bottom_half(move || {
        c.set(c.get() + 1);
        if c.get() == 1 {
            panic!("first run fails");
        }
    });
    bh.schedule();
    let r = catch_unwind(AssertUnwindSafe(|| lp.poll(false)));
    assert_eq!(
        r.unwrap_err().downcast_ref::<&str>(),
        Some(&"first run fails")
    );
    bh.schedule();
    assert!(lp.poll(false));
    assert_eq!(n.get(), 2);
}

#[test]
fn dropping_a_bottom_half_drops_its_callback() {
    let lp = EventLoop::new();
    let token = Rc::new(());
    let t = token.clone();
    let bh = lp.bottom_half(move || drop(t.clone()));
    bh.schedule();
    assert_eq!(Rc::strong_count(&token), 2);
    drop(bh);
    assert_eq!(Rc::strong_count(&token), 1);
    assert!(!lp.poll(false));
}

#[test]
fn scheduling_after_the_loop_is_gone_does_nothing() {
    let lp = EventLoop::new();
    let (n, bh) = counting(&lp);
    bh.schedule(); // pending when the loop goes: dropped unrun
    drop(lp);
    bh.cancel();
    bh.schedule();
    assert_eq!(n.get(), 0);
}

#[test]
fn poll_from_inside_a_bottom_half_is_refused_with_a_clear_panic() {
    let lp = Rc::new(EventLoop::new());
    let l = Rc::downgrade(&lp);
    let bh = lp.bottom_half(move || {
        l.upgrade().unwrap().poll(false);
    });
    bh.schedule();
    let r = catch_unwind(AssertUnwindSafe(|| lp.poll(false)));
    let msg = r.unwrap_err().downcast::<String>().unwrap();
    assert!(msg.contains("already running"), "{msg}");
}

#[test]
fn bottom_half_new_without_a_loop_panics_with_a_clear_message() {
    let r = std::thread::spawn(|| drop(BottomHalf::new(|| {}))).join();
    let msg = r.unwrap_err().downcast::<String>().unwrap();
    assert!(msg.contains("needs an event loop"), "{msg}");
}

#[test]
fn a_flood_of_cross_thread_schedules_sends_one_message_and_runs_it_once() {
    let lp = EventLoop::new();
    let (n, bh) = counting(&lp);
    let remote = bh.remote();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let r = remote.clone();
            std::thread::spawn(move || (0..1000).all(|_| r.schedule()))
        })
        .collect();
    for t in threads {
        assert!(t.join().unwrap());
    }
    let mut turns = 0;
    while lp.poll(false) {
        turns += 1;
    }
    assert_eq!(n.get(), 1);
    assert_eq!(turns, 2, "the message's turn, then the bottom half's");
}

#[test]
fn a_blocking_poll_wakes_for_a_cross_thread_schedule() {
    let lp = EventLoop::new();
    let (n, bh) = counting(&lp);
    let remote = bh.remote();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(10));
        remote.schedule()
    });
    let t0 = Instant::now();
    while n.get() == 0 {
        lp.poll(true);
        assert!(t0.elapsed() < Duration::from_secs(10), "hung");
    }
    assert!(t.join().unwrap());
    assert_eq!(n.get(), 1);
    assert!(!lp.poll(false));
}

#[test]
fn a_cross_thread_schedule_after_the_bottom_half_is_dropped_runs_nothing() {
    let lp = EventLoop::new();
    let (n, bh) = counting(&lp);
    let remote = bh.remote();
    drop(bh);
    assert!(std::thread::spawn(move || remote.schedule())
        .join()
        .unwrap());
    assert!(lp.poll(false), "the message itself ran");
    assert!(!lp.poll(false));
    assert_eq!(n.get(), 0);
}

#[test]
fn a_cross_thread_schedule_after_the_loop_is_dropped_says_so() {
    let lp = EventLoop::new();
    let (_n, bh) = counting(&lp);
    let remote = bh.remote();
    drop(lp);
    assert!(!std::thread::spawn(move || remote.schedule())
        .join()
        .unwrap());
    assert!(!bh.remote().schedule(), "made after the loop was gone");
}
