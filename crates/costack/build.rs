//! Chooses the context-switch backend and tells the library by cfg, so that the library and its
//! tests test one name instead of repeating the lists of CPUs and systems:
//!
//! * `costack_asm`: a hand-written switch — x86_64 (System V or Windows x64), aarch64 and
//!   riscv64, unless the `ucontext` (Unix) or `fibers` (Windows) feature asks for the other one;
//! * `costack_fibers`: Windows Fibers (`fibers` feature, Windows only);
//! * `costack_stack_usage`: the `stack-usage` feature's painting and measuring, except with
//!   `fibers`, whose coroutines run on stacks Windows allocates (the measures are then `None`).
//!
//! Without either the library uses libc's `ucontext` (Unix only). A feature that does not exist
//! on the target system stops the build with the reason.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(costack_asm)");
    println!("cargo::rustc-check-cfg=cfg(costack_fibers)");
    println!("cargo::rustc-check-cfg=cfg(costack_stack_usage)");
    println!("cargo::rerun-if-changed=build.rs");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let windows = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("windows");
    let ucontext = std::env::var_os("CARGO_FEATURE_UCONTEXT").is_some();
    let fibers = std::env::var_os("CARGO_FEATURE_FIBERS").is_some();
    if windows && ucontext {
        panic!(
            "costack: the `ucontext` feature needs libc's swapcontext, which Windows does not \
             have; its portable backend there is `fibers`"
        );
    }
    if !windows && fibers {
        panic!(
            "costack: the `fibers` feature is the Windows Fibers backend; on Unix use `ucontext`"
        );
    }
    if windows && arch != "x86_64" {
        panic!("costack: on Windows only x86_64 is supported so far (target CPU: {arch})");
    }
    if std::env::var_os("CARGO_FEATURE_STACK_USAGE").is_some() && !fibers {
        println!("cargo::rustc-cfg=costack_stack_usage");
    }
    if fibers {
        println!("cargo::rustc-cfg=costack_fibers");
    } else if matches!(arch.as_str(), "x86_64" | "aarch64" | "riscv64") && !ucontext {
        println!("cargo::rustc-cfg=costack_asm");
    }
}
