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
//! of 2 MiB), and at least two; the whole pool keeps at most [`POOL_BYTES`]. Requests above
//! 2 MiB get a buffer of their own, and `give` drops what is not of a class (or finds its
//! class, or the pool, full).
//!
//! # Giving memory back
//!
//! A burst leaves the pool full of buffers nobody may ask for again. [`trim`] drops the
//! buffers that stayed idle since the previous `trim` on the same thread: a loop that calls it
//! every second or so keeps what it uses and gives back, within two periods, what a burst left
//! behind. [`held_bytes`] tells what the pool keeps.
//!
//! ```
//! use costack_aio::buf;
//! buf::give(buf::take(64 * 1024));
//! assert_eq!(buf::held_bytes(), 64 * 1024);
//! assert_eq!(buf::trim(), 0); // given back since the last trim: kept
//! assert_eq!(buf::trim(), 64 * 1024); // idle for a whole period: dropped
//! assert_eq!(buf::held_bytes(), 0);
//! ```
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
/// The idle bytes one thread's pool keeps, across classes.
pub const POOL_BYTES: usize = 8 << 20;

/// The free buffers of one thread, by size class: each stored buffer's capacity is its class
/// size, and its length what it had when it was given back; with each, the trim period
/// ([`Pool::epoch`]) it was given back in.
///
/// The policy is in [`Pool::keep`] and [`Pool::has_room`] (how much is kept) and
/// [`Pool::trim`] (what is dropped when idle).
struct Pool {
    classes: [Vec<(Vec<u8>, u64)>; CLASSES],
    /// Capacity of the buffers kept.
    bytes: usize,
    /// Trim periods so far: [`trim`] calls.
    epoch: u64,
}

thread_local! {
    static POOL: RefCell<Pool> = const {
        RefCell::new(Pool {
            classes: [const { Vec::new() }; CLASSES],
            bytes: 0,
            epoch: 0,
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
        let (v, _) = self.classes[c].pop()?;
        self.bytes -= v.capacity();
        Some(v)
    }

    /// Whether class `c` keeps another idle buffer.
    #[inline]
    fn has_room(&self, c: usize) -> bool {
        self.classes[c].len() < Pool::keep(c) && self.bytes + (MIN_CLASS << c) <= POOL_BYTES
    }

    #[inline]
    fn put(&mut self, c: usize, v: Vec<u8>) {
        self.bytes += v.capacity();
        self.classes[c].push((v, self.epoch));
    }

    /// Drops the buffers given back before the current period, starts a new one; the bytes
    /// dropped. (Buffers are taken from the end of a class, so the oldest are at the front.)
    fn trim(&mut self) -> usize {
        let epoch = self.epoch;
        let mut freed = 0;
        for class in &mut self.classes {
            let old = class.iter().take_while(|(_, e)| *e < epoch).count();
            freed += class.drain(..old).map(|(v, _)| v.capacity()).sum::<usize>();
            if class.is_empty() {
                *class = Vec::new(); // its own array goes back too
            }
        }
        self.bytes -= freed;
        self.epoch += 1;
        freed
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
            p.put(c, v);
        }
    });
}

/// Drops the buffers of this thread's pool that stayed idle (were neither taken nor given
/// back) since the previous `trim` on this thread, and starts a new period; returns the bytes
/// dropped. Call it periodically (every second, say) on a loop thread: a buffer idle for a
/// whole period goes back to the allocator. See [Giving memory back](self#giving-memory-back).
pub fn trim() -> usize {
    POOL.try_with(|p| p.borrow_mut().trim()).unwrap_or(0)
}

/// The bytes (buffer capacities) this thread's pool keeps idle; at most [`POOL_BYTES`].
pub fn held_bytes() -> usize {
    POOL.try_with(|p| p.borrow().bytes).unwrap_or(0)
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
        assert_eq!(held_bytes(), 2 * MAX_CLASS);
    }

    #[test]
    fn the_pool_keeps_at_most_pool_bytes_across_classes() {
        // 4 MiB in each of the classes of 1 MiB, 512 KiB, 256 KiB: only 8 MiB kept.
        for c in [CLASSES - 2, CLASSES - 3, CLASSES - 4] {
            let size = MIN_CLASS << c;
            for _ in 0..CLASS_BYTES / size {
                give(Vec::with_capacity(size));
            }
        }
        assert_eq!(held_bytes(), POOL_BYTES);
        assert_eq!(idle(CLASSES - 2), 4);
        assert_eq!(idle(CLASSES - 3), 8);
        assert_eq!(idle(CLASSES - 4), 0, "the pool was full");
        // A buffer taken makes room for one given.
        let v = take(MIN_CLASS << (CLASSES - 3));
        assert_eq!(held_bytes(), POOL_BYTES - v.capacity());
        give(Vec::with_capacity(MIN_CLASS << (CLASSES - 4)));
        assert_eq!(idle(CLASSES - 4), 1);
        assert_eq!(held_bytes(), POOL_BYTES - v.capacity() / 2);
    }

    #[test]
    fn trim_drops_exactly_the_buffers_idle_for_a_whole_period() {
        for _ in 0..3 {
            give(Vec::with_capacity(MIN_CLASS));
        }
        give(Vec::with_capacity(MAX_CLASS));
        assert_eq!(held_bytes(), 3 * MIN_CLASS + MAX_CLASS);
        // Given back in this period: kept.
        assert_eq!(trim(), 0);
        assert_eq!(held_bytes(), 3 * MIN_CLASS + MAX_CLASS);
        // Used again in the next period: one 4 KiB buffer taken and given back.
        give(take(100));
        assert_eq!(idle(0), 3);
        // Idle since the previous trim: the two other 4 KiB ones and the 2 MiB one.
        assert_eq!(trim(), 2 * MIN_CLASS + MAX_CLASS);
        assert_eq!((idle(0), idle(CLASSES - 1)), (1, 0));
        assert_eq!(held_bytes(), MIN_CLASS);
        assert_eq!(trim(), MIN_CLASS);
        assert_eq!(held_bytes(), 0);
        assert_eq!(trim(), 0);
    }
}
