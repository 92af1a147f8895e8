//! `File` as a cursor (`Read`/`Write`/`Seek`, for `File` and `&File`) against `std::fs::File`
//! as the model, `OpenOptions`, and the metadata calls; in tasks on both backends and on a
//! plain thread.

use costack_aio::fs::OpenOptions;
use costack_aio::{EventLoop, File};
use std::io::{self, ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A file name in the temp dir, removed on drop.
struct TempPath(PathBuf);

impl TempPath {
    fn new(tag: &str) -> TempPath {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        TempPath(
            std::env::temp_dir().join(format!("costack-cursor-{tag}-{}-{n}", std::process::id())),
        )
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

/// Where the code under test runs.
#[derive(Clone, Copy, Debug)]
enum Place {
    /// In a task of a loop with io_uring (where the kernel allows it).
    TaskRing,
    /// In a task of a loop whose file I/O goes to the worker pool.
    TaskPool,
    /// On a plain thread (blocking calls).
    Thread,
}

const PLACES: [Place; 3] = [Place::TaskRing, Place::TaskPool, Place::Thread];

fn run_in<T: 'static>(place: Place, f: impl FnOnce() -> T + 'static) -> T {
    match place {
        Place::TaskRing => EventLoop::new().block_on(f),
        Place::TaskPool => EventLoop::builder()
            .io_uring(false)
            .build()
            .unwrap()
            .block_on(f),
        Place::Thread => f(),
    }
}

/// One step of a workload.
#[derive(Clone, Debug)]
enum Step {
    Read(usize),
    Write(Vec<u8>),
    Seek(SeekFrom),
    Position,
    SetLen(u64),
    ReadToEnd,
}

/// A deterministic pseudo-random workload (an LCG, so every run does the same).
fn workload(seed: u64, len: usize) -> Vec<Step> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move |m: u64| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) % m
    };
    (0..len)
        .map(|i| match next(10) {
            0 | 1 => Step::Read(next(300) as usize),
            2..=4 => Step::Write(vec![(i % 251) as u8 + 1; next(400) as usize]),
            5 => Step::Seek(SeekFrom::Start(next(2000))),
            6 => Step::Seek(SeekFrom::Current(next(1200) as i64 - 600)),
            7 => Step::Seek(SeekFrom::End(next(1200) as i64 - 900)),
            8 => match next(3) {
                0 => Step::SetLen(next(1500)),
                1 => Step::ReadToEnd,
                _ => Step::Position,
            },
            _ => Step::Position,
        })
        .collect()
}

/// What one step gave: a value (count, position, or the bytes read) or an error kind.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    N(u64),
    Bytes(Vec<u8>),
    Err(ErrorKind),
}

fn outcome<T>(r: io::Result<T>, f: impl FnOnce(T) -> Outcome) -> Outcome {
    match r {
        Ok(v) => f(v),
        Err(e) => Outcome::Err(e.kind()),
    }
}

/// Runs `steps` through any cursor (our `&File`, our `File`, or std's).
fn apply<F: Read + Write + Seek>(
    f: &mut F,
    set_len: &dyn Fn(u64) -> io::Result<()>,
    steps: &[Step],
) -> Vec<Outcome> {
    steps
        .iter()
        .map(|s| match s {
            Step::Read(n) => {
                let mut buf = vec![0; *n];
                outcome(f.read(&mut buf), |k| {
                    buf.truncate(k);
                    Outcome::Bytes(buf)
                })
            }
            Step::Write(b) => outcome(f.write(b), |k| Outcome::N(k as u64)),
            Step::Seek(to) => outcome(f.seek(*to), Outcome::N),
            Step::Position => outcome(f.stream_position(), Outcome::N),
            Step::SetLen(n) => outcome(set_len(*n), |()| Outcome::N(0)),
            Step::ReadToEnd => {
                let mut v = Vec::new();
                outcome(f.read_to_end(&mut v), |_| Outcome::Bytes(v))
            }
        })
        .collect()
}

#[test]
fn read_write_seek_sequences_match_std_files() {
    for place in PLACES {
        for seed in 0..12u64 {
            let steps = workload(seed, 150);
            let model_path = TempPath::new("model");
            let mut model = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&model_path)
                .unwrap();
            let model_file = model.try_clone().unwrap();
            let expected = apply(&mut model, &|n| model_file.set_len(n), &steps);
            let want = std::fs::read(&model_path).unwrap();

            let path = TempPath::new("ours");
            let p = path.0.clone();
            let s = steps.clone();
            let (got, by_ref) = run_in(place, move || {
                // `File` itself (set_len through a second handle, as the model uses a clone)…
                let mut f = File::create(&p).unwrap();
                let other = OpenOptions::new().write(true).open(&p).unwrap();
                let got = apply(&mut f, &|n| other.set_len(n), &s);
                // …and `&File`, on a fresh file, the same steps.
                let q = p.with_extension("ref");
                let g = File::create(&q).unwrap();
                let by_ref = apply(&mut &g, &|n| g.set_len(n), &s);
                let by_ref_data = std::fs::read(&q).unwrap();
                std::fs::remove_file(&q).unwrap();
                (got, (by_ref, by_ref_data))
            });
            assert_eq!(got, expected, "{place:?}, seed {seed}: results");
            assert_eq!(
                std::fs::read(&path).unwrap(),
                want,
                "{place:?}, seed {seed}: contents"
            );
            assert_eq!(by_ref.0, expected, "{place:?}, seed {seed}: &File results");
            assert_eq!(by_ref.1, want, "{place:?}, seed {seed}: &File contents");
        }
    }
}

#[test]
fn append_mode_writes_at_the_end_and_leaves_the_position_there() {
    for place in PLACES {
        let path = TempPath::new("append");
        std::fs::write(&path, b"head:").unwrap();
        let p = path.0.clone();
        let (positions, read_back) = run_in(place, move || {
            let mut f = OpenOptions::new().read(true).append(true).open(&p).unwrap();
            let mut positions = vec![f.stream_position().unwrap()];
            f.write_all(b"one").unwrap();
            positions.push(f.stream_position().unwrap());
            f.seek(SeekFrom::Start(0)).unwrap();
            f.write_all(b",two").unwrap(); // still at the end
            positions.push(f.stream_position().unwrap());
            f.write_all_at(b"!", 0).unwrap(); // positional writes append too (Linux)
            f.seek(SeekFrom::Start(0)).unwrap();
            let mut s = String::new();
            f.read_to_string(&mut s).unwrap();
            positions.push(f.stream_position().unwrap());
            (positions, s)
        });
        assert_eq!(positions, [0, 8, 12, 13], "{place:?}");
        assert_eq!(read_back, "head:one,two!", "{place:?}");
    }
}

#[test]
fn open_options_create_new_truncate_and_create() {
    for place in PLACES {
        let path = TempPath::new("options");
        let p = path.0.clone();
        let kinds = run_in(place, move || {
            let mut kinds = Vec::new();
            // create_new on a missing file creates it.
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&p)
                .unwrap();
            f.write_all(b"0123456789").unwrap();
            drop(f);
            // …and on an existing one fails, whatever `create`/`truncate` say.
            let again = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .create_new(true)
                .open(&p);
            kinds.push(again.unwrap_err().kind());
            assert_eq!(std::fs::read(&p).unwrap(), b"0123456789", "untouched");
            // Without truncate the data stays; writes start at 0.
            let mut f = OpenOptions::new().write(true).open(&p).unwrap();
            f.write_all(b"ab").unwrap();
            drop(f);
            assert_eq!(std::fs::read(&p).unwrap(), b"ab23456789");
            // truncate empties it.
            let f = OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&p)
                .unwrap();
            assert_eq!(f.len().unwrap(), 0);
            drop(f);
            // A missing file without create: NotFound; with create: made.
            let q = p.with_extension("new");
            kinds.push(OpenOptions::new().write(true).open(&q).unwrap_err().kind());
            let f = OpenOptions::new()
                .write(true)
                .create(true)
                .open(&q)
                .unwrap();
            assert_eq!(f.len().unwrap(), 0);
            std::fs::remove_file(&q).unwrap();
            // read-only refuses writes (EBADF), write-only refuses reads.
            let mut r = OpenOptions::new().read(true).open(&p).unwrap();
            assert_eq!(r.write(b"x").unwrap_err().raw_os_error(), Some(libc::EBADF));
            let mut w = OpenOptions::new().write(true).open(&p).unwrap();
            let mut buf = [0; 4];
            assert_eq!(
                w.read(&mut buf).unwrap_err().raw_os_error(),
                Some(libc::EBADF)
            );
            kinds
        });
        assert_eq!(
            kinds,
            [ErrorKind::AlreadyExists, ErrorKind::NotFound],
            "{place:?}"
        );
    }
}

#[test]
fn open_options_refuse_what_std_refuses_before_opening() {
    let path = TempPath::new("refused");
    std::fs::write(&path, b"keep").unwrap();
    let cases: [(&str, OpenOptions); 6] = [
        ("no access", OpenOptions::new()),
        ("create without write", {
            let mut o = OpenOptions::new();
            o.read(true).create(true);
            o
        }),
        ("truncate without write", {
            let mut o = OpenOptions::new();
            o.read(true).truncate(true);
            o
        }),
        ("create_new without write", {
            let mut o = OpenOptions::new();
            o.read(true).create_new(true);
            o
        }),
        ("append with truncate", {
            let mut o = OpenOptions::new();
            o.append(true).truncate(true);
            o
        }),
        ("NUL in the path", OpenOptions::new().read(true).clone()),
    ];
    for place in PLACES {
        for (what, o) in cases.clone() {
            let p = if what == "NUL in the path" {
                PathBuf::from("bad\0name")
            } else {
                path.0.clone()
            };
            let kind = run_in(place, move || o.open(&p).unwrap_err().kind());
            assert_eq!(kind, ErrorKind::InvalidInput, "{place:?}: {what}");
        }
    }
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"keep",
        "nothing was truncated"
    );
    // std refuses the same ones.
    for (what, _) in &cases[..5] {
        let mut o = std::fs::OpenOptions::new();
        match *what {
            "no access" => &mut o,
            "create without write" => o.read(true).create(true),
            "truncate without write" => o.read(true).truncate(true),
            "create_new without write" => o.read(true).create_new(true),
            _ => o.append(true).truncate(true),
        };
        assert_eq!(
            o.open(&path).unwrap_err().kind(),
            ErrorKind::InvalidInput,
            "std: {what}"
        );
    }
}

#[test]
fn open_options_mode_and_custom_flags() {
    for place in PLACES {
        let path = TempPath::new("mode");
        let link = TempPath::new("link");
        let (p, l) = (path.0.clone(), link.0.clone());
        let (mode, nofollow) = run_in(place, move || {
            let f = OpenOptions::new()
                .write(true)
                .create(true)
                .mode(0o600)
                .open(&p)
                .unwrap();
            let mode = f.metadata().unwrap().permissions().mode() & 0o777;
            std::os::unix::fs::symlink(&p, &l).unwrap();
            // O_NOFOLLOW on a symlink: ELOOP. The access bits of custom_flags are ignored.
            let r = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_WRONLY)
                .open(&l);
            (mode, r.unwrap_err().raw_os_error())
        });
        assert_eq!(mode, 0o600, "{place:?}");
        assert_eq!(nofollow, Some(libc::ELOOP), "{place:?}");
    }
}

#[test]
fn metadata_and_set_permissions() {
    for place in PLACES {
        let path = TempPath::new("meta");
        let p = path.0.clone();
        let (len, is_file, mode) = run_in(place, move || {
            let f = File::create(&p).unwrap();
            f.write_all_at(&[7; 1234], 0).unwrap();
            f.set_permissions(std::fs::Permissions::from_mode(0o640))
                .unwrap();
            let m = f.metadata().unwrap();
            (m.len(), m.is_file(), m.permissions().mode() & 0o777)
        });
        assert_eq!((len, is_file, mode), (1234, true, 0o640), "{place:?}");
        let std_meta = std::fs::metadata(&path).unwrap();
        assert_eq!(std_meta.permissions().mode() & 0o777, 0o640);
    }
}

#[test]
fn seeks_before_the_start_or_past_i64_max_fail_and_leave_the_position() {
    for place in PLACES {
        let path = TempPath::new("seek");
        std::fs::write(&path, b"0123456789").unwrap();
        let p = path.0.clone();
        let r = run_in(place, move || {
            let mut f = File::open(&p).unwrap();
            let mut out = vec![f.seek(SeekFrom::Start(4)).map_err(|e| e.kind())];
            out.push(f.seek(SeekFrom::Current(-5)).map_err(|e| e.kind()));
            out.push(f.seek(SeekFrom::End(-11)).map_err(|e| e.kind()));
            out.push(f.stream_position().map_err(|e| e.kind())); // unchanged
            out.push(f.seek(SeekFrom::Start(u64::MAX)).map_err(|e| e.kind()));
            out.push(
                f.seek(SeekFrom::Start(i64::MAX as u64))
                    .map_err(|e| e.kind()),
            );
            out.push(f.seek(SeekFrom::Current(1)).map_err(|e| e.kind()));
            out.push(f.seek(SeekFrom::End(5)).map_err(|e| e.kind()));
            let mut b = [0; 4];
            out.push(f.read(&mut b).map(|n| n as u64).map_err(|e| e.kind()));
            out.push(f.seek(SeekFrom::End(-3)).map_err(|e| e.kind()));
            out.push(f.read(&mut b).map(|n| n as u64).map_err(|e| e.kind()));
            (out, b)
        });
        let inval = Err(ErrorKind::InvalidInput);
        assert_eq!(
            r.0,
            [
                Ok(4),
                inval,
                inval,
                Ok(4),
                inval,
                Ok(i64::MAX as u64),
                inval,
                Ok(15),
                Ok(0),
                Ok(7),
                Ok(3)
            ],
            "{place:?}"
        );
        assert_eq!(&r.1[..3], b"789");
    }
}

#[test]
fn from_std_starts_at_the_std_file_s_position() {
    let path = TempPath::new("from-std");
    std::fs::write(&path, b"0123456789").unwrap();
    let mut s = std::fs::File::open(&path).unwrap();
    s.seek(SeekFrom::Start(6)).unwrap();
    let mut f = File::from_std(s);
    let mut rest = String::new();
    f.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "6789");
    assert_eq!(File::open(&path).unwrap().stream_position().unwrap(), 0);
}

#[test]
fn positional_calls_neither_use_nor_move_the_cursor() {
    let path = TempPath::new("positional");
    let p = path.0.clone();
    let r = EventLoop::new().block_on(move || {
        let mut f = File::create(&p).unwrap();
        f.write_all(b"abc").unwrap();
        f.write_all_at(b"XYZW", 10).unwrap();
        let mut b = [0; 2];
        f.read_exact_at(&mut b, 0).unwrap();
        let pos = f.stream_position().unwrap();
        f.write_all(b"d").unwrap();
        (pos, f.len().unwrap(), b)
    });
    assert_eq!(r, (3, 14, *b"ab"));
    assert_eq!(&std::fs::read(&path).unwrap()[..4], b"abcd");
}

#[test]
fn seek_from_end_of_a_block_device_is_from_its_size_as_std() {
    // `fstat` gives a block device the size 0: the end must come from the device. Needs a
    // readable block device with a size (root in a VM, say); elsewhere there is nothing to
    // compare, and the test says so.
    let devices = std::fs::read_to_string("/proc/partitions").unwrap_or_default();
    let found = devices.lines().skip(2).find_map(|l| {
        let name = l.split_whitespace().nth(3)?;
        let path = format!("/dev/{name}");
        let mut std_file = std::fs::File::open(&path).ok()?;
        let size = std_file.seek(SeekFrom::End(0)).ok().filter(|&s| s > 0)?;
        Some((path, size))
    });
    let Some((path, size)) = found else {
        eprintln!("no readable block device with a size: nothing to compare");
        return;
    };
    let f = File::from_std(std::fs::File::open(&path).unwrap());
    assert_eq!((&f).seek(SeekFrom::End(0)).unwrap(), size);
    assert_eq!((&f).seek(SeekFrom::End(-512)).unwrap(), size - 512);
    let mut buf = [0u8; 512];
    assert_eq!((&f).read(&mut buf).unwrap(), 512);
    assert_eq!((&f).read(&mut buf).unwrap(), 0);
}
