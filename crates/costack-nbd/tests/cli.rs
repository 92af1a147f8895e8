//! The `costack-nbd` binary's operator tools: `--pid-file`, `--fork`, the logs (`-v`,
//! `RUST_LOG`), `-D/--description`, the `--help` examples, and clear errors for bad values.
//!
//! `nbdinfo` is needed by one test: a missing tool makes it print `SKIPPED ...` and pass, or
//! fail where `COSTACK_REQUIRE_ALL_TESTS=1` is set (CI installs `libnbd-bin` and sets it).

mod common;

use common::*;
use costack_nbd::proto::{cmd, info, opt, rep};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_costack-nbd");

/// A generous bound for anything the server does at start or stop, on 2 loaded cores.
const DEADLINE: Duration = Duration::from_secs(30);

/// A server started in the foreground; killed when dropped if it still runs.
struct Server {
    child: Child,
    addr: SocketAddr,
    /// The rest of its stderr (after the start line).
    err: BufReader<ChildStderr>,
    /// The start line.
    first: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in a start line ("... serving ... on 127.0.0.1:PORT with N thread(s) ...").
fn addr_in(line: &str) -> SocketAddr {
    line.split_whitespace()
        .find_map(|w| w.parse::<SocketAddr>().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
}

/// Starts the binary on a free port, export name "test", with `args` and `env`; returns once
/// its start line is out (it is listening).
fn start(args: &[&str], env: &[(&str, &str)]) -> Server {
    let mut cmd = Command::new(BIN);
    cmd.args(["-p", "0", "-x", "test", "--size", "1M", "--threads", "1"])
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    err.read_line(&mut first).unwrap();
    let addr = addr_in(&first);
    Server {
        child,
        addr,
        err,
        first,
    }
}

fn kill(pid: u32, sig: i32) -> i32 {
    // SAFETY: kill(2) takes no pointers; the pid is one of the servers this test started.
    unsafe { libc::kill(pid as libc::pid_t, sig) }
}

impl Server {
    /// SIGTERM, then everything it writes on stderr until it exits; asserts exit status 0.
    fn stop(mut self) -> Vec<String> {
        assert_eq!(kill(self.child.id(), libc::SIGTERM), 0);
        let mut rest = String::new();
        self.err.read_to_string(&mut rest).unwrap();
        let st = wait_child(&mut self.child);
        assert!(st.success(), "exit status {st}");
        std::iter::once(self.first.trim_end().to_owned())
            .chain(rest.lines().map(str::to_owned))
            .collect()
    }
}

fn wait_child(c: &mut Child) -> std::process::ExitStatus {
    let until = Instant::now() + DEADLINE;
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            return st;
        }
        assert!(Instant::now() < until, "the process did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs the binary to its end with `args` (no RUST_LOG unless given).
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("RUST_LOG").stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// A path in the temporary directory, unique to this test process; removed when dropped.
struct TempPath(PathBuf);

impl TempPath {
    fn new(tag: &str) -> TempPath {
        let p = std::env::temp_dir().join(format!("costack-cli-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        TempPath(p)
    }
    fn s(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Whether a log line starts with an RFC 3339 UTC timestamp (`2026-12-02T16:26:25.976660Z`).
fn timestamped(line: &str) -> bool {
    let Some(ts) = line.split_whitespace().next() else {
        return false;
    };
    let b = ts.as_bytes();
    ts.len() >= 20
        && ts.ends_with('Z')
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && ts[..4].parse::<u32>().is_ok_and(|y| y >= 2024)
}

#[test]
fn pid_file_holds_the_pid_while_serving_and_is_gone_after_sigterm() {
    let pid = TempPath::new("fg.pid");
    let srv = start(&["--pid-file", pid.s()], &[]);
    let text = std::fs::read_to_string(&pid.0).unwrap();
    assert_eq!(text, format!("{}\n", srv.child.id()));
    // A second server given the same pid file refuses to start, naming the first.
    let out = run(&["-p", "0", "--pid-file", pid.s()], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "locked by another server (pid {})",
            srv.child.id()
        )),
        "{err}"
    );
    // ... and leaves it as it was.
    assert_eq!(std::fs::read_to_string(&pid.0).unwrap(), text);
    srv.stop();
    assert!(!pid.0.exists(), "the pid file is removed at exit");
}

#[test]
fn unwritable_pid_file_is_a_clear_error_at_start() {
    let out = run(&["-p", "0", "--pid-file", "/nonexistent-dir/x.pid"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot open the pid file /nonexistent-dir/x.pid"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    // A directory: refused the same way, and left alone.
    let dir = std::env::temp_dir();
    let out = run(&["-p", "0", "--pid-file", dir.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim_end(),
        format!(
            "costack-nbd: cannot open the pid file {}: Is a directory (os error 21)",
            dir.display()
        )
    );
    assert!(dir.is_dir());
}

/// A daemon started by `--fork` (not our child): SIGKILLed when dropped unless [`gone`]
/// says it has exited (its pid may belong to another process by then).
///
/// [`gone`]: Daemon::gone
struct Daemon(Option<u32>);

impl Daemon {
    fn gone(mut self) {
        self.0 = None;
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            kill(pid, libc::SIGKILL);
        }
    }
}

#[test]
fn fork_returns_once_serving_in_a_session_of_its_own() {
    let pid = TempPath::new("fork.pid");
    let mut parent = Command::new(BIN)
        .args(["-p", "0", "-x", "test", "--size", "1M", "--threads", "1"])
        .args(["--fork", "--pid-file", pid.s()])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let parent_pid = parent.id();
    let st = wait_child(&mut parent);
    assert!(st.success(), "the parent exits 0 once serving: {st}");
    // The daemon holds the other copy of the stderr pipe: its start line is there already
    // (written before it told the parent), and end-of-file comes when it exits.
    let mut err = BufReader::new(parent.stderr.take().unwrap());
    let daemon: u32 = std::fs::read_to_string(&pid.0)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let guard = Daemon(Some(daemon));
    assert_ne!(daemon, parent_pid);
    // SAFETY: getsid(2) takes no pointers.
    let sid = unsafe { libc::getsid(daemon as libc::pid_t) };
    assert_eq!(
        sid, daemon as libc::pid_t,
        "the daemon leads a session of its own"
    );
    let mut first = String::new();
    err.read_line(&mut first).unwrap();
    assert!(first.contains(&format!("pid={daemon}")), "{first}");
    // Right after the parent's exit a client connects and is served.
    let addr = addr_in(&first);
    let (mut c, i) = Client::open(addr, true);
    assert_eq!(i.size, 1 << 20);
    assert_eq!(c.write(4096, b"forked"), 0);
    assert_eq!(c.read(4096, 6).unwrap(), b"forked");
    c.disconnect();
    assert_eq!(kill(daemon, libc::SIGTERM), 0);
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    guard.gone();
    assert!(rest.contains("INFO costack_nbd::main: stopped"), "{rest}");
    assert!(!pid.0.exists(), "the daemon removes its pid file");
}

#[test]
fn fork_with_a_relative_socket_path_removes_the_socket_at_exit() {
    // The daemon leaves the working directory (for /): a relative -k path must still name
    // the socket it made when it removes it at exit.
    let dir = TempPath::new("fork-k-dir");
    std::fs::create_dir_all(&dir.0).unwrap();
    let sock = dir.0.join("nbd.sock");
    let pid = TempPath::new("fork-k.pid");
    let mut parent = Command::new(BIN)
        .current_dir(&dir.0)
        .args(["-k", "nbd.sock", "--size", "1M", "--threads", "1"])
        .args(["--fork", "--pid-file", pid.s()])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let st = wait_child(&mut parent);
    assert!(st.success(), "the parent exits 0 once serving: {st}");
    let mut err = BufReader::new(parent.stderr.take().unwrap());
    let daemon: u32 = std::fs::read_to_string(&pid.0)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let guard = Daemon(Some(daemon));
    assert!(sock.exists());
    assert_eq!(kill(daemon, libc::SIGTERM), 0);
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap(); // end of file: the daemon has exited
    guard.gone();
    let left = sock.exists();
    let _ = std::fs::remove_dir_all(&dir.0);
    assert!(!left, "the socket file is left behind: {rest}");
}

#[test]
fn fork_reports_the_servers_error_and_exits_1() {
    // A FIFO opens and locks, but cannot be truncated: the daemon fails after the fork, and
    // the parent prints its message.
    let fifo = TempPath::new("fifo.pid");
    let c = std::ffi::CString::new(fifo.s()).unwrap();
    // SAFETY: mkfifo(3) reads the NUL-terminated path `c` owns.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let out = run(&["-p", "0", "--fork", "--pid-file", fifo.s()], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.lines().collect::<Vec<_>>(),
        [format!(
            "costack-nbd: cannot write the pid file {}: Invalid argument (os error 22)",
            fifo.s()
        )]
    );
    // The daemon does not remove a pid file it did not write.
    assert!(fifo.0.exists());
}

#[test]
fn default_logs_are_the_start_and_stop_lines_only() {
    let srv = start(&[], &[]);
    let (c, _) = Client::open(srv.addr, true);
    c.disconnect();
    let lines = srv.stop();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    for (line, what) in lines.iter().zip([
        "INFO costack_nbd::main: serving memory (1048576 bytes) as \"test\" on ",
        "INFO costack_nbd::main: signal 15: finishing the requests in flight",
        "INFO costack_nbd::main: stopped",
    ]) {
        assert!(timestamped(line), "{line}");
        assert!(line.contains(what), "{line:?} says {what:?}");
    }
}

#[test]
fn verbose_logs_connections_with_their_peer() {
    let srv = start(&["-v"], &[]);
    let (c, _) = Client::open(srv.addr, true);
    let peer = c.s.local_addr().unwrap();
    c.disconnect();
    // Everything up to the exit: the connection's lines are out whenever they were written.
    let lines = srv.stop();
    let of_peer: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(&format!("peer={peer}")))
        .collect();
    assert_eq!(of_peer.len(), 3, "{lines:#?}");
    assert!(of_peer.iter().all(|l| timestamped(l)), "{of_peer:#?}");
    assert!(of_peer[0].contains("INFO costack_nbd::server: connection accepted"));
    assert!(of_peer[1].contains("negotiated: transmission starts"));
    assert!(of_peer[1].contains("export=test"));
    assert!(of_peer[2].contains("INFO costack_nbd::server: connection closed"));
    // -v is info: no refused-request (debug) lines.
    assert!(!lines.iter().any(|l| l.contains("DEBUG")), "{lines:#?}");
}

/// Sends a READ past the end (refused with EINVAL) and a good one; returns the lines.
fn refused_read_lines(args: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    let srv = start(args, env);
    let (mut c, _) = Client::open(srv.addr, true);
    assert_eq!(c.read(1 << 20, 512), Err(libc::EINVAL as u32));
    assert!(c.read(0, 512).is_ok());
    assert_eq!(c.simple(cmd::FLUSH, 0, 0, 0), 0);
    c.disconnect();
    srv.stop()
}

#[test]
fn rust_log_and_vv_show_refused_requests() {
    let count = |lines: &[String], what: &str| lines.iter().filter(|l| l.contains(what)).count();
    let refused = "DEBUG costack_nbd::server::conn: refused";
    // Default and -v: not shown.
    assert_eq!(count(&refused_read_lines(&[], &[]), refused), 0);
    assert_eq!(count(&refused_read_lines(&["-v"], &[]), refused), 0);
    // -vv and RUST_LOG=costack_nbd=debug: exactly the one refused READ.
    for lines in [
        refused_read_lines(&["-vv"], &[]),
        refused_read_lines(&[], &[("RUST_LOG", "costack_nbd=debug")]),
        // RUST_LOG wins over -v.
        refused_read_lines(&["-v"], &[("RUST_LOG", "costack_nbd=debug")]),
    ] {
        let hits: Vec<&String> = lines.iter().filter(|l| l.contains(refused)).collect();
        assert_eq!(hits.len(), 1, "{lines:#?}");
        assert!(hits[0].contains("command=\"READ\""), "{}", hits[0]);
        assert!(hits[0].contains("offset=1048576 length=512"), "{}", hits[0]);
        assert!(!lines.iter().any(|l| l.contains("TRACE")), "{lines:#?}");
    }
    // -vvv: every request, the refused one too (READ, READ, FLUSH, DISC).
    let lines = refused_read_lines(&["-vvv"], &[]);
    assert_eq!(
        count(&lines, "TRACE costack_nbd::server::conn: request"),
        4,
        "{lines:#?}"
    );
    // RUST_LOG=warn hides even the start line: nothing at all is written. (--fork: the
    // command returns once the server serves, and it has no line to wait for.)
    let pid = TempPath::new("quiet.pid");
    let mut parent = Command::new(BIN)
        .args(["-p", "0", "--size", "1M", "--fork", "--pid-file", pid.s()])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_child(&mut parent).success());
    let daemon: u32 = std::fs::read_to_string(&pid.0)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let guard = Daemon(Some(daemon));
    assert_eq!(kill(daemon, libc::SIGTERM), 0);
    let mut err = String::new();
    parent
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    guard.gone();
    assert_eq!(err, "");
    assert!(!pid.0.exists());
}

#[test]
fn bad_rust_log_is_refused_clearly() {
    let out = run(&["-p", "0"], &[("RUST_LOG", "costack_nbd=[")]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("costack-nbd: bad RUST_LOG \"costack_nbd=[\": "),
        "{err}"
    );
}

#[test]
fn help_examples_use_the_given_port_and_name() {
    for args in [
        &["-p", "10900", "-x", "disk0", "--help"][..],
        &["--port=10900", "--name", "disk0", "-h"],
        &["-rp10900", "-xdisk0", "--help"],
    ] {
        let out = run(args, &[]);
        assert!(out.status.success(), "{args:?}");
        let help = String::from_utf8_lossy(&out.stdout);
        for line in [
            "  costack-nbd -p 10900 -x disk0 disk.img\n",
            "  qemu-img info nbd://127.0.0.1:10900/disk0\n",
            "  nbdinfo nbd://127.0.0.1:10900/disk0\n",
        ] {
            assert!(help.contains(line), "{args:?}: no {line:?} in\n{help}");
        }
    }
    // Defaults; an IPv6 address in brackets; a name that needs quoting and escaping.
    let help = String::from_utf8_lossy(&run(&["--help"], &[]).stdout).into_owned();
    assert!(
        help.contains("  nbdinfo nbd://127.0.0.1:10809/\n"),
        "{help}"
    );
    let help = String::from_utf8_lossy(&run(&["-b", "::1", "-x", "my disk", "--help"], &[]).stdout)
        .into_owned();
    assert!(
        help.contains("  costack-nbd -b ::1 -x 'my disk' disk.img\n"),
        "{help}"
    );
    assert!(
        help.contains("  nbdinfo nbd://[::1]:10809/my%20disk\n"),
        "{help}"
    );
    // Every flag this part added is documented.
    for flag in ["--description", "--pid-file", "--fork", "--verbose"] {
        assert!(help.contains(flag), "--help mentions {flag}");
    }
}

#[test]
fn short_flags_do_not_mean_something_else_than_in_qemu_nbd() {
    // qemu-nbd: -t is --persistent, -s is --snapshot. Ours have no short form now.
    for (args, what) in [
        (&["-t", "2"][..], "unexpected argument '-t'"),
        (&["-s", "1G"], "unexpected argument '-s'"),
    ] {
        let out = run(args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(what), "{args:?}: {err}");
    }
    // The ones shared with qemu-nbd mean the same: -p, -b, -x, -D, -r, -v.
    let srv = start(&["-b", "127.0.0.1", "-r", "-D", "same as qemu-nbd"], &[]);
    let mut c = Client::connect(srv.addr);
    let (_, i) = c.info(opt::INFO, "test", &[info::DESCRIPTION]);
    assert_eq!(i.description.as_deref(), Some("same as qemu-nbd"));
    assert_ne!(i.flags & costack_nbd::proto::tflag::READ_ONLY, 0);
    drop(c);
    srv.stop();
}

#[test]
fn description_reaches_info_list_and_nbdinfo() {
    let text = "scratch disk of VM 7 — ünïcode";
    let srv = start(&["-D", text], &[]);
    let mut c = Client::connect(srv.addr);
    let (_, i) = c.info(opt::INFO, "test", &[info::DESCRIPTION]);
    assert_eq!(i.description.as_deref(), Some(text));
    // Not asked for: not sent.
    let (_, i) = c.info(opt::INFO, "test", &[]);
    assert_eq!(i.description, None);
    // LIST: name length, name, description.
    let r = c.option_all(opt::LIST, &[]);
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].typ, rep::SERVER);
    let mut want = 4u32.to_be_bytes().to_vec();
    want.extend_from_slice(b"test");
    want.extend_from_slice(text.as_bytes());
    assert_eq!(r[0].data, want);
    assert_eq!(r[1].typ, rep::ACK);
    drop(c);
    let nbdinfo = Command::new("nbdinfo")
        .arg(format!("nbd://{}/test", srv.addr))
        .output();
    match nbdinfo {
        Ok(out) => {
            assert!(out.status.success());
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                stdout.contains(&format!("\tdescription: {text}\n")),
                "{stdout}"
            );
        }
        Err(_) => skip_or_fail("`nbdinfo` is not installed (Debian: libnbd-bin)"),
    }
    srv.stop();
}

#[test]
fn bad_descriptions_are_refused_clearly() {
    let long = "x".repeat(4097);
    let out = run(&["-p", "0", "-D", &long], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("a description is at most 4096 bytes (this one has 4097)"),
        "{err}"
    );
    // 4096 bytes is fine.
    let srv = start(&["-D", &long[..4096]], &[]);
    let mut c = Client::connect(srv.addr);
    let (_, i) = c.info(opt::INFO, "test", &[info::DESCRIPTION]);
    assert_eq!(i.description.map(|d| d.len()), Some(4096));
    drop(c);
    srv.stop();
}
