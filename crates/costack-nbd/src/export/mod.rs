//! What the server serves: an export, and the backends that store its bytes.
//!
//! # Two halves
//!
//! An export is shared by every event-loop thread, but the I/O on it happens in coroutines, each
//! bound to its thread. So it comes in two halves:
//!
//! * an [`Export`] (`Send + Sync`): the store itself — a file, or memory — with its size, name
//!   and whether it is read-only; made once, shared by all threads through an `Arc`;
//! * a [`Backend`] per loop thread, made by [`Export::backend`]: the object the request
//!   coroutines call. Its methods look blocking; inside a task they *yield* while the work is
//!   done elsewhere (a worker thread, the kernel), so one slow request never stalls the others.
//!
//! # The stores
//!
//! [`Export::memory`] keeps the bytes in memory, in 64 KiB chunks allocated on first write
//! (a chunk never written, or trimmed away, is a hole that reads as zeroes, and
//! `BLOCK_STATUS` says so). [`Export::file`] serves a file or a block device through the
//! loop's [`costack_aio::File`], with non-blocking page-cache fast paths in front of it; see
//! [`WritePath`] for where writes go. `FLUSH` and FUA make the writes durable (`fdatasync`)
//! before the reply, and every thread sees one page cache, so a flush on any connection
//! covers them all (`NBD_FLAG_CAN_MULTI_CONN`).
//!
//! # Faults on demand
//!
//! [`Export::with_faults`] puts any export behind a [`Faults`] set: its backends then fail the
//! operations the set's [`FaultRule`]s name (`EIO`, `ENOSPC`, ...), switched at run time, so
//! that a test can see what a client and the server do when the disk fails.
//!
//! # Floors
//!
//! ```text
//! export (this file)  Export: name, flags, its store; hands out backends  → mem, file, fault, backend
//!   mem, file         the two stores and their backends                   → backend
//!   fault             a backend wrapper failing chosen operations         → backend
//!   backend           the Backend trait and ZeroMode                      (proto only)
//! ```
//!
//! May import: [`proto`](crate::proto) (through its files). The server and the handshake
//! import it; it imports neither.
//!

mod backend;
mod fault;
mod file;
mod mem;

pub use backend::{Backend, ZeroMode};
pub use fault::{FaultId, FaultOp, FaultRule, Faults};
pub use file::WritePath;

use file::FileStore;
use mem::MemStore;
use std::io;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

/// An export: a name, a store, and whether clients may write. Shared by every thread.
#[derive(Debug)]
pub struct Export {
    /// The name clients ask for (the empty name always selects it too).
    pub name: String,
    /// A line for humans (`NBD_INFO_DESCRIPTION`, `LIST`).
    pub description: String,
    /// Refuse writes.
    pub read_only: bool,
    store: Store,
}

#[derive(Debug)]
enum Store {
    Memory(Arc<MemStore>),
    File(Arc<FileStore>),
    /// Another store, behind a set of fault rules.
    Faulty(Box<Store>, Faults),
}

impl Store {
    fn size(&self) -> u64 {
        match self {
            Store::Memory(m) => m.size(),
            Store::File(f) => f.size(),
            Store::Faulty(s, _) => s.size(),
        }
    }

    fn backend(&self) -> io::Result<Rc<dyn Backend>> {
        Ok(match self {
            Store::Memory(m) => mem::backend(m),
            Store::File(f) => file::backend(f)?,
            Store::Faulty(s, faults) => fault::backend(s.backend()?, faults),
        })
    }

    fn flush_blocking(&self) -> io::Result<()> {
        match self {
            Store::Memory(_) => Ok(()),
            Store::File(f) => f.sync(),
            Store::Faulty(s, _) => s.flush_blocking(),
        }
    }
}

impl Export {
    /// An in-memory export of `size` bytes, all zero (and all hole) at first.
    ///
    /// # Errors
    /// If `size` is larger than 256 GiB (an in-memory export holds its chunk index in memory
    /// too: 96 MiB at that size).
    pub fn memory(name: &str, size: u64, read_only: bool) -> io::Result<Export> {
        Ok(Export {
            name: name.to_owned(),
            description: format!("costack-nbd in-memory export, {size} bytes"),
            read_only,
            store: Store::Memory(Arc::new(MemStore::new(size)?)),
        })
    }

    /// An export of the file (or block device) at `path`, opened read-write unless `read_only`.
    ///
    /// # Errors
    /// If the file cannot be opened, or its size cannot be found.
    pub fn file(name: &str, path: &Path, read_only: bool, writes: WritePath) -> io::Result<Export> {
        let store = FileStore::open(path, read_only, writes)?;
        // Not the path: a client has no business learning the server's file layout (set one
        // with `with_description`).
        let description = format!("costack-nbd file export, {} bytes", store.size());
        Ok(Export {
            name: name.to_owned(),
            description,
            read_only,
            store: Store::File(Arc::new(store)),
        })
    }

    /// Replaces the description (a line for humans that clients get from `NBD_OPT_LIST`, and
    /// from `NBD_OPT_INFO`/`NBD_OPT_GO` when they ask for `NBD_INFO_DESCRIPTION`; `nbdinfo`
    /// prints it). By default it says what the store is.
    ///
    /// # Errors
    /// `InvalidInput` if `text` is longer than 4096 bytes or contains a NUL: the NBD spec's
    /// limits for a string.
    ///
    /// # Example
    ///
    /// ```
    /// use costack_nbd::Export;
    ///
    /// let e = Export::memory("disk0", 1 << 20, false)?.with_description("scratch disk of VM 7")?;
    /// assert_eq!(e.description, "scratch disk of VM 7");
    /// assert!(Export::memory("d", 4096, false)?.with_description("a\0b").is_err());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_description(mut self, text: &str) -> io::Result<Export> {
        check_description(text).map_err(|m| io::Error::new(io::ErrorKind::InvalidInput, m))?;
        self.description = text.to_owned();
        Ok(self)
    }

    /// The same export, its backends failing what `faults` says from now on (see [`Faults`]
    /// for a server). The rules can change at any time through any clone of `faults`; the
    /// shutdown flush ([`flush_blocking`](Export::flush_blocking)) is never failed.
    ///
    /// In-process, through a backend, as the server's request coroutines see it:
    ///
    /// ```
    /// use costack_nbd::{Export, FaultOp, FaultRule, Faults};
    ///
    /// let faults = Faults::new();
    /// let export = Export::memory("flaky", 1 << 20, false)
    ///     .unwrap()
    ///     .with_faults(&faults);
    /// faults.add(FaultRule::new(libc::ENOSPC).ops(&[FaultOp::Write]).once());
    /// costack_aio::EventLoop::new().block_on(move || {
    ///     let b = export.backend().unwrap();
    ///     let (r, buf) = b.write_at_owned(vec![7; 512], 0);
    ///     assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::ENOSPC));
    ///     let (r, _) = b.write_at_owned(buf, 0); // the rule is spent: this one is done
    ///     r.unwrap();
    ///     let (r, back) = b.read_at_owned(vec![0; 512], 0);
    ///     r.unwrap();
    ///     assert_eq!(back, vec![7; 512]);
    /// });
    /// assert_eq!(faults.injected(), 1);
    /// ```
    pub fn with_faults(self, faults: &Faults) -> Export {
        Export {
            store: Store::Faulty(Box::new(self.store), faults.clone()),
            ..self
        }
    }

    /// The size in bytes.
    pub fn size(&self) -> u64 {
        self.store.size()
    }

    /// Whether `name` selects this export: its own name, or the empty (default) name.
    pub fn matches(&self, name: &str) -> bool {
        name.is_empty() || name == self.name
    }

    /// A backend for the calling thread's coroutines.
    ///
    /// # Errors
    /// If the file cannot be opened again for this thread (out of file descriptors).
    pub fn backend(&self) -> io::Result<Rc<dyn Backend>> {
        self.store.backend()
    }

    /// Flushes the store from any thread, outside coroutines (at shutdown).
    pub fn flush_blocking(&self) -> io::Result<()> {
        self.store.flush_blocking()
    }
}

/// Checks a description against the NBD spec's limits for a string: at most 4096 bytes, no NUL.
///
/// # Errors
/// A message saying which limit `text` breaks.
///
/// # Example
///
/// ```
/// use costack_nbd::export::check_description;
///
/// assert!(check_description("backup target").is_ok());
/// assert!(check_description(&"x".repeat(4097)).is_err());
/// ```
pub fn check_description(text: &str) -> Result<(), String> {
    if text.len() > MAX_DESCRIPTION {
        return Err(format!(
            "a description is at most {MAX_DESCRIPTION} bytes (this one has {})",
            text.len()
        ));
    }
    if text.contains('\0') {
        return Err("a description must not contain NUL".into());
    }
    Ok(())
}

/// Longest description, in bytes (the NBD spec's limit for any string).
pub const MAX_DESCRIPTION: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    /// A client must not learn where the server keeps its files: a file export's default
    /// description names the kind of store and its size, not the path (it used to be
    /// "costack-nbd export of PATH").
    #[test]
    fn a_file_exports_default_description_does_not_name_its_path() {
        let dir = std::env::temp_dir().join(format!("costack-nbd-desc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret-disk.img");
        std::fs::write(&path, vec![0u8; 8192]).unwrap();
        let e = Export::file("d", &path, true, WritePath::Inline).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(e.description, "costack-nbd file export, 8192 bytes");
    }
}
