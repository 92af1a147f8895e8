//! A protocol fuzzer for an NBD server, with a checker client verifying data alongside.
//!
//! [`run`] drives `plan.fuzzers` connections at once against the server at an address until
//! `plan.duration` has passed. Each fuzzer, from its own seeded generator, goes through
//! sessions of two kinds:
//!
//! * **handshake garbage**: random client flags, options with random codes, lying lengths
//!   (longer than the data sent, or huge), truncated data, bad magic, then a close;
//! * **transmission**: a proper handshake (structured replies or not), then a mix of valid
//!   requests, invalid ones (bad flags, unknown commands, offsets past the end or near
//!   `u64::MAX`, reads over 32 MiB), pipelined bursts, pauses in reading replies, and an end
//!   that is a `DISC`, a reset (the client vanishes with requests in flight), a truncated
//!   header or payload followed by a reset, bad magic, or an oversized write (which the server
//!   answers and then disconnects).
//!
//! A reader thread per transmission session parses every reply and checks that its cookie is
//! one the fuzzer sent and has not had its final reply yet. The fuzzers' valid writes (and
//! trims and zeroes) stay out of the checker's region; the **checker**, on its own connection,
//! writes patterns there (plain, FUA, pipelined, write-zeroes) and verifies every read byte for
//! byte against its model.
//!
//! The same seed gives every thread the same sequence of choices (what the server's timing
//! does with them may differ). Used by `tests/fuzz.rs` (a short run in CI) and, through it, by
//! `scripts/nbd-fuzz.sh` (long runs).

#![allow(dead_code)]

use costack_nbd::proto::{self, be16, be32, be64, cflag, cmd, opt, rep, Request};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A small deterministic generator (SplitMix64): enough for choosing actions, and stable
/// across platforms and versions, so that a seed replays the same choices.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `[0, n)` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `pct` percent.
    pub fn pct(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }

    /// A generator for thread `i`, derived from this one's seed.
    pub fn fork(&self, i: u64) -> Rng {
        let mut r = Rng(self.0 ^ i.wrapping_mul(0xd6e8_feb8_6659_fd93));
        r.next();
        r
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub seed: u64,
    pub duration: Duration,
    /// Fuzzing connections at once.
    pub fuzzers: usize,
    /// The export's name and size.
    pub name: String,
    pub size: u64,
    /// The checker's region: `[0, checker_len)`. Nothing else writes there.
    pub checker_len: u64,
}

/// What happened.
#[derive(Debug, Default)]
pub struct Report {
    pub handshake_sessions: u64,
    pub transmission_sessions: u64,
    pub requests: u64,
    pub replies: u64,
    pub checker_writes: u64,
    pub checker_reads: u64,
    pub checker_bytes_verified: u64,
}

#[derive(Default)]
struct Counters {
    handshake_sessions: AtomicU64,
    transmission_sessions: AtomicU64,
    requests: AtomicU64,
    replies: AtomicU64,
    checker_writes: AtomicU64,
    checker_reads: AtomicU64,
    checker_bytes: AtomicU64,
}

/// The failures seen by every thread (the first few are kept).
#[derive(Default)]
struct Failures(Mutex<Vec<String>>, AtomicBool);

impl Failures {
    fn add(&self, msg: String) {
        self.1.store(true, Ordering::Relaxed);
        let mut v = self.0.lock().unwrap();
        if v.len() < 20 {
            v.push(msg);
        }
    }

    fn any(&self) -> bool {
        self.1.load(Ordering::Relaxed)
    }
}

/// Runs the plan against the server at `addr`; the failures, if any, as one message.
pub fn run(addr: SocketAddr, plan: &Plan) -> Result<Report, String> {
    let deadline = Instant::now() + plan.duration;
    let failures = Arc::new(Failures::default());
    let counters = Arc::new(Counters::default());
    let root = Rng::new(plan.seed);
    let mut threads = Vec::new();
    for i in 0..plan.fuzzers {
        let (plan, failures, counters) = (plan.clone(), failures.clone(), counters.clone());
        let mut rng = root.fork(i as u64 + 1);
        threads.push(std::thread::spawn(move || {
            while Instant::now() < deadline && !failures.any() {
                if rng.pct(30) {
                    counters.handshake_sessions.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = handshake_garbage(addr, &mut rng) {
                        failures.add(format!("fuzzer {i}, handshake session: {e}"));
                    }
                } else {
                    counters
                        .transmission_sessions
                        .fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = transmission(addr, &plan, &mut rng, &counters, deadline) {
                        failures.add(format!("fuzzer {i}, transmission session: {e}"));
                    }
                }
            }
        }));
    }
    {
        let (plan, failures, counters) = (plan.clone(), failures.clone(), counters.clone());
        let rng = root.fork(0);
        threads.push(std::thread::spawn(move || {
            if let Err(e) = checker(addr, &plan, rng, &counters, deadline, &failures) {
                failures.add(format!("checker: {e}"));
            }
        }));
    }
    for t in threads {
        if t.join().is_err() {
            failures.add("a fuzzing thread panicked".into());
        }
    }
    let f = failures.0.lock().unwrap();
    if !f.is_empty() {
        return Err(f.join("\n"));
    }
    let c = &counters;
    Ok(Report {
        handshake_sessions: c.handshake_sessions.load(Ordering::Relaxed),
        transmission_sessions: c.transmission_sessions.load(Ordering::Relaxed),
        requests: c.requests.load(Ordering::Relaxed),
        replies: c.replies.load(Ordering::Relaxed),
        checker_writes: c.checker_writes.load(Ordering::Relaxed),
        checker_reads: c.checker_reads.load(Ordering::Relaxed),
        checker_bytes_verified: c.checker_bytes.load(Ordering::Relaxed),
    })
}

type Res<T> = Result<T, String>;

fn connect(addr: SocketAddr) -> Res<TcpStream> {
    let s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_nodelay(true).unwrap();
    Ok(s)
}

fn read_exact(s: &mut TcpStream, n: usize, what: &str) -> Res<Vec<u8>> {
    let mut b = vec![0u8; n];
    s.read_exact(&mut b).map_err(|e| format!("{what}: {e}"))?;
    Ok(b)
}

fn greeting(s: &mut TcpStream) -> Res<()> {
    let g = read_exact(s, proto::GREETING_LEN, "greeting")?;
    if be64(&g[0..8]) != proto::NBDMAGIC || be64(&g[8..16]) != proto::IHAVEOPT {
        return Err(format!("bad greeting {g:?}"));
    }
    Ok(())
}

fn option_bytes(magic: u64, option: u32, len: u32, data: &[u8]) -> Vec<u8> {
    let mut b = magic.to_be_bytes().to_vec();
    b.extend_from_slice(&option.to_be_bytes());
    b.extend_from_slice(&len.to_be_bytes());
    b.extend_from_slice(data);
    b
}

/// Random option data: a name with a (maybe lying) length, info requests, meta queries, or
/// bytes.
fn option_data(rng: &mut Rng) -> Vec<u8> {
    match rng.below(4) {
        0 => {
            let name = if rng.pct(50) { "test" } else { "nope" };
            let lie = if rng.pct(20) {
                rng.below(1 << 20) as u32
            } else {
                name.len() as u32
            };
            let mut b = lie.to_be_bytes().to_vec();
            b.extend_from_slice(name.as_bytes());
            let n = rng.below(5) as u16;
            b.extend_from_slice(&n.to_be_bytes());
            for _ in 0..n {
                b.extend_from_slice(&(rng.below(6) as u16).to_be_bytes());
            }
            b
        }
        1 => {
            let mut b = 4u32.to_be_bytes().to_vec();
            b.extend_from_slice(b"test");
            let n = rng.below(4) as u32;
            b.extend_from_slice(&n.to_be_bytes());
            for _ in 0..n {
                let q: &[u8] = match rng.below(3) {
                    0 => b"base:allocation",
                    1 => b"base:",
                    _ => b"qemu:dirty-bitmap:x",
                };
                let lie = if rng.pct(15) {
                    rng.next() as u32
                } else {
                    q.len() as u32
                };
                b.extend_from_slice(&lie.to_be_bytes());
                b.extend_from_slice(q);
            }
            b
        }
        2 => Vec::new(),
        _ => {
            let n = rng.below(300) as usize;
            rng.bytes(n)
        }
    }
}

/// One session of handshake-phase garbage.
fn handshake_garbage(addr: SocketAddr, rng: &mut Rng) -> Res<()> {
    let mut s = connect(addr)?;
    greeting(&mut s)?;
    // Errors writing are the server closing on us, which it may: only a failure to greet, or
    // to serve the checker and the final client, is a server failure.
    let mut out = Vec::new();
    if rng.pct(10) {
        let n = rng.below(64) as usize;
        out.extend(rng.bytes(n));
    } else {
        let flags = if rng.pct(80) {
            proto::FLAG_C_FIXED_NEWSTYLE | proto::FLAG_C_NO_ZEROES
        } else {
            rng.next() as u32
        };
        out.extend_from_slice(&flags.to_be_bytes());
        for _ in 0..rng.below(12) {
            let magic = if rng.pct(5) {
                rng.next()
            } else {
                proto::IHAVEOPT
            };
            let option = if rng.pct(80) {
                rng.below(13) as u32
            } else {
                rng.next() as u32
            };
            // Skip the options that end the handshake properly, but not always.
            let option = match option {
                opt::GO | opt::EXPORT_NAME if rng.pct(70) => opt::LIST,
                o => o,
            };
            let data = option_data(rng);
            let len = match rng.below(10) {
                0 => data.len() as u32 + 1 + rng.below(1000) as u32, // truncated
                1 => 0xffff_fff0 - rng.below(100) as u32,            // huge
                2 => rng.below(data.len() as u64 + 1) as u32,        // shorter
                _ => data.len() as u32,
            };
            out.extend(option_bytes(magic, option, len, &data));
            if len as usize > data.len() {
                break; // the rest of this option never comes
            }
        }
    }
    let _ = s.write_all(&out);
    if rng.pct(50) {
        // Read what comes back for a moment (option replies), then go.
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut sink = [0u8; 4096];
        while let Ok(n) = s.read(&mut sink) {
            if n == 0 {
                break;
            }
        }
    }
    if rng.pct(50) {
        let _ = s.shutdown(Shutdown::Write);
    }
    Ok(())
}

/// A proper handshake: fixed newstyle, maybe structured replies and `base:allocation`, `GO`.
/// Returns whether replies are structured.
fn open(s: &mut TcpStream, plan: &Plan, structured: bool) -> Res<bool> {
    greeting(s)?;
    let flags = proto::FLAG_C_FIXED_NEWSTYLE | proto::FLAG_C_NO_ZEROES;
    s.write_all(&flags.to_be_bytes())
        .map_err(|e| e.to_string())?;
    let send = |s: &mut TcpStream, option: u32, data: &[u8]| -> Res<()> {
        s.write_all(&option_bytes(
            proto::IHAVEOPT,
            option,
            data.len() as u32,
            data,
        ))
        .map_err(|e| format!("option {option}: {e}"))?;
        loop {
            let h = read_exact(s, 20, "option reply")?;
            if be64(&h[0..8]) != proto::OPT_REPLY_MAGIC || be32(&h[8..12]) != option {
                return Err(format!("bad option reply {h:?}"));
            }
            let typ = be32(&h[12..16]);
            read_exact(s, be32(&h[16..20]) as usize, "option reply data")?;
            if typ == rep::ACK {
                return Ok(());
            }
            if typ & rep::ERR_BIT != 0 {
                return Err(format!("option {option} refused: {typ:#x}"));
            }
        }
    };
    let name = plan.name.as_bytes();
    if structured {
        send(s, opt::STRUCTURED_REPLY, &[])?;
        let mut b = (name.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(name);
        b.extend_from_slice(&1u32.to_be_bytes());
        b.extend_from_slice(&(proto::META_BASE_ALLOCATION.len() as u32).to_be_bytes());
        b.extend_from_slice(proto::META_BASE_ALLOCATION.as_bytes());
        send(s, opt::SET_META_CONTEXT, &b)?;
    }
    let mut b = (name.len() as u32).to_be_bytes().to_vec();
    b.extend_from_slice(name);
    b.extend_from_slice(&0u16.to_be_bytes());
    send(s, opt::GO, &b)?;
    Ok(structured)
}

/// The cookies a session has sent and not had the final reply to: cookie → READ length
/// (`None` for other commands).
type Outstanding = Arc<Mutex<HashMap<u64, Option<u32>>>>;

/// How long a reader waits for bytes the server owes before calling it a hang.
const HANG: Duration = Duration::from_secs(30);

/// Fills `buf` from `s` (whose read timeout is short): `Ok(true)` when filled, `Ok(false)` when
/// the connection ended (end of file, a reset, or `abort` set by the writer), an error when
/// the server sent nothing for [`HANG`].
fn fill(s: &mut TcpStream, buf: &mut [u8], abort: &AtomicBool) -> Res<bool> {
    let mut got = 0;
    let mut idle = Instant::now();
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                got += n;
                idle = Instant::now();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if abort.load(Ordering::Relaxed) {
                    return Ok(false);
                }
                if idle.elapsed() > HANG {
                    return Err(format!("no reply for {HANG:?}"));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Ok(false),
        }
    }
    Ok(true)
}

/// Reads and checks every reply until the connection ends.
fn reply_reader(
    mut s: TcpStream,
    structured: bool,
    outstanding: Outstanding,
    mut rng: Rng,
    counters: Arc<Counters>,
    abort: Arc<AtomicBool>,
) -> Res<()> {
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let read = |s: &mut TcpStream, n: usize| -> Res<Option<Vec<u8>>> {
        let mut b = vec![0u8; n];
        Ok(fill(s, &mut b, &abort)?.then_some(b))
    };
    loop {
        if rng.pct(2) {
            // Not reading replies for a while.
            std::thread::sleep(Duration::from_millis(rng.below(150)));
        }
        let Some(m) = read(&mut s, 4)? else {
            return Ok(());
        };
        match be32(&m) {
            proto::SIMPLE_REPLY_MAGIC => {
                let Some(h) = read(&mut s, 12)? else {
                    return Ok(());
                };
                let (error, cookie) = (be32(&h[0..4]), be64(&h[4..12]));
                let Some(len) = outstanding.lock().unwrap().remove(&cookie) else {
                    return Err(format!(
                        "simple reply for cookie {cookie:#x}, not in flight"
                    ));
                };
                if let (0, Some(len), false) = (error, len, structured) {
                    if read(&mut s, len as usize)?.is_none() {
                        return Ok(());
                    }
                }
            }
            proto::STRUCTURED_REPLY_MAGIC => {
                let Some(h) = read(&mut s, 16)? else {
                    return Ok(());
                };
                let (flags, cookie, len) = (be16(&h[0..2]), be64(&h[4..12]), be32(&h[12..16]));
                if len > proto::MAX_PAYLOAD + 64 {
                    return Err(format!("a chunk of {len} bytes"));
                }
                if !structured {
                    return Err("a structured chunk without structured replies".into());
                }
                if read(&mut s, len as usize)?.is_none() {
                    return Ok(());
                }
                let mut o = outstanding.lock().unwrap();
                if !o.contains_key(&cookie) {
                    return Err(format!("chunk for cookie {cookie:#x}, not in flight"));
                }
                if flags & proto::reply::FLAG_DONE != 0 {
                    o.remove(&cookie);
                }
            }
            other => return Err(format!("bad reply magic {other:#x}")),
        }
        counters.replies.fetch_add(1, Ordering::Relaxed);
    }
}

/// Makes the close of `s` a reset (`SO_LINGER` of 0): the server sees the client vanish
/// mid-request, whatever was in flight either way.
fn reset_on_close(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a pointer to a live `linger` and its size.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
}

struct Session {
    s: TcpStream,
    outstanding: Outstanding,
    next_cookie: u64,
    structured: bool,
}

impl Session {
    fn cookie(&mut self, rng: &mut Rng) -> u64 {
        self.next_cookie += 1;
        // Spread over the whole range, unique within the session.
        (rng.next() & !0xffff_ffff) | self.next_cookie
    }

    fn send(&mut self, req: Request, payload: &[u8], tracked: bool) -> bool {
        if tracked {
            let len = (req.typ == cmd::READ).then_some(req.length);
            self.outstanding.lock().unwrap().insert(req.cookie, len);
        }
        let mut b = req.encode().to_vec();
        b.extend_from_slice(payload);
        self.s.write_all(&b).is_ok()
    }
}

/// A request in the fuzzers' region `[checker_len, size)`, valid or not.
fn request(plan: &Plan, rng: &mut Rng, sess: &mut Session) -> (Request, Vec<u8>) {
    let cookie = sess.cookie(rng);
    let fuzz_len = plan.size - plan.checker_len;
    let mut length = match rng.below(10) {
        0 => 0,
        1..=6 => 1 + rng.below(64 * 1024) as u32,
        _ => 1 + rng.below(512 * 1024) as u32,
    }
    .min(fuzz_len as u32);
    let mut offset = plan.checker_len + rng.below(fuzz_len - u64::from(length) + 1);
    let mut typ = match rng.below(8) {
        0 | 1 => cmd::READ,
        2 | 3 => cmd::WRITE,
        4 => cmd::FLUSH,
        5 => cmd::TRIM,
        6 => cmd::WRITE_ZEROES,
        _ => {
            if rng.pct(50) {
                cmd::CACHE
            } else {
                cmd::BLOCK_STATUS
            }
        }
    };
    let mut flags = match typ {
        cmd::WRITE_ZEROES => {
            rng.below(32) as u16 & (cflag::FUA | cflag::NO_HOLE | cflag::FAST_ZERO)
        }
        cmd::BLOCK_STATUS => rng.below(16) as u16 & (cflag::FUA | cflag::REQ_ONE),
        cmd::READ if sess.structured => rng.below(8) as u16 & (cflag::FUA | cflag::DF),
        _ => rng.below(2) as u16 & cflag::FUA,
    };
    let payload_len = if typ == cmd::WRITE { length } else { 0 };
    if rng.pct(25) {
        // Something invalid.
        match rng.below(6) {
            0 => flags = rng.next() as u16,
            1 => typ = 8 + rng.below(0xfff8) as u16,
            2 => offset = plan.size + rng.below(1 << 30),
            3 => offset = u64::MAX - rng.below(1 << 20),
            4 if typ == cmd::READ => length = proto::MAX_PAYLOAD + 1 + rng.below(1 << 30) as u32,
            _ => {
                if typ == cmd::BLOCK_STATUS || typ == cmd::READ {
                    length = 0;
                }
            }
        }
    }
    // A WRITE with a payload of the stated length, whatever else is wrong with it.
    let payload = if typ == cmd::WRITE {
        rng.bytes(payload_len as usize)
    } else {
        Vec::new()
    };
    let req = Request {
        flags,
        typ,
        cookie,
        offset,
        length,
    };
    (req, payload)
}

/// One transmission session.
fn transmission(
    addr: SocketAddr,
    plan: &Plan,
    rng: &mut Rng,
    counters: &Arc<Counters>,
    deadline: Instant,
) -> Res<()> {
    let mut s = connect(addr)?;
    let structured = open(&mut s, plan, rng.pct(60))?;
    let outstanding: Outstanding = Arc::default();
    let abort = Arc::new(AtomicBool::new(false));
    let reader = {
        let (s, o, r, c, a) = (
            s.try_clone().unwrap(),
            outstanding.clone(),
            rng.fork(7),
            counters.clone(),
            abort.clone(),
        );
        std::thread::spawn(move || {
            let r = reply_reader(s.try_clone().unwrap(), structured, o, r, c, a);
            if r.is_err() {
                // Unblock the writer too: the session is over.
                let _ = s.shutdown(Shutdown::Both);
            }
            r
        })
    };
    let mut sess = Session {
        s,
        outstanding,
        next_cookie: 0,
        structured,
    };
    let n = 1 + rng.below(300);
    let mut ok = true;
    let mut graceful = false;
    for _ in 0..n {
        if Instant::now() >= deadline {
            break;
        }
        let burst = if rng.pct(10) { 8 + rng.below(40) } else { 1 };
        for _ in 0..burst {
            let (req, payload) = request(plan, rng, &mut sess);
            counters.requests.fetch_add(1, Ordering::Relaxed);
            if !sess.send(req, &payload, true) {
                ok = false;
                break;
            }
        }
        if !ok {
            break;
        }
    }
    // How the session ends.
    if ok {
        let cookie = sess.cookie(rng);
        let header = |typ: u16, length: u32| Request {
            flags: 0,
            typ,
            cookie,
            offset: plan.checker_len,
            length,
        };
        match rng.below(7) {
            0 | 1 => {
                sess.send(header(cmd::DISC, 0), &[], false);
                graceful = true;
            }
            2 => {
                // A truncated header.
                let h = header(cmd::READ, 512).encode();
                let n = 1 + rng.below(27) as usize;
                let _ = sess.s.write_all(&h[..n]);
            }
            3 => {
                // A write whose payload never all comes.
                let len = 4096 + rng.below(1 << 20) as u32;
                let mut b = header(cmd::WRITE, len).encode().to_vec();
                let sent = rng.below(u64::from(len)) as usize;
                b.extend(rng.bytes(sent));
                let _ = sess.s.write_all(&b);
            }
            4 => {
                // Bad magic: the server drops the connection.
                let mut h = header(cmd::READ, 512).encode();
                h[0] ^= 0x40;
                let _ = sess.s.write_all(&h);
                graceful = true;
            }
            5 => {
                // A write too large to read: answered EINVAL, then the server disconnects.
                let h = header(cmd::WRITE, proto::MAX_PAYLOAD + 1).encode();
                sess.outstanding.lock().unwrap().insert(cookie, None);
                let _ = sess.s.write_all(&h);
                graceful = true;
            }
            _ => {} // just close
        }
    }
    if graceful {
        // Let the server answer what is in flight and close; the reader reads to the end.
        let _ = sess.s.shutdown(Shutdown::Write);
    } else {
        // Vanish: stop reading and reset the connection. (Not a shutdown: after SHUT_RD the
        // kernel stops opening the receive window, and a server with replies to send would
        // wait on a peer that is gone until TCP gives up on it, a minute or more later.)
        reset_on_close(&sess.s);
        abort.store(true, Ordering::Relaxed);
    }
    let r = match reader.join() {
        Ok(r) => r,
        Err(_) => Err("the reply reader panicked".into()),
    };
    drop(sess);
    r
}

/// The checker's synchronous connection.
struct Checker {
    s: TcpStream,
    cookie: u64,
}

impl Checker {
    fn request(
        &mut self,
        typ: u16,
        flags: u16,
        offset: u64,
        length: u32,
        payload: &[u8],
    ) -> Res<u64> {
        self.cookie += 1;
        let r = Request {
            flags,
            typ,
            cookie: self.cookie,
            offset,
            length,
        };
        let mut b = r.encode().to_vec();
        b.extend_from_slice(payload);
        self.s.write_all(&b).map_err(|e| format!("sending: {e}"))?;
        Ok(self.cookie)
    }

    /// Reads one structured reply to `cookie` (which must be next): the data of a READ, or
    /// nothing; an error reply is a failure.
    fn reply(&mut self, want_cookie: u64, read_at: Option<(u64, u32)>) -> Res<Vec<u8>> {
        let mut data = vec![0xEEu8; read_at.map_or(0, |(_, l)| l as usize)];
        let mut covered = 0usize;
        loop {
            let m = read_exact(&mut self.s, 4, "checker reply")?;
            if be32(&m) == proto::SIMPLE_REPLY_MAGIC && read_at.is_none() {
                // Structured replies are for reads (and block status); other commands may
                // get a simple reply still.
                let h = read_exact(&mut self.s, 12, "checker simple reply")?;
                let (error, cookie) = (be32(&h[0..4]), be64(&h[4..12]));
                if cookie != want_cookie || error != 0 {
                    return Err(format!("checker: simple reply {error} {cookie:#x}"));
                }
                return Ok(data);
            }
            if be32(&m) != proto::STRUCTURED_REPLY_MAGIC {
                return Err(format!("checker: bad reply magic {m:?}"));
            }
            let h = read_exact(&mut self.s, 16, "checker reply")?;
            let (flags, typ, cookie, len) = (
                be16(&h[0..2]),
                be16(&h[2..4]),
                be64(&h[4..12]),
                be32(&h[12..16]),
            );
            if cookie != want_cookie {
                return Err(format!(
                    "checker: cookie {cookie:#x}, expected {want_cookie:#x}"
                ));
            }
            let p = read_exact(&mut self.s, len as usize, "checker chunk")?;
            match typ {
                proto::reply::TYPE_NONE => {}
                proto::reply::TYPE_OFFSET_DATA => {
                    let (off, _) = read_at.ok_or("data for a non-read")?;
                    let at = (be64(&p[0..8]) - off) as usize;
                    data[at..at + p.len() - 8].copy_from_slice(&p[8..]);
                    covered += p.len() - 8;
                }
                proto::reply::TYPE_OFFSET_HOLE => {
                    let (off, _) = read_at.ok_or("a hole for a non-read")?;
                    let at = (be64(&p[0..8]) - off) as usize;
                    let n = be32(&p[8..12]) as usize;
                    data[at..at + n].fill(0);
                    covered += n;
                }
                t if t & 0x8000 != 0 => {
                    return Err(format!("checker: error {} from the server", be32(&p[0..4])));
                }
                t => return Err(format!("checker: chunk type {t}")),
            }
            if flags & proto::reply::FLAG_DONE != 0 {
                break;
            }
        }
        if covered != data.len() {
            return Err(format!(
                "checker: a read reply covered {covered} of {}",
                data.len()
            ));
        }
        Ok(data)
    }
}

/// The checker: writes patterns to its region and verifies every read against its model.
fn checker(
    addr: SocketAddr,
    plan: &Plan,
    mut rng: Rng,
    counters: &Counters,
    deadline: Instant,
    failures: &Failures,
) -> Res<()> {
    let mut s = connect(addr)?;
    open(&mut s, plan, true)?;
    let mut c = Checker { s, cookie: 0 };
    let region = plan.checker_len as usize;
    // What the region holds: the export starts all zero.
    let mut model = vec![0u8; region];
    let verify = |c: &mut Checker, model: &[u8], off: usize, len: usize| -> Res<()> {
        let cookie = c.request(cmd::READ, 0, off as u64, len as u32, &[])?;
        let got = c.reply(cookie, Some((off as u64, len as u32)))?;
        if got != model[off..off + len] {
            let at = got
                .iter()
                .zip(&model[off..])
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            return Err(format!(
                "checker: read [{off}, +{len}) differs at byte {} (got {:#x}, want {:#x})",
                off + at,
                got[at],
                model[off + at]
            ));
        }
        counters.checker_reads.fetch_add(1, Ordering::Relaxed);
        counters
            .checker_bytes
            .fetch_add(len as u64, Ordering::Relaxed);
        Ok(())
    };
    while Instant::now() < deadline && !failures.any() {
        let op = rng.below(10);
        match op {
            0..=3 => {
                let len = 1 + rng.below(128 * 1024) as usize;
                let off = rng.below((region - len) as u64 + 1) as usize;
                let data = rng.bytes(len);
                let flags = if rng.pct(20) { cflag::FUA } else { 0 };
                let cookie = c.request(cmd::WRITE, flags, off as u64, len as u32, &data)?;
                c.reply(cookie, None)?;
                model[off..off + len].copy_from_slice(&data);
                counters.checker_writes.fetch_add(1, Ordering::Relaxed);
            }
            4 => {
                // Pipelined writes to disjoint 64 KiB slots, then their replies in any order.
                let slots = region / (64 * 1024);
                let mut cookies = HashMap::new();
                for k in 0..8usize {
                    let slot = (rng.below(slots as u64 / 8) as usize) * 8 + k;
                    let off = slot * 64 * 1024;
                    let data = rng.bytes(64 * 1024);
                    let cookie = c.request(cmd::WRITE, 0, off as u64, 64 * 1024, &data)?;
                    model[off..off + data.len()].copy_from_slice(&data);
                    cookies.insert(cookie, ());
                }
                for _ in 0..8 {
                    let m = read_exact(&mut c.s, 4, "checker burst reply")?;
                    let (error, cookie) = if be32(&m) == proto::SIMPLE_REPLY_MAGIC {
                        let h = read_exact(&mut c.s, 12, "checker burst reply")?;
                        (be32(&h[0..4]), be64(&h[4..12]))
                    } else {
                        let h = read_exact(&mut c.s, 16, "checker burst reply")?;
                        let (typ, cookie, len) =
                            (be16(&h[2..4]), be64(&h[4..12]), be32(&h[12..16]));
                        read_exact(&mut c.s, len as usize, "checker burst chunk")?;
                        (u32::from(typ != proto::reply::TYPE_NONE), cookie)
                    };
                    if error != 0 || cookies.remove(&cookie).is_none() {
                        return Err(format!("checker: burst reply {error} {cookie:#x}"));
                    }
                }
                counters.checker_writes.fetch_add(8, Ordering::Relaxed);
            }
            5 => {
                let len = 1 + rng.below(256 * 1024) as usize;
                let off = rng.below((region - len) as u64 + 1) as usize;
                let flags = if rng.pct(50) { cflag::NO_HOLE } else { 0 };
                let cookie = c.request(cmd::WRITE_ZEROES, flags, off as u64, len as u32, &[])?;
                c.reply(cookie, None)?;
                model[off..off + len].fill(0);
                counters.checker_writes.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                let len = 1 + rng.below(256 * 1024) as usize;
                let off = rng.below((region - len) as u64 + 1) as usize;
                verify(&mut c, &model, off, len)?;
            }
        }
    }
    // All of it, at the end.
    for off in (0..region).step_by(1 << 20) {
        verify(&mut c, &model, off, (1 << 20).min(region - off))?;
    }
    let _ = c.request(cmd::DISC, 0, 0, 0, &[]);
    Ok(())
}
