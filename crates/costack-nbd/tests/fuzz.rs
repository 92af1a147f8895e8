//! The protocol fuzzer against the `costack-nbd` binary, in its own process (so that a crash
//! is a dead process): several fuzzing connections at once, a checker verifying its data
//! alongside (see `common/fuzz.rs`).
//!
//! Asserted: the server never dies, the checker's data is always exact, every reply a fuzzer
//! gets carries a cookie it sent (and is not answered twice), the server's open descriptors
//! come back to their number before the run once the fuzzers are gone, and a fresh client is
//! served at the end.
//!
//! Two short runs with a fixed seed are part of `cargo test`: a server of a 64 MiB memory
//! export, and one of a 64 MiB sparse file (writes through the loop's file I/O, `--writes
//! aio`). The environment changes it (this is
//! what `scripts/nbd-fuzz.sh` sets): `NBD_FUZZ_SEED` (a number, decimal or `0x` hex),
//! `NBD_FUZZ_SECS` (the duration), `NBD_FUZZ_CONNS` (fuzzing connections at once),
//! `NBD_FUZZ_THREADS` (the server's `--threads`). The seed is printed, and is in every failure
//! message, so that a run can be replayed.

mod common;
#[path = "common/fuzz.rs"]
mod fuzz;

use common::*;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// The binary serving `test` on a free port, with `args`.
type Server = BinServer;

fn start(args: &[&str]) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_costack-nbd"));
    Server::start(cmd.args(["-p", "0", "-x", "test"]).args(args))
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => {
            let v = v.trim();
            let r = match v.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16),
                None => v.parse(),
            };
            r.unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
        }
        Err(_) => default,
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// The TCP state of `socket:[INODE]`, from /proc/net/tcp (" (CLOSE_WAIT)", say).
fn socket_state(link: &str) -> Option<String> {
    let inode = link.strip_prefix("socket:[")?.strip_suffix(']')?;
    let tcp = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let line = tcp
        .lines()
        .find(|l| l.split_whitespace().nth(9) == Some(inode))?;
    let st = line.split_whitespace().nth(3)?;
    let name = match st {
        "01" => "ESTABLISHED",
        "06" => "TIME_WAIT",
        "07" => "CLOSE",
        "08" => "CLOSE_WAIT",
        "0A" => "LISTEN",
        "04" => "FIN_WAIT1",
        "05" => "FIN_WAIT2",
        "09" => "LAST_ACK",
        other => other,
    };
    let q = line.split_whitespace().nth(4).unwrap_or("");
    Some(format!(" ({name}, tx:rx queues {q})"))
}

/// The lines of /proc/net/tcp with `port` on either side, for a failure message.
fn tcp_of(port: u16) -> String {
    let hex = format!(":{port:04X} ");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&hex))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What the server's descriptors are, for a failure message.
fn fd_list(pid: u32) -> String {
    let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let to = std::fs::read_link(e.path()).ok()?.display().to_string();
            let state = socket_state(&to).unwrap_or_default();
            Some(format!("{}→{to}{state}", e.file_name().to_string_lossy()))
        })
        .collect();
    v.sort();
    v.join(" ")
}

/// Waits (up to `limit`) for the server's descriptor count to be `want`; the last count seen.
fn wait_fds(pid: u32, want: usize, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let n = open_fds(pid);
        if n == want || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A fresh client writes and reads back in the fuzzers' region, and leaves.
fn fresh_client_is_served(addr: SocketAddr, at: u64) {
    let (mut c, _) = Client::open(addr, true);
    let d = pattern(256 * 1024, 0x5c);
    assert_eq!(c.write(at, &d), 0);
    assert!(c.read(at, d.len() as u32).unwrap() == d);
    c.disconnect();
}

/// Fuzzes a server started with `args` (its export: 64 MiB) for `NBD_FUZZ_SECS` seconds
/// (`default_secs` without it).
fn fuzz_server(args: &[&str], default_secs: u64) {
    let seed = env_u64("NBD_FUZZ_SEED", 0x15_f022);
    let secs = env_u64("NBD_FUZZ_SECS", default_secs);
    let conns = env_u64("NBD_FUZZ_CONNS", 4) as usize;
    let threads = env_u64("NBD_FUZZ_THREADS", 2).to_string();
    eprintln!(
        "fuzz seed {seed:#x}, {secs} s, {conns} connections, server {args:?} \
         (replay: NBD_FUZZ_SEED={seed:#x} NBD_FUZZ_SECS={secs} NBD_FUZZ_CONNS={conns})"
    );
    let size = 64 * MIB;
    let mut srv = start(&[&["--threads", &threads], args].concat());
    let pid = srv.child.id();
    // The baseline: the descriptors of the server before any client; serving a client on
    // every thread must not change it once they are gone.
    let baseline = open_fds(pid);
    let before = fd_list(pid);
    let warm: Vec<_> = (0..4).map(|_| Client::open(srv.addr, true).0).collect();
    for c in warm {
        c.disconnect();
    }
    let fds = wait_fds(pid, baseline, Duration::from_secs(20));
    assert_eq!(fds, baseline, "after four clients came and went");

    let plan = fuzz::Plan {
        seed,
        duration: Duration::from_secs(secs),
        fuzzers: conns,
        name: "test".into(),
        size,
        checker_len: 4 * MIB,
    };
    let started = Instant::now();
    let result = fuzz::run(srv.addr, &plan);
    let took = started.elapsed();
    if let Some(st) = srv.child.try_wait().unwrap() {
        panic!("seed {seed:#x}: the server died: {st}");
    }
    let report = result.unwrap_or_else(|e| panic!("seed {seed:#x}: {e}"));
    eprintln!("seed {seed:#x}: {report:?} in {took:?}");
    assert!(
        took < plan.duration + Duration::from_secs(60),
        "seed {seed:#x}: the run took {took:?}"
    );
    // The run did something of each kind.
    assert!(report.handshake_sessions > 0 && report.transmission_sessions > 0);
    assert!(report.replies > 0 && report.checker_reads > 0 && report.checker_writes > 0);

    let fds = wait_fds(pid, baseline, Duration::from_secs(20));
    assert_eq!(
        fds,
        baseline,
        "seed {seed:#x}: the server holds {fds} descriptors, {baseline} before the run\n\
         now: {}\nbefore: {before}\ntcp:\n{}",
        fd_list(pid),
        tcp_of(srv.addr.port())
    );
    fresh_client_is_served(srv.addr, 32 * MIB);
    assert_eq!(wait_fds(pid, baseline, Duration::from_secs(20)), baseline);
    assert!(
        srv.child.try_wait().unwrap().is_none(),
        "seed {seed:#x}: the server died"
    );
}

#[test]
fn fuzzing_a_memory_export_with_a_checker_alongside() {
    fuzz_server(&["--size", "64M"], 5);
}

#[test]
fn fuzzing_a_file_export_with_a_checker_alongside() {
    let f = TempFile::new("fuzz");
    std::fs::File::create(f.path())
        .unwrap()
        .set_len(64 * MIB)
        .unwrap();
    fuzz_server(&["--writes", "aio", f.path().to_str().unwrap()], 5);
}
