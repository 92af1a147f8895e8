//! Coroutine stacks: memory of their own with a guard region below.
//!
//! Every coroutine runs on a stack of its own. A stack here is one private mapping of the
//! operating system's (`mmap` on Unix, `VirtualAlloc` on Windows):
//!
//! ```text
//!   high addresses  +---------------------------+ <- top()    (16-byte aligned)
//!                   |  usable stack, grows down |
//!                   |  (only touched pages are  |
//!                   |   backed by memory)       |
//!                   +---------------------------+ <- bottom()
//!                   |  guard (no access)        |
//!   low addresses   +---------------------------+ <- base
//! ```
//!
//! The guard turns a stack overflow into a fault at a known address instead of silent corruption
//! of whatever lies below; the `overflow` module reports it. How each system maps a stack, and
//! what a stack costs there, is in its file:
//!
//! * `unix`: one `MAP_NORESERVE` mapping with a `PROT_NONE` page at the bottom, so a 1 MiB stack
//!   costs address space, not memory. Creation fails on address space (`ENOMEM`) or on the
//!   kernel's limit on mappings per process, `vm.max_map_count` (a guarded stack is two
//!   mappings, so with the default 65 530 roughly 32 000 stacks can exist at once).
//! * `windows`: reserved and committed with `VirtualAlloc` (Windows has no overcommit: the usable
//!   stack counts against the commit limit, though only touched pages use memory), with a band of
//!   `PAGE_GUARD` pages above a no-access page, which the system's own stack-growth and
//!   stack-overflow machinery understands (see that file).
//!
//! [`StackError`] says which limit stopped a creation.
//!
//! May import: `valgrind` (stack registration). Everything that owns a stack builds on it.

use std::io;
use std::ptr::NonNull;

/// The default usable size of a coroutine stack: 1 MiB (virtual; only touched pages cost memory).
pub const DEFAULT_STACK_SIZE: usize = 1 << 20;

/// The byte new stacks are filled with when the `stack-usage` feature measures their use.
#[cfg(costack_stack_usage)]
pub const PAINT: u8 = 0xc5;

/// The smallest usable stack size accepted; smaller requests are rounded up to it.
pub const MIN_STACK_SIZE: usize = 16 * 1024;

mod error;
#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as os;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as os;

pub use error::{StackError, StackErrorKind};
pub(crate) use os::page_size;

/// An owned coroutine stack with a guard region at its low end.
///
/// Dropping it gives the memory back.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Stack {
    /// Start of the mapping (the guard).
    base: NonNull<u8>,
    /// Length of the whole mapping, guard included.
    len: usize,
    /// Usable bytes: the mapping without its guard.
    usable: usize,
    /// The fiber that runs this stack's coroutines (the `fibers` backend, which creates it:
    /// Windows allocates a fiber's stack itself, so the mapping holds only the control block
    /// and the closure). Deleted with the stack.
    #[cfg(costack_fibers)]
    fiber: *mut std::ffi::c_void,
}

/// A stack creation's failure in the system call `call`, classified by the system's file.
pub(crate) fn system_error(size: usize, call: &'static str, source: io::Error) -> StackError {
    let kind = os::error_kind(call, &source);
    StackError::new(kind, size, source, os::map_count_limit())
}

impl Stack {
    /// Maps a stack with at least `size` usable bytes (rounded up to whole pages and to at least
    /// [`MIN_STACK_SIZE`]) plus the guard below it.
    pub(crate) fn new(size: usize) -> Result<Stack, StackError> {
        let page = page_size();
        let guard = os::GUARD_PAGES * page;
        let usable = size
            .max(MIN_STACK_SIZE)
            .checked_add(page - 1)
            .map(|s| s & !(page - 1));
        let Some(len) = usable.and_then(|u| u.checked_add(guard)) else {
            return Err(StackError::too_large(size));
        };
        let base = os::map(len, guard).map_err(|(call, err)| system_error(size, call, err))?;
        let stack = Stack {
            base,
            len,
            usable: len - guard,
            #[cfg(costack_fibers)]
            fiber: std::ptr::null_mut(),
        };
        crate::valgrind::stack_register(stack.bottom(), stack.top());
        #[cfg(costack_stack_usage)]
        stack.paint(stack.size(), 0);
        Ok(stack)
    }

    /// The fiber that runs this stack's coroutines (the `fibers` backend); null until
    /// [`set_fiber`](Stack::set_fiber).
    #[cfg(costack_fibers)]
    #[inline]
    pub(crate) fn fiber(&self) -> *mut std::ffi::c_void {
        self.fiber
    }

    /// Gives this stack the fiber that will run its coroutines; the stack deletes it.
    #[cfg(costack_fibers)]
    pub(crate) fn set_fiber(&mut self, fiber: *mut std::ffi::c_void) {
        self.fiber = fiber;
    }

    /// The highest address of the stack (exclusive); stacks grow down from here.
    #[inline]
    pub(crate) fn top(&self) -> *mut u8 {
        // SAFETY: base + len is one past the end of our mapping.
        unsafe { self.base.as_ptr().add(self.len) }
    }

    /// The lowest usable address, just above the guard page.
    #[inline]
    pub(crate) fn bottom(&self) -> *mut u8 {
        // SAFETY: the guard lies within the mapping.
        unsafe { self.base.as_ptr().add(self.len - self.usable) }
    }

    /// The start of the guard (the lowest address of the mapping).
    pub(crate) fn guard(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Length of the guard region below [`bottom`](Stack::bottom).
    #[inline]
    pub(crate) fn guard_len(&self) -> usize {
        self.len - self.usable
    }

    /// Gives the memory of the usable stack below the top `keep` bytes back to the system: the
    /// pages read as zeroes again and stop counting as resident.
    pub(crate) fn release_memory(&self, keep: usize) {
        let page = page_size();
        let keep = (keep + page - 1) & !(page - 1);
        if keep >= self.usable {
            return;
        }
        // SAFETY: the range lies inside our mapping; nothing uses this stack now (it is pooled).
        unsafe { os::release(self.bottom(), self.usable - keep) };
        #[cfg(costack_stack_usage)]
        self.paint(self.usable, keep);
    }

    /// Fills the top `len` usable bytes with [`PAINT`] so that [`Stack::used`] can find the
    /// high-water mark later. A new stack is painted whole (which makes all of it resident:
    /// the price of measuring); a reused one only where its last coroutine wrote.
    /// The top `keep` bytes are left alone (a pooled stack's control block lives there).
    #[cfg(costack_stack_usage)]
    pub(crate) fn paint(&self, len: usize, keep: usize) {
        let len = len.min(self.usable);
        if len <= keep {
            return;
        }
        // SAFETY: the range lies inside the usable stack, below the kept top, and nothing uses
        // it now.
        unsafe { std::ptr::write_bytes(self.top().sub(len), PAINT, len - keep) };
    }

    /// How many bytes from the top have been written since the stack was painted: the
    /// high-water mark of its use.
    #[cfg(costack_stack_usage)]
    pub(crate) fn used(&self) -> usize {
        let words = self.usable / 8;
        let p = self.bottom() as *const u64;
        let pattern = u64::from_ne_bytes([PAINT; 8]);
        // SAFETY: reading the usable stack, word by word, inside our mapping. Bytes in it are
        // initialised (painted, or written by the coroutine).
        let untouched = (0..words)
            .position(|i| unsafe { p.add(i).read_volatile() } != pattern)
            .unwrap_or(words);
        self.usable - untouched * 8
    }

    /// Usable size in bytes (without the guard page).
    #[inline]
    pub(crate) fn size(&self) -> usize {
        self.usable
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        #[cfg(costack_fibers)]
        if !self.fiber.is_null() {
            // SAFETY: the fiber is ours, and not running: a stack is dropped only when its
            // coroutine has finished or never started, and then its fiber waits in its start
            // routine for the next one.
            unsafe { windows_sys::Win32::System::Threading::DeleteFiber(self.fiber) };
        }
        crate::valgrind::stack_deregister(self.bottom());
        // SAFETY: we own the mapping; nothing runs on it any more (the owner only drops a stack
        // whose coroutine has finished or was never started).
        unsafe { os::unmap(self.base, self.len) };
    }
}
