//! What a select costs: a select whose first branch is ready, a ping-pong between two tasks
//! that wait in a select against one that waits with `suspend` directly, and joining many
//! small tasks through a `JoinSet` against joining their handles one by one.
//!
//! ```sh
//! cargo run --release -p costack-aio --example select_bench
//! ```

use costack_aio::select::{sleep, Selectable};
use costack_aio::{spawn, suspend, EventLoop, JoinSet, Waker};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A one-reader queue: the values and the waker of whoever waits for the next.
#[derive(Default)]
struct Q {
    items: VecDeque<u64>,
    waiter: Option<Waker>,
}

#[derive(Clone, Default)]
struct Chan(Rc<RefCell<Q>>);

impl Chan {
    fn push(&self, v: u64) {
        let w = {
            let mut q = self.0.borrow_mut();
            q.items.push_back(v);
            q.waiter.take()
        };
        if let Some(w) = w {
            w.wake();
        }
    }

    /// Waits for a value with `suspend` (no select).
    fn recv(&self) -> u64 {
        loop {
            if let Some(v) = self.0.borrow_mut().items.pop_front() {
                return v;
            }
            suspend(|w| self.0.borrow_mut().waiter = Some(w));
        }
    }
}

impl Selectable for &Chan {
    type Output = u64;
    fn try_select(&mut self) -> Option<u64> {
        self.0.borrow_mut().items.pop_front()
    }
    fn register(&mut self, waker: &Waker) {
        self.0.borrow_mut().waiter = Some(waker.clone());
    }
    fn deregister(&mut self) {
        self.0.borrow_mut().waiter = None;
    }
}

fn per_op(label: &str, n: u64, f: impl FnOnce()) {
    let t0 = Instant::now();
    f();
    let ns = t0.elapsed().as_nanos() as f64 / n as f64;
    println!("{label:<52} {ns:>8.1} ns/op");
}

#[derive(Clone, Copy, PartialEq)]
enum Wait {
    Suspend,
    Select,
    SelectTimer,
}

fn ping_pong(lp: &EventLoop, n: u64, how: Wait) {
    lp.block_on(move || {
        let (a, b) = (Chan::default(), Chan::default());
        let (a2, b2) = (a.clone(), b.clone());
        let recv = move |c: &Chan| -> u64 {
            match how {
                Wait::Suspend => c.recv(),
                Wait::Select => costack_aio::select! { v = c => v },
                Wait::SelectTimer => costack_aio::select! {
                    v = c => v,
                    () = sleep(Duration::from_secs(60)) => u64::MAX,
                },
            }
        };
        let peer = spawn(move || {
            for _ in 0..n {
                let v = recv(&a2);
                b2.push(v + 1);
            }
        });
        let mut v = 0;
        for _ in 0..n {
            a.push(v);
            v = recv(&b);
        }
        assert_eq!(v, n);
        peer.join();
    });
}

fn main() {
    const N: u64 = 1_000_000;
    let lp = EventLoop::new();
    lp.block_on(|| {
        let c = Chan::default();
        per_op("select!, first of 2 branches ready", N, || {
            for i in 0..N {
                c.push(i);
                let v = costack_aio::select! {
                    v = &c => v,
                    () = sleep(Duration::from_secs(60)) => 0,
                };
                assert_eq!(v, i);
            }
        });
    });
    for (label, how) in [
        ("ping-pong round trip, waiting with suspend", Wait::Suspend),
        (
            "ping-pong round trip, waiting in select! (1 branch)",
            Wait::Select,
        ),
        (
            "ping-pong round trip, select! with a timer branch",
            Wait::SelectTimer,
        ),
    ] {
        per_op(label, N / 4, || ping_pong(&lp, N / 4, how));
    }
    const T: u64 = 100_000;
    lp.block_on(|| {
        per_op("spawn + JoinHandle::join, 1000 at a time", T, || {
            for _ in 0..T / 1000 {
                let hs: Vec<_> = (0..1000u64).map(|i| spawn(move || i)).collect();
                for h in hs {
                    h.join();
                }
            }
        });
        per_op("JoinSet::spawn + join_next, 1000 at a time", T, || {
            for _ in 0..T / 1000 {
                let mut set = JoinSet::new();
                for i in 0..1000u64 {
                    set.spawn(move || i);
                }
                while set.join_next().is_some() {}
            }
        });
    });
}
