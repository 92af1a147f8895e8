//! A task dropped while its file request is in the kernel: the request's buffer must stay
//! allocated until the completion arrives (io_uring's classic use-after-free).
//!
//! The requests that stay in the kernel are reads from a pipe that has a writer who does not
//! write (and writes to a full pipe). A global allocator counts allocations and frees of one
//! chosen size, the size of the buffer the request owns, so each test can see exactly when
//! that buffer is freed. Runs on both backends (`COSTACK_AIO_IO_URING=0` for the worker pool),
//! and under AddressSanitizer with `scripts/asan-fs.sh`.

use costack_aio::{run_blocking, sleep, spawn, timeout, EventLoop, File, IoBackend};
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Counts allocations and frees of blocks of `WATCH` bytes.
struct Tracker;

static WATCH: AtomicUsize = AtomicUsize::new(usize::MAX);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static FREES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to `System` unchanged; only counts.
unsafe impl GlobalAlloc for Tracker {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if l.size() == WATCH.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(l) }
    }

    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if l.size() == WATCH.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(l) }
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if l.size() == WATCH.load(Ordering::Relaxed) {
            FREES.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: as above.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Tracker = Tracker;

/// The tests share the counters: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn watch(size: usize) -> std::sync::MutexGuard<'static, ()> {
    let g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    WATCH.store(size, Ordering::SeqCst);
    ALLOCS.store(0, Ordering::SeqCst);
    FREES.store(0, Ordering::SeqCst);
    g
}

fn counts() -> (usize, usize) {
    (ALLOCS.load(Ordering::SeqCst), FREES.load(Ordering::SeqCst))
}

/// Waits (on this thread, outside any loop) until `FREES` reaches `n`.
fn wait_frees(n: usize) {
    let t0 = Instant::now();
    while FREES.load(Ordering::SeqCst) < n {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the buffer was never freed: {:?}",
            counts()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Right after a cancel, `in_flight` requests' buffers are still alive: the kernel or a worker
/// has each request and may still write into its buffer. Except, on the worker pool, a request
/// that no worker has started yet (a worker slow to start: valgrind): the cancel takes it off the
/// queue (see `run_blocking`), and its buffer, which nothing will ever touch, is freed at once.
fn assert_buffers_kept(backend: IoBackend, in_flight: usize, what: &str) {
    let (allocated, freed) = counts();
    assert_eq!(allocated, in_flight, "{what}");
    if backend == IoBackend::ThreadPool {
        assert!(freed <= in_flight, "{what}: {freed} freed");
    } else {
        assert_eq!(freed, 0, "{what}");
    }
}

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

/// A `Vec<u8>` of `len` bytes whose allocation is *not* of the watched size.
fn unwatched(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 1);
    v.resize(len, 0);
    v
}

#[test]
fn a_cancelled_borrowed_read_keeps_its_bounce_buffer_until_the_completion() {
    // Above the loop's pooled sizes, so the bounce buffer is an allocation of exactly this.
    const SIZE: usize = costack_aio::buf::MAX_CLASS + 1_234_567;
    let _g = watch(SIZE);
    let lp = EventLoop::new();
    let backend = lp.io_backend();
    lp.block_on(move || {
        let (r, mut w) = pipe();
        let r = Rc::new(File::from_std(r));
        let reader = spawn({
            let r = r.clone();
            move || {
                let mut buf = unwatched(SIZE);
                let n = r.read_at(&mut buf, 0);
                unreachable!("cancelled before any data: {n:?}");
            }
        });
        sleep(Duration::from_millis(10)); // the read is in the kernel (or on a worker)
        assert_eq!(counts(), (1, 0), "one bounce buffer, in flight");
        reader.cancel(); // the task's stack unwinds; its `buf` is freed
        assert_buffers_kept(backend, 1, "the bounce buffer is still the request's");
        // Data arrives after the task is gone: the request may complete with it now, writing
        // into the bounce buffer (if the cancel has not reached the kernel yet).
        w.write_all(b"after the cancel").unwrap();
        sleep(Duration::from_millis(10)); // the loop reaps the completion
        drop(w);
    });
    wait_frees(1);
    assert_eq!(counts(), (1, 1));
    drop(lp);
    assert_eq!(counts(), (1, 1), "freed exactly once");
}

#[test]
fn a_cancelled_owned_read_keeps_its_vec_until_the_completion() {
    const SIZE: usize = 77_777;
    let _g = watch(SIZE);
    let lp = EventLoop::new();
    let backend = lp.io_backend();
    lp.block_on(move || {
        let (r, w) = pipe();
        let r = Rc::new(File::from_std(r));
        let reader = spawn({
            let r = r.clone();
            move || {
                let (res, _buf) = r.read_at_owned(vec![0u8; SIZE], 0);
                unreachable!("cancelled first: {res:?}");
            }
        });
        sleep(Duration::from_millis(10));
        assert_eq!(counts(), (1, 0));
        reader.cancel();
        assert_buffers_kept(backend, 1, "the Vec belongs to the request in flight");
        // The last writer goes: the read (if still in the kernel) completes with end of file.
        drop(w);
        sleep(Duration::from_millis(10));
    });
    wait_frees(1);
    drop(lp);
    assert_eq!(counts(), (1, 1));
}

#[test]
fn a_cancelled_owned_write_to_a_full_pipe_keeps_its_vec_until_the_completion() {
    const SIZE: usize = 200_003;
    let _g = watch(SIZE);
    let (mut r, w) = pipe();
    // Fill the pipe, so that the next write waits for a reader.
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let fl = libc::fcntl(w.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(w.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
        let chunk = [0u8; 4096];
        while libc::write(w.as_raw_fd(), chunk.as_ptr().cast(), chunk.len()) > 0 {}
        libc::fcntl(w.as_raw_fd(), libc::F_SETFL, fl);
    }
    let lp = EventLoop::new();
    let backend = lp.io_backend();
    lp.block_on(move || {
        let w = File::from_std(w);
        let writer = spawn(move || {
            let (res, _buf) = w.write_at_owned(vec![1u8; SIZE], 0);
            unreachable!("cancelled first: {res:?}");
        });
        sleep(Duration::from_millis(10));
        assert_eq!(counts(), (1, 0));
        writer.cancel(); // drops the `File` too: the descriptor stays open for the request
        assert_buffers_kept(backend, 1, "the Vec belongs to the request in flight");
        sleep(Duration::from_millis(10));
    });
    // Drain the pipe until every write end is closed: that happens only once the request has
    // completed and released the descriptor.
    let drainer = std::thread::spawn(move || {
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        all.len()
    });
    lp.block_on(|| sleep(Duration::from_millis(20))); // let the loop reap
    wait_frees(1);
    let drained = drainer.join().unwrap();
    assert!(drained >= 4096, "drained {drained}");
    drop(lp);
    assert_eq!(counts(), (1, 1));
}

#[test]
fn a_loop_dropped_with_a_request_in_flight_frees_the_buffer_only_after_it() {
    const SIZE: usize = 55_555;
    let _g = watch(SIZE);
    let (r, w) = pipe();
    let lp = EventLoop::new();
    lp.block_on(move || {
        let r = File::from_std(r);
        drop(spawn(move || {
            let (res, _buf) = r.read_at_owned(vec![0u8; SIZE], 0);
            unreachable!("the loop was dropped first: {res:?}");
        }));
        sleep(Duration::from_millis(10));
    });
    assert_eq!(counts(), (1, 0));
    // io_uring: the loop withdraws the read and waits for its completion. Worker pool: the
    // worker keeps its copy until its read returns, which the writer's close makes happen.
    drop(lp);
    drop(w);
    wait_frees(1);
    assert_eq!(counts(), (1, 1));
}

#[test]
fn a_read_under_a_timeout_is_abandoned_cleanly() {
    const SIZE: usize = 33_333;
    let _g = watch(SIZE);
    let (r, w) = pipe();
    let lp = EventLoop::new();
    let elapsed = lp.block_on(move || {
        let r = File::from_std(r);
        let t0 = Instant::now();
        let out = timeout(Duration::from_millis(20), || {
            r.read_at_owned(vec![0u8; SIZE], 0).0
        });
        assert!(out.is_err(), "timed out: {out:?}");
        // The loop goes on: a file read in another task works.
        let f = File::open("/proc/self/stat").unwrap();
        let mut buf = [0u8; 8];
        assert!(f.read_at(&mut buf, 0).unwrap() > 0);
        t0.elapsed()
    });
    assert!(elapsed >= Duration::from_millis(20));
    drop(w); // a read still on a worker ends with end of file
    wait_frees(1);
    drop(lp);
    assert_eq!(counts(), (1, 1));
}

#[test]
fn many_cancelled_requests_in_flight_at_once() {
    const SIZE: usize = 44_444;
    const N: usize = 200;
    let _g = watch(SIZE);
    let lp = EventLoop::builder().blocking_threads(N).build().unwrap();
    let backend = lp.io_backend();
    let (r, w) = pipe();
    lp.block_on(move || {
        let r = Rc::new(File::from_std(r));
        let tasks: Vec<_> = (0..N)
            .map(|_| {
                let r = r.clone();
                spawn(move || r.read_at_owned(vec![0u8; SIZE], 0).0)
            })
            .collect();
        sleep(Duration::from_millis(50));
        assert_eq!(counts(), (N, 0));
        for t in tasks {
            t.cancel();
        }
        assert_buffers_kept(backend, N, "every buffer belongs to its request in flight");
        drop(w);
        sleep(Duration::from_millis(20));
    });
    wait_frees(N);
    drop(lp);
    assert_eq!(counts(), (N, N));
}

#[test]
fn a_queued_request_of_a_cancelled_task_is_withdrawn_and_never_runs() {
    // The worker pool with one worker, kept busy: a read queued behind it is taken off the queue
    // when its task is cancelled — its buffer is freed at once, and it never reads the pipe.
    const SIZE: usize = 33_333;
    let _g = watch(SIZE);
    let lp = EventLoop::builder()
        .io_uring(false)
        .blocking_threads(1)
        .build()
        .unwrap();
    let (r, mut w) = pipe();
    let mut r_peek = r.try_clone().unwrap();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    lp.block_on(move || {
        let blocker = spawn(move || run_blocking(move || release_rx.recv().unwrap()));
        let r = File::from_std(r);
        let reader = spawn(move || {
            let (res, _buf) = r.read_at_owned(vec![0u8; SIZE], 0);
            unreachable!("cancelled while queued: {res:?}");
        });
        sleep(Duration::from_millis(10));
        assert_eq!(
            counts(),
            (1, 0),
            "the read waits in the queue with its buffer"
        );
        reader.cancel();
        assert_eq!(counts(), (1, 1), "withdrawn: its buffer is freed at once");
        w.write_all(b"for nobody").unwrap();
        release_tx.send(()).unwrap();
        blocker.join();
        drop(w);
    });
    drop(lp);
    // The read never ran: the bytes are still in the pipe.
    let mut left = Vec::new();
    r_peek.read_to_end(&mut left).unwrap();
    assert_eq!(left, b"for nobody");
    assert_eq!(counts(), (1, 1));
}
