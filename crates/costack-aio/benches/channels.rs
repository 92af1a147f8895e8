//! The channels against their peers (`scripts/channel-bench.sh` runs it and writes the
//! `## Channels` section of BENCHMARKS.md):
//!
//! 1. `pingpong`: two tasks of one loop bounce a number through two local channels
//!    (`channel::local::mpsc`, capacity 1), against two tokio tasks on a current-thread
//!    runtime with `tokio::sync::mpsc` (capacity 1). Time per round trip.
//! 2. `spsc_bounded`: one producer task, one consumer task on one loop, a bounded channel of
//!    capacity 128, against tokio's current-thread runtime. Time per message.
//! 3. `cross_thread`: a producer on a plain thread, a consumer task on a loop on another thread
//!    (`channel::mpsc`, capacity 1024), against `tokio::sync::mpsc` between tasks of two
//!    current-thread runtimes on two threads, and `std::sync::mpsc::sync_channel` between two
//!    threads. Time per message.

// `criterion_group!` defines a public function that has no doc comment.
#![allow(missing_docs)]

use costack_aio::channel::{local, mpsc};
use costack_aio::EventLoop;
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

fn pingpong(c: &mut Criterion) {
    let mut g = c.benchmark_group("pingpong");
    let lp = EventLoop::new();
    g.bench_function("costack-local", |b| {
        b.iter_custom(|iters| {
            lp.block_on(move || {
                let (to_echo, echo_rx) = local::mpsc::bounded::<u64>(1);
                let (to_main, main_rx) = local::mpsc::bounded::<u64>(1);
                let echo = costack_aio::spawn(move || {
                    for v in echo_rx {
                        to_main.send(v + 1).unwrap();
                    }
                });
                let t0 = Instant::now();
                let mut v = 0;
                for _ in 0..iters {
                    to_echo.send(v).unwrap();
                    v = main_rx.recv().unwrap();
                }
                let t = t0.elapsed();
                assert_eq!(v, iters);
                drop(to_echo);
                echo.join();
                t
            })
        })
    });
    let rt = tokio_rt();
    g.bench_function("tokio", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async move {
                let (to_echo, mut echo_rx) = tokio::sync::mpsc::channel::<u64>(1);
                let (to_main, mut main_rx) = tokio::sync::mpsc::channel::<u64>(1);
                let echo = tokio::task::spawn(async move {
                    while let Some(v) = echo_rx.recv().await {
                        to_main.send(v + 1).await.unwrap();
                    }
                });
                let t0 = Instant::now();
                let mut v = 0;
                for _ in 0..iters {
                    to_echo.send(v).await.unwrap();
                    v = main_rx.recv().await.unwrap();
                }
                let t = t0.elapsed();
                assert_eq!(v, iters);
                drop(to_echo);
                echo.await.unwrap();
                t
            })
        })
    });
    g.finish();
}

const CAP: usize = 128;

fn spsc_bounded(c: &mut Criterion) {
    let mut g = c.benchmark_group("spsc_bounded");
    let lp = EventLoop::new();
    g.bench_function("costack-local", |b| {
        b.iter_custom(|iters| {
            lp.block_on(move || {
                let (tx, rx) = local::mpsc::bounded::<u64>(CAP);
                let t0 = Instant::now();
                let producer = costack_aio::spawn(move || {
                    for i in 0..iters {
                        tx.send(i).unwrap();
                    }
                });
                let mut sum = 0u64;
                for v in rx {
                    sum = sum.wrapping_add(v);
                }
                let t = t0.elapsed();
                producer.join();
                black_box(sum);
                t
            })
        })
    });
    g.bench_function("costack-send", |b| {
        b.iter_custom(|iters| {
            lp.block_on(move || {
                let (tx, rx) = mpsc::bounded::<u64>(CAP);
                let t0 = Instant::now();
                let producer = costack_aio::spawn(move || {
                    for i in 0..iters {
                        tx.send(i).unwrap();
                    }
                });
                let mut sum = 0u64;
                for v in rx {
                    sum = sum.wrapping_add(v);
                }
                let t = t0.elapsed();
                producer.join();
                black_box(sum);
                t
            })
        })
    });
    let rt = tokio_rt();
    g.bench_function("tokio", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async move {
                let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(CAP);
                let t0 = Instant::now();
                let producer = tokio::task::spawn(async move {
                    for i in 0..iters {
                        tx.send(i).await.unwrap();
                    }
                });
                let mut sum = 0u64;
                while let Some(v) = rx.recv().await {
                    sum = sum.wrapping_add(v);
                }
                let t = t0.elapsed();
                producer.await.unwrap();
                black_box(sum);
                t
            })
        })
    });
    g.finish();
}

const XCAP: usize = 1024;

fn cross_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("cross_thread");
    let lp = EventLoop::new();
    g.bench_function("costack", |b| {
        b.iter_custom(|iters| {
            let (tx, rx) = mpsc::bounded::<u64>(XCAP);
            let t0 = Instant::now();
            let producer = std::thread::spawn(move || {
                for i in 0..iters {
                    tx.send(i).unwrap();
                }
            });
            let sum = lp.block_on(move || rx.fold(0u64, u64::wrapping_add));
            let t = t0.elapsed();
            producer.join().unwrap();
            black_box(sum);
            t
        })
    });
    let rt = tokio_rt();
    g.bench_function("tokio", |b| {
        b.iter_custom(|iters| {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(XCAP);
            let t0 = Instant::now();
            let producer = std::thread::spawn(move || {
                tokio_rt().block_on(async move {
                    for i in 0..iters {
                        tx.send(i).await.unwrap();
                    }
                })
            });
            let sum = rt.block_on(async move {
                let mut sum = 0u64;
                while let Some(v) = rx.recv().await {
                    sum = sum.wrapping_add(v);
                }
                sum
            });
            let t = t0.elapsed();
            producer.join().unwrap();
            black_box(sum);
            t
        })
    });
    g.bench_function("std", |b| {
        b.iter_custom(|iters| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<u64>(XCAP);
            let t0 = Instant::now();
            let producer = std::thread::spawn(move || {
                for i in 0..iters {
                    tx.send(i).unwrap();
                }
            });
            let sum = rx.iter().fold(0u64, u64::wrapping_add);
            let t = t0.elapsed();
            producer.join().unwrap();
            black_box(sum);
            t
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = pingpong, spsc_bounded, cross_thread
}
criterion_main!(benches);
