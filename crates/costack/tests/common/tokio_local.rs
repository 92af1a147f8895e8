//! Runs a test's async body on a current-thread tokio runtime inside a `LocalSet`, where
//! `spawn_local` can host `!Send` futures such as `costack::bridge::as_future`'s. Included with
//! `#[path]`.

#![allow(dead_code)]

use std::future::Future;

/// Runs `body` to completion on a fresh current-thread runtime (timers and I/O enabled) inside
/// a `LocalSet`.
pub fn block_on_local<F: Future>(body: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&rt, body)
}
