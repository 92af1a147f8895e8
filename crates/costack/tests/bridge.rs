//! The async bridge: `await_future` inside coroutines, `as_future` under tokio and
//! futures::executor.

use costack::bridge::{as_future, await_future};
use costack::{yield_now, CoHandle, Coroutine, Driver};
use std::cell::Cell;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

#[path = "common/panics.rs"]
mod panics;
use panics::message_string;

#[path = "common/tokio_local.rs"]
mod tokio_local;
use tokio_local::block_on_local;

/// A future that is pending `n` times (waking its waker each time), then ready with `v`.
struct PendingTimes<T> {
    n: usize,
    v: Option<T>,
    polls: Rc<Cell<usize>>,
}

impl<T: Unpin> Future for PendingTimes<T> {
    type Output = T;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        self.polls.set(self.polls.get() + 1);
        if self.n == 0 {
            return Poll::Ready(self.v.take().expect("polled after ready"));
        }
        self.n -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[test]
fn await_future_outside_a_coroutine_panics() {
    let msg = message_string(&*catch_unwind(|| await_future(async { 1 })).unwrap_err());
    assert!(msg.contains("outside of any coroutine"), "{msg}");
}

#[test]
fn await_future_with_nobody_to_reenter_panics() {
    let co = Coroutine::new(|| {
        message_string(&*catch_unwind(|| await_future(std::future::pending::<()>())).unwrap_err())
    });
    let msg = co.enter().finished().unwrap();
    assert!(msg.contains("nothing would enter it again"), "{msg}");
}

#[test]
fn ready_futures_complete_without_yielding() {
    let co = Coroutine::new(|| await_future(async { 7 }) + await_future(std::future::ready(1)));
    assert_eq!(co.enter().finished(), Some(8));
}

#[test]
fn futures_executor_hosts_sync_code() {
    let polls = Rc::new(Cell::new(0));
    let p = polls.clone();
    let v = futures::executor::block_on(as_future(move || {
        let a = await_future(PendingTimes {
            n: 3,
            v: Some(40),
            polls: p.clone(),
        });
        let b = await_future(PendingTimes {
            n: 1,
            v: Some(2),
            polls: p,
        });
        a + b
    }));
    assert_eq!(v, 42);
    assert_eq!(polls.get(), 4 + 2);
}

#[test]
fn plain_yields_inside_a_hosted_coroutine_keep_it_going() {
    let v = futures::executor::block_on(as_future(|| {
        for _ in 0..5 {
            yield_now();
        }
        5
    }));
    assert_eq!(v, 5);
}

#[test]
fn tokio_current_thread_and_local_set() {
    let out = block_on_local(async {
        let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
        // Synchronous code waiting on a tokio channel and a tokio timer.
        let waiter = tokio::task::spawn_local(as_future(move || {
            await_future(tokio::time::sleep(Duration::from_millis(5)));
            await_future(rx).unwrap() + 1
        }));
        let sender = tokio::task::spawn_local(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            tx.send(41).unwrap();
        });
        sender.await.unwrap();
        waiter.await.unwrap()
    });
    assert_eq!(out, 42);
}

#[test]
fn a_pending_inner_future_does_not_block_the_executor_thread() {
    // Two hosted coroutines on one current-thread runtime: while the first waits for a value
    // that only the second produces, the executor must keep running the second.
    let got = block_on_local(async {
        let (tx, rx) = tokio::sync::oneshot::channel::<&'static str>();
        let a = tokio::task::spawn_local(as_future(move || await_future(rx).unwrap()));
        let b = tokio::task::spawn_local(as_future(move || {
            await_future(tokio::task::yield_now());
            tx.send("from b").unwrap();
        }));
        b.await.unwrap();
        a.await.unwrap()
    });
    assert_eq!(got, "from b");
}

#[test]
fn panics_surface_from_poll() {
    let r = catch_unwind(AssertUnwindSafe(|| {
        futures::executor::block_on(as_future(|| -> u8 {
            await_future(async {});
            panic!("sync code failed")
        }))
    }));
    assert_eq!(
        r.unwrap_err().downcast_ref::<&str>(),
        Some(&"sync code failed")
    );
}

/// Counts its drops.
struct Counted(Rc<Cell<u32>>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

/// A pending future that records its drop.
struct Forever(#[allow(dead_code)] Counted);

impl Future for Forever {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}

#[test]
fn dropping_the_outer_future_unwinds_the_coroutine_and_drops_the_inner_future() {
    let drops = Rc::new(Cell::new(0));
    let d = drops.clone();
    let mut fut = Box::pin(as_future(move || {
        let _on_stack = Counted(d.clone());
        await_future(Forever(Counted(d)));
    }));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    assert_eq!(drops.get(), 0);
    drop(fut);
    assert_eq!(
        drops.get(),
        2,
        "the inner future and the stack's value were dropped"
    );
}

/// A waker that counts its wakes.
struct CountWake(AtomicUsize);

impl Wake for CountWake {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn spurious_polls_and_wakes_after_completion_are_harmless() {
    let counter = Arc::new(CountWake(AtomicUsize::new(0)));
    let waker = Waker::from(counter.clone());
    let mut cx = Context::from_waker(&waker);
    let slot: Rc<Cell<Option<Waker>>> = Rc::default();
    let s2 = slot.clone();
    let ready = Rc::new(Cell::new(false));
    let r2 = ready.clone();
    // A future that keeps the waker it was last polled with and is ready when told.
    struct Gate(Rc<Cell<Option<Waker>>>, Rc<Cell<bool>>);
    impl Future for Gate {
        type Output = &'static str;
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<&'static str> {
            if self.1.get() {
                Poll::Ready("open")
            } else {
                self.0.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        }
    }
    let mut fut = Box::pin(as_future(move || await_future(Gate(s2, r2))));
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    // Spurious polls: nothing changed, still pending, and no busy self-wake.
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    assert_eq!(counter.0.load(Ordering::SeqCst), 0);
    ready.set(true);
    let w = slot.take().unwrap();
    w.wake_by_ref();
    assert_eq!(
        counter.0.load(Ordering::SeqCst),
        1,
        "the inner waker is the task's"
    );
    assert_eq!(fut.as_mut().poll(&mut cx), Poll::Ready("open"));
    // A late wake of the finished task is harmless.
    w.wake();
    assert_eq!(counter.0.load(Ordering::SeqCst), 2);
    drop(fut);
}

#[test]
fn a_custom_driver_gets_the_futures_wakes() {
    // A toy driver: its waker records a wake; the "loop" below enters the coroutine again when
    // it sees one.
    struct Toy(Arc<CountWake>);
    impl Driver for Toy {
        fn wake(&self, _root: &CoHandle) {
            self.0 .0.fetch_add(1, Ordering::SeqCst);
        }
        fn waker(&self, _root: &CoHandle) -> Option<Waker> {
            Some(Waker::from(self.0.clone()))
        }
    }
    let woken = Arc::new(CountWake(AtomicUsize::new(0)));
    let polls = Rc::new(Cell::new(0));
    let p = polls.clone();
    let co = Coroutine::new(move || {
        await_future(PendingTimes {
            n: 2,
            v: Some("done"),
            polls: p,
        })
    });
    co.set_driver(Some(Rc::new(Toy(woken.clone()))));
    let mut result = None;
    let mut enters = 0;
    let mut seen = 0;
    while result.is_none() {
        enters += 1;
        assert!(enters < 10, "did not finish within 10 entries");
        result = co.enter().finished();
        if result.is_none() {
            assert!(
                co.is_parked(),
                "waiting for a future is a wait, not a plain yield"
            );
            let now = woken.0.load(Ordering::SeqCst);
            assert!(now > seen, "parked without a wake pending");
            seen = now;
        }
    }
    assert_eq!(result, Some("done"));
    assert_eq!(enters, 2);
    // A first poll with a no-op waker, a second with the driver's (which the future woke at
    // once), and a third that is ready.
    assert_eq!(polls.get(), 3);
    assert_eq!(woken.0.load(Ordering::SeqCst), 1);
}
