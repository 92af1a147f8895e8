//! `select!` and `select_any`: which branch wins, what each kind of branch yields and leaves
//! behind, deregistration on every exit path, selects in timeouts, in nested coroutines and on
//! plain threads, and a model test that a select never loses or duplicates a value.

use costack::{Generator, GeneratorState};
use costack_aio::io::{self as aio_io, AsyncFd};
use costack_aio::net::{TcpListener, TcpStream};
use costack_aio::select::{select_any, sleep as sleep_branch, sleep_until, Flag, Selectable};
use costack_aio::{sleep, spawn, suspend, timeout, yield_now, EventLoop, JoinError, Waker};
use proptest::prelude::*;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "common/threads.rs"]
mod threads;
use threads::bounded;

// ---------------------------------------------------------------------------------------------
// A test-local source: a queue with any number of registered wakers, counting registrations.

#[derive(Default)]
struct Queue<T> {
    items: VecDeque<T>,
    /// Live registrations: branch id and its waker.
    waiters: Vec<(u64, Waker)>,
    registers: usize,
    deregisters: usize,
    next_id: u64,
}

#[derive(Clone, Default)]
struct Source<T>(Rc<RefCell<Queue<T>>>);

impl<T> Source<T> {
    fn push(&self, v: T) {
        let waiters = {
            let mut q = self.0.borrow_mut();
            q.items.push_back(v);
            std::mem::take(&mut q.waiters)
        };
        for (_, w) in waiters {
            w.wake();
        }
    }

    fn branch(&self) -> Recv<T> {
        let mut q = self.0.borrow_mut();
        q.next_id += 1;
        Recv {
            q: self.0.clone(),
            id: q.next_id,
        }
    }

    fn counts(&self) -> (usize, usize, usize) {
        let q = self.0.borrow();
        (q.registers, q.deregisters, q.waiters.len())
    }
}

struct Recv<T> {
    q: Rc<RefCell<Queue<T>>>,
    id: u64,
}

impl<T> Selectable for Recv<T> {
    type Output = T;

    fn try_select(&mut self) -> Option<T> {
        self.q.borrow_mut().items.pop_front()
    }

    fn register(&mut self, waker: &Waker) {
        let mut q = self.q.borrow_mut();
        q.registers += 1;
        let id = self.id;
        q.waiters.retain(|(i, _)| *i != id);
        q.waiters.push((id, waker.clone()));
    }

    fn deregister(&mut self) {
        let mut q = self.q.borrow_mut();
        q.deregisters += 1;
        let id = self.id;
        q.waiters.retain(|(i, _)| *i != id);
    }
}

/// A branch whose `try_select` panics once it has been registered.
struct PanicsWhenTried {
    registered: bool,
    deregisters: Rc<Cell<usize>>,
}

impl Selectable for PanicsWhenTried {
    type Output = ();

    fn try_select(&mut self) -> Option<()> {
        if self.registered {
            panic!("branch blew up");
        }
        None
    }

    fn register(&mut self, _: &Waker) {
        self.registered = true;
    }

    fn deregister(&mut self) {
        self.deregisters.set(self.deregisters.get() + 1);
    }
}

fn pair() -> (AsyncFd<StdUnixStream>, StdUnixStream) {
    let (a, b) = StdUnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    (AsyncFd::new(a), b)
}

// ---------------------------------------------------------------------------------------------
// Which branch wins

#[test]
fn ready_branches_are_tried_in_order_and_the_first_wins() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let a = Source::default();
        let b = Source::default();
        a.push(1);
        b.push(2);
        let got = costack_aio::select! {
            v = b.branch() => ("b", v),
            v = a.branch() => ("a", v),
        };
        assert_eq!(got, ("b", 2));
        // The loser took nothing; nothing was registered (the first try won).
        assert_eq!(a.0.borrow().items, [1]);
        assert_eq!(a.counts(), (0, 1, 0));
        assert_eq!(b.counts(), (0, 1, 0));
        // `biased;` is the same as the default.
        let got = costack_aio::select! {
            biased;
            v = a.branch() => v,
            () = sleep_until(Instant::now()) => 0,
        };
        assert_eq!(got, 1);
    });
}

#[test]
fn fair_selects_rotate_the_first_branch_tried() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let mut wins = [0; 3];
        for _ in 0..30 {
            let now = Instant::now();
            let i = costack_aio::select! {
                fair;
                () = sleep_until(now) => 0,
                () = sleep_until(now) => 1,
                () = sleep_until(now) => 2,
            };
            wins[i] += 1;
        }
        assert_eq!(wins, [10, 10, 10]);
        // Without `fair;` the first ready branch always wins.
        let mut wins = [0; 3];
        for _ in 0..30 {
            let now = Instant::now();
            let i = costack_aio::select! {
                () = sleep_until(now) => 0,
                () = sleep_until(now) => 1,
                () = sleep_until(now) => 2,
            };
            wins[i] += 1;
        }
        assert_eq!(wins, [30, 0, 0]);
    });
}

#[test]
fn a_value_that_arrives_later_wakes_the_select() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let a: Source<u32> = Source::default();
        let b: Source<u32> = Source::default();
        let b2 = b.clone();
        let producer = spawn(move || {
            yield_now();
            b2.push(7);
        });
        let got = costack_aio::select! {
            v = a.branch() => ("a", v),
            v = b.branch() => ("b", v),
            () = sleep_branch(Duration::from_secs(60)) => ("timer", 0),
        };
        assert_eq!(got, ("b", 7));
        producer.join();
        // One registration each, all withdrawn.
        assert_eq!(a.counts(), (1, 1, 0));
        assert_eq!(b.counts(), (1, 1, 0));
    });
}

#[test]
fn arms_may_be_blocks_or_expressions_and_use_what_the_branches_borrowed() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let mut h = spawn(|| 5);
        let mut other = spawn(|| {
            sleep(Duration::from_secs(60));
            0
        });
        let v = costack_aio::select! {
            r = other.join_branch() => { r.unwrap() }
            r = h.join_branch() => {
                // The branches (and their `&mut` borrows) are gone before the arm runs.
                assert!(h.is_finished());
                r.unwrap() * 2
            }
        };
        assert_eq!(v, 10);
        other.cancel();
    });
}

// ---------------------------------------------------------------------------------------------
// Timers

#[test]
fn timer_branches_fire_at_their_deadline_never_early() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let t0 = Instant::now();
        let which = costack_aio::select! {
            () = sleep_branch(Duration::from_secs(60)) => "late",
            () = sleep_until(t0 + Duration::from_millis(15)) => "deadline",
            () = sleep_branch(Duration::from_millis(30)) => "middle",
        };
        assert_eq!(which, "deadline");
        assert!(t0.elapsed() >= Duration::from_millis(15));
        // A deadline in the past fires at once; a duration too long never fires.
        let which = costack_aio::select! {
            () = sleep_branch(Duration::MAX) => "never",
            () = sleep_until(t0) => "past",
        };
        assert_eq!(which, "past");
    });
}

// ---------------------------------------------------------------------------------------------
// Join handles

#[test]
fn join_branches_give_the_result_and_losers_stay_joinable() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let mut fast = spawn(|| "fast");
        let mut slow = spawn(|| {
            sleep(Duration::from_millis(10));
            "slow"
        });
        let mut bad = spawn(|| -> &str {
            sleep(Duration::from_millis(5));
            panic!("boom")
        });
        let r = costack_aio::select! {
            r = slow.join_branch() => r,
            r = fast.join_branch() => r,
        };
        assert_eq!(r.unwrap(), "fast");
        // `fast` is spent: joining it again says so.
        let e = catch_unwind(AssertUnwindSafe(|| fast.join())).unwrap_err();
        assert!(e
            .downcast_ref::<&str>()
            .unwrap()
            .contains("already taken by a select"));
        // The panicking task (5 ms) wins next, as a JoinError::Panicked with its payload.
        let r = costack_aio::select! {
            r = bad.join_branch() => r,
            r = slow.join_branch() => r,
        };
        match r {
            Err(JoinError::Panicked(p)) => assert_eq!(*p.downcast::<&str>().unwrap(), "boom"),
            other => panic!("expected a panic, got {other:?}"),
        }
        assert_eq!(slow.join(), "slow");
    });
}

#[test]
fn outside_any_task_a_select_runs_the_threads_loop_while_it_waits() {
    bounded(10, || {
        let lp = EventLoop::new();
        // A join: the task runs on the loop the select drives.
        let mut h = lp.spawn(|| {
            sleep(Duration::from_millis(2));
            1
        });
        let mut other = lp.spawn(|| {
            sleep(Duration::from_secs(60));
            0
        });
        let r = costack_aio::select! {
            r = other.join_branch() => r.unwrap(),
            r = h.join_branch() => r.unwrap(),
            () = sleep_branch(Duration::from_secs(60)) => -1,
        };
        assert_eq!(r, 1);
        // A value a task of the loop sends.
        let src: Source<u32> = Source::default();
        let s2 = src.clone();
        lp.spawn(move || {
            yield_now();
            s2.push(5);
        });
        assert_eq!(costack_aio::select! { v = src.branch() => v }, 5);
        assert_eq!(src.counts(), (1, 1, 0));
        // A timer, with nothing else for the loop to do: the loop's wait is bounded by it.
        let t0 = Instant::now();
        let r = costack_aio::select! {
            r = other.join_branch() => r.unwrap(),
            () = sleep_branch(Duration::from_millis(5)) => -1,
        };
        assert_eq!(r, -1);
        assert!(t0.elapsed() >= Duration::from_millis(5));
        // A wake from another thread ends the loop's wait for events.
        let flag = Flag::new();
        let f2 = flag.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5));
            f2.raise();
        });
        let r = costack_aio::select! {
            r = other.join_branch() => r.unwrap(),
            () = flag.branch() => 7,
        };
        assert_eq!(r, 7);
        t.join().unwrap();
        // Readiness, written by another thread.
        let (a, b) = pair();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5));
            (&b).write_all(b"x").unwrap();
            b
        });
        let r = costack_aio::select! {
            r = other.join_branch() => r.unwrap(),
            r = a.readable_branch() => { r.unwrap(); 8 }
        };
        assert_eq!(r, 8);
        drop(t.join().unwrap());
        other.cancel();
    });
}

#[test]
fn a_select_that_must_wait_in_a_call_soon_callback_panics_with_a_message() {
    let lp = EventLoop::new();
    let msg: Rc<RefCell<Option<String>>> = Rc::default();
    let m2 = msg.clone();
    lp.call_soon(move || {
        let flag = Flag::new();
        let e = catch_unwind(AssertUnwindSafe(|| {
            costack_aio::select! { () = flag.branch() => () }
        }))
        .unwrap_err();
        *m2.borrow_mut() = e
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| e.downcast_ref::<String>().cloned());
    });
    lp.block_on(yield_now);
    let msg = msg.borrow().clone().unwrap();
    assert!(msg.contains("already running"), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// Readiness

#[test]
fn readiness_branches_fire_when_ready_and_consume_nothing() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let (a, b) = pair();
        let idle = costack_aio::select! {
            r = a.readable_branch() => { r.unwrap(); false }
            () = sleep_branch(Duration::from_millis(5)) => true,
        };
        assert!(idle);
        let writer = spawn(move || {
            yield_now();
            (&b).write_all(b"ping").unwrap();
            b
        });
        let got = costack_aio::select! {
            r = a.readable_branch() => r.map(|()| "readable"),
            () = sleep_branch(Duration::from_secs(60)) => Ok("timer"),
        };
        assert_eq!(got.unwrap(), "readable");
        let b = writer.join();
        // Still readable: the branch consumed nothing.
        let again = costack_aio::select! {
            r = a.readable_branch() => r.is_ok(),
        };
        assert!(again);
        let mut buf = [0; 8];
        let n = a.read_with(|s| (&*s).read(&mut buf)).unwrap();
        assert_eq!(&buf[..n], b"ping");
        // A socket with room in its buffer is writable at once.
        let w = costack_aio::select! {
            r = a.writable_branch() => r.is_ok(),
        };
        assert!(w);
        drop(b);
    });
}

#[test]
fn readiness_of_sockets_and_of_any_fd() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = spawn(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(b"hi").unwrap();
            c
        });
        let r = costack_aio::select! {
            r = listener.readable_branch() => r.map(|()| "accept"),
            () = sleep_branch(Duration::from_secs(60)) => Ok("timer"),
        };
        assert_eq!(r.unwrap(), "accept");
        let (mut s, _) = listener.accept().unwrap();
        let r = costack_aio::select! {
            r = s.readable_branch() => r.is_ok(),
            () = sleep_branch(Duration::from_secs(60)) => false,
        };
        assert!(r);
        let mut buf = [0; 2];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
        drop(client.join());

        // Any fd, registered for the branch alone.
        let (x, y) = StdUnixStream::pair().unwrap();
        x.set_nonblocking(true).unwrap();
        let r = costack_aio::select! {
            r = aio_io::readable_branch(x.as_fd()) => r.is_ok(),
            () = sleep_branch(Duration::from_millis(5)) => false,
        };
        assert!(!r);
        (&y).write_all(b"z").unwrap();
        let r = costack_aio::select! {
            r = aio_io::readable_branch(x.as_fd()) => r.is_ok(),
            () = sleep_branch(Duration::from_secs(60)) => false,
        };
        assert!(r);
    });
}

#[test]
fn a_readiness_branch_works_on_an_fd_registered_elsewhere() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let (a, b) = pair();
        let a = Rc::new(a);
        // Register `a` with the loop: a read that must wait.
        let a2 = a.clone();
        let reader = spawn(move || {
            let mut buf = [0; 1];
            a2.read_with(|s| (&*s).read(&mut buf)).unwrap()
        });
        yield_now();
        // The branch registers a duplicate of the fd: it waits (it used to fire at once with
        // `AlreadyExists`), and loses to the timer as nothing was written.
        let t0 = Instant::now();
        let r = costack_aio::select! {
            r = aio_io::readable_branch(a.as_fd()) => Some(r),
            () = sleep_branch(Duration::from_millis(10)) => None,
        };
        assert!(r.is_none(), "{r:?}");
        assert!(t0.elapsed() >= Duration::from_millis(10));
        // And it fires, as does the reader, once there is something to read.
        let writer = spawn(move || {
            sleep(Duration::from_millis(2));
            (&b).write_all(b"x").unwrap();
            b
        });
        let r = costack_aio::select! {
            r = aio_io::readable_branch(a.as_fd()) => Some(r),
            () = sleep_branch(Duration::from_secs(60)) => None,
        };
        assert!(matches!(r, Some(Ok(()))), "{r:?}");
        assert_eq!(reader.join(), 1);
        drop(writer.join());
    });
}

/// A readiness branch on a bare fd, waiting in a task, does not keep the fd's owner (a socket
/// of this crate) from registering it: the owner's read used to fail with `AlreadyExists`.
#[test]
fn a_socket_registers_and_reads_while_a_readiness_branch_waits_on_its_fd() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let (a, b) = StdUnixStream::pair().unwrap();
        let a = Rc::new(costack_aio::net::UnixStream::from_std(a).unwrap());
        let a2 = a.clone();
        let sel = spawn(move || {
            costack_aio::select! {
                r = aio_io::readable_branch(a2.as_fd()) => Some(r.map_err(|e| e.kind())),
                () = sleep_branch(Duration::from_secs(60)) => None,
            }
        });
        yield_now(); // the branch waits, registered
        let reader = spawn(move || {
            let mut buf = [0u8; 4];
            (&*a).read(&mut buf).map(|n| buf[..n].to_vec())
        });
        yield_now(); // the read waits, registered too
        (&b).write_all(b"hi").unwrap();
        assert_eq!(reader.join().unwrap(), b"hi");
        assert_eq!(sel.join(), Some(Ok(())));
    });
}

#[test]
fn closing_an_fd_wakes_its_readiness_branch_with_an_error() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let (a, _b) = pair();
        let a = Rc::new(a);
        let a2 = a.clone();
        let closer = spawn(move || {
            yield_now();
            a2.close();
        });
        let r = costack_aio::select! {
            r = a.readable_branch() => r,
            () = sleep_branch(Duration::from_secs(60)) => Ok(()),
        };
        assert_eq!(r.unwrap_err().kind(), ErrorKind::NotConnected);
        closer.join();
    });
}

#[test]
fn a_finished_selects_readiness_waiter_does_not_wake_its_task_later() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let (a, b) = pair();
        // The timer wins; the readiness waiter must be withdrawn.
        let r = costack_aio::select! {
            r = a.readable_branch() => r.is_ok(),
            () = sleep_branch(Duration::from_millis(1)) => false,
        };
        assert!(!r);
        // Now wait for something else; make the socket readable meanwhile. The task must
        // resume exactly once: from the waker, not from the fd.
        let waker: Rc<RefCell<Option<Waker>>> = Rc::default();
        let w2 = waker.clone();
        let other = spawn(move || {
            (&b).write_all(b"late").unwrap();
            for _ in 0..10 {
                yield_now(); // plenty of turns for a stray wake to arrive
            }
            w2.borrow_mut().take().unwrap().wake();
            b
        });
        let mut resumes = 0;
        while waker.borrow().is_some() || resumes == 0 {
            let w = waker.clone();
            suspend(move |k| *w.borrow_mut() = Some(k));
            resumes += 1;
        }
        assert_eq!(resumes, 1, "the select's withdrawn waiter resumed the task");
        drop(other.join());
    });
}

// ---------------------------------------------------------------------------------------------
// Flags (cross-thread wake-ups)

#[test]
fn a_flag_raised_from_another_thread_wakes_a_select_and_a_loser_leaves_it_raised() {
    bounded(10, || {
        let lp = EventLoop::new();
        lp.block_on(|| {
            let flag = Flag::new();
            // Raised before the select: fires at once, and is lowered.
            flag.raise();
            flag.raise(); // raises do not count
            assert_eq!(costack_aio::select! { () = flag.branch() => 1 }, 1);
            assert!(!flag.is_raised());
            // Raised by another thread while the task waits.
            let f2 = flag.clone();
            let t = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(5));
                f2.raise();
            });
            let r = costack_aio::select! {
                () = flag.branch() => "flag",
                () = sleep_branch(Duration::from_secs(60)) => "timer",
            };
            assert_eq!(r, "flag");
            t.join().unwrap();
            // A losing flag branch consumes nothing.
            flag.raise();
            let r = costack_aio::select! {
                () = sleep_until(Instant::now()) => "timer",
                () = flag.branch() => "flag",
            };
            assert_eq!(r, "timer");
            assert!(flag.is_raised());
            assert_eq!(format!("{flag:?}"), "Flag { raised: true, waiting: 0 }");
        });
        // And on a plain thread.
        let flag = Flag::new();
        let f2 = flag.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5));
            f2.raise();
        });
        let r = costack_aio::select! {
            () = flag.branch() => "flag",
            () = sleep_branch(Duration::from_secs(60)) => "timer",
        };
        assert_eq!(r, "flag");
        t.join().unwrap();
    });
}

// ---------------------------------------------------------------------------------------------
// Deregistration on every exit path

#[test]
fn every_branch_is_deregistered_once_whatever_ends_the_select() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let a: Source<u32> = Source::default();
        let b: Source<u32> = Source::default();

        // A timer wins.
        let r = costack_aio::select! {
            v = a.branch() => Some(v),
            v = b.branch() => Some(v),
            () = sleep_branch(Duration::from_millis(30)) => None,
        };
        assert_eq!(r, None);
        assert_eq!(a.counts(), (1, 1, 0));
        assert_eq!(b.counts(), (1, 1, 0));

        // A `timeout` scope unwinds the select.
        let r = timeout(Duration::from_millis(2), || {
            costack_aio::select! {
                v = a.branch() => v,
                v = b.branch() => v,
            }
        });
        assert!(r.is_err());
        assert_eq!(a.counts(), (2, 2, 0));
        assert_eq!(b.counts(), (2, 2, 0));

        // A branch panics.
        let deregs = Rc::new(Cell::new(0));
        let d = deregs.clone();
        let r = catch_unwind(AssertUnwindSafe(|| {
            costack_aio::select! {
                v = a.branch() => v,
                () = PanicsWhenTried { registered: false, deregisters: d } => 0,
            }
        }));
        assert!(r.is_err());
        assert_eq!(deregs.get(), 1);
        assert_eq!(a.counts(), (3, 3, 0));

        // The task is cancelled while it waits in a select.
        let (a2, b2) = (a.clone(), b.clone());
        let h = spawn(move || {
            costack_aio::select! {
                v = a2.branch() => v,
                v = b2.branch() => v,
            }
        });
        yield_now();
        assert_eq!(a.counts(), (4, 3, 1));
        h.cancel();
        assert_eq!(a.counts(), (4, 4, 0));
        assert_eq!(b.counts(), (3, 3, 0));
        // Nothing was consumed along the way.
        a.push(9);
        assert_eq!(costack_aio::select! { v = a.branch() => v }, 9);
    });
}

#[test]
fn a_timeout_around_a_select_leaves_a_join_handle_joinable() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let go = Flag::new();
        let g2 = go.clone();
        let mut h = spawn(move || {
            costack_aio::select! { () = g2.branch() => 3 } // finishes when told to
        });
        let (a, _b) = pair();
        let r = timeout(Duration::from_millis(2), || {
            costack_aio::select! {
                r = h.join_branch() => r.unwrap(),
                r = a.readable_branch() => { r.unwrap(); 0 }
            }
        });
        assert!(r.is_err());
        go.raise();
        assert_eq!(h.join(), 3);
    });
}

// ---------------------------------------------------------------------------------------------
// Where a select works

#[test]
fn select_in_a_generator_nested_in_a_task() {
    bounded(10, || {
        let lp = EventLoop::new();
        lp.block_on(|| {
            let src: Source<u32> = Source::default();
            let s2 = src.clone();
            let producer = spawn(move || {
                for i in 0..3 {
                    sleep(Duration::from_millis(1));
                    s2.push(i);
                }
            });
            let s3 = src.clone();
            let mut g = Generator::<(), u32, ()>::new(move |y, ()| {
                for _ in 0..3 {
                    let v = costack_aio::select! {
                        v = s3.branch() => v,
                        () = sleep_branch(Duration::from_secs(60)) => 99,
                    };
                    y.suspend(v);
                }
            });
            let mut got = Vec::new();
            while let GeneratorState::Yielded(v) = g.resume(()) {
                got.push(v);
            }
            assert_eq!(got, [0, 1, 2]);
            producer.join();
        })
    });
}

/// A source fed from other threads (`Send`), for selects on plain threads.
#[derive(Clone, Default)]
struct SharedSlot(Arc<Mutex<(Option<u32>, Option<Waker>)>>);

impl SharedSlot {
    fn put(&self, v: u32) {
        let w = {
            let mut g = self.0.lock().unwrap();
            g.0 = Some(v);
            g.1.take()
        };
        if let Some(w) = w {
            w.wake();
        }
    }
}

impl Selectable for SharedSlot {
    type Output = u32;
    fn try_select(&mut self) -> Option<u32> {
        self.0.lock().unwrap().0.take()
    }
    fn register(&mut self, waker: &Waker) {
        self.0.lock().unwrap().1 = Some(waker.clone());
    }
    fn deregister(&mut self) {
        self.0.lock().unwrap().1 = None;
    }
}

#[test]
fn select_on_a_plain_thread() {
    bounded(10, || {
        // Woken from another thread.
        let slot = SharedSlot::default();
        let s2 = slot.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5));
            s2.put(4);
        });
        let v = costack_aio::select! {
            v = slot.clone() => v,
            () = sleep_branch(Duration::from_secs(60)) => 0,
        };
        assert_eq!(v, 4);
        t.join().unwrap();
        assert!(slot.0.lock().unwrap().1.is_none()); // deregistered

        // A timer.
        let t0 = Instant::now();
        let v = costack_aio::select! {
            v = slot.clone() => v,
            () = sleep_branch(Duration::from_millis(5)) => 0,
        };
        assert_eq!(v, 0);
        assert!(t0.elapsed() >= Duration::from_millis(5));

        // Readiness, written by another thread.
        let (a, b) = pair();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5));
            (&b).write_all(b"x").unwrap();
            b
        });
        let r = costack_aio::select! {
            r = a.readable_branch() => r.is_ok(),
            () = sleep_branch(Duration::from_secs(60)) => false,
        };
        assert!(r);
        drop(t.join().unwrap());
    });
}

#[test]
fn select_any_picks_the_first_ready_of_a_run_time_list() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let srcs: Vec<Source<u32>> = (0..4).map(|_| Source::default()).collect();
        let mut none: [Recv<u32>; 0] = [];
        assert!(select_any(&mut none).is_none());
        let s2 = srcs[2].clone();
        let p = spawn(move || {
            yield_now();
            s2.push(22);
        });
        let mut branches: Vec<_> = srcs.iter().map(Source::branch).collect();
        assert_eq!(select_any(&mut branches), Some((2, 22)));
        p.join();
        for s in &srcs {
            assert_eq!(s.counts(), (1, 1, 0));
        }
        srcs[3].push(3);
        srcs[1].push(1);
        assert_eq!(select_any(&mut branches), Some((1, 1)));
        assert_eq!(select_any(&mut branches), Some((3, 3)));
    });
}

// ---------------------------------------------------------------------------------------------
// Model: a select never loses or duplicates a value.

#[derive(Debug, Clone)]
struct Plan {
    /// Per source: the gaps (in yields) before each value its producer pushes.
    producers: Vec<Vec<u8>>,
    /// Per consumer: its selects' timeouts in microseconds (cycled); 0 = no timer branch.
    consumers: Vec<Vec<u16>>,
    /// Per consumer: whether its selects run inside a `timeout` scope instead of a timer branch.
    scoped: Vec<bool>,
}

fn plan() -> impl Strategy<Value = Plan> {
    (1usize..4, 1usize..4).prop_flat_map(|(ns, nc)| {
        (
            prop::collection::vec(prop::collection::vec(0u8..4, 0..25), ns),
            prop::collection::vec(prop::collection::vec(0u16..400, 1..6), nc),
            prop::collection::vec(any::<bool>(), nc),
        )
            .prop_map(|(producers, consumers, scoped)| Plan {
                producers,
                consumers,
                scoped,
            })
    })
}

fn run_plan(p: Plan) {
    let lp = EventLoop::new();
    lp.block_on(move || {
        let sources: Vec<Source<(usize, u32)>> =
            p.producers.iter().map(|_| Source::default()).collect();
        let total: usize = p.producers.iter().map(Vec::len).sum();
        let log: Rc<RefCell<Vec<(usize, u32)>>> = Rc::default();
        let mut hs = Vec::new();
        for (si, gaps) in p.producers.iter().enumerate() {
            let src = sources[si].clone();
            let gaps = gaps.clone();
            hs.push(spawn(move || {
                for (n, g) in gaps.into_iter().enumerate() {
                    for _ in 0..g {
                        yield_now();
                    }
                    src.push((si, n as u32));
                }
            }));
        }
        for (ci, timeouts) in p.consumers.iter().enumerate() {
            let sources = sources.clone();
            let log = log.clone();
            let timeouts = timeouts.clone();
            let scoped = p.scoped[ci];
            hs.push(spawn(move || {
                let mut k = 0;
                while log.borrow().len() < total {
                    let us = timeouts[k % timeouts.len()];
                    k += 1;
                    let mut branches: Vec<_> = sources.iter().map(Source::branch).collect();
                    let got = if scoped {
                        // Always bounded, so that the consumer sees the end.
                        timeout(Duration::from_micros(u64::from(us) + 50), || {
                            select_any(&mut branches)
                        })
                        .ok()
                        .flatten()
                        .map(|(_, v)| v)
                    } else {
                        // One select over the sources and a timer, through the macro.
                        costack_aio::select! {
                            r = BranchList(&mut branches) => r,
                            () = sleep_branch(Duration::from_micros(u64::from(us) + 50)) => None,
                        }
                    };
                    if let Some(v) = got {
                        log.borrow_mut().push(v);
                    }
                }
            }));
        }
        for h in hs {
            h.join();
        }
        let log = log.borrow();
        assert_eq!(log.len(), total, "a value was lost or duplicated");
        for (si, gaps) in p.producers.iter().enumerate() {
            let seen: Vec<u32> = log.iter().filter(|v| v.0 == si).map(|v| v.1).collect();
            let want: Vec<u32> = (0..gaps.len() as u32).collect();
            assert_eq!(
                seen, want,
                "source {si}: values lost, duplicated or out of order"
            );
        }
        for s in &sources {
            assert_eq!(s.counts().2, 0, "a registration was left behind");
        }
    });
}

/// Several sources as one branch (a select over them, tried in order), to nest in `select!`.
struct BranchList<'a, T>(&'a mut Vec<Recv<T>>);

impl<T> Selectable for BranchList<'_, T> {
    type Output = Option<T>;
    fn try_select(&mut self) -> Option<Option<T>> {
        self.0.iter_mut().find_map(|b| b.try_select()).map(Some)
    }
    fn register(&mut self, waker: &Waker) {
        for b in self.0.iter_mut() {
            b.register(waker);
        }
    }
    fn deregister(&mut self) {
        for b in self.0.iter_mut() {
            b.deregister();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn selects_never_lose_or_duplicate_a_value(p in plan()) {
        run_plan(p);
    }
}
