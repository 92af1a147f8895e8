//! Waiting allocates nothing: the queue entry lives on the waiting coroutine's stack. Counted
//! with a global allocator that tallies this thread's allocations.

use costack::sync::{CoMutex, CoQueue, CoRwLock, CoRwLockReadGuard, CoSemaphore};
use costack::{yield_now, Coroutine};
use std::rc::Rc;

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::allocs;

#[path = "common/deadline.rs"]
mod deadline;

const ROUNDS: usize = 1000;

/// Every coroutine does `ROUNDS` rounds of `body`, each contended; main enters them round-robin
/// until all finish. Returns the allocations made while they ran.
fn contend(n: usize, body: impl Fn() + Clone + 'static) -> u64 {
    let cos: Vec<Coroutine> = (0..n)
        .map(|_| {
            let body = body.clone();
            Coroutine::new(move || {
                for _ in 0..ROUNDS {
                    body();
                }
            })
        })
        .collect();
    let mut live = cos.len();
    // Warm up: every coroutine has waited at least once before counting starts.
    for _ in 0..3 {
        for c in cos.iter().filter(|c| !c.is_finished()) {
            let _ = c.enter();
        }
    }
    let before = allocs();
    // Each round completes at least one coroutine's step; far fewer are needed.
    let mut rounds = 0;
    while live > 0 {
        rounds += 1;
        assert!(
            rounds < 100 * ROUNDS,
            "did not finish within {} rounds",
            100 * ROUNDS
        );
        live = 0;
        for c in cos.iter().filter(|c| !c.is_finished()) {
            let _ = c.enter();
            live += 1;
        }
    }
    allocs() - before
}

#[test]
fn waiting_does_not_allocate() {
    let _deadline = deadline::arm();
    let before = allocs();
    drop(std::hint::black_box(Box::new(1)));
    assert!(allocs() > before, "the counter counts");

    let m = Rc::new(CoMutex::new(0u64));
    let n = contend(3, move || {
        let mut g = m.lock();
        *g += 1;
        yield_now();
    });
    assert_eq!(n, 0, "CoMutex");

    let l = Rc::new(CoRwLock::new(0u64));
    let n = contend(3, move || {
        {
            let r = l.read();
            yield_now();
            let mut w = CoRwLockReadGuard::upgrade(r);
            *w += 1;
            yield_now();
        }
        let _w = l.write();
        yield_now();
    });
    assert_eq!(n, 0, "CoRwLock");

    let s = Rc::new(CoSemaphore::new(3));
    let n = contend(4, move || {
        let _p = s.acquire(2);
        yield_now();
    });
    assert_eq!(n, 0, "CoSemaphore");

    // Two coroutines that wake each other through a queue and then wait, releasing a mutex
    // meanwhile: one `enter` runs the whole ping-pong. Run it twice; count the second.
    let ping_pong = || {
        let q = Rc::new(CoQueue::new());
        let m = Rc::new(CoMutex::new(()));
        let cos: Vec<Coroutine> = (0..2)
            .map(|_| {
                let (q, m) = (q.clone(), m.clone());
                Coroutine::new(move || {
                    for _ in 0..ROUNDS {
                        q.wake_next();
                        drop(q.wait_with(m.lock()));
                    }
                })
            })
            .collect();
        let before = allocs();
        let _ = cos[0].enter();
        let _ = cos[1].enter();
        assert!(q.wake_next(), "the last one waits for nobody");
        assert!(cos.iter().all(|c| c.is_finished()));
        allocs() - before
    };
    ping_pong();
    assert_eq!(ping_pong(), 0, "CoQueue");
}
