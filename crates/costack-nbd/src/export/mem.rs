//! The memory store: an export kept in memory, and its [`Backend`].
//!
//! `MemStore` keeps the export in 64 KiB chunks allocated on first write, each behind its own
//! reader-writer lock (the threads of the server may touch the same chunk). A chunk never
//! written, or trimmed away, is a hole that reads as zeroes, and `BLOCK_STATUS` says so. Nothing
//! in it blocks for long, so its backend does the copy on the loop thread.
//!
//! May import: the sibling `backend` and [`proto`](crate::proto). Only
//! [`Export`](super::Export) builds a store.

use super::backend::{Backend, ZeroMode};
use crate::proto::{Extent, STATE_HOLE, STATE_ZERO};
use std::io;
use std::rc::Rc;
use std::sync::{Arc, PoisonError, RwLock};

/// Chunk size of the memory store: the unit of allocation and of locking.
const CHUNK: usize = 64 * 1024;
const CHUNK_U64: u64 = CHUNK as u64;

type Chunk = RwLock<Option<Box<[u8]>>>;

/// An export kept in memory, in lazily allocated 64 KiB chunks.
pub(super) struct MemStore {
    size: u64,
    chunks: Box<[Chunk]>,
}

impl std::fmt::Debug for MemStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemStore")
            .field("size", &self.size)
            .finish()
    }
}

/// Splits `[offset, offset + len)` into per-chunk pieces: (chunk index, offset in chunk,
/// length, offset of the piece from `offset`).
fn pieces(offset: u64, len: u64) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    let end = offset + len;
    let mut at = offset;
    std::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let idx = (at / CHUNK_U64) as usize;
        let within = (at % CHUNK_U64) as usize;
        let n = (CHUNK - within).min((end - at) as usize);
        let piece = (idx, within, n, (at - offset) as usize);
        at += n as u64;
        Some(piece)
    })
}

impl MemStore {
    /// The largest memory export: 256 GiB (the chunk index alone takes 96 MiB then).
    pub(super) const MAX_SIZE: u64 = 256 << 30;

    /// A store of `size` zero bytes.
    ///
    /// # Errors
    /// `InvalidInput` if `size` exceeds [`MemStore::MAX_SIZE`].
    pub(super) fn new(size: u64) -> io::Result<MemStore> {
        if size > Self::MAX_SIZE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "an in-memory export can be at most {} GiB",
                    Self::MAX_SIZE >> 30
                ),
            ));
        }
        let n = size.div_ceil(CHUNK_U64) as usize;
        let chunks = (0..n).map(|_| RwLock::new(None)).collect();
        Ok(MemStore { size, chunks })
    }

    /// The size in bytes.
    pub(super) fn size(&self) -> u64 {
        self.size
    }

    fn new_chunk() -> Box<[u8]> {
        vec![0u8; CHUNK].into_boxed_slice()
    }

    /// Copies `buf.len()` bytes at `offset` into `buf`.
    fn read(&self, buf: &mut [u8], offset: u64) {
        for (i, within, n, at) in pieces(offset, buf.len() as u64) {
            let c = self.chunks[i]
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            let dst = &mut buf[at..at + n];
            match &*c {
                Some(data) => dst.copy_from_slice(&data[within..within + n]),
                None => dst.fill(0),
            }
        }
    }

    /// Copies `data` to `offset`.
    fn write(&self, data: &[u8], offset: u64) {
        for (i, within, n, at) in pieces(offset, data.len() as u64) {
            let src = &data[at..at + n];
            let mut c = self.chunks[i]
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if c.is_none() {
                if src.iter().all(|&b| b == 0) {
                    continue; // zeroes over a hole: nothing to store
                }
                *c = Some(Self::new_chunk());
            }
            if let Some(d) = c.as_mut() {
                d[within..within + n].copy_from_slice(src);
            }
        }
    }

    /// Zeroes a range: whole chunks become holes when `may_trim`, else they stay allocated.
    fn zero(&self, offset: u64, len: u64, may_trim: bool) {
        for (i, within, n, _) in pieces(offset, len) {
            let mut c = self.chunks[i]
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if n == CHUNK && may_trim {
                *c = None;
                continue;
            }
            match c.as_mut() {
                Some(d) => d[within..within + n].fill(0),
                None if !may_trim => *c = Some(Self::new_chunk()),
                None => {}
            }
        }
    }

    /// Frees the whole chunks of a range (partial chunks are left as they are).
    fn trim(&self, offset: u64, len: u64) {
        for (i, _, n, _) in pieces(offset, len) {
            if n == CHUNK {
                *self.chunks[i]
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = None;
            }
        }
    }

    /// Allocation status from `offset`, at most `max` extents covering at most `len` bytes.
    fn block_status(&self, offset: u64, len: u32, max: usize) -> Vec<Extent> {
        let mut out: Vec<Extent> = Vec::new();
        for (i, _, n, _) in pieces(offset, u64::from(len)) {
            let hole = self.chunks[i]
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .is_none();
            let flags = if hole { STATE_HOLE | STATE_ZERO } else { 0 };
            if let Some(e) = out.last_mut().filter(|e| e.flags == flags) {
                e.length += n as u32;
            } else if out.len() == max {
                break;
            } else {
                out.push(Extent {
                    length: n as u32,
                    flags,
                });
            }
        }
        out
    }
}

/// A backend for the calling thread's coroutines: the copy is done on the loop thread
/// (nothing in the memory store blocks for long).
pub(super) fn backend(store: &Arc<MemStore>) -> Rc<dyn Backend> {
    Rc::new(MemBackend(store.clone()))
}

struct MemBackend(Arc<MemStore>);

impl Backend for MemBackend {
    fn len(&self) -> u64 {
        self.0.size
    }

    fn read_at_owned(&self, mut buf: Vec<u8>, offset: u64) -> (io::Result<()>, Vec<u8>) {
        self.0.read(&mut buf, offset);
        (Ok(()), buf)
    }

    fn write_at_owned(&self, buf: Vec<u8>, offset: u64) -> (io::Result<()>, Vec<u8>) {
        self.0.write(&buf, offset);
        (Ok(()), buf)
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        self.0.trim(offset, len);
        Ok(())
    }

    fn zero(&self, offset: u64, len: u64, mode: ZeroMode) -> io::Result<()> {
        // Always fast: no payload crosses the network, holes cost nothing.
        self.0.zero(offset, len, mode.may_trim);
        Ok(())
    }

    fn cache(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }

    fn block_status(&self, offset: u64, len: u32, max_extents: usize) -> io::Result<Vec<Extent>> {
        Ok(self.0.block_status(offset, len, max_extents))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_store_reads_what_was_written() {
        let m = MemStore::new(300_000).unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8 + 1).collect();
        m.write(&data, 50_000);
        let mut back = vec![0u8; 200_000];
        m.read(&mut back, 50_000);
        assert_eq!(back, data);
        let mut edge = vec![9u8; 10];
        m.read(&mut edge, 299_990);
        assert_eq!(edge, [0; 10]);
    }

    #[test]
    fn memory_store_zero_and_trim() {
        let m = MemStore::new(4 * CHUNK_U64).unwrap();
        m.write(&vec![7u8; 4 * CHUNK], 0);
        m.zero(100, 3 * CHUNK_U64, true);
        let mut b = vec![0u8; 4 * CHUNK];
        m.read(&mut b, 0);
        assert!(b[..100].iter().all(|&x| x == 7));
        assert!(b[100..100 + 3 * CHUNK].iter().all(|&x| x == 0));
        assert!(b[100 + 3 * CHUNK..].iter().all(|&x| x == 7));
        // Chunks 1 and 2 were zeroed whole: holes now.
        let st = m.block_status(0, 4 * CHUNK as u32, 100);
        assert_eq!(
            st,
            [
                Extent {
                    length: CHUNK as u32,
                    flags: 0
                },
                Extent {
                    length: 2 * CHUNK as u32,
                    flags: STATE_HOLE | STATE_ZERO
                },
                Extent {
                    length: CHUNK as u32,
                    flags: 0
                },
            ]
        );
        assert_eq!(m.block_status(0, 4 * CHUNK as u32, 1).len(), 1);
        m.trim(0, 4 * CHUNK_U64);
        assert_eq!(m.block_status(0, 4 * CHUNK as u32, 100).len(), 1);
        // NO_HOLE zeroing allocates.
        m.zero(0, CHUNK_U64, false);
        assert_eq!(m.block_status(0, CHUNK as u32, 100)[0].flags, 0);
    }

    #[test]
    fn memory_store_size_limit() {
        assert!(MemStore::new(MemStore::MAX_SIZE + 1).is_err());
    }
}
