//! Child processes whose exit and pipes a task waits for by yielding: [`Command`], [`Child`].
//!
//! Operations floor: imports readiness ([`io`](crate::io): the pipes and the pidfd are
//! watched like sockets), the loop's worker pool (`runtime`) and the one-shot channel
//! (`waker`), for the fallback wait, and the task functions (`task`'s [`spawn`](crate::spawn),
//! `wait`'s [`in_task`](crate::in_task)), nothing above.
//!
//! [`Command`] wraps [`std::process::Command`]; what differs is that every wait yields the task
//! instead of blocking the thread: [`Child::wait`], reading the child's stdout and stderr,
//! writing its stdin, [`Command::output`]. Outside any coroutine the same calls block the thread,
//! so the types work in plain threads too.
//!
//! ```
//! use costack_aio::process::Command;
//! use costack_aio::EventLoop;
//! use std::io::{Read, Write};
//! use std::process::Stdio;
//!
//! let lp = EventLoop::new();
//! lp.block_on(|| {
//!     let mut child = Command::new("cat")
//!         .stdin(Stdio::piped())
//!         .stdout(Stdio::piped())
//!         .spawn()
//!         .unwrap();
//!     let mut stdin = child.stdin.take().unwrap();
//!     stdin.write_all(b"hello").unwrap(); // yields while the pipe is full
//!     drop(stdin); // end of input: cat exits
//!     let mut out = String::new();
//!     child.stdout.as_mut().unwrap().read_to_string(&mut out).unwrap(); // yields
//!     assert_eq!(out, "hello");
//!     assert!(child.wait().unwrap().success()); // yields until cat has exited
//!
//!     let out = Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]).output().unwrap();
//!     assert_eq!(out.status.code(), Some(3));
//!     assert_eq!(out.stdout, b"out\n");
//!     assert_eq!(out.stderr, b"err\n");
//! });
//! ```
//!
//! # How the exit is awaited
//!
//! Where the kernel has `pidfd_open(2)` (Linux 5.3), the child gets a pidfd, which becomes
//! readable when the child exits: [`Child::wait`] waits for that readiness in the loop like for a
//! socket, then reaps the child. Elsewhere (an older kernel, or a sandbox that refuses the call)
//! the wait runs `waitid(WNOWAIT)` on the loop's worker pool (as
//! [`run_blocking`](crate::run_blocking) does) — which blocks a worker thread until the child
//! exits — and then reaps the child on the loop's thread. If a task is cancelled (or times out)
//! during such a wait, the worker stays in `waitid` until the child exits; the next wait of that
//! child takes up the same job, so a child never holds more than one worker.
//! [`Child::uses_pidfd`] tells which way a child is awaited.
//!
//! # Dropping a `Child`
//!
//! As with std, dropping a [`Child`] neither kills nor waits for the process. Unlike std, it
//! does not leave a zombie forever: a child that has not been reaped is put on a process-wide
//! list, which is swept (each entry reaped if it has exited, without waiting) every time this
//! module spawns or drops a child. A dropped child that exits stays a zombie only until the
//! next such spawn or drop.
//!
//! A `Child` and its pipes belong to the thread that spawned them (their fds are registered
//! with that thread's loop on their first wait): they are not `Send`.

use crate::io::AsyncFd;
use crate::waker::{oneshot, OneShot};
use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::{ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, PoisonError};

/// A process builder, as [`std::process::Command`], whose children are waited for by yielding.
/// See the [module docs](self).
pub struct Command {
    std: std::process::Command,
    stdin_set: bool,
    stdout_set: bool,
    stderr_set: bool,
    pidfd: bool,
}

impl Command {
    /// A command that runs `program` (looked up in `PATH` if it has no `/`), with no
    /// arguments, the parent's environment and working directory, and inherited stdio.
    pub fn new(program: impl AsRef<OsStr>) -> Command {
        Command::from(std::process::Command::new(program))
    }

    /// Adds one argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Command {
        self.std.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.std.args(args);
        self
    }

    /// Sets an environment variable of the child.
    pub fn env(&mut self, key: impl AsRef<OsStr>, val: impl AsRef<OsStr>) -> &mut Command {
        self.std.env(key, val);
        self
    }

    /// Sets environment variables of the child.
    pub fn envs<I, K, V>(&mut self, vars: I) -> &mut Command
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.std.envs(vars);
        self
    }

    /// Removes an environment variable from the child's environment.
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Command {
        self.std.env_remove(key);
        self
    }

    /// Starts the child with an empty environment (plus what [`env`](Command::env) adds).
    pub fn env_clear(&mut self) -> &mut Command {
        self.std.env_clear();
        self
    }

    /// The child's working directory.
    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Command {
        self.std.current_dir(dir);
        self
    }

    /// The child's stdin. With [`Stdio::piped`], [`Child::stdin`] is a [`ChildStdin`] whose
    /// writes yield.
    pub fn stdin(&mut self, cfg: impl Into<Stdio>) -> &mut Command {
        self.std.stdin(cfg);
        self.stdin_set = true;
        self
    }

    /// The child's stdout. With [`Stdio::piped`], [`Child::stdout`] is a [`ChildStdout`] whose
    /// reads yield.
    pub fn stdout(&mut self, cfg: impl Into<Stdio>) -> &mut Command {
        self.std.stdout(cfg);
        self.stdout_set = true;
        self
    }

    /// The child's stderr. With [`Stdio::piped`], [`Child::stderr`] is a [`ChildStderr`] whose
    /// reads yield.
    pub fn stderr(&mut self, cfg: impl Into<Stdio>) -> &mut Command {
        self.std.stderr(cfg);
        self.stderr_set = true;
        self
    }

    /// The std command inside, for the settings this type does not repeat (those of
    /// `std::os::unix::process::CommandExt`: `uid`, `process_group`, `pre_exec`...). Set stdio
    /// with this type's own methods: [`output`](Command::output) overrides (and afterwards
    /// resets to inherited) the stdio that they did not set.
    pub fn as_std_mut(&mut self) -> &mut std::process::Command {
        &mut self.std
    }

    /// The std command inside.
    pub fn as_std(&self) -> &std::process::Command {
        &self.std
    }

    /// For tests of the fallback: `false` makes the children of this command wait on the
    /// worker pool even where the kernel has pidfds.
    #[doc(hidden)]
    pub fn use_pidfd(&mut self, yes: bool) -> &mut Command {
        self.pidfd = yes;
        self
    }

    /// Starts the child. Does not wait: the fork and exec happen in the call, as with std (the
    /// kernel does them quickly; nothing here waits for the child to do anything).
    ///
    /// # Errors
    /// As [`std::process::Command::spawn`]: the program is missing or not executable, out of
    /// processes or descriptors.
    pub fn spawn(&mut self) -> io::Result<Child> {
        sweep_orphans();
        let mut std = self.std.spawn()?;
        let stdin = std.stdin.take();
        let stdout = std.stdout.take();
        let stderr = std.stderr.take();
        let pidfd = if self.pidfd {
            pidfd_open(std.id())
        } else {
            None
        };
        // From here on the child is ours: if making a pipe non-blocking fails, `Child`'s drop
        // takes care of the process.
        let mut child = Child {
            std: Some(std),
            pidfd,
            status: None,
            exit_job: None,
            stdin: None,
            stdout: None,
            stderr: None,
        };
        child.stdin = stdin.map(|p| ChildStdin::new(p.into())).transpose()?;
        child.stdout = stdout.map(|p| ChildStdout::new(p.into())).transpose()?;
        child.stderr = stderr.map(|p| ChildStderr::new(p.into())).transpose()?;
        Ok(child)
    }

    /// Runs the child to its end and collects its exit status and output. Unless set
    /// otherwise, stdin is `/dev/null` and stdout and stderr are captured (as with std).
    ///
    /// # Errors
    /// As [`spawn`](Command::spawn), or reading the output or waiting failed.
    pub fn output(&mut self) -> io::Result<Output> {
        if !self.stdin_set {
            self.std.stdin(Stdio::null());
        }
        if !self.stdout_set {
            self.std.stdout(Stdio::piped());
        }
        if !self.stderr_set {
            self.std.stderr(Stdio::piped());
        }
        let child = self.spawn();
        // Back to the defaults of `spawn` for the stdio the caller did not set.
        if !self.stdin_set {
            self.std.stdin(Stdio::inherit());
        }
        if !self.stdout_set {
            self.std.stdout(Stdio::inherit());
        }
        if !self.stderr_set {
            self.std.stderr(Stdio::inherit());
        }
        child?.wait_with_output()
    }

    /// Runs the child to its end and returns its exit status; stdio is inherited unless set.
    ///
    /// # Errors
    /// As [`spawn`](Command::spawn) and [`Child::wait`].
    pub fn status(&mut self) -> io::Result<ExitStatus> {
        self.spawn()?.wait()
    }
}

impl From<std::process::Command> for Command {
    /// Wraps a std command. Its stdio settings count as unset for [`Command::output`].
    fn from(std: std::process::Command) -> Command {
        Command {
            std,
            stdin_set: false,
            stdout_set: false,
            stderr_set: false,
            pidfd: true,
        }
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.std, f)
    }
}

/// A running (or exited) child process, made by [`Command::spawn`]. See the
/// [module docs](self) for how it is waited for and what dropping it does.
pub struct Child {
    /// `None` only in `drop`, after it moved to the orphan list.
    std: Option<std::process::Child>,
    /// Readable once the child has exited; `None` where pidfds are missing (or not wanted).
    pidfd: Option<AsyncFd<OwnedFd>>,
    /// The status, once reaped.
    status: Option<ExitStatus>,
    /// Without a pidfd, in a task: the worker job in `waitid` until the child exits, once a
    /// wait started it. A wait abandoned by a timeout leaves it running, and the next wait
    /// takes it up again instead of occupying another worker.
    exit_job: Option<Arc<OneShot<io::Result<()>>>>,
    /// The child's stdin, if it was piped.
    pub stdin: Option<ChildStdin>,
    /// The child's stdout, if it was piped.
    pub stdout: Option<ChildStdout>,
    /// The child's stderr, if it was piped.
    pub stderr: Option<ChildStderr>,
}

impl Child {
    fn std(&mut self) -> &mut std::process::Child {
        self.std
            .as_mut()
            .expect("costack-aio: child used after drop")
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.std
            .as_ref()
            .expect("costack-aio: child used after drop")
            .id()
    }

    /// Whether [`wait`](Child::wait) waits for a pidfd in the loop (`true`), or on the worker
    /// pool (`false`: the kernel has no pidfds, or refused one).
    pub fn uses_pidfd(&self) -> bool {
        self.pidfd.is_some()
    }

    /// Sends `SIGKILL` to the child. Does nothing if it has exited already (reaped or not),
    /// as std's `kill`.
    ///
    /// # Errors
    /// As [`std::process::Child::kill`].
    pub fn kill(&mut self) -> io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        self.std().kill()
    }

    /// Reaps the child if it has exited, without waiting; `None` while it runs.
    ///
    /// # Errors
    /// If `waitpid(2)` fails (the child was reaped by someone else, say through
    /// `SIGCHLD` set to `SIG_IGN`).
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if let Some(st) = self.status {
            return Ok(Some(st));
        }
        let st = self.std().try_wait()?;
        if st.is_some() {
            self.status = st;
            self.pidfd = None;
        }
        Ok(st)
    }

    /// Waits for the child to exit and returns its status. Closes the child's stdin first (as
    /// std does), so a child that reads to the end of its input can finish. In a task, the task
    /// yields meanwhile; outside any coroutine, the thread blocks. Bound it with
    /// [`timeout`](crate::timeout) in a task (a timed-out wait leaves the child running).
    ///
    /// Does not read the child's stdout or stderr: a child blocked on a full pipe does not
    /// exit. Use [`wait_with_output`](Child::wait_with_output) to collect them.
    ///
    /// # Errors
    /// As [`try_wait`](Child::try_wait), or the loop could not watch the pidfd.
    ///
    /// # Panics
    /// Inside a coroutine that no task of this thread's loop entered.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        drop(self.stdin.take());
        loop {
            if let Some(st) = self.try_wait()? {
                return Ok(st);
            }
            match &self.pidfd {
                Some(fd) => fd.readable()?,
                None if crate::in_task() => self.wait_exit_job()?,
                None => wait_exited(self.id() as libc::pid_t)?,
            }
        }
    }

    /// In a task, without a pidfd: waits for the worker job that waits for the child's exit,
    /// starting it unless an earlier (abandoned) wait did.
    fn wait_exit_job(&mut self) -> io::Result<()> {
        let pid = self.id() as libc::pid_t;
        let job = self
            .exit_job
            .get_or_insert_with(|| {
                let (tx, rx) = oneshot();
                let pool = crate::runtime::expect_loop("Child::wait").pool().clone();
                // Not withdrawn if the task stops waiting: the next wait takes it up.
                pool.submit(Box::new(move || tx.send(wait_exited(pid))));
                rx
            })
            .clone();
        let r = job.recv();
        self.exit_job = None;
        r.unwrap_or_else(|| {
            Err(io::Error::other(
                "costack-aio: the worker pool shut down before the child's exit was seen",
            ))
        })
    }

    /// Waits for the child to exit, reading all of its stdout and stderr meanwhile (those that
    /// were piped), and returns them with the status. Closes stdin first.
    ///
    /// In a task, stderr is read by a second task of the loop while this one reads stdout;
    /// outside any coroutine, both are read in one `poll(2)` loop. Either way a child that
    /// fills one pipe while the other is read does not deadlock.
    ///
    /// # Errors
    /// Reading a pipe or waiting failed.
    pub fn wait_with_output(mut self) -> io::Result<Output> {
        drop(self.stdin.take());
        let (stdout, stderr) = match (self.stdout.take(), self.stderr.take()) {
            (None, None) => (Vec::new(), Vec::new()),
            (Some(mut o), None) => (read_all(&mut o)?, Vec::new()),
            (None, Some(mut e)) => (Vec::new(), read_all(&mut e)?),
            (Some(mut o), Some(mut e)) => {
                if crate::in_task() {
                    let err = crate::spawn(move || read_all(&mut e));
                    let out = read_all(&mut o);
                    let err = err.join();
                    (out?, err?)
                } else {
                    read_two(&o.fd, &e.fd)?
                }
            }
        };
        let status = self.wait()?;
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(std) = self.std.take() {
            if self.status.is_none() {
                lock_orphans().push(std);
            }
        }
        sweep_orphans();
    }
}

impl fmt::Debug for Child {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Child")
            .field("id", &self.std.as_ref().map(|c| c.id()))
            .field("status", &self.status)
            .field("uses_pidfd", &self.uses_pidfd())
            .finish()
    }
}

/// Children dropped before they were reaped.
static ORPHANS: Mutex<Vec<std::process::Child>> = Mutex::new(Vec::new());

fn lock_orphans() -> std::sync::MutexGuard<'static, Vec<std::process::Child>> {
    ORPHANS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reaps the dropped children that have exited (without waiting); forgets those that cannot
/// be waited for any more (reaped elsewhere).
fn sweep_orphans() {
    let mut orphans = lock_orphans();
    if !orphans.is_empty() {
        orphans.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
    }
}

/// A pidfd for the child `pid`, or `None` if the kernel has none to give.
fn pidfd_open(pid: u32) -> Option<AsyncFd<OwnedFd>> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new fd (close-on-exec) or -1;
    // no memory is passed. `pid` is our unreaped child, so it cannot name another process.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the call returned a new open fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    Some(AsyncFd::new(fd))
}

/// Blocks until the child `pid` has exited, without reaping it (the caller reaps it through
/// std's `Child`, which must know).
fn wait_exited(pid: libc::pid_t) -> io::Result<()> {
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value to be overwritten.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid out-pointer for the duration of the call.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Reads `r` to its end.
fn read_all(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    r.read_to_end(&mut v)?;
    Ok(v)
}

/// Outside any coroutine: reads two non-blocking pipes to their ends in one `poll(2)` loop.
fn read_two(a: &AsyncFd<File>, b: &AsyncFd<File>) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let mut files = [a.get_ref(), b.get_ref()];
    let mut out = [Vec::new(), Vec::new()];
    let mut open = [true, true];
    let mut buf = vec![0u8; 64 * 1024];
    while open[0] || open[1] {
        let mut fds: Vec<libc::pollfd> = (0..2)
            .filter(|&i| open[i])
            .map(|i| libc::pollfd {
                fd: files[i].as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a valid array of `fds.len()` pollfds that outlives the call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for i in 0..2 {
            if !open[i] {
                continue;
            }
            loop {
                match files[i].read(&mut buf) {
                    Ok(0) => {
                        open[i] = false;
                        break;
                    }
                    Ok(n) => out[i].extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    let [o, e] = out;
    Ok((o, e))
}

/// Makes a pipe end non-blocking and watches it.
fn watch_pipe(fd: OwnedFd) -> io::Result<AsyncFd<File>> {
    let raw = fd.as_raw_fd();
    // SAFETY: fcntl(2) with F_GETFL/F_SETFL on an fd we own; no memory is passed.
    let r = unsafe {
        let flags = libc::fcntl(raw, libc::F_GETFL);
        if flags < 0 {
            flags
        } else {
            libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK)
        }
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(AsyncFd::new(File::from(fd)))
}

macro_rules! pipe_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub struct $name {
            fd: AsyncFd<File>,
        }

        impl $name {
            fn new(fd: OwnedFd) -> io::Result<$name> {
                Ok($name { fd: watch_pipe(fd)? })
            }

            /// The pipe end, non-blocking, as a file; it is no longer watched by the loop.
            pub fn into_inner(self) -> File {
                self.fd.into_inner()
            }
        }

        impl AsRawFd for $name {
            fn as_raw_fd(&self) -> RawFd {
                self.fd.as_raw_fd()
            }
        }

        impl AsFd for $name {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.fd.as_fd()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("fd", &self.fd.as_raw_fd())
                    .finish()
            }
        }
    };
}

pipe_type! {
    /// The writing end of a child's stdin; writes yield while the pipe is full. Dropping it
    /// closes the pipe (the child reads end of file).
    ChildStdin
}
pipe_type! {
    /// The reading end of a child's stdout; reads yield while the pipe is empty.
    ChildStdout
}
pipe_type! {
    /// The reading end of a child's stderr; reads yield while the pipe is empty.
    ChildStderr
}

impl Write for ChildStdin {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.fd.write_with(|f| (&*f).write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for ChildStdout {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.fd.read_with(|f| (&*f).read(buf))
    }
}

impl Read for ChildStderr {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.fd.read_with(|f| (&*f).read(buf))
    }
}
