//! [`OpenOptions`]: how to open a [`File`], with std's choices (read, write, append,
//! truncate, create, create_new, mode, custom flags).
//!
//! Operations floor, part of `fs`: imports only the system-call helpers (`op::sys`). The
//! options become `open(2)` flags here; [`OpenOptions::open`] itself is in `fs`, beside
//! `File`'s own open (the ring's `openat`, or the worker pool), which `File::open` uses too.

use crate::op::sys::{einval, CREATE_MODE};
use std::io;

/// Options for opening a [`File`](crate::File), as [`std::fs::OpenOptions`] (with the Unix `mode` and
/// `custom_flags` of `std::os::unix::fs::OpenOptionsExt`). The file is opened through the
/// loop in a task, like [`File::open`](crate::File::open).
///
/// The same combinations as std's are refused with `EINVAL` ([`io::ErrorKind::InvalidInput`])
/// before anything is opened: none of `read`, `write` and `append`; `truncate`, `create` or
/// `create_new` without `write` or `append`; `truncate` with `append` (unless `create_new`).
/// `create_new` wins over `create` and `truncate`, and fails with `EEXIST`
/// ([`io::ErrorKind::AlreadyExists`]) if anything is at the path, even a dangling symlink.
///
/// ```
/// use costack_aio::fs::OpenOptions;
/// use costack_aio::EventLoop;
/// use std::io::{ErrorKind, Write};
///
/// let path = std::env::temp_dir().join(format!("costack-options-doc-{}", std::process::id()));
/// let lp = EventLoop::new();
/// lp.block_on({
///     let path = path.clone();
///     move || {
///         let mut log = OpenOptions::new().create(true).append(true).open(&path).unwrap();
///         log.write_all(b"one\n").unwrap();
///         let again = OpenOptions::new().write(true).create_new(true).open(&path);
///         assert_eq!(again.unwrap_err().kind(), ErrorKind::AlreadyExists);
///     }
/// });
/// assert_eq!(std::fs::read(&path).unwrap(), b"one\n");
/// std::fs::remove_file(path).unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct OpenOptions {
    read: bool,
    write: bool,
    append: bool,
    truncate: bool,
    create: bool,
    create_new: bool,
    mode: u32,
    custom_flags: i32,
}

impl Default for OpenOptions {
    fn default() -> OpenOptions {
        OpenOptions::new()
    }
}

impl OpenOptions {
    /// Nothing set: no access (opening fails until `read`, `write` or `append` is set), mode
    /// `0o666` for a file that is created.
    pub fn new() -> OpenOptions {
        OpenOptions {
            read: false,
            write: false,
            append: false,
            truncate: false,
            create: false,
            create_new: false,
            mode: CREATE_MODE,
            custom_flags: 0,
        }
    }

    /// Open for reading.
    pub fn read(&mut self, read: bool) -> &mut OpenOptions {
        self.read = read;
        self
    }

    /// Open for writing.
    pub fn write(&mut self, write: bool) -> &mut OpenOptions {
        self.write = write;
        self
    }

    /// Open for appending (`O_APPEND`, implies writing): every write goes to the end of the
    /// file, the positional ones too (Linux's `pwrite` on such a file ignores the offset).
    pub fn append(&mut self, append: bool) -> &mut OpenOptions {
        self.append = append;
        self
    }

    /// Truncate an existing file to length 0 (`O_TRUNC`; needs `write`).
    pub fn truncate(&mut self, truncate: bool) -> &mut OpenOptions {
        self.truncate = truncate;
        self
    }

    /// Create the file if it does not exist (`O_CREAT`; needs `write` or `append`).
    pub fn create(&mut self, create: bool) -> &mut OpenOptions {
        self.create = create;
        self
    }

    /// Create the file, failing with [`io::ErrorKind::AlreadyExists`] if something is at the
    /// path already (`O_CREAT | O_EXCL`; needs `write` or `append`).
    pub fn create_new(&mut self, create_new: bool) -> &mut OpenOptions {
        self.create_new = create_new;
        self
    }

    /// The permission bits of a file that is created (less the process's umask); `0o666` by
    /// default.
    pub fn mode(&mut self, mode: u32) -> &mut OpenOptions {
        self.mode = mode;
        self
    }

    /// Extra `open(2)` flags (`O_DIRECT`, `O_NOFOLLOW`, `O_SYNC`…), or-ed in; the access mode
    /// bits (`O_ACCMODE`) are ignored, as std does. `O_CLOEXEC` is always set.
    pub fn custom_flags(&mut self, flags: i32) -> &mut OpenOptions {
        self.custom_flags = flags;
        self
    }

    /// The permission bits for a file that is created.
    pub(crate) fn mode_bits(&self) -> u32 {
        self.mode
    }

    /// The `open(2)` flags these options stand for, or `EINVAL`.
    pub(crate) fn flags(&self) -> io::Result<i32> {
        let access = match (self.read, self.write || self.append) {
            (true, false) => libc::O_RDONLY,
            (false, true) => libc::O_WRONLY,
            (true, true) => libc::O_RDWR,
            (false, false) => return Err(einval()),
        };
        let writes = self.write || self.append;
        if !writes && (self.truncate || self.create || self.create_new) {
            return Err(einval());
        }
        if self.append && self.truncate && !self.create_new {
            return Err(einval());
        }
        let creation = if self.create_new {
            libc::O_CREAT | libc::O_EXCL
        } else {
            let create = if self.create { libc::O_CREAT } else { 0 };
            let truncate = if self.truncate { libc::O_TRUNC } else { 0 };
            create | truncate
        };
        let append = if self.append { libc::O_APPEND } else { 0 };
        Ok(access | creation | append | (self.custom_flags & !libc::O_ACCMODE))
    }
}
