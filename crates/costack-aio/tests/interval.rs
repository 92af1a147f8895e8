//! Intervals: tick counts and scheduled times, the three missed-tick policies against a loop
//! that is deliberately blocked, reset, and the select branch.

use costack_aio::select::Selectable;
use costack_aio::time::{interval, interval_at, MissedTickBehavior};
use costack_aio::{spawn, suspend, EventLoop};
use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

const MS: Duration = Duration::from_millis(1);

/// Blocks the loop's thread (no yield): the interval's ticks come late.
fn block_loop(d: Duration) {
    std::thread::sleep(d);
}

#[test]
fn ticks_come_at_the_period_and_return_their_scheduled_times() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let period = 5 * MS;
        let t0 = Instant::now();
        let mut iv = interval(period);
        assert_eq!(iv.period(), period);
        let ticks: Vec<Instant> = (0..5).map(|_| iv.tick()).collect();
        let first = ticks[0];
        assert!(first >= t0, "the first tick is at once");
        for (k, &t) in ticks.iter().enumerate() {
            assert_eq!(t, first + period * k as u32);
        }
        assert!(Instant::now() >= first + 4 * period, "never early");
        assert_eq!(iv.next_tick(), Some(first + 5 * period));
    });
}

#[test]
fn interval_at_starts_at_its_start_and_other_tasks_run_while_it_waits() {
    let lp = EventLoop::new();
    let (ran, ticks) = lp.block_on(|| {
        let start = Instant::now() + 20 * MS;
        let mut iv = interval_at(start, 10 * MS);
        let ran = Rc::new(Cell::new(false));
        let r = ran.clone();
        let other = spawn(move || r.set(true));
        let a = iv.tick();
        assert!(Instant::now() >= start);
        let b = iv.tick();
        other.join();
        (ran.get(), (a - start, b - start))
    });
    assert!(ran, "the loop ran another task during the tick's wait");
    assert_eq!(ticks, (Duration::ZERO, 10 * MS));
}

/// Takes the tick at `start`, blocks the loop for 35 ms (past the ticks due at 10, 20 and
/// 30 ms), then takes two more ticks; returns them (relative to `start`) and the time at which
/// the late tick returned.
fn late_ticks(behavior: MissedTickBehavior) -> (Duration, Duration, Duration, Duration) {
    let lp = EventLoop::new();
    lp.block_on(move || {
        let start = Instant::now();
        let mut iv = interval_at(start, 10 * MS);
        iv.set_missed_tick_behavior(behavior);
        assert_eq!(iv.missed_tick_behavior(), behavior);
        assert_eq!(iv.tick(), start);
        block_loop(35 * MS);
        let late = iv.tick() - start;
        let taken = Instant::now() - start;
        let next = iv.tick() - start;
        let after = iv.tick() - start;
        (late, taken, next, after)
    })
}

#[test]
fn burst_returns_the_missed_ticks_back_to_back() {
    let lp = EventLoop::new();
    let ticks = lp.block_on(|| {
        let start = Instant::now();
        let mut iv = interval_at(start, 10 * MS);
        assert_eq!(
            iv.missed_tick_behavior(),
            MissedTickBehavior::Burst,
            "the default"
        );
        assert_eq!(iv.tick(), start);
        block_loop(35 * MS);
        let caught_up: Vec<Duration> = (0..3).map(|_| iv.tick() - start).collect();
        let on_time = iv.tick() - start;
        (caught_up, on_time)
    });
    // All three were due when the loop came back (35 ms): returned at once, back to back.
    assert_eq!(ticks.0, [10 * MS, 20 * MS, 30 * MS]);
    assert_eq!(ticks.1, 40 * MS, "then back on the original schedule");
}

#[test]
fn delay_restarts_the_schedule_a_period_after_the_late_tick() {
    let (late, taken, next, after) = late_ticks(MissedTickBehavior::Delay);
    assert_eq!(late, 10 * MS, "a tick returns the time it was due");
    assert!(
        next >= 45 * MS,
        "a full period after the late tick ({next:?})"
    );
    assert!(next <= taken + 10 * MS, "{next:?} vs {taken:?}");
    assert!(after - next >= 10 * MS);
}

#[test]
fn skip_drops_the_missed_ticks_and_keeps_the_phase() {
    let (late, taken, next, after) = late_ticks(MissedTickBehavior::Skip);
    assert_eq!(late, 10 * MS);
    assert_eq!(
        next.as_nanos() % (10 * MS).as_nanos(),
        0,
        "on the grid ({next:?})"
    );
    assert!(
        next >= 40 * MS && next <= taken + 10 * MS,
        "{next:?} vs {taken:?}"
    );
    assert_eq!(after.as_nanos() % (10 * MS).as_nanos(), 0);
    assert!(after > next);
}

#[test]
fn a_tick_late_by_less_than_a_period_changes_nothing_under_any_policy() {
    for behavior in [
        MissedTickBehavior::Burst,
        MissedTickBehavior::Delay,
        MissedTickBehavior::Skip,
    ] {
        let lp = EventLoop::new();
        let (late, next) = lp.block_on(move || {
            let start = Instant::now();
            let mut iv = interval_at(start, 100 * MS);
            iv.set_missed_tick_behavior(behavior);
            iv.tick();
            // 30 ms past the tick due at 100 ms; the one at 200 ms is 70 ms away.
            block_loop(130 * MS);
            (iv.tick() - start, iv.tick() - start)
        });
        assert_eq!((late, next), (100 * MS, 200 * MS), "{behavior:?}");
    }
}

#[test]
fn reset_starts_a_full_period_from_now() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let mut iv = interval(10 * MS);
        iv.tick();
        let r = Instant::now();
        iv.reset();
        let t = iv.tick();
        assert!(t >= r + 10 * MS && t <= Instant::now(), "{:?}", t - r);
        let at = Instant::now() + 3 * MS;
        iv.reset_at(at);
        assert_eq!(iv.tick(), at);
        assert_eq!(iv.tick(), at + 10 * MS);
    });
}

#[test]
fn ticks_work_on_a_plain_thread_too() {
    let start = Instant::now();
    let mut iv = interval_at(start, 3 * MS);
    let ticks: Vec<Duration> = (0..3).map(|_| iv.tick() - start).collect();
    assert_eq!(ticks, [Duration::ZERO, 3 * MS, 6 * MS]);
    assert!(start.elapsed() >= 6 * MS);
}

#[test]
fn a_zero_period_is_refused_with_a_clear_panic() {
    let r = std::panic::catch_unwind(|| interval(Duration::ZERO));
    let msg = r.unwrap_err().downcast::<&str>().unwrap();
    assert!(msg.contains("greater than zero"), "{msg}");
}

#[test]
fn an_interval_whose_schedule_leaves_instant_s_range_never_ticks_again() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let mut iv = interval(Duration::MAX);
        iv.tick(); // at once
        assert_eq!(iv.next_tick(), None);
        let mut b = iv.tick_branch();
        assert_eq!(b.try_select(), None);
        suspend(|w| {
            b.register(&w); // nothing to wake: no timer
            w.wake(); // end the wait ourselves
        });
        b.deregister();
    });
}

#[test]
fn the_tick_branch_takes_a_tick_only_when_it_is_due() {
    let mut iv = interval(Duration::from_secs(3600));
    let mut b = iv.tick_branch();
    assert!(b.try_select().is_some(), "the first tick is due at once");
    assert_eq!(b.try_select(), None);
    assert_eq!(b.try_select(), None, "a losing try takes nothing");
    drop(b);
    assert!(iv.next_tick().unwrap() > Instant::now() + Duration::from_secs(3500));
}

#[test]
fn a_registered_tick_branch_wakes_its_task_at_the_tick() {
    let lp = EventLoop::new();
    let (got, due, woke) = lp.block_on(|| {
        let due = Instant::now() + 15 * MS;
        let mut iv = interval_at(due, 10 * MS);
        let mut b = iv.tick_branch();
        assert_eq!(b.try_select(), None);
        suspend(|w| b.register(&w));
        let woke = Instant::now();
        let got = b.try_select();
        b.deregister();
        (got, due, woke)
    });
    assert_eq!(got, Some(due));
    assert!(woke >= due, "not woken early");
}

#[test]
fn a_registered_tick_branch_wakes_a_plain_thread_at_the_tick() {
    let due = Instant::now() + 15 * MS;
    let mut iv = interval_at(due, 10 * MS);
    let mut b = iv.tick_branch();
    assert_eq!(b.try_select(), None);
    suspend(|w| b.register(&w));
    assert!(Instant::now() >= due);
    assert_eq!(b.try_select(), Some(due));
    b.deregister();
}

#[test]
fn a_deregistered_tick_branch_leaves_no_timer_on_the_loop() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let mut iv = interval_at(Instant::now() + Duration::from_secs(3600), MS);
        let mut b = iv.tick_branch();
        suspend(|w| {
            b.register(&w);
            b.register(&w); // replaces the first registration
            w.wake();
        });
        b.deregister();
    });
    // No task, no timer, nothing queued, no handle: a blocking poll returns at once.
    let t = Instant::now();
    assert!(!lp.poll(true));
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_tick_branch_that_lost_a_select_on_a_driving_thread_leaves_a_blocking_poll_idle() {
    // A select on a plain thread that has a loop drives the loop, and its waker keeps the
    // loop's mailbox open. The losing branch's helper thread held a clone of that waker for a
    // moment after the select returned; a blocking poll that started then saw "someone could
    // still send" and waited forever. 20 rounds: the first one hung.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for _ in 0..20 {
            let lp = EventLoop::new();
            let mut far = interval_at(Instant::now() + Duration::from_secs(3600), MS);
            let mut near = interval_at(Instant::now() + 2 * MS, MS);
            let won = {
                let mut branches = [far.tick_branch(), near.tick_branch()];
                costack_aio::select::select_any(&mut branches).map(|(i, _)| i)
            };
            assert_eq!(won, Some(1));
            assert!(!lp.poll(true));
        }
        tx.send(()).unwrap();
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("a blocking poll waited for nothing");
}
