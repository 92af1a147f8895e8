//! The per-thread pool of coroutine stacks.
//!
//! Mapping a stack costs three system calls (`mmap`, `mprotect`, and later `munmap`) and a few
//! microseconds; a coroutine that only runs for a few nanoseconds cannot afford that. So when the
//! last handle to a coroutine goes away, its stack is not unmapped but kept in a small pool of
//! the thread that ran it, and the next coroutine created on that thread with the same stack
//! size takes it back. In steady state, creating, running and dropping a coroutine makes no
//! system call and no heap allocation: the coroutine's control block and its closure live at the
//! top of the pooled stack itself.
//!
//! The pool is bounded ([`DEFAULT_CAPACITY`] stacks per thread unless [`set_capacity`] says
//! otherwise); stacks beyond the bound are unmapped. [`trim`] empties it.
//!
//! What is pooled is a stack together with the control block at its top, which keeps the
//! `Stack` that owns the mapping; a new coroutine rewrites every other field of it. A reused stack
//! still holds whatever the previous coroutine left on it. Safe code cannot read it: a
//! coroutine's control block and closure are written fresh before it first runs, and Rust never
//! lets safe code read stack memory that it has not initialised.
//!
//! ```
//! use costack::{pool, Coroutine};
//!
//! pool::set_capacity(8);
//! let co = Coroutine::new(|| 1 + 1);
//! assert_eq!(co.enter().finished(), Some(2));
//! drop(co); // its stack goes to this thread's pool
//! assert!(pool::len() >= 1);
//! pool::trim();
//! assert_eq!(pool::len(), 0);
//! ```
//!
//! May import: `coroutine::header` (a pooled stack is named by its dead control block) and `stack`.
//! Not the switch or the handles: they build on the pool.

use crate::coroutine::header::Header;
use crate::stack::Stack;
use std::cell::UnsafeCell;
use std::ptr::{self, NonNull};

/// The default number of stacks each thread keeps for reuse.
pub const DEFAULT_CAPACITY: usize = 256;

/// Stacks pooled beyond this many give their memory back to the kernel (`MADV_DONTNEED`) as
/// they enter the pool, so that a burst of coroutines does not pin its peak memory.
pub const DEFAULT_WATERMARK: usize = 64;

/// A pooled stack, named by the (dead) control block at its top, which still holds the stack.
type Pooled = NonNull<Header>;

struct Pool {
    /// Pooled stacks of the default size, the common case.
    default: Vec<Pooled>,
    /// Pooled stacks of other sizes, grouped by usable size.
    by_size: Vec<(usize, Vec<Pooled>)>,
    len: usize,
    capacity: usize,
    watermark: usize,
    #[cfg(costack_stack_usage)]
    max_used: usize,
}

thread_local! {
    // UnsafeCell, not RefCell: the pool's functions never call out to user code while they hold
    // a reference, so no borrow can overlap another (see the SAFETY comments below).
    static POOL: UnsafeCell<Pool> = const {
        UnsafeCell::new(Pool {
            default: Vec::new(),
            by_size: Vec::new(),
            len: 0,
            capacity: DEFAULT_CAPACITY,
            watermark: DEFAULT_WATERMARK,
            #[cfg(costack_stack_usage)]
            max_used: 0,
        })
    };
}

impl Pool {
    /// The list holding stacks of `size` usable bytes, if there is one.
    #[inline]
    fn list_for(&mut self, size: usize) -> Option<&mut Vec<Pooled>> {
        if size == crate::DEFAULT_STACK_SIZE {
            return Some(&mut self.default);
        }
        self.by_size
            .iter_mut()
            .find(|(s, _)| *s == size)
            .map(|(_, l)| l)
    }

    /// Takes every pooled stack out, for freeing.
    fn drain(&mut self) -> Vec<Pooled> {
        let mut all = std::mem::take(&mut self.default);
        for (_, l) in self.by_size.drain(..) {
            all.extend(l);
        }
        self.len = 0;
        all
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        free_all(self.drain());
    }
}

/// Unmaps pooled stacks.
fn free_all(list: Vec<Pooled>) {
    for h in list {
        // SAFETY: a pooled control block is dead except for its `stack`, which it still owns;
        // nothing else refers to it once it is out of the pool.
        drop(unsafe { take_stack(h) });
    }
}

/// Takes the stack out of a pooled control block, to unmap it.
///
/// # Safety
/// `h` is a dead control block (its coroutine freed) that still owns its stack, and is not
/// used again.
unsafe fn take_stack(h: NonNull<Header>) -> Stack {
    // SAFETY: per the contract the field is valid and read once.
    unsafe { ptr::read(h.as_ref().stack_ref()) }
}

/// Runs `f` on this thread's pool, or returns `None` once the pool has been destroyed at thread
/// exit.
#[inline]
fn with_pool<T>(f: impl FnOnce(&mut Pool) -> T) -> Option<T> {
    let p = POOL.try_with(|p| p.get()).ok()?;
    // SAFETY: the pool is thread-local and no function of this module re-enters another while
    // it holds the reference (`f` only touches the pool; stacks are freed after it returns), so
    // this is the only live reference.
    Some(f(unsafe { &mut *p }))
}

/// Takes a pooled stack of exactly `size` usable bytes, if there is one: its control block,
/// dead except for the `stack` field.
#[inline]
pub(crate) fn take(size: usize) -> Option<NonNull<Header>> {
    let p = POOL.try_with(|p| p.get()).ok()?;
    // SAFETY: as in `with_pool`.
    let p = unsafe { &mut *p };
    let h = p.list_for(size)?.pop()?;
    p.len -= 1;
    Some(h)
}

/// Pools the stack of a freed coroutine (`h` is its dead control block, which still owns the
/// stack); unmaps it if the pool is full or gone.
///
/// # Safety
/// `h` is a control block whose coroutine has been freed: nothing refers to it, and only its
/// `stack` field is still meaningful.
#[inline]
pub(crate) unsafe fn put(h: NonNull<Header>) {
    // The common case first, small enough to inline into the release of a coroutine: a
    // default-size stack into a pool below its watermark (it keeps its memory), with room in
    // its list already (no allocation). The rest — other sizes, the watermark's `madvise`, the
    // pool full or gone, painting for `stack-usage` — is out of line.
    #[cfg(not(costack_stack_usage))]
    if let Ok(p) = POOL.try_with(|p| p.get()) {
        // SAFETY: as in `with_pool`: thread-local, and nothing else runs while we hold it.
        let p = unsafe { &mut *p };
        // SAFETY: per the contract the `stack` field is valid.
        let size = unsafe { h.as_ref().stack_ref().size() };
        if size == crate::DEFAULT_STACK_SIZE
            && p.len < p.watermark
            && p.len < p.capacity
            && p.default.len() < p.default.capacity()
        {
            p.default.push(h);
            p.len += 1;
            return;
        }
    }
    // SAFETY: forwarded contract.
    unsafe { put_slow(h) }
}

/// [`put`] for everything but its common case.
///
/// # Safety
/// As for [`put`].
#[cold]
#[inline(never)]
unsafe fn put_slow(h: NonNull<Header>) {
    // SAFETY: per the contract the `stack` field is valid.
    let stack = unsafe { h.as_ref().stack_ref() };
    let size = stack.size();
    let kept = with_pool(|p| {
        if p.len >= p.capacity {
            return false;
        }
        if p.len >= p.watermark {
            // Keep the page(s) holding the control block: it owns the stack.
            stack.release_memory(Header::RESERVED);
        } else {
            #[cfg(costack_stack_usage)]
            stack.paint(stack.used(), Header::RESERVED);
        }
        match p.list_for(size) {
            Some(list) => list.push(h),
            None => p.by_size.push((size, vec![h])),
        }
        p.len += 1;
        true
    });
    if kept != Some(true) {
        // SAFETY: per the contract, and the pool did not take it.
        drop(unsafe { take_stack(h) });
    }
}

/// Sets how many stacks this thread keeps for reuse (0 turns pooling off) and unmaps any
/// beyond the new bound.
pub fn set_capacity(capacity: usize) {
    let excess = with_pool(|p| {
        p.capacity = capacity;
        let mut excess = Vec::new();
        while p.len > capacity {
            let list = if p.default.is_empty() {
                match p.by_size.iter_mut().find(|(_, l)| !l.is_empty()) {
                    Some((_, l)) => l,
                    None => break,
                }
            } else {
                &mut p.default
            };
            excess.extend(list.pop());
            p.len -= 1;
        }
        excess
    });
    free_all(excess.unwrap_or_default());
}

/// Sets how many pooled stacks keep their memory; stacks pooled beyond that many are handed
/// back to the kernel with `MADV_DONTNEED` (default [`DEFAULT_WATERMARK`]).
pub fn set_watermark(watermark: usize) {
    with_pool(|p| p.watermark = watermark);
}

/// The largest stack use (high-water mark, in bytes) of any coroutine that has ended on this
/// thread. Only with the `stack-usage` feature; `None` without it.
pub fn max_stack_used() -> Option<usize> {
    #[cfg(costack_stack_usage)]
    return with_pool(|p| p.max_used);
    #[cfg(not(costack_stack_usage))]
    None
}

#[cfg(costack_stack_usage)]
pub(crate) fn note_stack_used(used: usize) {
    with_pool(|p| p.max_used = p.max_used.max(used));
}

/// How many stacks this thread keeps for reuse at most.
pub fn capacity() -> usize {
    with_pool(|p| p.capacity).unwrap_or(0)
}

/// How many stacks this thread's pool holds now.
pub fn len() -> usize {
    with_pool(|p| p.len).unwrap_or(0)
}

/// Unmaps every stack in this thread's pool.
pub fn trim() {
    free_all(with_pool(|p| p.drain()).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    //! The pool's poisoning test lives here, inside the crate, because poisoning pooled stacks
    //! is no public API: it checks that a new coroutine relies on nothing a freed one left on
    //! its stack or in its dead control block.

    use super::*;
    use crate::{yield_now, Coroutine, Status};
    use std::mem::size_of;

    /// Overwrites a pooled stack with `byte`, all but the control block's `stack` field.
    ///
    /// # Safety
    /// `h` is a dead control block in the pool: nothing reads its other fields or its stack
    /// before a new coroutine writes them.
    unsafe fn poison_dead(h: NonNull<Header>, byte: u8) {
        // SAFETY: per the contract; the ranges lie inside the stack and skip the `stack` field,
        // whose address `stack_ref` gives (no reference to the header is held while writing).
        unsafe {
            let field: *const Stack = h.as_ref().stack_ref();
            let (bottom, top) = ((*field).bottom(), (*field).top());
            let field = field as *mut u8;
            let field_end = field.add(size_of::<Stack>());
            ptr::write_bytes(bottom, byte, field as usize - bottom as usize);
            ptr::write_bytes(field_end, byte, top as usize - field_end as usize);
        }
    }

    /// Test support, for checking that nothing stale is ever relied on: overwrites the whole
    /// of every stack in this thread's pool with `byte` — frames, closure slot and every field
    /// of the dead control block — except the record of the stack mapping itself, which the
    /// pool needs.
    fn poison_pooled_stacks(byte: u8) {
        with_pool(|p| {
            let lists = std::iter::once(&p.default).chain(p.by_size.iter().map(|(_, l)| l));
            for &h in lists.flatten() {
                // SAFETY: `h` is a pooled control block: dead except for its `stack` field, which
                // `poison_dead` keeps.
                unsafe { poison_dead(h, byte) };
            }
        });
    }

    #[test]
    fn lifecycle_reuses_pooled_stacks_after_poisoning() {
        super::set_capacity(super::DEFAULT_CAPACITY);
        super::trim();
        // Run a coroutine that leaves data on its stack, then free it into the pool.
        let first = Coroutine::new(|| {
            let mut scratch = [0x11u8; 4096];
            std::hint::black_box(&mut scratch);
            yield_now();
            scratch.iter().map(|&b| b as u32).sum::<u32>()
        });
        let _ = first.enter();
        assert_eq!(first.enter().finished(), Some(0x11 * 4096));
        let (bottom, top) = first.stack_bounds();
        drop(first);
        assert_eq!(super::len(), 1);

        // Poison the whole pooled stack, the dead control block included (all but the record
        // of the mapping that the pool keeps in it), as QEMU's test does. (Under valgrind,
        // which rightly calls any write to a dead stack invalid, the poisoning is skipped;
        // scripts/valgrind-tests.sh sets the variable.)
        if std::env::var_os("COSTACK_UNDER_VALGRIND").is_none() {
            poison_pooled_stacks(0xa5);
        }

        // The next coroutine gets that stack and must run correctly: create, yield, nest, finish.
        for round in 0..3u64 {
            let co = Coroutine::new(move || {
                let inner = Coroutine::new(move || {
                    yield_now();
                    round * 10
                });
                let _ = inner.enter();
                yield_now();
                inner.enter().finished().unwrap() + 1
            });
            if round == 0 {
                assert_eq!(
                    co.stack_bounds(),
                    (bottom, top),
                    "the pooled stack is reused"
                );
            }
            assert_eq!(co.enter(), Status::Yielded);
            assert_eq!(co.enter(), Status::Finished(round * 10 + 1));
        }
    }
}
