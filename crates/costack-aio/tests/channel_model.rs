//! The mpsc channels against a model: random sequences of operations — senders send,
//! try_send, are cloned and dropped; the receiver receives, tries, closes, is dropped — run on
//! a real channel and on a `VecDeque`, and every result, length and count of waiting senders
//! must agree. The local flavour runs in tasks of one loop; the `Send` flavour has its senders
//! on two loops on two threads and its receiver in a task of a third loop.
//!
//! A send that the model says must wait runs as a task of its own (on the sender's loop); the
//! driver goes on once that task waits in the channel's queue (seen in the receiver's
//! `Debug`), and joins it when the model says it must have finished (room was made, or the
//! receiver closed), so the run is deterministic.

#[path = "common/threads.rs"]
mod threads;

use costack_aio::channel::{SendError, TryRecvError, TrySendError};
use costack_aio::{timeout, yield_now, EventLoop, LoopHandle};
use proptest::prelude::*;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
enum Op {
    TrySend(usize),
    Send(usize),
    CloneSender(usize),
    DropSender(usize),
    Recv,
    TryRecv,
    /// A recv under a `timeout` of zero: waits (and is cut short) when the model is empty.
    RecvTimeout,
    Close,
    DropReceiver,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..8usize).prop_map(Op::TrySend),
        4 => (0..8usize).prop_map(Op::Send),
        1 => (0..8usize).prop_map(Op::CloneSender),
        1 => (0..8usize).prop_map(Op::DropSender),
        3 => Just(Op::Recv),
        2 => Just(Op::TryRecv),
        1 => Just(Op::RecvTimeout),
        1 => Just(Op::Close),
        1 => Just(Op::DropReceiver),
    ]
}

fn cap() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![Just(None), (1..4usize).prop_map(Some)]
}

/// What a harness (one flavour) must do; each call completes before it returns.
trait Harness {
    /// A send that waits, running as a task of its own.
    type Blocked;
    fn try_send(&mut self, slot: usize, v: u32) -> Result<(), TrySendError<u32>>;
    /// A send that the model says will not wait.
    fn send_now(&mut self, slot: usize, v: u32) -> Result<(), SendError<u32>>;
    /// A send that the model says will wait: started as a task, returns once it waits.
    fn send_blocked(&mut self, slot: usize, v: u32, waiting: usize) -> Self::Blocked;
    fn join(&mut self, b: Self::Blocked) -> Result<(), SendError<u32>>;
    fn clone_sender(&mut self, slot: usize);
    fn drop_sender(&mut self, slot: usize);
    fn has_sender(&self, slot: usize) -> bool;
    fn slots(&self) -> usize;
    fn recv(&mut self) -> Option<u32>;
    fn recv_timeout_zero(&mut self) -> Option<Option<u32>>;
    fn try_recv(&mut self) -> Result<u32, TryRecvError>;
    fn close(&mut self);
    fn drop_receiver(&mut self);
    /// `len()` and the receiver's `Debug` (None once it is dropped).
    fn observe(&self) -> (usize, Option<String>);
}

/// Runs `ops` on `h` and on the model; panics on the first difference.
fn run<H: Harness>(h: &mut H, cap: Option<usize>, ops: &[Op]) {
    let cap = cap.unwrap_or(usize::MAX);
    let mut queue: VecDeque<u32> = VecDeque::new();
    let mut blocked: VecDeque<(u32, H::Blocked)> = VecDeque::new();
    let mut rx_alive = true;
    let mut closed = false;
    let mut next = 0u32;
    for (step, op) in ops.iter().enumerate() {
        let live = |h: &H, i: usize| {
            let s = i % h.slots();
            h.has_sender(s).then_some(s)
        };
        // Senders: the slots alive plus the tasks of waiting sends (each holds a clone).
        let senders =
            |h: &H, blocked: usize| (0..h.slots()).filter(|&s| h.has_sender(s)).count() + blocked;
        match op {
            Op::TrySend(i) => {
                let Some(s) = live(h, *i) else { continue };
                next += 1;
                let want = if closed {
                    Err(TrySendError::Closed(next))
                } else if queue.len() >= cap {
                    Err(TrySendError::Full(next))
                } else {
                    queue.push_back(next);
                    Ok(())
                };
                assert_eq!(h.try_send(s, next), want, "step {step}: {op:?}");
            }
            Op::Send(i) => {
                let Some(s) = live(h, *i) else { continue };
                next += 1;
                if closed {
                    assert_eq!(h.send_now(s, next), Err(SendError(next)), "step {step}");
                } else if queue.len() < cap {
                    assert_eq!(h.send_now(s, next), Ok(()), "step {step}");
                    queue.push_back(next);
                } else {
                    let b = h.send_blocked(s, next, blocked.len() + 1);
                    blocked.push_back((next, b));
                }
            }
            Op::CloneSender(i) => {
                let Some(s) = live(h, *i) else { continue };
                h.clone_sender(s);
            }
            Op::DropSender(i) => {
                let Some(s) = live(h, *i) else { continue };
                h.drop_sender(s);
            }
            Op::Recv | Op::RecvTimeout | Op::TryRecv if !rx_alive => continue,
            Op::Recv => {
                // Only when it will not wait forever.
                if queue.is_empty() && !closed && senders(h, blocked.len()) > 0 {
                    continue;
                }
                assert_eq!(h.recv(), queue.pop_front(), "step {step}: {op:?}");
            }
            Op::RecvTimeout => {
                let want = if !queue.is_empty() || closed || senders(h, blocked.len()) == 0 {
                    Some(queue.pop_front())
                } else {
                    None // cut short, consuming nothing
                };
                assert_eq!(h.recv_timeout_zero(), want, "step {step}: {op:?}");
            }
            Op::TryRecv => {
                let want = match queue.pop_front() {
                    Some(v) => Ok(v),
                    None if closed || senders(h, blocked.len()) == 0 => {
                        Err(TryRecvError::Disconnected)
                    }
                    None => Err(TryRecvError::Empty),
                };
                assert_eq!(h.try_recv(), want, "step {step}: {op:?}");
            }
            Op::Close | Op::DropReceiver if !rx_alive => continue,
            Op::Close => {
                h.close();
                closed = true;
            }
            Op::DropReceiver => {
                h.drop_receiver();
                rx_alive = false;
                closed = true;
                queue.clear();
            }
        }
        // Waiting sends that must have finished: all of them (failing) once closed, else the
        // first ones, as room was made.
        while let Some((v, b)) = blocked.pop_front() {
            if closed {
                assert_eq!(h.join(b), Err(SendError(v)), "step {step}: a waiting send");
            } else if queue.len() < cap {
                assert_eq!(h.join(b), Ok(()), "step {step}: a waiting send");
                queue.push_back(v);
            } else {
                blocked.push_front((v, b));
                break;
            }
        }
        let (len, debug) = h.observe();
        assert_eq!(len, queue.len(), "step {step}: len after {op:?}");
        if let Some(d) = debug {
            let w = format!("waiting_senders: {}", blocked.len());
            assert!(d.contains(&w), "step {step}: {d} (want {w})");
            assert!(d.contains("waiting_receivers: 0"), "step {step}: {d}");
        }
    }
    // The end: drop everything; waiting sends fail.
    for s in 0..h.slots() {
        if h.has_sender(s) {
            h.drop_sender(s);
        }
    }
    if rx_alive {
        h.drop_receiver();
    }
    for (v, b) in blocked {
        assert_eq!(h.join(b), Err(SendError(v)));
    }
}

/// Waits until `f` holds: `step` lets the others run (yields the task), bounded in time.
fn until(f: impl Fn() -> bool, step: impl Fn()) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "a send did not start waiting"
        );
        step();
    }
}

// ---------------------------------------------------------------------------------------------
// The local flavour: everything in tasks of one loop.

mod local {
    use super::*;
    use costack_aio::channel::local::mpsc::{self, Receiver, Sender};
    use costack_aio::{spawn, JoinHandle};

    pub struct Local {
        pub tx: Vec<Option<Sender<u32>>>,
        pub rx: Option<Receiver<u32>>,
    }

    impl Harness for Local {
        type Blocked = JoinHandle<Result<(), SendError<u32>>>;
        fn try_send(&mut self, s: usize, v: u32) -> Result<(), TrySendError<u32>> {
            self.tx[s].as_ref().unwrap().try_send(v)
        }
        fn send_now(&mut self, s: usize, v: u32) -> Result<(), SendError<u32>> {
            self.tx[s].as_ref().unwrap().send(v)
        }
        fn send_blocked(&mut self, s: usize, v: u32, waiting: usize) -> Self::Blocked {
            let tx = self.tx[s].as_ref().unwrap().clone();
            let h = spawn(move || tx.send(v));
            let want = format!("waiting_senders: {waiting}");
            until(|| self.observe().1.unwrap().contains(&want), yield_now);
            h
        }
        fn join(&mut self, b: Self::Blocked) -> Result<(), SendError<u32>> {
            b.join()
        }
        fn clone_sender(&mut self, s: usize) {
            let t = self.tx[s].as_ref().unwrap().clone();
            self.tx.push(Some(t));
        }
        fn drop_sender(&mut self, s: usize) {
            self.tx[s] = None;
        }
        fn has_sender(&self, s: usize) -> bool {
            self.tx[s].is_some()
        }
        fn slots(&self) -> usize {
            self.tx.len()
        }
        fn recv(&mut self) -> Option<u32> {
            self.rx.as_ref().unwrap().recv()
        }
        fn recv_timeout_zero(&mut self) -> Option<Option<u32>> {
            let rx = self.rx.as_ref().unwrap();
            timeout(Duration::ZERO, || rx.recv()).ok()
        }
        fn try_recv(&mut self) -> Result<u32, TryRecvError> {
            self.rx.as_ref().unwrap().try_recv()
        }
        fn close(&mut self) {
            self.rx.as_ref().unwrap().close();
        }
        fn drop_receiver(&mut self) {
            self.rx = None;
        }
        fn observe(&self) -> (usize, Option<String>) {
            let len = match (&self.rx, self.tx.iter().flatten().next()) {
                (Some(rx), _) => rx.len(),
                (None, Some(tx)) => tx.len(),
                (None, None) => 0,
            };
            (len, self.rx.as_ref().map(|r| format!("{r:?}")))
        }
    }

    pub fn run_local(cap: Option<usize>, ops: Vec<Op>) {
        threads::bounded(10, move || {
            EventLoop::new().block_on(move || {
                let (tx, rx) = match cap {
                    Some(c) => mpsc::bounded(c),
                    None => mpsc::unbounded(),
                };
                let mut h = Local {
                    tx: vec![Some(tx)],
                    rx: Some(rx),
                };
                run(&mut h, cap, &ops);
            })
        });
    }
}

// ---------------------------------------------------------------------------------------------
// The Send flavour: senders on two loops on two threads, the receiver in a task of a third.

mod across {
    use super::*;
    use costack_aio::channel::mpsc::{self, Receiver, Sender};
    use costack_aio::RemoteJoinHandle;

    pub struct Across {
        /// Each sender and the loop it is used on (slot % 2).
        pub tx: Vec<Option<Arc<Sender<u32>>>>,
        pub rx: Option<Receiver<u32>>,
        pub loops: [LoopHandle; 2],
    }

    impl Across {
        fn on<T: Send + 'static>(&self, s: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
            self.loops[s % 2].spawn(f).join()
        }
        fn sender(&self, s: usize) -> Arc<Sender<u32>> {
            self.tx[s].clone().unwrap()
        }
    }

    impl Harness for Across {
        type Blocked = RemoteJoinHandle<Result<(), SendError<u32>>>;
        fn try_send(&mut self, s: usize, v: u32) -> Result<(), TrySendError<u32>> {
            let tx = self.sender(s);
            self.on(s, move || tx.try_send(v))
        }
        fn send_now(&mut self, s: usize, v: u32) -> Result<(), SendError<u32>> {
            let tx = self.sender(s);
            self.on(s, move || tx.send(v))
        }
        fn send_blocked(&mut self, s: usize, v: u32, waiting: usize) -> Self::Blocked {
            let tx = (*self.sender(s)).clone();
            let h = self.loops[s % 2].spawn(move || tx.send(v));
            let want = format!("waiting_senders: {waiting}");
            until(
                || self.observe().1.unwrap().contains(&want),
                || costack_aio::sleep(Duration::from_micros(50)),
            );
            h
        }
        fn join(&mut self, b: Self::Blocked) -> Result<(), SendError<u32>> {
            b.join()
        }
        fn clone_sender(&mut self, s: usize) {
            let t = (*self.sender(s)).clone();
            self.tx.push(Some(Arc::new(t)));
        }
        fn drop_sender(&mut self, s: usize) {
            let tx = self.tx[s].take();
            self.on(s, move || drop(tx));
        }
        fn has_sender(&self, s: usize) -> bool {
            self.tx[s].is_some()
        }
        fn slots(&self) -> usize {
            self.tx.len()
        }
        fn recv(&mut self) -> Option<u32> {
            self.rx.as_ref().unwrap().recv()
        }
        fn recv_timeout_zero(&mut self) -> Option<Option<u32>> {
            let rx = self.rx.as_ref().unwrap();
            timeout(Duration::ZERO, || rx.recv()).ok()
        }
        fn try_recv(&mut self) -> Result<u32, TryRecvError> {
            self.rx.as_ref().unwrap().try_recv()
        }
        fn close(&mut self) {
            self.rx.as_ref().unwrap().close();
        }
        fn drop_receiver(&mut self) {
            self.rx = None;
        }
        fn observe(&self) -> (usize, Option<String>) {
            let len = match (&self.rx, self.tx.iter().flatten().next()) {
                (Some(rx), _) => rx.len(),
                (None, Some(tx)) => tx.len(),
                (None, None) => 0,
            };
            (len, self.rx.as_ref().map(|r| format!("{r:?}")))
        }
    }

    /// Two sender loops, each on a thread of its own, alive for the whole test binary.
    fn loops() -> [LoopHandle; 2] {
        static LOOPS: std::sync::OnceLock<[LoopHandle; 2]> = std::sync::OnceLock::new();
        LOOPS
            .get_or_init(|| {
                let one = || {
                    let (tx, rx) = std::sync::mpsc::channel();
                    std::thread::spawn(move || {
                        let lp = EventLoop::new();
                        tx.send(lp.handle()).unwrap();
                        // Runs forever: the loop serves the spawned tasks.
                        lp.block_on(|| costack_aio::sleep(Duration::from_secs(u64::MAX >> 2)));
                    });
                    rx.recv().unwrap()
                };
                [one(), one()]
            })
            .clone()
    }

    pub fn run_across(cap: Option<usize>, ops: Vec<Op>) {
        let loops = loops();
        threads::bounded(10, move || {
            EventLoop::new().block_on(move || {
                let (tx, rx) = match cap {
                    Some(c) => mpsc::bounded(c),
                    None => mpsc::unbounded(),
                };
                let mut h = Across {
                    tx: vec![Some(Arc::new(tx))],
                    rx: Some(rx),
                    loops,
                };
                run(&mut h, cap, &ops);
            })
        });
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn local_flavour_matches_the_model(cap in cap(), ops in prop::collection::vec(op(), 1..60)) {
        local::run_local(cap, ops);
    }

    #[test]
    fn send_flavour_with_senders_on_two_loops_matches_the_model(
        cap in cap(),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        across::run_across(cap, ops);
    }
}
