//! Faults on demand: a [`Backend`] wrapper that fails chosen operations with chosen errors,
//! switched at run time through a shared [`Faults`] handle.
//!
//! A real disk fails now and then — a bad sector (`EIO`), a full file system (`ENOSPC`), a
//! quota (`EDQUOT`). [`Export::with_faults`](super::Export::with_faults) puts an export
//! behind a set of [`FaultRule`]s so that a test (ours, or an operator's testing a client) can
//! make that happen exactly when and where it wants: which operations ([`FaultOp`]), which
//! bytes, which error, how many times. A request a rule hits fails before it reaches the
//! store (a failed write changes nothing), or, with [`FaultRule::after_io`], after it was
//! carried out (a write that got an error did happen): the protocol leaves a failed write's
//! effect unspecified, and a client must cope with both. The server answers it with the NBD
//! error the spec asks for ([`proto::reply_error`](crate::proto::reply_error)).
//!
//! The example `flaky-disk` (`cargo run -p costack-nbd --example flaky-disk`) serves such a
//! disk, with rules typed on its standard input, to try a client against by hand.
//!
//! May import: the sibling `backend` and [`proto`](crate::proto). Only
//! [`Export`](super::Export) wraps a store's backend in one.

use super::backend::{Backend, ZeroMode};
use crate::proto::Extent;
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// An operation of the [`Backend`], as a [`FaultRule`] selects it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultOp {
    /// `READ` ([`Backend::read_at_owned`]).
    Read,
    /// `WRITE` ([`Backend::write_at_owned`]).
    Write,
    /// `FLUSH`, and the flush of a FUA request ([`Backend::flush`]); it has no byte range.
    Flush,
    /// `TRIM` ([`Backend::trim`]).
    Trim,
    /// `WRITE_ZEROES` ([`Backend::zero`]).
    Zero,
    /// `CACHE` ([`Backend::cache`]).
    Cache,
    /// `BLOCK_STATUS` ([`Backend::block_status`]).
    BlockStatus,
}

impl FaultOp {
    /// Every operation.
    pub const ALL: [FaultOp; 7] = [
        FaultOp::Read,
        FaultOp::Write,
        FaultOp::Flush,
        FaultOp::Trim,
        FaultOp::Zero,
        FaultOp::Cache,
        FaultOp::BlockStatus,
    ];

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// One rule: fail these operations, on these bytes, with this error, so many times.
///
/// Built from [`FaultRule::new`] (every operation, every byte, every time) and narrowed with
/// the builder methods:
///
/// ```
/// use costack_nbd::export::{FaultOp, FaultRule};
///
/// // The next two writes touching the first MiB fail with ENOSPC.
/// let rule = FaultRule::new(libc::ENOSPC)
///     .ops(&[FaultOp::Write])
///     .range(0, 1 << 20)
///     .times(2);
/// # let _ = rule;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRule {
    errno: i32,
    ops: u8,
    range: Option<(u64, u64)>,
    times: Option<u64>,
    after: bool,
}

impl FaultRule {
    /// A rule that fails every operation, on any bytes, every time, with the OS error `errno`
    /// (`libc::EIO`, `libc::ENOSPC`, ...).
    pub fn new(errno: i32) -> FaultRule {
        FaultRule {
            errno,
            ops: FaultOp::ALL.iter().fold(0, |m, o| m | o.bit()),
            range: None,
            times: None,
            after: false,
        }
    }

    /// Only these operations.
    pub fn ops(mut self, ops: &[FaultOp]) -> FaultRule {
        self.ops = ops.iter().fold(0, |m, o| m | o.bit());
        self
    }

    /// Only operations whose bytes overlap `[offset, offset + len)`. A flush has no bytes: a
    /// rule with a range never fails it.
    pub fn range(mut self, offset: u64, len: u64) -> FaultRule {
        self.range = Some((offset, offset.saturating_add(len)));
        self
    }

    /// Only the next `n` operations it matches; then it is spent and removed.
    pub fn times(mut self, n: u64) -> FaultRule {
        self.times = Some(n);
        self
    }

    /// Only the next operation it matches: `times(1)`.
    pub fn once(self) -> FaultRule {
        self.times(1)
    }

    /// Carry the operation out, then report the error: a write that reached the store but
    /// whose completion failed (the protocol leaves what a failed write did unspecified; by
    /// default the operation fails before it reaches the store).
    pub fn after_io(mut self) -> FaultRule {
        self.after = true;
        self
    }

    fn matches(&self, op: FaultOp, bytes: Option<(u64, u64)>) -> bool {
        if self.ops & op.bit() == 0 || self.times == Some(0) {
            return false;
        }
        match (self.range, bytes) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some((a, b)), Some((off, len))) => off < b && off.saturating_add(len.max(1)) > a,
        }
    }
}

/// The id of a rule in a [`Faults`] set, to [`remove`](Faults::remove) it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FaultId(u64);

#[derive(Debug, Default)]
struct Rules {
    next: u64,
    list: Vec<(FaultId, FaultRule)>,
}

#[derive(Debug, Default)]
struct Shared {
    rules: Mutex<Rules>,
    injected: AtomicU64,
}

/// A shared, switchable set of [`FaultRule`]s: clones are handles on the same set, usable
/// from any thread while the server runs.
///
/// Rules are tried in the order they were added; the first that matches an operation fails
/// it (and counts one of its `times`). Operations no rule matches go to the store.
///
/// ```
/// use costack_nbd::export::{FaultOp, FaultRule, Faults};
/// use costack_nbd::{serve, Config, Export};
/// use std::sync::Arc;
///
/// let faults = Faults::new();
/// let export = Export::memory("flaky", 1 << 20, false).unwrap().with_faults(&faults);
/// let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
/// let server = serve(Arc::new(export), listener, Config::default()).unwrap();
///
/// // From now on every read fails with EIO (NBD_EIO on the wire)...
/// let id = faults.add(FaultRule::new(libc::EIO).ops(&[FaultOp::Read]));
/// // ... (run a client against server.local_addr() here) ...
/// // ... until the rule goes.
/// assert!(faults.remove(id));
/// assert_eq!(faults.injected(), 0); // no client came, nothing failed
/// server.shutdown().unwrap();
/// ```
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<Shared>);

impl Faults {
    /// An empty set: nothing fails.
    pub fn new() -> Faults {
        Faults::default()
    }

    /// Adds a rule (after the others) and returns its id.
    pub fn add(&self, rule: FaultRule) -> FaultId {
        let mut r = self.lock();
        r.next += 1;
        let id = FaultId(r.next);
        r.list.push((id, rule));
        id
    }

    /// Removes a rule; whether it was still there (a spent rule is gone already).
    pub fn remove(&self, id: FaultId) -> bool {
        let mut r = self.lock();
        let before = r.list.len();
        r.list.retain(|(i, _)| *i != id);
        r.list.len() != before
    }

    /// Removes every rule: from now on nothing fails.
    pub fn clear(&self) {
        self.lock().list.clear();
    }

    /// Rules still in force (the spent ones are gone).
    pub fn active(&self) -> usize {
        self.lock().list.len()
    }

    /// How many operations have been failed so far, by every rule.
    pub fn injected(&self) -> u64 {
        self.0.injected.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Rules> {
        self.0.rules.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The fault for this operation, if a rule says so (counting it).
    fn check(&self, op: FaultOp, bytes: Option<(u64, u64)>) -> Option<Fault> {
        let mut r = self.lock();
        let i = r
            .list
            .iter()
            .position(|(_, rule)| rule.matches(op, bytes))?;
        let rule = &mut r.list[i].1;
        let fault = Fault {
            errno: rule.errno,
            after: rule.after,
        };
        if let Some(n) = &mut rule.times {
            *n = n.saturating_sub(1);
            if *n == 0 {
                r.list.remove(i);
            }
        }
        drop(r);
        self.0.injected.fetch_add(1, Ordering::Relaxed);
        Some(fault)
    }

    /// Runs `io` unless a rule fails the operation before it; reports the rule's error
    /// instead of the result if one fails it after.
    fn run<T>(
        &self,
        op: FaultOp,
        bytes: Option<(u64, u64)>,
        io: impl FnOnce() -> io::Result<T>,
    ) -> io::Result<T> {
        match self.check(op, bytes) {
            None => io(),
            Some(f) => {
                if f.after {
                    let _ = io();
                }
                Err(io::Error::from_raw_os_error(f.errno))
            }
        }
    }

    /// As [`run`](Faults::run) for the operations that hand a buffer back.
    fn run_owned(
        &self,
        op: FaultOp,
        offset: u64,
        buf: Vec<u8>,
        io: impl FnOnce(Vec<u8>) -> (io::Result<()>, Vec<u8>),
    ) -> (io::Result<()>, Vec<u8>) {
        match self.check(op, Some((offset, buf.len() as u64))) {
            None => io(buf),
            Some(f) => {
                let buf = if f.after { io(buf).1 } else { buf };
                (Err(io::Error::from_raw_os_error(f.errno)), buf)
            }
        }
    }
}

/// What a rule does to the operation it hits.
struct Fault {
    errno: i32,
    after: bool,
}

/// A backend that asks `faults` before each operation of `inner`.
pub(super) fn backend(inner: Rc<dyn Backend>, faults: &Faults) -> Rc<dyn Backend> {
    Rc::new(FaultBackend {
        inner,
        faults: faults.clone(),
    })
}

struct FaultBackend {
    inner: Rc<dyn Backend>,
    faults: Faults,
}

impl Backend for FaultBackend {
    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn read_at_owned(&self, buf: Vec<u8>, offset: u64) -> (io::Result<()>, Vec<u8>) {
        self.faults.run_owned(FaultOp::Read, offset, buf, |b| {
            self.inner.read_at_owned(b, offset)
        })
    }

    fn write_at_owned(&self, buf: Vec<u8>, offset: u64) -> (io::Result<()>, Vec<u8>) {
        self.faults.run_owned(FaultOp::Write, offset, buf, |b| {
            self.inner.write_at_owned(b, offset)
        })
    }

    fn flush(&self) -> io::Result<()> {
        self.faults.run(FaultOp::Flush, None, || self.inner.flush())
    }

    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        self.faults.run(FaultOp::Trim, Some((offset, len)), || {
            self.inner.trim(offset, len)
        })
    }

    fn zero(&self, offset: u64, len: u64, mode: ZeroMode) -> io::Result<()> {
        self.faults.run(FaultOp::Zero, Some((offset, len)), || {
            self.inner.zero(offset, len, mode)
        })
    }

    fn cache(&self, offset: u64, len: u64) -> io::Result<()> {
        self.faults.run(FaultOp::Cache, Some((offset, len)), || {
            self.inner.cache(offset, len)
        })
    }

    fn block_status(&self, offset: u64, len: u32, max_extents: usize) -> io::Result<Vec<Extent>> {
        self.faults
            .run(FaultOp::BlockStatus, Some((offset, u64::from(len))), || {
                self.inner.block_status(offset, len, max_extents)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errno(r: Option<Fault>) -> Option<i32> {
        r.map(|f| f.errno)
    }

    #[test]
    fn a_rule_for_zero_times_never_fails_anything() {
        let f = Faults::new();
        f.add(FaultRule::new(libc::EIO).times(0));
        assert_eq!(errno(f.check(FaultOp::Read, Some((0, 1)))), None);
        assert_eq!(f.injected(), 0);
    }

    #[test]
    fn rules_match_by_op_range_and_count() {
        let f = Faults::new();
        f.add(
            FaultRule::new(libc::ENOSPC)
                .ops(&[FaultOp::Write])
                .range(100, 10)
                .times(2),
        );
        let always = f.add(FaultRule::new(libc::EIO).ops(&[FaultOp::Flush]));
        // Outside the range, or another op: no fault.
        assert_eq!(errno(f.check(FaultOp::Write, Some((0, 100)))), None);
        assert_eq!(errno(f.check(FaultOp::Write, Some((110, 5)))), None);
        assert_eq!(errno(f.check(FaultOp::Read, Some((100, 10)))), None);
        // Overlapping: twice, then spent.
        assert_eq!(
            errno(f.check(FaultOp::Write, Some((0, 101)))),
            Some(libc::ENOSPC)
        );
        assert_eq!(
            errno(f.check(FaultOp::Write, Some((109, 100)))),
            Some(libc::ENOSPC)
        );
        assert_eq!(errno(f.check(FaultOp::Write, Some((105, 1)))), None);
        assert_eq!(f.active(), 1);
        // A flush has no range; the unranged rule fails it every time.
        for _ in 0..3 {
            assert_eq!(errno(f.check(FaultOp::Flush, None)), Some(libc::EIO));
        }
        assert_eq!(f.injected(), 5);
        assert!(f.remove(always));
        assert!(!f.remove(always));
        assert_eq!(errno(f.check(FaultOp::Flush, None)), None);
        // A ranged rule never fails a flush; a zero-length op at the range's start is inside.
        f.add(FaultRule::new(libc::EIO).range(0, 10));
        assert_eq!(errno(f.check(FaultOp::Flush, None)), None);
        assert_eq!(errno(f.check(FaultOp::Trim, Some((9, 0)))), Some(libc::EIO));
        f.clear();
        assert_eq!(f.active(), 0);
        assert_eq!(errno(f.check(FaultOp::Trim, Some((9, 0)))), None);
    }

    #[test]
    fn a_fault_before_skips_the_operation_a_fault_after_does_it() {
        let f = Faults::new();
        let done = std::cell::Cell::new(0);
        let io = || {
            done.set(done.get() + 1);
            Ok(7)
        };
        f.add(FaultRule::new(libc::EIO).once());
        f.add(FaultRule::new(libc::ENOSPC).after_io().once());
        let e = f.run(FaultOp::Zero, Some((0, 1)), io).unwrap_err();
        assert_eq!((e.raw_os_error(), done.get()), (Some(libc::EIO), 0));
        let e = f.run(FaultOp::Zero, Some((0, 1)), io).unwrap_err();
        assert_eq!((e.raw_os_error(), done.get()), (Some(libc::ENOSPC), 1));
        assert_eq!(f.run(FaultOp::Zero, Some((0, 1)), io).unwrap(), 7);
        assert_eq!(done.get(), 2);
        // The owned form gives the buffer back either way.
        f.add(FaultRule::new(libc::EIO).after_io().once());
        let (r, b) = f.run_owned(FaultOp::Read, 0, vec![0; 4], |mut b| {
            b.fill(9);
            (Ok(()), b)
        });
        assert_eq!(
            (r.unwrap_err().raw_os_error(), b),
            (Some(libc::EIO), vec![9; 4])
        );
    }
}
