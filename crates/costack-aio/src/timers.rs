//! The loop's timer map: deadlines and the wait each one ends.
//!
//! Ground floor: imports only [`key`](crate::key). The loop bounds its wait for I/O by the
//! nearest deadline and fires what is due after it; a wait with a deadline (a sleep, a
//! `timeout` scope) puts an entry here for as long as it parks (see the `wait` module). The
//! public timer API (`sleep`, `timeout`, `WakeableSleep`) is in the `time` module.

use crate::key::TaskKey;
use std::collections::BTreeMap;
use std::time::Instant;

/// The loop's timers: deadline and sequence number to the key they wake. Entries due at the
/// same time fire in the order of their creation.
#[derive(Default)]
pub(crate) struct Timers {
    map: BTreeMap<(Instant, u64), TaskKey>,
    seq: u64,
}

impl Timers {
    /// Adds a timer that wakes `key` at `at`; returns the entry, for [`remove`](Timers::remove).
    pub(crate) fn insert(&mut self, at: Instant, key: TaskKey) -> (Instant, u64) {
        self.seq += 1;
        let k = (at, self.seq);
        self.map.insert(k, key);
        k
    }

    /// Removes an entry (fired or not).
    pub(crate) fn remove(&mut self, k: (Instant, u64)) {
        self.map.remove(&k);
    }

    /// The nearest deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.map.first_key_value().map(|(k, _)| k.0)
    }

    /// The next timer due at `now`, removed.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<TaskKey> {
        let entry = self.map.first_entry()?;
        if entry.key().0 > now {
            return None;
        }
        Some(entry.remove())
    }

    /// Drops every timer (the loop shuts down).
    pub(crate) fn clear(&mut self) {
        self.map.clear();
    }
}
