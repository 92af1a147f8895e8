//! Does N coroutine round trips (resume + yield) on one implementation, for
//! counting instructions under callgrind.
//!
//! Usage: `switch_count IMPLEMENTATION N`, IMPLEMENTATION being `costack` or
//! `corosensei`. Run it for N and 2N: the difference of the two instruction
//! totals divided by N is the cost of one round trip, free of start-up and
//! set-up. `costack` runs on whichever backend this build compiled in; the
//! program prints the label it measured (`costack` or `costack-ucontext`).

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
    for _ in 0..n {
        let _ = black_box(co.enter());
    }
    stop.set(true);
    assert!(matches!(co.enter(), costack::Status::Finished(())));
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
    for _ in 0..n {
        black_box(co.resume(false));
    }
    assert!(matches!(
        co.resume(true),
        corosensei::CoroutineResult::Return(())
    ));
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
        other => {
            eprintln!("switch_count: unknown implementation {other:?} (costack or corosensei)");
            return ExitCode::from(2);
        }
    };
    println!("{label} {n}");
    ExitCode::SUCCESS
}
