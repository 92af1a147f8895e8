//! Limits on connections: how many may be open at once, and what the acceptor does when
//! `accept(2)` fails (above all when the process is out of file descriptors).
//!
//! The server's accept loop uses three things from here, each on its own so that the loop
//! stays a few lines long whatever kind of listener it accepts from:
//!
//! * [`ConnCount`]: the connections open across every event loop, those still in the
//!   handshake included. [`ConnCount::admit`] hands out an [`Admitted`] guard, which gives the
//!   place back when it is dropped, however the connection ends.
//! * [`Spare`] and [`Shortage`]: what happens while the process is out of file descriptors.
//!   At first, nothing drastic: `accept` fails with `EMFILE`/`ENFILE`, the acceptor backs off
//!   ([`SHORT_BACK_OFF`]) and tries again, and the clients wait in the listen backlog — as
//!   with qemu-nbd, a client that came while the process was full is served as soon as a
//!   descriptor is free again (stalled handshakes free theirs at their deadline). Only if the
//!   shortage lasts longer than that ([`shed_after`]: the handshake deadline and 5 s more),
//!   so that no deadline is going to free anything, does the acceptor shed: it holds one spare
//!   descriptor (`/dev/null`), closes it, accepts the waiting connection into the freed number,
//!   closes that at once (the client reads end-of-file instead of hanging in the backlog for
//!   ever) and takes the spare back. Without the spare a full process could not take a
//!   connection out of the backlog at all.
//! * [`after_error`]: what to do about any other failure of `accept`: try again at once (the
//!   error belonged to one connection, which is gone), or back off for a while (the process
//!   or the system is short of something; trying at once would spin).
//!
//! May import: nothing of the crate (the server logs what happens). The server (`mod.rs`)
//! imports it.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The connections open across every loop of one server, and their limit.
pub(super) struct ConnCount {
    open: Arc<AtomicUsize>,
    /// 0: no limit.
    max: usize,
}

impl ConnCount {
    /// No connection open yet; at most `max` at once (0: no limit).
    pub(super) fn new(max: usize) -> ConnCount {
        ConnCount {
            open: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// A place for one more connection, or `None` if all `max` are taken.
    pub(super) fn admit(&self) -> Option<Admitted> {
        let max = if self.max == 0 { usize::MAX } else { self.max };
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(Admitted(self.open.clone()))
    }

    /// Connections open now.
    pub(super) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// One connection's place in a [`ConnCount`], given back when dropped (on whichever loop the
/// connection ran).
pub(super) struct Admitted(Arc<AtomicUsize>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What [`Spare::accept`] got.
pub(super) enum Took<T> {
    /// A connection to serve.
    Conn(T),
    /// The process was out of file descriptors: one pending connection was accepted with the
    /// spare's number and closed at once.
    Shed,
}

/// The reserve file descriptor of the acceptor; see the [module docs](self).
pub(super) struct Spare(Option<File>);

impl Spare {
    /// Opens the spare (`/dev/null`; if even that fails, the acceptor works without one and
    /// only backs off when out of fds).
    pub(super) fn new() -> Spare {
        Spare(open_spare())
    }

    /// Opens the spare again if it was lost (another thread took the number it freed).
    pub(super) fn refill(&mut self) {
        if self.0.is_none() {
            self.0 = open_spare();
        }
    }

    /// Runs the non-blocking `accept` once. If it fails because the process or the system is
    /// out of file descriptors, `shed` is set and the spare is held, frees the spare, accepts
    /// once more, closes what that accepted and reopens the spare: [`Took::Shed`]. Any other
    /// result, and the error of the second try (`WouldBlock` when nobody was waiting after
    /// all), is returned as it is, so this fits in
    /// [`AsyncFd::read_with`](costack_aio::io::AsyncFd::read_with).
    pub(super) fn accept<T>(
        &mut self,
        shed: bool,
        mut accept: impl FnMut() -> io::Result<T>,
    ) -> io::Result<Took<T>> {
        match accept() {
            Ok(c) => Ok(Took::Conn(c)),
            Err(e) if shed && out_of_fds(&e) && self.0.is_some() => {
                self.0 = None;
                let r = accept();
                // Closed before the spare is reopened, so the spare gets this number back.
                let r = r.map(drop);
                self.0 = open_spare();
                r.map(|()| Took::Shed)
            }
            Err(e) => Err(e),
        }
    }
}

/// How long the process may stay out of file descriptors before the acceptor sheds the
/// clients waiting in the backlog: the handshake deadline (10 s if there is none), by which
/// every stalled handshake has freed its descriptor, and 5 s more for a loaded machine to cut
/// them. Past it the descriptors are held by connections in transmission, which no deadline
/// frees, and a waiting client would otherwise wait for ever.
pub(super) fn shed_after(handshake_timeout: Option<Duration>) -> Duration {
    handshake_timeout.unwrap_or(Duration::from_secs(10)) + Duration::from_secs(5)
}

/// Since when the process has been out of file descriptors, as the acceptor saw it.
pub(super) struct Shortage {
    since: Option<Instant>,
    grace: Duration,
}

impl Shortage {
    /// No shortage yet; shed once one has lasted `grace` ([`shed_after`]).
    pub(super) fn new(grace: Duration) -> Shortage {
        Shortage { since: None, grace }
    }

    /// Whether the shortage has lasted long enough to shed waiting clients.
    pub(super) fn shedding(&self) -> bool {
        self.since.is_some_and(|t| t.elapsed() >= self.grace)
    }

    /// `accept` failed with `e`; true if that began a shortage (for the log).
    pub(super) fn failed(&mut self, e: &io::Error) -> bool {
        if out_of_fds(e) && self.since.is_none() {
            self.since = Some(Instant::now());
            return true;
        }
        false
    }

    /// A connection was accepted: descriptors are free again.
    pub(super) fn accepted(&mut self) {
        self.since = None;
    }
}

fn open_spare() -> Option<File> {
    File::open("/dev/null").ok()
}

/// `EMFILE` (this process) or `ENFILE` (the whole system).
pub(super) fn out_of_fds(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// What the acceptor does after `accept` failed; see [`after_error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterError {
    /// The error was one connection's (it is gone): accept the next at once.
    Retry,
    /// The process or the system is short of something: wait this long, then accept again
    /// (long enough that a lasting shortage costs next to no CPU, short enough that clients
    /// are served soon after it ends).
    BackOff(Duration),
}

/// How long the acceptor waits when the process or the system is short of fds or memory.
pub(super) const SHORT_BACK_OFF: Duration = Duration::from_millis(100);
/// How long it waits after an error it does not know (the listener itself may be broken:
/// better slow than spinning).
pub(super) const LONG_BACK_OFF: Duration = Duration::from_secs(1);

/// What to do about an error of `accept` (other than `WouldBlock`, which just waits for the
/// next connection).
///
/// * Errors that belong to the connection being accepted — it was aborted before it was
///   taken (`ECONNABORTED`), or one of the network errors Linux passes on from the new
///   socket (`ENETDOWN`, `EPROTO`, `ENOPROTOOPT`, `EHOSTDOWN`, `ENONET`, `EHOSTUNREACH`,
///   `EOPNOTSUPP`, `ENETUNREACH`): [`Retry`](AfterError::Retry). Each took a pending
///   connection out of the backlog, so retrying cannot spin. (`EINTR` never gets here: the
///   loop's `read_with` retries it.)
/// * Out of fds (`EMFILE`, `ENFILE`, when the [`Spare`] could not help), of kernel memory
///   (`ENOBUFS`, `ENOMEM`), or refused by a security policy (`EPERM`, which may last): a
///   [`SHORT_BACK_OFF`].
/// * Anything else: a [`LONG_BACK_OFF`].
pub(super) fn after_error(e: &io::Error) -> AfterError {
    match e.raw_os_error() {
        Some(
            libc::ECONNABORTED
            | libc::ENETDOWN
            | libc::EPROTO
            | libc::ENOPROTOOPT
            | libc::EHOSTDOWN
            | libc::ENONET
            | libc::EHOSTUNREACH
            | libc::EOPNOTSUPP
            | libc::ENETUNREACH,
        ) => AfterError::Retry,
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EPERM) => {
            AfterError::BackOff(SHORT_BACK_OFF)
        }
        _ => AfterError::BackOff(LONG_BACK_OFF),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_admits_up_to_max_and_guards_give_back() {
        let c = ConnCount::new(2);
        let a = c.admit().unwrap();
        let b = c.admit().unwrap();
        assert!(c.admit().is_none());
        assert_eq!(c.open(), 2);
        drop(a);
        assert_eq!(c.open(), 1);
        let a = c.admit().unwrap();
        assert!(c.admit().is_none());
        drop((a, b));
        assert_eq!(c.open(), 0);
    }

    #[test]
    fn zero_means_no_limit() {
        let c = ConnCount::new(0);
        let g: Vec<_> = (0..1000).map(|_| c.admit().unwrap()).collect();
        assert_eq!(c.open(), 1000);
        drop(g);
        assert_eq!(c.open(), 0);
    }

    #[test]
    fn errors_are_classified() {
        let e = |n| io::Error::from_raw_os_error(n);
        assert_eq!(after_error(&e(libc::ECONNABORTED)), AfterError::Retry);
        assert_eq!(after_error(&e(libc::EPROTO)), AfterError::Retry);
        for n in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOBUFS,
            libc::ENOMEM,
            libc::EPERM,
        ] {
            assert_eq!(after_error(&e(n)), AfterError::BackOff(SHORT_BACK_OFF));
        }
        assert_eq!(
            after_error(&e(libc::EBADF)),
            AfterError::BackOff(LONG_BACK_OFF)
        );
        assert_eq!(
            after_error(&io::Error::other("no errno")),
            AfterError::BackOff(LONG_BACK_OFF)
        );
        assert!(out_of_fds(&e(libc::EMFILE)) && out_of_fds(&e(libc::ENFILE)));
        assert!(!out_of_fds(&e(libc::ENOMEM)));
    }

    #[test]
    fn spare_sheds_only_when_out_of_fds() {
        let mut s = Spare::new();
        assert!(s.0.is_some());
        // A connection: passed on.
        assert!(matches!(s.accept(true, || Ok(7)), Ok(Took::Conn(7))));
        // Out of fds, then one waiting: shed, and the spare is back.
        let mut tries = 0;
        let r = s.accept(true, || {
            tries += 1;
            if tries == 1 {
                Err(io::Error::from_raw_os_error(libc::EMFILE))
            } else {
                Ok(1)
            }
        });
        assert!(matches!(r, Ok(Took::Shed)));
        assert_eq!(tries, 2);
        assert!(s.0.is_some());
        // Out of fds and nobody waiting: WouldBlock, for the caller to wait on.
        let mut tries = 0;
        let r = s.accept(true, || -> io::Result<()> {
            tries += 1;
            Err(io::Error::from_raw_os_error(if tries == 1 {
                libc::EMFILE
            } else {
                libc::EAGAIN
            }))
        });
        assert_eq!(r.err().unwrap().kind(), io::ErrorKind::WouldBlock);
        // Without a spare the error is passed on (for a back-off); refill takes it back.
        s.0 = None;
        let r = s.accept(true, || -> io::Result<()> {
            Err(io::Error::from_raw_os_error(libc::EMFILE))
        });
        assert_eq!(r.err().unwrap().raw_os_error(), Some(libc::EMFILE));
        s.refill();
        assert!(s.0.is_some());
        // Not shedding (the shortage is young): the error is passed on, nothing is accepted.
        let mut tries = 0;
        let r = s.accept(false, || -> io::Result<()> {
            tries += 1;
            Err(io::Error::from_raw_os_error(libc::EMFILE))
        });
        assert_eq!(r.err().unwrap().raw_os_error(), Some(libc::EMFILE));
        assert_eq!(tries, 1);
        assert!(s.0.is_some());
    }

    #[test]
    fn a_shortage_sheds_only_after_its_grace() {
        assert_eq!(
            shed_after(Some(Duration::from_secs(4))),
            Duration::from_secs(9)
        );
        assert_eq!(shed_after(None), Duration::from_secs(15));
        let mut s = Shortage::new(Duration::from_millis(50));
        assert!(!s.shedding());
        // Not a shortage of fds: nothing starts.
        assert!(!s.failed(&io::Error::from_raw_os_error(libc::ECONNABORTED)));
        assert!(!s.shedding());
        assert!(s.failed(&io::Error::from_raw_os_error(libc::EMFILE)));
        // Already in one: not a new start.
        assert!(!s.failed(&io::Error::from_raw_os_error(libc::ENFILE)));
        assert!(!s.shedding());
        std::thread::sleep(Duration::from_millis(60));
        assert!(s.shedding());
        s.accepted();
        assert!(!s.shedding());
    }
}
