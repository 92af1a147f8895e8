//! Floating-point control state across switches.
//!
//! With the `fp-state` feature, or on the `ucontext` backend (whose `swapcontext` saves it), the
//! switch keeps the ABI's rule that the MXCSR control bits are callee-saved: each coroutine has
//! its own rounding mode, and a change inside a coroutine does not leak to its enterer.
//! By default the assembly backend leaves the floating-point environment to the thread (saving
//! it would triple the cost of a switch, see `src/arch/x86_64.rs`): a change made inside a
//! coroutine is what its enterer sees after it yields. Both behaviours are tested here.
#![cfg(target_arch = "x86_64")]

use costack::{yield_now, Coroutine};
use std::arch::asm;

const ROUND_MASK: u32 = 0x6000;
const ROUND_UP: u32 = 0x4000;
const ROUND_DOWN: u32 = 0x2000;

fn mxcsr() -> u32 {
    let mut v: u32 = 0;
    // SAFETY: stmxcsr stores the 32-bit MXCSR into the local.
    unsafe { asm!("stmxcsr [{}]", in(reg) &mut v, options(nostack)) };
    v
}

fn set_rounding(mode: u32) {
    let v = (mxcsr() & !ROUND_MASK) | mode;
    // SAFETY: loading a valid MXCSR value with only the rounding bits changed.
    unsafe { asm!("ldmxcsr [{}]", in(reg) &v, options(nostack)) };
}

/// 1/3 computed at run time, so the compiler cannot fold it under the default rounding mode.
fn third() -> f64 {
    std::hint::black_box(1.0f64) / std::hint::black_box(3.0f64)
}

#[test]
#[cfg(any(feature = "fp-state", feature = "ucontext"))]
fn rounding_mode_is_per_coroutine_as_the_abi_says() {
    let enterer_mode = mxcsr() & ROUND_MASK;
    let co = Coroutine::new(|| {
        set_rounding(ROUND_UP);
        let up = third();
        yield_now();
        // Our rounding mode survived the enterer's own change while we were suspended.
        let still = mxcsr() & ROUND_MASK;
        let up_again = third();
        (up, up_again, still)
    });
    let _ = co.enter();
    // The coroutine's change did not leak into the enterer.
    assert_eq!(mxcsr() & ROUND_MASK, enterer_mode);
    let nearest = third();
    set_rounding(ROUND_DOWN);
    let down = third();
    let (up, up_again, still) = co.enter().finished().unwrap();
    // And ours came back after the coroutine ran.
    assert_eq!(mxcsr() & ROUND_MASK, ROUND_DOWN);
    set_rounding(enterer_mode);
    assert_eq!(still, ROUND_UP);
    assert_eq!(up, up_again);
    assert!(
        down < nearest || nearest < up,
        "modes differ in the last bit"
    );
    assert!(down < up);
}

#[test]
#[cfg(not(any(feature = "fp-state", feature = "ucontext")))]
fn rounding_mode_belongs_to_the_thread_by_default() {
    let before = mxcsr() & ROUND_MASK;
    let co = Coroutine::new(|| {
        set_rounding(ROUND_UP);
        yield_now();
        mxcsr() & ROUND_MASK
    });
    let _ = co.enter();
    // The coroutine's change is the thread's: the enterer sees it after the yield.
    assert_eq!(mxcsr() & ROUND_MASK, ROUND_UP);
    let up = third();
    set_rounding(ROUND_DOWN);
    let down = third();
    // And the enterer's change is what the coroutine sees when it continues.
    assert_eq!(co.enter().finished(), Some(ROUND_DOWN));
    set_rounding(before);
    assert!(down < up);
}

#[test]
fn a_new_coroutine_starts_with_its_enterers_rounding_mode() {
    set_rounding(ROUND_DOWN);
    let co = Coroutine::new(|| mxcsr() & ROUND_MASK);
    let seen = co.enter().finished().unwrap();
    set_rounding(0);
    assert_eq!(seen, ROUND_DOWN);
}
