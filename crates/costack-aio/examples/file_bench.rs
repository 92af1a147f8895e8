//! 4 KiB random reads of a page-cached 1 GiB file through `costack_aio::File`, each
//! configuration beside a plain `pread` loop on one thread measured just before it in the same
//! process (A B A B), so that the ratio to `pread` holds on a noisy machine.
//!
//! ```sh
//! cargo run --release -p costack-aio --example file_bench            # about two minutes
//! cargo run --release -p costack-aio --example file_bench -- --secs 1 --keep
//! cargo run --release -p costack-aio --example file_bench -- --secs 0.5 --keep --default-only
//! valgrind --tool=callgrind target/release/examples/file_bench --keep --count file 100000
//! ```
//!
//! `--count pread|file N` does N cached reads through `pread` or `File::read_at` (one task) and
//! nothing else: under callgrind, for N and 2N, it gives the user-space instructions per read.
//!
//! Two kinds of rows:
//!
//! * **default**: `File` as it comes, page-cache fast path on: a cached read is one
//!   `preadv2(RWF_NOWAIT)` on the loop's thread, whatever the backend (io_uring or the worker
//!   pool) and however many tasks read at once. These are the rows to hold against `pread`.
//! * **fast path off** (`File::set_fast_path(false)`): every read goes through io_uring or the
//!   worker pool, to measure the backends themselves (`read_at` through a bounce buffer,
//!   `read_at_owned` with the caller's `Vec`). `--default-only` leaves these out.
//!
//! *Depth* is the number of tasks, each reading one block at a time at random (4 KiB-aligned)
//! offsets. A task on the fast path never waits for cached data, so it yields every 64 reads to
//! let the others in. The file is created in the temp dir (`/tmp/costack-file-bench.dat`),
//! filled with random data, synced and read once so that it is in the page cache; it is removed
//! at the end unless `--keep`.
//!
//! Reported per configuration: reads per second; CPU time per read (user + system time of the
//! whole process — the loop's thread, the worker threads, io_uring's own workers — over the
//! measured interval, divided by the reads done); and **× pread**, its reads per second over
//! those of the `pread` loop measured right before it. The table is Markdown, so that the rows
//! of several separate runs can be gathered with `awk -F'|'`.

use costack_aio::{EventLoop, File, IoBackend};
use std::cell::Cell;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

const FILE_SIZE: u64 = 1 << 30;
const BLOCK: usize = 4096;
const BLOCKS: u64 = FILE_SIZE / BLOCK as u64;

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// User + system CPU time of the whole process.
fn cpu_time() -> Duration {
    // SAFETY: `rusage` is plain data; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid, writable `rusage` for the whole call.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn prepare(path: &Path) {
    let fresh = std::fs::metadata(path)
        .map(|m| m.len() != FILE_SIZE)
        .unwrap_or(true);
    if fresh {
        eprint!("creating {} (1 GiB of random data)... ", path.display());
        let mut f = std::fs::File::create(path).unwrap();
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let mut chunk = vec![0u8; 1 << 20];
        for _ in 0..FILE_SIZE >> 20 {
            for w in chunk.chunks_exact_mut(8) {
                w.copy_from_slice(&xorshift(&mut x).to_ne_bytes());
            }
            f.write_all(&chunk).unwrap();
        }
        f.sync_all().unwrap();
        eprintln!("done");
    }
    // Into the page cache (and check that it fits).
    let f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let t0 = Instant::now();
    for i in 0..FILE_SIZE >> 20 {
        f.read_exact_at(&mut buf, i << 20).unwrap();
    }
    eprintln!("file read once in {:?}", t0.elapsed());
}

struct Row {
    name: String,
    depth: usize,
    reads: u64,
    wall: Duration,
    cpu: Duration,
}

impl Row {
    fn iops(&self) -> f64 {
        self.reads as f64 / self.wall.as_secs_f64()
    }
    fn cpu_per_read_us(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.reads as f64
    }
}

/// `n` random cached 4 KiB reads, for counting instructions per read under callgrind (run it
/// for N and 2N: the difference over N cancels start-up). `which` is `pread` (std's `read_at`
/// on a plain thread) or `file` (`File::read_at` in one task, fast path on, on the default
/// backend). Prints the sum of the first byte of every block, so the reads cannot be left out.
fn count_reads(path: &Path, which: &str, n: u64) {
    let mut x = 0x1234_5678_9abc_def1_u64;
    let mut sum = 0u64;
    match which {
        "pread" => {
            let f = std::fs::File::open(path).unwrap();
            let mut buf = vec![0u8; BLOCK];
            for _ in 0..n {
                let off = xorshift(&mut x) % BLOCKS * BLOCK as u64;
                assert_eq!(f.read_at(&mut buf, off).unwrap(), BLOCK);
                sum += u64::from(buf[0]);
            }
        }
        "file" => {
            let path = path.to_owned();
            sum = EventLoop::new().block_on(move || {
                let f = File::open(&path).unwrap();
                let mut buf = vec![0u8; BLOCK];
                for _ in 0..n {
                    let off = xorshift(&mut x) % BLOCKS * BLOCK as u64;
                    assert_eq!(f.read_at(&mut buf, off).unwrap(), BLOCK);
                    sum += u64::from(buf[0]);
                }
                sum
            });
        }
        _ => panic!("--count pread|file N"),
    }
    println!("{which} {n} reads, byte sum {sum}");
}

fn bench_pread(path: &Path, secs: Duration) -> Row {
    let f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; BLOCK];
    let mut x = 0x1234_5678_9abc_def1_u64;
    let mut read_some = |n: u64| {
        for _ in 0..n {
            let off = xorshift(&mut x) % BLOCKS * BLOCK as u64;
            assert_eq!(f.read_at(&mut buf, off).unwrap(), BLOCK);
        }
    };
    read_some(1000); // warm up
    let (t0, c0) = (Instant::now(), cpu_time());
    let mut reads = 0;
    while t0.elapsed() < secs {
        read_some(1000);
        reads += 1000;
    }
    Row {
        name: "pread, one thread".into(),
        depth: 1,
        reads,
        wall: t0.elapsed(),
        cpu: cpu_time() - c0,
    }
}

fn bench_loop(
    path: &Path,
    uring: bool,
    owned: bool,
    fast: bool,
    depth: usize,
    secs: Duration,
) -> Option<Row> {
    let lp = EventLoop::builder().io_uring(uring).build().unwrap();
    let backend = lp.io_backend();
    if uring && backend != IoBackend::IoUring {
        eprintln!(
            "io_uring unavailable ({}): skipped",
            lp.io_uring_unavailable_reason().unwrap_or("?")
        );
        return None;
    }
    let path: PathBuf = path.to_owned();
    let (reads, wall, cpu) = lp.block_on(move || {
        let f = Rc::new(File::open(&path).unwrap());
        // The backends themselves, unless the row is about the page-cache fast path.
        f.set_fast_path(fast);
        let stop = Rc::new(Cell::new(false));
        let count = Rc::new(Cell::new(0u64));
        let tasks: Vec<_> = (0..depth)
            .map(|i| {
                let (f, stop, count) = (f.clone(), stop.clone(), count.clone());
                costack_aio::TaskBuilder::new()
                    .stack_size(64 * 1024)
                    .spawn(move || {
                        let mut x = 0x9e37_79b9_7f4a_7c15_u64 ^ ((i as u64 + 1) * 0x1000_0001);
                        let mut buf = vec![0u8; BLOCK];
                        let mut owned_buf = Some(vec![0u8; BLOCK]);
                        while !stop.get() {
                            let off = xorshift(&mut x) % BLOCKS * BLOCK as u64;
                            let n = if owned {
                                let (r, b) = f.read_at_owned(owned_buf.take().unwrap(), off);
                                owned_buf = Some(b);
                                r.unwrap()
                            } else {
                                f.read_at(&mut buf, off).unwrap()
                            };
                            assert_eq!(n, BLOCK);
                            count.set(count.get() + 1);
                            if fast && count.get() % 64 == 0 {
                                // Cached reads on the fast path never yield: let the others in.
                                costack_aio::yield_now();
                            }
                        }
                    })
            })
            .collect();
        costack_aio::sleep(Duration::from_millis(200)); // warm up: workers started, caches hot
        let (t0, c0, n0) = (Instant::now(), cpu_time(), count.get());
        costack_aio::sleep(secs);
        let (wall, cpu, reads) = (t0.elapsed(), cpu_time() - c0, count.get() - n0);
        stop.set(true);
        for t in tasks {
            t.join();
        }
        (reads, wall, cpu)
    });
    let backend_name = match backend {
        IoBackend::IoUring => "io_uring",
        IoBackend::ThreadPool => "worker pool",
    };
    let call = if owned { "read_at_owned" } else { "read_at" };
    let name = if fast {
        format!("default ({backend_name}), {call}")
    } else {
        format!("{backend_name}, fast path off, {call}")
    };
    Some(Row {
        name,
        depth,
        reads,
        wall,
        cpu,
    })
}

/// One configuration of the loop's rows.
#[derive(Clone, Copy)]
struct Config {
    uring: bool,
    owned: bool,
    fast: bool,
}

fn main() {
    let mut secs = Duration::from_secs(3);
    let mut keep = false;
    let mut default_only = false;
    let mut depths = vec![1, 16, 64];
    let mut count = None;
    let mut args = std::env::args().skip(1);
    let usage = "usage: file_bench [--secs S] [--keep] [--default-only] [--depths 1,16,64] \
                 [--count pread|file N]";
    while let Some(a) = args.next() {
        match a.as_str() {
            "--secs" => {
                let s = args.next().and_then(|s| s.parse().ok());
                secs = Duration::from_secs_f64(s.expect(usage));
            }
            "--keep" => keep = true,
            "--default-only" => default_only = true,
            "--count" => {
                let which = args.next().expect(usage);
                let n = args.next().and_then(|n| n.parse().ok()).expect(usage);
                count = Some((which, n));
            }
            "--depths" => {
                let list = args.next().expect(usage);
                depths = list.split(',').map(|d| d.parse().expect(usage)).collect();
            }
            _ => panic!("{usage}"),
        }
    }
    let path = std::env::temp_dir().join("costack-file-bench.dat");
    prepare(&path);
    if let Some((which, n)) = count {
        count_reads(&path, &which, n);
        return;
    }
    let mut configs = vec![
        Config {
            uring: true,
            owned: false,
            fast: true,
        },
        Config {
            uring: false,
            owned: false,
            fast: true,
        },
    ];
    if !default_only {
        configs.extend([
            Config {
                uring: true,
                owned: false,
                fast: false,
            },
            Config {
                uring: true,
                owned: true,
                fast: false,
            },
            Config {
                uring: false,
                owned: false,
                fast: false,
            },
        ]);
    }
    // Each loop row with the pread row measured just before it.
    let mut rows: Vec<(Row, Row)> = Vec::new();
    for &depth in &depths {
        for c in &configs {
            let pread = bench_pread(&path, secs);
            if let Some(row) = bench_loop(&path, c.uring, c.owned, c.fast, depth, secs) {
                rows.push((row, pread));
            }
        }
    }
    println!();
    println!(
        "4 KiB random reads, 1 GiB page-cached file, {} s each, {} CPUs",
        secs.as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!(
        "| path | depth | reads/s | CPU µs per read | × pread | pread reads/s | pread CPU µs |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|");
    for (r, p) in &rows {
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} |",
            r.name,
            r.depth,
            r.iops(),
            r.cpu_per_read_us(),
            r.iops() / p.iops(),
            p.iops(),
            p.cpu_per_read_us()
        );
    }
    let worst = rows
        .iter()
        .filter(|(r, _)| r.name.starts_with("default"))
        .map(|(r, p)| r.iops() / p.iops())
        .fold(f64::INFINITY, f64::min);
    if worst.is_finite() {
        println!("\ndefault rows: lowest × pread = {worst:.2}");
    }
    let find = |name: &str, depth| {
        rows.iter()
            .find(|(r, _)| r.name == name && r.depth == depth)
    };
    for &depth in &depths {
        if let (Some((u, _)), Some((p, _))) = (
            find("io_uring, fast path off, read_at", depth),
            find("worker pool, fast path off, read_at", depth),
        ) {
            println!(
                "depth {depth}, fast path off, read_at: io_uring / worker pool = {:.2}x reads/s, \
                 {:.2}x CPU per read",
                u.iops() / p.iops(),
                u.cpu_per_read_us() / p.cpu_per_read_us()
            );
        }
    }
    if !keep {
        let _ = std::fs::remove_file(&path);
    }
}
