//! What the `sync` types are across threads, and a mix of primitives working together.

use costack::sync::{CoMutex, CoQueue, CoRwLock, CoSemaphore};
use costack::{yield_now, Coroutine};
use std::rc::Rc;

#[path = "common/deadline.rs"]
mod deadline;

fn assert_send<T: Send>() {}

/// A lock nobody uses can move to another thread with its data, and serve coroutines there.
#[test]
fn unused_locks_are_send() {
    let _deadline = deadline::arm();
    assert_send::<CoMutex<Vec<u8>>>();
    assert_send::<CoRwLock<String>>();
    assert_send::<CoSemaphore>();
    assert_send::<CoQueue>();

    let m = CoMutex::new(vec![1]);
    let t = std::thread::spawn(move || {
        let m = Rc::new(m);
        let m2 = m.clone();
        let co = Coroutine::new(move || {
            let mut g = m2.lock();
            yield_now();
            g.push(2);
        });
        let _ = co.enter();
        assert!(m.try_lock().is_none());
        let _ = co.enter();
        let v = m.lock().clone();
        v
    });
    assert_eq!(t.join().unwrap(), [1, 2]);
}

/// A bounded buffer built from a mutex and two queues: producers wait while it is full,
/// consumers while it is empty.
#[test]
fn bounded_buffer() {
    let _deadline = deadline::arm();
    struct Chan {
        buf: CoMutex<std::collections::VecDeque<u32>>,
        not_full: CoQueue,
        not_empty: CoQueue,
    }
    const CAP: usize = 2;
    let ch = Rc::new(Chan {
        buf: CoMutex::new(Default::default()),
        not_full: CoQueue::new(),
        not_empty: CoQueue::new(),
    });
    let got = Rc::new(std::cell::RefCell::new(Vec::new()));
    let mut cos = Vec::new();
    for p in 0..3u32 {
        let ch = ch.clone();
        cos.push(Coroutine::new(move || {
            let mut waits = 0;
            for i in 0..5 {
                let mut b = ch.buf.lock();
                while b.len() == CAP {
                    // Bounded: every wait yields, and the driving loop below is bounded too.
                    waits += 1;
                    assert!(waits < 1000, "producer {p}: the wait did not wait");
                    b = ch.not_full.wait_with(b);
                }
                b.push_back(p * 100 + i);
                ch.not_empty.wake_next();
                drop(b);
                yield_now();
            }
        }));
    }
    for _ in 0..2 {
        let (ch, got) = (ch.clone(), got.clone());
        cos.push(Coroutine::new(move || {
            let mut waits = 0;
            for _ in 0..7 {
                let mut b = ch.buf.lock();
                while b.is_empty() {
                    waits += 1;
                    assert!(waits < 1000, "consumer: the wait did not wait");
                    b = ch.not_empty.wait_with(b);
                }
                got.borrow_mut().push(b.pop_front().unwrap());
                ch.not_full.wake_next();
            }
        }));
    }
    let mut rounds = 0;
    while cos.iter().any(|c| !c.is_finished()) {
        for c in cos.iter().filter(|c| !c.is_finished()) {
            let _ = c.enter();
        }
        rounds += 1;
        assert!(rounds < 1000, "did not finish within 1000 rounds");
    }
    let mut v = got.borrow().clone();
    // Each producer's items arrive in its order (15 made, 14 taken: one is left over).
    for p in 0..3 {
        let mine: Vec<u32> = v.iter().copied().filter(|x| x / 100 == p).collect();
        let expected: Vec<u32> = (0..mine.len() as u32).map(|i| p * 100 + i).collect();
        assert_eq!(mine, expected);
    }
    v.sort();
    assert_eq!(v.len(), 14);
    assert_eq!(ch.buf.lock().len(), 1);
    assert!(ch.not_full.is_empty() && ch.not_empty.is_empty());
}
