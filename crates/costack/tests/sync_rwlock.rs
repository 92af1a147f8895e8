//! CoRwLock: QEMU's upgrade and downgrade scenarios, fairness, and dropping waiters.

use costack::sync::{CoRwLock, CoRwLockReadGuard, CoRwLockWriteGuard};
use costack::{yield_now, Coroutine, Status};
use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

#[path = "common/deadline.rs"]
mod deadline;

type Log = Rc<RefCell<Vec<String>>>;

fn push(l: &Log, s: impl Into<String>) {
    l.borrow_mut().push(s.into());
}

/// After QEMU's `test_co_rwlock_upgrade`: a reader's upgrade must wait because a writer queued
/// meanwhile; the writer goes first, then the upgrader, and both finish.
#[test]
fn upgrade_waits_behind_a_queued_writer_and_both_finish() {
    let _deadline = deadline::arm();
    let lock = Rc::new(CoRwLock::new(0));
    let l: Log = Rc::default();

    let (lk, lg) = (lock.clone(), l.clone());
    let upgrader = Coroutine::new(move || {
        let r = lk.read();
        push(&lg, format!("upgrader read {}", *r));
        yield_now();
        let mut w = CoRwLockReadGuard::upgrade(r); // the writer is queued: wait behind it
        push(&lg, format!("upgrader upgraded, sees {}", *w));
        *w += 1;
        yield_now();
        drop(w);
        push(&lg, "upgrader done");
    });
    let (lk, lg) = (lock.clone(), l.clone());
    let writer = Coroutine::new(move || {
        let mut w = lk.write();
        push(&lg, "writer locked");
        *w += 10;
        yield_now();
        drop(w);
        push(&lg, "writer done");
    });

    assert_eq!(upgrader.enter(), Status::Yielded); // reading
    assert_eq!(writer.enter(), Status::Yielded); // queued behind the reader
                                                 // The upgrade releases the read lock and queues: the writer runs, locks and yields.
    assert_eq!(upgrader.enter(), Status::Yielded);
    assert!(lock.is_write_locked());
    assert_eq!(
        *l.borrow(),
        ["upgrader read 0", "writer locked"],
        "the writer runs right after the upgrader yields"
    );
    // The writer unlocks and finishes: the upgrader gets the write lock and yields.
    assert_eq!(writer.enter(), Status::Finished(()));
    assert_eq!(upgrader.enter(), Status::Finished(()));
    assert_eq!(
        *l.borrow(),
        [
            "upgrader read 0",
            "writer locked",
            "writer done",
            "upgrader upgraded, sees 10",
            "upgrader done"
        ]
    );
    assert_eq!(*lock.read(), 11);
    assert!(!lock.is_locked() && !lock.has_waiters());
}

/// QEMU's `test_co_rwlock_downgrade` scenario: four coroutines, a reader holding the lock while
/// a writer, a reader and another writer queue. Downgrading must not hang anyone.
///
/// | c1     | c2         | c3         | c4         |
/// |--------|------------|------------|------------|
/// | read   |            |            |            |
/// | yield  |            |            |            |
/// |        | write (q)  |            |            |
/// |        |            | read (q)   |            |
/// |        |            |            | write (q)  |
/// | unlock |            |            |            |
/// | yield  |            |            |            |
/// |        | granted    |            |            |
/// |        | downgrade  |            |            |
/// |        | unlock     | granted    |            |
/// |        |            | unlock     | granted    |
/// |        |            |            | unlock     |
#[test]
fn downgrade_with_readers_and_writers_queued_finishes() {
    let _deadline = deadline::arm();
    let lock = Rc::new(CoRwLock::new(()));
    let l: Log = Rc::default();

    let (lk, lg) = (lock.clone(), l.clone());
    let c1 = Coroutine::new(move || {
        let r = lk.read();
        yield_now();
        drop(r);
        push(&lg, "c1 unlocked");
        yield_now();
        push(&lg, "c1 done");
    });
    let (lk, lg) = (lock.clone(), l.clone());
    let c2 = Coroutine::new(move || {
        let w = lk.write();
        push(&lg, "c2 write");
        let r = CoRwLockWriteGuard::downgrade(w);
        push(&lg, "c2 downgraded");
        drop(r);
        push(&lg, "c2 done");
    });
    let (lk, lg) = (lock.clone(), l.clone());
    let c3 = Coroutine::new(move || {
        let r = lk.read();
        push(&lg, "c3 read");
        drop(r);
        push(&lg, "c3 done");
    });
    let (lk, lg) = (lock.clone(), l.clone());
    let c4 = Coroutine::new(move || {
        let w = lk.write();
        push(&lg, "c4 write");
        drop(w);
        push(&lg, "c4 done");
    });

    assert_eq!(c1.enter(), Status::Yielded);
    assert_eq!(c2.enter(), Status::Yielded);
    assert_eq!(c3.enter(), Status::Yielded);
    assert_eq!(c4.enter(), Status::Yielded);
    assert_eq!(c1.enter(), Status::Yielded);
    assert!(c2.is_finished() && c3.is_finished() && c4.is_finished());
    assert_eq!(c1.enter(), Status::Finished(()));
    assert_eq!(
        *l.borrow(),
        [
            "c1 unlocked",
            "c2 write",
            "c2 downgraded",
            "c2 done",
            "c3 read",
            "c3 done",
            "c4 write",
            "c4 done",
            "c1 done"
        ]
    );
    assert!(!lock.is_locked() && !lock.has_waiters());
}

/// A new reader waits while a writer is queued, even though readers hold the lock; when the
/// writer is done, the readers queued behind it get the lock together.
#[test]
fn readers_do_not_overtake_a_queued_writer() {
    let _deadline = deadline::arm();
    let lock = Rc::new(CoRwLock::new(()));
    let l: Log = Rc::default();
    let reader = |name: &'static str| {
        let (lk, lg) = (lock.clone(), l.clone());
        Coroutine::new(move || {
            let _r = lk.read();
            push(&lg, format!("{name} read"));
            yield_now();
            push(&lg, format!("{name} done"));
        })
    };
    let first = reader("r1");
    let (lk, lg) = (lock.clone(), l.clone());
    let writer = Coroutine::new(move || {
        let _w = lk.write();
        push(&lg, "w write");
        yield_now();
        push(&lg, "w done");
    });
    let (r2, r3) = (reader("r2"), reader("r3"));

    let _ = first.enter();
    let _ = writer.enter();
    assert!(lock.try_read().is_none(), "a writer is queued");
    let _ = r2.enter();
    let _ = r3.enter();
    assert_eq!(lock.reader_count(), 1);
    let _ = first.enter(); // r1 done: the writer runs
    assert!(lock.is_write_locked());
    let _ = writer.enter(); // writer done: r2 and r3 both run
    assert_eq!(lock.reader_count(), 2);
    let _ = r2.enter();
    let _ = r3.enter();
    assert_eq!(
        *l.borrow(),
        ["r1 read", "r1 done", "w write", "w done", "r2 read", "r3 read", "r2 done", "r3 done"]
    );
    assert!(!lock.is_locked());
}

#[test]
fn upgrade_is_immediate_for_the_sole_reader() {
    let _deadline = deadline::arm();
    let lock = CoRwLock::new(1);
    let r = lock.read();
    let mut w = CoRwLockReadGuard::upgrade(r); // works outside a coroutine: no wait
    *w = 2;
    assert!(lock.is_write_locked());
    let r = CoRwLockWriteGuard::downgrade(w);
    assert_eq!(lock.reader_count(), 1);
    let r2 = lock.read();
    assert_eq!(*r + *r2, 4);
    // Two readers: try_upgrade fails and gives the guard back.
    let r = CoRwLockReadGuard::try_upgrade(r).unwrap_err();
    drop(r2);
    let w = CoRwLockReadGuard::try_upgrade(r).unwrap();
    assert_eq!(*w, 2);
}

/// Two readers upgrading at once do not deadlock: each releases its read share first.
#[test]
fn two_concurrent_upgrades_both_finish() {
    let _deadline = deadline::arm();
    let lock = Rc::new(CoRwLock::new(Vec::new()));
    let mk = |i: u32| {
        let lk = lock.clone();
        Coroutine::new(move || {
            let r = lk.read();
            yield_now();
            let mut w = CoRwLockReadGuard::upgrade(r);
            w.push(i);
            yield_now();
        })
    };
    let (a, b) = (mk(1), mk(2));
    let _ = a.enter();
    let _ = b.enter();
    assert_eq!(lock.reader_count(), 2);
    let _ = a.enter(); // queues as a writer (b still reads)
    let _ = b.enter(); // releases; a is granted and runs; b queues
    assert!(!a.is_finished());
    let _ = a.enter(); // a done: b granted
    let _ = b.enter();
    assert!(a.is_finished() && b.is_finished());
    assert_eq!(*lock.read(), [1, 2]);
}

#[test]
fn upgrade_outside_a_coroutine_panics_when_it_would_wait_and_releases_the_read_lock() {
    let _deadline = deadline::arm();
    let lock = CoRwLock::new(());
    let r1 = lock.read();
    let r2 = lock.read();
    let err = catch_unwind(AssertUnwindSafe(|| {
        let _w = CoRwLockReadGuard::upgrade(r2);
    }))
    .unwrap_err();
    let msg = err.downcast_ref::<String>().unwrap();
    assert!(msg.contains("upgrade"), "{msg}");
    assert_eq!(lock.reader_count(), 1);
    drop(r1);
    assert!(!lock.is_locked());
}

#[test]
fn outside_a_coroutine() {
    let _deadline = deadline::arm();
    let lock = CoRwLock::new(5);
    {
        let a = lock.read();
        let b = lock.read();
        assert_eq!(*a + *b, 10);
        assert!(lock.try_write().is_none());
        let err = catch_unwind(AssertUnwindSafe(|| drop(lock.write()))).unwrap_err();
        assert!(err
            .downcast_ref::<String>()
            .unwrap()
            .contains("CoRwLock::write"));
    }
    *lock.write() += 1;
    assert_eq!(format!("{lock:?}"), "CoRwLock { data: 6, waiters: 0 }");
    let w = lock.write();
    let err = catch_unwind(AssertUnwindSafe(|| drop(lock.read()))).unwrap_err();
    let msg = err.downcast_ref::<String>().unwrap();
    assert!(msg.contains("CoRwLock::read would have to wait"), "{msg}");
    assert!(msg.contains("outside of any coroutine"), "{msg}");
    drop(w);
    assert_eq!(lock.into_inner(), 6);
}

/// A write unlock outside any coroutine enters every reader it lets in, each at once.
#[test]
fn release_outside_a_coroutine_enters_the_readers() {
    let _deadline = deadline::arm();
    let lock = Rc::new(CoRwLock::new(()));
    let count = Rc::new(Cell::new(0));
    let w = lock.write();
    let readers: Vec<Coroutine> = (0..3)
        .map(|_| {
            let (lk, c) = (lock.clone(), count.clone());
            Coroutine::new(move || {
                let _r = lk.read();
                c.set(c.get() + 1);
                yield_now();
            })
        })
        .collect();
    for r in &readers {
        let _ = r.enter();
    }
    drop(w);
    assert_eq!(count.get(), 3);
    assert_eq!(lock.reader_count(), 3);
    for r in &readers {
        let _ = r.enter();
    }
    assert!(!lock.is_locked());
}

/// A queued writer at the head of the queue is dropped while readers hold the lock: the readers
/// queued behind it are let in.
#[test]
fn dropping_a_queued_writer_lets_the_readers_behind_it_in() {
    let _deadline = deadline::arm();
    let lock = Rc::new(CoRwLock::new(()));
    let r = lock.read();
    let lk = lock.clone();
    let writer = Coroutine::new(move || drop(lk.write()));
    let got = Rc::new(Cell::new(false));
    let (lk, g) = (lock.clone(), got.clone());
    let reader = Coroutine::new(move || {
        let _r = lk.read();
        g.set(true);
        yield_now();
    });
    let _ = writer.enter();
    let _ = reader.enter();
    assert!(!got.get());
    drop(writer); // outside a coroutine: the reader is entered at once
    assert!(got.get());
    assert_eq!(lock.reader_count(), 2);
    drop(r);
    drop(reader);
    assert!(!lock.is_locked() && !lock.has_waiters());
}

/// Guards on the stack of a coroutine that is dropped release their lock.
#[test]
fn guards_dropped_by_forced_unwind_release() {
    let _deadline = deadline::arm();
    let lock = Rc::new(CoRwLock::new(0));
    let lk = lock.clone();
    let w = Coroutine::new(move || {
        let mut g = lk.write();
        *g = 1;
        yield_now();
    });
    let lk = lock.clone();
    let r = Coroutine::new(move || {
        let g = lk.read();
        yield_now();
        drop(g);
    });
    let _ = w.enter();
    let _ = r.enter(); // waits
    drop(w); // the write guard is released; the reader runs and yields holding a read lock
    assert_eq!(lock.reader_count(), 1);
    drop(r); // the read guard is released
    assert!(!lock.is_locked());
    assert_eq!(*lock.read(), 1);
}

/// A coroutine waiting for an upgrade is dropped: its queued write request goes away and the
/// lock is free again (its read share was given up when it queued).
#[test]
fn dropped_while_waiting_to_upgrade() {
    let _deadline = deadline::arm();
    let lock = Rc::new(CoRwLock::new(()));
    let other = lock.read();
    let lk = lock.clone();
    let up = Coroutine::new(move || {
        let r = lk.read();
        let _w = CoRwLockReadGuard::upgrade(r);
        unreachable!("another reader never lets go");
    });
    assert_eq!(up.enter(), Status::Yielded);
    assert_eq!(lock.reader_count(), 1);
    assert!(lock.has_waiters());
    drop(up);
    assert!(!lock.has_waiters());
    drop(other);
    assert!(!lock.is_locked());
}

/// `Debug` while coroutines are queued: the count of waiters; the data only when a read lock
/// could be had now (so not while readers hold it with a writer queued).
#[test]
fn debug_shows_the_waiters() {
    let _deadline = deadline::arm();
    let lock = Rc::new(CoRwLock::new(1));
    let reader = || {
        let lk = lock.clone();
        Coroutine::new(move || {
            let _r = lk.read();
            yield_now();
        })
    };
    let (r1, r3) = (reader(), reader());
    let lk = lock.clone();
    let w2 = Coroutine::new(move || {
        let mut w = lk.write();
        *w += 1;
        yield_now();
    });
    let w = lock.write();
    for co in [&r1, &w2, &r3] {
        assert_eq!(co.enter(), Status::Yielded);
    }
    assert_eq!(
        format!("{lock:?}"),
        "CoRwLock { data: <locked>, waiters: 3 }"
    );
    drop(w); // outside a coroutine: r1 is entered at once and reads; w2 must wait for it
    assert_eq!(lock.reader_count(), 1);
    assert_eq!(
        format!("{lock:?}"),
        "CoRwLock { data: <locked>, waiters: 2 }"
    );
    assert_eq!(r1.enter(), Status::Finished(())); // w2 is handed the lock and runs
    assert!(lock.is_write_locked());
    assert_eq!(
        format!("{lock:?}"),
        "CoRwLock { data: <locked>, waiters: 1 }"
    );
    assert_eq!(w2.enter(), Status::Finished(())); // r3 is handed a read share and runs
    assert_eq!(lock.reader_count(), 1);
    assert_eq!(format!("{lock:?}"), "CoRwLock { data: 2, waiters: 0 }");
    assert_eq!(r3.enter(), Status::Finished(()));
    assert_eq!(format!("{lock:?}"), "CoRwLock { data: 2, waiters: 0 }");
    assert!(!lock.is_locked());
}
