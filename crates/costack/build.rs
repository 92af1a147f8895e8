//! Sets `costack_asm` when the crate is built with a hand-written switch: on x86_64, aarch64 and
//! riscv64 unless the `ucontext` feature asks for the portable backend. The library and its
//! tests test this one name instead of repeating the list of CPUs.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(costack_asm)");
    println!("cargo::rerun-if-changed=build.rs");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let ucontext = std::env::var_os("CARGO_FEATURE_UCONTEXT").is_some();
    if matches!(arch.as_str(), "x86_64" | "aarch64" | "riscv64") && !ucontext {
        println!("cargo::rustc-cfg=costack_asm");
    }
}
