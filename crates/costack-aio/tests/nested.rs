//! Coroutines nested inside tasks: their waits are their task's (the resume contract,
//! `costack::park`). Every test runs its loop on a thread of its own with a time bound.

use costack::sync::CoMutex;
use costack::{Coroutine, Generator, GeneratorState, Status};
use costack_aio::net::UnixStream;
use costack_aio::{in_task, sleep, spawn, timeout, EventLoop};
use std::cell::RefCell;
use std::future::Future;
use std::io::{Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Runs `f` on a thread of its own; panics if it takes longer than `secs` seconds.
fn bounded<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = catch_unwind(AssertUnwindSafe(f));
        let _ = tx.send(r);
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(Ok(v)) => v,
        Ok(Err(p)) => std::panic::resume_unwind(p),
        Err(_) => panic!("did not finish within {secs} s (hung)"),
    }
}

/// A future completed by another thread after `after`.
struct FromThread {
    state: Arc<Mutex<(Option<u32>, Option<Waker>)>>,
}

impl FromThread {
    fn new(after: Duration, value: u32) -> FromThread {
        let state: Arc<Mutex<(Option<u32>, Option<Waker>)>> = Arc::default();
        let s = state.clone();
        std::thread::spawn(move || {
            std::thread::sleep(after);
            let w = {
                let mut g = s.lock().unwrap();
                g.0 = Some(value);
                g.1.take()
            };
            if let Some(w) = w {
                w.wake();
            }
        });
        FromThread { state }
    }
}

impl Future for FromThread {
    type Output = u32;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
        let mut g = self.state.lock().unwrap();
        match g.0 {
            Some(v) => Poll::Ready(v),
            None => {
                g.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

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

#[test]
fn cancelling_a_task_unwinds_a_nested_coroutine_waiting_on_a_socket() {
    let (drops, count, ok_after) = bounded(10, || {
        let lp = EventLoop::new();
        let drops = Rc::new(RefCell::new(Vec::new()));
        let (a, mut b) = UnixStream::pair().unwrap();
        let d = drops.clone();
        let h = lp.spawn(move || {
            struct Note(Rc<RefCell<Vec<&'static str>>>, &'static str);
            impl Drop for Note {
                fn drop(&mut self) {
                    self.0.borrow_mut().push(self.1);
                }
            }
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
