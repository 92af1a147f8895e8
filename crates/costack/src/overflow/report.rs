//! The overflow report both systems' handlers print: recognising an overflow of the running
//! coroutine from the fault address and the stack pointer, and composing the message in a fixed
//! buffer.
//!
//! May import: `coroutine::header` (the control block it reads).

use crate::coroutine::header::Header;

/// A fixed buffer for composing the report without allocating.
pub(super) struct Report {
    bytes: [u8; 512],
    len: usize,
}

impl Report {
    /// The report's text.
    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    fn push(&mut self, s: &[u8]) {
        let n = s.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
    }

    fn push_dec(&mut self, mut v: u64) {
        let mut tmp = [0u8; 20];
        let mut i = tmp.len();
        loop {
            i -= 1;
            tmp[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&tmp[i..]);
    }

    fn push_hex(&mut self, v: u64) {
        let mut tmp = [0u8; 16];
        for (i, t) in tmp.iter_mut().enumerate() {
            let nib = (v >> ((15 - i) * 4)) & 0xf;
            *t = b"0123456789abcdef"[nib as usize];
        }
        self.push(b"0x");
        self.push(&tmp);
    }
}

/// Whether a fault at `addr` (when the system says) with the stack pointer at `sp` (when it can
/// be read) is an overflow of `h`, the coroutine running on the faulting thread: the address
/// lies in its guard, or the stack pointer has gone below its usable stack — but no further
/// below the guard than the stack is large: a stack pointer that far away is on some other
/// stack the coroutine switched to.
pub(super) fn is_overflow(h: &Header, addr: Option<usize>, sp: Option<usize>) -> bool {
    let (guard, guard_len) = h.guard_range();
    let bottom = guard + guard_len;
    let in_guard = addr.is_some_and(|a| a >= guard && a < bottom);
    let sp_under = sp.is_some_and(|sp| sp < bottom && sp >= guard.saturating_sub(h.stack_size()));
    in_guard || sp_under
}

/// Says which coroutine (id, name) overflowed a stack of what size, with the fault address and
/// stack pointer when known. Allocates nothing (it runs in a signal or exception handler, on
/// the little stack that is left); the caller writes it out and aborts.
pub(super) fn report(h: &Header, addr: Option<usize>, sp: Option<usize>) -> Report {
    let mut b = Report {
        bytes: [0; 512],
        len: 0,
    };
    let id = h.id().as_u64();
    b.push(b"\ncostack: coroutine co");
    b.push_dec(id >> 40);
    b.push(b".");
    b.push_dec(id & ((1 << 40) - 1));
    if let Some(name) = h.name() {
        b.push(b" \"");
        b.push(name.as_bytes());
        b.push(b"\"");
    }
    b.push(b" overflowed its stack of ");
    b.push_dec((h.stack_size() / 1024) as u64);
    b.push(b" KiB (");
    if let Some(addr) = addr {
        b.push(b"fault at ");
        b.push_hex(addr as u64);
        b.push(b", ");
    }
    if let Some(sp) = sp {
        b.push(b"stack pointer ");
        b.push_hex(sp as u64);
        b.push(b", ");
    }
    b.push(b"stack ");
    let (bottom, top) = h.stack_bounds();
    b.push_hex(bottom as u64);
    b.push(b"..");
    b.push_hex(top as u64);
    b.push(b"); aborting. Give it a larger stack with Builder::stack_size.\n");
    b
}
