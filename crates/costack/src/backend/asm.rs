//! The assembly backend: the architecture's hand-written switch (see `crate::arch`).
//!
//! It saves only what the ABI says a callee must preserve, keeps `call`/`ret` balanced, and
//! carries unwind information so that backtraces cross from a coroutine into its enterer.
//!
//! May import: `arch`.

pub(crate) use crate::arch::x86_64::{resume, suspend, Context, Entry};
