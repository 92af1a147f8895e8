//! Regression tests for the seams between the layers (the resume-contract issue): each of these
//! failed — with undefined behaviour, a lost wake-up or a hang — before the layers shared one
//! resume contract (`costack::park`). They use only APIs that existed before it, so that they
//! can be run against older code too. Every loop that drives coroutines or futures is bounded.

use costack::bridge::{as_future, await_future};
use costack::sync::CoMutex;
use costack::{current, yield_now, CoHandle, Coroutine, Generator, GeneratorState, Status};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

#[path = "common/panics.rs"]
mod panics;
use panics::message_string;

#[path = "common/tokio_local.rs"]
mod tokio_local;
use tokio_local::block_on_local;

/// Counts the drops of its values.
#[derive(Debug)]
struct Counted(Rc<Cell<u32>>, u32);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

impl PartialEq for Counted {
    fn eq(&self, other: &Self) -> bool {
        self.1 == other.1
    }
}

// ---------------------------------------------------------------------------------------------
// 1. The generator's transfer slot

#[test]
fn generator_slot_survives_a_resume_unwound_by_a_woken_coroutines_panic() {
    // (a) The body wakes a coroutine that panics in the deferred wake-up loop, then suspends
    // with a value: `resume` unwinds with that panic while the generator stays suspended. An
    // entry through a handle taken inside the body must not find `resume`'s dead slot.
    let drops = Rc::new(Cell::new(0));
    let handle: Rc<RefCell<Option<CoHandle>>> = Rc::default();
    let bomb = Coroutine::new(|| {
        yield_now();
        panic!("bomb went off");
    });
    let _ = bomb.enter();
    let bomb_handle = bomb.handle();
    let (d, h) = (drops.clone(), handle.clone());
    let mut g = Generator::<u32, Counted, u32>::new(move |y, first| {
        *h.borrow_mut() = current();
        bomb_handle.wake(); // runs after the body suspends
        let next = y.suspend(Counted(d.clone(), first));
        let last = y.suspend(Counted(d, next));
        last + 1
    });
    let err = catch_unwind(AssertUnwindSafe(|| g.resume(1))).unwrap_err();
    assert_eq!(message_string(&*err), "bomb went off");
    // The value the body handed over was dropped with the unwound `resume`, exactly once.
    assert_eq!(drops.get(), 1);
    let h = handle.borrow_mut().take().unwrap();
    // A foreign entry: no slot is lent, so the body just waits on.
    assert!(matches!(h.enter(), Status::Yielded));
    assert_eq!(drops.get(), 1);
    // The next resume is the exchange the body waits for.
    match g.resume(5) {
        GeneratorState::Yielded(c) => assert_eq!(c.1, 5),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(drops.get(), 2);
    assert_eq!(g.resume(9), GeneratorState::Complete(10));
    assert_eq!(drops.get(), 2);
}

#[test]
fn resuming_a_generator_that_a_wake_up_already_queued_leaves_no_dangling_slot() {
    // (b) `resume` on a generator that a deferred wake-up has queued panics ("scheduled"); the
    // wake-up loop then enters the generator, which must not read the panicked `resume`'s slot
    // (reading it would take and drop the input a second time).
    let drops = Rc::new(Cell::new(0));
    let handle: Rc<RefCell<Option<CoHandle>>> = Rc::default();
    let h2 = handle.clone();
    let gen = Rc::new(RefCell::new(Generator::<Counted, u32, ()>::new(
        move |y, first| {
            *h2.borrow_mut() = current();
            let mut n = first.1;
            drop(first);
            loop {
                let input = y.suspend(n);
                n = input.1;
            }
        },
    )));
    let first = gen.borrow_mut().resume(Counted(drops.clone(), 1));
    assert_eq!(first, GeneratorState::Yielded(1));
    assert_eq!(drops.get(), 1);
    let (g, h, d) = (gen.clone(), handle.clone(), drops.clone());
    let waker = Coroutine::new(move || {
        h.borrow().as_ref().unwrap().wake(); // queued behind us
        let err = catch_unwind(AssertUnwindSafe(|| {
            g.borrow_mut().resume(Counted(d.clone(), 2))
        }))
        .unwrap_err();
        message_string(&*err)
    });
    let msg = waker.enter().finished().unwrap();
    assert!(msg.contains("scheduled"), "{msg}");
    // The rejected input was dropped once, by the unwound `resume`; the wake-up's entry took
    // nothing from its dead frame.
    assert_eq!(drops.get(), 2);
    assert_eq!(
        gen.borrow_mut().resume(Counted(drops.clone(), 3)),
        GeneratorState::Yielded(3)
    );
    assert_eq!(drops.get(), 3);
    // The body keeps the slot that holds a handle to itself: break the cycle.
    drop(handle.borrow_mut().take());
}

// ---------------------------------------------------------------------------------------------
// A small executor with bounded steps, to tell "completes" from "hangs" (a lost wake-up).

struct Flag {
    woken: AtomicBool,
    wakes: AtomicUsize,
    thread: std::thread::Thread,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        self.wakes.fetch_add(1, Ordering::SeqCst);
        self.thread.unpark();
    }
}

/// Polls `fut` each time it is woken (from any thread), at most `max_polls` times. Returns its
/// output, or `None` if it ran out of polls or went 5 s without a wake-up (nothing would ever
/// poll it again: a lost wake-up); and the number of polls.
fn run_bounded<F: Future>(fut: F, max_polls: usize) -> (Option<F::Output>, usize) {
    let flag = Arc::new(Flag {
        woken: AtomicBool::new(false),
        wakes: AtomicUsize::new(0),
        thread: std::thread::current(),
    });
    let mut fut = Box::pin(fut);
    for polls in 1..=max_polls {
        // Each poll from a different depth, over a scrubbed stack, with a waker made for that
        // poll on the stack (as tokio does): anything that kept a pointer into an earlier
        // poll's frame reads garbage rather than a lookalike.
        scrub_stack();
        if let Poll::Ready(v) = poll_at_depth(fut.as_mut(), &flag, polls % 3) {
            return (Some(v), polls);
        }
        let t0 = std::time::Instant::now();
        while !flag.woken.swap(false, Ordering::SeqCst) {
            if t0.elapsed() > Duration::from_secs(5) {
                return (None, polls);
            }
            std::thread::park_timeout(Duration::from_millis(10));
        }
    }
    (None, max_polls)
}

/// Overwrites 16 KiB of the stack below the caller.
#[inline(never)]
fn scrub_stack() {
    let mut junk = [0x5au8; 16 * 1024];
    std::hint::black_box(&mut junk);
}

/// Polls `fut` from `depth` extra frames down, each 512 bytes, with a waker of `flag` that
/// lives in this poll's frame.
#[inline(never)]
fn poll_at_depth<F: Future>(fut: Pin<&mut F>, flag: &Arc<Flag>, depth: usize) -> Poll<F::Output> {
    let pad = [depth as u8; 512];
    std::hint::black_box(&pad);
    if depth == 0 {
        let waker = Waker::from(flag.clone());
        fut.poll(&mut Context::from_waker(&waker))
    } else {
        poll_at_depth(fut, flag, depth - 1)
    }
}

// ---------------------------------------------------------------------------------------------
// 2. The bridge's waker when the inner future's poll itself suspends the coroutine

/// A future whose every poll first yields the coroutine it is polled in (from inside `poll`),
/// then — for its first `pending` polls — keeps a clone of the waker it was given and wakes it,
/// then is ready with the number of polls.
struct YieldsInsidePoll {
    polls: u32,
    pending: u32,
}

impl Future for YieldsInsidePoll {
    type Output = u32;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
        self.polls += 1;
        yield_now(); // the coroutine yields from inside `poll`
        if self.polls > self.pending {
            return Poll::Ready(self.polls);
        }
        let w = cx.waker().clone(); // must still be a live waker
        w.wake();
        Poll::Pending
    }
}

#[test]
fn a_future_that_yields_inside_poll_keeps_a_live_waker() {
    let (out, polls) = run_bounded(
        as_future(|| {
            await_future(YieldsInsidePoll {
                polls: 0,
                pending: 3,
            })
        }),
        100,
    );
    assert_eq!(out, Some(4), "completed after 4 inner polls");
    assert!(polls <= 20, "{polls} outer polls");
}

/// A future whose poll takes a `CoMutex` (waiting for it if another coroutine holds it), then
/// is ready with what it found under the lock.
struct LocksInsidePoll(Rc<CoMutex<u32>>);

impl Future for LocksInsidePoll {
    type Output = u32;
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<u32> {
        let mut g = self.0.lock(); // may suspend the coroutine inside `poll`
        *g += 1;
        Poll::Ready(*g)
    }
}

#[test]
fn a_future_that_waits_for_a_lock_inside_poll_completes_under_tokio() {
    let out = block_on_local(async {
        let m = Rc::new(CoMutex::new(0));
        let m2 = m.clone();
        let holder = tokio::task::spawn_local(as_future(move || {
            let mut g = m2.lock();
            *g += 10;
            // Hold the lock across a wait, so that the other coroutine waits inside `poll`.
            await_future(tokio::time::sleep(Duration::from_millis(20)));
            *g += 100;
        }));
        let m3 = m.clone();
        let locker = tokio::task::spawn_local(as_future(move || {
            await_future(tokio::task::yield_now()); // let the holder take the lock first
            await_future(LocksInsidePoll(m3))
        }));
        tokio::time::timeout(Duration::from_secs(10), async {
            holder.await.unwrap();
            locker.await.unwrap()
        })
        .await
        .expect("hosted coroutines did not finish within 10 s")
    });
    assert_eq!(out, 111);
}

// ---------------------------------------------------------------------------------------------
// 4. The bridge's host belongs to the hosted coroutine, not to the thread

#[test]
fn a_coroutine_woken_during_a_hosts_poll_does_not_take_the_hosts_wake_ups() {
    // The hosted coroutine wakes a plain coroutine `w`, which runs during the host's poll (the
    // core's deferred wake-up) and tries to await a future; then the hosted coroutine yields
    // plainly. `w` has nobody to resume it (it is told so), and the host's future must still be
    // polled again and complete.
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    let w = Coroutine::new(move || {
        yield_now();
        let r = catch_unwind(|| await_future(std::future::pending::<()>()));
        l.borrow_mut().push(match r {
            Ok(()) => "w awaited".to_string(),
            Err(p) => message_string(&*p),
        });
    });
    assert!(matches!(w.enter(), Status::Yielded));
    let wh = w.handle();
    let (out, polls) = run_bounded(
        as_future(move || {
            wh.wake(); // `w` runs right after we yield
            yield_now();
            yield_now();
            7
        }),
        100,
    );
    assert_eq!(out, Some(7), "after {polls} polls");
    assert!(w.is_finished());
    let log = log.borrow();
    assert_eq!(log.len(), 1);
    assert!(
        log[0].contains("nothing would enter it again"),
        "{}",
        log[0]
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Locks shared by coroutines hosted under one executor

#[test]
fn hosted_coroutines_sharing_a_lock_across_an_await_do_not_livelock() {
    let polls = Rc::new(Cell::new(0u32));
    let (a, b) = block_on_local(async {
        let m = Rc::new(CoMutex::new(Vec::new()));
        let spawn = |name: &'static str, m: Rc<CoMutex<Vec<&'static str>>>| {
            let inner = as_future(move || {
                let mut g = m.lock();
                g.push(name);
                await_future(tokio::time::sleep(Duration::from_millis(10)));
                g.push(name);
                g.len()
            });
            tokio::task::spawn_local(Counting {
                inner,
                polls: polls.clone(),
            })
        };
        let ha = spawn("a", m.clone());
        let hb = spawn("b", m.clone());
        tokio::time::timeout(Duration::from_secs(10), async {
            (ha.await.unwrap(), hb.await.unwrap())
        })
        .await
        .expect("hosted coroutines did not finish within 10 s")
    });
    assert_eq!((a, b), (2, 4));
    // Each future is polled a handful of times, not spun while the other holds the lock.
    assert!(polls.get() <= 12, "{} polls", polls.get());
}

/// Counts the polls of the future it wraps.
struct Counting<F> {
    inner: F,
    polls: Rc<Cell<u32>>,
}

impl<F: Future + Unpin> Future for Counting<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls.set(self.polls.get() + 1);
        Pin::new(&mut self.inner).poll(cx)
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Thread-local teardown

/// Set by the destructor of the coroutine's guard, if it ever runs (it must not: by then the
/// thread-local it borrows is gone).
static GUARD_DROPPED: AtomicUsize = AtomicUsize::new(0);
/// Set by the thread-local `A`'s destructor.
static A_DESTROYED: AtomicUsize = AtomicUsize::new(0);
/// What entering the coroutine from a thread-local destructor did.
static ENTER_FROM_DTOR: Mutex<String> = Mutex::new(String::new());

struct ValueA(Vec<u64>);

impl Drop for ValueA {
    fn drop(&mut self) {
        A_DESTROYED.fetch_add(1, Ordering::SeqCst);
    }
}

/// Reads the borrowed thread-local value when dropped.
struct ReadsA<'a>(&'a ValueA);

impl Drop for ReadsA<'_> {
    fn drop(&mut self) {
        let sum: u64 = self.0 .0.iter().sum();
        assert_eq!(sum, 4950);
        GUARD_DROPPED.fetch_add(1, Ordering::SeqCst);
    }
}

/// Holds the coroutine; its destructor tries to resume it, then drops it.
struct HolderB(RefCell<Option<Coroutine<()>>>);

impl Drop for HolderB {
    fn drop(&mut self) {
        if let Some(co) = self.0.borrow_mut().take() {
            let r = catch_unwind(AssertUnwindSafe(|| co.enter()));
            *ENTER_FROM_DTOR.lock().unwrap() = match r {
                Ok(_) => "entered".into(),
                Err(p) => message_string(&*p),
            };
            drop(co);
        }
    }
}

thread_local! {
    static B: HolderB = const { HolderB(RefCell::new(None)) };
    static A: ValueA = ValueA((0..100).collect());
}

#[test]
fn thread_exit_leaks_a_coroutine_suspended_inside_a_destroyed_thread_local() {
    std::thread::spawn(|| {
        // B is first used (registered) before A, so it is destroyed after A.
        B.with(|_| ());
        let co = Coroutine::new(|| {
            A.with(|a| {
                let _reads = ReadsA(a);
                yield_now(); // suspended inside A.with, holding a reference to A's value
            })
        });
        assert!(matches!(co.enter(), Status::Yielded));
        B.with(|b| *b.0.borrow_mut() = Some(co));
    })
    .join()
    .unwrap();
    assert_eq!(A_DESTROYED.load(Ordering::SeqCst), 1);
    // Neither resumed nor unwound after A was destroyed: its destructors did not run.
    assert_eq!(GUARD_DROPPED.load(Ordering::SeqCst), 0);
    let entered = ENTER_FROM_DTOR.lock().unwrap().clone();
    assert!(entered.contains("thread is exiting"), "{entered}");
}
