//! Support code for the costack comparison benchmarks.
//!
//! The crate holds three things:
//!
//! * the `compare` criterion benchmark (`benches/compare.rs`), which measures
//!   costack and its peers on the same work in one `cargo bench` run;
//! * the `report` binary, which turns criterion's and callgrind's output into
//!   `BENCHMARKS.md` and `docs/bench.svg` (driven by `scripts/bench.sh`);
//! * the `switch_count` binary, which does a fixed number of coroutine round
//!   trips so that callgrind can count the instructions of one switch.
//!
//! This library is what those three share: the list of benchmark groups and
//! implementation labels ([`catalog`]), the parsers for criterion's and
//! callgrind's files ([`parse`]), the goal figures over separate process runs
//! ([`runs`]), and a hand-written `swapcontext` coroutine
//! ([`ucx`]) that serves as the libc baseline.
//!
//! It is also where the workspace README's Rust examples run as doctests: this crate is never
//! published, so it may include a file from outside its own folder.

pub mod catalog;
pub mod parse;
pub mod runs;
// The `libc` crate binds the ucontext functions for glibc on x86_64 and aarch64 but not on
// riscv64, where only the core's own backend declares them; the bench runs on x86_64.
#[cfg(all(
    target_os = "linux",
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
pub mod ucx;

/// The workspace README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
