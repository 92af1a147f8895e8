//! Trace events for coroutine switches.
//!
//! With the cargo feature `trace`, every switch emits a `tracing` event at TRACE level with
//! target `costack`:
//!
//! | event       | fields        | when                                            |
//! |-------------|---------------|-------------------------------------------------|
//! | `enter`     | `from`, `to`  | a coroutine is entered (`from` is `main` or an id) |
//! | `yield`     | `from`, `to`  | a coroutine yields back to its enterer          |
//! | `terminate` | `co`          | a coroutine's closure returned or panicked      |
//!
//! Without the feature the macros expand to nothing, so the switch paths carry no trace code at
//! all. Coroutine ids ([`crate::CoId`]) are stable for the coroutine's life and print as
//! `co<thread>.<n>`.
//!
//! May import: nothing of the crate.

/// Emits a trace event when the `trace` feature is on; expands to nothing otherwise.
macro_rules! trace_event {
    (enter, $from:expr, $to:expr) => {
        #[cfg(feature = "trace")]
        ::tracing::trace!(target: "costack", from = %$from, to = %$to, "enter");
    };
    (yield, $from:expr, $to:expr) => {
        #[cfg(feature = "trace")]
        ::tracing::trace!(target: "costack", from = %$from, to = %$to, "yield");
    };
    (terminate, $co:expr) => {
        #[cfg(feature = "trace")]
        ::tracing::trace!(target: "costack", co = %$co, "terminate");
    };
}
pub(crate) use trace_event;
