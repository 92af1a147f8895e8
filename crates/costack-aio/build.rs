//! Stops the build with a clear message on any system but Linux: costack-aio uses Linux's epoll,
//! io_uring and related system calls directly (see the README's platform table), and compiling
//! it elsewhere would only bury that in a wall of unresolved names.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os != "linux" {
        println!(
            "cargo::error=costack-aio runs on Linux only for now (epoll, io_uring, Linux system \
             calls); the target system is {os}. The core crate, costack, also builds for \
             Windows (see the README's platform table)."
        );
    }
}
