//! The transport: the byte stream a connection is read and written through, and the listener
//! connections come from.
//!
//! * [`Stream`]: one accepted connection, TCP or Unix-domain, with TLS switched on in place
//!   when the client asks for it (`NBD_OPT_STARTTLS`). `&Stream` is [`Read`] + [`Write`], so
//!   the handshake and the transmission phase are written once for all of them.
//! * [`Listener`]: a TCP socket, a Unix socket at a path, or a listening socket inherited
//!   through systemd socket activation ([`Listener::from_systemd`]).
//! * [`TlsMode`] and [`TlsCredentials`]: whether TLS is off, offered or required, and the
//!   X.509 certificate, key and (optionally) client CA it is served with.
//!
//! May import: `costack`, `costack-aio`, `rustls` and `mio` (nothing of this crate). The
//! handshake and the server import it.
//!
//! # A TLS read and a TLS write
//!
//! A connection has at most one reader task (the handshake, then the connection's reader) and
//! one writer at a time (the outbox's writer lock), and they run interleaved on one loop. The
//! rustls state sits in a `RefCell` that is never borrowed across a yield: every wait for the
//! socket happens with the borrow dropped. Encrypted bytes go to the socket under the stream's
//! own write lock (a [`CoMutex`]), so records the reader has to send (alerts, answers to key
//! updates) never land in the middle of a reply's records.
//!
//! ```text
//!  read(buf)                                   write(bufs)
//!  ─────────                                   ───────────
//!  borrow: plaintext buffered? ──yes──► copy   lock the socket's write side (may yield)
//!     │ no                                      borrow: plaintext into rustls (≤ 64 KiB of
//!     ▼                                                 records at a time), records out
//!  borrow: ciphertext left in the inbox?                into a buffer; drop the borrow
//!     │ no                     │ yes            write the records to the socket (yields
//!     ▼                        ▼                while it is full); repeat until rustls has
//!  read the socket into     feed rustls,        nothing left to send; unlock
//!  the inbox (yields;       decrypt; anything
//!  no borrow held)          to send (alert,     the caller's bytes are "written" once their
//!     │                     key update)?        records are on the socket
//!     │ 0 bytes: EOF           │ yes: lock, send
//!     └────────► loop ◄────────┘
//!  close_notify, or EOF without it → Ok(0) (end of file); a TLS error → InvalidData
//! ```
//!
//! A plaintext stream (TLS not started) reads and writes the socket directly.

use costack::sync::CoMutex;
use costack_aio::net::{TcpStream, UnixStream};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use std::cell::{Cell, RefCell};
use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Ciphertext read from the socket in one go (a TLS record is at most ~16.6 KiB).
const INBOX_LEN: usize = 64 * 1024;

/// Whether a server speaks TLS, and with which credentials.
///
/// In the NBD spec's terms: [`Off`](TlsMode::Off) is NOTLS (`NBD_OPT_STARTTLS` gets
/// `NBD_REP_ERR_UNSUP`); [`On`](TlsMode::On) offers TLS and serves plaintext clients too;
/// [`Require`](TlsMode::Require) is FORCEDTLS: every option but `STARTTLS` and `ABORT` is
/// refused with `NBD_REP_ERR_TLS_REQD` until TLS is up, and `EXPORT_NAME` ends the session.
#[derive(Debug, Clone, Default)]
pub enum TlsMode {
    /// No TLS.
    #[default]
    Off,
    /// TLS offered; plaintext clients are served too.
    On(TlsCredentials),
    /// TLS required before anything else.
    Require(TlsCredentials),
}

impl TlsMode {
    /// The credentials, unless TLS is off.
    pub fn credentials(&self) -> Option<&TlsCredentials> {
        match self {
            TlsMode::Off => None,
            TlsMode::On(c) | TlsMode::Require(c) => Some(c),
        }
    }

    /// Whether every client must start TLS first.
    pub fn is_required(&self) -> bool {
        matches!(self, TlsMode::Require(_))
    }
}

/// A server's TLS setup: its certificate chain and key, and whether (and against which CA)
/// client certificates are checked. Cheap to clone.
///
/// ```
/// use costack_nbd::transport::{TlsCredentials, TlsMode};
/// use costack_nbd::Config;
///
/// // server-cert.pem and server-key.pem (and ca-cert.pem to check clients), as qemu-nbd and
/// // nbdkit read them; here a self-signed certificate made on the spot.
/// let dir = std::env::temp_dir().join(format!("costack-nbd-doc-tls-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let c = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
/// std::fs::write(dir.join("server-cert.pem"), c.cert.pem()).unwrap();
/// std::fs::write(dir.join("server-key.pem"), c.signing_key.serialize_pem()).unwrap();
///
/// let creds = TlsCredentials::from_dir(&dir, false).unwrap();
/// let cfg = Config { tls: TlsMode::Require(creds), ..Config::default() };
/// assert!(cfg.tls.is_required());
/// // Without ca-cert.pem, client certificates cannot be checked: a clear error.
/// let e = TlsCredentials::from_dir(&dir, true).unwrap_err();
/// assert!(e.to_string().contains("ca-cert.pem"));
/// std::fs::remove_dir_all(&dir).unwrap();
/// ```
#[derive(Clone)]
pub struct TlsCredentials {
    config: Arc<ServerConfig>,
    /// Whether client certificates are checked, for `Debug` (unknown for a configuration
    /// built elsewhere).
    verify_peer: Option<bool>,
}

impl fmt::Debug for TlsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsCredentials")
            .field("verify_peer", &self.verify_peer)
            .finish_non_exhaustive()
    }
}

fn bad(path: &Path, what: &str, e: impl fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {what}: {e}", path.display()),
    )
}

fn read_certs(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    // Read first, so that a missing or unreadable file gets the system's own message.
    let pem = std::fs::read(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(path, "not a PEM certificate file", e))?;
    if certs.is_empty() {
        return Err(bad(path, "no certificate", "no CERTIFICATE block found"));
    }
    Ok(certs)
}

impl TlsCredentials {
    /// Reads the layout qemu-nbd and nbdkit use: `server-cert.pem` (the chain, server first)
    /// and `server-key.pem` in `dir`; with `verify_peer`, clients must present a certificate
    /// signed by `dir/ca-cert.pem`.
    ///
    /// # Errors
    /// A file that is missing, unreadable or not valid PEM, a key that does not fit the
    /// certificate: the error names the file.
    pub fn from_dir(dir: &Path, verify_peer: bool) -> io::Result<TlsCredentials> {
        let ca = dir.join("ca-cert.pem");
        TlsCredentials::from_pem_files(
            &dir.join("server-cert.pem"),
            &dir.join("server-key.pem"),
            verify_peer.then_some(ca.as_path()),
        )
    }

    /// Reads a PEM certificate chain (server first) and its PEM private key (PKCS#8, PKCS#1
    /// or SEC1); with `client_ca`, clients must present a certificate signed by one of the
    /// CAs in that PEM file.
    ///
    /// # Errors
    /// As [`from_dir`](TlsCredentials::from_dir).
    pub fn from_pem_files(
        cert_chain: &Path,
        key: &Path,
        client_ca: Option<&Path>,
    ) -> io::Result<TlsCredentials> {
        let chain = read_certs(cert_chain)?;
        let key_pem = std::fs::read(key)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", key.display())))?;
        let key_der =
            PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| bad(key, "no private key", e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for c in read_certs(ca)? {
                    roots
                        .add(c)
                        .map_err(|e| bad(ca, "not a usable CA certificate", e))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| bad(ca, "cannot verify clients with it", e))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(chain, key_der)
            .map_err(|e| bad(key, "does not fit the certificate", e))?;
        Ok(TlsCredentials {
            config: Arc::new(config),
            verify_peer: Some(client_ca.is_some()),
        })
    }

    /// Uses a rustls configuration built elsewhere (its client verifier decides about
    /// client certificates).
    pub fn from_config(config: Arc<ServerConfig>) -> TlsCredentials {
        TlsCredentials {
            config,
            verify_peer: None,
        }
    }
}

enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Sock {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let r = match self {
                Sock::Tcp(s) => (&*s).read(buf),
                Sock::Unix(s) => (&*s).read(buf),
            };
            match r {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => return r,
            }
        }
    }

    fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => (&*s).write_vectored(bufs),
            Sock::Unix(s) => (&*s).write_vectored(bufs),
        }
    }

    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => (&*s).write(buf),
            Sock::Unix(s) => (&*s).write(buf),
        }
    }

    /// Writes as much of `buf` as the socket takes now, without waiting (nor `SIGPIPE`).
    fn send_now(&self, mut buf: &[u8]) -> io::Result<()> {
        let fd = match self {
            Sock::Tcp(s) => s.as_raw_fd(),
            Sock::Unix(s) => s.as_raw_fd(),
        };
        while !buf.is_empty() {
            // SAFETY: `fd` is this socket's, open while `self` lives; `buf` is valid for
            // reads of its length, and send(2) only reads it.
            let n = unsafe {
                libc::send(
                    fd,
                    buf.as_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            match usize::try_from(n) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(_) => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.write(buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The TLS half of a stream.
struct Tls {
    conn: ServerConnection,
    /// Ciphertext read from the socket that rustls has not taken yet: `inbox[taken..]`.
    inbox: Vec<u8>,
    taken: usize,
    /// The socket has reached end of file.
    eof: bool,
}

/// A socket (not yet wrapped for the loop) from [`Listener`]'s accept; `Send`, so it can be
/// handed to another loop's thread.
pub(crate) enum Accepted {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

/// One connection: TCP or Unix-domain, plaintext or TLS. See the [module docs](self).
///
/// `&Stream` is [`Read`] and [`Write`]; each call yields the running task while the socket is
/// not ready. It belongs to the loop (thread) that made it.
///
/// ```
/// use costack_nbd::transport::Stream;
/// use std::io::{Read, Write};
///
/// costack_aio::EventLoop::new().block_on(|| {
///     let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
///     let (a, b) = (Stream::unix(a).unwrap(), Stream::unix(b).unwrap());
///     (&a).write_all(b"hello").unwrap();
///     let mut buf = [0u8; 5];
///     (&b).read_exact(&mut buf).unwrap(); // yields until the bytes are there
///     assert_eq!(&buf, b"hello");
///     assert_eq!((a.peer(), a.is_tls()), ("unix", false));
/// });
/// ```
pub struct Stream {
    sock: Sock,
    peer: String,
    /// TLS state once `STARTTLS` has switched it on; never borrowed across a yield.
    tls: RefCell<Option<Box<Tls>>>,
    /// Set together with `tls` (read without a borrow on the plaintext path).
    tls_on: Cell<bool>,
    /// Encrypted records on their way to the socket (reused between writes).
    out: Cell<Vec<u8>>,
    /// The socket's write side while TLS is on: records leave whole and in order.
    wlock: CoMutex<()>,
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("peer", &self.peer)
            .field("tls", &self.tls_on.get())
            .finish()
    }
}

impl Stream {
    fn with_sock(sock: Sock, peer: String) -> Stream {
        Stream {
            sock,
            peer,
            tls: RefCell::new(None),
            tls_on: Cell::new(false),
            out: Cell::new(Vec::new()),
            wlock: CoMutex::new(()),
        }
    }

    /// Wraps a connected TCP stream (made non-blocking); call on the loop's thread.
    ///
    /// # Errors
    /// If it cannot be made non-blocking.
    pub fn tcp(s: std::net::TcpStream) -> io::Result<Stream> {
        let peer = s
            .peer_addr()
            .map_or_else(|_| "tcp".to_owned(), |a| a.to_string());
        Ok(Stream::with_sock(Sock::Tcp(TcpStream::from_std(s)?), peer))
    }

    /// Wraps a connected Unix-domain stream (made non-blocking); call on the loop's thread.
    ///
    /// # Errors
    /// If it cannot be made non-blocking.
    pub fn unix(s: std::os::unix::net::UnixStream) -> io::Result<Stream> {
        Ok(Stream::with_sock(
            Sock::Unix(UnixStream::from_std(s)?),
            "unix".to_owned(),
        ))
    }

    pub(crate) fn from_accepted(a: Accepted) -> io::Result<Stream> {
        match a {
            Accepted::Tcp(s) => Stream::tcp(s),
            Accepted::Unix(s) => Stream::unix(s),
        }
    }

    /// The peer, for logs: its address for TCP, `unix` for a Unix socket.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Whether TLS has been started on this stream.
    pub fn is_tls(&self) -> bool {
        self.tls_on.get()
    }

    /// Shuts down the socket's read half, write half or both (a reader or writer waiting on it
    /// wakes up). TLS sends no `close_notify` here.
    ///
    /// # Errors
    /// The system's.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match &self.sock {
            Sock::Tcp(s) => s.shutdown(how),
            Sock::Unix(s) => s.shutdown(how),
        }
    }

    /// Ends the connection (a hard disconnect in the spec's terms): with TLS on, sends
    /// `close_notify` first, as the spec asks ("SHOULD shutdown TLS first"), if the socket
    /// has room for it now; then shuts the socket down both ways, which also wakes a task
    /// waiting on it. It never waits: if another task is writing, or the socket is full (a
    /// client that does not read could keep either so for ever), `close_notify` is skipped
    /// or cut short. Errors are ignored: the connection is over either way.
    pub fn close(&self) {
        if self.tls_on.get() {
            if let Some(_w) = self.wlock.try_lock() {
                let mut records = Vec::new();
                if let Some(t) = self.tls.borrow_mut().as_mut() {
                    t.conn.send_close_notify();
                    while t.conn.wants_write() {
                        if t.conn.write_tls(&mut records).is_err() {
                            break;
                        }
                    }
                }
                let _ = self.sock.send_now(&records);
            }
        }
        let _ = self.shutdown(Shutdown::Both);
    }

    /// `TCP_NODELAY` on a TCP stream; nothing on a Unix one.
    ///
    /// # Errors
    /// The system's.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        match &self.sock {
            Sock::Tcp(s) => s.set_nodelay(on),
            Sock::Unix(_) => Ok(()),
        }
    }

    /// Switches TLS on (after `NBD_REP_ACK` to `STARTTLS`) and runs the TLS handshake to its
    /// end, yielding while the socket is not ready. From then on every read and write is
    /// encrypted.
    ///
    /// # Errors
    /// TLS is on already (`InvalidInput`); the handshake failed (`InvalidData`: a bad or
    /// missing client certificate, not TLS at all...) or the peer left (`UnexpectedEof`), or
    /// the socket's errors. The stream cannot be used afterwards.
    pub fn start_tls(&self, creds: &TlsCredentials) -> io::Result<()> {
        if self.tls_on.get() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "TLS is already on",
            ));
        }
        let conn = ServerConnection::new(creds.config.clone()).map_err(io::Error::other)?;
        *self.tls.borrow_mut() = Some(Box::new(Tls {
            conn,
            inbox: Vec::new(),
            taken: 0,
            eof: false,
        }));
        self.tls_on.set(true);
        loop {
            let (handshaking, wants_write) = {
                let g = self.tls.borrow();
                let t = g.as_ref().expect("TLS state");
                (t.conn.is_handshaking(), t.conn.wants_write())
            };
            if wants_write {
                self.flush_tls()?;
            } else if !handshaking {
                return Ok(());
            } else if !self.receive()? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client left during the TLS handshake",
                ));
            }
        }
    }

    /// Gives rustls more ciphertext: what is left of the inbox, else one read of the socket
    /// (yielding, no borrow held). Sends what rustls has to say after it (handshake messages,
    /// alerts, key updates). `Ok(false)` once the socket has ended and everything was fed.
    fn receive(&self) -> io::Result<bool> {
        let need_socket = {
            let mut g = self.tls.borrow_mut();
            let t = g.as_mut().expect("TLS state");
            if t.taken == t.inbox.len() && t.eof {
                return Ok(false);
            }
            if t.taken == t.inbox.len() {
                let mut buf = std::mem::take(&mut t.inbox);
                buf.resize(INBOX_LEN, 0);
                Some(buf)
            } else {
                None
            }
        };
        if let Some(mut buf) = need_socket {
            let r = self.sock.read(&mut buf);
            let mut g = self.tls.borrow_mut();
            let t = g.as_mut().expect("TLS state");
            t.taken = 0;
            match r {
                Ok(n) => {
                    buf.truncate(n);
                    t.eof = n == 0;
                    t.inbox = buf;
                }
                Err(e) => {
                    buf.clear();
                    t.inbox = buf;
                    return Err(e);
                }
            }
        }
        let (processed, wants_write) = {
            let mut g = self.tls.borrow_mut();
            let t = &mut **g.as_mut().expect("TLS state");
            let mut rest = &t.inbox[t.taken..];
            // With an empty rest at EOF this tells rustls the stream has ended.
            let n = t.conn.read_tls(&mut rest)?;
            t.taken += n;
            (
                t.conn.process_new_packets().map(|_| ()),
                t.conn.wants_write(),
            )
        };
        if wants_write {
            let sent = self.flush_tls();
            if processed.is_ok() {
                sent?;
            }
        }
        processed.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}")))?;
        Ok(true)
    }

    /// Sends every record rustls has queued, under the write lock.
    fn flush_tls(&self) -> io::Result<()> {
        let _w = self.wlock.lock();
        self.drain_locked()
    }

    /// Sends every queued record; the caller holds `wlock`.
    fn drain_locked(&self) -> io::Result<()> {
        let mut out = self.out.take();
        let r = loop {
            out.clear();
            let taken = {
                let mut g = self.tls.borrow_mut();
                let t = g.as_mut().expect("TLS state");
                let mut r = Ok(());
                while r.is_ok() && t.conn.wants_write() {
                    // Into a Vec: cannot fail, but say so if it does.
                    r = t.conn.write_tls(&mut out).map(|_| ());
                }
                r
            };
            if let Err(e) = taken {
                break Err(e);
            }
            if out.is_empty() {
                break Ok(());
            }
            if let Err(e) = self.sock.write_all(&out) {
                break Err(e);
            }
        };
        out.clear();
        self.out.set(out);
        r
    }

    fn tls_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            {
                let mut g = self.tls.borrow_mut();
                let t = g.as_mut().expect("TLS state");
                match t.conn.reader().read(buf) {
                    Ok(n) => return Ok(n), // 0: the peer's close_notify
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // The socket ended without close_notify: the NBD framing above sees any
                    // truncation, so this is an end of file like any other.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) => return Err(e),
                }
            }
            if !self.receive()? {
                return Ok(0);
            }
        }
    }

    fn tls_write(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let _w = self.wlock.lock();
        let n = {
            let mut g = self.tls.borrow_mut();
            let t = g.as_mut().expect("TLS state");
            t.conn.writer().write_vectored(bufs)?
        };
        self.drain_locked()?;
        Ok(n)
    }
}

/// What the handshake needs of a stream besides reading and writing: starting TLS.
pub(crate) trait StartTls {
    /// Whether TLS is on.
    fn is_tls(&self) -> bool;
    /// [`Stream::start_tls`].
    fn start_tls(&self, creds: &TlsCredentials) -> io::Result<()>;
}

impl StartTls for Stream {
    fn is_tls(&self) -> bool {
        Stream::is_tls(self)
    }

    fn start_tls(&self, creds: &TlsCredentials) -> io::Result<()> {
        Stream::start_tls(self, creds)
    }
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.tls_on.get() {
            self.tls_read(buf)
        } else {
            self.sock.read(buf)
        }
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.tls_on.get() {
            self.tls_write(&[IoSlice::new(buf)])
        } else {
            self.sock.write(buf)
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.tls_on.get() {
            self.tls_write(bufs)
        } else {
            self.sock.write_vectored(bufs)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where a [`Listener`] listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix socket: its path (empty if it has none, e.g. an inherited unnamed socket).
    Unix(PathBuf),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

enum ListenKind {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

/// A listening socket to [`serve`](crate::serve) on: TCP, a Unix socket at a path, or one
/// inherited through socket activation. A `std::net::TcpListener` converts into one.
///
/// ```
/// use costack_nbd::transport::{ListenAddr, Listener};
///
/// let path = std::env::temp_dir().join(format!("costack-nbd-doc-{}.sock", std::process::id()));
/// let l = Listener::unix(&path).unwrap();
/// assert_eq!(l.address().unwrap(), ListenAddr::Unix(path.clone()));
/// drop(l); // removes the socket file
/// assert!(!path.exists());
/// ```
pub struct Listener {
    kind: ListenKind,
    /// A Unix socket file this listener created, removed when it is dropped (if it is still
    /// the same file): its path, device and inode.
    owned_path: Option<(PathBuf, u64, u64)>,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("fd", &self.as_raw_fd())
            .field("address", &self.address().ok())
            .finish()
    }
}

impl From<std::net::TcpListener> for Listener {
    fn from(l: std::net::TcpListener) -> Listener {
        Listener {
            kind: ListenKind::Tcp(l),
            owned_path: None,
        }
    }
}

impl From<std::os::unix::net::UnixListener> for Listener {
    /// Listens on a Unix socket bound elsewhere (its file is left alone when dropped).
    fn from(l: std::os::unix::net::UnixListener) -> Listener {
        Listener {
            kind: ListenKind::Unix(l),
            owned_path: None,
        }
    }
}

impl Listener {
    /// Listens on TCP `addr`.
    ///
    /// # Errors
    /// The bind's.
    pub fn tcp(addr: SocketAddr) -> io::Result<Listener> {
        Ok(std::net::TcpListener::bind(addr)?.into())
    }

    /// Listens on a Unix socket at `path`, and removes the file when dropped (the server
    /// drops it when it stops). A socket file left at `path` by a server that is gone (nobody
    /// accepts on it) is replaced; anything else there is an error.
    ///
    /// # Errors
    /// `AddrInUse` if a server answers at `path`; `AlreadyExists` if `path` is not a socket;
    /// the bind's errors.
    pub fn unix(path: impl AsRef<Path>) -> io::Result<Listener> {
        let path = path.as_ref();
        if let Ok(m) = std::fs::symlink_metadata(path) {
            if !m.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            // Non-blocking: a server that does not accept (its backlog is full) must not hold
            // this start up; it answers `WouldBlock`, and is there all the same.
            match mio::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("a server is listening on {} already", path.display()),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!(
                            "a server is listening on {} already (and not accepting)",
                            path.display()
                        ),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    // Stale: left by a server that is gone.
                    std::fs::remove_file(path)?;
                }
                Err(e) => return Err(e),
            }
        }
        let l = std::os::unix::net::UnixListener::bind(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let m = std::fs::symlink_metadata(path)?;
        // Absolute: the file is removed at the end, perhaps from another working directory
        // (a `--fork` server's is `/`).
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        Ok(Listener {
            kind: ListenKind::Unix(l),
            owned_path: Some((path, m.dev(), m.ino())),
        })
    }

    /// The listening socket passed by systemd socket activation (sd_listen_fds(3)), if any:
    /// when `LISTEN_PID` is this process and `LISTEN_FDS` is 1, file descriptor 3, which must
    /// be a listening TCP or Unix stream socket. `LISTEN_PID`, `LISTEN_FDS` and
    /// `LISTEN_FDNAMES` are removed from the environment (children do not inherit them), and
    /// the fd is made close-on-exec. `Ok(None)` when `LISTEN_FDS` is unset, or meant for
    /// another process (`LISTEN_PID` is another's, or unset).
    ///
    /// # Errors
    /// A malformed variable, more than one socket, or fd 3 not a listening stream socket.
    ///
    /// # Safety
    /// When the variables name this process, fd 3 is taken over: nothing else in the process
    /// may own or close it. Call once, early in `main`, before other threads run (it changes
    /// the environment).
    pub unsafe fn from_systemd() -> io::Result<Option<Listener>> {
        let Some(fds) = std::env::var_os("LISTEN_FDS") else {
            return Ok(None);
        };
        let pid = std::env::var_os("LISTEN_PID");
        for v in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            std::env::remove_var(v);
        }
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
        // No LISTEN_PID: not meant for this process (as sd_listen_fds(3) reads it).
        let Some(pid) = pid else {
            return Ok(None);
        };
        let pid: u32 = pid
            .to_str()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| invalid(format!("LISTEN_PID={pid:?}: not a process id")))?;
        if pid != std::process::id() {
            return Ok(None);
        }
        let n: u32 = fds
            .to_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid(format!("LISTEN_FDS={fds:?}: not a number")))?;
        match n {
            0 => return Ok(None),
            1 => {}
            _ => {
                return Err(invalid(format!(
                    "socket activation passed {n} sockets; costack-nbd listens on one"
                )))
            }
        }
        const FD: RawFd = 3;
        let sock_type = getsockopt_int(FD, libc::SO_TYPE)
            .map_err(|e| invalid(format!("socket activation: fd 3 is not a socket: {e}")))?;
        if sock_type != libc::SOCK_STREAM {
            return Err(invalid(format!(
                "socket activation: fd 3 is not a stream socket (type {sock_type})"
            )));
        }
        if getsockopt_int(FD, libc::SO_ACCEPTCONN)? == 0 {
            return Err(invalid(
                "socket activation: fd 3 is not listening".to_owned(),
            ));
        }
        // SAFETY: a sockaddr_storage is valid zeroed, and large enough for any address;
        // getsockname writes at most `len` bytes into it.
        let family = unsafe {
            let mut ss: libc::sockaddr_storage = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            if libc::getsockname(FD, std::ptr::addr_of_mut!(ss).cast(), &mut len) < 0 {
                return Err(io::Error::last_os_error());
            }
            libc::c_int::from(ss.ss_family)
        };
        // SAFETY: fcntl on a valid fd (checked above) only sets its close-on-exec flag.
        if unsafe { libc::fcntl(FD, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let kind = match family {
            libc::AF_INET | libc::AF_INET6 => {
                // SAFETY: fd 3 is a listening TCP socket handed to this process, and the
                // caller promises nothing else owns it: the listener becomes its only owner.
                let l = unsafe { std::net::TcpListener::from_raw_fd(FD) };
                ListenKind::Tcp(l)
            }
            libc::AF_UNIX => {
                // SAFETY: as above, a listening Unix stream socket.
                let l = unsafe { std::os::unix::net::UnixListener::from_raw_fd(FD) };
                ListenKind::Unix(l)
            }
            f => {
                return Err(invalid(format!(
                    "socket activation: fd 3 is neither TCP nor a Unix socket (family {f})"
                )))
            }
        };
        Ok(Some(Listener {
            kind,
            owned_path: None,
        }))
    }

    /// Where it listens.
    ///
    /// # Errors
    /// The system's.
    pub fn address(&self) -> io::Result<ListenAddr> {
        Ok(match &self.kind {
            ListenKind::Tcp(l) => ListenAddr::Tcp(l.local_addr()?),
            ListenKind::Unix(l) => ListenAddr::Unix(
                l.local_addr()?
                    .as_pathname()
                    .map(Path::to_owned)
                    .unwrap_or_default(),
            ),
        })
    }

    pub(crate) fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match &self.kind {
            ListenKind::Tcp(l) => l.set_nonblocking(on),
            ListenKind::Unix(l) => l.set_nonblocking(on),
        }
    }

    /// One non-blocking accept: the socket and its peer (for logs).
    pub(crate) fn accept(&self) -> io::Result<(Accepted, String)> {
        match &self.kind {
            ListenKind::Tcp(l) => {
                let (s, a) = l.accept()?;
                Ok((Accepted::Tcp(s), a.to_string()))
            }
            ListenKind::Unix(l) => {
                let (s, _) = l.accept()?;
                Ok((Accepted::Unix(s), "unix".to_owned()))
            }
        }
    }
}

fn getsockopt_int(fd: RawFd, opt: libc::c_int) -> io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid for writes and `len` is `v`'s size.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            std::ptr::addr_of_mut!(v).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        match &self.kind {
            ListenKind::Tcp(l) => l.as_raw_fd(),
            ListenKind::Unix(l) => l.as_raw_fd(),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some((path, dev, ino)) = &self.owned_path {
            // Only our own socket file: another server may have replaced it meanwhile.
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.dev() == *dev && m.ino() == *ino) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}
