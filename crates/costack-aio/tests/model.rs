//! A model test across the layers (the resume contract, `costack::park`): random bounded
//! programs of event-loop tasks that take `costack::sync` locks across waits, run nested
//! generators reading a socketpair that another thread feeds, await futures completed by other
//! threads and by a tokio runtime that hosts coroutines of its own (`bridge::as_future`, with a
//! lock of its own), yield both ways, sleep, panic on purpose, and cancel each other.
//!
//! The checker: every program ends within a time bound (no lost wake-up, no livelock); every
//! task that was neither cancelled nor told to panic returns exactly the value its operations
//! add up to; a task told to panic reports exactly its own message; a cancelled task is
//! reported cancelled unless it finished first; and each lock's counter equals the number of
//! increments completed under it (no two holders at once, no lost update).

use costack::bridge::{as_future, await_future};
use costack::sync::CoMutex;
use costack::{Generator, GeneratorState};
use costack_aio::net::UnixStream;
use costack_aio::{sleep, EventLoop, JoinError, JoinHandle};
use proptest::prelude::*;
use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

#[path = "common/threads.rs"]
mod threads;
use threads::FromThread;

/// What one task does, step by step.
#[derive(Debug, Clone)]
enum Op {
    /// Read a lock's counter, wait while holding the lock, write it back plus one.
    Lock { lock: usize, hold: Hold },
    /// Pull `bytes` bytes through a generator nested in the task, which reads them from the
    /// task's socket (fed by another thread); adds them up.
    Gen { bytes: u8 },
    /// Await a future that another thread completes after `ms` ms with `value`.
    Await { ms: u8, value: u8 },
    /// Ask the tokio world for `value + 1` and await the answer.
    Tokio { value: u8 },
    /// Sleep on the loop.
    Sleep { ms: u8 },
    /// `costack::yield_now()` (true) or `costack_aio::yield_now()` (false).
    Yield { core: bool },
}

/// How a task waits while it holds a lock.
#[derive(Debug, Clone)]
enum Hold {
    Yield,
    Sleep(u8),
    Await(u8),
}

#[derive(Debug, Clone)]
struct Spec {
    ops: Vec<Op>,
    panic_at_end: bool,
    /// Cancel this task after the canceller has let the loop run this many turns.
    cancel_after: Option<u8>,
}

fn op() -> impl Strategy<Value = Op> {
    let hold = prop_oneof![
        Just(Hold::Yield),
        (0u8..3).prop_map(Hold::Sleep),
        (0u8..3).prop_map(Hold::Await),
    ];
    prop_oneof![
        ((0usize..2), hold).prop_map(|(lock, hold)| Op::Lock { lock, hold }),
        (1u8..5).prop_map(|bytes| Op::Gen { bytes }),
        ((0u8..3), any::<u8>()).prop_map(|(ms, value)| Op::Await { ms, value }),
        any::<u8>().prop_map(|value| Op::Tokio { value }),
        (0u8..3).prop_map(|ms| Op::Sleep { ms }),
        any::<bool>().prop_map(|core| Op::Yield { core }),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop::collection::vec(op(), 0..7),
        prop::bool::weighted(0.15),
        prop::option::weighted(0.2, 0u8..6),
    )
        .prop_map(|(ops, panic_at_end, cancel_after)| Spec {
            ops,
            panic_at_end,
            cancel_after,
        })
}

/// A request to the tokio world: a value, and where the answer goes.
type Request = (u32, tokio::sync::oneshot::Sender<u32>);

/// The tokio world: a current-thread runtime hosting one coroutine per request
/// (`as_future`), each of which takes the world's own `CoMutex` across an await.
struct TokioWorld {
    tx: Option<tokio::sync::mpsc::UnboundedSender<Request>>,
    thread: Option<std::thread::JoinHandle<(u32, u32)>>,
}

impl TokioWorld {
    fn start() -> TokioWorld {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Request>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                let counter = Rc::new(CoMutex::new(0u32));
                let done = Rc::new(Cell::new(0u32));
                let mut handles = Vec::new();
                while let Some((value, reply)) = rx.recv().await {
                    let (c, d) = (counter.clone(), done.clone());
                    handles.push(tokio::task::spawn_local(as_future(move || {
                        let mut g = c.lock();
                        let seen = *g;
                        await_future(tokio::task::yield_now());
                        *g = seen + 1;
                        d.set(d.get() + 1);
                        drop(g);
                        let _ = reply.send(value + 1);
                    })));
                }
                for h in handles {
                    h.await.unwrap();
                }
                let total = *counter.try_lock().unwrap();
                (total, done.get())
            })
        });
        TokioWorld {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    fn ask(&self, value: u32) -> tokio::sync::oneshot::Receiver<u32> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx.as_ref().unwrap().send((value, tx)).unwrap();
        rx
    }

    /// Stops the world; returns its lock's counter and the increments it completed.
    fn finish(mut self) -> (u32, u32) {
        drop(self.tx.take());
        self.thread.take().unwrap().join().unwrap()
    }
}

/// The lock counters of the loop world: the value under the lock, and the increments that
/// completed (counted outside the lock's data).
struct Counter {
    value: CoMutex<u32>,
    completed: Cell<u32>,
}

/// What a task's ops add up to, if it runs them all.
fn expected(spec: &Spec, feed: &[u8]) -> u32 {
    let mut sum = 0u32;
    let mut fed = 0usize;
    for op in &spec.ops {
        match op {
            Op::Gen { bytes } => {
                for _ in 0..*bytes {
                    sum += u32::from(feed[fed]);
                    fed += 1;
                }
            }
            Op::Await { value, .. } => sum += u32::from(*value),
            Op::Tokio { value } => sum += u32::from(*value) + 1,
            _ => {}
        }
    }
    sum
}

fn bytes_needed(spec: &Spec) -> usize {
    spec.ops
        .iter()
        .map(|op| match op {
            Op::Gen { bytes } => usize::from(*bytes),
            _ => 0,
        })
        .sum()
}

/// Runs one task's ops.
fn run_task(
    i: usize,
    spec: Spec,
    counters: Rc<Vec<Counter>>,
    sock: Option<Rc<RefCell<UnixStream>>>,
    tokio: Rc<TokioWorld>,
) -> u32 {
    let mut sum = 0u32;
    for op in spec.ops {
        match op {
            Op::Lock { lock, hold } => {
                let c = &counters[lock];
                let mut g = c.value.lock();
                let seen = *g;
                match hold {
                    Hold::Yield => costack_aio::yield_now(),
                    Hold::Sleep(ms) => sleep(Duration::from_millis(u64::from(ms))),
                    Hold::Await(ms) => {
                        await_future(FromThread::new(Duration::from_millis(u64::from(ms)), 0));
                    }
                }
                *g = seen + 1;
                c.completed.set(c.completed.get() + 1);
            }
            Op::Gen { bytes } => {
                let s = sock.clone().expect("a socket for a task that reads");
                let mut g = Generator::<(), u8, ()>::new(move |y, ()| {
                    let mut b = [0u8; 1];
                    for _ in 0..bytes {
                        s.borrow_mut().read_exact(&mut b).unwrap();
                        y.suspend(b[0]);
                    }
                });
                let mut steps = 0;
                loop {
                    steps += 1;
                    assert!(steps <= 300, "generator did not complete");
                    match g.resume(()) {
                        GeneratorState::Yielded(b) => sum += u32::from(b),
                        GeneratorState::Complete(()) => break,
                    }
                }
            }
            Op::Await { ms, value } => {
                sum += await_future(FromThread::new(
                    Duration::from_millis(u64::from(ms)),
                    u32::from(value),
                ))
            }
            Op::Tokio { value } => {
                let rx = tokio.ask(u32::from(value));
                sum += await_future(rx).expect("the tokio world answers");
            }
            Op::Sleep { ms } => sleep(Duration::from_millis(u64::from(ms))),
            Op::Yield { core: true } => costack::yield_now(),
            Op::Yield { core: false } => costack_aio::yield_now(),
        }
    }
    if spec.panic_at_end {
        panic!("planned panic {i}");
    }
    sum
}

/// The outcome of one task, as the checker sees it.
#[derive(Debug, PartialEq)]
enum Outcome {
    Value(u32),
    Panicked(String),
    Cancelled,
}

/// What a program left: each task's outcome, each loop lock's (value, completed increments),
/// and the tokio world's.
type Result3 = (Vec<Outcome>, Vec<(u32, u32)>, (u32, u32));

fn run_program(specs: Vec<Spec>) -> Result3 {
    let lp = EventLoop::new();
    let tokio = Rc::new(TokioWorld::start());
    let counters = Rc::new(vec![
        Counter {
            value: CoMutex::new(0),
            completed: Cell::new(0),
        },
        Counter {
            value: CoMutex::new(0),
            completed: Cell::new(0),
        },
    ]);
    let mut feeders = Vec::new();
    let mut handles: Vec<JoinHandle<u32>> = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let need = bytes_needed(spec);
        let sock = if need > 0 {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
            let feed: Vec<u8> = (0..need).map(|k| (i * 31 + k * 7) as u8).collect();
            feeders.push(std::thread::spawn(move || {
                let mut theirs = theirs;
                for chunk in feed.chunks(2) {
                    if theirs.write_all(chunk).is_err() {
                        return; // the reader was cancelled
                    }
                    std::thread::sleep(Duration::from_micros(300));
                }
            }));
            Some(Rc::new(RefCell::new(UnixStream::from_std(ours).unwrap())))
        } else {
            None
        };
        let (s, c, t) = (spec.clone(), counters.clone(), tokio.clone());
        handles.push(lp.spawn(move || run_task(i, s, c, sock, t)));
    }
    let handles = Rc::new(RefCell::new(
        handles.into_iter().map(Some).collect::<Vec<_>>(),
    ));
    // The canceller: lets the loop run a few turns, then cancels, as the specs say.
    let mut cancels: Vec<(u8, usize)> = specs
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.cancel_after.map(|t| (t, i)))
        .collect();
    cancels.sort();
    let cancelled = Rc::new(RefCell::new(Vec::new()));
    let (h2, c2) = (handles.clone(), cancelled.clone());
    let outcomes = lp.block_on(move || {
        let mut turn = 0u8;
        for (at, i) in cancels {
            while turn < at {
                costack_aio::yield_now();
                turn += 1;
            }
            let h = h2.borrow_mut()[i].take().unwrap();
            let done = h.is_finished();
            c2.borrow_mut().push((i, done));
            if done {
                h2.borrow_mut()[i] = Some(h);
            } else {
                h.cancel();
            }
        }
        let mut outcomes = Vec::new();
        for h in h2.borrow_mut().iter_mut() {
            outcomes.push(match h.take() {
                None => Outcome::Cancelled,
                Some(h) => match h.try_join() {
                    Ok(v) => Outcome::Value(v),
                    Err(JoinError::Panicked(p)) => Outcome::Panicked(
                        p.downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default(),
                    ),
                    Err(JoinError::Cancelled) => Outcome::Cancelled,
                },
            });
        }
        outcomes
    });
    let locks = counters
        .iter()
        .map(|c| (*c.value.try_lock().unwrap(), c.completed.get()))
        .collect();
    drop(lp);
    for f in feeders {
        f.join().unwrap();
    }
    let tokio = Rc::try_unwrap(tokio)
        .ok()
        .expect("the tokio world is no longer shared");
    (outcomes, locks, tokio.finish())
}

fn check(specs: Vec<Spec>) -> Result<(), TestCaseError> {
    let feeds: Vec<Vec<u8>> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (0..bytes_needed(s))
                .map(|k| (i * 31 + k * 7) as u8)
                .collect()
        })
        .collect();
    let specs2 = specs.clone();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = catch_unwind(AssertUnwindSafe(|| run_program(specs2)));
        let _ = tx.send(r.map_err(|p| {
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        }));
    });
    let (outcomes, locks, (tokio_value, tokio_done)) =
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(r)) => r,
            Ok(Err(msg)) => return Err(TestCaseError::fail(format!("unplanned panic: {msg}"))),
            Err(_) => return Err(TestCaseError::fail("the program did not end within 10 s")),
        };
    for (i, (spec, out)) in specs.iter().zip(&outcomes).enumerate() {
        match out {
            Outcome::Cancelled => prop_assert!(
                spec.cancel_after.is_some(),
                "task {i} reported cancelled but nobody cancelled it"
            ),
            Outcome::Panicked(msg) => {
                prop_assert!(spec.panic_at_end, "task {i} panicked unplanned: {msg}");
                prop_assert_eq!(msg, &format!("planned panic {i}"));
            }
            Outcome::Value(v) => {
                prop_assert!(!spec.panic_at_end, "task {i} should have panicked");
                prop_assert_eq!(*v, expected(spec, &feeds[i]), "task {}", i);
            }
        }
    }
    for (k, (value, completed)) in locks.iter().enumerate() {
        prop_assert_eq!(value, completed, "lock {}: a lost update or two holders", k);
    }
    prop_assert_eq!(tokio_value, tokio_done, "the tokio world's lock");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        max_shrink_iters: 8,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_programs_across_the_layers(specs in prop::collection::vec(spec(), 1..6)) {
        check(specs)?;
    }
}

#[test]
fn a_fixed_busy_program() {
    // Every kind of op in every task, two cancelled, one panicking: a regression anchor that
    // does not depend on the random generator.
    let all = vec![
        Op::Lock {
            lock: 0,
            hold: Hold::Await(1),
        },
        Op::Gen { bytes: 3 },
        Op::Await { ms: 1, value: 9 },
        Op::Tokio { value: 4 },
        Op::Lock {
            lock: 1,
            hold: Hold::Sleep(1),
        },
        Op::Yield { core: true },
        Op::Lock {
            lock: 0,
            hold: Hold::Yield,
        },
        Op::Sleep { ms: 1 },
        Op::Yield { core: false },
    ];
    let specs = (0..5)
        .map(|i| Spec {
            ops: all.clone(),
            panic_at_end: i == 2,
            cancel_after: (i % 2 == 1).then_some(i as u8),
        })
        .collect();
    check(specs).unwrap();
}
