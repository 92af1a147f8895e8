//! The Windows rows of BENCHMARKS.md: costack's round trip and pooled creation beside
//! corosensei (built for the same target) and raw Windows Fibers (`SwitchToFiber` back and
//! forth, the floor of any Fibers-based coroutine), in one criterion run. Built with the
//! `fibers` feature, costack reports as `costack-fibers` (its Fibers backend).
//!
//! `scripts/windows-bench.sh` runs it under wine, which runs the x86_64 code natively. On any
//! other system this is an empty program.

// `criterion_group!` defines a public function that has no doc comment.
#![allow(missing_docs)]

#[cfg(windows)]
mod windows {
    use std::cell::Cell;
    use std::ffi::c_void;
    use std::hint::black_box;
    use std::rc::Rc;
    use std::time::Duration;

    use corosensei::stack::DefaultStack;
    use corosensei::{CoroutineResult, ScopedCoroutine};
    use costack_bench::catalog::{COROSENSEI, COSTACK};
    use criterion::{Criterion, Throughput};
    use windows_sys::Win32::System::Threading::{
        ConvertFiberToThread, ConvertThreadToFiber, CreateFiber, DeleteFiber, SwitchToFiber,
    };

    /// Label of the raw Windows Fibers peer.
    const FIBERS: &str = "fibers";

    pub fn config() -> Criterion {
        Criterion::default()
            .sample_size(50)
            .warm_up_time(Duration::from_millis(1500))
            .measurement_time(Duration::from_secs(4))
            .nresamples(20_000)
    }

    pub fn roundtrip(c: &mut Criterion) {
        let mut g = c.benchmark_group("windows_roundtrip");
        g.throughput(Throughput::Elements(1));

        g.bench_function(COSTACK, |b| {
            let stop = Rc::new(Cell::new(false));
            let flag = Rc::clone(&stop);
            let co = costack::Coroutine::new(move || {
                while !flag.get() {
                    costack::yield_now();
                }
            });
            assert!(matches!(co.enter(), costack::Status::Yielded));
            b.iter(|| co.enter());
            stop.set(true);
            assert!(matches!(co.enter(), costack::Status::Finished(())));
        });

        g.bench_function(COROSENSEI, |b| {
            let mut co =
                corosensei::Coroutine::new(|y: &corosensei::Yielder<bool, ()>, stop: bool| {
                    let mut stop = stop;
                    while !stop {
                        stop = y.suspend(());
                    }
                });
            assert!(matches!(co.resume(false), CoroutineResult::Yield(())));
            b.iter(|| co.resume(false));
            assert!(matches!(co.resume(true), CoroutineResult::Return(())));
        });

        g.bench_function(FIBERS, |b| {
            // The thread's fiber and a fiber that switches straight back, forever: one
            // iteration is SwitchToFiber there and back, nothing else.
            struct Pair {
                main: *mut c_void,
            }
            unsafe extern "system" fn bounce(param: *mut c_void) {
                let pair = param.cast::<Pair>();
                loop {
                    // SAFETY: `pair` outlives the fiber's use (deleted before the pair drops);
                    // `main` is the thread's fiber, waiting in its SwitchToFiber.
                    unsafe { SwitchToFiber((*pair).main) };
                }
            }
            let mut pair = Pair {
                main: std::ptr::null_mut(),
            };
            // SAFETY: converting this thread (not a fiber: costack's Fibers backend, if any,
            // converts only threads that enter coroutines, and this closure runs outside
            // one... see the check below) and creating one fiber that only switches back.
            unsafe {
                let converted = ConvertThreadToFiber(std::ptr::null());
                let main = if converted.is_null() {
                    // Already a fiber (costack-fibers converted it): use the current one.
                    let cur: *mut c_void;
                    std::arch::asm!("mov {}, gs:[0x20]", out(reg) cur);
                    cur
                } else {
                    converted
                };
                pair.main = main;
                let fiber = CreateFiber(64 * 1024, Some(bounce), (&raw mut pair).cast());
                assert!(!fiber.is_null());
                b.iter(|| SwitchToFiber(fiber));
                DeleteFiber(fiber);
                if !converted.is_null() {
                    ConvertFiberToThread();
                }
            }
        });
        g.finish();
    }

    pub fn create_pooled(c: &mut Criterion) {
        let mut g = c.benchmark_group("windows_create_pooled");
        g.throughput(Throughput::Elements(1));

        g.bench_function(COSTACK, |b| {
            b.iter(|| {
                let co = costack::Coroutine::new(|| black_box(1u64));
                match co.enter() {
                    costack::Status::Finished(v) => v,
                    costack::Status::Yielded => unreachable!(),
                }
            });
        });

        g.bench_function(COROSENSEI, |b| {
            let mut stack = DefaultStack::default();
            b.iter(|| {
                let co = ScopedCoroutine::with_stack(
                    &mut stack,
                    |_: &corosensei::Yielder<(), ()>, ()| black_box(1u64),
                );
                co.scope(|mut co| match co.resume(()) {
                    CoroutineResult::Return(v) => v,
                    CoroutineResult::Yield(()) => unreachable!(),
                })
            });
        });
        g.finish();
    }
}

#[cfg(windows)]
criterion::criterion_group! {
    name = benches;
    config = windows::config();
    targets = windows::roundtrip, windows::create_pooled
}

#[cfg(windows)]
criterion::criterion_main!(benches);

#[cfg(not(windows))]
fn main() {}
