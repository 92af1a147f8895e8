//! The steady-state paths allocate nothing: an enter + yield round trip, and a pooled
//! create + enter + terminate + drop. Counted with a global allocator that tallies this
//! thread's allocations.

use costack::{yield_now, Coroutine, Generator};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::allocs;

#[test]
fn round_trips_allocate_nothing() {
    let co = Coroutine::new(|| loop {
        yield_now();
    });
    let _ = co.enter();
    let before = allocs();
    for _ in 0..10_000 {
        assert!(!co.enter().is_finished());
    }
    assert_eq!(allocs() - before, 0);
}

#[test]
fn pooled_create_run_drop_allocates_nothing() {
    // Warm up: the first coroutine maps a stack and the pool grows its list once.
    for _ in 0..4 {
        let co = Coroutine::new(|| 1u64);
        let _ = co.enter();
    }
    let before = allocs();
    for i in 0..10_000u64 {
        let co = Coroutine::new(move || {
            yield_now();
            i * 2
        });
        let _ = co.enter();
        assert_eq!(co.enter().finished(), Some(i * 2));
    }
    assert_eq!(allocs() - before, 0);
}

#[test]
fn generator_values_allocate_nothing() {
    let mut gen = Generator::new(|y, ()| {
        let mut i = 0u64;
        loop {
            y.suspend(i);
            i += 1;
        }
    });
    let _ = gen.next();
    let before = allocs();
    let sum: u64 = gen.by_ref().take(10_000).sum();
    assert_eq!(allocs() - before, 0);
    assert_eq!(sum, (1..=10_000u64).sum());
}

#[test]
fn deferred_wakeups_allocate_nothing() {
    let sleeper = Coroutine::new(|| loop {
        yield_now();
    });
    let _ = sleeper.enter();
    let s = sleeper.handle();
    let waker = Coroutine::new(move || loop {
        s.wake();
        yield_now();
    });
    let _ = waker.enter();
    let before = allocs();
    for _ in 0..10_000 {
        let _ = waker.enter();
    }
    assert_eq!(allocs() - before, 0);
}
