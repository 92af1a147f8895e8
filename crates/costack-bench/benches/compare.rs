//! costack against its peers on the same work, in one criterion run.
//!
//! Every group has one function per implementation, named by the labels in
//! `costack_bench::catalog`; costack's functions are named `costack` or
//! `costack-ucontext` after the backend this build compiled in (feature
//! `ucontext`), so the same code measures both. `scripts/bench.sh` runs this
//! twice and writes the report.
//!
//! Set-up (creating the coroutine to be resumed, the runtime, the stacks) is
//! done inside each function's closure, outside the timed routine, so that a
//! filtered run only pays for what it measures.

use std::cell::Cell;
use std::hint::black_box;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use corosensei::stack::DefaultStack;
use corosensei::{CoroutineResult, ScopedCoroutine};
use costack_bench::catalog::{
    COROSENSEI, COSTACK, FRESH_STACK_SIZE, GENERATOR_ITER_LEN, NESTING_DEPTH,
};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

/// Stack size for the generator crate's coroutines when it has to map one per
/// creation, in bytes (it takes words).
const GENERATOR_SMALL_STACK: usize = 16 * 1024;

fn config() -> Criterion {
    // Command-line options (`--warm-up-time`, `--measurement-time`, `--test`,
    // a filter) override these: criterion_group! applies them afterwards.
    Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_millis(1500))
        .measurement_time(Duration::from_secs(4))
        .nresamples(20_000)
}

// ---------------------------------------------------------------------------
// roundtrip

fn roundtrip(c: &mut Criterion) {
    let mut g = c.benchmark_group("roundtrip");
    g.throughput(Throughput::Elements(1));

    g.bench_function(COSTACK, |b| {
        let stop = Rc::new(Cell::new(false));
        let flag = Rc::clone(&stop);
        let mut co = costack::Coroutine::new(move || {
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
        let mut co = corosensei::Coroutine::new(|y: &corosensei::Yielder<bool, ()>, stop: bool| {
            let mut stop = stop;
            while !stop {
                stop = y.suspend(());
            }
        });
        assert!(matches!(co.resume(false), CoroutineResult::Yield(())));
        b.iter(|| co.resume(false));
        assert!(matches!(co.resume(true), CoroutineResult::Return(())));
    });

    g.bench_function("context", |b| {
        use context::stack::ProtectedFixedSizeStack;
        use context::{Context, Transfer};

        extern "C" fn bounce(mut t: Transfer) -> ! {
            loop {
                // SAFETY: `t.context` is the suspended benchmark side, which
                // resumed us and waits to be resumed in turn.
                t = unsafe { t.context.resume(0) };
            }
        }

        let stack = ProtectedFixedSizeStack::new(64 * 1024).expect("context stack");
        // SAFETY: `stack` outlives every use of the context: the loop below
        // is the only place it is resumed, and the stack is dropped after.
        let first = unsafe { Context::new(&stack, bounce) };
        // SAFETY: starts `bounce`, which switches straight back.
        let mut slot = Some(unsafe { first.resume(0) }.context);
        b.iter_custom(|iters| {
            let mut ctx = slot.take().expect("context");
            let start = Instant::now();
            for _ in 0..iters {
                // SAFETY: `ctx` is `bounce` suspended in its loop; it
                // hands back its own fresh context every time.
                ctx = black_box(unsafe { ctx.resume(0) }).context;
            }
            let elapsed = start.elapsed();
            slot = Some(ctx);
            elapsed
        });
        // `bounce` never returns and owns nothing that needs dropping: its
        // frame holds only a `Transfer` (a pointer and an integer), so
        // abandoning it suspended and unmapping its stack leaks nothing.
        drop(slot);
        drop(stack);
    });

    g.bench_function("generator", |b| {
        let stop = AtomicBool::new(false);
        let mut gen = generator::Gn::<()>::new_scoped(|mut s| {
            while !stop.load(Ordering::Relaxed) {
                s.yield_with(());
            }
        });
        assert_eq!(gen.resume(), Some(()));
        b.iter(|| gen.resume());
        stop.store(true, Ordering::Relaxed);
        gen.resume();
        assert!(gen.is_done());
    });

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    g.bench_function("swapcontext", |b| {
        let mut p = costack_bench::ucx::PingPong::new(64 * 1024).expect("swapcontext coroutine");
        b.iter(|| p.round_trip());
    });

    g.bench_function("tokio", |b| {
        let rt = current_thread_runtime();
        b.iter_custom(|iters| {
            rt.block_on(async move {
                let start = Instant::now();
                for _ in 0..iters {
                    tokio::task::yield_now().await;
                }
                start.elapsed()
            })
        });
    });

    g.finish();
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime")
}

// ---------------------------------------------------------------------------
// create_pooled

fn create_pooled(c: &mut Criterion) {
    let mut g = c.benchmark_group("create_pooled");
    g.throughput(Throughput::Elements(1));

    g.bench_function(COSTACK, |b| {
        b.iter(|| {
            let mut co = costack::Coroutine::new(|| black_box(1u64));
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

    // The generator crate has no way to reuse a stack: each creation maps a
    // small one.
    g.bench_function("generator", |b| {
        let words = GENERATOR_SMALL_STACK / std::mem::size_of::<usize>();
        b.iter(|| {
            let mut gen = generator::Gn::<()>::new_scoped_opt(words, |_| black_box(1u64));
            gen.resume()
        });
    });

    g.bench_function("tokio", |b| {
        let rt = current_thread_runtime();
        b.iter_custom(|iters| {
            rt.block_on(async move {
                let start = Instant::now();
                for _ in 0..iters {
                    let v = tokio::spawn(async { black_box(1u64) }).await;
                    black_box(v.expect("trivial task"));
                }
                start.elapsed()
            })
        });
    });

    g.bench_function("std-thread", |b| {
        b.iter(|| {
            std::thread::spawn(|| black_box(1u64))
                .join()
                .expect("trivial thread")
        });
    });

    g.finish();
}

// ---------------------------------------------------------------------------
// create_fresh

fn create_fresh(c: &mut Criterion) {
    let mut g = c.benchmark_group("create_fresh");
    g.throughput(Throughput::Elements(1));

    g.bench_function(COSTACK, |b| {
        b.iter(|| {
            let mut co = costack::Builder::new()
                .stack_size(FRESH_STACK_SIZE)
                .create(|| black_box(1u64))
                .expect("costack coroutine");
            match co.enter() {
                costack::Status::Finished(v) => v,
                costack::Status::Yielded => unreachable!(),
            }
        });
    });

    g.bench_function(COROSENSEI, |b| {
        b.iter(|| {
            let stack = DefaultStack::new(FRESH_STACK_SIZE).expect("corosensei stack");
            let mut co = corosensei::Coroutine::with_stack(
                stack,
                |_: &corosensei::Yielder<(), ()>, ()| black_box(1u64),
            );
            match co.resume(()) {
                CoroutineResult::Return(v) => v,
                CoroutineResult::Yield(()) => unreachable!(),
            }
        });
    });

    g.finish();
}

// ---------------------------------------------------------------------------
// nesting_1000

/// Creates and enters a coroutine that creates and enters the next one,
/// `depth` deep; returns the depth reached.
fn costack_chain(depth: usize) -> usize {
    if depth == 0 {
        return 0;
    }
    let mut co = costack::Coroutine::new(move || costack_chain(depth - 1) + 1);
    match co.enter() {
        costack::Status::Finished(n) => n,
        costack::Status::Yielded => unreachable!(),
    }
}

/// The same chain on corosensei, one reused stack per level.
fn corosensei_chain(stacks: &mut [DefaultStack]) -> usize {
    let Some((stack, rest)) = stacks.split_first_mut() else {
        return 0;
    };
    let co = ScopedCoroutine::with_stack(stack, move |_: &corosensei::Yielder<(), ()>, ()| {
        corosensei_chain(rest) + 1
    });
    co.scope(|mut co| match co.resume(()) {
        CoroutineResult::Return(n) => n,
        CoroutineResult::Yield(()) => unreachable!(),
    })
}

fn nesting(c: &mut Criterion) {
    let mut g = c.benchmark_group("nesting_1000");
    g.throughput(Throughput::Elements(NESTING_DEPTH as u64));

    g.bench_function(COSTACK, |b| {
        b.iter(|| assert_eq!(costack_chain(black_box(NESTING_DEPTH)), NESTING_DEPTH));
    });

    g.bench_function(COROSENSEI, |b| {
        let mut stacks: Vec<DefaultStack> = (0..NESTING_DEPTH)
            .map(|_| DefaultStack::default())
            .collect();
        b.iter(|| assert_eq!(corosensei_chain(black_box(&mut stacks)), NESTING_DEPTH));
    });

    g.finish();
}

// ---------------------------------------------------------------------------
// generator_iter

/// Generators are created and dropped outside the timed routine, in batches
/// of this many.
const GENERATOR_BATCH: u64 = 32;

fn generator_iter(c: &mut Criterion) {
    let mut g = c.benchmark_group("generator_iter");
    g.throughput(Throughput::Elements(GENERATOR_ITER_LEN));
    let expected: u64 = (0..GENERATOR_ITER_LEN).sum();

    g.bench_function(COSTACK, |b| {
        b.iter_batched(
            || {
                costack::Generator::<(), u64, ()>::new(|y, ()| {
                    for i in 0..GENERATOR_ITER_LEN {
                        y.suspend(i);
                    }
                })
            },
            |mut gen| {
                assert_eq!(gen.by_ref().sum::<u64>(), expected);
                gen
            },
            BatchSize::NumIterations(GENERATOR_BATCH),
        );
    });

    g.bench_function(COROSENSEI, |b| {
        b.iter_batched(
            || {
                corosensei::Coroutine::new(|y: &corosensei::Yielder<(), u64>, ()| {
                    for i in 0..GENERATOR_ITER_LEN {
                        y.suspend(i);
                    }
                })
            },
            |mut co| {
                let mut sum = 0;
                while let CoroutineResult::Yield(v) = co.resume(()) {
                    sum += v;
                }
                assert_eq!(sum, expected);
                co
            },
            BatchSize::NumIterations(GENERATOR_BATCH),
        );
    });

    // The generator crate hands the closure's return value out as the last
    // item, so the body yields all values but the last and returns that.
    g.bench_function("generator", |b| {
        b.iter_batched(
            || {
                generator::Gn::<()>::new_scoped(|mut s| {
                    for i in 0..GENERATOR_ITER_LEN - 1 {
                        s.yield_with(i);
                    }
                    GENERATOR_ITER_LEN - 1
                })
            },
            |mut gen| {
                assert_eq!(gen.by_ref().sum::<u64>(), expected);
                gen
            },
            BatchSize::NumIterations(GENERATOR_BATCH),
        );
    });

    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = roundtrip, create_pooled, create_fresh, nesting, generator_iter
}
criterion_main!(benches);
