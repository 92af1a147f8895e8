//! The name of one wait of one task ([`TaskKey`]), and the map keyed by task ids.
//!
//! Ground floor: imports nothing from this crate. Every driver that can end a wait (the
//! reactor's waiter lists, the timer map, the io_uring slots, the cross-thread mailbox) stores
//! these keys; what a key means and why a stale one is harmless is explained in the `wait`
//! module.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Identifies one wait of one task: the task's coroutine id and the epoch of the wait.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct TaskKey {
    pub(crate) co: u64,
    pub(crate) epoch: u32,
}

/// Hashes coroutine ids (sequential numbers) with one multiplication.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0 ^ u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ self.0.rotate_left(5)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A map keyed by coroutine ids.
pub(crate) type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;
