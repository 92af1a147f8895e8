//! `costack_aio::File`: every method, in tasks and on plain threads.
//!
//! The backend is the loop's default: io_uring where the kernel allows it, the worker pool with
//! `COSTACK_AIO_IO_URING=0` — CI runs this file both ways.

use costack_aio::fs::IO_URING_ENV;
use costack_aio::{EventLoop, File, IoBackend};
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A file name in the temp dir, removed on drop.
struct TempPath(PathBuf);

impl TempPath {
    fn new(tag: &str) -> TempPath {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        TempPath(std::env::temp_dir().join(format!("costack-fs-{tag}-{}-{n}", std::process::id())))
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl AsRef<Path> for TempPath {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

fn env_wants_uring() -> bool {
    !matches!(
        std::env::var(IO_URING_ENV).as_deref(),
        Ok("0") | Ok("false") | Ok("off") | Ok("no")
    )
}

/// Whether this kernel lets us create a ring (what the loop tries before falling back).
fn kernel_allows_uring() -> bool {
    // io_uring_setup(2) with 1 entry; params zeroed.
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup writes at most `sizeof(struct io_uring_params)` (120) bytes into
    // `params`; a returned fd is closed at once.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd < 0 {
        return false;
    }
    // SAFETY: the syscall just returned this fd and nothing else owns it.
    drop(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    true
}

#[test]
fn the_backend_follows_the_environment_and_the_builder() {
    let lp = EventLoop::new();
    let want = env_wants_uring() && kernel_allows_uring();
    let backend = lp.io_backend();
    eprintln!(
        "io backend: {backend:?} (reason: {:?})",
        lp.io_uring_unavailable_reason()
    );
    if !env_wants_uring() {
        assert_eq!(backend, IoBackend::ThreadPool);
        assert_eq!(lp.io_uring_unavailable_reason(), None);
    } else if want {
        assert_eq!(backend, IoBackend::IoUring);
        assert_eq!(lp.io_uring_unavailable_reason(), None);
    } else {
        // The kernel refuses io_uring: the loop fell back by itself, and says why.
        assert_eq!(backend, IoBackend::ThreadPool);
        assert!(lp.io_uring_unavailable_reason().is_some());
    }
    drop(lp);
    let lp = EventLoop::builder().io_uring(false).build().unwrap();
    assert_eq!(lp.io_backend(), IoBackend::ThreadPool);
}

#[test]
fn create_write_read_in_a_task() {
    let p = TempPath::new("rw");
    let path = p.0.clone();
    let lp = EventLoop::new();
    lp.block_on(move || {
        let f = File::create(&path).unwrap();
        assert_eq!(f.write_at(b"hello world", 0).unwrap(), 11);
        f.write_all_at(b"HELLO", 0).unwrap();
        let mut buf = [0u8; 11];
        assert_eq!(f.read_at(&mut buf, 0).unwrap(), 11);
        assert_eq!(&buf, b"HELLO world");
        let mut five = [0u8; 5];
        f.read_exact_at(&mut five, 6).unwrap();
        assert_eq!(&five, b"world");
        assert_eq!(f.len().unwrap(), 11);
        f.sync_all().unwrap();
        f.sync_data().unwrap();
    });
    assert_eq!(std::fs::read(&p).unwrap(), b"HELLO world");
}

#[test]
fn the_same_calls_block_outside_a_task() {
    let p = TempPath::new("plain");
    let f = File::create(&p).unwrap();
    f.write_all_at(b"abcdef", 0).unwrap();
    let mut buf = [0u8; 3];
    f.read_exact_at(&mut buf, 2).unwrap();
    assert_eq!(&buf, b"cde");
    let (r, v) = f.read_at_owned(vec![0; 4], 4);
    assert_eq!(r.unwrap(), 2);
    assert_eq!(&v[..2], b"ef");
    let (r, _) = f.write_at_owned(b"XY".to_vec(), 6);
    assert_eq!(r.unwrap(), 2);
    let (mut a, mut b) = ([0u8; 2], [0u8; 10]);
    let n = f
        .read_vectored_at(&mut [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)], 1)
        .unwrap();
    assert_eq!(n, 7);
    assert_eq!(&a, b"bc");
    assert_eq!(&b[..5], b"defXY");
    let n = f
        .write_vectored_at(&[IoSlice::new(b"12"), IoSlice::new(b"345")], 0)
        .unwrap();
    assert_eq!(n, 5);
    f.sync_all().unwrap();
    f.set_len(4).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"1234");
    // Also on a thread that has a loop, but outside its tasks.
    let lp = EventLoop::new();
    let mut buf = [0u8; 4];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"1234");
    drop(lp);
}

#[test]
fn vectored_and_owned_in_a_task() {
    let p = TempPath::new("vec");
    let path = p.0.clone();
    EventLoop::new().block_on(move || {
        let f = File::create(&path).unwrap();
        let n = f
            .write_vectored_at(
                &[
                    IoSlice::new(b"ab"),
                    IoSlice::new(b""),
                    IoSlice::new(b"cdef"),
                ],
                10,
            )
            .unwrap();
        assert_eq!(n, 6);
        assert_eq!(f.len().unwrap(), 16);
        let (mut a, mut b, mut c) = ([9u8; 3], [9u8; 0], [9u8; 8]);
        let n = f
            .read_vectored_at(
                &mut [
                    IoSliceMut::new(&mut a),
                    IoSliceMut::new(&mut b),
                    IoSliceMut::new(&mut c),
                ],
                9,
            )
            .unwrap();
        assert_eq!(n, 7, "short at the end of the file");
        assert_eq!(&a, b"\0ab");
        assert_eq!(&c, b"cdef\x09\x09\x09\x09", "past the count, untouched");

        let (r, buf) = f.write_at_owned(vec![7u8; 5000], 100);
        assert_eq!(r.unwrap(), 5000);
        assert_eq!(buf.len(), 5000);
        let (r, buf) = f.read_at_owned(vec![0u8; 6000], 100);
        assert_eq!(r.unwrap(), 5000);
        assert_eq!(buf.len(), 6000, "the Vec comes back as it went");
        assert!(buf[..5000].iter().all(|&b| b == 7));
        assert!(buf[5000..].iter().all(|&b| b == 0));
        let (r, buf) = f.read_at_owned(Vec::new(), 0);
        assert_eq!(r.unwrap(), 0);
        assert!(buf.is_empty());
    });
}

#[test]
fn open_open_rw_and_create() {
    let p = TempPath::new("open");
    let path = p.0.clone();
    EventLoop::new().block_on(move || {
        assert_eq!(
            File::open(&path).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            File::open_rw(&path).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        let f = File::create(&path).unwrap();
        f.write_all_at(b"0123456789", 0).unwrap();
        drop(f);
        let f = File::open_rw(&path).unwrap();
        assert_eq!(f.len().unwrap(), 10, "open_rw does not truncate");
        f.write_all_at(b"ab", 0).unwrap();
        drop(f);
        let f = File::open(&path).unwrap();
        let mut buf = [0; 10];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"ab23456789");
        let e = f.write_at(b"x", 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF), "read-only: {e}");
        drop(f);
        let f = File::create(&path).unwrap();
        assert_eq!(f.len().unwrap(), 0, "create truncates");
        // The descriptor does not leak into children.
        // SAFETY: F_GETFD on an fd we own.
        let flags = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFD) };
        assert!(flags & libc::FD_CLOEXEC != 0);
        let e = File::open("bad\0name").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    });
}

#[test]
fn reads_past_the_end_are_short_and_read_exact_says_eof() {
    let p = TempPath::new("eof");
    let path = p.0.clone();
    let check = move || {
        let f = File::create(&path).unwrap();
        f.write_all_at(&[1u8; 100], 0).unwrap();
        let mut buf = vec![0u8; 4096];
        assert_eq!(f.read_at(&mut buf, 50).unwrap(), 50);
        assert_eq!(f.read_at(&mut buf, 100).unwrap(), 0);
        assert_eq!(f.read_at(&mut buf, 1 << 40).unwrap(), 0);
        let e = f.read_exact_at(&mut buf[..60], 50).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        let e = f.read_at(&mut buf, u64::MAX).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        let e = f.write_at(b"x", 1 << 63).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    };
    check.clone()();
    EventLoop::new().block_on(check);
}

#[test]
fn punch_hole_zero_range_and_set_len() {
    let p = TempPath::new("falloc");
    let path = p.0.clone();
    EventLoop::new().block_on(move || {
        let f = File::create(&path).unwrap();
        f.write_all_at(&[0xaa; 64 * 1024], 0).unwrap();
        match f.punch_hole(4096, 8192) {
            Ok(()) => {
                let mut buf = vec![0u8; 64 * 1024];
                f.read_exact_at(&mut buf, 0).unwrap();
                assert!(buf[..4096].iter().all(|&b| b == 0xaa));
                assert!(buf[4096..12288].iter().all(|&b| b == 0));
                assert!(buf[12288..].iter().all(|&b| b == 0xaa));
                assert_eq!(f.len().unwrap(), 64 * 1024, "KEEP_SIZE");
            }
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP), "{e}"),
        }
        f.zero_range(60 * 1024, 8192).unwrap();
        assert_eq!(f.len().unwrap(), 68 * 1024, "zero_range extends");
        let mut buf = vec![1u8; 8192];
        f.read_exact_at(&mut buf, 60 * 1024).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, 60 * 1024 - 1).unwrap();
        assert_eq!(b[0], 0xaa);
        let e = f.punch_hole(0, 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));

        f.set_len(10).unwrap();
        assert_eq!(f.len().unwrap(), 10);
        f.set_len(1 << 20).unwrap();
        assert_eq!(f.len().unwrap(), 1 << 20);
        let mut buf = [1u8; 16];
        f.read_exact_at(&mut buf, 100_000).unwrap();
        assert_eq!(buf, [0; 16]);
        let e = f.set_len(u64::MAX).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    });
}

#[test]
fn a_large_transfer_and_a_zero_length_one() {
    let p = TempPath::new("large");
    let path = p.0.clone();
    EventLoop::new().block_on(move || {
        let f = File::create(&path).unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        f.write_all_at(&data, 12345).unwrap();
        let mut back = vec![0u8; data.len()];
        f.read_exact_at(&mut back, 12345).unwrap();
        assert!(back == data);
        assert_eq!(f.write_at(&[], 0).unwrap(), 0);
        assert_eq!(f.read_at(&mut [], 0).unwrap(), 0);
    });
}

#[test]
fn many_tasks_share_one_file() {
    const TASKS: u64 = 64;
    let p = TempPath::new("share");
    let path = p.0.clone();
    EventLoop::new().block_on(move || {
        let f = Rc::new(File::create(&path).unwrap());
        let hs: Vec<_> = (0..TASKS)
            .map(|i| {
                let f = f.clone();
                costack_aio::spawn(move || {
                    for round in 0..8u64 {
                        let block = vec![(i * 8 + round) as u8; 4096];
                        let off = (round * TASKS + i) * 4096;
                        f.write_all_at(&block, off).unwrap();
                        let mut back = vec![0u8; 4096];
                        f.read_exact_at(&mut back, off).unwrap();
                        assert_eq!(back, block);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join();
        }
        assert_eq!(f.len().unwrap(), 8 * TASKS * 4096);
    });
}

/// A pipe as two `std::fs::File`s: (read end, write end).
fn pipe() -> (std::fs::File, std::fs::File) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both fds were just created and are owned by nobody else.
    unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    }
}

#[test]
fn a_read_that_waits_does_not_block_the_loop() {
    let lp = EventLoop::new();
    let got = lp.block_on(|| {
        let (r, mut w) = pipe();
        let r = File::from_std(r);
        let writer = costack_aio::spawn(move || {
            costack_aio::sleep(Duration::from_millis(20));
            w.write_all(b"late").unwrap();
            w
        });
        let mut buf = [0u8; 16];
        let n = r.read_at(&mut buf, 0).unwrap(); // waits for the writer task
        drop(writer.join());
        buf[..n].to_vec()
    });
    assert_eq!(got, b"late");
}

#[test]
fn a_file_from_std_and_back_through_the_fd() {
    let p = TempPath::new("std");
    std::fs::write(&p, b"from std").unwrap();
    let f = File::from_std(std::fs::File::open(&p).unwrap());
    let path = p.0.clone();
    EventLoop::new().block_on(move || {
        let mut buf = [0u8; 8];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"from std");
        let mut s = String::new();
        std::fs::File::open(path)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "from std");
        assert!(format!("{f:?}").contains("File"));
    });
}

/// Makes `io_uring_setup` fail with `EPERM` on the calling thread (and threads it starts), as
/// a container's seccomp profile does.
fn refuse_io_uring_on_this_thread() {
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let ld = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let mut prog = [
        stmt(ld, 4), // seccomp_data.arch
        jeq(AUDIT_ARCH_X86_64, 1, 0),
        stmt(libc::BPF_RET, libc::SECCOMP_RET_ALLOW),
        stmt(ld, 0), // seccomp_data.nr
        jeq(libc::SYS_io_uring_setup as u32, 0, 1),
        stmt(libc::BPF_RET, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        stmt(libc::BPF_RET, libc::SECCOMP_RET_ALLOW),
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: prctl with a valid filter program that outlives the call; the filter (and
    // no_new_privs) apply to this thread only, which the test ends right after.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &fprog as *const libc::sock_fprog
            ),
            0,
            "seccomp: {}",
            io::Error::last_os_error()
        );
    }
}

#[test]
fn a_sandbox_that_refuses_io_uring_gets_the_worker_pool() {
    #[cfg(not(target_arch = "x86_64"))]
    return;
    let p = TempPath::new("sandbox");
    let path = p.0.clone();
    std::thread::spawn(move || {
        refuse_io_uring_on_this_thread();
        let lp = EventLoop::builder().io_uring(true).build().unwrap();
        assert_eq!(lp.io_backend(), IoBackend::ThreadPool);
        let why = lp.io_uring_unavailable_reason().unwrap();
        assert!(why.contains("not permitted"), "{why}");
        lp.block_on(move || {
            let f = File::create(&path).unwrap();
            f.write_all_at(b"still works", 0).unwrap();
            let mut buf = [0u8; 11];
            f.read_exact_at(&mut buf, 0).unwrap();
            assert_eq!(&buf, b"still works");
        });
    })
    .join()
    .unwrap();
}

#[test]
fn on_a_pipe_the_offset_is_ignored_on_every_path() {
    let (r, w) = pipe();
    let (r, w) = (File::from_std(r), File::from_std(w));
    // Outside a task: the plain and the vectored calls.
    assert_eq!(w.write_at(b"ab", 0).unwrap(), 2);
    assert_eq!(
        w.write_vectored_at(&[IoSlice::new(b"c"), IoSlice::new(b"d")], 0)
            .unwrap(),
        2
    );
    let mut a = [0u8; 1];
    let mut b = [0u8; 1];
    assert_eq!(
        r.read_vectored_at(&mut [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)], 0)
            .unwrap(),
        2
    );
    assert_eq!((&a, &b), (b"a", b"b"));
    // In a task, through the loop's backend.
    EventLoop::new().block_on(move || {
        let (n, _) = w.write_at_owned(b"ef".to_vec(), 0);
        assert_eq!(n.unwrap(), 2);
        let mut buf = [0u8; 4];
        r.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"cdef");
    });
}

/// `read_exact_at_owned` / `write_all_at_owned` move the whole buffer (the owned call, then the
/// borrowed loop for the rest) and give it back whatever happens; `File` is std's `FileExt`.
#[test]
fn owned_exact_and_whole_transfers_and_std_file_ext() {
    let p = TempPath::new("owned-exact");
    let path = p.0.clone();
    let pattern: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let check = move || {
        let f = File::create(&path).unwrap();
        let (r, buf) = f.write_all_at_owned(pattern.clone(), 0);
        r.unwrap();
        assert_eq!(buf, pattern, "the buffer comes back as it went");
        let (r, buf) = f.read_exact_at_owned(vec![0u8; 10_000], 0);
        r.unwrap();
        assert_eq!(buf, pattern);
        // Past the end: UnexpectedEof, and the buffer still comes back at its length.
        let (r, buf) = f.read_exact_at_owned(vec![0u8; 200], 9_900);
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(buf.len(), 200);
        // Code written against std's trait runs on a `File`.
        fn through_std(f: &impl std::os::unix::fs::FileExt) -> Vec<u8> {
            f.write_all_at(b"STD", 10).unwrap();
            let mut five = [0u8; 5];
            f.read_exact_at(&mut five, 9).unwrap();
            assert_eq!(f.read_at(&mut [0u8; 8], 9_998).unwrap(), 2);
            five.to_vec()
        }
        assert_eq!(through_std(&f), [pattern[9], b'S', b'T', b'D', pattern[13]]);
    };
    check.clone()();
    EventLoop::new().block_on(check);
}

/// On a pipe the first owned read returns what has arrived, and `read_exact_at_owned` waits for
/// the rest through the borrowed loop.
#[test]
fn read_exact_at_owned_waits_for_the_rest_of_a_pipe() {
    let got = EventLoop::new().block_on(|| {
        let (r, mut w) = pipe();
        let r = File::from_std(r);
        let writer = costack_aio::spawn(move || {
            w.write_all(b"abc").unwrap();
            costack_aio::sleep(Duration::from_millis(20));
            w.write_all(b"def").unwrap();
            w
        });
        let (res, buf) = r.read_exact_at_owned(vec![0u8; 6], 0);
        drop(writer.join());
        res.unwrap();
        buf
    });
    assert_eq!(got, b"abcdef");
}
