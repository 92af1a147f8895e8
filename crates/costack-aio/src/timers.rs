//! The loop's timer map: deadlines and the wait each one ends.
//!
//! Ground floor: imports only [`key`](crate::key). The loop bounds its wait for I/O by the
//! nearest deadline and fires what is due after it; a wait with a deadline (a sleep, a
//! `timeout` scope) puts an entry here for as long as it parks (see the `wait` module). The
//! public timer API (`sleep`, `timeout`, `WakeableSleep`, `Interval`) is in the `time` module.
//! Besides waking a task, an entry can run a callback (an `Interval` registered with a select
//! wakes the select's `Waker` that way).

use crate::key::TaskKey;
use std::collections::BTreeMap;
use std::time::Instant;

/// What a timer does when it fires.
pub(crate) enum TimerAction {
    /// Wake the task waiting with this key, if it still is.
    Wake(TaskKey),
    /// Run this callback on the loop's thread (it must not wait).
    Call(Box<dyn FnOnce()>),
}

/// The loop's timers: deadline and sequence number to what they do. Entries due at the same
/// time fire in the order of their creation.
#[derive(Default)]
pub(crate) struct Timers {
    map: BTreeMap<(Instant, u64), TimerAction>,
    seq: u64,
}

impl Timers {
    /// Adds a timer that does `action` at `at`; returns the entry, for
    /// [`remove`](Timers::remove).
    pub(crate) fn insert(&mut self, at: Instant, action: TimerAction) -> (Instant, u64) {
        self.seq += 1;
        let k = (at, self.seq);
        self.map.insert(k, action);
        k
    }

    /// Removes an entry (fired or not); gives back its action, if it had not fired, for the
    /// caller to drop outside any borrow.
    pub(crate) fn remove(&mut self, k: (Instant, u64)) -> Option<TimerAction> {
        self.map.remove(&k)
    }

    /// Whether there are no timers.
    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The nearest deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.map.first_key_value().map(|(k, _)| k.0)
    }

    /// The next timer due at `now`, removed.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<TimerAction> {
        let entry = self.map.first_entry()?;
        if entry.key().0 > now {
            return None;
        }
        Some(entry.remove())
    }

    /// Takes every timer out (the loop shuts down); the caller drops them outside any borrow.
    pub(crate) fn take_all(&mut self) -> BTreeMap<(Instant, u64), TimerAction> {
        std::mem::take(&mut self.map)
    }
}
