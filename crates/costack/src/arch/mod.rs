//! Architecture-specific context switches, one file per CPU and ABI, each with its design and
//! stack layout at the top: `x86_64` (System V), `x86_64_windows` (Windows x64, which also
//! //! switches the thread's stack bounds in its TEB), `aarch64` (AAPCS64) and `riscv64` (LP64D). All
//! share one shape — the enterer branches-with-link into the coroutine and the coroutine returns
//! to it, saving only the callee-saved registers — and offer the same `Context`, `Entry`,
//! `resume` and `suspend` to the `asm` backend. `aarch64` and `riscv64`, whose calls return
//! through a register, share their `Context` (`link_register`).
//!
//! `x86_64_fp` is the x86_64 floating-point control state that the `fp-state` feature switches,
//! shared by both x86_64 switches and the `fibers` backend.
//!
//! May import: `stack` (the type of the stack a context is prepared on; the CPUs' files also
//! import `link_register` beside them).

#[cfg(all(costack_asm, target_arch = "x86_64", not(windows)))]
pub(crate) mod x86_64;

#[cfg(all(costack_asm, target_arch = "x86_64", windows))]
pub(crate) mod x86_64_windows;

#[cfg(all(
    any(costack_asm, costack_fibers),
    target_arch = "x86_64",
    feature = "fp-state"
))]
pub(crate) mod x86_64_fp;

#[cfg(all(costack_asm, target_arch = "aarch64"))]
pub(crate) mod aarch64;

#[cfg(all(costack_asm, any(target_arch = "aarch64", target_arch = "riscv64")))]
mod link_register;

#[cfg(all(costack_asm, target_arch = "riscv64"))]
pub(crate) mod riscv64;
