//! The channels of `costack_aio::channel`: every method and closing case, in tasks (both
//! flavours, by one macro) and on plain threads and several loops (the `Send` flavour).

#[path = "common/threads.rs"]
mod threads;

use costack_aio::channel::{SendError, TryRecvError, TrySendError};
use costack_aio::select::Selectable;
use costack_aio::{spawn, suspend, timeout, yield_now, EventLoop, Waker};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use threads::bounded as within;

/// Counts its drops.
#[derive(Debug)]
struct Counted(u32, Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.1.fetch_add(1, Ordering::SeqCst);
    }
}

/// Runs `f` as a task of a new loop, on a thread of its own, failing after 20 s (a hang).
fn in_task<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    within(20, move || EventLoop::new().block_on(f))
}

/// Runs the other tasks until none is ready (a bounded number of turns).
fn settle() {
    for _ in 0..10 {
        yield_now();
    }
}

/// The same tests for both flavours: `$mpsc` and `$oneshot` are the flavour's modules.
macro_rules! flavour_tests {
    ($name:ident, $mpsc:path, $oneshot:path) => {
        mod $name {
            use super::*;
            use $mpsc as mpsc;
            use $oneshot as oneshot;

            #[test]
            fn try_send_is_full_at_capacity_exactly() {
                in_task(|| {
                    let (tx, rx) = mpsc::bounded(3);
                    assert_eq!(tx.capacity(), Some(3));
                    assert_eq!(rx.capacity(), Some(3));
                    for i in 0..3 {
                        assert_eq!(tx.try_send(i), Ok(()));
                    }
                    assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
                    assert_eq!((tx.len(), rx.len()), (3, 3));
                    assert!(!tx.is_empty() && !rx.is_empty());
                    assert_eq!(rx.try_recv(), Ok(0));
                    assert_eq!(tx.try_send(3), Ok(()));
                    assert_eq!(tx.try_send(4), Err(TrySendError::Full(4)));
                    assert_eq!(
                        [rx.try_recv(), rx.try_recv(), rx.try_recv(), rx.try_recv()],
                        [Ok(1), Ok(2), Ok(3), Err(TryRecvError::Empty)]
                    );
                    assert!(rx.is_empty());
                    assert!(!rx.is_closed() && !tx.is_closed());
                });
            }

            #[test]
            fn unbounded_never_full() {
                in_task(|| {
                    let (tx, rx) = mpsc::unbounded();
                    assert_eq!(tx.capacity(), None);
                    for i in 0..10_000 {
                        tx.send(i).unwrap();
                    }
                    assert_eq!(tx.try_send(10_000), Ok(()));
                    assert_eq!(rx.len(), 10_001);
                    drop(tx);
                    assert_eq!(rx.sum::<i64>(), 10_000 * 10_001 / 2);
                });
            }

            #[test]
            fn recv_is_none_once_every_sender_is_gone_and_drained() {
                in_task(|| {
                    let (tx, rx) = mpsc::bounded(4);
                    let tx2 = tx.clone();
                    tx.send(1).unwrap();
                    tx2.send(2).unwrap();
                    drop(tx);
                    assert!(!rx.is_closed()); // tx2 is still there
                    tx2.send(3).unwrap();
                    drop(tx2);
                    assert!(rx.is_closed());
                    assert_eq!(rx.len(), 3);
                    assert_eq!(
                        [rx.recv(), rx.recv(), rx.recv(), rx.recv()],
                        [Some(1), Some(2), Some(3), None]
                    );
                    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
                });
            }

            #[test]
            fn a_waiting_receiver_wakes_with_none_when_the_last_sender_drops() {
                in_task(|| {
                    let (tx, rx) = mpsc::bounded::<u8>(1);
                    let tx2 = tx.clone();
                    let h = spawn(move || rx.recv());
                    settle();
                    drop(tx);
                    settle();
                    assert!(!h.is_finished());
                    drop(tx2);
                    assert_eq!(h.join(), None);
                });
            }

            #[test]
            fn sending_to_a_dropped_receiver_gives_the_value_back() {
                in_task(|| {
                    let (tx, rx) = mpsc::bounded(2);
                    assert!(!tx.is_closed());
                    drop(rx);
                    assert!(tx.is_closed());
                    assert_eq!(tx.send(5), Err(SendError(5)));
                    assert_eq!(tx.try_send(6), Err(TrySendError::Closed(6)));
                    assert_eq!(tx.send(7).unwrap_err().into_inner(), 7);
                });
            }

            #[test]
            fn close_refuses_sends_but_buffered_values_are_received() {
                in_task(|| {
                    let (tx, rx) = mpsc::bounded(4);
                    tx.send(1).unwrap();
                    tx.send(2).unwrap();
                    rx.close();
                    assert!(tx.is_closed() && rx.is_closed());
                    assert_eq!(tx.send(3), Err(SendError(3)));
                    assert_eq!(tx.try_send(4), Err(TrySendError::Closed(4)));
                    assert_eq!(rx.try_recv(), Ok(1));
                    assert_eq!(rx.recv(), Some(2));
                    assert_eq!(rx.recv(), None); // tx is still alive: closed and drained
                    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
                });
            }

            #[test]
            fn values_left_in_a_dropped_channel_are_dropped() {
                in_task(|| {
                    let drops = Arc::new(AtomicUsize::new(0));
                    let (tx, rx) = mpsc::bounded(4);
                    for i in 0..3 {
                        tx.send(Counted(i, drops.clone())).unwrap();
                    }
                    let first = rx.recv().unwrap();
                    assert_eq!(first.0, 0);
                    drop(rx); // the sender lives on: the receiver drops what is buffered
                    assert_eq!(drops.load(Ordering::SeqCst), 2);
                    let e = tx.send(Counted(9, drops.clone())).unwrap_err();
                    assert_eq!(e.0 .0, 9);
                    drop(e);
                    assert_eq!(drops.load(Ordering::SeqCst), 3);
                    drop(first);
                    drop(tx);
                    assert_eq!(drops.load(Ordering::SeqCst), 4);
                    // Dropped with the last sender gone first, too.
                    let (tx, rx) = mpsc::unbounded();
                    tx.send(Counted(1, drops.clone())).unwrap();
                    drop(tx);
                    drop(rx);
                    assert_eq!(drops.load(Ordering::SeqCst), 5);
                });
            }

            #[test]
            fn a_value_whose_drop_uses_the_channel_does_not_deadlock() {
                // A buffered value holding a sender of its own channel: dropping the receiver
                // drops it, and its drop drops that sender.
                in_task(|| {
                    struct Holder {
                        _tx: mpsc::Sender<Holder>,
                    }
                    let (tx, rx) = mpsc::unbounded();
                    tx.send(Holder { _tx: tx.clone() }).unwrap();
                    drop(tx);
                    drop(rx);
                });
            }

            #[test]
            fn send_waits_while_full_and_values_arrive_in_order() {
                in_task(|| {
                    let (tx, rx) = mpsc::bounded(1);
                    let h = spawn(move || {
                        for i in 0..5 {
                            tx.send(i).unwrap();
                        }
                    });
                    settle();
                    assert_eq!(rx.len(), 1); // the producer waits for room
                    assert!(format!("{rx:?}").contains("waiting_senders: 1"), "{rx:?}");
                    let got: Vec<i32> = rx.collect();
                    assert_eq!(got, [0, 1, 2, 3, 4]);
                    h.join();
                });
            }

            #[test]
            fn a_sender_waiting_on_a_full_channel_fails_when_the_receiver_drops() {
                in_task(|| {
                    let (tx, rx) = mpsc::bounded(1);
                    tx.send(1).unwrap();
                    let tx2 = tx.clone();
                    let h = spawn(move || tx2.send(2));
                    settle();
                    assert!(!h.is_finished());
                    drop(rx);
                    assert_eq!(h.join(), Err(SendError(2)));
                });
            }

            #[test]
            fn a_sender_waiting_on_a_full_channel_fails_when_the_receiver_closes() {
                in_task(|| {
                    let (tx, rx) = mpsc::bounded(1);
                    tx.send(1).unwrap();
                    let h = spawn(move || tx.send(2));
                    settle();
                    assert!(!h.is_finished());
                    rx.close();
                    assert_eq!(h.join(), Err(SendError(2)));
                    assert_eq!(rx.recv(), Some(1));
                    assert_eq!(rx.recv(), None);
                });
            }

            #[test]
            fn a_recv_cut_short_by_timeout_consumes_nothing() {
                in_task(|| {
                    let (tx, rx) = mpsc::bounded(2);
                    let r = timeout(Duration::from_millis(5), || rx.recv());
                    assert!(r.is_err());
                    assert!(format!("{rx:?}").contains("waiting_receivers: 0"), "{rx:?}");
                    tx.send(7).unwrap();
                    assert_eq!(rx.try_recv(), Ok(7));
                    // And a send cut short while waiting for room leaves the queue too.
                    tx.send(1).unwrap();
                    tx.send(2).unwrap();
                    let r = timeout(Duration::from_millis(5), || tx.send(3));
                    assert!(r.is_err());
                    assert!(format!("{rx:?}").contains("waiting_senders: 0"), "{rx:?}");
                    drop(tx);
                    assert_eq!(rx.collect::<Vec<_>>(), [1, 2]);
                });
            }

            #[test]
            fn a_cancelled_waiting_receiver_leaves_the_queue() {
                in_task(|| {
                    let (tx, rx) = mpsc::bounded(2);
                    let rx = Rc::new(rx);
                    let rx2 = rx.clone();
                    let h = spawn(move || rx2.recv());
                    settle();
                    assert!(format!("{rx:?}").contains("waiting_receivers: 1"), "{rx:?}");
                    h.cancel();
                    assert!(format!("{rx:?}").contains("waiting_receivers: 0"), "{rx:?}");
                    tx.send(3).unwrap();
                    assert_eq!(rx.try_recv(), Ok(3));
                });
            }

            #[test]
            fn cancelled_waiting_senders_leave_the_queue_and_pass_on_their_wake_up() {
                in_task(|| {
                    let (tx, rx) = mpsc::bounded(1);
                    tx.send(1).unwrap();
                    let (a, b, c) = (tx.clone(), tx.clone(), tx.clone());
                    let ha = spawn(move || a.send(2));
                    let hb = spawn(move || b.send(3));
                    let hc = spawn(move || c.send(4));
                    settle();
                    assert!(format!("{rx:?}").contains("waiting_senders: 3"), "{rx:?}");
                    hc.cancel(); // waiting: it just leaves
                    assert!(format!("{rx:?}").contains("waiting_senders: 2"), "{rx:?}");
                    // Makes room: `a` is woken (and taken out of the queue) but cancelled
                    // before it runs; its wake-up must go to `b`.
                    assert_eq!(rx.recv(), Some(1));
                    ha.cancel();
                    let got = timeout(Duration::from_secs(5), || rx.recv());
                    assert_eq!(got, Ok(Some(3)));
                    assert_eq!(hb.join(), Ok(()));
                    drop(tx);
                    assert_eq!(rx.recv(), None); // 2 and 4 were never sent
                });
            }

            #[test]
            fn receivers_are_iterators() {
                in_task(|| {
                    let (tx, rx) = mpsc::bounded(3);
                    spawn(move || {
                        for i in 1..=6 {
                            tx.send(i * 10).unwrap();
                        }
                    });
                    let mut seen = Vec::new();
                    for v in rx {
                        seen.push(v);
                    }
                    assert_eq!(seen, [10, 20, 30, 40, 50, 60]);
                });
            }

            #[test]
            fn many_producers_one_consumer() {
                in_task(|| {
                    let (tx, rx) = mpsc::bounded(2);
                    let hs: Vec<_> = (0..10u64)
                        .map(|p| {
                            let tx = tx.clone();
                            spawn(move || {
                                for i in 0..100 {
                                    tx.send(p * 1000 + i).unwrap();
                                }
                            })
                        })
                        .collect();
                    drop(tx);
                    let mut last = [None; 10];
                    let mut n = 0;
                    for v in rx {
                        let (p, i) = ((v / 1000) as usize, v % 1000);
                        assert!(last[p].map_or(true, |l| l < i)); // FIFO per producer
                        last[p] = Some(i);
                        n += 1;
                    }
                    assert_eq!(n, 1000);
                    hs.into_iter().for_each(|h| h.join());
                });
            }

            #[test]
            #[should_panic(expected = "capacity of at least 1")]
            fn a_zero_capacity_is_refused() {
                let _ = mpsc::bounded::<u8>(0);
            }

            #[test]
            fn oneshot_sends_once() {
                in_task(|| {
                    let (tx, rx) = oneshot::channel();
                    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
                    let h = spawn(move || rx.recv().map(|v| (v, rx.recv(), rx.try_recv())));
                    settle();
                    assert!(!tx.is_closed());
                    assert_eq!(tx.send(5), Ok(()));
                    assert_eq!(h.join(), Some((5, None, Err(TryRecvError::Disconnected))));
                });
            }

            #[test]
            fn oneshot_sender_dropped_unsent_ends_the_wait_with_none() {
                in_task(|| {
                    let (tx, rx) = oneshot::channel::<u8>();
                    let h = spawn(move || rx.recv());
                    settle();
                    drop(tx);
                    assert_eq!(h.join(), None);
                });
            }

            #[test]
            fn oneshot_send_to_a_dropped_or_closed_receiver_gives_the_value_back() {
                in_task(|| {
                    let (tx, rx) = oneshot::channel();
                    drop(rx);
                    assert!(tx.is_closed());
                    assert_eq!(tx.send(1), Err(1));
                    let (tx, rx) = oneshot::channel();
                    rx.close();
                    assert!(tx.is_closed());
                    assert_eq!(tx.send(2), Err(2));
                    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
                    assert_eq!(rx.recv(), None);
                    // Closed after the send: the value is still there.
                    let (tx, rx) = oneshot::channel();
                    tx.send(3).unwrap();
                    rx.close();
                    assert_eq!(rx.recv(), Some(3));
                });
            }

            #[test]
            fn oneshot_value_left_is_dropped_with_the_receiver() {
                in_task(|| {
                    let drops = Arc::new(AtomicUsize::new(0));
                    let (tx, rx) = oneshot::channel();
                    tx.send(Counted(1, drops.clone())).unwrap();
                    assert_eq!(drops.load(Ordering::SeqCst), 0);
                    assert!(format!("{rx:?}").contains("has_value: true"), "{rx:?}");
                    drop(rx);
                    assert_eq!(drops.load(Ordering::SeqCst), 1);
                });
            }

            #[test]
            fn oneshot_recv_cut_short_by_timeout_consumes_nothing() {
                in_task(|| {
                    let (tx, rx) = oneshot::channel();
                    assert!(timeout(Duration::from_millis(5), || rx.recv()).is_err());
                    assert!(format!("{rx:?}").contains("waiting_receivers: 0"), "{rx:?}");
                    tx.send(8).unwrap();
                    assert_eq!(rx.recv(), Some(8));
                });
            }

            #[test]
            fn recv_branch_loses_without_consuming_and_wins_when_woken() {
                in_task(|| {
                    let (tx, rx) = mpsc::bounded(1);
                    let mut b = rx.recv_branch();
                    assert_eq!(b.try_select(), None);
                    // A select's wait: register, park, be woken by a send.
                    let tx2 = tx.clone();
                    spawn(move || tx2.send(11).unwrap());
                    suspend(|w| b.register(&w));
                    assert_eq!(b.try_select(), Some(Some(11)));
                    b.deregister();
                    // A branch that loses consumes nothing.
                    tx.send(12).unwrap();
                    let w = waker();
                    let mut b = rx.recv_branch();
                    b.register(&w);
                    b.deregister();
                    drop(b);
                    assert!(format!("{rx:?}").contains("waiting_receivers: 0"), "{rx:?}");
                    assert_eq!(rx.try_recv(), Ok(12));
                    drop(tx);
                    assert_eq!(rx.recv_branch().try_select(), Some(None));
                });
            }

            #[test]
            fn send_branch_waits_for_room_and_keeps_its_value_when_it_loses() {
                in_task(|| {
                    let (tx, rx) = mpsc::bounded(1);
                    tx.send(1).unwrap();
                    let mut b = tx.send_branch(2);
                    assert_eq!(b.try_select(), None);
                    let w = waker();
                    b.register(&w);
                    assert!(format!("{rx:?}").contains("waiting_senders: 1"), "{rx:?}");
                    b.deregister();
                    assert!(format!("{rx:?}").contains("waiting_senders: 0"), "{rx:?}");
                    assert_eq!(b.into_value(), Some(2));
                    // Woken by a recv, it wins.
                    let mut b = tx.send_branch(3);
                    let rx = Rc::new(rx);
                    let rx2 = rx.clone();
                    spawn(move || assert_eq!(rx2.recv(), Some(1)));
                    suspend(|w| b.register(&w));
                    assert_eq!(b.try_select(), Some(Ok(())));
                    assert_eq!(b.into_value(), None);
                    assert_eq!(rx.try_recv(), Ok(3));
                    // To a closed receiver: the error carries the value.
                    rx.close();
                    let mut b = tx.send_branch(4);
                    assert_eq!(b.try_select(), Some(Err(SendError(4))));
                });
            }

            #[test]
            fn oneshot_recv_branch() {
                in_task(|| {
                    let (tx, rx) = oneshot::channel();
                    let mut b = rx.recv_branch();
                    assert_eq!(b.try_select(), None);
                    spawn(move || tx.send('x').unwrap());
                    suspend(|w| b.register(&w));
                    assert_eq!(b.try_select(), Some(Some('x')));
                    assert_eq!(b.try_select(), Some(None));
                });
            }

            #[test]
            fn oneshot_send_branch_sends_once_and_keeps_a_value_it_did_not_send() {
                in_task(|| {
                    let (tx, rx) = oneshot::channel();
                    let lost = tx.send_branch(1);
                    assert_eq!(lost.into_value(), Some(1));
                    let mut b = tx.send_branch(2);
                    let w = waker();
                    b.register(&w);
                    assert_eq!(b.try_select(), Some(Ok(())));
                    b.deregister();
                    assert_eq!(b.into_value(), None);
                    let mut again = tx.send_branch(3);
                    assert_eq!(again.try_select(), Some(Err(SendError(3))));
                    assert_eq!(rx.recv(), Some(2));
                    let (tx, rx) = oneshot::channel();
                    drop(rx);
                    assert_eq!(tx.send_branch(4).try_select(), Some(Err(SendError(4))));
                });
            }

            #[test]
            fn a_deregistered_branch_that_was_woken_passes_the_wake_up_on() {
                // Two receivers of one (shared) channel wait; a value wakes the first, a select
                // branch that then loses: the second must get the value.
                in_task(|| {
                    let (tx, rx) = mpsc::bounded(1);
                    let rx = Rc::new(rx);
                    let w = waker();
                    let mut b = rx.recv_branch();
                    b.register(&w);
                    let rx2 = rx.clone();
                    let h = spawn(move || rx2.recv());
                    settle();
                    tx.send(5).unwrap(); // wakes the branch (first in the queue)
                    b.deregister(); // it lost: the task gets the wake-up
                    assert_eq!(timeout(Duration::from_secs(5), || h.join()), Ok(Some(5)));
                });
            }
        }
    };
}

/// A waker of a wait that never happens (for registrations that are withdrawn).
fn waker() -> Waker {
    let mut out = None;
    // Outside any coroutine: a thread waker; the park returns at once once woken, so wake it.
    std::thread::scope(|s| {
        s.spawn(|| {
            suspend(|w| {
                w.wake();
                out = Some(w);
            })
        });
    });
    out.unwrap()
}

flavour_tests!(
    send,
    costack_aio::channel::mpsc,
    costack_aio::channel::oneshot
);
flavour_tests!(
    local,
    costack_aio::channel::local::mpsc,
    costack_aio::channel::local::oneshot
);

// ---------------------------------------------------------------------------------------------
// Errors

#[test]
fn errors_display_debug_and_are_errors() {
    fn is_error<E: std::error::Error>(_: &E) {}
    let e = SendError(1);
    is_error(&e);
    assert_eq!(e.to_string(), "sending on a closed channel");
    assert_eq!(format!("{e:?}"), "SendError { .. }");
    let f = TrySendError::Full(1);
    let c = TrySendError::Closed(2);
    is_error(&f);
    assert_eq!(f.to_string(), "sending on a full channel");
    assert_eq!(c.to_string(), "sending on a closed channel");
    assert_eq!(
        (format!("{f:?}"), format!("{c:?}")),
        ("Full(..)".into(), "Closed(..)".into())
    );
    assert_eq!((f.into_inner(), c.into_inner()), (1, 2));
    assert_eq!(TrySendError::from(SendError(3)), TrySendError::Closed(3));
    is_error(&TryRecvError::Empty);
    assert_eq!(
        TryRecvError::Empty.to_string(),
        "receiving on an empty channel"
    );
    assert_eq!(
        TryRecvError::Disconnected.to_string(),
        "receiving on a closed channel (every sender is gone)"
    );
    assert_eq!(format!("{:?}", TryRecvError::Disconnected), "Disconnected");
}

// ---------------------------------------------------------------------------------------------
// The Send flavour across threads and loops

use costack_aio::channel::{mpsc, oneshot};

#[test]
fn a_plain_thread_feeds_a_task_through_a_bounded_channel() {
    within(20, || {
        let (tx, rx) = mpsc::bounded(3);
        let producer = std::thread::spawn(move || {
            for i in 0..1000u64 {
                tx.send(i).unwrap(); // blocks while full
            }
        });
        let lp = EventLoop::new();
        let got: Vec<u64> = lp.block_on(move || rx.collect());
        producer.join().unwrap();
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
    });
}

#[test]
fn a_task_feeds_a_plain_thread_that_blocks_in_recv() {
    within(20, || {
        let (tx, rx) = mpsc::bounded(2);
        let consumer = std::thread::spawn(move || rx.into_iter().collect::<Vec<u32>>());
        let lp = EventLoop::new();
        lp.block_on(move || {
            for i in 0..500 {
                tx.send(i).unwrap(); // yields while full
            }
        });
        assert_eq!(consumer.join().unwrap(), (0..500).collect::<Vec<_>>());
    });
}

/// Waits (bounded) until `f` holds, yielding the thread: for another thread to reach a wait.
fn until(f: impl Fn() -> bool) {
    let t0 = std::time::Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "condition not reached"
        );
        std::thread::yield_now();
    }
}

#[test]
fn a_thread_blocked_on_a_full_channel_fails_when_the_receiver_drops_elsewhere() {
    within(20, || {
        let (tx, rx) = mpsc::bounded(1);
        tx.send(1).unwrap();
        let tx2 = tx.clone();
        let blocked = std::thread::spawn(move || tx2.send(2));
        until(|| format!("{rx:?}").contains("waiting_senders: 1"));
        std::thread::spawn(move || drop(rx)).join().unwrap();
        assert_eq!(blocked.join().unwrap(), Err(SendError(2)));
        assert!(tx.is_closed());
    });
}

#[test]
fn a_thread_blocked_in_recv_wakes_with_none_when_the_last_sender_drops() {
    within(20, || {
        let (tx, rx) = mpsc::unbounded::<u8>();
        let tx2 = tx.clone();
        let blocked = std::thread::spawn(move || rx.recv());
        until(|| format!("{tx:?}").contains("waiting_receivers: 1"));
        drop(tx);
        assert!(!tx2.is_closed());
        drop(tx2);
        assert_eq!(blocked.join().unwrap(), None);
    });
}

#[test]
fn tasks_of_two_loops_send_to_a_task_of_a_third() {
    within(30, || {
        let (tx, rx) = mpsc::bounded(4);
        let producers: Vec<_> = (0..2u64)
            .map(|p| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    EventLoop::new().block_on(move || {
                        let hs: Vec<_> = (0..4u64)
                            .map(|t| {
                                let tx = tx.clone();
                                spawn(move || {
                                    for i in 0..250 {
                                        tx.send((p, t, i)).unwrap();
                                    }
                                })
                            })
                            .collect();
                        hs.into_iter().for_each(|h| h.join());
                    })
                })
            })
            .collect();
        drop(tx);
        let lp = EventLoop::new();
        let got = lp.block_on(move || {
            let mut last = std::collections::HashMap::new();
            let mut n = 0;
            for (p, t, i) in rx {
                let prev = last.insert((p, t), i);
                assert!(prev.map_or(i == 0, |prev| prev + 1 == i)); // FIFO per sender
                n += 1;
            }
            n
        });
        producers.into_iter().for_each(|p| p.join().unwrap());
        assert_eq!(got, 2 * 4 * 250);
    });
}

#[test]
fn oneshot_across_threads_both_ways() {
    within(20, || {
        // A thread to a task.
        let (tx, rx) = oneshot::channel();
        let t = std::thread::spawn(move || tx.send(String::from("hi")).unwrap());
        let lp = EventLoop::new();
        assert_eq!(lp.block_on(move || rx.recv()), Some(String::from("hi")));
        t.join().unwrap();
        // A task to a blocked thread.
        let (tx, rx) = oneshot::channel();
        let t = std::thread::spawn(move || rx.recv());
        lp.block_on(move || {
            costack_aio::sleep(Duration::from_millis(1));
            tx.send(3).unwrap()
        });
        assert_eq!(t.join().unwrap(), Some(3));
    });
}

#[test]
fn a_select_branch_is_woken_from_another_thread() {
    in_task(|| {
        let (tx, rx) = mpsc::bounded(1);
        let mut b = rx.recv_branch();
        assert_eq!(b.try_select(), None);
        let t = std::thread::spawn(move || tx.send(99u32).unwrap());
        // The select protocol: try, register, try again (a value may have come between),
        // park; when woken, try again.
        let got = loop {
            if let Some(v) = b.try_select() {
                break v;
            }
            let mut again = None;
            suspend(|w| {
                b.register(&w);
                again = b.try_select();
                if again.is_some() {
                    w.wake();
                }
            });
            if let Some(v) = again {
                break v;
            }
        };
        b.deregister();
        assert_eq!(got, Some(99));
        t.join().unwrap();
    });
}

// ---------------------------------------------------------------------------------------------
// The local flavour outside any task

#[test]
fn a_local_recv_outside_any_task_runs_the_loop() {
    use costack_aio::channel::local;
    within(20, || {
        let lp = EventLoop::new();
        let (tx, rx) = local::mpsc::bounded(1);
        lp.spawn(move || {
            for i in 0..3 {
                tx.send(i).unwrap();
            }
        });
        // Outside any coroutine: the loop runs until a value (or the end) is there.
        assert_eq!(rx.recv(), Some(0));
        assert_eq!(rx.collect::<Vec<_>>(), [1, 2]);
        let (otx, orx) = local::oneshot::channel();
        lp.spawn(move || otx.send(5).unwrap());
        assert_eq!(orx.recv(), Some(5));
    });
}

#[test]
#[should_panic(expected = "on a thread without an event loop")]
fn a_local_recv_that_must_wait_without_a_loop_panics() {
    let (_tx, rx) = costack_aio::channel::local::mpsc::bounded::<u8>(1);
    rx.recv();
}

#[test]
fn a_local_channel_in_a_task_of_a_waiting_sender_is_not_leaked_by_cancel() {
    // The cancelled task's stack unwinds and its sender leaves the queue: the queue holds
    // nothing of it afterwards (`waiting_senders: 0`), for both flavours.
    in_task(|| {
        let (tx, rx) = costack_aio::channel::local::mpsc::bounded(1);
        tx.send(0).unwrap();
        let hs: Vec<_> = (0..100)
            .map(|i| {
                let tx = tx.clone();
                spawn(move || tx.send(i))
            })
            .collect();
        settle();
        assert!(format!("{rx:?}").contains("waiting_senders: 100"), "{rx:?}");
        hs.into_iter().for_each(|h| h.cancel());
        assert!(format!("{rx:?}").contains("waiting_senders: 0"), "{rx:?}");
        drop(tx);
        assert_eq!(rx.collect::<Vec<_>>(), [0]);
    });
}

#[test]
fn receives_cut_short_by_timeouts_under_cross_thread_sends_lose_nothing() {
    // Two threads send 0..N each through a small channel; the receiving task receives with
    // short timeouts, so wake-ups and expiries race. Every value arrives exactly once.
    const N: u32 = 20_000;
    within(60, || {
        let (tx, rx) = mpsc::bounded(2);
        let producers: Vec<_> = (0..2u32)
            .map(|p| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for i in 0..N {
                        tx.send(p * N + i).unwrap();
                    }
                })
            })
            .collect();
        drop(tx);
        let lp = EventLoop::new();
        let (seen, expired) = lp.block_on(move || {
            let mut seen = vec![false; 2 * N as usize];
            let mut expired = 0u32;
            loop {
                match timeout(Duration::from_micros(20), || rx.recv()) {
                    Ok(Some(v)) => {
                        assert!(!seen[v as usize], "{v} received twice");
                        seen[v as usize] = true;
                    }
                    Ok(None) => break,
                    Err(_) => expired += 1,
                }
            }
            assert!(format!("{rx:?}").contains("waiting_receivers: 0"), "{rx:?}");
            (seen, expired)
        });
        producers.into_iter().for_each(|p| p.join().unwrap());
        assert!(seen.iter().all(|&s| s), "a value was lost");
        eprintln!("{expired} receives were cut short");
    });
}

#[test]
fn sends_cut_short_by_timeouts_deliver_exactly_the_values_they_report_sent() {
    // A task sends with short timeouts to a plain thread through a channel of capacity 1: a
    // send that returns Ok was delivered, one cut short was not (its value was dropped).
    const N: u32 = 20_000;
    within(60, || {
        let (tx, rx) = mpsc::bounded(1);
        let consumer = std::thread::spawn(move || rx.into_iter().collect::<Vec<u32>>());
        let lp = EventLoop::new();
        let sent = lp.block_on(move || {
            let mut sent = Vec::new();
            for i in 0..N {
                if let Ok(r) = timeout(Duration::from_micros(20), || tx.send(i)) {
                    r.unwrap();
                    sent.push(i);
                }
            }
            assert!(format!("{tx:?}").contains("waiting_senders: 0"), "{tx:?}");
            sent
        });
        let got = consumer.join().unwrap();
        eprintln!("{} of {N} sends went through", sent.len());
        assert_eq!(got, sent);
    });
}

#[test]
fn producers_on_threads_racing_a_consumer_task_at_capacity_one_lose_no_wake_up() {
    // Capacity 1: every send finds the channel full about as often as not, so the hand-over
    // between a receiver handing out a value and a sender starting to wait is raced each time;
    // a lost wake-up would hang (the time bound fails the test).
    const N: u64 = 20_000;
    within(60, || {
        let (tx, rx) = mpsc::bounded(1);
        let producers: Vec<_> = (0..2u64)
            .map(|p| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for i in 0..N {
                        tx.send(p * N + i).unwrap();
                    }
                })
            })
            .collect();
        drop(tx);
        let lp = EventLoop::new();
        let (n, sum) = lp.block_on(move || rx.fold((0u64, 0u64), |(n, s), v| (n + 1, s + v)));
        producers.into_iter().for_each(|p| p.join().unwrap());
        assert_eq!((n, sum), (2 * N, (2 * N) * (2 * N - 1) / 2));
    });
}

/// Outside any task, on a thread whose event loop is not running, a blocking `recv` or `send`
/// of the `Send` flavour runs that loop (as `join` does): its tasks can be the other side.
/// (It used to park the thread, and hang.)
#[test]
fn send_flavour_waits_outside_any_task_run_the_threads_loop() {
    within(10, || {
        use costack_aio::channel::{mpsc, oneshot};
        let lp = EventLoop::new();
        let (tx, rx) = mpsc::bounded::<u32>(1);
        let (otx, orx) = oneshot::channel::<u32>();
        let (back_tx, back_rx) = mpsc::bounded::<u32>(1);
        let producer = lp.spawn(move || {
            costack_aio::sleep(Duration::from_millis(2));
            tx.send(7).unwrap();
            costack_aio::sleep(Duration::from_millis(2));
            otx.send(8).unwrap();
            // Takes nothing for a while, so that the second send below must wait for room.
            costack_aio::sleep(Duration::from_millis(2));
            (back_rx.recv().unwrap(), back_rx.recv().unwrap())
        });
        assert_eq!(rx.recv(), Some(7));
        assert_eq!(orx.recv(), Some(8));
        back_tx.send(1).unwrap();
        back_tx.send(2).unwrap();
        assert_eq!(producer.join(), (1, 2));
    });
}

/// In a `call_soon` callback (the loop is running) a blocking `recv` of the `Send` flavour
/// parks the thread, to be woken by another thread, instead of panicking.
#[test]
fn a_send_flavour_recv_in_a_callback_parks_and_another_thread_ends_it() {
    within(10, || {
        use costack_aio::channel::mpsc;
        let lp = EventLoop::new();
        let (tx, rx) = mpsc::bounded::<u32>(1);
        let got = Rc::new(std::cell::Cell::new(None));
        let g2 = got.clone();
        lp.call_soon(move || g2.set(rx.recv()));
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5));
            tx.send(9).unwrap();
        });
        lp.block_on(yield_now);
        t.join().unwrap();
        assert_eq!(got.get(), Some(9));
    });
}

/// A blocking `recv` in a destructor that the loop's shutdown runs after the loop closed its
/// mailbox (a call sent from another thread that never ran) parks the thread, to be woken by
/// the sending thread: running the closing loop would wait for an eventfd no one writes.
#[test]
fn a_blocking_recv_in_a_destructor_run_by_the_loops_shutdown_is_woken_by_a_thread() {
    use costack_aio::channel::mpsc;
    struct RecvOnDrop(mpsc::Receiver<u32>, Arc<AtomicUsize>);
    impl Drop for RecvOnDrop {
        fn drop(&mut self) {
            let v = self.0.recv().unwrap();
            self.1.store(v as usize, Ordering::SeqCst);
        }
    }
    within(10, || {
        let lp = EventLoop::new();
        let (tx, rx) = mpsc::bounded::<u32>(1);
        let got = Arc::new(AtomicUsize::new(0));
        let guard = RecvOnDrop(rx, got.clone());
        let h = lp.handle();
        std::thread::spawn(move || h.call_soon(move || drop(guard)).unwrap())
            .join()
            .unwrap();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            tx.send(5).unwrap();
        });
        drop(lp); // never ran the call: drops it (and so the guard) while shutting down
        sender.join().unwrap();
        assert_eq!(got.load(Ordering::SeqCst), 5);
    });
}
