//! Architecture-specific context switches.
//!
//! May import: nothing of the crate.

#[cfg(all(target_arch = "x86_64", not(feature = "ucontext")))]
pub(crate) mod x86_64;
