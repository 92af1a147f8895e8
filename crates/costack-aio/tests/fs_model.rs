//! Data integrity: many tasks reading and writing one file at random offsets, overlapping and
//! not, checked against an in-memory model. Runs on the loop's default backend (CI runs it
//! again with `COSTACK_AIO_IO_URING=0`).
//!
//! A workload is a list of *rounds*; every request of a round runs in its own task, all at
//! once. Concurrent requests have no order, so the model checks what can be known:
//!
//! * every byte a read returns is the byte before the round, or the byte of a write of the
//!   round that covers it (or zero: a hole a concurrent write opened);
//! * a read's count lies between what the file held before the round and after it;
//! * after the round, a byte covered by no write is unchanged, a byte covered by exactly one
//!   write is that write's, a byte covered by several is one of theirs; the length is the
//!   largest end.
//!
//! Then the model takes the file's actual contents, and the next round starts.

use costack_aio::{EventLoop, File};
use proptest::prelude::*;
use std::io::{IoSlice, IoSliceMut};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Offsets fall in this span; lengths go up to `MAX_LEN`, so files grow a little past it.
const SPAN: u64 = 256 * 1024;
const MAX_LEN: usize = 20_000;

#[derive(Debug, Clone, Copy)]
enum How {
    Plain,
    Exact,
    Vectored,
    Owned,
}

#[derive(Debug, Clone)]
enum Req {
    Write {
        off: u64,
        len: usize,
        seed: u64,
        how: How,
    },
    Read {
        off: u64,
        len: usize,
        how: How,
    },
}

fn how() -> impl Strategy<Value = How> {
    prop_oneof![
        Just(How::Plain),
        Just(How::Exact),
        Just(How::Vectored),
        Just(How::Owned)
    ]
}

fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..SPAN,
        // Page boundaries and their neighbours, where request splitting would show.
        (0..SPAN / 4096, -1i64..=1).prop_map(|(p, d)| (p as i64 * 4096 + d).max(0) as u64),
    ]
}

fn length() -> impl Strategy<Value = usize> {
    prop_oneof![1..MAX_LEN, Just(4096), Just(1), Just(0)]
}

fn req() -> impl Strategy<Value = Req> {
    prop_oneof![
        (offset(), length(), any::<u64>(), how()).prop_map(|(off, len, seed, how)| Req::Write {
            off,
            len,
            seed,
            how
        }),
        (offset(), length(), how()).prop_map(|(off, len, how)| Req::Read { off, len, how }),
    ]
}

/// Bytes that are, with overwhelming likelihood, different from any other write's.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// What a task reports back.
enum Outcome {
    Wrote,
    Read {
        off: u64,
        data: Vec<u8>,
        len: usize,
        exact: bool,
    },
    ShortExact {
        off: u64,
        len: usize,
    },
}

fn run_req(f: &File, r: Req) -> Outcome {
    match r {
        Req::Write {
            off,
            len,
            seed,
            how,
        } => {
            let data = pattern(seed, len);
            match how {
                How::Plain | How::Exact => f.write_all_at(&data, off).unwrap(),
                How::Vectored => {
                    let (a, rest) = data.split_at(len / 3);
                    let (b, c) = rest.split_at(rest.len() / 2);
                    let bufs = [IoSlice::new(a), IoSlice::new(b), IoSlice::new(c)];
                    assert_eq!(f.write_vectored_at(&bufs, off).unwrap(), len);
                }
                How::Owned => {
                    let (n, back) = f.write_at_owned(data.clone(), off);
                    assert_eq!(n.unwrap(), len);
                    assert_eq!(back, data, "the Vec comes back unchanged");
                }
            }
            Outcome::Wrote
        }
        Req::Read { off, len, how } => match how {
            How::Plain => {
                let mut buf = vec![0u8; len];
                let n = f.read_at(&mut buf, off).unwrap();
                buf.truncate(n);
                Outcome::Read {
                    off,
                    data: buf,
                    len,
                    exact: false,
                }
            }
            How::Exact => {
                let mut buf = vec![0u8; len];
                match f.read_exact_at(&mut buf, off) {
                    Ok(()) => Outcome::Read {
                        off,
                        data: buf,
                        len,
                        exact: true,
                    },
                    Err(e) => {
                        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
                        Outcome::ShortExact { off, len }
                    }
                }
            }
            How::Vectored => {
                let mut a = vec![0u8; len / 2];
                let mut b = vec![0u8; len - len / 2];
                let n = f
                    .read_vectored_at(&mut [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)], off)
                    .unwrap();
                a.extend_from_slice(&b);
                a.truncate(n);
                Outcome::Read {
                    off,
                    data: a,
                    len,
                    exact: false,
                }
            }
            How::Owned => {
                let (n, mut buf) = f.read_at_owned(vec![0u8; len], off);
                buf.truncate(n.unwrap());
                Outcome::Read {
                    off,
                    data: buf,
                    len,
                    exact: false,
                }
            }
        },
    }
}

/// The writes of a round that cover byte `i`: their data there.
fn writes_at<'a>(writes: &'a [(u64, Vec<u8>)], i: u64) -> impl Iterator<Item = u8> + 'a {
    writes
        .iter()
        .filter(move |(off, d)| i >= *off && i < off + d.len() as u64)
        .map(move |(off, d)| d[(i - off) as usize])
}

fn check_round(before: &[u8], writes: &[(u64, Vec<u8>)], outcomes: &[Outcome], after: &[u8]) {
    let len_after_expected = writes
        .iter()
        .filter(|(_, d)| !d.is_empty())
        .map(|(off, d)| off + d.len() as u64)
        .fold(before.len() as u64, u64::max);
    assert_eq!(
        after.len() as u64,
        len_after_expected,
        "file length after the round"
    );
    let old = |i: u64| before.get(i as usize).copied().unwrap_or(0);
    for (i, &b) in after.iter().enumerate() {
        let i = i as u64;
        let mut cands = writes_at(writes, i).peekable();
        if cands.peek().is_none() {
            assert_eq!(b, old(i), "byte {i}: no write covered it, yet it changed");
        } else {
            assert!(
                cands.any(|c| c == b),
                "byte {i}: {b:#x} is none of the covering writes' bytes"
            );
        }
    }
    for o in outcomes {
        match o {
            Outcome::Wrote => {}
            Outcome::Read {
                off,
                data,
                len,
                exact,
            } => {
                let n_before = (before.len() as u64).saturating_sub(*off).min(*len as u64);
                let n_after = (after.len() as u64).saturating_sub(*off).min(*len as u64);
                let n = data.len() as u64;
                if *exact {
                    assert_eq!(n, *len as u64);
                }
                assert!(
                    n_before <= n && n <= n_after.max(n_before),
                    "read at {off} of {len}: {n} bytes, expected {n_before}..={n_after}"
                );
                for (k, &b) in data.iter().enumerate() {
                    let i = off + k as u64;
                    let ok = b == old(i)
                        || writes_at(writes, i).any(|c| c == b)
                        || (i >= before.len() as u64 && b == 0);
                    assert!(ok, "read at {off}: byte {i} = {b:#x} was never there");
                }
            }
            Outcome::ShortExact { off, len } => {
                let end = off + *len as u64;
                assert!(
                    end > before.len() as u64,
                    "read_exact at {off} of {len} failed although the file had {} bytes",
                    before.len()
                );
            }
        }
    }
}

fn run_workload(rounds: Vec<Vec<Req>>) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "costack-model-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _remove = Remove(path.clone());
    let p2 = path.clone();
    let lp = EventLoop::new();
    lp.block_on(move || {
        let f = Rc::new(File::create(&p2).unwrap());
        let mut model: Vec<u8> = Vec::new();
        for round in rounds {
            let writes: Vec<(u64, Vec<u8>)> = round
                .iter()
                .filter_map(|r| match r {
                    Req::Write { off, len, seed, .. } => Some((*off, pattern(*seed, *len))),
                    Req::Read { .. } => None,
                })
                .collect();
            let tasks: Vec<_> = round
                .into_iter()
                .map(|r| {
                    let f = f.clone();
                    costack_aio::spawn(move || run_req(&f, r))
                })
                .collect();
            let outcomes: Vec<Outcome> = tasks.into_iter().map(|t| t.join()).collect();
            let len = f.len().unwrap() as usize;
            let mut after = vec![0u8; len];
            f.read_exact_at(&mut after, 0).unwrap();
            check_round(&model, &writes, &outcomes, &after);
            model = after;
        }
        // A fresh descriptor sees the same bytes.
        drop(f);
        let g = File::open(&p2).unwrap();
        let mut all = vec![0u8; model.len()];
        g.read_exact_at(&mut all, 0).unwrap();
        assert!(all == model, "contents through a new descriptor");
        assert_eq!(g.len().unwrap() as usize, model.len());
    });
    drop(lp);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn concurrent_requests_agree_with_the_model(
        rounds in prop::collection::vec(prop::collection::vec(req(), 1..16), 1..6)
    ) {
        run_workload(rounds);
    }
}

/// A fixed, larger workload: 32 tasks, 30 rounds, random offsets over 1 MiB, writes of
/// different tasks overlapping freely.
#[test]
fn thirty_two_tasks_thirty_rounds() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let hows = [How::Plain, How::Exact, How::Vectored, How::Owned];
    let rounds = (0..30)
        .map(|_| {
            (0..32)
                .map(|_| {
                    let off = next() % (1 << 20);
                    let len = (next() % 16_384) as usize;
                    let how = hows[(next() % 4) as usize];
                    if next() % 2 == 0 {
                        Req::Write {
                            off,
                            len,
                            seed: next(),
                            how,
                        }
                    } else {
                        Req::Read { off, len, how }
                    }
                })
                .collect()
        })
        .collect();
    run_workload(rounds);
}
