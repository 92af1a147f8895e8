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

// `criterion_group!` defines a public function that has no doc comment.
#![allow(missing_docs)]

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
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};

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
        // abandoning it suspended leaks nothing. Its context (`slot`) must
        // not be resumed once the stack is gone; it is not used again.
        let _ = slot.take();
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
            let co =
                ScopedCoroutine::with_stack(&mut stack, |_: &corosensei::Yielder<(), ()>, ()| {
                    black_box(1u64)
                });
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
// cost: QEMU's /perf/cost shape

/// QEMU's `/perf/cost` test: create a coroutine, enter it, it yields, enter it
/// again, it ends. costack takes its stack from the pool; corosensei reuses
/// one stack through `ScopedCoroutine`.
fn cost(c: &mut Criterion) {
    let mut g = c.benchmark_group("cost");
    g.throughput(Throughput::Elements(1));

    g.bench_function(COSTACK, |b| {
        b.iter(|| {
            let co = costack::Coroutine::new(|| {
                costack::yield_now();
                black_box(1u64)
            });
            assert!(co.enter() == costack::Status::Yielded);
            match co.enter() {
                costack::Status::Finished(v) => v,
                costack::Status::Yielded => unreachable!(),
            }
        });
    });

    g.bench_function(COROSENSEI, |b| {
        let mut stack = DefaultStack::default();
        b.iter(|| {
            let co =
                ScopedCoroutine::with_stack(&mut stack, |y: &corosensei::Yielder<(), ()>, ()| {
                    y.suspend(());
                    black_box(1u64)
                });
            co.scope(|mut co| {
                assert!(matches!(co.resume(()), CoroutineResult::Yield(())));
                match co.resume(()) {
                    CoroutineResult::Return(v) => v,
                    CoroutineResult::Yield(()) => unreachable!(),
                }
            })
        });
    });

    g.finish();
}

// ---------------------------------------------------------------------------
// create_fresh

/// Sets this thread's costack pool bound (`capacity`) and how many pooled
/// stacks keep their memory (`watermark`; beyond it, pooled stacks are given
/// back to the kernel with `MADV_DONTNEED`). On drop it puts the previous
/// bound back (unmapping stacks beyond it) and the default watermark (the
/// pool has no getter for the current one).
struct PoolSettings(usize);

impl PoolSettings {
    fn set(capacity: usize, watermark: usize) -> Self {
        let previous = costack::pool::capacity();
        costack::pool::set_capacity(capacity);
        costack::pool::set_watermark(watermark);
        PoolSettings(previous)
    }
}

impl Drop for PoolSettings {
    fn drop(&mut self) {
        costack::pool::set_capacity(self.0);
        costack::pool::set_watermark(costack::pool::DEFAULT_WATERMARK);
    }
}

fn create_fresh(c: &mut Criterion) {
    let mut g = c.benchmark_group("create_fresh");
    g.throughput(Throughput::Elements(1));

    // Pooling off for the duration: every creation maps a new stack and every
    // drop unmaps it.
    g.bench_function(COSTACK, |b| {
        let _pool = PoolSettings::set(0, 0);
        b.iter(|| {
            let co = costack::Builder::new()
                .stack_size(FRESH_STACK_SIZE)
                .create(|| black_box(1u64));
            match co.enter() {
                costack::Status::Finished(v) => v,
                costack::Status::Yielded => unreachable!(),
            }
        });
    });

    g.bench_function(COROSENSEI, |b| {
        b.iter(|| {
            let stack = DefaultStack::new(FRESH_STACK_SIZE).expect("corosensei stack");
            let mut co =
                corosensei::Coroutine::with_stack(stack, |_: &corosensei::Yielder<(), ()>, ()| {
                    black_box(1u64)
                });
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
    let co = costack::Coroutine::new(move || costack_chain(depth - 1) + 1);
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
    // A chain takes 20 µs to 10 ms (the default-pool variant maps and unmaps
    // most of its stacks): fewer samples keep the group within its time.
    g.sample_size(20);

    // The pool holds the whole chain, memory included, as corosensei gets a
    // preallocated stack per level below.
    g.bench_function(COSTACK, |b| {
        let _pool = PoolSettings::set(NESTING_DEPTH, NESTING_DEPTH);
        b.iter(|| assert_eq!(costack_chain(black_box(NESTING_DEPTH)), NESTING_DEPTH));
    });

    // Out of the box: the default pool bound is below the chain's depth, so
    // the deeper levels map and unmap their stacks on every chain, and pooled
    // stacks beyond the default watermark give their pages back each time.
    g.bench_function(BenchmarkId::new(COSTACK, "default-pool"), |b| {
        let _pool = PoolSettings::set(
            costack::pool::DEFAULT_CAPACITY,
            costack::pool::DEFAULT_WATERMARK,
        );
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

// ---------------------------------------------------------------------------
// comutex (costack only: no peer has a coroutine mutex)

fn comutex(c: &mut Criterion) {
    use costack::sync::CoMutex;

    let mut g = c.benchmark_group("comutex");
    g.throughput(Throughput::Elements(1));

    // Lock + unlock of a free mutex from inside a coroutine, nobody waiting.
    g.bench_function(BenchmarkId::new(COSTACK, "uncontended"), |b| {
        let mutex = Rc::new(CoMutex::new(0u64));
        b.iter_custom(|iters| {
            let mutex = Rc::clone(&mutex);
            let co = costack::Coroutine::new(move || {
                let start = Instant::now();
                for _ in 0..iters {
                    // black_box: each pass really locks and unlocks, rather
                    // than the loop being folded into one critical section.
                    *black_box(&*mutex).lock() += 1;
                }
                start.elapsed()
            });
            co.enter().finished().expect("timing coroutine finishes")
        });
    });

    // Two coroutines pass one mutex back and forth, each looping on: lock,
    // yield (holding it), unlock. One operation enters the holder, which
    // unlocks (handing the lock to the other, queued), locks again and so
    // waits; the other then runs (a deferred wake-up of this same enter),
    // finds itself holding the lock and yields. The two swap roles.
    g.bench_function(BenchmarkId::new(COSTACK, "handoff"), |b| {
        let mutex = Rc::new(CoMutex::new(()));
        let stop = Rc::new(Cell::new(false));
        let spawn = || {
            let (mutex, stop) = (Rc::clone(&mutex), Rc::clone(&stop));
            costack::Coroutine::new(move || {
                while !stop.get() {
                    let guard = mutex.lock();
                    costack::yield_now();
                    drop(guard);
                }
            })
        };
        let (first, second) = (spawn(), spawn());
        assert_eq!(first.enter(), costack::Status::Yielded); // holds the lock
        assert_eq!(second.enter(), costack::Status::Yielded); // waits for it
        let mut pair = [first, second];
        b.iter(|| {
            let status = pair[0].enter();
            pair.swap(0, 1);
            status
        });
        // The holder lets go and finishes; the other is handed the lock,
        // runs up to its yield, and finishes when entered.
        stop.set(true);
        assert!(pair[0].enter().is_finished());
        assert!(pair[1].enter().is_finished());
        assert!(!mutex.is_locked());
    });

    g.finish();
}

// ---------------------------------------------------------------------------
// bridge: costack's async bridge against plain async code

/// `std::io` over a tokio stream for a coroutine hosted by `bridge::as_future`.
struct SyncIo(tokio::net::TcpStream);

impl std::io::Read for SyncIo {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use tokio::io::AsyncReadExt;
        costack::bridge::await_future(self.0.read(buf))
    }
}

impl std::io::Write for SyncIo {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use tokio::io::AsyncWriteExt;
        costack::bridge::await_future(self.0.write(buf))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The synchronous echo handler: read what comes, write it back, until EOF.
fn sync_echo(mut io: SyncIo) {
    use std::io::{Read, Write};
    let mut buf = [0u8; 4096];
    loop {
        match io.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if io.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// The same handler written as async code.
async fn async_echo(mut s: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Times `iters` 64-byte echo round trips against a server on a current-thread runtime whose
/// connection handler is `hosted` (sync code in a coroutine) or plain async.
fn echo_round_trips(iters: u64, hosted: bool) -> Duration {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::task::spawn_local(async move {
            let (s, _) = listener.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            if hosted {
                costack::bridge::as_future(move || sync_echo(SyncIo(s))).await;
            } else {
                async_echo(s).await;
            }
        });
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.set_nodelay(true).unwrap();
        let msg = [0x5au8; 64];
        let mut back = [0u8; 64];
        let start = Instant::now();
        for _ in 0..iters {
            c.write_all(&msg).await.unwrap();
            c.read_exact(&mut back).await.unwrap();
        }
        let t = start.elapsed();
        assert_eq!(back, msg);
        t
    })
}

fn bridge(c: &mut Criterion) {
    use std::future::{ready, Future};
    use std::task::{Context, Poll, Waker};

    let mut g = c.benchmark_group("bridge");
    g.throughput(Throughput::Elements(1));

    // Awaiting a future that is ready at once, from synchronous code in a coroutine.
    g.bench_function(BenchmarkId::new(COSTACK, "ready-future"), |b| {
        b.iter_custom(|iters| {
            let co = costack::Coroutine::new(move || {
                let start = Instant::now();
                for i in 0..iters {
                    black_box(costack::bridge::await_future(ready(black_box(i))));
                }
                start.elapsed()
            });
            co.enter().finished().expect("timing coroutine finishes")
        });
    });

    // The same await in async code, polled once by hand.
    g.bench_function(BenchmarkId::new("async", "ready-future"), |b| {
        b.iter_custom(|iters| {
            let fut = async move {
                let start = Instant::now();
                for i in 0..iters {
                    black_box(ready(black_box(i)).await);
                }
                start.elapsed()
            };
            let mut fut = std::pin::pin!(fut);
            match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready(t) => t,
                Poll::Pending => unreachable!("ready futures only"),
            }
        });
    });

    g.sample_size(20);
    g.bench_function(BenchmarkId::new(COSTACK, "echo"), |b| {
        b.iter_custom(|iters| echo_round_trips(iters, true));
    });
    g.bench_function(BenchmarkId::new("tokio", "echo"), |b| {
        b.iter_custom(|iters| echo_round_trips(iters, false));
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = roundtrip, create_pooled, cost, create_fresh, nesting, generator_iter, comutex, bridge
}
criterion_main!(benches);
