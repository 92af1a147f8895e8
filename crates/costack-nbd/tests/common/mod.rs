//! A small blocking NBD client of our own, and helpers to run a server in-process.
//!
//! The client speaks the protocol byte by byte, so tests can also send what a well-behaved
//! client never would.

#![allow(dead_code)]

use costack_nbd::proto::{self, be16, be32, be64, cmd, info, opt, rep, Request};
use costack_nbd::{serve, Config, Export, ServerHandle, WritePath};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The `costack-nbd` binary in a process of its own, killed when dropped (if still running).
pub struct BinServer {
    pub child: Child,
    /// Where it listens, from its start line.
    pub addr: SocketAddr,
}

impl BinServer {
    /// Starts `cmd` (the binary and its arguments, `-p 0` among them) with stdin and stdout on
    /// `/dev/null` and stderr piped; reads the address from its first line (the start line,
    /// "serving ... on ADDR with N thread(s)"). Returns the server and the rest of its stderr.
    pub fn spawn(cmd: &mut Command) -> (BinServer, BufReader<ChildStderr>) {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        let addr = line
            .split_whitespace()
            .find_map(|w| w.parse::<SocketAddr>().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        (BinServer { child, addr }, err)
    }

    /// [`spawn`](BinServer::spawn), its stderr drained on a thread so that the server never
    /// blocks writing its log.
    pub fn start(cmd: &mut Command) -> BinServer {
        let (srv, err) = BinServer::spawn(cmd);
        std::thread::spawn(move || for _ in err.lines() {});
        srv
    }
}

impl Drop for BinServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server on a free loopback port, stopped when dropped.
pub struct TestServer {
    pub handle: Option<ServerHandle>,
    pub addr: SocketAddr,
}

impl TestServer {
    pub fn start(export: Export, cfg: Config) -> TestServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let handle = serve(Arc::new(export), listener, cfg).unwrap();
        let addr = handle.local_addr();
        TestServer {
            handle: Some(handle),
            addr,
        }
    }

    pub fn memory(size: u64) -> TestServer {
        TestServer::start(
            Export::memory("test", size, false).unwrap(),
            Config::default(),
        )
    }

    pub fn memory_ro(size: u64) -> TestServer {
        TestServer::start(
            Export::memory("test", size, true).unwrap(),
            Config::default(),
        )
    }

    pub fn file(path: &Path, threads: usize) -> TestServer {
        TestServer::start(
            Export::file("test", path, false, WritePath::Inline).unwrap(),
            Config {
                threads,
                ..Config::default()
            },
        )
    }

    pub fn uri(&self) -> String {
        format!("nbd://{}/test", self.addr)
    }

    pub fn shutdown(mut self) {
        self.handle.take().unwrap().shutdown().unwrap();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = h.shutdown();
        }
    }
}

/// A temporary file, removed when dropped.
pub struct TempFile(pub PathBuf);

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl TempFile {
    pub fn new(tag: &str) -> TempFile {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("costack-nbd-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        TempFile(p)
    }

    /// A new file of `size` bytes filled with `pattern(i)`.
    pub fn with_data(tag: &str, data: &[u8]) -> TempFile {
        let t = TempFile::new(tag);
        std::fs::write(&t.0, data).unwrap();
        t
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A reply from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A simple reply, with the read data if it answered a successful READ.
    Simple {
        error: u32,
        cookie: u64,
        data: Vec<u8>,
    },
    /// One structured chunk.
    Chunk {
        flags: u16,
        typ: u16,
        cookie: u64,
        payload: Vec<u8>,
    },
}

impl Reply {
    pub fn cookie(&self) -> u64 {
        match self {
            Reply::Simple { cookie, .. } | Reply::Chunk { cookie, .. } => *cookie,
        }
    }

    /// The error value: a simple reply's, or an error chunk's.
    pub fn error(&self) -> u32 {
        match self {
            Reply::Simple { error, .. } => *error,
            Reply::Chunk { typ, payload, .. } if typ & 0x8000 != 0 => be32(&payload[0..4]),
            Reply::Chunk { .. } => 0,
        }
    }

    pub fn is_done(&self) -> bool {
        match self {
            Reply::Simple { .. } => true,
            Reply::Chunk { flags, .. } => flags & proto::reply::FLAG_DONE != 0,
        }
    }
}

/// An option reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptReply {
    pub option: u32,
    pub typ: u32,
    pub data: Vec<u8>,
}

/// What `INFO`/`GO` returned.
#[derive(Debug, Default)]
pub struct ExportInfo {
    pub size: u64,
    pub flags: u16,
    pub block_size: Option<(u32, u32, u32)>,
    pub name: Option<String>,
    pub description: Option<String>,
}

pub struct Client {
    pub s: TcpStream,
    pub structured: bool,
    /// Lengths of READs in flight, to parse simple replies.
    reads: HashMap<u64, u32>,
    next_cookie: u64,
}

impl Client {
    /// Connects and reads the greeting; does not send the client flags.
    pub fn greet(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.set_nodelay(true).unwrap();
        let mut c = Client {
            s,
            structured: false,
            reads: HashMap::new(),
            next_cookie: 1,
        };
        let mut g = [0u8; 18];
        c.s.read_exact(&mut g).unwrap();
        assert_eq!(be64(&g[0..8]), proto::NBDMAGIC);
        assert_eq!(be64(&g[8..16]), proto::IHAVEOPT);
        assert_eq!(
            be16(&g[16..18]),
            proto::FLAG_FIXED_NEWSTYLE | proto::FLAG_NO_ZEROES
        );
        c
    }

    /// A client on a connection whose greeting was read and whose flags were sent.
    pub fn from_stream(s: TcpStream) -> Client {
        Client {
            s,
            structured: false,
            reads: HashMap::new(),
            next_cookie: 1,
        }
    }

    /// Connects with fixed newstyle and NO_ZEROES, ready for options.
    pub fn connect(addr: SocketAddr) -> Client {
        let mut c = Client::greet(addr);
        c.send_flags(proto::FLAG_C_FIXED_NEWSTYLE | proto::FLAG_C_NO_ZEROES);
        c
    }

    /// Connects, negotiates structured replies (if asked) and `base:allocation`, and `GO`es.
    pub fn open(addr: SocketAddr, structured: bool) -> (Client, ExportInfo) {
        let mut c = Client::connect(addr);
        if structured {
            assert_eq!(c.option(opt::STRUCTURED_REPLY, &[]).typ, rep::ACK);
            c.structured = true;
            let r = c.meta(opt::SET_META_CONTEXT, "test", &["base:allocation"]);
            assert_eq!(r.last().unwrap().typ, rep::ACK);
        }
        let (replies, info) = c.info(opt::GO, "test", &[info::BLOCK_SIZE]);
        assert_eq!(
            replies.last().unwrap().typ,
            rep::ACK,
            "GO failed: {replies:?}"
        );
        (c, info)
    }

    pub fn send_flags(&mut self, flags: u32) {
        self.s.write_all(&flags.to_be_bytes()).unwrap();
    }

    pub fn send_option(&mut self, option: u32, data: &[u8]) {
        let mut b = proto::IHAVEOPT.to_be_bytes().to_vec();
        b.extend_from_slice(&option.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        self.s.write_all(&b).unwrap();
    }

    pub fn read_opt_reply(&mut self) -> OptReply {
        let mut h = [0u8; 20];
        self.s.read_exact(&mut h).unwrap();
        assert_eq!(be64(&h[0..8]), proto::OPT_REPLY_MAGIC);
        let len = be32(&h[16..20]) as usize;
        let mut data = vec![0u8; len];
        self.s.read_exact(&mut data).unwrap();
        OptReply {
            option: be32(&h[8..12]),
            typ: be32(&h[12..16]),
            data,
        }
    }

    /// Sends an option and reads replies up to the final one (ACK or an error).
    pub fn option_all(&mut self, option: u32, data: &[u8]) -> Vec<OptReply> {
        self.send_option(option, data);
        let mut out = Vec::new();
        loop {
            let r = self.read_opt_reply();
            assert_eq!(r.option, option);
            let last = r.typ == rep::ACK || r.typ & rep::ERR_BIT != 0;
            out.push(r);
            if last {
                return out;
            }
        }
    }

    /// Sends an option that has a single reply.
    pub fn option(&mut self, option: u32, data: &[u8]) -> OptReply {
        let mut r = self.option_all(option, data);
        assert_eq!(r.len(), 1, "{r:?}");
        r.pop().unwrap()
    }

    pub fn info(&mut self, option: u32, name: &str, reqs: &[u16]) -> (Vec<OptReply>, ExportInfo) {
        let replies = self.option_all(option, &info_body(name, reqs));
        let mut i = ExportInfo::default();
        for r in &replies {
            if r.typ != rep::INFO {
                continue;
            }
            match be16(&r.data[0..2]) {
                info::EXPORT => {
                    assert_eq!(r.data.len(), 12);
                    i.size = be64(&r.data[2..10]);
                    i.flags = be16(&r.data[10..12]);
                }
                info::BLOCK_SIZE => {
                    assert_eq!(r.data.len(), 14);
                    i.block_size = Some((
                        be32(&r.data[2..6]),
                        be32(&r.data[6..10]),
                        be32(&r.data[10..14]),
                    ))
                }
                info::NAME => i.name = Some(String::from_utf8(r.data[2..].to_vec()).unwrap()),
                info::DESCRIPTION => {
                    i.description = Some(String::from_utf8(r.data[2..].to_vec()).unwrap())
                }
                other => panic!("unexpected info {other}"),
            }
        }
        (replies, i)
    }

    pub fn meta(&mut self, option: u32, name: &str, queries: &[&str]) -> Vec<OptReply> {
        self.option_all(option, &meta_body(name, queries))
    }

    pub fn cookie(&mut self) -> u64 {
        self.next_cookie += 1;
        self.next_cookie
    }

    /// Sends a request (and a payload), without waiting.
    pub fn send(
        &mut self,
        typ: u16,
        flags: u16,
        cookie: u64,
        offset: u64,
        length: u32,
        payload: &[u8],
    ) {
        let r = Request {
            flags,
            typ,
            cookie,
            offset,
            length,
        };
        let mut b = r.encode().to_vec();
        b.extend_from_slice(payload);
        self.s.write_all(&b).unwrap();
        if typ == cmd::READ {
            self.reads.insert(cookie, length);
        }
    }

    /// Reads one reply (a simple reply, or one structured chunk).
    pub fn read_reply(&mut self) -> std::io::Result<Reply> {
        let mut m = [0u8; 4];
        self.s.read_exact(&mut m)?;
        match be32(&m) {
            proto::SIMPLE_REPLY_MAGIC => {
                let mut h = [0u8; 12];
                self.s.read_exact(&mut h)?;
                let error = be32(&h[0..4]);
                let cookie = be64(&h[4..12]);
                let mut data = Vec::new();
                if let Some(len) = self.reads.remove(&cookie) {
                    if error == 0 && !self.structured {
                        data = vec![0u8; len as usize];
                        self.s.read_exact(&mut data)?;
                    }
                }
                Ok(Reply::Simple {
                    error,
                    cookie,
                    data,
                })
            }
            proto::STRUCTURED_REPLY_MAGIC => {
                let mut h = [0u8; 16];
                self.s.read_exact(&mut h)?;
                let len = be32(&h[12..16]) as usize;
                let mut payload = vec![0u8; len];
                self.s.read_exact(&mut payload)?;
                let r = Reply::Chunk {
                    flags: be16(&h[0..2]),
                    typ: be16(&h[2..4]),
                    cookie: be64(&h[4..12]),
                    payload,
                };
                if r.is_done() {
                    self.reads.remove(&r.cookie());
                }
                Ok(r)
            }
            other => panic!("bad reply magic {other:#x}"),
        }
    }

    /// Reads every chunk of one reply (one simple reply, or chunks up to DONE).
    pub fn read_full_reply(&mut self) -> Vec<Reply> {
        let mut v = Vec::new();
        loop {
            let r = self.read_reply().unwrap();
            let done = r.is_done();
            v.push(r);
            if done {
                return v;
            }
        }
    }

    /// A request and its whole reply; returns (error, data) where data is the read data or
    /// the raw chunks' payloads for other commands.
    pub fn call(
        &mut self,
        typ: u16,
        flags: u16,
        offset: u64,
        length: u32,
        payload: &[u8],
    ) -> (u32, Vec<Reply>) {
        let c = self.cookie();
        self.send(typ, flags, c, offset, length, payload);
        let replies = self.read_full_reply();
        for r in &replies {
            assert_eq!(r.cookie(), c);
        }
        let err = replies
            .iter()
            .map(Reply::error)
            .find(|&e| e != 0)
            .unwrap_or(0);
        (err, replies)
    }

    pub fn read(&mut self, offset: u64, length: u32) -> Result<Vec<u8>, u32> {
        let (err, replies) = self.call(cmd::READ, 0, offset, length, &[]);
        if err != 0 {
            return Err(err);
        }
        Ok(read_data(offset, length, &replies))
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) -> u32 {
        self.call(cmd::WRITE, 0, offset, data.len() as u32, data).0
    }

    pub fn write_fua(&mut self, offset: u64, data: &[u8]) -> u32 {
        self.call(
            cmd::WRITE,
            proto::cflag::FUA,
            offset,
            data.len() as u32,
            data,
        )
        .0
    }

    pub fn simple(&mut self, typ: u16, flags: u16, offset: u64, length: u32) -> u32 {
        self.call(typ, flags, offset, length, &[]).0
    }

    /// The extents of a BLOCK_STATUS reply: (context id, [(length, flags)]).
    pub fn block_status(
        &mut self,
        flags: u16,
        offset: u64,
        length: u32,
    ) -> Result<(u32, Vec<(u32, u32)>), u32> {
        let (err, replies) = self.call(cmd::BLOCK_STATUS, flags, offset, length, &[]);
        if err != 0 {
            return Err(err);
        }
        assert_eq!(replies.len(), 1);
        let Reply::Chunk { typ, payload, .. } = &replies[0] else {
            panic!("block status must be structured")
        };
        assert_eq!(*typ, proto::reply::TYPE_BLOCK_STATUS);
        assert_eq!((payload.len() - 4) % 8, 0);
        let id = be32(&payload[0..4]);
        let ext = payload[4..]
            .chunks(8)
            .map(|e| (be32(&e[0..4]), be32(&e[4..8])))
            .collect();
        Ok((id, ext))
    }

    pub fn disconnect(mut self) {
        self.send(cmd::DISC, 0, 0, 0, 0, &[]);
        let mut b = [0u8; 1];
        assert_eq!(
            self.s.read(&mut b).unwrap(),
            0,
            "the server closes after DISC"
        );
    }

    /// Whether the server has closed the connection (reads end of file or a reset).
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.s.read(&mut b), Ok(0) | Err(_))
    }
}

/// Reassembles the data of a READ's reply (simple or structured).
pub fn read_data(offset: u64, length: u32, replies: &[Reply]) -> Vec<u8> {
    let mut out = vec![0xEEu8; length as usize];
    let mut covered = 0usize;
    for r in replies {
        match r {
            Reply::Simple { data, .. } => {
                out.copy_from_slice(data);
                covered = data.len();
            }
            Reply::Chunk { typ, payload, .. } => match *typ {
                proto::reply::TYPE_OFFSET_DATA => {
                    let at = (be64(&payload[0..8]) - offset) as usize;
                    let d = &payload[8..];
                    out[at..at + d.len()].copy_from_slice(d);
                    covered += d.len();
                }
                proto::reply::TYPE_OFFSET_HOLE => {
                    let at = (be64(&payload[0..8]) - offset) as usize;
                    let n = be32(&payload[8..12]) as usize;
                    out[at..at + n].fill(0);
                    covered += n;
                }
                proto::reply::TYPE_NONE => {}
                t => panic!("unexpected chunk type {t}"),
            },
        }
    }
    assert_eq!(covered, length as usize, "the reply covers the whole read");
    out
}

pub fn info_body(name: &str, reqs: &[u16]) -> Vec<u8> {
    let mut b = (name.len() as u32).to_be_bytes().to_vec();
    b.extend_from_slice(name.as_bytes());
    b.extend_from_slice(&(reqs.len() as u16).to_be_bytes());
    for r in reqs {
        b.extend_from_slice(&r.to_be_bytes());
    }
    b
}

pub fn meta_body(name: &str, queries: &[&str]) -> Vec<u8> {
    let mut b = (name.len() as u32).to_be_bytes().to_vec();
    b.extend_from_slice(name.as_bytes());
    b.extend_from_slice(&(queries.len() as u32).to_be_bytes());
    for q in queries {
        b.extend_from_slice(&(q.len() as u32).to_be_bytes());
        b.extend_from_slice(q.as_bytes());
    }
    b
}

/// Deterministic test data.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8 ^ seed)
        .collect()
}

/// Skipping a test whose prerequisite is missing, or failing it in CI: costack's own helper.
#[path = "../../../costack/tests/common/require.rs"]
mod require;
#[allow(unused_imports)] // not every test binary skips
pub use require::skip_or_fail;

/// Whether `tool` is installed (it runs with `--version`).
pub fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Skips the test (returns from it) unless every tool is installed; fails it instead with
/// `COSTACK_REQUIRE_ALL_TESTS=1`. (The test file declares `#[macro_use] mod common;`.)
#[allow(unused_macros)]
macro_rules! require {
    ($($tool:expr),+) => {
        for t in [$($tool),+] {
            if !have(t) {
                skip_or_fail(&format!(
                    "`{t}` is not installed (Debian: qemu-utils / libnbd-bin)"
                ));
                return;
            }
        }
    };
}

/// Kills the child when dropped, so a failing test leaves no process behind.
pub struct Reap(pub Option<Child>);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs a tool (a real client) with a 60 s limit and returns its output, whatever its status.
pub fn run_unchecked(tool: &str, args: &[&str]) -> Output {
    let child = Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
    let mut reap = Reap(Some(child));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let c = reap.0.as_mut().unwrap();
        if c.try_wait().unwrap().is_some() {
            return reap.0.take().unwrap().wait_with_output().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "{tool} {args:?} did not finish in 60 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// [`run_unchecked`], panicking with the tool's output if it failed.
pub fn run(tool: &str, args: &[&str]) -> Output {
    let out = run_unchecked(tool, args);
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
