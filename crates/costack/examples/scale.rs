//! How many coroutines fit, and what each costs: keeps N trivial coroutines suspended at once
//! and reports the creation time and the resident memory per coroutine.
//!
//! ```sh
//! cargo run --release --example scale -- 1000000            # N, default 100000
//! cargo run --release --example scale -- 1000000 1048576    # N and the stack size in bytes
//! ```
//!
//! Each guarded stack is two memory mappings; a million coroutines need
//! `sysctl -w vm.max_map_count=2200000` (as root) first. Without it, creation stops with an
//! error that names the limit and that command.

use costack::{pool, yield_now, Builder};
use std::time::Instant;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(100_000, |a| a.parse().expect("N"));
    let stack: usize = args.next().map_or(costack::DEFAULT_STACK_SIZE, |a| {
        a.parse().expect("stack size")
    });
    pool::set_capacity(0); // measure fresh stacks, not the pool
    let before = rss_kib();
    let start = Instant::now();
    let mut live = Vec::with_capacity(n);
    for i in 0..n {
        match Builder::new().stack_size(stack).try_create(move || {
            yield_now();
            i
        }) {
            Ok(co) => {
                let _ = co.enter();
                live.push(co);
            }
            Err(e) => {
                eprintln!("stopped after {i} coroutines: {e}");
                std::process::exit(1);
            }
        }
    }
    let created = start.elapsed();
    let after = rss_kib();
    println!(
        "{n} live suspended coroutines, stack {} KiB each (virtual)",
        stack / 1024
    );
    println!(
        "create + first enter: {:.0} ns per coroutine ({:.2} s total)",
        created.as_nanos() as f64 / n as f64,
        created.as_secs_f64()
    );
    println!(
        "resident memory: {:.2} KiB per coroutine ({} MiB total)",
        (after.saturating_sub(before)) as f64 / n as f64,
        after.saturating_sub(before) / 1024
    );
    let start = Instant::now();
    let mut sum = 0usize;
    for co in &live {
        sum += co.enter().finished().unwrap();
    }
    assert_eq!(sum, n * (n - 1) / 2);
    println!(
        "resume to completion: {:.0} ns per coroutine",
        start.elapsed().as_nanos() as f64 / n as f64
    );
    let start = Instant::now();
    drop(live);
    println!(
        "drop: {:.0} ns per coroutine",
        start.elapsed().as_nanos() as f64 / n as f64
    );
}
