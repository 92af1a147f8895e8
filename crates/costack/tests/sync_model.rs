//! Model-based randomized tests of the `sync` primitives.
//!
//! A test case is a random *program* for up to 16 coroutines — lock and unlock a [`CoMutex`];
//! read, write, upgrade, downgrade and release a [`CoRwLock`]; acquire and release permits of a
//! [`CoSemaphore`]; wait on and wake a [`CoQueue`]; yield — and a random *schedule* that `main`
//! follows: enter a coroutine (waiting ones too: a spurious resume), drop one (wherever it is,
//! waiting or holding locks), or wake the queue from outside any coroutine. Afterwards every
//! remaining coroutine is run to the end.
//!
//! The coroutines log each request, grant and release as it happens. The log is then replayed
//! against a reference model, a few lines per primitive with plain `VecDeque`s, that says who
//! must hold what after each event. It checks:
//!
//! * mutual exclusion and FIFO order: every grant goes to exactly the coroutine the model
//!   hands the lock to, when the model hands it (a request the model grants at once must
//!   succeed without waiting; one it queues must wait);
//! * no lost wake-up: every coroutine finishes (or was dropped), with nobody stuck;
//! * no waiter left behind: at the end every primitive is free, with an empty queue.

use costack::sync::{
    CoMutex, CoMutexGuard, CoQueue, CoRwLock, CoRwLockReadGuard, CoRwLockWriteGuard, CoSemaphore,
    CoSemaphorePermit,
};
use costack::{yield_now, Coroutine};
use proptest::prelude::*;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashSet, VecDeque};
use std::rc::Rc;

#[path = "common/deadline.rs"]
mod deadline;

/// Permits in the semaphore; requests are for 1 to `SEM_PERMITS`.
const SEM_PERMITS: usize = 3;

/// Rounds of running every coroutine to the end before a case counts as stuck.
const ROUND_LIMIT: u32 = 10_000;

type Id = usize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Read,
    Write,
}

/// An operation of a coroutine's program. What it does depends on what the coroutine holds
/// (see `Worker::step`), so that every program is well-formed and deadlock-free.
#[derive(Clone, Copy, Debug)]
enum Op {
    Mutex,
    /// `true`: ask for write access, or upgrade / downgrade.
    Rw(bool),
    Sem(usize),
    Yield,
    QWait,
    QWaitFront,
    QWakeOne,
    QWakeAll,
}

#[derive(Clone, Copy, Debug)]
enum Step {
    Enter(usize),
    Drop(usize),
    MainWakeOne,
    MainWakeAll,
}

/// What happened, in order. `*Req` is logged just before a call that may wait, `*Got` right
/// after it returns, releases just before the guard goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Ev {
    MutexReq(Id),
    MutexGot(Id),
    MutexRel(Id),
    RwReq(Id, Kind),
    UpgradeReq(Id),
    RwGot(Id, Kind),
    Downgrade(Id),
    RwRel(Id, Kind),
    SemReq(Id, usize),
    SemGot(Id, usize),
    SemRel(Id, usize),
    QWaitReq(Id),
    QWaitFrontReq(Id),
    QWoken(Id),
    QWake {
        all: bool,
    },
    Dropped(Id),
    /// `main` has control again after a step: every deferred wake-up has run by now.
    Main,
}

struct Shared {
    mutex: CoMutex<()>,
    rw: CoRwLock<()>,
    sem: CoSemaphore,
    queue: CoQueue,
    log: RefCell<Vec<Ev>>,
    /// Ops started and completed by all coroutines, and coroutines finished: tells a pass that
    /// did something from one that did not.
    progress: Cell<u64>,
}

impl Shared {
    fn log(&self, ev: Ev) {
        self.log.borrow_mut().push(ev);
    }
}

/// A guard that logs its release when dropped, including by a forced unwind.
struct Held<'a, G> {
    guard: Option<G>,
    release: Option<Ev>,
    shared: &'a Shared,
}

impl<'a, G> Held<'a, G> {
    fn new(shared: &'a Shared, guard: G, release: Ev) -> Self {
        Held {
            guard: Some(guard),
            release: Some(release),
            shared,
        }
    }

    /// The guard, without logging a release (for upgrade and downgrade).
    fn into_guard(mut self) -> G {
        self.release = None;
        self.guard.take().unwrap()
    }
}

impl<G> Drop for Held<'_, G> {
    fn drop(&mut self) {
        if let Some(ev) = self.release.take() {
            self.shared.log(ev);
        }
        drop(self.guard.take());
    }
}

enum RwHeld<'a> {
    None,
    Read(Held<'a, CoRwLockReadGuard<'a, ()>>),
    Write(Held<'a, CoRwLockWriteGuard<'a, ()>>),
}

/// One coroutine's state while it runs its program. Locks rank mutex < rwlock < semaphore: a
/// coroutine only takes a lock when it holds none of a higher rank (otherwise the op releases
/// the highest it holds), so the programs cannot deadlock among themselves.
struct Worker<'a> {
    id: Id,
    s: &'a Shared,
    // Declared in rank order: dropped (released) highest rank first.
    mutex: Option<Held<'a, CoMutexGuard<'a, ()>>>,
    rw: RwHeld<'a>,
    sem: Option<Held<'a, CoSemaphorePermit<'a>>>,
}

impl<'a> Worker<'a> {
    fn rank_held(&self) -> Option<u8> {
        if self.sem.is_some() {
            Some(2)
        } else if !matches!(self.rw, RwHeld::None) {
            Some(1)
        } else if self.mutex.is_some() {
            Some(0)
        } else {
            None
        }
    }

    fn release_highest(&mut self) {
        match self.rank_held() {
            Some(2) => self.sem = None,
            Some(1) => self.rw = RwHeld::None,
            Some(_) => self.mutex = None,
            None => unreachable!(),
        }
    }

    fn step(&mut self, op: Op) {
        let (id, s) = (self.id, self.s);
        match op {
            Op::Mutex => {
                if self.mutex.is_some() {
                    self.mutex = None;
                } else if self.rank_held() > Some(0) {
                    self.release_highest();
                } else {
                    s.log(Ev::MutexReq(id));
                    let g = s.mutex.lock();
                    s.log(Ev::MutexGot(id));
                    self.mutex = Some(Held::new(s, g, Ev::MutexRel(id)));
                }
            }
            // Upgrading may wait, so it too must not happen while holding permits.
            Op::Rw(write) if self.sem.is_some() && (write || matches!(self.rw, RwHeld::None)) => {
                self.sem = None;
            }
            Op::Rw(write) => match std::mem::replace(&mut self.rw, RwHeld::None) {
                RwHeld::None if write => {
                    s.log(Ev::RwReq(id, Kind::Write));
                    let g = s.rw.write();
                    s.log(Ev::RwGot(id, Kind::Write));
                    self.rw = RwHeld::Write(Held::new(s, g, Ev::RwRel(id, Kind::Write)));
                }
                RwHeld::None => {
                    s.log(Ev::RwReq(id, Kind::Read));
                    let g = s.rw.read();
                    s.log(Ev::RwGot(id, Kind::Read));
                    self.rw = RwHeld::Read(Held::new(s, g, Ev::RwRel(id, Kind::Read)));
                }
                RwHeld::Read(h) if write => {
                    let r = h.into_guard();
                    s.log(Ev::UpgradeReq(id));
                    let g = CoRwLockReadGuard::upgrade(r);
                    s.log(Ev::RwGot(id, Kind::Write));
                    self.rw = RwHeld::Write(Held::new(s, g, Ev::RwRel(id, Kind::Write)));
                }
                RwHeld::Write(h) if write => {
                    let w = h.into_guard();
                    s.log(Ev::Downgrade(id));
                    let g = CoRwLockWriteGuard::downgrade(w);
                    self.rw = RwHeld::Read(Held::new(s, g, Ev::RwRel(id, Kind::Read)));
                }
                RwHeld::Read(h) => drop(h),
                RwHeld::Write(h) => drop(h),
            },
            Op::Sem(n) => {
                if self.sem.is_some() {
                    self.sem = None;
                } else {
                    s.log(Ev::SemReq(id, n));
                    let p = s.sem.acquire(n);
                    s.log(Ev::SemGot(id, n));
                    self.sem = Some(Held::new(s, p, Ev::SemRel(id, n)));
                }
            }
            Op::Yield => yield_now(),
            Op::QWait => {
                s.log(Ev::QWaitReq(id));
                s.queue.wait();
                s.log(Ev::QWoken(id));
            }
            Op::QWaitFront => {
                s.log(Ev::QWaitFrontReq(id));
                s.queue.wait_front();
                s.log(Ev::QWoken(id));
            }
            Op::QWakeOne => {
                s.log(Ev::QWake { all: false });
                s.queue.wake_next();
            }
            Op::QWakeAll => {
                s.log(Ev::QWake { all: true });
                s.queue.wake_all();
            }
        }
    }
}

/// The reference model: who holds and who waits for what, in plain collections.
#[derive(Default)]
struct Model {
    mutex: Option<Id>,
    mutex_q: VecDeque<Id>,
    readers: BTreeSet<Id>,
    writer: Option<Id>,
    rw_q: VecDeque<(Id, Kind)>,
    permits: usize,
    sem_q: VecDeque<(Id, usize)>,
    queue: VecDeque<Id>,
    woken: HashSet<Id>,
    /// Handed over by the model, not yet taken (the `*Got` event) by the coroutine.
    granted: HashSet<Ev>,
}

impl Model {
    fn grant(&mut self, got: Ev) {
        assert!(self.granted.insert(got.clone()), "granted twice: {got:?}");
    }

    fn mutex_release(&mut self) {
        self.mutex = self.mutex_q.pop_front();
        if let Some(next) = self.mutex {
            self.grant(Ev::MutexGot(next));
        }
    }

    fn rw_dispatch(&mut self) {
        while let Some(&(id, kind)) = self.rw_q.front() {
            match kind {
                Kind::Read if self.writer.is_none() => {
                    self.readers.insert(id);
                }
                Kind::Write if self.writer.is_none() && self.readers.is_empty() => {
                    self.writer = Some(id);
                }
                _ => break,
            }
            self.rw_q.pop_front();
            self.grant(Ev::RwGot(id, kind));
        }
    }

    fn rw_release(&mut self, id: Id, kind: Kind) {
        match kind {
            Kind::Read => assert!(self.readers.remove(&id), "{id} released a read it lacked"),
            Kind::Write => assert_eq!(self.writer.take(), Some(id)),
        }
        self.rw_dispatch();
    }

    fn sem_dispatch(&mut self) {
        while let Some(&(id, n)) = self.sem_q.front() {
            if self.permits < n {
                break;
            }
            self.permits -= n;
            self.sem_q.pop_front();
            self.grant(Ev::SemGot(id, n));
        }
    }

    /// Applies `ev`; returns the event that must come next, for a request granted at once.
    fn apply(&mut self, ev: &Ev) -> Option<Ev> {
        match *ev {
            Ev::MutexReq(id) => {
                if self.mutex.is_none() {
                    assert!(self.mutex_q.is_empty());
                    self.mutex = Some(id);
                    self.grant(Ev::MutexGot(id));
                    return Some(Ev::MutexGot(id));
                }
                self.mutex_q.push_back(id);
            }
            Ev::MutexRel(id) => {
                assert_eq!(self.mutex, Some(id), "mutex released by a non-holder");
                self.mutex_release();
            }
            Ev::RwReq(id, kind) => {
                let now = match kind {
                    Kind::Read => self.writer.is_none() && self.rw_q.is_empty(),
                    Kind::Write => self.writer.is_none() && self.readers.is_empty(),
                };
                if now {
                    match kind {
                        Kind::Read => self.readers.insert(id),
                        Kind::Write => self.writer.replace(id).is_none(),
                    };
                    self.grant(Ev::RwGot(id, kind));
                    return Some(Ev::RwGot(id, kind));
                }
                self.rw_q.push_back((id, kind));
            }
            Ev::UpgradeReq(id) => {
                assert!(self.readers.remove(&id), "{id} upgraded a read it lacked");
                if self.readers.is_empty() && self.rw_q.is_empty() {
                    self.writer = Some(id);
                    self.grant(Ev::RwGot(id, Kind::Write));
                    return Some(Ev::RwGot(id, Kind::Write));
                }
                self.rw_q.push_back((id, Kind::Write));
                self.rw_dispatch();
            }
            Ev::Downgrade(id) => {
                assert_eq!(self.writer.take(), Some(id));
                self.readers.insert(id);
                self.rw_dispatch();
            }
            Ev::RwRel(id, kind) => self.rw_release(id, kind),
            Ev::SemReq(id, n) => {
                if self.sem_q.is_empty() && self.permits >= n {
                    self.permits -= n;
                    self.grant(Ev::SemGot(id, n));
                    return Some(Ev::SemGot(id, n));
                }
                self.sem_q.push_back((id, n));
            }
            Ev::SemRel(_, n) => {
                self.permits += n;
                self.sem_dispatch();
            }
            Ev::MutexGot(_) | Ev::RwGot(..) | Ev::SemGot(..) => {
                assert!(
                    self.granted.remove(ev),
                    "{ev:?}, but the model did not hand that over"
                );
            }
            Ev::QWaitReq(id) => self.queue.push_back(id),
            Ev::QWaitFrontReq(id) => self.queue.push_front(id),
            Ev::Main => {
                // Wake-ups are deferred only until the waker yields or finishes, and those
                // entered from outside run at once: by the time `main` runs again, everything
                // handed over has been taken, and every woken coroutine has run.
                assert!(self.granted.is_empty(), "not taken yet: {:?}", self.granted);
                assert!(self.woken.is_empty(), "woken but not run: {:?}", self.woken);
            }
            Ev::QWake { all } => {
                let n = if all { self.queue.len() } else { 1 };
                for _ in 0..n {
                    if let Some(id) = self.queue.pop_front() {
                        self.woken.insert(id);
                    }
                }
            }
            Ev::QWoken(id) => assert!(self.woken.remove(&id), "{id} woke without a wake-up"),
            Ev::Dropped(id) => {
                // A dropped waiter leaves its queue, which may let others through; what it
                // was handed but never took is passed on. (Its guards log their releases.)
                self.mutex_q.retain(|&w| w != id);
                self.rw_q.retain(|&(w, _)| w != id);
                self.sem_q.retain(|&(w, _)| w != id);
                self.queue.retain(|&w| w != id);
                let lost: Vec<Ev> = self
                    .granted
                    .iter()
                    .filter(|g| matches!(g, Ev::MutexGot(w) | Ev::RwGot(w, _) | Ev::SemGot(w, _) if *w == id))
                    .cloned()
                    .collect();
                for g in lost {
                    self.granted.remove(&g);
                    match g {
                        Ev::MutexGot(_) => self.mutex_release(),
                        Ev::RwGot(_, kind) => {
                            self.rw_release(id, kind);
                            continue;
                        }
                        Ev::SemGot(_, n) => self.permits += n,
                        _ => unreachable!(),
                    }
                }
                // A wake-up it never took passes on to the next waiter.
                if self.woken.remove(&id) {
                    if let Some(next) = self.queue.pop_front() {
                        self.woken.insert(next);
                    }
                }
                self.rw_dispatch();
                self.sem_dispatch();
            }
        }
        // The model's own invariants: exclusion, and queues only behind a held lock.
        assert!(self.writer.is_none() || self.readers.is_empty());
        assert!(self.mutex.is_some() || self.mutex_q.is_empty());
        None
    }
}

/// Runs one program under one schedule and checks it against the model.
fn run_case(programs: &[Vec<Op>], schedule: &[Step]) -> Result<(), TestCaseError> {
    // A case takes about a millisecond; one that hangs (in a lock's loop, say) aborts the run.
    let _deadline = deadline::arm();
    let shared = Rc::new(Shared {
        mutex: CoMutex::new(()),
        rw: CoRwLock::new(()),
        sem: CoSemaphore::new(SEM_PERMITS),
        queue: CoQueue::new(),
        log: RefCell::new(Vec::new()),
        progress: Cell::new(0),
    });
    let mut cos: Vec<Option<Coroutine>> = programs
        .iter()
        .enumerate()
        .map(|(id, prog)| {
            let (s, prog) = (shared.clone(), prog.clone());
            Some(Coroutine::new(move || {
                let mut w = Worker {
                    id,
                    s: &s,
                    mutex: None,
                    rw: RwHeld::None,
                    sem: None,
                };
                let tick = || s.progress.set(s.progress.get() + 1);
                for op in prog {
                    tick();
                    w.step(op);
                    tick();
                }
                drop(w);
                tick();
            }))
        })
        .collect();
    let n = cos.len();

    for step in schedule {
        match *step {
            Step::Enter(i) => {
                if let Some(co) = cos[i % n].as_ref().filter(|c| !c.is_finished()) {
                    let _ = co.enter();
                }
            }
            Step::Drop(i) => {
                if let Some(co) = cos[i % n].take() {
                    shared.log(Ev::Dropped(i % n));
                    drop(co);
                }
            }
            Step::MainWakeOne => {
                shared.log(Ev::QWake { all: false });
                shared.queue.wake_next();
            }
            Step::MainWakeAll => {
                shared.log(Ev::QWake { all: true });
                shared.queue.wake_all();
            }
        }
        shared.log(Ev::Main);
    }

    // Run everything to the end. A pass in which no coroutine completes an op means everyone
    // left waits. Only the queue may hold them (the programs cannot deadlock on the locks), so
    // wake it: each woken coroutine completes its wait, so the next round makes progress.
    let mut rounds = 0;
    while cos.iter().flatten().any(|c| !c.is_finished()) {
        // Every round completes an op or wakes the queue; far fewer rounds are needed.
        rounds += 1;
        prop_assert!(
            rounds < ROUND_LIMIT,
            "the coroutines did not finish within {} rounds",
            ROUND_LIMIT
        );
        let before = shared.progress.get();
        for co in cos.iter().flatten().filter(|c| !c.is_finished()) {
            let _ = co.enter();
            shared.log(Ev::Main);
        }
        if shared.progress.get() == before {
            prop_assert!(
                !shared.queue.is_empty(),
                "stuck: coroutines wait for locks that nobody holds (lost wake-up)"
            );
            shared.log(Ev::QWake { all: true });
            shared.queue.wake_all();
            shared.log(Ev::Main);
        }
    }
    drop(cos);

    // Replay the log against the model.
    let log = shared.log.borrow().clone();
    let mut model = Model {
        permits: SEM_PERMITS,
        ..Model::default()
    };
    let mut expect: Option<Ev> = None;
    for (i, ev) in log.iter().enumerate() {
        if let Some(e) = expect.take() {
            prop_assert_eq!(&e, ev, "event {} should have been granted at once", i);
        }
        expect = model.apply(ev);
    }

    // Nobody left behind, in the model or in the real thing.
    prop_assert!(model.granted.is_empty(), "{:?}", model.granted);
    prop_assert!(model.mutex.is_none() && model.mutex_q.is_empty());
    prop_assert!(model.writer.is_none() && model.readers.is_empty() && model.rw_q.is_empty());
    prop_assert!(model.permits == SEM_PERMITS && model.sem_q.is_empty());
    prop_assert!(model.queue.is_empty() && model.woken.is_empty());
    prop_assert!(!shared.mutex.is_locked() && !shared.mutex.has_waiters());
    prop_assert!(!shared.rw.is_locked() && !shared.rw.has_waiters());
    prop_assert!(shared.sem.available_permits() == SEM_PERMITS && !shared.sem.has_waiters());
    prop_assert!(shared.queue.is_empty());
    Ok(())
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Mutex),
        4 => any::<bool>().prop_map(Op::Rw),
        3 => (1..=SEM_PERMITS).prop_map(Op::Sem),
        4 => Just(Op::Yield),
        1 => Just(Op::QWait),
        1 => Just(Op::QWaitFront),
        1 => Just(Op::QWakeOne),
        1 => Just(Op::QWakeAll),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        40 => (0..16usize).prop_map(Step::Enter),
        2 => (0..16usize).prop_map(Step::Drop),
        1 => Just(Step::MainWakeOne),
        1 => Just(Step::MainWakeAll),
    ]
}

proptest! {
    // About a millisecond a case in a debug build. PROPTEST_CASES overrides the count.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(3000)
    ))]

    #[test]
    fn primitives_follow_the_model(
        programs in prop::collection::vec(prop::collection::vec(op(), 0..12), 1..=16),
        schedule in prop::collection::vec(step(), 0..160),
    ) {
        run_case(&programs, &schedule)?;
    }
}

/// A fixed case that exercises every kind of event, so that the model itself is known to be
/// exercised even if the random cases drift.
#[test]
fn model_smoke() {
    use Op::*;
    let programs = vec![
        vec![
            Mutex,
            Rw(false),
            Yield,
            Rw(true),
            Yield,
            Rw(true),
            Sem(3),
            Yield,
        ],
        vec![Rw(true), Yield, Mutex, Sem(2), QWait, Yield],
        vec![Sem(1), Rw(false), Yield, QWakeAll, Rw(false), Mutex],
        vec![QWait, Mutex, Yield, QWakeOne, Sem(3)],
        vec![Yield, QWaitFront, Rw(true), Yield, QWakeOne],
    ];
    let mut schedule: Vec<Step> = (0..50).map(|i| Step::Enter(i % 5)).collect();
    schedule.insert(9, Step::MainWakeOne);
    schedule.insert(17, Step::Drop(1));
    run_case(&programs, &schedule).unwrap();
}
