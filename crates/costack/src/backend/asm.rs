//! The assembly backend: the architecture's hand-written switch (see `crate::arch`).
//!
//! It saves only what the ABI says a callee must preserve, keeps `call`/`ret` balanced, and
//! carries unwind information so that backtraces cross from a coroutine into its enterer.
//!
//! May import: `arch`.

#[cfg(target_arch = "aarch64")]
pub(crate) use crate::arch::aarch64::{resume, suspend, Context, Entry, INIT_STACK};
#[cfg(target_arch = "riscv64")]
pub(crate) use crate::arch::riscv64::{resume, suspend, Context, Entry, INIT_STACK};
#[cfg(target_arch = "x86_64")]
pub(crate) use crate::arch::x86_64::{resume, suspend, Context, Entry, INIT_STACK};
