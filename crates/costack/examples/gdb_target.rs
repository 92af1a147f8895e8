//! A program for trying `scripts/costack-gdb.py`: it suspends two coroutines in distinct
//! functions, then calls `costack_example_breakpoint`, where a debugger can stop.
//!
//! ```sh
//! cargo build --example gdb_target
//! gdb -batch -x scripts/costack-gdb.py -ex 'break costack_example_breakpoint' -ex run \
//!     -ex 'costack list' -ex 'costack bt-all' target/debug/examples/gdb_target
//! ```

use costack::{yield_now, Builder, Coroutine};

#[inline(never)]
fn suspended_in_this_function(n: u32) -> u32 {
    yield_now();
    n + 1
}

#[inline(never)]
fn waiting_for_more_input() {
    yield_now();
}

/// Where scripts/gdb-test.sh sets its breakpoint: called once both coroutines are suspended.
#[inline(never)]
#[no_mangle]
pub extern "C" fn costack_example_breakpoint() {
    std::hint::black_box(());
}

fn main() {
    // Keep the debugger hooks in the binary.
    std::hint::black_box(costack::introspect::costack_gdb_live_head as *const ());
    std::hint::black_box(&costack::introspect::COSTACK_GDB_LAYOUT);
    let a = Builder::new()
        .name("parser")
        .create(|| suspended_in_this_function(41));
    let b = Coroutine::new(waiting_for_more_input);
    let _ = a.enter();
    let _ = b.enter();
    costack_example_breakpoint();
    println!("{:?}", a.enter());
    let _ = b.enter();
}
