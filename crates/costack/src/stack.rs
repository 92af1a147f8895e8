//! Coroutine stacks: mmap'd memory with a guard page.
//!
//! Every coroutine runs on a stack of its own. A stack here is one anonymous private mapping:
//!
//! ```text
//!   high addresses  +---------------------------+ <- top()    (16-byte aligned)
//!                   |  usable stack, grows down |
//!                   |  (only touched pages are  |
//!                   |   backed by memory)       |
//!                   +---------------------------+ <- bottom()
//!                   |  guard page (PROT_NONE)   |
//!   low addresses   +---------------------------+ <- base
//! ```
//!
//! The mapping is `MAP_NORESERVE`, so a 1 MiB stack costs address space, not memory: only the
//! pages a coroutine actually touches become resident. The guard page turns a stack overflow
//! into a fault at a known address instead of silent corruption of whatever lies below.
//!
//! Two things can make creating a stack fail, and both are reported by name:
//! the address space / memory (`mmap` returns `ENOMEM`), and the kernel's limit on the number of
//! mappings per process, `vm.max_map_count` (a guarded stack is two mappings, so with the
//! default 65 530 roughly 32 000 stacks can exist at once). [`StackError`] says which.
//!
//! May import: `valgrind` (stack registration). Everything that owns a stack builds on it.

use std::fmt;
use std::io;
use std::ptr::NonNull;

/// The default usable size of a coroutine stack: 1 MiB (virtual; only touched pages cost memory).
pub const DEFAULT_STACK_SIZE: usize = 1 << 20;

/// The byte new stacks are filled with when the `stack-usage` feature measures their use.
#[cfg(feature = "stack-usage")]
pub const PAINT: u8 = 0xc5;

/// The smallest usable stack size accepted; smaller requests are rounded up to it.
pub const MIN_STACK_SIZE: usize = 16 * 1024;

/// The system page size, read once.
pub(crate) fn page_size() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    let p = PAGE.load(Ordering::Relaxed);
    if p != 0 {
        return p;
    }
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let p = if p > 0 { p as usize } else { 4096 };
    PAGE.store(p, Ordering::Relaxed);
    p
}

/// Why a coroutine stack could not be created.
#[derive(Debug)]
pub struct StackError {
    kind: StackErrorKind,
    size: usize,
    source: io::Error,
}

/// Which limit stopped the creation of a stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StackErrorKind {
    /// The process has as many memory mappings as `vm.max_map_count` allows.
    MapCount,
    /// `mmap` could not find memory or address space (`ENOMEM`, `RLIMIT_AS`).
    OutOfMemory,
    /// Another error from `mmap` or `mprotect`.
    Other,
    /// The requested size overflows the address space.
    TooLarge,
}

impl StackError {
    /// Which limit was hit.
    pub fn kind(&self) -> StackErrorKind {
        self.kind
    }

    /// The usable size of the stack that was requested.
    pub fn requested_size(&self) -> usize {
        self.size
    }

    fn from_errno(size: usize, call: &'static str, err: io::Error) -> StackError {
        let kind = if err.raw_os_error() == Some(libc::ENOMEM) {
            match map_count_status() {
                Some((used, max)) if used + 16 >= max => StackErrorKind::MapCount,
                // mprotect splitting a mapping fails with ENOMEM only at the map-count limit.
                _ if call == "mprotect" => StackErrorKind::MapCount,
                _ => StackErrorKind::OutOfMemory,
            }
        } else {
            StackErrorKind::Other
        };
        StackError {
            kind,
            size,
            source: err,
        }
    }
}

/// (mappings in use by this process, vm.max_map_count), when /proc can tell.
fn map_count_status() -> Option<(usize, usize)> {
    let max = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let maps = std::fs::read("/proc/self/maps").ok()?;
    let used = maps.iter().filter(|&&b| b == b'\n').count();
    Some((used, max))
}

impl fmt::Display for StackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kib = self.size / 1024;
        match self.kind {
            StackErrorKind::MapCount => {
                let max = map_count_status().map(|(_, m)| m).unwrap_or(0);
                write!(
                    f,
                    "cannot create a {kib} KiB coroutine stack: the process reached the kernel's \
                     limit on memory mappings, vm.max_map_count = {max} (each coroutine stack \
                     uses 2); raise it with `sysctl -w vm.max_map_count=<N>` ({})",
                    self.source
                )
            }
            StackErrorKind::OutOfMemory => write!(
                f,
                "cannot create a {kib} KiB coroutine stack: out of memory or address space \
                 (mmap: {}); use smaller stacks or fewer live coroutines",
                self.source
            ),
            StackErrorKind::TooLarge => {
                write!(
                    f,
                    "cannot create a coroutine stack of {} bytes: too large",
                    self.size
                )
            }
            StackErrorKind::Other => write!(
                f,
                "cannot create a {kib} KiB coroutine stack: {}",
                self.source
            ),
        }
    }
}

impl std::error::Error for StackError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// An owned, mmap'd coroutine stack with a guard page at its low end.
///
/// Dropping it unmaps the memory.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Stack {
    /// Start of the mapping (the guard page).
    base: NonNull<u8>,
    /// Length of the whole mapping, guard included.
    len: usize,
    /// Usable bytes: the mapping without its guard page.
    usable: usize,
}

impl Stack {
    /// Maps a stack with at least `size` usable bytes (rounded up to whole pages and to at least
    /// [`MIN_STACK_SIZE`]) plus one guard page below it.
    pub(crate) fn new(size: usize) -> Result<Stack, StackError> {
        let page = page_size();
        let usable = size
            .max(MIN_STACK_SIZE)
            .checked_add(page - 1)
            .map(|s| s & !(page - 1));
        let Some(len) = usable.and_then(|u| u.checked_add(page)) else {
            return Err(StackError {
                kind: StackErrorKind::TooLarge,
                size,
                source: io::Error::from_raw_os_error(libc::EINVAL),
            });
        };
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches no
        // existing memory. The result is checked against MAP_FAILED below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(StackError::from_errno(
                size,
                "mmap",
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: `ptr` is the start of the mapping we just created and is at least one page long.
        if unsafe { libc::mprotect(ptr, page, libc::PROT_NONE) } != 0 {
            let err = io::Error::last_os_error();
            // SAFETY: unmapping the mapping we created above and nobody else knows about.
            unsafe { libc::munmap(ptr, len) };
            return Err(StackError::from_errno(size, "mprotect", err));
        }
        let stack = Stack {
            // SAFETY: mmap succeeded, so ptr is not null.
            base: unsafe { NonNull::new_unchecked(ptr.cast()) },
            len,
            usable: len - page,
        };
        crate::valgrind::stack_register(stack.bottom(), stack.top());
        #[cfg(feature = "stack-usage")]
        stack.paint(stack.size(), 0);
        Ok(stack)
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
        // SAFETY: the guard page lies within the mapping.
        unsafe { self.base.as_ptr().add(self.len - self.usable) }
    }

    /// The start of the guard page (the lowest address of the mapping).
    pub(crate) fn guard(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Length of the guard page region below [`bottom`](Stack::bottom).
    #[inline]
    pub(crate) fn guard_len(&self) -> usize {
        self.len - self.usable
    }

    /// Gives the memory of the usable stack below the top `keep` bytes back to the kernel
    /// (`MADV_DONTNEED`): the pages read as zeroes again and stop counting as resident.
    pub(crate) fn release_memory(&self, keep: usize) {
        let page = page_size();
        let keep = (keep + page - 1) & !(page - 1);
        if keep >= self.usable {
            return;
        }
        // SAFETY: the range lies inside our mapping; nothing uses this stack now (it is pooled),
        // and MADV_DONTNEED on private anonymous memory only resets its contents.
        unsafe {
            libc::madvise(
                self.bottom().cast(),
                self.usable - keep,
                libc::MADV_DONTNEED,
            );
        }
        #[cfg(feature = "stack-usage")]
        self.paint(self.usable, keep);
    }

    /// Fills the top `len` usable bytes with [`PAINT`] so that [`Stack::used`] can find the
    /// high-water mark later. A new stack is painted whole (which makes all of it resident:
    /// the price of measuring); a reused one only where its last coroutine wrote.
    /// The top `keep` bytes are left alone (a pooled stack's control block lives there).
    #[cfg(feature = "stack-usage")]
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
    #[cfg(feature = "stack-usage")]
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
        crate::valgrind::stack_deregister(self.bottom());
        // SAFETY: we own the mapping; nothing runs on it any more (the owner only drops a stack
        // whose coroutine has finished or was never started).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}
