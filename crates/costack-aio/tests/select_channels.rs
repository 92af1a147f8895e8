//! Selects over real channels (both flavours) beside timers and joins: a model test that no
//! value is lost or duplicated whichever branch wins or times out, with producers in tasks and
//! on plain threads; and selects over channels outside any task.

use costack_aio::channel::{local, mpsc, oneshot};
use costack_aio::select::{select_any, sleep as sleep_branch, Selectable};
use costack_aio::{spawn, timeout, yield_now, EventLoop};
use proptest::prelude::*;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

#[path = "common/threads.rs"]
mod threads;
use threads::bounded;

/// Which kind of channel a source is.
#[derive(Debug, Clone, Copy)]
enum Kind {
    LocalBounded(usize),
    LocalUnbounded,
    /// Fed by a plain thread.
    SendBounded(usize),
    /// Fed by a task of the loop.
    SendUnbounded,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        (1usize..4).prop_map(Kind::LocalBounded),
        Just(Kind::LocalUnbounded),
        (1usize..4).prop_map(Kind::SendBounded),
        Just(Kind::SendUnbounded),
    ]
}

#[derive(Debug, Clone)]
struct Plan {
    /// Per source: its kind and the producer's gaps (yields, or thread yields) before each value.
    sources: Vec<(Kind, Vec<u8>)>,
    /// The consumer's selects, cycled: `None` = select_any over every open source in a
    /// `timeout` scope of the given µs; `Some(us)` = `select!` of the first and last open
    /// sources and a timer branch.
    selects: Vec<(bool, u16)>,
}

fn plan() -> impl Strategy<Value = Plan> {
    (
        prop::collection::vec((kind(), prop::collection::vec(0u8..4, 0..30)), 1..5),
        prop::collection::vec((any::<bool>(), 0u16..300), 1..6),
    )
        .prop_map(|(sources, selects)| Plan { sources, selects })
}

type Branch<'a> = Box<dyn Selectable<Output = Option<(usize, u32)>> + 'a>;

/// A receiver of either flavour.
enum Rx {
    Local(local::mpsc::Receiver<(usize, u32)>),
    Send(mpsc::Receiver<(usize, u32)>),
}

impl Rx {
    fn branch(&self) -> Branch<'_> {
        match self {
            Rx::Local(r) => Box::new(r.recv_branch()),
            Rx::Send(r) => Box::new(r.recv_branch()),
        }
    }
}

fn run_plan(p: Plan) {
    let lp = EventLoop::new();
    let sources = p.sources.clone();
    let log = lp.block_on(move || {
        let mut rxs = Vec::new();
        let mut tasks = Vec::new();
        let mut threads = Vec::new();
        for (si, (kind, gaps)) in p.sources.iter().cloned().enumerate() {
            match kind {
                Kind::LocalBounded(_) | Kind::LocalUnbounded => {
                    let (tx, rx) = match kind {
                        Kind::LocalBounded(cap) => local::mpsc::bounded(cap),
                        _ => local::mpsc::unbounded(),
                    };
                    rxs.push(Rx::Local(rx));
                    tasks.push(spawn(move || {
                        for (n, g) in gaps.into_iter().enumerate() {
                            (0..g).for_each(|_| yield_now());
                            tx.send((si, n as u32)).unwrap();
                        }
                    }));
                }
                Kind::SendBounded(cap) => {
                    let (tx, rx) = mpsc::bounded(cap);
                    rxs.push(Rx::Send(rx));
                    threads.push(std::thread::spawn(move || {
                        for (n, g) in gaps.into_iter().enumerate() {
                            (0..g).for_each(|_| std::thread::yield_now());
                            tx.send((si, n as u32)).unwrap();
                        }
                    }));
                }
                Kind::SendUnbounded => {
                    let (tx, rx) = mpsc::unbounded();
                    rxs.push(Rx::Send(rx));
                    tasks.push(spawn(move || {
                        for (n, g) in gaps.into_iter().enumerate() {
                            (0..g).for_each(|_| yield_now());
                            tx.send((si, n as u32)).unwrap();
                        }
                    }));
                }
            }
        }
        // The consumer: selects until every source is closed and drained.
        let mut open: Vec<usize> = (0..rxs.len()).collect();
        let mut log = Vec::new();
        let mut k = 0;
        while !open.is_empty() {
            let (scoped, us) = p.selects[k % p.selects.len()];
            k += 1;
            let d = Duration::from_micros(u64::from(us) + 20);
            // `Some((source, None))`: that source is closed and drained.
            let got: Option<(usize, Option<(usize, u32)>)> = if scoped {
                let mut branches: Vec<Branch<'_>> = open.iter().map(|&i| rxs[i].branch()).collect();
                timeout(d, || select_any(&mut branches))
                    .ok()
                    .flatten()
                    .map(|(j, v)| (open[j], v))
            } else {
                let (first, last) = (open[0], open[open.len() - 1]);
                costack_aio::select! {
                    v = rxs[first].branch() => Some((first, v)),
                    v = rxs[last].branch() => Some((last, v)),
                    () = sleep_branch(d) => None,
                }
            };
            match got {
                Some((_, Some(v))) => log.push(v),
                Some((i, None)) => open.retain(|&j| j != i),
                None => {}
            }
        }
        tasks.into_iter().for_each(|t| t.join());
        threads.into_iter().for_each(|t| t.join().unwrap());
        log
    });
    let total: usize = sources.iter().map(|s| s.1.len()).sum();
    assert_eq!(log.len(), total, "a value was lost or duplicated");
    for (si, (_, gaps)) in sources.iter().enumerate() {
        let seen: Vec<u32> = log.iter().filter(|v| v.0 == si).map(|v| v.1).collect();
        let want: Vec<u32> = (0..gaps.len() as u32).collect();
        assert_eq!(seen, want, "source {si}: lost, duplicated or out of order");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn selects_over_channels_never_lose_or_duplicate_a_value(p in plan()) {
        bounded(60, move || run_plan(p));
    }
}

#[test]
fn a_losing_send_branch_keeps_its_value_and_the_channel_is_untouched() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let (full_tx, full_rx) = local::mpsc::bounded(1);
        full_tx.send(1).unwrap();
        let (tx, rx) = local::mpsc::unbounded();
        tx.send("ready").unwrap();
        let mut send = full_tx.send_branch(2);
        let got = costack_aio::select! {
            r = &mut send => { r.unwrap(); None }
            v = rx.recv_branch() => v,
        };
        assert_eq!(got, Some("ready"));
        assert_eq!(send.into_value(), Some(2), "the losing send kept its value");
        assert_eq!(full_rx.try_recv(), Ok(1));
        assert!(full_rx.try_recv().is_err(), "nothing else was sent");
    });
}

#[test]
fn outside_any_task_a_select_over_a_local_channel_runs_the_loop_that_feeds_it() {
    let lp = EventLoop::new();
    let (tx, rx) = local::mpsc::bounded(1);
    let producer = lp.spawn(move || {
        for i in 0..5 {
            costack_aio::sleep(Duration::from_millis(1));
            tx.send(i).unwrap();
        }
    });
    let mut got = Vec::new();
    loop {
        let v = costack_aio::select! {
            v = rx.recv_branch() => v,
            () = sleep_branch(Duration::from_secs(10)) => panic!("the loop did not run"),
        };
        match v {
            Some(v) => got.push(v),
            None => break,
        }
    }
    assert_eq!(got, [0, 1, 2, 3, 4]);
    producer.join();
}

#[test]
fn a_plain_thread_without_a_loop_selects_over_send_channels_fed_by_a_loop() {
    bounded(30, || {
        let (tx, rx) = mpsc::bounded::<u32>(2);
        let (done_tx, done_rx) = oneshot::channel::<&str>();
        let t = std::thread::spawn(move || {
            EventLoop::new().block_on(move || {
                for i in 0..10 {
                    costack_aio::sleep(Duration::from_micros(300));
                    tx.send(i).unwrap();
                }
                done_tx.send("done").unwrap();
            })
        });
        let mut got = Vec::new();
        let mut done = None;
        let mut rx_open = true;
        // Select while both are open: a closed, drained channel is always ready (with `None`),
        // so, selected first, it would starve the other branch.
        while rx_open && done.is_none() {
            costack_aio::select! {
                v = rx.recv_branch() => match v {
                    Some(v) => got.push(v),
                    None => rx_open = false,
                },
                d = done_rx.recv_branch() => done = Some(d.expect("sent")),
            }
        }
        if done.is_none() {
            done = done_rx.recv();
        }
        while let Some(v) = rx.recv() {
            got.push(v);
        }
        t.join().unwrap();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        assert_eq!(done, Some("done"));
    });
}

#[test]
fn a_recv_branch_in_a_timeout_consumes_nothing_when_it_expires() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let (tx, rx) = mpsc::unbounded::<u8>();
        let r = timeout(Duration::from_millis(2), || {
            costack_aio::select! { v = rx.recv_branch() => v }
        });
        assert!(r.is_err());
        tx.send(7).unwrap();
        assert_eq!(rx.try_recv(), Ok(7));
        let shared = Rc::new(RefCell::new(0));
        let s2 = shared.clone();
        spawn(move || *s2.borrow_mut() += 1).join();
        assert_eq!(*shared.borrow(), 1);
    });
}
