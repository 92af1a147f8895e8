//! The page-cache fast path of `File`: in a task, reads (and writes, where the file system
//! takes them) first try `RWF_NOWAIT` on the loop's thread, and only what the kernel cannot do
//! at once goes through io_uring or the worker pool. Observable from the outside: a read of
//! cached data completes without the task yielding (another ready task has not run yet); one
//! that goes to io_uring always yields, as the loop submits it only once the task has parked.
//! (Whether a read of evicted data goes there is the kernel's call: see the test of it.)
//! On the worker pool a read need not yield: a job the worker finishes before the task looks for
//! its result is taken at once, so there the tests check the results only. The results are the
//! same either way. Runs on both backends (`COSTACK_AIO_IO_URING=0` for the worker pool).

#[path = "../../costack/tests/common/require.rs"]
mod require;

use costack_aio::{spawn, EventLoop, File, IoBackend};
use std::cell::Cell;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;

fn temp_file(name: &str, data: &[u8]) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("costack-fast-{name}-{}", std::process::id()));
    std::fs::write(&path, data).unwrap();
    path
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
}

/// Whether this file system gives cached data to `preadv2(RWF_NOWAIT)`.
fn nowait_reads_work(f: &std::fs::File) -> bool {
    let mut b = [0u8; 1];
    let iov = libc::iovec {
        iov_base: b.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: the iovec describes `b`, writable for the whole call.
    let r = unsafe { libc::preadv2(f.as_raw_fd(), &iov, 1, 0, libc::RWF_NOWAIT) };
    r == 1
}

/// Drops the file's pages in `offset..offset + len` (`len` 0: to the end) from the page cache,
/// after writing them back. Returns whether none of the file's pages is resident afterwards
/// (checked with `mincore`): `POSIX_FADV_DONTNEED` is a request, and the kernel keeps pages it
/// cannot drop at that moment, so it is retried a few times.
fn evict(path: &Path, offset: i64, len: i64) -> bool {
    let f = std::fs::File::open(path).unwrap();
    f.sync_all().unwrap();
    for _ in 0..50 {
        // SAFETY: posix_fadvise takes only integers.
        let r =
            unsafe { libc::posix_fadvise(f.as_raw_fd(), offset, len, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(r, 0);
        if resident_pages(&f, offset as usize, len as usize) == 0 {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    false
}

/// How many pages of `f` in `offset..offset + len` (`len` 0: to the end) are in the page cache.
fn resident_pages(f: &std::fs::File, offset: usize, len: usize) -> usize {
    let size = f.metadata().unwrap().len() as usize;
    let end = if len == 0 {
        size
    } else {
        (offset + len).min(size)
    };
    if end <= offset {
        return 0;
    }
    // SAFETY: a shared read-only mapping of the whole file, not touched (so nothing is read in)
    // and unmapped below.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED);
    let pages = size.div_ceil(4096);
    let mut vec = vec![0u8; pages];
    // SAFETY: `map` is a mapping of `size` bytes; `vec` has one byte per page of it.
    let r = unsafe { libc::mincore(map, size, vec.as_mut_ptr()) };
    // SAFETY: `map` is the mapping made above, of `size` bytes.
    unsafe { libc::munmap(map, size) };
    assert_eq!(r, 0);
    vec[offset / 4096..end.div_ceil(4096)]
        .iter()
        .filter(|&&b| b & 1 != 0)
        .count()
}

/// Opens `path` in a task, then runs `read` on it beside another ready task; returns what it
/// read, whether the other task ran meanwhile (that is, whether the read yielded), and whether
/// the loop's file I/O goes through io_uring (where a read that is not served from the page
/// cache always yields).
fn read_beside_a_ready_task<T: 'static>(
    path: &Path,
    read: impl FnOnce(&File) -> T + 'static,
) -> (T, bool, bool) {
    let path = path.to_owned();
    let lp = EventLoop::new();
    let ring = lp.io_backend() == IoBackend::IoUring;
    let (out, yielded) = lp.block_on(move || {
        let f = File::open(&path).unwrap();
        let ran = Rc::new(Cell::new(false));
        let other = spawn({
            let ran = ran.clone();
            move || ran.set(true)
        });
        let out = read(&f);
        let yielded = ran.get();
        other.join();
        (out, yielded)
    });
    (out, yielded, ring)
}

#[test]
fn a_read_of_cached_data_completes_without_yielding() {
    let data = pattern(3 * 4096 + 100);
    let path = temp_file("cached", &data);
    if !nowait_reads_work(&std::fs::File::open(&path).unwrap()) {
        require::skip_or_fail("this file system does not read cached data with RWF_NOWAIT");
        return;
    }
    let ((borrowed, owned), yielded, _) = read_beside_a_ready_task(&path, |f| {
        assert!(f.fast_path());
        let mut buf = vec![0u8; 8192];
        let n = f.read_at(&mut buf, 4096).unwrap();
        buf.truncate(n);
        let (r, mut v) = f.read_at_owned(vec![0u8; 8192], 2 * 4096);
        v.truncate(r.unwrap());
        (buf, v)
    });
    assert!(!yielded, "a cached read went through the loop");
    assert!(borrowed == data[4096..3 * 4096]);
    // A short read at the end of the file, as `pread` gives.
    assert!(owned == data[2 * 4096..]);
    std::fs::remove_file(path).unwrap();
}

#[test]
fn with_the_fast_path_off_a_cached_read_goes_through_the_loop_with_the_same_result() {
    let data = pattern(2 * 4096);
    let path = temp_file("off", &data);
    let ((borrowed, owned, past_end), yielded, ring) = read_beside_a_ready_task(&path, |f| {
        f.set_fast_path(false);
        assert!(!f.fast_path());
        let mut buf = vec![0u8; 4096];
        let n = f.read_at(&mut buf, 4000).unwrap();
        buf.truncate(n);
        let (r, mut v) = f.read_at_owned(vec![0u8; 4096], 0);
        v.truncate(r.unwrap());
        let mut tail = [0u8; 16];
        let past_end = f.read_at(&mut tail, 1 << 20).unwrap();
        (buf, v, past_end)
    });
    if ring {
        assert!(yielded, "the read did not go through the ring");
    }
    assert!(borrowed == data[4000..4000 + 4096]);
    assert!(owned == data[..4096]);
    assert_eq!(past_end, 0);
    std::fs::remove_file(path).unwrap();
}

/// Data evicted from the page cache reads back the same. Whether that read yields is not fixed:
/// `RWF_NOWAIT` starts readahead before it gives up, and on a fast disk that readahead can finish
/// before the kernel looks again, so the kernel may serve the "uncached" read at once (seen here
/// on a busy machine). Either way the bytes must be the file's.
#[test]
fn a_read_of_data_not_in_the_cache_reads_the_same_data() {
    let data = pattern(4 * 4096);
    let path = temp_file("evicted", &data);
    assert!(
        evict(&path, 0, 0),
        "the kernel kept the file's pages cached"
    );
    let (got, _, _) = read_beside_a_ready_task(&path, |f| {
        let mut buf = vec![0u8; 4 * 4096];
        f.read_exact_at(&mut buf, 0).unwrap();
        buf
    });
    assert!(got == data);
    std::fs::remove_file(path).unwrap();
}

#[test]
fn a_read_half_in_the_cache_gets_the_rest_through_the_loop() {
    let data = pattern(4 * 4096);
    let path = temp_file("half", &data);
    let _ = evict(&path, 2 * 4096, 2 * 4096);
    let p = path.clone();
    let ((borrowed, owned), _, _) = read_beside_a_ready_task(&path, move |f| {
        let mut buf = vec![0u8; 4 * 4096];
        let n = f.read_at(&mut buf, 0).unwrap();
        buf.truncate(n);
        let _ = evict(&p, 2 * 4096, 2 * 4096);
        let (r, mut v) = f.read_at_owned(vec![0u8; 4 * 4096], 0);
        v.truncate(r.unwrap());
        (buf, v)
    });
    assert!(borrowed == data);
    assert!(owned == data);
    std::fs::remove_file(path).unwrap();
}

#[test]
fn writes_give_the_same_results_with_the_fast_path_on_and_off() {
    let path = temp_file("writes", &[]);
    let p = path.clone();
    let lp = EventLoop::new();
    let back = lp.block_on(move || {
        let f = File::open_rw(&p).unwrap();
        let a = pattern(5000);
        assert_eq!(f.write_at(&a, 0).unwrap(), 5000);
        f.set_fast_path(false);
        let (r, _) = f.write_at_owned(a[..3000].to_vec(), 5000);
        assert_eq!(r.unwrap(), 3000);
        f.set_fast_path(true);
        let (r, _) = f.write_at_owned(a[3000..].to_vec(), 8000);
        assert_eq!(r.unwrap(), 2000);
        let mut back = vec![0u8; 10_000];
        f.read_exact_at(&mut back, 0).unwrap();
        back
    });
    let mut want = pattern(5000);
    want.extend_from_slice(&pattern(5000)[..3000]);
    want.extend_from_slice(&pattern(5000)[3000..]);
    assert!(back == want);
    assert!(std::fs::read(&path).unwrap() == want);
    // A read-only file: the same error as without the fast path.
    let lp2 = lp;
    let p = path.clone();
    let errs = lp2.block_on(move || {
        let f = File::open(&p).unwrap();
        let on = f.write_at(b"x", 0).unwrap_err().raw_os_error();
        f.set_fast_path(false);
        let off = f.write_at(b"x", 0).unwrap_err().raw_os_error();
        (on, off)
    });
    assert_eq!(errs, (Some(libc::EBADF), Some(libc::EBADF)));
    std::fs::remove_file(path).unwrap();
}

/// Reading cached data is not a wait: in a coroutine that no task entered (where a wait panics,
/// as nothing could wake it) a read the page cache serves completes.
#[test]
fn a_cached_read_completes_in_a_coroutine_no_task_entered() {
    let data = pattern(4096);
    let path = temp_file("plain", &data);
    let f = File::open(&path).unwrap(); // outside any loop: a plain blocking open
    if !nowait_reads_work(&std::fs::File::open(&path).unwrap()) {
        require::skip_or_fail("this file system does not read cached data with RWF_NOWAIT");
        return;
    }
    let mut first = [0u8; 16];
    assert_eq!(f.read_at(&mut first, 0).unwrap(), 16); // and now it is cached for sure
    let co = costack::Coroutine::new(move || {
        let mut buf = vec![0u8; 4096];
        let n = f.read_at(&mut buf, 0).unwrap();
        buf.truncate(n);
        buf
    });
    match co.enter() {
        costack::Status::Finished(got) => assert!(got == data),
        costack::Status::Yielded => panic!("a cached read suspended a plain coroutine"),
    }
    std::fs::remove_file(path).unwrap();
}

/// With `O_DIRECT`, `RWF_NOWAIT` reads the device on the calling thread instead of stopping at
/// the page cache, so a `File` wrapping such a descriptor starts with the fast path off (it would
/// hold the whole loop); an ordinary one starts with it on.
#[test]
fn a_file_opened_with_o_direct_starts_with_the_fast_path_off() {
    use std::os::unix::fs::OpenOptionsExt;
    let path = temp_file("direct", &pattern(8192));
    let direct = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) => {
            require::skip_or_fail(&format!("this file system refuses O_DIRECT: {e}"));
            return;
        }
    };
    let plain = std::fs::File::open(&path).unwrap();
    let lp = EventLoop::new();
    let (direct_fast, plain_fast) = lp.block_on(move || {
        let direct = File::from_std(direct);
        let plain = File::from_std(plain);
        (direct.fast_path(), plain.fast_path())
    });
    assert!(!direct_fast, "an O_DIRECT file kept the fast path");
    assert!(plain_fast);
    std::fs::remove_file(path).unwrap();
}
