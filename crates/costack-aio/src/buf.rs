//! Reusable I/O buffers: one pool per thread, for the transfers of the loop's tasks.
//!
//! Ground floor: imports nothing from this crate.
//!
//! Servers that move data in fixed-size pieces (a block device's 4 KiB reads, a protocol's
//! 1 MiB frames) allocate and free the same sizes over and over. [`take`] hands out a buffer
//! from the calling thread's pool and [`give`] puts one back, so that a busy loop recycles a
//! few buffers instead of going to the allocator for every request. [`File`](crate::File)'s
//! bounce buffers come from here too.
//!
//! ```
//! let mut buf = costack_aio::buf::take(4096);
//! assert_eq!(buf.len(), 4096);
//! buf[0] = 1; // contents unspecified: a reused buffer holds old data
//! costack_aio::buf::give(buf); // the next take(4096) on this thread gets it back
//! ```
//!
//! # Size classes
//!
//! Buffers are kept by *capacity*, in powers of two from 4 KiB ([`MIN_CLASS`]) to 2 MiB
//! ([`MAX_CLASS`]); `take(len)` returns a buffer of `len` bytes whose capacity is `len`
//! rounded up to its class. Each class keeps up to 4 MiB of idle buffers (1 024 of 4 KiB, two
//! of 2 MiB), and at least two. Requests above 2 MiB get a buffer of their own, and `give`
//! drops what is not of a class (or finds its class full).
//!
//! Per thread, not per loop: one loop per thread means one pool per loop, and a buffer given
//! back on another thread (a worker's) simply goes to that thread's pool. The pool takes no
//! lock; the bookkeeping is one thread-local access.
//!
//! When to use it: for buffers that live as long as one request and whose sizes repeat. A
//! buffer kept for a long time (a connection's read buffer) gains nothing.

use std::cell::RefCell;

/// The smallest size class, in bytes: smaller requests get a buffer of this capacity.
pub const MIN_CLASS: usize = 1 << MIN_SHIFT;
/// The largest size class, in bytes: larger requests get a buffer of their own, never kept.
pub const MAX_CLASS: usize = 1 << MAX_SHIFT;

const MIN_SHIFT: u32 = 12;
const MAX_SHIFT: u32 = 21;
const CLASSES: usize = (MAX_SHIFT - MIN_SHIFT + 1) as usize;
/// The idle bytes a class keeps.
const CLASS_BYTES: usize = 4 << 20;

/// The free buffers of one thread, by size class: each stored buffer's capacity is its class
/// size, and its length what it had when it was given back.
///
/// The policy is in [`Pool::keep`]: a memory budget across classes, or trimming buffers idle
/// for long, would go there and in [`Pool::has_room`], without changing the public functions.
struct Pool {
    classes: [Vec<Vec<u8>>; CLASSES],
}

thread_local! {
    static POOL: RefCell<Pool> = const {
        RefCell::new(Pool {
            classes: [const { Vec::new() }; CLASSES],
        })
    };
}

/// The class of a buffer of capacity `cap`, if it is one of ours.
#[inline]
fn class_of(cap: usize) -> Option<usize> {
    let shift = cap.trailing_zeros();
    (cap.is_power_of_two() && (MIN_SHIFT..=MAX_SHIFT).contains(&shift))
        .then(|| (shift - MIN_SHIFT) as usize)
}

impl Pool {
    /// How many idle buffers class `c` keeps.
    #[inline]
    fn keep(c: usize) -> usize {
        (CLASS_BYTES >> (c as u32 + MIN_SHIFT)).max(2)
    }

    #[inline]
    fn take(&mut self, c: usize) -> Option<Vec<u8>> {
        self.classes[c].pop()
    }

    /// Whether class `c` keeps another idle buffer.
    #[inline]
    fn has_room(&self, c: usize) -> bool {
        self.classes[c].len() < Pool::keep(c)
    }
}

/// A buffer of `len` bytes from this thread's pool (contents unspecified: zeroes when it is
/// new, old data when it is reused). Its capacity is `len` rounded up to a size class, so
/// that [`give`] can keep it; above [`MAX_CLASS`] it is a new allocation of exactly `len`.
#[inline]
pub fn take(len: usize) -> Vec<u8> {
    let cap = len.max(MIN_CLASS).next_power_of_two();
    let Some(c) = class_of(cap) else {
        return vec![0u8; len];
    };
    // (A thread being torn down may have lost its pool already: then allocate.)
    let reused = POOL.try_with(|p| p.borrow_mut().take(c)).ok().flatten();
    let mut v = reused.unwrap_or_else(|| vec![0u8; cap]);
    // A pooled buffer keeps the length it was given back with: only bytes beyond that are
    // written (zeroes), and none when a size repeats.
    v.resize(len, 0);
    v
}

/// Gives a buffer back to this thread's pool for reuse; dropped if its capacity is not a size
/// class (see the [module docs](self#size-classes)) or the class is full. Any `Vec<u8>` may be
/// given, not only those from [`take`].
#[inline]
pub fn give(v: Vec<u8>) {
    let Some(c) = class_of(v.capacity()) else {
        return;
    };
    let _ = POOL.try_with(|p| {
        let mut p = p.borrow_mut();
        if p.has_room(c) {
            p.classes[c].push(v);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The idle buffers of class `c` on this thread (each test runs on a thread of its own).
    fn idle(c: usize) -> usize {
        POOL.with(|p| p.borrow().classes[c].len())
    }

    #[test]
    fn take_rounds_the_capacity_up_to_a_class() {
        for (len, cap) in [
            (0, 4096),
            (100, 4096),
            (4096, 4096),
            (4097, 8192),
            (MAX_CLASS, MAX_CLASS),
        ] {
            let v = take(len);
            assert_eq!((v.len(), v.capacity()), (len, cap), "take({len})");
        }
        let big = take(MAX_CLASS + 1);
        assert_eq!(big.len(), MAX_CLASS + 1);
        assert_eq!(
            class_of(big.capacity()),
            None,
            "above the classes: its own allocation"
        );
    }

    #[test]
    fn a_given_buffer_comes_back_with_its_bytes_and_zeroes_beyond_its_length() {
        let mut v = take(4096);
        v.fill(7);
        let at = v.as_ptr();
        give(v);
        assert_eq!(idle(0), 1);
        // Shorter: the same allocation, truncated.
        let v = take(100);
        assert_eq!((v.as_ptr(), v.len()), (at, 100));
        assert!(v.iter().all(|&b| b == 7));
        give(v);
        // Longer than it was given back: the bytes it had, then zeroes.
        let v = take(4000);
        assert_eq!((v.as_ptr(), v.len()), (at, 4000));
        assert!(v[..100].iter().all(|&b| b == 7));
        assert!(v[100..].iter().all(|&b| b == 0));
        assert_eq!(idle(0), 0);
    }

    #[test]
    fn give_keeps_only_class_buffers_and_only_as_many_as_the_class_keeps() {
        give(Vec::with_capacity(5000));
        give(Vec::with_capacity(MAX_CLASS * 2));
        assert!((0..CLASSES).all(|c| idle(c) == 0), "not a class: dropped");
        let top = CLASSES - 1;
        assert_eq!(Pool::keep(top), 2);
        assert_eq!(Pool::keep(0), 1024);
        for _ in 0..3 {
            give(Vec::with_capacity(MAX_CLASS));
        }
        assert_eq!(idle(top), 2, "a full class drops the rest");
    }
}
