//! 10 000 concurrent loopback connections on one loop.
//!
//! The server — one loop, a task per connection — runs in the test process. The clients run in
//! a child process (this same test binary, started with an environment variable that turns its
//! helper test into the client), because the two ends of 10 000 connections in one process
//! would need 20 000+ fds and a container without `CAP_SYS_RESOURCE` cannot raise the hard
//! limit past what it was given (20 000 here). Each process raises its soft `RLIMIT_NOFILE` as
//! needed; if that is impossible, the test says so on stderr and skips: it does not pass
//! silently. With `COSTACK_REQUIRE_ALL_TESTS=1` (CI) it fails instead.
//!
//! Stacks: 10 000 coroutines per process at the peak, 20 000 memory mappings, under the
//! default `vm.max_map_count` of 65 530; no `sysctl` is needed.

use costack_aio::net::{TcpListener, TcpStream};
use costack_aio::{run_blocking, EventLoop, TaskBuilder};
use std::cell::Cell;
use std::io::{self, Read, Write};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

#[path = "../../costack/tests/common/require.rs"]
mod require;

const CONNECTIONS: usize = 10_000;
const STACK: usize = 32 * 1024;
const CLIENT_ENV: &str = "COSTACK_AIO_10K_CLIENT_OF";

/// Raises the fd limit to at least `want`; the limit in force, or why not.
fn raise_nofile(want: u64) -> Result<u64, String> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct that we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return Err(io::Error::last_os_error().to_string());
    }
    if rl.rlim_cur >= want {
        return Ok(rl.rlim_cur);
    }
    let new = libc::rlimit {
        rlim_cur: want,
        rlim_max: rl.rlim_max.max(want),
    };
    // SAFETY: setrlimit reads one rlimit struct that we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } != 0 {
        return Err(format!(
            "setrlimit(RLIMIT_NOFILE, {want}) failed: {} (soft {}, hard {})",
            io::Error::last_os_error(),
            rl.rlim_cur,
            rl.rlim_max
        ));
    }
    Ok(want)
}

const FD_NEEDED: u64 = CONNECTIONS as u64 + 500;

#[test]
fn ten_thousand_concurrent_connections_on_one_loop() {
    if let Err(why) = raise_nofile(FD_NEEDED) {
        require::skip_or_fail(&format!("cannot raise the fd limit to {FD_NEEDED}: {why}"));
        return;
    }
    let t0 = Instant::now();
    let lp = EventLoop::builder().stack_size(STACK).build().unwrap();
    let (peak, served, client_out) = lp.block_on(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Rc::new(Cell::new(0usize));
        let peak = Rc::new(Cell::new(0usize));
        let served = Rc::new(Cell::new(0usize));
        let (o, p, sv) = (open.clone(), peak.clone(), served.clone());
        let acceptor = costack_aio::spawn(move || loop {
            let (mut s, _) = listener.accept().unwrap();
            let (o, p, sv) = (o.clone(), p.clone(), sv.clone());
            o.set(o.get() + 1);
            p.set(p.get().max(o.get()));
            TaskBuilder::new().stack_size(STACK).spawn(move || {
                let mut buf = [0u8; 64];
                let mut any = false;
                while let Ok(n @ 1..) = s.read(&mut buf) {
                    s.write_all(&buf[..n]).unwrap();
                    any = true;
                }
                sv.set(sv.get() + usize::from(any));
                o.set(o.get() - 1);
            });
        });
        // The clients, in a child process; waiting for it on a worker thread keeps this loop
        // serving.
        let exe = std::env::current_exe().unwrap();
        let out = run_blocking(move || {
            Command::new(exe)
                .args([
                    "--exact",
                    "helper_client_process_of_the_10k_test",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CLIENT_ENV, addr.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .output()
                .unwrap()
        });
        // Every server task sees EOF and ends.
        let deadline = Instant::now() + Duration::from_secs(30);
        while open.get() > 0 && Instant::now() < deadline {
            costack_aio::sleep(Duration::from_millis(1));
        }
        assert_eq!(open.get(), 0);
        acceptor.cancel();
        (peak.get(), served.get(), out)
    });
    let stdout = String::from_utf8_lossy(&client_out.stdout);
    let stderr = String::from_utf8_lossy(&client_out.stderr);
    if let Some(line) = stderr.lines().find(|l| l.starts_with("SKIPPED")) {
        require::skip_or_fail(&format!("the client process said {line:?}"));
        return;
    }
    assert!(
        client_out.status.success() && stdout.contains("CLIENTS OK 10000"),
        "client process failed:\n{stdout}\n{stderr}"
    );
    assert_eq!(peak, CONNECTIONS, "all connections were open at once");
    assert_eq!(served, CONNECTIONS);
    assert_eq!(lp.task_count(), 0);
    eprintln!(
        "10 000 connections opened, echoed and closed in {:?}",
        t0.elapsed()
    );
}

/// The client side of the test above; does nothing unless started by it.
#[test]
fn helper_client_process_of_the_10k_test() {
    let Ok(addr) = std::env::var(CLIENT_ENV) else {
        return;
    };
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    if let Err(why) = raise_nofile(FD_NEEDED) {
        // Started by the test above: a failure here fails it too, a skip makes it skip.
        require::skip_or_fail(&format!(
            "client process: cannot raise the fd limit to {FD_NEEDED}: {why}"
        ));
        return;
    }
    let lp = EventLoop::builder().stack_size(STACK).build().unwrap();
    let n = lp.block_on(move || {
        // Open every connection, 500 connects in flight at a time (the listen backlog is
        // 1024), and keep them all open.
        let mut streams = Vec::with_capacity(CONNECTIONS);
        for batch in 0..CONNECTIONS.div_ceil(500) {
            let hs: Vec<_> = (batch * 500..((batch + 1) * 500).min(CONNECTIONS))
                .map(|_| {
                    TaskBuilder::new()
                        .stack_size(STACK)
                        .spawn(move || TcpStream::connect(addr).unwrap())
                })
                .collect();
            streams.extend(hs.into_iter().map(|h| h.join()));
        }
        // All of them talk at once.
        let talkers: Vec<_> = streams
            .into_iter()
            .enumerate()
            .map(|(i, mut s)| {
                TaskBuilder::new().stack_size(STACK).spawn(move || {
                    let msg = (i as u64).to_le_bytes();
                    s.write_all(&msg).unwrap();
                    let mut back = [0u8; 8];
                    s.read_exact(&mut back).unwrap();
                    assert_eq!(back, msg);
                    s // still open
                })
            })
            .collect();
        let streams: Vec<TcpStream> = talkers.into_iter().map(|h| h.join()).collect();
        streams.len()
    });
    println!("CLIENTS OK {n}");
}
