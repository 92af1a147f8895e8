//! Coroutines nested inside tasks: their waits are their task's (the resume contract,
//! `costack::park`). Every test runs its loop on a thread of its own with a time bound.

use costack::sync::CoMutex;
use costack::{Coroutine, Generator, GeneratorState, Status};
use costack_aio::net::UnixStream;
use costack_aio::{in_task, sleep, spawn, timeout, EventLoop};
use std::cell::RefCell;
use std::io::{Read, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

#[path = "common/threads.rs"]
mod threads;
use threads::{bounded, FromThread};

#[test]
fn a_generator_in_a_task_awaits_futures_woken_from_other_threads() {
    let (values, in_task_inside) = bounded(10, || {
        let lp = EventLoop::new();
        lp.block_on(|| {
            let mut g = Generator::<(), u32, bool>::new(|y, ()| {
                for i in 0..3 {
                    y.suspend(costack::bridge::await_future(FromThread::new(
                        Duration::from_millis(5),
                        i * 7,
                    )));
                }
                in_task()
            });
            let mut values = Vec::new();
            for _ in 0..10 {
                match g.resume(()) {
                    GeneratorState::Yielded(v) => values.push(v),
                    GeneratorState::Complete(t) => return (values, t),
                }
            }
            panic!("the generator did not complete");
        })
    });
    assert_eq!(values, [0, 7, 14]);
    assert!(
        in_task_inside,
        "a coroutine nested in a task is in the task"
    );
}

#[test]
fn a_lock_handed_between_tasks_goes_through_the_loop() {
    let log = bounded(10, || {
        let lp = EventLoop::new();
        lp.block_on(|| {
            let m = Rc::new(CoMutex::new(Vec::new()));
            let hs: Vec<_> = (0..3)
                .map(|i| {
                    let m = m.clone();
                    spawn(move || {
                        let mut g = m.lock();
                        g.push(format!("{i} in"));
                        sleep(Duration::from_millis(2)); // holds the lock across a loop wait
                        g.push(format!("{i} out"));
                    })
                })
                .collect();
            for h in hs {
                h.join();
            }
            let v = m.try_lock().unwrap().clone();
            v
        })
    });
    assert_eq!(
        log,
        ["0 in", "0 out", "1 in", "1 out", "2 in", "2 out"],
        "FIFO hand-off, one holder at a time"
    );
}

#[test]
fn a_timeout_around_a_nested_wait_abandons_the_nested_coroutine() {
    let (r, elapsed_ok, finished) = bounded(10, || {
        let lp = EventLoop::new();
        lp.block_on(|| {
            let t0 = Instant::now();
            let co = Rc::new(Coroutine::new(|| sleep(Duration::from_secs(3600))));
            let c = co.clone();
            let r = timeout(Duration::from_millis(20), move || c.enter());
            (
                r.is_err(),
                t0.elapsed() >= Duration::from_millis(20),
                co.is_finished(),
            )
        })
    });
    assert!(r, "the timeout expired");
    assert!(elapsed_ok);
    assert!(finished, "the nested coroutine was unwound by the timeout");
}

/// Logs its name when it is dropped (by an unwind, in these tests).
struct Note(Rc<RefCell<Vec<&'static str>>>, &'static str);

impl Drop for Note {
    fn drop(&mut self) {
        self.0.borrow_mut().push(self.1);
    }
}

#[test]
fn cancelling_a_task_unwinds_a_nested_coroutine_waiting_on_a_socket() {
    let (drops, count, ok_after) = bounded(10, || {
        let lp = EventLoop::new();
        let drops = Rc::new(RefCell::new(Vec::new()));
        let (a, mut b) = UnixStream::pair().unwrap();
        let d = drops.clone();
        let h = lp.spawn(move || {
            let _task = Note(d.clone(), "task");
            let d2 = d.clone();
            let nested = Coroutine::new(move || {
                let _n = Note(d2, "nested");
                let mut a = a;
                let mut buf = [0u8; 4];
                let _ = a.read(&mut buf); // waits: nobody writes
            });
            let _ = nested.enter();
            unreachable!("the task waits with the nested coroutine");
        });
        lp.block_on(costack_aio::yield_now);
        assert!(!h.is_finished());
        h.cancel();
        let count = lp.task_count();
        // The loop is still fine: a new task can use the other end.
        let ok = lp.block_on(move || b.write(b"x").is_err());
        let v = drops.borrow().clone();
        (v, count, ok)
    });
    assert_eq!(drops, ["nested", "task"]);
    assert_eq!(count, 0);
    assert!(ok_after, "the peer end was closed by the unwinding");
}

#[test]
fn costack_yield_now_in_a_nested_coroutine_returns_to_its_enterer() {
    let got = bounded(10, || {
        let lp = EventLoop::new();
        lp.block_on(|| {
            let co = Coroutine::new(|| {
                costack::yield_now();
                1
            });
            let first = co.enter();
            let second = co.enter();
            (first, second)
        })
    });
    assert_eq!(got, (Status::Yielded, Status::Finished(1)));
}

#[test]
fn a_task_cancelled_from_a_coroutine_it_entered_unwinds_at_once() {
    // The task's own JoinHandle is cancelled inside a coroutine nested in the task: the caller
    // is that task (the root of its chain), so `cancel` must not return there; both stacks
    // unwind, innermost first.
    let log = bounded(10, || {
        let lp = EventLoop::new();
        let log = Rc::new(RefCell::new(Vec::new()));
        let slot: Rc<RefCell<Option<costack_aio::JoinHandle<()>>>> = Rc::default();
        let (l, s) = (log.clone(), slot.clone());
        let h = lp.spawn(move || {
            let _task = Note(l.clone(), "task unwound");
            let l2 = l.clone();
            let nested = Coroutine::new(move || {
                let _n = Note(l2.clone(), "nested unwound");
                let me = s
                    .borrow_mut()
                    .take()
                    .expect("handle stored before the task ran");
                me.cancel();
                l2.borrow_mut().push("cancel returned");
            });
            let _ = nested.enter();
            l.borrow_mut().push("task went on");
        });
        *slot.borrow_mut() = Some(h);
        lp.block_on(|| costack_aio::sleep(Duration::from_millis(20)));
        assert_eq!(lp.task_count(), 0);
        let v = log.borrow().clone();
        v
    });
    assert_eq!(log, ["nested unwound", "task unwound"]);
}
