//! The steady-state paths allocate nothing: an enter + yield round trip, and a pooled
//! create + enter + terminate + drop. Counted with a global allocator that tallies this
//! thread's allocations.

use costack::{yield_now, Coroutine, Generator};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|a| a.set(a.get() + 1));
        // SAFETY: forwarded contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.with(|a| a.set(a.get() + 1));
        // SAFETY: forwarded contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(|a| a.get())
}

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
