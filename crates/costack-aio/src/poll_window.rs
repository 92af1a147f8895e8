//! Adaptive polling: how long the loop polls for events before it sleeps in the kernel.
//!
//! Ground floor: imports nothing of the crate. The loop (`runtime`) owns one [`PollWindow`]
//! and asks it, each time it would sleep, how long to poll first; afterwards it reports how
//! long the wait really lasted, and the window adapts — QEMU's `AioContext` polling
//! (`poll-max-ns`, `poll-grow`, `poll-shrink`), with QEMU's default rules:
//!
//! * a wait that ended within the window is the sweet spot: no change;
//! * a wait longer than the limit (`max`) means polling would not have found the event in any
//!   window the loop may use: the window drops to zero, and the next waits sleep at once;
//! * a wait longer than the window but within the limit means a longer window would have
//!   caught it: the window doubles (from [`START`] when it was zero), up to the limit.
//!
//! A limit of zero (the default) turns polling off: the window stays zero and the loop sleeps
//! at once, as without this module.

use std::time::Duration;

/// The first window when polling starts growing from zero (QEMU's 4 µs).
pub(crate) const START: Duration = Duration::from_micros(4);

/// The self-tuning polling window of one loop (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PollWindow {
    /// How long the loop polls before its next sleep (at most `max`).
    now: Duration,
    /// The limit; zero turns polling off.
    max: Duration,
}

impl PollWindow {
    /// A window that may grow up to `max` (zero: polling off). It starts at zero: the first
    /// waits that are short enough make it grow.
    pub(crate) fn new(max: Duration) -> PollWindow {
        PollWindow {
            now: Duration::ZERO,
            max,
        }
    }

    /// How long to poll before the next sleep.
    #[inline]
    pub(crate) fn current(&self) -> Duration {
        self.now
    }

    /// The limit.
    pub(crate) fn max(&self) -> Duration {
        self.max
    }

    /// Changes the limit; the window is clamped to it at once.
    pub(crate) fn set_max(&mut self, max: Duration) {
        self.max = max;
        self.now = self.now.min(max);
    }

    /// Adapts the window to a wait that lasted `blocked` (polling and sleeping together,
    /// until the first event or the timeout).
    pub(crate) fn adjust(&mut self, blocked: Duration) {
        if self.max.is_zero() || blocked <= self.now {
            return;
        }
        if blocked > self.max {
            self.now = Duration::ZERO;
        } else if self.now < self.max {
            self.now = if self.now.is_zero() {
                START
            } else {
                self.now.saturating_mul(2)
            }
            .min(self.max);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    #[test]
    fn off_never_polls() {
        let mut w = PollWindow::new(Duration::ZERO);
        for b in [0, 1, 3, 5, 50, 5000] {
            w.adjust(b * US);
            assert_eq!(w.current(), Duration::ZERO);
        }
    }

    #[test]
    fn grows_by_doubling_up_to_the_limit() {
        let mut w = PollWindow::new(50 * US);
        // Each wait as long as the limit is longer than the window and within the limit: it
        // doubles the window, until the window is the limit (then the wait is within it).
        let mut seen = Vec::new();
        for _ in 0..8 {
            w.adjust(50 * US);
            seen.push(w.current().as_micros());
        }
        assert_eq!(seen, [4, 8, 16, 32, 50, 50, 50, 50]);
    }

    #[test]
    fn sweet_spot_keeps_the_window() {
        let mut w = PollWindow::new(50 * US);
        w.adjust(10 * US); // 0 -> 4
        w.adjust(10 * US); // 4 -> 8
        w.adjust(10 * US); // 8 -> 16
        assert_eq!(w.current(), 16 * US);
        for b in [0, 1, 10, 16] {
            w.adjust(b * US);
            assert_eq!(w.current(), 16 * US);
        }
    }

    #[test]
    fn a_wait_past_the_limit_resets_to_zero() {
        let mut w = PollWindow::new(50 * US);
        for _ in 0..4 {
            w.adjust(40 * US);
        }
        assert_eq!(w.current(), 32 * US);
        w.adjust(51 * US);
        assert_eq!(w.current(), Duration::ZERO);
        // And it grows again from the start.
        w.adjust(US);
        assert_eq!(w.current(), START);
    }

    #[test]
    fn lowering_the_limit_clamps_the_window() {
        let mut w = PollWindow::new(100 * US);
        for _ in 0..5 {
            w.adjust(90 * US);
        }
        assert_eq!(w.current(), 64 * US);
        w.set_max(10 * US);
        assert_eq!(w.current(), 10 * US);
        assert_eq!(w.max(), 10 * US);
        w.set_max(Duration::ZERO);
        assert_eq!(w.current(), Duration::ZERO);
        w.adjust(US);
        assert_eq!(w.current(), Duration::ZERO);
    }

    #[test]
    fn a_limit_below_the_start_caps_the_first_window() {
        let mut w = PollWindow::new(2 * US);
        w.adjust(US + US / 2);
        assert_eq!(w.current(), 2 * US);
    }
}
