//! Hostile NBD clients against any NBD server, for the table of `scripts/nbd-hostile.sh`:
//! each mode attacks for a while, then a well-behaved client (200 × a 4 KiB write and its
//! read-back, on a connection of its own) tries to get served within a deadline, and the
//! server's memory is read from `/proc/PID/status`.
//!
//! ```text
//! cargo run --release -p costack-nbd --example nbd_hostile -- MODE HOST:PORT PID [SECONDS]
//! ```
//!
//! Modes (the export must be named `test`, at least 64 MiB):
//!
//! * `reads`: 4 connections pipeline 32 MiB `READ`s and never read the replies;
//! * `flood`: one unread 32 MiB `READ`, then a flood of invalid requests (`READ`s past the
//!   end), never reading the replies;
//! * `handshake`: 300 connections that never finish the handshake (run the server under
//!   `ulimit -n 256`);
//! * `burst`: 4 clients read 32 MiB and smaller blocks as fast as they can (reading the
//!   replies), then leave; the server's RSS is read once idle.
//!
//! Prints one line of `key=value` fields: the server's peak memory (`hwm_mib`, from `VmHWM`),
//! whether the good client was served (`served=yes|no`) and when (`served_s`), the requests
//! the hostile clients got out (`sent`), and for `flood` and `burst` the RSS a few seconds
//! after the hostile clients left (`rss_after_mib`).

#[path = "../tests/common/mod.rs"]
mod common;

use common::Client;
use costack_nbd::proto::{cmd, Request};
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// A field of `/proc/PID/status` in MiB.
fn status_mib(pid: u32, field: &str) -> u64 {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    st.lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

fn read_req(cookie: u64, offset: u64, length: u32) -> Request {
    Request {
        flags: 0,
        typ: cmd::READ,
        cookie,
        offset,
        length,
    }
}

/// Sends `first`, then `each` (with new cookies) until `stop`, never reading a reply.
fn never_read(
    addr: SocketAddr,
    first: Option<Request>,
    each: Request,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) {
    let (c, _) = Client::open(addr, false);
    let mut s = c.s;
    let _ = s.set_write_timeout(Some(Duration::from_millis(100)));
    let mut first = first;
    let mut cookie = 1;
    loop {
        cookie += 1;
        let req = first.take().unwrap_or(Request { cookie, ..each });
        let bytes = req.encode();
        let mut at = 0;
        while at < bytes.len() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            match s.write(&bytes[at..]) {
                Ok(n) => at += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return,
            }
        }
        sent.fetch_add(1, Ordering::Relaxed);
    }
}

/// The well-behaved client: 200 × (4 KiB write, read back) within `deadline`; when it was
/// done, if it was.
fn good_client(addr: SocketAddr, deadline: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    let worker = thread::spawn(move || {
        let (mut c, _) = Client::open(addr, false);
        for i in 0..200u64 {
            let data = vec![i as u8; 4096];
            assert_eq!(c.write(i * 4096, &data), 0);
            assert_eq!(c.read(i * 4096, 4096).unwrap(), data);
        }
        c.disconnect();
    });
    while !worker.is_finished() {
        if t0.elapsed() > deadline {
            return None; // left running: the process exits soon
        }
        thread::sleep(Duration::from_millis(10));
    }
    worker.join().ok().map(|()| t0.elapsed())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: nbd_hostile reads|flood|handshake|burst HOST:PORT SERVER_PID [SECONDS]");
        std::process::exit(2);
    }
    let mode = args[0].as_str();
    let addr: SocketAddr = args[1].parse().expect("HOST:PORT");
    let pid: u32 = args[2].parse().expect("SERVER_PID");
    let secs: u64 = args.get(3).map_or(10, |s| s.parse().expect("SECONDS"));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut hostiles = Vec::new();
    let mut held = Vec::new();
    let mut spawn = |first: Option<Request>, each: Request| {
        let (stop, sent) = (stop.clone(), sent.clone());
        hostiles.push(thread::spawn(move || {
            never_read(addr, first, each, stop, sent)
        }));
    };
    match mode {
        "reads" => {
            for i in 0..4 {
                spawn(None, read_req(1, i * 8 * MIB, 32 << 20));
            }
        }
        "flood" => spawn(Some(read_req(1, 0, 32 << 20)), read_req(2, 1 << 40, 4096)),
        "handshake" => {
            for _ in 0..300 {
                // Connected, never a byte sent: the server waits for the client's flags.
                if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                    held.push(s);
                }
            }
        }
        "burst" => {
            for k in 0..4u64 {
                hostiles.push(thread::spawn(move || {
                    let (mut c, _) = Client::open(addr, false);
                    let sizes = [32 << 20, 3 << 20, 8 << 20, 1 << 20, 17 << 20];
                    for round in 0..6u64 {
                        let mut n = 0;
                        for (j, &len) in sizes.iter().cycle().take(8).enumerate() {
                            let off = ((round + j as u64 + k) * 3 * MIB) % (32 * MIB);
                            let cookie = c.cookie();
                            c.send(cmd::READ, 0, cookie, off, len, &[]);
                            n += 1;
                        }
                        for _ in 0..n {
                            c.read_full_reply();
                        }
                    }
                    c.disconnect();
                }));
            }
        }
        _ => {
            eprintln!("unknown mode {mode}");
            std::process::exit(2);
        }
    }
    let mut out = format!("mode={mode}");
    if mode == "burst" {
        for h in hostiles.drain(..) {
            let _ = h.join();
        }
        let hwm = status_mib(pid, "VmHWM");
        thread::sleep(Duration::from_secs(secs));
        let rss = status_mib(pid, "VmRSS");
        println!("{out} hwm_mib={hwm} rss_after_mib={rss}");
        return;
    }
    thread::sleep(Duration::from_secs(secs));
    let served = good_client(addr, Duration::from_secs(20));
    match served {
        Some(d) => out += &format!(" served=yes served_s={:.2}", d.as_secs_f64()),
        None => out += " served=no",
    }
    out += &format!(
        " hwm_mib={} sent={}",
        status_mib(pid, "VmHWM"),
        sent.load(Ordering::Relaxed)
    );
    stop.store(true, Ordering::Relaxed);
    for h in hostiles {
        let _ = h.join();
    }
    drop(held);
    if mode == "flood" {
        thread::sleep(Duration::from_secs(5));
        out += &format!(" rss_after_mib={}", status_mib(pid, "VmRSS"));
    }
    println!("{out}");
}
