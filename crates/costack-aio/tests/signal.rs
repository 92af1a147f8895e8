//! Signals: every listener receives every delivery exactly once, in one loop, in several loops,
//! on plain threads; deliveries wait in the listener while it is busy; bad signal numbers are
//! refused.
//!
//! Every listener in the process sees every delivery of its signals, and the tests of this file
//! run in parallel: each test uses a signal of its own.

#[path = "common/threads.rs"]
mod threads;

use costack_aio::select::Selectable;
use costack_aio::signal::{Signals, SIGHUP, SIGUSR1, SIGUSR2};
use costack_aio::{spawn, timeout, yield_now, EventLoop};
use std::io;
use std::sync::mpsc;
use std::time::Duration;
use threads::bounded;

const LIMIT: Duration = Duration::from_secs(10);

/// Sends `sig` to the calling thread. The handler has run (every listener has counted it)
/// when this returns, since the signal is not blocked.
fn raise(sig: i32) {
    // SAFETY: raise(3) only sends a signal to this thread; the tests install a handler first.
    assert_eq!(unsafe { libc::raise(sig) }, 0);
}

/// Sends `sig` to the process (any thread may take it).
fn kill_self(sig: i32) {
    // SAFETY: kill(2) sends a signal to this process, which has a handler for it.
    assert_eq!(unsafe { libc::kill(libc::getpid(), sig) }, 0);
}

#[test]
fn every_listener_receives_every_raise_exactly_once() {
    bounded(60, || {
        const N: usize = 5;
        // A listener in a task of a second loop, on its own thread, driven step by step.
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (got_tx, got_rx) = mpsc::channel::<(i32, Option<i32>)>();
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            EventLoop::new().block_on(move || {
                let mut s = Signals::new(&[SIGUSR1]).unwrap();
                ready_tx.send(()).unwrap();
                for _ in 0..N {
                    go_rx.recv().unwrap();
                    let sig = timeout(LIMIT, || s.recv().unwrap()).expect("no signal");
                    got_tx.send((sig, s.try_recv())).unwrap();
                }
            })
        });
        // A listener on a plain thread (recv blocks in poll), driven the same way.
        let (pgo_tx, pgo_rx) = mpsc::channel::<()>();
        let (pgot_tx, pgot_rx) = mpsc::channel::<(i32, Option<i32>)>();
        let (pready_tx, pready_rx) = mpsc::channel::<()>();
        let plain = std::thread::spawn(move || {
            let mut s = Signals::new(&[SIGUSR1]).unwrap();
            pready_tx.send(()).unwrap();
            for _ in 0..N {
                pgo_rx.recv().unwrap();
                let sig = s.recv().unwrap();
                pgot_tx.send((sig, s.try_recv())).unwrap();
            }
        });
        ready_rx.recv().unwrap();
        pready_rx.recv().unwrap();
        // Two listeners in tasks of this loop.
        EventLoop::new().block_on(move || {
            let mut a = Signals::new(&[SIGUSR1]).unwrap();
            let mut b = Signals::new(&[SIGUSR1, SIGUSR1]).unwrap();
            assert_eq!(b.signals().collect::<Vec<_>>(), [SIGUSR1]);
            for _ in 0..N {
                raise(SIGUSR1);
                assert_eq!(a.pending(), 1);
                let waiter = spawn(move || {
                    let sig = timeout(LIMIT, || b.recv().unwrap()).expect("no signal");
                    (sig, b.try_recv(), b)
                });
                let sig = timeout(LIMIT, || a.recv().unwrap()).expect("no signal");
                assert_eq!((sig, a.try_recv()), (SIGUSR1, None));
                let (sig, again, back) = waiter.join();
                assert_eq!((sig, again), (SIGUSR1, None));
                b = back;
                go_tx.send(()).unwrap();
                assert_eq!(got_rx.recv().unwrap(), (SIGUSR1, None));
                pgo_tx.send(()).unwrap();
                assert_eq!(pgot_rx.recv().unwrap(), (SIGUSR1, None));
            }
            assert_eq!((a.pending(), b.pending()), (0, 0));
        });
        other.join().unwrap();
        plain.join().unwrap();
    });
}

#[test]
fn deliveries_wait_while_the_listener_is_busy_and_wake_a_waiting_task() {
    bounded(60, || {
        EventLoop::new().block_on(|| {
            let mut s = Signals::new(&[SIGUSR2]).unwrap();
            // Raised while nobody receives, across many turns of the loop: all counted.
            let ticker = spawn(|| {
                for _ in 0..100 {
                    yield_now();
                }
            });
            for _ in 0..3 {
                raise(SIGUSR2);
                for _ in 0..10 {
                    yield_now();
                }
            }
            ticker.join();
            assert_eq!(s.pending(), 3);
            let got: Vec<i32> = (0..3).map(|_| s.recv().unwrap()).collect();
            assert_eq!(got, [SIGUSR2; 3]);
            assert_eq!(s.try_recv(), None);
            assert_eq!(s.pending(), 0);

            // A task parked in `recv` is woken by a delivery: through the loop's epoll.
            let waiter = spawn(move || {
                let sig = timeout(LIMIT, || s.recv().unwrap()).expect("no signal");
                (sig, s.try_recv())
            });
            yield_now(); // the waiter runs and parks in recv
            assert!(!waiter.is_finished());
            raise(SIGUSR2);
            assert_eq!(waiter.join(), (SIGUSR2, None));
        });
    });
}

#[test]
fn signals_sent_to_the_process_from_another_thread_wake_a_task() {
    bounded(60, || {
        let sig = libc::SIGRTMIN() + 1;
        EventLoop::new().block_on(move || {
            const N: usize = 20;
            let mut s = Signals::new(&[sig]).unwrap();
            let (ack_tx, ack_rx) = mpsc::channel::<()>();
            let sender = std::thread::spawn(move || {
                for _ in 0..N {
                    kill_self(sig);
                    // The next one only after this one was received.
                    ack_rx.recv().unwrap();
                }
            });
            for _ in 0..N {
                assert_eq!(timeout(LIMIT, || s.recv().unwrap()), Ok(sig));
                ack_tx.send(()).unwrap();
            }
            sender.join().unwrap();
            assert_eq!(s.try_recv(), None);
        });
    });
}

#[test]
fn a_listener_is_an_iterator_and_takes_several_signals_in_turn() {
    bounded(60, || {
        let (x, y) = (libc::SIGRTMIN() + 2, libc::SIGRTMIN() + 3);
        let mut s = Signals::new(&[y, x]).unwrap();
        assert_eq!(s.signals().collect::<Vec<_>>(), [x, y]);
        // A flood of `x` does not hide `y`: pending signals are taken in turn.
        for _ in 0..3 {
            raise(x);
        }
        raise(y);
        assert_eq!(s.pending(), 4);
        let got: Vec<i32> = s.by_ref().take(4).map(Result::unwrap).collect();
        assert_eq!(got, [x, y, x, x]);
        assert_eq!(s.try_recv(), None);
    });
}

#[test]
fn standard_signals_coalesce_in_the_kernel_real_time_ones_queue() {
    bounded(60, || {
        let rt = libc::SIGRTMIN() + 4;
        let mut s = Signals::new(&[SIGHUP, rt]).unwrap();
        // SAFETY: plain sigset manipulation on a local set; pthread_sigmask only changes this
        // thread's mask (the signals raised below are directed at this thread).
        let set = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, SIGHUP);
            libc::sigaddset(&mut set, rt);
            assert_eq!(
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()),
                0
            );
            set
        };
        for _ in 0..2 {
            raise(SIGHUP);
            raise(rt);
        }
        assert_eq!(s.pending(), 0, "blocked: not handled yet");
        // SAFETY: as above; unblocking delivers the pending signals to this thread at once.
        let r = unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
        assert_eq!(r, 0);
        let mut got: Vec<i32> = (0..3).map(|_| s.recv().unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, [SIGHUP, rt, rt]);
        assert_eq!(s.try_recv(), None);
    });
}

#[test]
fn a_listener_sees_only_what_comes_after_it_and_dropping_keeps_the_process_alive() {
    bounded(60, || {
        let sig = libc::SIGRTMIN() + 5;
        let first = Signals::new(&[sig]).unwrap();
        raise(sig);
        let second = Signals::new(&[sig]).unwrap();
        assert_eq!((first.pending(), second.pending()), (1, 0));
        raise(sig);
        assert_eq!((first.pending(), second.pending()), (2, 1));
        drop(first);
        raise(sig);
        assert_eq!(second.pending(), 2);
        drop(second);
        // No listener left: the handler stays installed and the signal is ignored (its
        // default action, ending the process, does not come back).
        raise(sig);
        let mut third = Signals::new(&[sig]).unwrap();
        assert_eq!(third.try_recv(), None);
        raise(sig);
        assert_eq!(third.try_recv(), Some(sig));
        assert_eq!(third.try_recv(), None);
    });
}

#[test]
fn a_listener_can_move_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Signals>();
    bounded(60, || {
        let sig = libc::SIGRTMIN() + 8;
        let mut s = Signals::new(&[sig]).unwrap();
        raise(sig);
        // Received on another thread, in a task of another loop.
        let s = std::thread::spawn(move || {
            EventLoop::new().block_on(move || {
                assert_eq!(timeout(LIMIT, || s.recv().unwrap()), Ok(sig));
                s
            })
        })
        .join()
        .unwrap();
        assert_eq!(s.pending(), 0);
    });
}

#[test]
fn bad_signal_numbers_are_refused() {
    let refused = |list: &[i32]| match Signals::new(list) {
        Err(e) => {
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{list:?}: {e}");
            e.to_string()
        }
        Ok(_) => panic!("{list:?} accepted"),
    };
    assert!(refused(&[]).contains("at least one signal"));
    for bad in [0, -1, 65, 1000, i32::MAX, i32::MIN] {
        assert!(refused(&[bad]).contains("not a signal number"), "{bad}");
    }
    for bad in [
        libc::SIGKILL,
        libc::SIGSTOP,
        libc::SIGSEGV,
        libc::SIGILL,
        libc::SIGFPE,
    ] {
        assert!(refused(&[bad]).contains("cannot be caught"), "{bad}");
    }
    assert!(refused(&[32]).contains("keeps this real-time signal"));
    // One bad signal in the list: nothing is registered.
    assert!(refused(&[SIGUSR1, libc::SIGKILL]).contains("cannot be caught"));
}

/// Drives a `Selectable` branch the way a select does: try, register, try again, park, and
/// after each wake try again; deregisters at the end. Returns the value and how many times it
/// parked.
fn select_one<S: Selectable>(branch: &mut S, mut before_park: impl FnMut()) -> (S::Output, u32) {
    let mut parks = 0;
    let out = loop {
        if let Some(v) = branch.try_select() {
            break v;
        }
        let mut won = None;
        costack_aio::suspend(|w| {
            branch.register(&w);
            won = branch.try_select();
            if won.is_some() {
                w.wake();
            } else {
                before_park();
            }
        });
        if let Some(v) = won {
            break v;
        }
        parks += 1;
    };
    branch.deregister();
    (out, parks)
}

#[test]
fn a_recv_branch_wakes_a_select_in_a_task_and_on_a_plain_thread() {
    bounded(60, || {
        let sig = libc::SIGRTMIN() + 6;
        let mut s = Signals::new(&[sig]).unwrap();
        // Plain thread: the signal comes from another thread while this one is parked.
        let (tx, rx) = mpsc::channel::<()>();
        let sender = std::thread::spawn(move || {
            for _ in 0..3 {
                rx.recv().unwrap();
                kill_self(sig);
            }
        });
        for _ in 0..3 {
            let (got, parks) = select_one(&mut s.recv_branch(), || tx.send(()).unwrap());
            assert_eq!(got, sig);
            assert!(parks >= 1, "it had to wait");
            assert_eq!(s.pending(), 0);
        }
        sender.join().unwrap();
        // In a task: parked in the select, woken through its loop. A pending delivery wins at
        // once, without parking.
        EventLoop::new().block_on(move || {
            raise(sig);
            assert_eq!(select_one(&mut s.recv_branch(), || {}), (sig, 0));
            let (got, parks) = timeout(LIMIT, || select_one(&mut s.recv_branch(), || raise(sig)))
                .expect("not woken");
            assert_eq!(got, sig);
            assert!(parks >= 1);
            assert_eq!(s.try_recv(), None);
        });
    });
}

#[test]
fn a_losing_recv_branch_takes_nothing() {
    bounded(60, || {
        let sig = libc::SIGRTMIN() + 7;
        let mut s = Signals::new(&[sig]).unwrap();
        let mut branch = s.recv_branch();
        assert_eq!(branch.try_select(), None);
        // Registered, then withdrawn without a win: the delivery stays in the listener.
        costack_aio::suspend(|w| {
            branch.register(&w);
            branch.deregister();
            w.wake();
        });
        drop(branch);
        raise(sig);
        assert_eq!(s.pending(), 1);
        assert_eq!(s.try_recv(), Some(sig));
    });
}
