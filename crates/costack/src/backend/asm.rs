//! The assembly backend: the CPU's hand-written switch (see `crate::arch`), with the `fp-state`
//! feature's save and restore of the floating-point control state around it.
//!
//! It saves only what the ABI says a callee must preserve, keeps call and return balanced, and
//! carries unwind information so that backtraces cross from a coroutine into its enterer.
//!
//! May import: `arch`.

#[cfg(target_arch = "aarch64")]
use crate::arch::aarch64 as cpu;
#[cfg(target_arch = "riscv64")]
use crate::arch::riscv64 as cpu;
#[cfg(all(target_arch = "x86_64", not(windows)))]
use crate::arch::x86_64 as cpu;
#[cfg(all(target_arch = "x86_64", windows))]
use crate::arch::x86_64_windows as cpu;

pub(crate) use cpu::{Context, Entry, INIT_STACK};

/// Runs `switch`, one half of the CPU's switch, between a save of the floating-point control
/// state and its restore when the `fp-state` feature asks for them; otherwise just `switch`.
#[inline(always)]
fn keeping_fp_state<R>(switch: impl FnOnce() -> R) -> R {
    #[cfg(feature = "fp-state")]
    let fp = cpu::FpState::save();
    let r = switch();
    #[cfg(feature = "fp-state")]
    fp.restore();
    r
}

/// Switches from the enterer into the coroutine whose context is `ctx`, and returns when that
/// coroutine yields or finishes.
///
/// # Safety
/// As the CPU's `resume`: `ctx` was prepared by `Context::init`, its coroutine is suspended or
/// not started, and it switches back only through [`suspend`] or by finishing.
#[inline(always)]
pub(crate) unsafe fn resume(ctx: *mut Context) {
    // SAFETY: the caller keeps the CPU switch's contract, which is this function's.
    keeping_fp_state(|| unsafe { cpu::resume(ctx) })
}

/// Suspends the running coroutine (whose context is `ctx`) and returns to its enterer; returns
/// `ctx` when the coroutine is entered again.
///
/// # Safety
/// As the CPU's `suspend`: on the coroutine's own stack, while it runs, with its own `ctx`,
/// entered by [`resume`].
#[inline(always)]
pub(crate) unsafe fn suspend(ctx: *mut Context) -> *mut Context {
    // SAFETY: the caller keeps the CPU switch's contract, which is this function's.
    keeping_fp_state(|| unsafe { cpu::suspend(ctx) })
}
