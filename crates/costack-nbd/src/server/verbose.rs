//! Connection-level messages on stderr: the switch ([`set_verbose`]) and the `log!` macro the
//! other server modules write them with.
//!
//! The ground floor of the server: it imports nothing of the crate, and every sibling
//! (`wire`, `conn`, the server itself) may import it.

use std::sync::atomic::{AtomicBool, Ordering};

static VERBOSE: AtomicBool = AtomicBool::new(false);

/// Turns connection-level messages on stderr on or off (off by default).
pub fn set_verbose(on: bool) {
    VERBOSE.store(on, Ordering::Relaxed);
}

/// Whether messages are on (read by `log!`).
#[inline]
pub(super) fn on() -> bool {
    VERBOSE.load(Ordering::Relaxed)
}

/// Writes a message on stderr, prefixed with `costack-nbd: `, if [`set_verbose`] turned
/// messages on; costs one relaxed load otherwise.
macro_rules! log {
    ($($t:tt)*) => {
        if $crate::server::verbose::on() {
            eprintln!("costack-nbd: {}", format_args!($($t)*));
        }
    };
}
pub(super) use log;
