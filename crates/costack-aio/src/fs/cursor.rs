//! `File` as a cursor: [`Read`], [`Write`] and [`Seek`] for `File` and `&File`, over the
//! positional calls, with the position kept in the `File` (see `File`'s "The cursor").
//!
//! Operations floor, part of `fs`: uses only `File`'s own methods.

use super::File;
use crate::op::sys::einval;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;

impl File {
    /// The cursor's `read`: at the position, which moves by the count.
    fn cursor_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.read_at(buf, self.pos.get())?;
        self.pos.set(self.pos.get() + n as u64);
        Ok(n)
    }

    /// The cursor's `write`: at the position, which moves by the count; in append mode at the
    /// end, and the position is then the file's length.
    fn cursor_write(&self, buf: &[u8]) -> io::Result<usize> {
        let n = self.write_at(buf, self.pos.get())?;
        if self.append {
            // The kernel wrote at the end, whatever the offset said.
            self.pos.set(self.len()?);
        } else {
            self.pos.set(self.pos.get() + n as u64);
        }
        Ok(n)
    }

    /// The cursor's `seek`.
    /// Where `SeekFrom::End(0)` is, as std has it: the length, or for a block device (whose
    /// `fstat` size is 0) its size, which only `lseek(SEEK_END)` tells. That moves the
    /// kernel's file offset, which this type never uses.
    fn end(&self) -> io::Result<u64> {
        let st = self.stat()?;
        if st.st_mode & libc::S_IFMT != libc::S_IFBLK {
            return Ok(st.st_size as u64);
        }
        // SAFETY: lseek on a descriptor this `File` owns takes only integers.
        let end = unsafe { libc::lseek(self.as_raw_fd(), 0, libc::SEEK_END) };
        u64::try_from(end).map_err(|_| io::Error::last_os_error())
    }

    fn cursor_seek(&self, to: SeekFrom) -> io::Result<u64> {
        let (base, delta) = match to {
            SeekFrom::Start(n) => (0, i128::from(n)),
            SeekFrom::Current(d) => (self.pos.get(), i128::from(d)),
            SeekFrom::End(d) => (self.end()?, i128::from(d)),
        };
        let at = i128::from(base) + delta;
        if !(0..=i128::from(i64::MAX)).contains(&at) {
            return Err(einval());
        }
        let at = at as u64;
        self.pos.set(at);
        Ok(at)
    }
}

/// Reads at the cursor's position and moves it (see `File`'s "The cursor").
impl Read for File {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.cursor_read(buf)
    }
}

/// Reads at the cursor's position and moves it, as std's `impl Read for &File`.
impl Read for &File {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.cursor_read(buf)
    }
}

/// Writes at the cursor's position (at the end in append mode) and moves it.
impl Write for File {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.cursor_write(buf)
    }

    /// Nothing to do: writes are not buffered (use [`File::sync_data`] for the device).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes at the cursor's position (at the end in append mode) and moves it, as std's
/// `impl Write for &File`.
impl Write for &File {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.cursor_write(buf)
    }

    /// Nothing to do: writes are not buffered (use [`File::sync_data`] for the device).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Moves the cursor; `SeekFrom::End` is from the file's length.
impl Seek for File {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.cursor_seek(to)
    }

    fn stream_position(&mut self) -> io::Result<u64> {
        Ok(self.pos.get())
    }
}

/// Moves the cursor, as std's `impl Seek for &File`.
impl Seek for &File {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.cursor_seek(to)
    }

    fn stream_position(&mut self) -> io::Result<u64> {
        Ok(self.pos.get())
    }
}
