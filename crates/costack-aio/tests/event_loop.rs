//! The loop itself: block_on, spawn and join, cancel, detach, callbacks, shutdown.

use costack_aio::net::{TcpListener, TcpStream};
use costack_aio::{
    call_soon, sleep, spawn, yield_now, EventLoop, JoinError, TaskBuilder, WakeableSleep,
};
use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::time::Duration;

/// Counts its drops.
struct Tracked(Rc<Cell<usize>>);

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

#[test]
fn block_on_returns_the_value_and_runs_in_a_task() {
    let lp = EventLoop::new();
    let v = lp.block_on(|| {
        assert!(costack::in_coroutine());
        assert!(costack_aio::in_task());
        sleep(Duration::from_millis(1));
        7
    });
    assert_eq!(v, 7);
    assert!(!costack_aio::in_task());
}

#[test]
fn block_on_inside_a_coroutine_just_calls_the_closure() {
    let lp = Rc::new(EventLoop::new());
    let lp2 = lp.clone();
    let v = lp.block_on(move || {
        let me = costack::current().unwrap().id();
        lp2.block_on(move || costack::current().unwrap().id() == me)
    });
    assert!(v);
}

#[test]
fn one_loop_per_thread() {
    let _lp = EventLoop::new();
    let e = EventLoop::builder().build().unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
}

#[test]
fn a_new_loop_after_the_old_one_is_dropped() {
    drop(EventLoop::new());
    let lp = EventLoop::new();
    assert_eq!(lp.block_on(|| 1), 1);
}

#[test]
fn spawn_and_join_many() {
    let lp = EventLoop::new();
    let sum = lp.block_on(|| {
        let hs: Vec<_> = (0..100u64)
            .map(|i| {
                spawn(move || {
                    sleep(Duration::from_micros(100 * (i % 7)));
                    i
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join()).sum::<u64>()
    });
    assert_eq!(sum, 4950);
    assert_eq!(lp.task_count(), 0);
}

#[test]
fn join_continues_the_panic() {
    let lp = EventLoop::new();
    let r = lp.block_on(|| {
        let h = spawn(|| -> u32 { panic!("boom in task") });
        catch_unwind(AssertUnwindSafe(|| h.join()))
    });
    let p = r.unwrap_err();
    assert_eq!(p.downcast_ref::<&str>(), Some(&"boom in task"));

    let r = lp.block_on(|| spawn(|| -> u32 { panic!("again") }).try_join());
    match r {
        Err(JoinError::Panicked(p)) => assert_eq!(p.downcast_ref::<&str>(), Some(&"again")),
        other => panic!("expected the task's panic, got {other:?}"),
    }
}

#[test]
fn block_on_continues_the_panic() {
    let lp = EventLoop::new();
    let r = catch_unwind(AssertUnwindSafe(|| lp.block_on(|| panic!("outer"))));
    assert_eq!(r.unwrap_err().downcast_ref::<&str>(), Some(&"outer"));
    // The loop is still usable.
    assert_eq!(lp.block_on(|| 3), 3);
}

#[test]
fn join_outside_a_coroutine_drives_the_loop() {
    let lp = EventLoop::new();
    let h = lp.spawn(|| {
        sleep(Duration::from_millis(2));
        "done"
    });
    assert!(!h.is_finished());
    assert_eq!(h.join(), "done");
}

#[test]
fn dropping_a_join_handle_detaches() {
    let lp = EventLoop::new();
    let ran = Rc::new(Cell::new(false));
    let r2 = ran.clone();
    lp.block_on(move || {
        drop(spawn(move || {
            sleep(Duration::from_millis(2));
            r2.set(true);
        }));
        sleep(Duration::from_millis(20));
    });
    assert!(ran.get());
}

#[test]
fn cancel_unwinds_a_suspended_task() {
    let lp = EventLoop::new();
    let drops = Rc::new(Cell::new(0));
    let d = drops.clone();
    lp.block_on(move || {
        let d2 = d.clone();
        let h = spawn(move || {
            let _t = Tracked(d2);
            sleep(Duration::from_secs(3600));
            unreachable!();
        });
        yield_now(); // let it start and suspend
        assert_eq!(d.get(), 0);
        h.cancel();
        assert_eq!(d.get(), 1, "the stack unwound inside cancel");
    });
    assert_eq!(drops.get(), 1);
    assert_eq!(lp.task_count(), 0);
}

#[test]
fn cancel_a_task_that_never_ran_drops_its_closure() {
    let lp = EventLoop::new();
    let drops = Rc::new(Cell::new(0));
    let t = Tracked(drops.clone());
    let h = lp.spawn(move || drop(t));
    h.cancel();
    assert_eq!(drops.get(), 1);
    assert_eq!(lp.task_count(), 0);
    lp.block_on(|| ()); // the stale ready entry is ignored
}

#[test]
fn a_task_can_cancel_itself() {
    let lp = EventLoop::new();
    let drops = Rc::new(Cell::new(0));
    let slot: Rc<RefCell<Option<costack_aio::JoinHandle<()>>>> = Rc::default();
    let (d, s) = (drops.clone(), slot.clone());
    let h = lp.spawn(move || {
        let _t = Tracked(d);
        yield_now();
        let me = s.borrow_mut().take().unwrap();
        me.cancel();
        unreachable!("cancel of oneself does not return");
    });
    *slot.borrow_mut() = Some(h);
    lp.block_on(yield_now);
    lp.block_on(yield_now);
    assert_eq!(drops.get(), 1);
    assert_eq!(lp.task_count(), 0);
}

#[test]
fn call_soon_runs_callbacks_fifo_outside_coroutines() {
    let lp = EventLoop::new();
    let log = Rc::new(RefCell::new(Vec::new()));
    for i in 0..5 {
        let l = log.clone();
        lp.call_soon(move || {
            assert!(!costack::in_coroutine());
            l.borrow_mut().push(i);
        });
    }
    let l = log.clone();
    lp.block_on(move || {
        let l2 = l.clone();
        call_soon(move || l2.borrow_mut().push(5));
        yield_now();
        yield_now();
    });
    assert_eq!(*log.borrow(), [0, 1, 2, 3, 4, 5]);
}

#[test]
fn yield_now_round_robins() {
    let lp = EventLoop::new();
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    lp.block_on(move || {
        let hs: Vec<_> = (0..3)
            .map(|i| {
                let l = l.clone();
                spawn(move || {
                    for r in 0..3 {
                        l.borrow_mut().push((r, i));
                        yield_now();
                    }
                })
            })
            .collect();
        hs.into_iter().for_each(|h| h.join());
    });
    let got = log.borrow().clone();
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(got, sorted, "rounds interleave: {got:?}");
}

#[test]
fn waiting_in_a_coroutine_that_is_not_a_task_panics_clearly() {
    let lp = EventLoop::new();
    // Entered from `main`, not by a task: nothing of the loop's could resume it.
    let co = costack::Coroutine::new(|| {
        catch_unwind(|| sleep(Duration::from_millis(1))).map_err(|p| {
            p.downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap()
        })
    });
    let msg = co.enter().finished().unwrap().unwrap_err();
    assert!(msg.contains("not a task"), "{msg}");
    drop(lp);
}

#[test]
fn task_builder_sets_stack_size_and_name() {
    let lp = EventLoop::builder().stack_size(128 * 1024).build().unwrap();
    let (sz, name) = lp.block_on(|| {
        let own = costack::current().unwrap().stack_size();
        let h = TaskBuilder::new()
            .stack_size(32 * 1024)
            .name("small")
            .spawn(|| {
                let c = costack::current().unwrap();
                (c.stack_size(), c.name().map(str::to_owned))
            });
        assert!(own >= 128 * 1024);
        h.join()
    });
    assert!((32 * 1024..64 * 1024).contains(&sz), "{sz}");
    assert_eq!(name.as_deref(), Some("small"));
}

#[test]
fn dropping_the_loop_unwinds_every_task_and_closes_sockets() {
    let drops = Rc::new(Cell::new(0));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    {
        let lp = EventLoop::new();
        let d = drops.clone();
        lp.block_on(move || {
            for i in 0..50 {
                let d = d.clone();
                spawn(move || {
                    let _t = Tracked(d);
                    if i == 0 {
                        // Holds a connection, waiting for a reply that never comes.
                        let mut s = TcpStream::connect(addr).unwrap();
                        let mut b = [0; 1];
                        let _ = s.read(&mut b);
                    } else if i % 2 == 0 {
                        sleep(Duration::from_secs(3600));
                    } else {
                        WakeableSleep::new().sleep_until_woken();
                    }
                });
            }
            yield_now();
        });
        // Callbacks that never get to run are dropped too.
        let t = Tracked(drops.clone());
        lp.call_soon(move || drop(t));
        assert_eq!(lp.task_count(), 50);
        assert_eq!(drops.get(), 0);
    }
    assert_eq!(drops.get(), 51);
    // The connection the first task held was closed: the peer reads EOF.
    let (mut peer, _) = listener.accept().unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0; 1];
    assert_eq!(peer.read(&mut b).unwrap(), 0);
    // Spawning on a dropped loop's handle reports the loss.
    let lp = EventLoop::new();
    let h = lp.handle();
    drop(lp);
    assert!(h.is_closed());
    assert!(matches!(
        h.spawn(|| 1).try_join(),
        Err(JoinError::Cancelled)
    ));
}

#[test]
fn join_handle_outliving_its_loop_reports_cancelled() {
    let lp = EventLoop::new();
    let h = lp.spawn(|| sleep(Duration::from_secs(3600)));
    lp.block_on(yield_now);
    drop(lp);
    assert!(matches!(h.try_join(), Err(JoinError::Cancelled)));
}

#[test]
fn costack_deferred_wakeups_compose_with_the_loop() {
    // A task resumed by the core's deferred wake-up (not by the loop) then waits on the loop.
    let lp = EventLoop::new();
    let v = lp.block_on(|| {
        let parked: Rc<RefCell<Option<costack::CoHandle>>> = Rc::default();
        let p2 = parked.clone();
        let a = spawn(move || {
            *p2.borrow_mut() = costack::current();
            costack::yield_now(); // not a loop wait: only a costack wake resumes it
            sleep(Duration::from_millis(1)); // a loop wait afterwards
            1
        });
        yield_now();
        let p3 = parked.clone();
        let b = spawn(move || {
            p3.borrow_mut().take().unwrap().wake();
            2
        });
        a.join() + b.join()
    });
    assert_eq!(v, 3);
}

#[test]
fn unix_sockets_echo() {
    let dir = std::env::temp_dir().join(format!("costack-aio-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("echo.sock");
    let _ = std::fs::remove_file(&path);
    let lp = EventLoop::new();
    let p2 = path.clone();
    lp.block_on(move || {
        let l = costack_aio::net::UnixListener::bind(&p2).unwrap();
        let server = spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0; 5];
            s.read_exact(&mut buf).unwrap();
            s.write_all(&buf).unwrap();
        });
        let mut c = costack_aio::net::UnixStream::connect(&p2).unwrap();
        c.write_all(b"hello").unwrap();
        let mut buf = [0; 5];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        server.join();
        let (mut a, mut b) = costack_aio::net::UnixStream::pair().unwrap();
        a.write_all(b"x").unwrap();
        b.read_exact(&mut buf[..1]).unwrap();
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sockets_work_outside_coroutines_by_blocking() {
    let _lp = EventLoop::new();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        // No loop on this thread: plain blocking use.
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"abc").unwrap();
        let mut b = [0; 3];
        s.read_exact(&mut b).unwrap();
        b
    });
    let (mut s, _) = l.accept().unwrap();
    let mut b = [0; 3];
    s.read_exact(&mut b).unwrap();
    s.write_all(&b).unwrap();
    assert_eq!(&t.join().unwrap(), b"abc");
}
