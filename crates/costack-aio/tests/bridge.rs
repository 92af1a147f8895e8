//! `costack::bridge::await_future` in tasks of an event loop: the future's waker resumes the
//! task on its home loop, also when woken from another thread.

use costack::bridge::await_future;
use costack_aio::EventLoop;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// A future completed by another thread through a shared slot.
#[derive(Default)]
struct Shared {
    value: Option<u32>,
    waker: Option<Waker>,
}

struct FromThread(Arc<Mutex<Shared>>);

impl Future for FromThread {
    type Output = u32;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
        let mut s = self.0.lock().unwrap();
        match s.value.take() {
            Some(v) => Poll::Ready(v),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[test]
fn a_wake_from_another_thread_resumes_the_task_on_its_home_loop() {
    let ev = EventLoop::new();
    let home = std::thread::current().id();
    let (v, same_thread) = ev.block_on(move || {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let s2 = shared.clone();
        let t = std::thread::spawn(move || {
            // Complete the future only once the task has polled it and is waiting (a fixed
            // sleep here was too short under valgrind on a loaded machine).
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let mut s = s2.lock().unwrap();
                if let Some(waker) = s.waker.take() {
                    s.value = Some(42);
                    drop(s);
                    waker.wake();
                    return;
                }
                drop(s);
                assert!(
                    std::time::Instant::now() < deadline,
                    "the task never polled the future"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let v = await_future(FromThread(shared));
        t.join().unwrap();
        (v, std::thread::current().id() == home)
    });
    assert_eq!(v, 42);
    assert!(same_thread);
}

#[test]
fn other_tasks_run_while_one_awaits() {
    let ev = EventLoop::new();
    let order = ev.block_on(|| {
        let (tx, rx) = tokio::sync::oneshot::channel::<&'static str>();
        let waiter = costack_aio::spawn(move || await_future(rx).unwrap());
        let sender = costack_aio::spawn(move || {
            costack_aio::sleep(Duration::from_millis(10));
            tx.send("sent by another task").unwrap();
        });
        sender.join();
        waiter.join()
    });
    assert_eq!(order, "sent by another task");
}

/// Pending twice, waking its waker twice each time (spurious and duplicate wakes), then ready.
struct Noisy(u32);

impl Future for Noisy {
    type Output = &'static str;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<&'static str> {
        if self.0 == 0 {
            return Poll::Ready("quiet now");
        }
        self.0 -= 1;
        cx.waker().wake_by_ref();
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[test]
fn duplicate_and_spurious_wakes_are_harmless() {
    let ev = EventLoop::new();
    assert_eq!(ev.block_on(|| await_future(Noisy(3))), "quiet now");
    // The loop is still healthy afterwards.
    assert_eq!(ev.block_on(|| await_future(std::future::ready(5))), 5);
}
