//! Architecture-specific context switches, one file per CPU, each with its design and stack
//! layout at the top: `x86_64` (System V), `aarch64` (AAPCS64) and `riscv64` (LP64D). All three
//! share one shape — the enterer branches-with-link into the coroutine and the coroutine returns
//! to it, saving only the callee-saved registers — and offer the same `Context`, `Entry`,
//! `resume` and `suspend` to the `asm` backend. `aarch64` and `riscv64`, whose calls return
//! through a register, share their `Context` (`link_register`).
//!
//! May import: nothing of the crate (the CPUs' files import `link_register` beside them).

#[cfg(all(costack_asm, target_arch = "x86_64"))]
pub(crate) mod x86_64;

#[cfg(all(costack_asm, target_arch = "aarch64"))]
pub(crate) mod aarch64;

#[cfg(all(costack_asm, any(target_arch = "aarch64", target_arch = "riscv64")))]
mod link_register;

#[cfg(all(costack_asm, target_arch = "riscv64"))]
pub(crate) mod riscv64;
