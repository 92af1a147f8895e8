//! A file request's trip: from the task to the kernel and back, through the loop's io_uring
//! ring or its worker pool, while the task waits.
//!
//! Third floor: imports the wait protocol (`wait`), the requests (`op`), the ring (`uring`),
//! the worker-pool glue (`blocking`) and the loop proper (`runtime`, for its ring). The public
//! API that issues requests is `File`, in `fs`; what a request *is* on each path is in `op`;
//! the life of a request in the ring (slots, cancellation, shutdown) is told in `uring`.

use crate::blocking::run_blocking_in;
use crate::op::sys::from_cqe;
use crate::op::Op;
use crate::uring::{OpId, Uring};
use crate::wait::{begin_wait, yield_now, Wait};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

/// Runs `op` on the loop of the task waiting with `w`: through the ring if the loop has one,
/// else on a worker thread. `fd` is `None` only for `Op::Open`.
pub(crate) fn run_in_task(w: Wait, fd: Option<&Arc<OwnedFd>>, op: Op) -> (io::Result<usize>, Op) {
    let (w, op) = match run_on_ring(w, fd, op) {
        Ok(done) => return done,
        Err(back) => back,
    };
    let fd = fd.cloned();
    run_blocking_in(w, move || {
        let mut op = op;
        let raw = fd.as_ref().map_or(libc::AT_FDCWD, |f| f.as_raw_fd());
        let r = op.blocking(raw);
        drop(fd); // the descriptor stays open while the worker uses it
        (r, op)
    })
}

/// Runs `op` as a blocking system call on the calling thread (outside any task).
pub(crate) fn run_here(fd: Option<&Arc<OwnedFd>>, op: Op) -> (io::Result<usize>, Op) {
    let mut op = op;
    let raw = fd.map_or(libc::AT_FDCWD, |f| f.as_raw_fd());
    let r = op.blocking(raw);
    (r, op)
}

/// Marks a request orphaned if its task unwinds while it is in flight.
struct OrphanGuard<'a> {
    uring: &'a Uring,
    id: OpId,
}

impl Drop for OrphanGuard<'_> {
    fn drop(&mut self) {
        self.uring.orphan(self.id);
    }
}

/// Runs `op` through the ring of the loop of the task waiting with `w`, yielding until it
/// completes. Gives the wait and the request back if that loop has no ring, or the ring cannot
/// do this request.
#[allow(clippy::type_complexity)]
fn run_on_ring(
    w: Wait,
    fd: Option<&Arc<OwnedFd>>,
    op: Op,
) -> Result<(io::Result<usize>, Op), (Wait, Op)> {
    let inner = w.inner.clone();
    let Some(uring) = inner.uring() else {
        return Err((w, op));
    };
    if op.is_truncate() && !uring.can_truncate() {
        return Err((w, op));
    }
    // If the ring was full, let the loop run a turn (which reaps completions), then begin a
    // wait anew.
    let w = if uring.make_room(&mut |k| inner.wake(k)) {
        w
    } else {
        drop(w);
        loop {
            yield_now();
            if uring.make_room(&mut |k| inner.wake(k)) {
                break;
            }
        }
        begin_wait().expect("the caller is a task")
    };
    let id = uring.start(fd.cloned(), op, w.key);
    let guard = OrphanGuard { uring, id };
    w.park(None);
    loop {
        if let Some((res, op)) = uring.take_done(id) {
            std::mem::forget(guard);
            return Ok((from_cqe(res), op));
        }
        // Entered by someone else (a lock's deferred wake-up): wait again.
        let w = begin_wait().expect("the caller is a task");
        uring.set_waiter(id, w.key);
        w.park(None);
    }
}
