//! Floating-point control state across switches.
//!
//! With the `fp-state` feature, or on the `ucontext` backend (whose `swapcontext` saves it), the
//! switch gives each coroutine its own floating-point control bits (MXCSR's on x86_64 and FPCR's
//! on aarch64, callee-saved in their ABIs; the rounding mode `frm` on riscv64): each coroutine
//! has its own rounding mode, and a change inside a coroutine does not leak to its enterer.
//! By default the assembly backend leaves the floating-point environment to the thread (saving
//! it would triple the cost of a switch on x86_64, see `src/arch/x86_64.rs`): a change made
//! inside a coroutine is what its enterer sees after it yields. Both behaviours are tested here.
#![cfg(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
))]

use costack::{yield_now, Coroutine};
use std::arch::asm;

/// The rounding-mode field of MXCSR (bits 13-14).
#[cfg(target_arch = "x86_64")]
mod mode {
    use super::asm;
    pub const UP: u32 = 0x4000;
    pub const DOWN: u32 = 0x2000;
    pub const NEAREST: u32 = 0;
    const MASK: u32 = 0x6000;

    fn mxcsr() -> u32 {
        let mut v: u32 = 0;
        // SAFETY: stmxcsr stores the 32-bit MXCSR into the local.
        unsafe { asm!("stmxcsr [{}]", in(reg) &mut v, options(nostack)) };
        v
    }

    pub fn get() -> u32 {
        mxcsr() & MASK
    }

    pub fn set(mode: u32) {
        let v = (mxcsr() & !MASK) | mode;
        // SAFETY: loading a valid MXCSR value with only the rounding bits changed.
        unsafe { asm!("ldmxcsr [{}]", in(reg) &v, options(nostack)) };
    }
}

/// The RMode field of FPCR (bits 22-23): 0 nearest, 1 towards +inf, 2 towards -inf.
#[cfg(target_arch = "aarch64")]
mod mode {
    use super::asm;
    pub const UP: u32 = 1 << 22;
    pub const DOWN: u32 = 2 << 22;
    pub const NEAREST: u32 = 0;
    const MASK: u64 = 3 << 22;

    fn fpcr() -> u64 {
        let v: u64;
        // SAFETY: reading FPCR has no side effect.
        unsafe { asm!("mrs {}, fpcr", out(reg) v, options(nomem, nostack)) };
        v
    }

    pub fn get() -> u32 {
        (fpcr() & MASK) as u32
    }

    pub fn set(mode: u32) {
        let v = (fpcr() & !MASK) | mode as u64;
        // SAFETY: writing FPCR with only the rounding-mode bits changed.
        unsafe { asm!("msr fpcr, {}", in(reg) v, options(nomem, nostack)) };
    }
}

/// The `frm` CSR: 0 nearest, 2 towards -inf, 3 towards +inf.
#[cfg(target_arch = "riscv64")]
mod mode {
    use super::asm;
    pub const UP: u32 = 3;
    pub const DOWN: u32 = 2;
    pub const NEAREST: u32 = 0;

    pub fn get() -> u32 {
        let v: usize;
        // SAFETY: reading the rounding-mode CSR has no side effect.
        unsafe { asm!("frrm {}", out(reg) v, options(nomem, nostack)) };
        v as u32
    }

    pub fn set(mode: u32) {
        // SAFETY: writing a valid rounding mode to `frm`.
        unsafe { asm!("fsrm {}", in(reg) mode as usize, options(nomem, nostack)) };
    }
}

use mode::{get as rounding, set as set_rounding, DOWN as ROUND_DOWN, UP as ROUND_UP};

/// 1/3 computed at run time, so the compiler cannot fold it under the default rounding mode.
fn third() -> f64 {
    std::hint::black_box(1.0f64) / std::hint::black_box(3.0f64)
}

#[test]
#[cfg(any(feature = "fp-state", feature = "ucontext"))]
fn rounding_mode_is_per_coroutine_as_the_abi_says() {
    let enterer_mode = rounding();
    let co = Coroutine::new(|| {
        set_rounding(ROUND_UP);
        let up = third();
        yield_now();
        // Our rounding mode survived the enterer's own change while we were suspended.
        let still = rounding();
        let up_again = third();
        (up, up_again, still)
    });
    let _ = co.enter();
    // The coroutine's change did not leak into the enterer.
    assert_eq!(rounding(), enterer_mode);
    let nearest = third();
    set_rounding(ROUND_DOWN);
    let down = third();
    let (up, up_again, still) = co.enter().finished().unwrap();
    // And ours came back after the coroutine ran.
    assert_eq!(rounding(), ROUND_DOWN);
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
    let before = rounding();
    let co = Coroutine::new(|| {
        set_rounding(ROUND_UP);
        yield_now();
        rounding()
    });
    let _ = co.enter();
    // The coroutine's change is the thread's: the enterer sees it after the yield.
    assert_eq!(rounding(), ROUND_UP);
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
    let co = Coroutine::new(rounding);
    let seen = co.enter().finished().unwrap();
    set_rounding(mode::NEAREST);
    assert_eq!(seen, ROUND_DOWN);
}
