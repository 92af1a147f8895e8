//! The `costack-nbd` binary: SIGTERM and SIGINT stop it gracefully (requests in flight are
//! answered, the export is flushed, the exit status is 0).

mod common;

use common::*;
use costack_nbd::proto::{cflag, cmd};
use std::process::Command;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

/// The binary serving `test` on a free port, with `args`.
type Server = BinServer;

fn start(args: &[&str]) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_costack-nbd"));
    Server::start(cmd.args(["-p", "0", "-x", "test"]).args(args))
}

fn signal(s: &Server, sig: i32) {
    let pid = s.child.id() as libc::pid_t;
    // SAFETY: kill(2) only sends a signal to our own child, still running (not reaped yet).
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

fn wait_exit(s: &mut Server) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            return st;
        }
        assert!(Instant::now() < deadline, "the server did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sigterm_answers_requests_in_flight_flushes_and_exits_0() {
    let f = TempFile::with_data("sigterm", &vec![0u8; 4 * MIB]);
    let mut srv = start(&["--threads", "2", f.path().to_str().unwrap()]);
    let (mut c, _) = Client::open(srv.addr, true);
    for i in 0..16u64 {
        let flags = if i % 2 == 0 { cflag::FUA } else { 0 };
        c.send(
            cmd::WRITE,
            flags,
            i + 1,
            i * 65536,
            65536,
            &vec![i as u8 + 1; 65536],
        );
    }
    let first = c.read_reply().unwrap();
    assert_eq!(first.error(), 0);
    signal(&srv, libc::SIGTERM);
    // Every reply is a success (a request the server had started) or ESHUTDOWN (one it had read
    // but not started). Requests still in the kernel's socket buffer when the server stopped
    // reading get no reply at all: the connection closes under them, which the spec allows.
    let mut acked = vec![first.cookie()];
    let mut answered = 1;
    while let Ok(r) = c.read_reply() {
        answered += 1;
        match r.error() {
            0 => acked.push(r.cookie()),
            e => assert_eq!(e, costack_nbd::proto::err::ESHUTDOWN),
        }
    }
    assert!(answered <= 16, "no reply without a request");
    let st = wait_exit(&mut srv);
    assert!(st.success(), "exit status {st}");
    // Every acknowledged write is in the file.
    let data = std::fs::read(f.path()).unwrap();
    for cookie in acked {
        let i = (cookie - 1) as usize;
        assert!(data[i * 65536..(i + 1) * 65536]
            .iter()
            .all(|&b| b == i as u8 + 1));
    }
}

#[test]
fn sigint_with_idle_clients_exits_0() {
    let mut srv = start(&["--size", "1M"]);
    let (mut c, _) = Client::open(srv.addr, false);
    assert_eq!(c.write(0, b"x"), 0);
    let mut in_handshake = Client::connect(srv.addr);
    signal(&srv, libc::SIGINT);
    assert!(c.is_closed());
    assert!(in_handshake.is_closed());
    let st = wait_exit(&mut srv);
    assert!(st.success(), "exit status {st}");
    // No longer listening.
    assert!(std::net::TcpStream::connect(srv.addr).is_err());
}

#[test]
fn bad_arguments_are_refused_clearly() {
    let out = Command::new(env!("CARGO_BIN_EXE_costack-nbd"))
        .args(["/nonexistent/disk.img", "-p", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open /nonexistent/disk.img"));
    let out = Command::new(env!("CARGO_BIN_EXE_costack-nbd"))
        .args(["--size", "12Q"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown unit"));
    let out = Command::new(env!("CARGO_BIN_EXE_costack-nbd"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--bind",
        "--port",
        "--name",
        "--read-only",
        "--size",
        "--threads",
        "--in-flight",
    ] {
        assert!(help.contains(flag), "--help mentions {flag}");
    }
}
