//! System-call helpers shared by the operations: results, `EINTR` retries, offset checks.
//!
//! Ground floor: imports nothing from this crate.

use std::io;

/// Linux moves at most this many bytes in one read or write (`MAX_RW_COUNT`).
pub(crate) const MAX_RW: usize = 0x7fff_f000;

/// At most this many slices go to one `preadv`/`pwritev` (`IOV_MAX`).
pub(crate) const IOV_MAX: usize = 1024;

/// Mode bits of a file that `File::create` makes (before the umask), as `std` uses; the
/// default of `OpenOptions::mode`.
pub(crate) const CREATE_MODE: libc::mode_t = 0o666;

/// A system call's return value as a result (`-1` means `errno`).
fn cvt(r: isize) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// Retries `f` while it fails with `EINTR`.
pub(crate) fn retry(mut f: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        match cvt(f()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// The positional call `at` (retried on `EINTR`); on a descriptor that cannot seek (`ESPIPE`),
/// the plain call `here` instead, as io_uring does with a pipe or a socket.
pub(crate) fn positional(
    at: impl FnMut() -> isize,
    here: impl FnMut() -> isize,
) -> io::Result<usize> {
    match retry(at) {
        Err(e) if e.raw_os_error() == Some(libc::ESPIPE) => retry(here),
        r => r,
    }
}

/// `EINVAL`.
pub(crate) fn einval() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

/// Offsets above `i64::MAX` are `EINVAL` on every path (io_uring would read `u64::MAX` as "the
/// file position").
pub(crate) fn check_offset(offset: u64) -> io::Result<()> {
    if offset > i64::MAX as u64 {
        return Err(einval());
    }
    Ok(())
}

/// A completion's result (`-errno` on failure) as a result.
pub(crate) fn from_cqe(res: i32) -> io::Result<usize> {
    if res < 0 {
        Err(io::Error::from_raw_os_error(-res))
    } else {
        Ok(res as usize)
    }
}
