//! File requests, one place per operation: what each request holds, how it is encoded for
//! io_uring, and how it runs as a blocking system call on a worker (or outside any task).
//!
//! Ground floor: imports nothing from this crate outside this folder. Each operation has its
//! own file (`read`, `write`, `sync`, `fallocate`, `truncate`, `open`) with the ring's entry
//! (`sqe`) and the blocking call (`blocking`) side by side, so both paths are seen to do the
//! same thing; `read` and `write` also have the page-cache call that never waits (`nowait`,
//! `RWF_NOWAIT`). [`Op`] is the request in flight, which dispatches to them. Who runs a request
//! — the ring (`uring`), a worker (`pool`) — and how the task waits for it is the `request`
//! module's business; `File`'s public API is in `fs`.

mod fallocate;
mod open;
pub(crate) mod read;
mod sync;
pub(crate) mod sys;
mod truncate;
pub(crate) mod write;

use io_uring::{squeue, types};
use std::ffi::CString;
use std::io;
use std::os::fd::{OwnedFd, RawFd};

/// Which path file I/O takes on a loop: see the [`fs`](crate::fs#two-ways-to-the-kernel)
/// module docs and [`EventLoop::io_backend`](crate::EventLoop::io_backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoBackend {
    /// Requests go to the kernel through an io_uring ring owned by the loop.
    IoUring,
    /// Requests run as blocking system calls on the loop's worker threads.
    ThreadPool,
}

/// The environment variable that turns io_uring off for loops built without an explicit
/// [`LoopBuilder::io_uring`](crate::LoopBuilder::io_uring) choice.
pub const IO_URING_ENV: &str = "COSTACK_AIO_IO_URING";

/// Whether the environment allows io_uring: yes unless `COSTACK_AIO_IO_URING` is `0`, `false`,
/// `off` or `no`.
pub(crate) fn io_uring_from_env() -> bool {
    match std::env::var(IO_URING_ENV) {
        Ok(v) => !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "0" | "false" | "off" | "no"
        ),
        Err(_) => true,
    }
}

/// The opcodes a ring must have for the loop to use it, with their names for the error.
pub(crate) const RING_OPCODES: [(u8, &str); 5] = [
    (read::OPCODE, "IORING_OP_READ"),
    (write::OPCODE, "IORING_OP_WRITE"),
    (sync::OPCODE, "IORING_OP_FSYNC"),
    (fallocate::OPCODE, "IORING_OP_FALLOCATE"),
    (open::OPCODE, "IORING_OP_OPENAT"),
];

/// The opcode of `set_len` on the ring: optional (Linux 6.9); without it the request goes to
/// a worker.
pub(crate) const TRUNCATE_OPCODE: u8 = truncate::OPCODE;

/// One request, with everything the kernel may touch while it is in flight. It is owned by
/// whoever runs it (the loop's ring, or a worker thread) until it completes, then given back.
pub(crate) enum Op {
    /// `pread` into `buf[..len]`.
    Read {
        buf: Vec<u8>,
        len: usize,
        offset: u64,
    },
    /// `pwrite` from `buf[..len]`.
    Write {
        buf: Vec<u8>,
        len: usize,
        offset: u64,
    },
    /// `fsync`, or `fdatasync` with `data_only`.
    Sync { data_only: bool },
    /// `fallocate(fd, mode, offset, len)`.
    Fallocate { mode: i32, offset: u64, len: u64 },
    /// `ftruncate(fd, len)`.
    Truncate { len: u64 },
    /// `openat(AT_FDCWD, path, flags | O_CLOEXEC, mode)`; the new descriptor goes to `opened`
    /// as soon as the request completes, so that it is closed if nobody takes it (a task
    /// cancelled while its open was in flight).
    Open {
        path: CString,
        flags: i32,
        mode: libc::mode_t,
        opened: Option<OwnedFd>,
    },
}

impl Op {
    /// Whether this request needs the optional truncate opcode on the ring.
    pub(crate) fn is_truncate(&self) -> bool {
        matches!(self, Op::Truncate { .. })
    }

    /// The submission queue entry for this request on `fd` (`AT_FDCWD` for an open).
    ///
    /// The entry points into the request (a `Vec`'s or a `CString`'s heap memory): the caller
    /// keeps the request alive, and its buffer unmoved, until the completion is reaped.
    pub(crate) fn sqe(&mut self, fd: RawFd) -> squeue::Entry {
        let fd = types::Fd(fd);
        match self {
            Op::Read { buf, len, offset } => read::sqe(fd, buf.as_mut_ptr(), *len, *offset),
            Op::Write { buf, len, offset } => write::sqe(fd, buf.as_ptr(), *len, *offset),
            Op::Sync { data_only } => sync::sqe(fd, *data_only),
            Op::Fallocate { mode, offset, len } => fallocate::sqe(fd, *mode, *offset, *len),
            Op::Truncate { len } => truncate::sqe(fd, *len),
            Op::Open {
                path, flags, mode, ..
            } => open::sqe(path, *flags, *mode),
        }
    }

    /// A completion for this request arrived with `res`: an open keeps its new descriptor at
    /// once (closed if the task never takes it).
    pub(crate) fn completed(&mut self, res: i32) {
        if let Op::Open { opened, .. } = self {
            if res >= 0 {
                // SAFETY: the kernel just opened this descriptor for our request, and nothing
                // else knows its number; from here it is owned, and closed if the task never
                // takes it.
                unsafe { open::adopt(res, opened) };
            }
        }
    }

    /// Runs this request as a blocking system call on the calling thread, on `fd`
    /// (`AT_FDCWD` for an open).
    pub(crate) fn blocking(&mut self, fd: RawFd) -> io::Result<usize> {
        match self {
            Op::Read { buf, len, offset } => read::blocking(fd, &mut buf[..*len], *offset),
            Op::Write { buf, len, offset } => write::blocking(fd, &buf[..*len], *offset),
            Op::Sync { data_only } => sync::blocking(fd, *data_only),
            Op::Fallocate { mode, offset, len } => fallocate::blocking(fd, *mode, *offset, *len),
            Op::Truncate { len } => truncate::blocking(fd, *len),
            Op::Open {
                path,
                flags,
                mode,
                opened,
            } => open::blocking(path, *flags, *mode, opened),
        }
    }
}
