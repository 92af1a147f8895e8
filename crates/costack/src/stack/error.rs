//! What a failed stack creation reports: [`StackError`], and which limit stopped it
//! ([`StackErrorKind`]). The system files classify their own errors into these.
//!
//! May import: nothing of the crate.

use std::fmt;
use std::io;

/// Why a coroutine stack could not be created.
#[derive(Debug)]
pub struct StackError {
    kind: StackErrorKind,
    size: usize,
    source: io::Error,
    /// `vm.max_map_count` when the error was made (0 where there is no such limit).
    map_count_limit: usize,
}

/// Which limit stopped the creation of a stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StackErrorKind {
    /// The process has as many memory mappings as `vm.max_map_count` allows (Linux).
    MapCount,
    /// The system could not find memory or address space (`mmap`'s `ENOMEM` or `RLIMIT_AS`;
    /// Windows' commit limit).
    OutOfMemory,
    /// Another error from the system's memory calls.
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

    /// An error of the system while creating a stack of `size` usable bytes, classified as
    /// `kind`; `map_count_limit` is `vm.max_map_count` for the message (0: none).
    pub(crate) fn new(
        kind: StackErrorKind,
        size: usize,
        source: io::Error,
        map_count_limit: usize,
    ) -> StackError {
        StackError {
            kind,
            size,
            source,
            map_count_limit,
        }
    }

    /// A requested size that overflows the address space.
    pub(crate) fn too_large(size: usize) -> StackError {
        StackError::new(
            StackErrorKind::TooLarge,
            size,
            io::Error::new(io::ErrorKind::InvalidInput, "stack size too large"),
            0,
        )
    }
}

impl fmt::Display for StackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kib = self.size / 1024;
        match self.kind {
            StackErrorKind::MapCount => {
                let max = self.map_count_limit;
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
                 ({}); use smaller stacks or fewer live coroutines",
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
