//! The [`Backend`] trait: what a request coroutine calls to do I/O on an export, and
//! [`ZeroMode`], how a write-zeroes may be carried out.
//!
//! The ground floor of [`export`](super): it imports only [`proto`](crate::proto) (the
//! [`Extent`] of a block-status answer); the stores (`mem`, `file`) implement the trait, and
//! the [`Export`](super::Export) hands their backends out.

use crate::proto::Extent;
use std::io;

/// How a write-zeroes request may be carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ZeroMode {
    /// The client allows a hole (no `NO_HOLE` flag).
    pub may_trim: bool,
    /// `FAST_ZERO`: fail with `ENOTSUP` unless it is faster than writing zeroes.
    pub fast_only: bool,
}

/// The per-thread I/O interface of an export, used by the request coroutines.
///
/// The server makes one per event-loop thread with [`Export::backend`](super::Export::backend).
/// A program that wants to read or fill an export in-process, outside the protocol (a test, a
/// tool preparing a disk), can do the same and call it from a task of a
/// [`costack_aio`] event loop on the thread that made it.
///
/// Every method may yield the calling task (never the thread) while the work is done. Offsets
/// and lengths have been checked against [`len`](Backend::len) before any call.
pub trait Backend {
    /// The export's size in bytes.
    fn len(&self) -> u64;

    /// Whether the export is empty (size 0).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills all of `buf` from `offset` and gives the buffer back (zero-copy for backends that
    /// hand buffers to the kernel).
    fn read_at_owned(&self, buf: Vec<u8>, offset: u64) -> (io::Result<()>, Vec<u8>);

    /// Writes all of `buf` at `offset` and gives the buffer back.
    fn write_at_owned(&self, buf: Vec<u8>, offset: u64) -> (io::Result<()>, Vec<u8>);

    /// Makes every write completed so far durable (`fdatasync`).
    fn flush(&self) -> io::Result<()>;

    /// Discards a range (advisory: it may do nothing).
    fn trim(&self, offset: u64, len: u64) -> io::Result<()>;

    /// Makes a range read as zeroes. With `fast_only`, fails with `ErrorKind::Unsupported`
    /// (`ENOTSUP` on the wire) without changing anything unless it is cheaper than a write.
    fn zero(&self, offset: u64, len: u64, mode: ZeroMode) -> io::Result<()>;

    /// A hint that the range will be read soon.
    fn cache(&self, offset: u64, len: u64) -> io::Result<()>;

    /// The allocation status (`base:allocation`) of the range, as consecutive extents starting
    /// at `offset`: at least one, at most `max_extents`, covering at most `len` bytes.
    fn block_status(&self, offset: u64, len: u32, max_extents: usize) -> io::Result<Vec<Extent>>;
}
