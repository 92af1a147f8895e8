//! `File` errors carry the kernel's errno, on both backends: EBADF, EISDIR, ENOENT, short
//! reads at the end of a file, and ENOSPC from a full file system (a 256 KiB tmpfs mounted for
//! the test; skipped, and said so, where mounting is not allowed, and a failure then with
//! `COSTACK_REQUIRE_ALL_TESTS=1`).

use costack_aio::{EventLoop, File};
use std::ffi::CString;
use std::io::{self, IoSlice};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

#[path = "../../costack/tests/common/require.rs"]
mod require;

fn temp_name(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "costack-err-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error()
        .unwrap_or_else(|| panic!("not an OS error: {e:?}"))
}

#[test]
fn ebadf_for_the_wrong_direction() {
    let p = temp_name("badf");
    std::fs::write(&p, b"data").unwrap();
    let path = p.clone();
    EventLoop::new().block_on(move || {
        let ro = File::open(&path).unwrap();
        assert_eq!(errno(&ro.write_at(b"x", 0).unwrap_err()), libc::EBADF);
        assert_eq!(
            errno(&ro.write_at_owned(vec![1], 0).0.unwrap_err()),
            libc::EBADF
        );
        assert_eq!(
            errno(&ro.write_vectored_at(&[IoSlice::new(b"x")], 0).unwrap_err()),
            libc::EBADF
        );
        assert_eq!(errno(&ro.write_all_at(b"x", 0).unwrap_err()), libc::EBADF);
        assert_eq!(errno(&ro.set_len(0).unwrap_err()), libc::EINVAL);
        let wo = File::from_std(std::fs::OpenOptions::new().write(true).open(&path).unwrap());
        let mut buf = [0u8; 4];
        assert_eq!(errno(&wo.read_at(&mut buf, 0).unwrap_err()), libc::EBADF);
        assert_eq!(
            errno(&wo.read_exact_at(&mut buf, 0).unwrap_err()),
            libc::EBADF
        );
        assert_eq!(
            errno(&wo.read_at_owned(vec![0; 4], 0).0.unwrap_err()),
            libc::EBADF
        );
    });
    std::fs::remove_file(p).unwrap();
}

#[test]
fn eisdir_and_enoent() {
    EventLoop::new().block_on(|| {
        let d = File::open(std::env::temp_dir()).unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(errno(&d.read_at(&mut buf, 0).unwrap_err()), libc::EISDIR);
        let e = File::open("/nonexistent/costack/file").unwrap_err();
        assert_eq!(errno(&e), libc::ENOENT);
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let e = File::create("/proc/costack-cannot-create").unwrap_err();
        assert!(e.raw_os_error().is_some(), "{e:?}");
    });
}

#[test]
fn a_read_past_the_end_is_short_not_an_error() {
    let p = temp_name("short");
    std::fs::write(&p, vec![7u8; 10_000]).unwrap();
    let path = p.clone();
    EventLoop::new().block_on(move || {
        let f = File::open(&path).unwrap();
        let mut buf = vec![0u8; 8192];
        assert_eq!(f.read_at(&mut buf, 4096).unwrap(), 5904);
        assert!(buf[..5904].iter().all(|&b| b == 7));
        assert_eq!(f.read_at(&mut buf, 10_000).unwrap(), 0);
        let (r, _) = f.read_at_owned(vec![0; 100], 9_990);
        assert_eq!(r.unwrap(), 10);
        let e = f.read_exact_at(&mut buf, 4096).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    });
    std::fs::remove_file(p).unwrap();
}

/// A tmpfs of `size` mounted on a fresh directory; unmounted and removed on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, io::Error> {
        let dir = temp_name("tmpfs");
        std::fs::create_dir(&dir)?;
        let target = CString::new(dir.as_os_str().as_bytes()).unwrap();
        let opts = CString::new(format!("size={size},mode=0700")).unwrap();
        // SAFETY: every pointer is a valid NUL-terminated string for the whole call.
        let r = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                opts.as_ptr().cast(),
            )
        };
        if r != 0 {
            let e = io::Error::last_os_error();
            let _ = std::fs::remove_dir(&dir);
            return Err(e);
        }
        Ok(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target = CString::new(self.0.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid path string; MNT_DETACH unmounts even with files still open.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn enospc_from_a_full_file_system_is_surfaced() {
    let fs = match Tmpfs::mount("256k") {
        Ok(fs) => fs,
        Err(e) => {
            require::skip_or_fail(&format!("cannot mount a tmpfs ({e}); needs root"));
            return;
        }
    };
    let dir = fs.0.clone();
    EventLoop::new().block_on(move || {
        let f = File::create(dir.join("big")).unwrap();
        let chunk = vec![0x5au8; 64 * 1024];
        let mut off = 0u64;
        let err = loop {
            match f.write_all_at(&chunk, off) {
                Ok(()) => off += chunk.len() as u64,
                Err(e) => break e,
            }
            assert!(off < 4 << 20, "a 256 KiB file system took {off} bytes");
        };
        assert_eq!(errno(&err), libc::ENOSPC, "{err:?}");
        assert!(
            off >= 128 * 1024,
            "the space was there until it was full: {off}"
        );
        // Every other path says the same.
        let (r, _) = f.write_at_owned(chunk.clone(), 1 << 20);
        assert_eq!(errno(&r.unwrap_err()), libc::ENOSPC);
        assert_eq!(
            errno(&f.write_at(&chunk, 1 << 20).unwrap_err()),
            libc::ENOSPC
        );
        // zero_range: tmpfs has no FALLOC_FL_ZERO_RANGE, so zeroes are written, and those
        // hit the same wall.
        let e = f.zero_range(2 << 20, 1 << 20).unwrap_err();
        assert_eq!(errno(&e), libc::ENOSPC, "{e:?}");
        // What was written before stays readable.
        let mut back = vec![0u8; 4096];
        f.read_exact_at(&mut back, 0).unwrap();
        assert!(back.iter().all(|&b| b == 0x5a));
        // Punching a hole gives space back; then a write fits again.
        f.punch_hole(0, off).unwrap();
        f.write_all_at(&chunk, 0).unwrap();
        f.sync_all().unwrap();
    });
    drop(fs);
}

#[test]
fn zero_range_falls_back_to_writing_zeroes_where_unsupported() {
    let fs = match Tmpfs::mount("4m") {
        Ok(fs) => fs,
        Err(e) => {
            require::skip_or_fail(&format!("cannot mount a tmpfs ({e}); needs root"));
            return;
        }
    };
    let dir = fs.0.clone();
    EventLoop::new().block_on(move || {
        let f = File::create(dir.join("z")).unwrap();
        f.write_all_at(&[0xffu8; 100_000], 0).unwrap();
        f.zero_range(1000, 50_000).unwrap();
        f.zero_range(90_000, 30_000).unwrap(); // past the end: extends
        assert_eq!(f.len().unwrap(), 120_000);
        let mut all = vec![0u8; 120_000];
        f.read_exact_at(&mut all, 0).unwrap();
        assert!(all[..1000].iter().all(|&b| b == 0xff));
        assert!(all[1000..51_000].iter().all(|&b| b == 0));
        assert!(all[51_000..90_000].iter().all(|&b| b == 0xff));
        assert!(all[90_000..].iter().all(|&b| b == 0));
    });
    drop(fs);
}
