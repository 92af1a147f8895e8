//! Does N coroutine round trips (resume + yield) on one implementation, for
//! counting instructions under callgrind.
//!
//! Usage: `switch_count IMPLEMENTATION N`, IMPLEMENTATION being `costack` or
//! `corosensei`. Run it for N and 2N: the difference of the two instruction
//! totals divided by N is the cost of one round trip, free of start-up and
//! set-up. `costack` runs on whichever backend this build compiled in; the
//! program prints the label it measured (`costack` or `costack-ucontext`).
//!
//! Other shapes, counted the same way (costack only): `costack-create` (create a
//! coroutine on a pooled stack, enter it until it finishes, drop it),
//! `costack-cost` (QEMU's `/perf/cost` shape: create on a pooled stack, enter, the
//! coroutine yields, enter again, it ends, drop), `costack-nesting` (a chain of
//! 1000 coroutines, each created and entered by the one before; N coroutines in
//! all), `costack-handoff` (a `CoMutex` handed back and forth between two coroutines; N
//! hand-offs) and `costack-generator` (N values out of a generator).

use std::cell::Cell;
use std::hint::black_box;
use std::process::ExitCode;
use std::rc::Rc;

use costack_bench::catalog::{COROSENSEI, COSTACK};

/// The coroutine body is the same as in the `roundtrip` benchmark.
fn costack_round_trips(n: u64) {
    let stop = Rc::new(Cell::new(false));
    let flag = Rc::clone(&stop);
    let co = costack::Coroutine::new(move || {
        while !flag.get() {
            costack::yield_now();
        }
    });
    assert!(matches!(co.enter(), costack::Status::Yielded));
    costack_loop(&co, n);
    stop.set(true);
    assert!(matches!(co.enter(), costack::Status::Finished(())));
}

/// The measured loop alone, out of line (as is corosensei's), so that the set-up's code around
/// it does not change how the compiler allocates the loop's registers: only `rbx` and `rbp`
/// survive a switch, and which of the loop counter and the thread-local's offset gets which
/// moved the count by two instructions between builds with the same switch.
#[inline(never)]
fn costack_loop(co: &costack::Coroutine<()>, n: u64) {
    for _ in 0..n {
        let _ = black_box(co.enter());
    }
}

/// corosensei's measured loop, out of line like costack's.
#[inline(never)]
fn corosensei_loop(co: &mut corosensei::Coroutine<bool, (), ()>, n: u64) {
    for _ in 0..n {
        black_box(co.resume(false));
    }
}

fn corosensei_round_trips(n: u64) {
    let mut co = corosensei::Coroutine::new(|y: &corosensei::Yielder<bool, ()>, stop: bool| {
        let mut stop = stop;
        while !stop {
            stop = y.suspend(());
        }
    });
    assert!(matches!(
        co.resume(false),
        corosensei::CoroutineResult::Yield(())
    ));
    corosensei_loop(&mut co, n);
    assert!(matches!(
        co.resume(true),
        corosensei::CoroutineResult::Return(())
    ));
}

/// Create (pooled), enter to the end, drop — the `create_pooled` benchmark's shape.
fn costack_creates(n: u64) {
    for i in 0..n {
        let co = costack::Coroutine::new(move || black_box(i));
        let _ = black_box(co.enter());
    }
}

/// Create (pooled), enter, yield, enter to the end, drop — QEMU's `/perf/cost`.
fn costack_cost(n: u64) {
    for i in 0..n {
        let co = costack::Coroutine::new(move || {
            costack::yield_now();
            black_box(i)
        });
        assert!(co.enter() == costack::Status::Yielded);
        let _ = black_box(co.enter());
    }
}

/// One coroutine of a nesting chain: creates and enters the next until `depth` is reached
/// (the `nesting_1000` shape).
fn costack_chain(depth: u64) -> u64 {
    if depth == 0 {
        return 0;
    }
    let co = costack::Coroutine::new(move || costack_chain(depth - 1));
    match co.enter() {
        costack::Status::Finished(d) => d + 1,
        costack::Status::Yielded => unreachable!("the chain does not yield"),
    }
}

/// Chains of 1000 nested coroutines, `n` coroutines in all (`n` rounded down to a multiple
/// of 1000). The pool holds a whole chain, as in the benchmark.
fn costack_nesting(n: u64) {
    costack::pool::set_capacity(1000);
    costack::pool::set_watermark(1000);
    for _ in 0..n / 1000 {
        assert_eq!(black_box(costack_chain(1000)), 1000);
    }
}

/// Two coroutines hand a `CoMutex` to each other `n` times in all (the `comutex` shape).
fn costack_handoffs(n: u64) {
    let lock = Rc::new(costack::sync::CoMutex::new(0u64));
    let rounds = n / 2;
    let mk = |lock: Rc<costack::sync::CoMutex<u64>>| {
        costack::Coroutine::new(move || {
            for _ in 0..rounds {
                let mut g = lock.lock();
                *g += 1;
                costack::yield_now(); // hold it across a yield: the other one queues
            }
        })
    };
    let a = mk(lock.clone());
    let b = mk(lock.clone());
    let mut steps = 0u64;
    while !(a.is_finished() && b.is_finished()) {
        for co in [&a, &b] {
            if co.can_enter() {
                let _ = co.enter();
            }
        }
        steps += 1;
        assert!(steps <= 4 * n + 8, "hand-offs did not finish");
    }
    assert_eq!(*lock.try_lock().unwrap(), 2 * rounds);
}

/// `n` values out of a generator.
fn costack_generator(n: u64) {
    let g = costack::Generator::new(move |y, ()| {
        for i in 0..n {
            y.suspend(i);
        }
    });
    let mut sum = 0u64;
    for v in g {
        sum = sum.wrapping_add(black_box(v));
    }
    assert_eq!(sum, n.saturating_sub(1) * n / 2);
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (which, n) = match args.as_slice() {
        [which, n] => match n.parse::<u64>() {
            Ok(n) => (which.as_str(), n),
            Err(e) => {
                eprintln!("switch_count: bad count {n:?}: {e}");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("usage: switch_count costack|corosensei N");
            return ExitCode::from(2);
        }
    };
    let label = match which {
        "costack" => {
            costack_round_trips(n);
            COSTACK
        }
        "corosensei" => {
            corosensei_round_trips(n);
            COROSENSEI
        }
        "costack-create" => {
            costack_creates(n);
            "costack-create"
        }
        "costack-cost" => {
            costack_cost(n);
            "costack-cost"
        }
        "costack-nesting" => {
            costack_nesting(n);
            "costack-nesting"
        }
        "costack-handoff" => {
            costack_handoffs(n);
            "costack-handoff"
        }
        "costack-generator" => {
            costack_generator(n);
            "costack-generator"
        }
        other => {
            eprintln!(
                "switch_count: unknown implementation {other:?} (costack, corosensei, \
                 costack-create, costack-cost, costack-nesting, costack-handoff or \
                 costack-generator)"
            );
            return ExitCode::from(2);
        }
    };
    println!("{label} {n}");
    ExitCode::SUCCESS
}
