//! Valgrind client requests, so that memcheck follows coroutine switches.
//!
//! Valgrind notices a switch to another stack by a large jump of the stack pointer, and without
//! help it then reports the new stack's accesses as invalid. Registering each coroutine stack
//! (`VALGRIND_STACK_REGISTER`) tells it where the stacks are. A client request is a magic
//! sequence of instructions that does nothing on real hardware (four `rol` of `rdi` that add up
//! to 128 bits, then `xchg rbx, rbx`) and that Valgrind's JIT recognises; outside Valgrind it
//! costs a handful of cycles, and it is only issued when a stack is mapped or unmapped.
//!
//! May import: nothing of the crate.

#[cfg(target_arch = "x86_64")]
#[inline]
fn client_request(default: usize, request: usize, args: [usize; 5]) -> usize {
    let block: [usize; 6] = [request, args[0], args[1], args[2], args[3], args[4]];
    let result;
    // SAFETY: the rotations leave rdi unchanged (3 + 13 + 61 + 51 = 128) and `xchg rbx, rbx` is a
    // no-op; under Valgrind the sequence reads `block` through rax and writes the result to rdx.
    unsafe {
        core::arch::asm!(
            "rol rdi, 3",
            "rol rdi, 13",
            "rol rdi, 61",
            "rol rdi, 51",
            "xchg rbx, rbx",
            inout("rdx") default => result,
            in("rax") block.as_ptr(),
            inout("rdi") 0usize => _,
            options(nostack),
        );
    }
    result
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn client_request(default: usize, _request: usize, _args: [usize; 5]) -> usize {
    default
}

const RUNNING_ON_VALGRIND: usize = 0x1001;
const STACK_REGISTER: usize = 0x1501;
const STACK_DEREGISTER: usize = 0x1502;

/// Whether this process runs under Valgrind (asked once).
fn running_on_valgrind() -> bool {
    use std::sync::atomic::{AtomicU8, Ordering};
    static ANSWER: AtomicU8 = AtomicU8::new(0); // 0 unknown, 1 no, 2 yes
    match ANSWER.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let yes = client_request(0, RUNNING_ON_VALGRIND, [0; 5]) != 0;
            ANSWER.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
            yes
        }
    }
}

/// Valgrind's stack ids, by stack bottom address. Only used under Valgrind, so that a `Stack`
/// stays three plain words everywhere else.
static IDS: std::sync::Mutex<Vec<(usize, usize)>> = std::sync::Mutex::new(Vec::new());

/// Tells Valgrind (if it is there) that `start..end` is a stack.
pub(crate) fn stack_register(start: *const u8, end: *const u8) {
    if running_on_valgrind() {
        let id = client_request(0, STACK_REGISTER, [start as usize, end as usize, 0, 0, 0]);
        IDS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((start as usize, id));
    }
}

/// Forgets the stack whose usable memory starts at `start`.
pub(crate) fn stack_deregister(start: *const u8) {
    if running_on_valgrind() {
        let mut ids = IDS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = ids.iter().rposition(|&(s, _)| s == start as usize) {
            let (_, id) = ids.swap_remove(i);
            client_request(0, STACK_DEREGISTER, [id, 0, 0, 0, 0]);
        }
    }
}
