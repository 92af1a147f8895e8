//! Handshake and connection limits: the handshake deadline, the most connections at once, and
//! accepting when the process is out of file descriptors.
//!
//! The last test is the third row of issue 15's table — `ulimit -n 256`, 300 connections that
//! never finish the handshake, then a well-behaved client — with the `costack-nbd` binary in a
//! process of its own whose `RLIMIT_NOFILE` is lowered.

mod common;

use common::*;
use costack_nbd::proto::{self, opt, rep};
use costack_nbd::{Config, Export};
use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

/// What the server did with a new connection.
#[derive(Debug, PartialEq, Eq)]
enum Greeted {
    /// It sent the greeting: the connection is being served.
    Yes,
    /// It closed the connection at once: the client read end-of-file, no byte.
    Refused,
}

/// Connects and reads what comes first: the 18-byte greeting, or end-of-file. Panics if
/// neither comes within 20 s (a hang).
fn connect(addr: SocketAddr) -> (TcpStream, Greeted) {
    let mut s = TcpStream::connect(addr).unwrap();
    let g = greeting(&mut s);
    (s, g)
}

fn greeting(s: &mut TcpStream) -> Greeted {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut g = [0u8; 18];
    let mut got = 0;
    while got < g.len() {
        match s.read(&mut g[got..]) {
            Ok(0) if got == 0 => return Greeted::Refused,
            Ok(0) => panic!("end-of-file in the middle of the greeting"),
            Ok(n) => got += n,
            Err(e) => panic!("no greeting and no end-of-file: {e}"),
        }
    }
    assert_eq!(proto::be64(&g[0..8]), proto::NBDMAGIC);
    Greeted::Yes
}

/// Reads until end-of-file (a reset counts too) and returns when it came, or panics if the
/// connection is still open after `limit`.
fn wait_closed(s: &mut TcpStream, limit: Duration) -> Instant {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut b = [0u8; 256];
    loop {
        match s.read(&mut b) {
            Ok(0) => return Instant::now(),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Instant::now(),
            Err(e) => panic!("the server did not close the connection within {limit:?}: {e}"),
        }
    }
}

fn server(cfg: Config) -> TestServer {
    TestServer::start(Export::memory("test", 1 << 20, false).unwrap(), cfg)
}

/// A well-behaved client can finish the handshake and use the disk.
fn use_the_disk(c: &mut Client) {
    assert_eq!(c.write(4096, &pattern(4096, 7)), 0);
    assert_eq!(c.read(4096, 4096).unwrap(), pattern(4096, 7));
}

const DEADLINE: Duration = Duration::from_millis(800);
/// How late a disconnection may come on a loaded machine.
const SLACK: Duration = Duration::from_secs(10);

fn with_deadline(d: Option<Duration>) -> Config {
    Config {
        handshake_timeout: d,
        ..Config::default()
    }
}

#[test]
fn silent_client_is_disconnected_at_the_handshake_deadline() {
    let srv = server(with_deadline(Some(DEADLINE)));
    let t0 = Instant::now();
    let (mut s, g) = connect(srv.addr);
    assert_eq!(g, Greeted::Yes);
    let at = wait_closed(&mut s, DEADLINE + SLACK) - t0;
    assert!(
        at >= DEADLINE && at < DEADLINE + SLACK,
        "closed after {at:?}"
    );
    // The server goes on.
    let (mut c, _) = Client::open(srv.addr, true);
    use_the_disk(&mut c);
}

#[test]
fn half_a_handshake_sent_byte_by_byte_is_cut_at_the_deadline() {
    let srv = server(with_deadline(Some(DEADLINE)));
    let t0 = Instant::now();
    let mut c = Client::connect(srv.addr);
    // An option header, one byte every 50 ms: every read of the server gets something, and the
    // header is never complete before the deadline (20 bytes take a second).
    let mut h = proto::IHAVEOPT.to_be_bytes().to_vec();
    h.extend_from_slice(&opt::LIST.to_be_bytes());
    h.extend_from_slice(&0u32.to_be_bytes());
    let mut sent = 0;
    let closed_at = loop {
        if sent < h.len() && c.s.write_all(&h[sent..=sent]).is_ok() {
            sent += 1;
        }
        let mut b = [0u8; 64];
        c.s.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        match c.s.read(&mut b) {
            Ok(0) => break Instant::now(),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break Instant::now(),
            Ok(n) => panic!("unexpected {n} bytes: {:?}", &b[..n]),
            Err(_) => {} // nothing yet
        }
        assert!(t0.elapsed() < DEADLINE + SLACK, "still open");
    };
    let at = closed_at - t0;
    assert!(
        at >= DEADLINE && at < DEADLINE + SLACK,
        "closed after {at:?}"
    );
    assert!(sent < h.len(), "the header was sent whole ({sent} bytes)");
}

#[test]
fn deadline_covers_the_whole_handshake_not_each_read() {
    let srv = server(with_deadline(Some(DEADLINE)));
    let t0 = Instant::now();
    let mut c = Client::connect(srv.addr);
    // A client that answers promptly but never picks an export: LIST after LIST, 100 ms apart.
    let mut lists = 0;
    let closed_at = loop {
        c.send_option(opt::LIST, &[]);
        let mut closed = None;
        // One SERVER reply and an ACK, or end-of-file.
        for _ in 0..2 {
            let mut hdr = [0u8; 20];
            match c.s.read_exact(&mut hdr) {
                Ok(()) => {
                    let len = proto::be32(&hdr[16..20]) as usize;
                    let mut data = vec![0u8; len];
                    c.s.read_exact(&mut data).unwrap();
                }
                Err(_) => {
                    closed = Some(Instant::now());
                    break;
                }
            }
        }
        if let Some(at) = closed {
            break at;
        }
        lists += 1;
        assert!(t0.elapsed() < DEADLINE + SLACK, "still open");
        std::thread::sleep(Duration::from_millis(100));
    };
    let at = closed_at - t0;
    assert!(
        at >= DEADLINE && at < DEADLINE + SLACK,
        "closed after {at:?}"
    );
    assert!(lists >= 2, "only {lists} LISTs answered");
}

#[test]
fn deadline_does_not_apply_to_transmission() {
    let srv = server(with_deadline(Some(DEADLINE)));
    let (mut c, _) = Client::open(srv.addr, true);
    // Idle in transmission for twice the deadline: still served.
    std::thread::sleep(DEADLINE * 2);
    use_the_disk(&mut c);
    c.disconnect();
}

#[test]
fn no_deadline_with_none_or_zero() {
    for d in [None, Some(Duration::ZERO)] {
        let srv = server(with_deadline(d));
        let (mut s, g) = connect(srv.addr);
        assert_eq!(g, Greeted::Yes);
        // Silent for well past what any deadline of the other tests allows: still open.
        s.set_read_timeout(Some(DEADLINE * 2)).unwrap();
        let mut b = [0u8; 1];
        let e = s.read(&mut b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{d:?}: {e}");
        // And it can still finish the handshake.
        s.write_all(&(proto::FLAG_C_FIXED_NEWSTYLE | proto::FLAG_C_NO_ZEROES).to_be_bytes())
            .unwrap();
        let mut c = Client::from_stream(s);
        let (r, _) = c.info(opt::GO, "test", &[]);
        assert_eq!(r.last().unwrap().typ, rep::ACK);
        use_the_disk(&mut c);
    }
}

#[test]
fn connections_beyond_the_maximum_are_refused_at_once() {
    // Two threads: connections go to both loops, and the count is one for the server.
    let srv = server(Config {
        threads: 2,
        max_connections: 3,
        handshake_timeout: None,
        ..Config::default()
    });
    // Three admitted: two still in the handshake, one in transmission. Connections go round
    // robin (refused ones do not count): `a` and `c` on the accepting loop, `b` on the other.
    let (mut a, ga) = connect(srv.addr);
    let (_b, gb) = connect(srv.addr);
    let (mut c, _) = Client::open(srv.addr, false);
    assert_eq!((ga, gb), (Greeted::Yes, Greeted::Yes));
    // The 4th and 5th: end-of-file at once (not a hang in the backlog).
    for _ in 0..2 {
        let t = Instant::now();
        let (_s, g) = connect(srv.addr);
        assert_eq!(g, Greeted::Refused);
        assert!(t.elapsed() < SLACK, "refused after {:?}", t.elapsed());
    }
    use_the_disk(&mut c);
    // One leaves (ABORT in the handshake; the server closes after its ACK): exactly one more is
    // admitted, the next is refused again.
    a.write_all(&(proto::FLAG_C_FIXED_NEWSTYLE | proto::FLAG_C_NO_ZEROES).to_be_bytes())
        .unwrap();
    let mut a = Client::from_stream(a);
    assert_eq!(a.option(opt::ABORT, &[]).typ, rep::ACK);
    assert!(a.is_closed());
    let (_d, gd) = connect(srv.addr);
    assert_eq!(gd, Greeted::Yes);
    assert_eq!(connect(srv.addr).1, Greeted::Refused);
    // One in transmission leaves (DISC): its place is free too. (Transmission shuts the socket
    // down just before the place is given back; `c` runs on the accepting loop, so the
    // acceptor cannot look at the count in between.)
    c.disconnect();
    let (mut e, _) = Client::open(srv.addr, true);
    use_the_disk(&mut e);
    assert_eq!(connect(srv.addr).1, Greeted::Refused);
}

#[test]
fn a_connection_cut_by_the_deadline_frees_its_place() {
    let srv = server(Config {
        max_connections: 1,
        handshake_timeout: Some(DEADLINE),
        ..Config::default()
    });
    let (mut a, g) = connect(srv.addr);
    assert_eq!(g, Greeted::Yes);
    assert_eq!(connect(srv.addr).1, Greeted::Refused);
    wait_closed(&mut a, DEADLINE + SLACK);
    let (mut c, _) = Client::open(srv.addr, true);
    use_the_disk(&mut c);
}

#[test]
fn no_limit_with_zero() {
    let srv = server(Config {
        max_connections: 0,
        ..Config::default()
    });
    let conns: Vec<_> = (0..40).map(|_| connect(srv.addr)).collect();
    assert!(conns.iter().all(|(_, g)| *g == Greeted::Yes));
}

// ---- Row 3 of the table: out of file descriptors ----

/// The server's file-descriptor limit.
const SERVER_NOFILE: u64 = 256;
/// Connections that never finish the handshake: more than the server has fds.
const STALLED: usize = 300;
/// The server's handshake deadline, in seconds.
const ROW3_DEADLINE: u64 = 4;

/// Raises this process's soft `RLIMIT_NOFILE` to `want` if it is lower.
fn raise_nofile(want: u64) -> Result<(), String> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct that we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return Err(io::Error::last_os_error().to_string());
    }
    if rl.rlim_cur >= want {
        return Ok(());
    }
    let new = libc::rlimit {
        rlim_cur: want.min(rl.rlim_max),
        rlim_max: rl.rlim_max,
    };
    // SAFETY: setrlimit reads one rlimit struct that we own.
    if new.rlim_cur < want || unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } != 0 {
        return Err(format!(
            "need {want} fds, the limits are soft {} hard {}",
            rl.rlim_cur, rl.rlim_max
        ));
    }
    Ok(())
}

/// CPU time (user + system) the process `pid` has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the command name (in parentheses, which may hold spaces): state is field 3, utime
    // field 14 and stime field 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// Starts the binary with `RLIMIT_NOFILE` lowered to `nofile` and the handshake deadline
/// `deadline_s`; returns it, its address and a thread collecting its log (`-v`) lines.
fn spawn_limited(
    nofile: u64,
    deadline_s: u64,
) -> (BinServer, SocketAddr, std::thread::JoinHandle<Vec<String>>) {
    let deadline = deadline_s.to_string();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_costack-nbd"));
    cmd.args([
        "-p",
        "0",
        "-x",
        "test",
        "--threads",
        "2",
        "--size",
        "1M",
        "-v",
    ])
    .args(["--handshake-timeout", &deadline]);
    // SAFETY: the closure runs in the child between fork and exec, and only calls setrlimit(2),
    // which is async-signal-safe; it touches no memory of the parent but its own stack.
    unsafe {
        cmd.pre_exec(move || {
            let rl = libc::rlimit {
                rlim_cur: nofile,
                rlim_max: nofile,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (srv, err) = BinServer::spawn(&mut cmd);
    let addr = srv.addr;
    // The server's log (-v), line by line: keeps it from blocking on stderr, and counts.
    let log = std::thread::spawn(move || err.lines().map_while(Result::ok).collect::<Vec<_>>());
    (srv, addr, log)
}

fn count(log: &[String], what: &str) -> usize {
    log.iter().filter(|l| l.contains(what)).count()
}

/// Issue 15's row 3. The server has 256 fds; 300 clients connect and say nothing. Those it
/// has fds for are greeted; the others wait in the listen backlog, and so does the
/// well-behaved client that comes last: as with qemu-nbd, it is served once the stalled
/// handshakes reach their deadline and give their fds back — not locked out (the old
/// acceptor retried every 10 ms with no deadline to free anything), not refused (a client
/// that connects once, as qemu-img does, must get its disk), and without spinning meanwhile.
#[test]
fn out_of_fds_clients_wait_and_a_good_client_is_served_at_the_deadline() {
    if let Err(why) = raise_nofile(STALLED as u64 + 200) {
        skip_or_fail(&format!("cannot open {STALLED} connections: {why}"));
        return;
    }
    let (srv, addr, log) = spawn_limited(SERVER_NOFILE, ROW3_DEADLINE);
    let pid = srv.child.id();
    let deadline = Duration::from_secs(ROW3_DEADLINE);
    let t0 = Instant::now();
    let mut stalled: Vec<TcpStream> = (0..STALLED)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    let flooded = t0.elapsed();

    // The well-behaved client connects once and waits for its greeting (for up to 20 s).
    let cpu0 = cpu_time(pid);
    let w0 = Instant::now();
    let mut c = TcpStream::connect(addr).unwrap();
    assert_eq!(greeting(&mut c), Greeted::Yes);
    let served_after = t0.elapsed();
    let cpu = cpu_time(pid) - cpu0;
    let wall = w0.elapsed();
    // It came after 300 connections the server had no room for all of: it was served when the
    // first stalled handshakes were cut (no earlier than the deadline after t0).
    assert!(
        served_after >= deadline,
        "served after {served_after:?}: the server was not full"
    );
    assert!(
        served_after < deadline + SLACK,
        "served after {served_after:?}"
    );
    c.write_all(&(proto::FLAG_C_FIXED_NEWSTYLE | proto::FLAG_C_NO_ZEROES).to_be_bytes())
        .unwrap();
    let mut c = Client::from_stream(c);
    let (r, _) = c.info(opt::GO, "test", &[]);
    assert_eq!(r.last().unwrap().typ, rep::ACK);
    use_the_disk(&mut c);
    // Waiting for fds: CPU of a sleeping server, not of a spinning one.
    assert!(
        cpu < wall / 10 + Duration::from_millis(50),
        "{cpu:?} of CPU in {wall:?} out of fds"
    );
    // Every stalled client was greeted in turn and cut at its deadline: the last ones, which
    // waited in the backlog, one deadline later.
    for s in &mut stalled {
        let at = wait_closed(s, 2 * deadline + SLACK) - t0;
        assert!(at < 2 * deadline + SLACK + flooded, "closed after {at:?}");
    }
    c.disconnect();
    drop(srv);
    let log = log.join().unwrap();
    // Nobody was shed (the shortage ended at the deadline, well before shedding would start),
    // and each of the 300 handshakes was cut by the deadline.
    assert_eq!(
        count(&log, "refused a connection"),
        0,
        "log:\n{}",
        log.join("\n")
    );
    assert_eq!(
        count(&log, "not finished within"),
        STALLED,
        "log:\n{}",
        log.join("\n")
    );
    assert_eq!(count(&log, "out of file descriptors: new clients wait"), 1);
    eprintln!(
        "row 3: {STALLED} stalled ({flooded:?}); a good client served after {served_after:?}; \
         server CPU {cpu:?} in {wall:?} out of fds"
    );
}

/// When the fds are held by connections no deadline ends (in transmission), a client that
/// comes is not left in the backlog for ever: once the shortage has lasted the handshake
/// deadline and 5 s more, it is accepted and closed (end-of-file). A freed fd then serves the
/// next client at once.
#[test]
fn out_of_fds_for_longer_than_the_deadline_sheds_waiting_clients() {
    const NOFILE: u64 = 64;
    let (srv, addr, log) = spawn_limited(NOFILE, 1);
    let grace = Duration::from_secs(1 + 5);
    let mut held = Vec::new();
    let waited = loop {
        assert!(held.len() < NOFILE as usize, "never out of fds");
        let t = Instant::now();
        let mut s = TcpStream::connect(addr).unwrap();
        match greeting(&mut s) {
            Greeted::Yes => {
                s.write_all(
                    &(proto::FLAG_C_FIXED_NEWSTYLE | proto::FLAG_C_NO_ZEROES).to_be_bytes(),
                )
                .unwrap();
                let mut c = Client::from_stream(s);
                let (r, _) = c.info(opt::GO, "test", &[]);
                assert_eq!(r.last().unwrap().typ, rep::ACK);
                held.push(c);
            }
            Greeted::Refused => break t.elapsed(),
        }
    };
    assert!(held.len() >= 30, "only {} connections", held.len());
    assert!(
        waited >= grace - Duration::from_millis(200) && waited < grace + SLACK,
        "shed after {waited:?}"
    );
    // An fd comes back: the next client is served at once.
    held.pop().unwrap().disconnect();
    let t = Instant::now();
    let mut next = loop {
        let mut s = TcpStream::connect(addr).unwrap();
        // The shortage may still be being shed for a moment after the fd came back.
        if greeting(&mut s) == Greeted::Yes {
            break s;
        }
        assert!(
            t.elapsed() < SLACK,
            "not served {:?} after an fd came back",
            t.elapsed()
        );
    };
    assert!(t.elapsed() < SLACK);
    next.write_all(&(proto::FLAG_C_FIXED_NEWSTYLE | proto::FLAG_C_NO_ZEROES).to_be_bytes())
        .unwrap();
    let mut c = Client::from_stream(next);
    let (r, _) = c.info(opt::GO, "test", &[]);
    assert_eq!(r.last().unwrap().typ, rep::ACK);
    use_the_disk(&mut c);
    for h in &mut held {
        use_the_disk(h);
    }
    drop(srv);
    let log = log.join().unwrap();
    assert!(count(&log, "refused a connection") >= 1);
}
