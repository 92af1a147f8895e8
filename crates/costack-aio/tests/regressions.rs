//! Regression tests for the seams between costack's layers and the event loop (the
//! resume-contract issue): each failed — a hang, a misleading panic, or work that ran although
//! its task was gone — before the loop took part in the core's resume contract. They use only
//! APIs that existed before it. Hangs are bounded: the loop runs on a thread of its own, and the
//! test waits for its answer with a timeout.

use costack::{Generator, GeneratorState};
use costack_aio::net::UnixStream;
use costack_aio::{run_blocking, sleep, spawn, EventLoop};
use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

#[path = "common/threads.rs"]
mod threads;
use threads::bounded;

// 6. `costack::yield_now()` in a task

#[test]
fn costack_yield_now_in_a_task_lets_the_others_run_and_continues() {
    let log = bounded(10, || {
        let lp = EventLoop::new();
        lp.block_on(|| {
            let log = Rc::new(RefCell::new(Vec::new()));
            let l = log.clone();
            let other = spawn(move || {
                for i in 0..2 {
                    l.borrow_mut().push(format!("other {i}"));
                    costack::yield_now();
                }
            });
            for i in 0..3 {
                log.borrow_mut().push(format!("main {i}"));
                costack::yield_now(); // the README's first example, inside a task
            }
            other.join();
            let v = log.borrow().clone();
            v
        })
    });
    assert_eq!(
        log,
        ["main 0", "other 0", "main 1", "other 1", "main 2"],
        "the tasks take turns"
    );
}

// 7. A generator (a nested coroutine) inside a task does I/O

#[test]
fn a_generator_in_a_task_reads_a_socket() {
    let tokens = bounded(10, || {
        let lp = EventLoop::new();
        lp.block_on(|| {
            let (mut tx, rx) = UnixStream::pair().unwrap();
            // The writer sends the input in pieces, with pauses, so that the lexer must wait.
            let writer = spawn(move || {
                for piece in ["12 3", "45 ", "", "6 78", "9\n"] {
                    tx.write_all(piece.as_bytes()).unwrap();
                    sleep(Duration::from_millis(5));
                }
            });
            // A lexer pulling bytes from the socket: numbers out, one per `resume`.
            let mut lexer = Generator::<(), u64, usize>::new(move |y, ()| {
                let mut rx = rx;
                let mut n: Option<u64> = None;
                let mut count = 0;
                let mut byte = [0u8; 1];
                loop {
                    if rx.read(&mut byte).unwrap() == 0 {
                        break; // end of stream
                    }
                    match byte[0] {
                        b'0'..=b'9' => {
                            n = Some(n.unwrap_or(0) * 10 + u64::from(byte[0] - b'0'));
                        }
                        _ => {
                            if let Some(v) = n.take() {
                                count += 1;
                                y.suspend(v);
                            }
                            if byte[0] == b'\n' {
                                break;
                            }
                        }
                    }
                }
                count
            });
            let mut tokens = Vec::new();
            for _ in 0..10 {
                match lexer.resume(()) {
                    GeneratorState::Yielded(v) => tokens.push(v),
                    GeneratorState::Complete(n) => {
                        assert_eq!(n, tokens.len());
                        break;
                    }
                }
            }
            writer.join();
            tokens
        })
    });
    assert_eq!(tokens, [12, 345, 6, 789]);
}

// 8. Cancelling a task that caught its forced unwind and waits again

/// Counts its drops.
struct Tracked(Rc<Cell<u32>>);

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

#[test]
fn cancelling_a_task_that_catches_the_unwind_and_waits_again_goes_on_unwinding() {
    let (caught, drops, count) = bounded(10, || {
        let lp = EventLoop::new();
        let caught = Rc::new(Cell::new(0));
        let drops = Rc::new(Cell::new(0));
        let (c, d) = (caught.clone(), drops.clone());
        let h = lp.spawn(move || {
            let _t = Tracked(d);
            let r = catch_unwind(AssertUnwindSafe(|| sleep(Duration::from_secs(3600))));
            if r.is_err() {
                c.set(c.get() + 1);
            }
            sleep(Duration::from_secs(3600)); // waits again: must continue the unwind
        });
        lp.block_on(costack_aio::yield_now); // the task starts and sleeps
        h.cancel(); // must not panic
        let count = lp.task_count();
        (caught.get(), drops.get(), count)
    });
    assert_eq!((caught, drops, count), (1, 1, 0));
}

#[test]
fn dropping_a_loop_whose_task_catches_the_unwind_and_waits_again_goes_on_unwinding() {
    let (caught, drops) = bounded(10, || {
        let caught = Rc::new(Cell::new(0));
        let drops = Rc::new(Cell::new(0));
        let lp = EventLoop::new();
        for _ in 0..3 {
            let (c, d) = (caught.clone(), drops.clone());
            lp.spawn(move || {
                let _t = Tracked(d);
                let r = catch_unwind(AssertUnwindSafe(|| sleep(Duration::from_secs(3600))));
                if r.is_err() {
                    // What a careless handler might do: note it, and wait again.
                    c.set(c.get() + 1);
                }
                sleep(Duration::from_secs(3600));
            });
        }
        lp.block_on(costack_aio::yield_now);
        drop(lp); // must not panic
        (caught.get(), drops.get())
    });
    assert_eq!((caught, drops), (3, 3));
}

// 9. `run_blocking` work whose task is cancelled while it is still queued

#[test]
fn a_queued_blocking_job_of_a_cancelled_task_does_not_run() {
    let (ran_b, ran_c) = bounded(20, || {
        let lp = EventLoop::builder().blocking_threads(1).build().unwrap();
        let ran_b = Arc::new(AtomicUsize::new(0));
        let ran_c = Arc::new(AtomicUsize::new(0));
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(std::sync::Mutex::new(release_rx));
        // A occupies the only worker until released.
        let a = lp.spawn(move || {
            run_blocking(move || {
                release_rx.lock().unwrap().recv().unwrap();
            })
        });
        // B's job queues behind A's.
        let rb = ran_b.clone();
        let b = lp.spawn(move || {
            run_blocking(move || {
                rb.fetch_add(1, Ordering::SeqCst);
            })
        });
        lp.block_on(costack_aio::yield_now); // A and B submit their jobs
        b.cancel(); // B's job is still queued: it must be taken off the queue
                    // C's job queues after B's; with one worker, FIFO, it runs after B's would have.
        let rc = ran_c.clone();
        let c = lp.spawn(move || {
            run_blocking(move || {
                rc.fetch_add(1, Ordering::SeqCst);
            })
        });
        release_tx.send(()).unwrap();
        lp.block_on(move || {
            a.join();
            c.join();
        });
        (ran_b.load(Ordering::SeqCst), ran_c.load(Ordering::SeqCst))
    });
    assert_eq!((ran_b, ran_c), (0, 1));
}
