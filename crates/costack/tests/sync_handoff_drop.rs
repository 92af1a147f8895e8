//! A waiter that was handed a lock (or permits) but is dropped before it runs must pass what it
//! was handed on: the `CoRwLock` and `CoSemaphore` versions of the `CoMutex` test
//! `waiter_dropped_after_hand_off_passes_the_lock_on` in `sync_mutex.rs`.
//!
//! The only way there: a panic in the wake-up loop drops the wake-ups still queued, and with
//! them the last handle to the waiter. So the holder wakes a "bomb" coroutine first, then lets
//! go, which hands the lock to `granted`, queued behind the bomb; the bomb panics when it is
//! dropped, and `granted` is dropped unrun.

use costack::sync::{CoRwLock, CoSemaphore};
use costack::{yield_now, CoHandle, Coroutine, Status};
use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

#[path = "common/deadline.rs"]
mod deadline;
#[path = "common/panics.rs"]
mod panics;

type Log = Rc<RefCell<Vec<String>>>;

/// The bomb and the waiter that will be handed the lock, for the holder to take.
type Slot = Rc<RefCell<Option<(CoHandle, CoHandle)>>>;

/// A coroutine that yields again whenever it is woken, calling `on_wake` first, and panics with
/// "bomb" when it is unwound for being dropped: that panic escapes the wake-up loop, which drops
/// the rest of its queue.
fn bomb(on_wake: impl Fn() + 'static) -> Coroutine {
    panics::forced_unwind_type(); // measured now, not during the unwind
    Coroutine::new(move || loop {
        match catch_unwind(yield_now) {
            Ok(()) => on_wake(),
            Err(p) => {
                assert!(panics::is_forced_unwind(&*p), "not the forced unwind");
                panic!("bomb");
            }
        }
    })
}

/// In the holder: wakes the bomb, so that it runs first after the holder finishes. The holder
/// then lets go (handing the lock to `granted`, queued behind the bomb) and drops the returned
/// handles, leaving the last ones to the wake-up queue.
fn light_the_fuse(slot: &Slot) -> (CoHandle, CoHandle) {
    let (bomb, granted) = slot.borrow_mut().take().unwrap();
    bomb.wake();
    (bomb, granted)
}

/// Gives the holder the only handles to `bomb` and `granted`, and runs it to the end: the bomb's
/// panic comes out.
fn hand_off_and_explode(holder: &Coroutine, slot: &Slot, bomb: Coroutine, granted: Coroutine) {
    *slot.borrow_mut() = Some((bomb.handle(), granted.handle()));
    drop((bomb, granted));
    let err = catch_unwind(AssertUnwindSafe(|| holder.enter())).unwrap_err();
    assert_eq!(err.downcast_ref::<&str>(), Some(&"bomb"));
    assert!(holder.is_finished());
}

fn log_of(log: &Log) -> Vec<String> {
    log.borrow().clone()
}

/// A coroutine that write-locks `lock`, logs, yields holding it, and unlocks.
fn writer(lock: &Rc<CoRwLock<()>>, log: &Log, name: &'static str) -> Coroutine {
    let (lk, l) = (lock.clone(), log.clone());
    Coroutine::new(move || {
        let _w = lk.write();
        l.borrow_mut().push(format!("{name} write"));
        yield_now();
    })
}

/// A coroutine that read-locks `lock`, logs, yields holding it, and unlocks.
fn reader(lock: &Rc<CoRwLock<()>>, log: &Log, name: &'static str) -> Coroutine {
    let (lk, l) = (lock.clone(), log.clone());
    Coroutine::new(move || {
        let _r = lk.read();
        l.borrow_mut().push(format!("{name} read"));
        yield_now();
    })
}

/// A holder of `lock` (write-locked, or read-locked with `write == false`) that lets go after
/// the fuse is lit, handing the lock to the waiter queued first.
fn rw_holder(lock: &Rc<CoRwLock<()>>, slot: &Slot, write: bool) -> Coroutine {
    let (lk, s) = (lock.clone(), slot.clone());
    Coroutine::new(move || {
        let guard = if write {
            Ok(lk.write())
        } else {
            Err(lk.read())
        };
        yield_now();
        let handles = light_the_fuse(&s);
        drop(guard); // hands the lock on
        drop(handles);
    })
}

/// A bomb that logs the readers and waiters it sees when it runs, before `granted` would.
fn bomb_counting_readers(lock: &Rc<CoRwLock<()>>, log: &Log) -> Coroutine {
    let (lk, l) = (lock.clone(), log.clone());
    bomb(move || {
        l.borrow_mut().push(format!(
            "bomb sees readers {} waiting {}",
            lk.reader_count(),
            lk.has_waiters()
        ));
    })
}

/// A writer handed the write lock but dropped before it ran passes the lock to the next writer.
#[test]
fn rwlock_writer_dropped_after_hand_off_passes_the_lock_on() {
    let _deadline = deadline::arm();
    let lock = Rc::new(CoRwLock::new(()));
    let log: Log = Rc::default();
    let slot: Slot = Rc::default();

    let holder = rw_holder(&lock, &slot, true); // hands the lock to `granted`
    let (lk, l) = (lock.clone(), log.clone());
    let bomb = bomb(move || {
        // Runs before `granted` would: the lock is already its, the next writer still waits.
        l.borrow_mut().push(format!(
            "bomb sees write-locked {} waiting {}",
            lk.is_write_locked(),
            lk.has_waiters()
        ));
    });
    let granted = writer(&lock, &log, "granted");
    let next = writer(&lock, &log, "next");

    assert_eq!(holder.enter(), Status::Yielded);
    assert_eq!(bomb.enter(), Status::Yielded);
    assert_eq!(granted.enter(), Status::Yielded);
    assert_eq!(next.enter(), Status::Yielded);
    assert!(lock.is_write_locked() && lock.has_waiters());

    hand_off_and_explode(&holder, &slot, bomb, granted);
    // `granted` never ran: it passed the lock to `next`, which took it and yielded.
    assert_eq!(
        log_of(&log),
        ["bomb sees write-locked true waiting true", "next write"]
    );
    assert!(lock.is_write_locked());
    assert!(!lock.has_waiters());
    assert_eq!(next.enter(), Status::Finished(()));
    assert!(!lock.is_locked() && !lock.has_waiters());
}

/// The same with readers behind the dropped writer: all of them get the lock together.
#[test]
fn rwlock_writer_dropped_after_hand_off_lets_the_readers_behind_it_in() {
    let _deadline = deadline::arm();
    let lock = Rc::new(CoRwLock::new(()));
    let log: Log = Rc::default();
    let slot: Slot = Rc::default();

    // The last reader: hands the lock to the writer `granted`.
    let holder = rw_holder(&lock, &slot, false);
    let bomb = bomb(|| ());
    let granted = writer(&lock, &log, "granted");
    let (r1, r2) = (reader(&lock, &log, "r1"), reader(&lock, &log, "r2"));

    let _ = holder.enter();
    let _ = bomb.enter();
    for co in [&granted, &r1, &r2] {
        assert_eq!(co.enter(), Status::Yielded);
    }
    assert_eq!(lock.reader_count(), 1);

    hand_off_and_explode(&holder, &slot, bomb, granted);
    assert_eq!(log_of(&log), ["r1 read", "r2 read"]);
    assert_eq!(lock.reader_count(), 2);
    assert!(!lock.has_waiters());
    assert_eq!(r1.enter(), Status::Finished(()));
    assert_eq!(r2.enter(), Status::Finished(()));
    assert!(!lock.is_locked());
}

/// A reader handed a read share but dropped before it ran releases the share: the writer queued
/// behind it gets the lock.
#[test]
fn rwlock_reader_dropped_after_hand_off_releases_its_share() {
    let _deadline = deadline::arm();
    let lock = Rc::new(CoRwLock::new(()));
    let log: Log = Rc::default();
    let slot: Slot = Rc::default();

    // Hands a read share to `granted`; the writer behind it must wait.
    let holder = rw_holder(&lock, &slot, true);
    let bomb = bomb_counting_readers(&lock, &log);
    let granted = reader(&lock, &log, "granted");
    let next = writer(&lock, &log, "next");

    let _ = holder.enter();
    let _ = bomb.enter();
    assert_eq!(granted.enter(), Status::Yielded);
    assert_eq!(next.enter(), Status::Yielded);

    hand_off_and_explode(&holder, &slot, bomb, granted);
    assert_eq!(
        log_of(&log),
        ["bomb sees readers 1 waiting true", "next write"]
    );
    assert!(lock.is_write_locked());
    assert_eq!(lock.reader_count(), 0);
    assert!(!lock.has_waiters());
    assert_eq!(next.enter(), Status::Finished(()));
    assert!(!lock.is_locked() && !lock.has_waiters());
}

/// A reader handed a read share but dropped before it ran releases only its own share: the
/// reader granted with it keeps the lock read-locked, and the writer behind them still waits.
#[test]
fn rwlock_reader_dropped_after_hand_off_leaves_the_other_readers_share() {
    let _deadline = deadline::arm();
    let lock = Rc::new(CoRwLock::new(()));
    let log: Log = Rc::default();
    let slot: Slot = Rc::default();

    // Hands read shares to `granted` and `other`; the writer behind must wait.
    let holder = rw_holder(&lock, &slot, true);
    let bomb = bomb_counting_readers(&lock, &log);
    let granted = reader(&lock, &log, "granted");
    let other = reader(&lock, &log, "other");
    let next = writer(&lock, &log, "next");

    let _ = holder.enter();
    let _ = bomb.enter();
    for co in [&granted, &other, &next] {
        assert_eq!(co.enter(), Status::Yielded);
    }

    hand_off_and_explode(&holder, &slot, bomb, granted);
    // `granted` gave its share back; `other` still holds one, handed to it but not yet taken.
    assert_eq!(log_of(&log), ["bomb sees readers 2 waiting true"]);
    assert_eq!(lock.reader_count(), 1);
    assert!(!lock.is_write_locked());
    assert!(lock.has_waiters());
    // `other` runs with its share; the writer gets the lock only once it lets go.
    assert_eq!(other.enter(), Status::Yielded);
    assert_eq!(
        log_of(&log),
        ["bomb sees readers 2 waiting true", "other read"]
    );
    assert_eq!(lock.reader_count(), 1);
    assert!(lock.has_waiters());
    assert_eq!(other.enter(), Status::Finished(())); // hands the lock to `next`, entered now
    assert_eq!(
        log_of(&log),
        [
            "bomb sees readers 2 waiting true",
            "other read",
            "next write"
        ]
    );
    assert!(lock.is_write_locked() && !lock.has_waiters());
    assert_eq!(next.enter(), Status::Finished(()));
    assert!(!lock.is_locked() && !lock.has_waiters());
}

/// A coroutine that takes `n` permits, logs, yields once holding them, and gives them back.
fn taker(sem: &Rc<CoSemaphore>, log: &Log, name: &'static str, n: usize) -> Coroutine {
    let (s, l) = (sem.clone(), log.clone());
    Coroutine::new(move || {
        let p = s.acquire(n);
        l.borrow_mut().push(format!("{name} got {}", p.permits()));
        yield_now();
    })
}

/// A holder of all 3 permits that gives them back after the fuse is lit.
fn sem_holder(sem: &Rc<CoSemaphore>, slot: &Slot) -> Coroutine {
    let (sm, s) = (sem.clone(), slot.clone());
    Coroutine::new(move || {
        let p = sm.acquire(3);
        yield_now();
        let handles = light_the_fuse(&s);
        drop(p); // hands 2 permits to `granted`
        drop(handles);
    })
}

fn sem_bomb(sem: &Rc<CoSemaphore>, log: &Log) -> Coroutine {
    let (sm, l) = (sem.clone(), log.clone());
    bomb(move || {
        l.borrow_mut().push(format!(
            "bomb sees permits {} waiting {}",
            sm.available_permits(),
            sm.has_waiters()
        ));
    })
}

/// A waiter handed permits but dropped before it ran gives them back, and they go to the next
/// waiter.
#[test]
fn semaphore_waiter_dropped_after_hand_off_passes_the_permits_on() {
    let _deadline = deadline::arm();
    let sem = Rc::new(CoSemaphore::new(3));
    let log: Log = Rc::default();
    let slot: Slot = Rc::default();
    let holder = sem_holder(&sem, &slot);
    let bomb = sem_bomb(&sem, &log);
    let granted = taker(&sem, &log, "granted", 2);
    let next = taker(&sem, &log, "next", 3);

    let _ = holder.enter();
    let _ = bomb.enter();
    assert_eq!(granted.enter(), Status::Yielded);
    assert_eq!(next.enter(), Status::Yielded);
    assert_eq!(sem.available_permits(), 0);

    hand_off_and_explode(&holder, &slot, bomb, granted);
    // The release handed 2 to `granted` (1 left, not enough for `next`); dropped unrun, it gave
    // them back, and all 3 went to `next`.
    assert_eq!(
        log_of(&log),
        ["bomb sees permits 1 waiting true", "next got 3"]
    );
    assert_eq!(sem.available_permits(), 0);
    assert!(!sem.has_waiters());
    assert_eq!(next.enter(), Status::Finished(()));
    assert_eq!(sem.available_permits(), 3);
}

/// With nobody behind it, the permits of a waiter dropped after the hand-off come back.
#[test]
fn semaphore_waiter_dropped_after_hand_off_gives_the_permits_back() {
    let _deadline = deadline::arm();
    let sem = Rc::new(CoSemaphore::new(3));
    let log: Log = Rc::default();
    let slot: Slot = Rc::default();
    let holder = sem_holder(&sem, &slot);
    let bomb = sem_bomb(&sem, &log);
    let granted = taker(&sem, &log, "granted", 2);

    let _ = holder.enter();
    let _ = bomb.enter();
    assert_eq!(granted.enter(), Status::Yielded);

    hand_off_and_explode(&holder, &slot, bomb, granted);
    assert_eq!(log_of(&log), ["bomb sees permits 1 waiting false"]);
    assert_eq!(sem.available_permits(), 3);
    assert!(!sem.has_waiters());
}
