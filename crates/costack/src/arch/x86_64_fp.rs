//! The floating-point control state that the x86_64 ABIs (System V and Windows x64 alike) make
//! callee-saved: MXCSR's control bits and the x87 control word. The `fp-state` feature saves and
//! restores it around every switch (see `x86_64.rs`, "Floating-point control state", for why
//! that is not the default).
//!
//! May import: nothing of the crate.

use core::arch::asm;

/// The callee-saved floating-point control state: MXCSR and the x87 control word.
pub(crate) struct FpState {
    mxcsr: u32,
    x87cw: u16,
}

impl FpState {
    #[inline(always)]
    pub(crate) fn save() -> FpState {
        let mut st = FpState { mxcsr: 0, x87cw: 0 };
        // SAFETY: stmxcsr/fnstcw store 4 and 2 bytes into fields of that size.
        unsafe {
            asm!("stmxcsr [{}]", in(reg) &mut st.mxcsr, options(nostack, preserves_flags));
            asm!("fnstcw [{}]", in(reg) &mut st.x87cw, options(nostack, preserves_flags));
        }
        st
    }

    #[inline(always)]
    pub(crate) fn restore(&self) {
        // SAFETY: loading values saved by `save` on this thread, so they are valid.
        unsafe {
            asm!("ldmxcsr [{}]", in(reg) &self.mxcsr, options(nostack, preserves_flags));
            asm!("fldcw [{}]", in(reg) &self.x87cw, options(nostack, preserves_flags));
        }
    }
}
