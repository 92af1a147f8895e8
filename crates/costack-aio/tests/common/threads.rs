//! Threads in tests: a time bound on a test's work (a hang fails instead of stalling the run),
//! and a future that another thread completes. Included with `#[path]`.

#![allow(dead_code)]

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Runs `f` on a thread of its own and returns its result, or panics if it takes longer than
/// `secs` seconds (a hang).
pub fn bounded<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
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

/// A future completed by another thread after `after`, with `value`.
pub struct FromThread {
    state: Arc<Mutex<(Option<u32>, Option<Waker>)>>,
}

impl FromThread {
    pub fn new(after: Duration, value: u32) -> FromThread {
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
