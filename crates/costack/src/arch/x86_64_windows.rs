//! The context switch for x86_64 Windows (the Windows x64 calling convention), in assembly.
//!
//! # Design
//!
//! The shape is `x86_64.rs`'s — read its design first: the enterer *calls* into the coroutine
//! and the coroutine *returns* to it, so every enter pairs one `call` with one `ret`; only
//! callee-saved state is saved, and the inline assembly declares everything else clobbered so
//! that the compiler spills exactly what is live. Windows differs in three ways.
//!
//! **More callee-saved registers.** Windows x64 preserves `rdi`, `rsi` and `xmm6`–`xmm15` as
//! well as `rbx`, `rbp`, `r12`–`r15`. All but `rbx` and `rbp` are declared clobbered (the
//! compiler saves the live ones, and the xmm registers only when something is live in them);
//! `rbx` and `rbp`, which Rust inline assembly cannot name, are pushed by hand as on Linux.
//!
//! **The stack bounds in the TEB.** Windows keeps the running stack's bounds in the Thread
//! Environment Block (`gs:`) and checks them: exception dispatch and unwinding (`RtlUnwindEx`,
//! which Rust's panics go through) reject any frame outside `StackLimit..StackBase`, and
//! stack-guard growth and `EXCEPTION_STACK_OVERFLOW` work from `DeallocationStack`. So each side
//! of a switch treats these words like callee-saved registers — it pushes its own on its own
//! stack before it switches and pops them after it is switched back to — together with the
//! fiber data (`GetCurrentFiber`), so that a coroutine that converts itself to a fiber keeps
//! that fiber as its own, and the exception list:
//!
//! ```text
//!   gs:[0x00]    ExceptionList       (NT_TIB)
//!   gs:[0x08]    StackBase           (NT_TIB)
//!   gs:[0x10]    StackLimit          (NT_TIB)
//!   gs:[0x20]    FiberData           (NT_TIB)
//!   gs:[0x1478]  DeallocationStack   (TEB)
//! ```
//!
//! The pushes and pops address these words through the TEB's linear address, read from
//! `gs:[0x30]` (`NT_TIB.Self`, what `NtCurrentTeb` returns) before the pushes and again after
//! the switch for the pops, not with a `gs:` override on each: every switch reads back what the
//! previous one wrote, and a `gs:[disp]` store followed by a load of it misses the CPU's fast
//! store-to-load path (on Zen 5 under wine, a store-then-load loop costs 2.0 ns an iteration
//! through `gs:[disp]` and 0.3 ns through `[reg + disp]`, and the round trip lost ~4 ns to it).
//! `gs:[0x30]` itself is never written.
//!
//! x64 Windows itself does not use the exception list (its handlers are found from unwind
//! tables), but wine does: it chains the handlers of its own built-in code there, and while
//! dispatching an exception it calls every one whose frame address lies below the faulting
//! stack pointer — on another stack, that comparison means nothing, and the thread's outermost
//! handler ended every panic in a coroutine ("failed to initiate panic") until the list was
//! switched too. A fresh coroutine starts with an empty list, `-1`, as wine's own fibers do.
//!
//! The guaranteed reserve (`GuaranteedStackBytes`) stays the thread's: `stack/windows.rs`'
//! guard band is larger than it.
//!
//! ```text
//!   enterer's stack (any stack)              coroutine's stack (suspended)
//!   +--------------------------+             +--------------------------+
//!   | enterer's frame          |             | coroutine frames ...     |
//!   | saved rbp, rbx           |             | saved rbp, rbx           |
//!   | saved DeallocationStack, |             | its DeallocationStack,   |
//!   |   FiberData, StackLimit, |             |   FiberData, StackLimit, |
//!   |   StackBase,             |             |   StackBase,             |
//!   |   ExceptionList          |             |   ExceptionList          |
//!   | return address (call)    | <- link     | resume address           | <- sp
//!   +--------------------------+             +--------------------------+
//! ```
//!
//! **Unwind information is SEH, not DWARF.** The windows-gnu target unwinds with the system's
//! unwinder, which reads `.pdata`/`.xdata` unwind codes. Those cannot say "the caller's stack
//! pointer is in memory at `[rbx + 8]`" as the Linux trampoline's CFI does, but one code reads both
//! the caller's `rip` and `rsp` from memory: `UWOP_PUSH_MACHFRAME`, meant for interrupt frames.
//! The trampoline declares one (`.seh_pushframe`) in the five words just above its frame, and
//! every `resume` writes into it where it will be returned to and what its stack pointer was
//! before its pushes (two stores per enter). So the system's unwinder — `std::backtrace`, a
//! debugger — walks from a coroutine's frames into its enterer's. The enterer's `rbx` and `rbp`
//! it then reports are the coroutine's (the frame holds no copy of them), which matters only for
//! an enterer function that addresses its frame through `rbp`. Panics never cross the
//! trampoline (the coroutine catches them at its base), so they do not depend on this.
//!
//! ## A fresh coroutine
//!
//! `init` leaves, below its stack top:
//!
//! ```text
//!   +------------------------------+ <- 16-byte aligned
//!   | machine frame: rip, cs,      |  read by the unwinder; rip and rsp written by each resume
//!   |   eflags, rsp, ss            |
//!   | costack_trampoline           | <- sp (the first resume address); sp + 8 is 16-aligned
//!   | entry function               |
//!   | StackBase                    |  the TEB values the trampoline installs
//!   | StackLimit                   |
//!   | DeallocationStack            |
//!   +------------------------------+
//! ```
//!
//! The trampoline records `link`, installs the coroutine's stack bounds and an empty exception
//! list in the TEB (the fiber data stays the enterer's until the coroutine changes it), moves onto the fresh stack, keeps
//! the context pointer in `rbx`, leaves the 32 bytes of home space the convention wants, and
//! calls the entry function with the context in `rcx`. When that returns it switches to the
//! enterer for good; the enterer's pops restore the enterer's bounds.
//!
//! The `fp-state` feature works as on Linux (`x86_64_fp.rs`): Windows x64 also makes MXCSR's
//! control bits and the x87 control word callee-saved.
//!
//! May import: `stack` (the bounds of the stack `init` prepares).

use crate::stack::{page_size, Stack};
use core::arch::{asm, global_asm};

/// Saved stack pointers of one coroutine, and where its trampoline's machine frame is.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Context {
    /// The suspended coroutine's stack pointer; `[sp]` is its resume address.
    sp: *mut u8,
    /// The enterer's stack pointer while the coroutine runs; `[link]` is a return address.
    link: *mut u8,
    /// The machine frame above the trampoline's frame (five words: rip, cs, eflags, rsp, ss).
    frame: *mut usize,
}

/// The most stack, below the `top` given to [`Context::init`], that `init` uses before the
/// coroutine's first frame (alignment, the machine frame and the words it stores).
pub(crate) const INIT_STACK: usize = 128;

/// The function a fresh coroutine starts in, given its context pointer; when it returns, the
/// coroutine is finished.
pub(crate) type Entry = extern "C" fn(*mut Context);

impl Context {
    /// A context that has not been prepared yet.
    pub(crate) const fn new() -> Context {
        Context {
            sp: core::ptr::null_mut(),
            link: core::ptr::null_mut(),
            frame: core::ptr::null_mut(),
        }
    }

    /// Prepares a fresh coroutine on `stack` whose frames start below `top`; its first resume
    /// calls `entry` with this context's address.
    ///
    /// # Safety
    /// `top` must point into (or one past) `stack`'s usable part with [`INIT_STACK`] bytes and
    /// room for the coroutine's frames below it, and `self` must stay at this address until the
    /// coroutine finishes.
    pub(crate) unsafe fn init(&mut self, top: *mut u8, stack: &Stack, entry: Entry) {
        let aligned = (top as usize) & !15;
        let frame = (aligned - 48) as *mut usize;
        let sp = (aligned - 56) as *mut usize;
        // SAFETY: the caller guarantees INIT_STACK bytes below `top` inside the stack: the
        // machine frame (5 words up to `aligned - 8`) and the 5 words from `sp` down.
        unsafe {
            for i in 0..5 {
                frame.add(i).write(0); // rip 0 ends a walk until the first resume fills it
            }
            sp.write(costack_trampoline as *const () as usize);
            sp.sub(1).write(entry as usize);
            sp.sub(2).write(stack.top() as usize); // StackBase
                                                   // StackLimit: everything above the no-access floor page may hold frames (the guard
                                                   // band too, once the system has let the stack grow into it).
            sp.sub(3).write(stack.guard() as usize + page_size());
            sp.sub(4).write(stack.guard() as usize); // DeallocationStack
        }
        self.sp = sp.cast();
        self.link = core::ptr::null_mut();
        self.frame = frame;
    }
}

/// Switches from the enterer into the coroutine whose context is `ctx`, and returns when that
/// coroutine yields or finishes.
///
/// # Safety
/// `ctx` must be a context prepared by [`Context::init`] whose coroutine is suspended (or not yet
/// started), not running anywhere, with a live stack; the coroutine code it runs must only
/// switch back through [`suspend`] with the same `ctx`, or by returning from its entry function.
#[inline(always)]
pub(crate) unsafe fn resume(ctx: *mut Context) {
    // SAFETY: see the function's contract. Every register but rsp/rbx/rbp is declared clobbered
    // (the coroutine runs arbitrary code before it switches back); rbx, rbp and our TEB stack
    // fields are saved on our stack by hand. The stack is used (no `nostack`), so rsp is
    // 16-byte aligned at entry.
    unsafe {
        asm!(
            "push rbp",
            "push rbx",
            "mov r11, gs:[0x30]",           // the TEB's address (NT_TIB.Self)
            "push qword ptr [r11 + 0x1478]", // DeallocationStack
            "push qword ptr [r11 + 0x20]",  // FiberData
            "push qword ptr [r11 + 0x10]",  // StackLimit
            "push qword ptr [r11 + 0x08]",  // StackBase
            "push qword ptr [r11 + 0x00]",  // ExceptionList
            "mov r11, [rdi + 16]",          // the coroutine's machine frame, for the unwinder:
            "lea r10, [rip + 2f]",
            "mov [r11], r10",               //   rip = where this enter returns
            "lea r10, [rsp + 56]",
            "mov [r11 + 24], r10",          //   rsp = ours before the pushes
            "mov rax, [rdi]",               // the coroutine's saved sp; [rax] = resume address
            "call [rax]",
            "2:",
            "mov r11, gs:[0x30]",
            "pop qword ptr [r11 + 0x00]",
            "pop qword ptr [r11 + 0x08]",
            "pop qword ptr [r11 + 0x10]",
            "pop qword ptr [r11 + 0x20]",
            "pop qword ptr [r11 + 0x1478]",
            "pop rbx",
            "pop rbp",
            inout("rdi") ctx => _,
            out("rsi") _, out("r12") _, out("r13") _, out("r14") _, out("r15") _,
            out("xmm6") _, out("xmm7") _, out("xmm8") _, out("xmm9") _, out("xmm10") _,
            out("xmm11") _, out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
            clobber_abi("win64"),
        );
    }
}

/// Suspends the running coroutine (whose context is `ctx`) and returns to its enterer; returns
/// `ctx` when the coroutine is entered again.
///
/// # Safety
/// Must be called on the coroutine's own stack, while it runs, with its own `ctx`, whose `link`
/// was set by the [`resume`] that entered it.
#[inline(always)]
pub(crate) unsafe fn suspend(ctx: *mut Context) -> *mut Context {
    // SAFETY: see the function's contract. When we are resumed, `rdi` holds `ctx` again (the
    // enterer passes it), `rax` our saved sp; every other register holds the enterer's values, so
    // all but rsp/rbx/rbp are declared clobbered and rbx/rbp and our TEB stack fields are
    // restored from our stack.
    unsafe {
        asm!(
            "push rbp",
            "push rbx",
            "mov r11, gs:[0x30]",
            "push qword ptr [r11 + 0x1478]",
            "push qword ptr [r11 + 0x20]",
            "push qword ptr [r11 + 0x10]",
            "push qword ptr [r11 + 0x08]",
            "push qword ptr [r11 + 0x00]",
            "lea rax, [rip + 2f]",          // where the next enter continues us
            "push rax",
            "mov [rdi], rsp",               // ctx.sp = our stack pointer
            "mov rsp, [rdi + 8]",           // back onto the enterer's stack (ctx.link)
            "ret",                          // into the enterer, which pops its TEB fields
            // Entered again by `call [rax]`: rsp = enterer's stack, rdi = ctx, rax = ctx.sp.
            "2:",
            "mov [rdi + 8], rsp",           // ctx.link = the enterer's stack pointer
            "lea rsp, [rax + 8]",           // onto our stack, dropping the resume address
            "mov r11, gs:[0x30]",
            "pop qword ptr [r11 + 0x00]",
            "pop qword ptr [r11 + 0x08]",
            "pop qword ptr [r11 + 0x10]",
            "pop qword ptr [r11 + 0x20]",
            "pop qword ptr [r11 + 0x1478]",
            "pop rbx",
            "pop rbp",
            inout("rdi") ctx => _,
            out("rsi") _, out("r12") _, out("r13") _, out("r14") _, out("r15") _,
            out("xmm6") _, out("xmm7") _, out("xmm8") _, out("xmm9") _, out("xmm10") _,
            out("xmm11") _, out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
            clobber_abi("win64"),
        );
    }
    ctx
}

#[cfg(feature = "fp-state")]
pub(crate) use super::x86_64_fp::FpState;

extern "C" {
    /// The first resume address of every coroutine (defined in the `global_asm!` below).
    fn costack_trampoline();
}

// The trampoline. Entered by `call [rax]` from `resume` with rdi = ctx and rax = ctx.sp, on the
// enterer's stack, with the enterer's TEB fields pushed; `init` left the entry function and the
// coroutine's TEB values below [rax] and the machine frame above it (see the module docs). Its
// unwind codes: the machine frame at rax + 8 (`.seh_pushframe`), then 32 bytes of home space.
global_asm!(
    ".text",
    ".p2align 4",
    ".globl costack_trampoline",
    ".def costack_trampoline; .scl 2; .type 32; .endef",
    ".seh_proc costack_trampoline",
    "costack_trampoline:",
    "mov [rdi + 8], rsp", // ctx.link = the enterer's stack pointer
    "mov rdx, [rax - 8]", // the entry function
    "mov rcx, [rax - 16]",
    "mov gs:[0x08], rcx", // StackBase
    "mov rcx, [rax - 24]",
    "mov gs:[0x10], rcx", // StackLimit
    "mov rcx, [rax - 32]",
    "mov gs:[0x1478], rcx",        // DeallocationStack
    "mov qword ptr gs:[0x00], -1", // ExceptionList: no frames of the enterer's
    "lea rsp, [rax + 8]",          // onto the fresh stack: rsp = the machine frame, 16-aligned
    ".seh_pushframe",
    "sub rsp, 32", // home space for the entry function's arguments
    ".seh_stackalloc 32",
    ".seh_endprologue",
    "mov rbx, rdi", // keep ctx in a callee-saved register
    "xor ebp, ebp",
    "mov rcx, rdi", // entry(ctx)
    "call rdx",
    // Finished: leave for good. The enterer's pops restore its TEB fields.
    "mov rsp, [rbx + 8]", // the enterer's stack (ctx.link)
    "ret",
    ".seh_endproc",
);
