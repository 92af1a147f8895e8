//! The transport: TLS (STARTTLS, in the spec's FORCEDTLS mode and offered), Unix sockets and
//! systemd socket activation; with our own raw client (rustls) and with real clients
//! (`qemu-img`, `qemu-io`, `nbdinfo`).
//!
//! Certificates are made by the test (rcgen): a CA, a server certificate for
//! 127.0.0.1/localhost and a client certificate signed by it, written in the layout qemu and
//! nbdkit read. A missing tool skips its test, or fails it with `COSTACK_REQUIRE_ALL_TESTS=1`
//! (CI).

#[macro_use]
mod common;

use common::*;
use costack_nbd::proto::{self, be32, be64, cmd, opt, rep};
use costack_nbd::transport::{Listener, TlsCredentials, TlsMode};
use costack_nbd::{serve, Config, Export};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Certificates

/// A directory removed (with its files) when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = TempFile::new(tag).0.clone();
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn s(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CA, a server certificate and a client certificate, in qemu's layout: `server` holds
/// ca-cert.pem, server-cert.pem, server-key.pem; `client` holds ca-cert.pem, client-cert.pem,
/// client-key.pem; `client_ca_only` only ca-cert.pem (a client without a certificate).
struct Pki {
    server: TempDir,
    client: TempDir,
    client_ca_only: TempDir,
}

fn pki() -> Pki {
    use rcgen::{
        date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
        Issuer, KeyPair, KeyUsagePurpose,
    };
    let validity = |p: &mut CertificateParams| {
        p.not_before = date_time_ymd(2020, 1, 1);
        p.not_after = date_time_ymd(2049, 1, 1);
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name
        .push(DnType::CommonName, "costack-nbd test CA");
    validity(&mut ca);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, &ca_key);

    let server_key = KeyPair::generate().unwrap();
    let mut sp = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    sp.distinguished_name.push(DnType::CommonName, "localhost");
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    validity(&mut sp);
    let server_cert = sp.signed_by(&server_key, &issuer).unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut cp = CertificateParams::new(Vec::<String>::new()).unwrap();
    cp.distinguished_name.push(DnType::CommonName, "client");
    cp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut cp);
    let client_cert = cp.signed_by(&client_key, &issuer).unwrap();

    let pki = Pki {
        server: TempDir::new("tls-server"),
        client: TempDir::new("tls-client"),
        client_ca_only: TempDir::new("tls-client-ca"),
    };
    let w = |d: &TempDir, f: &str, s: String| std::fs::write(d.path().join(f), s).unwrap();
    for d in [&pki.server, &pki.client, &pki.client_ca_only] {
        w(d, "ca-cert.pem", ca_cert.pem());
    }
    w(&pki.server, "server-cert.pem", server_cert.pem());
    w(&pki.server, "server-key.pem", server_key.serialize_pem());
    w(&pki.client, "client-cert.pem", client_cert.pem());
    w(&pki.client, "client-key.pem", client_key.serialize_pem());
    pki
}

fn creds(pki: &Pki, verify_peer: bool) -> TlsCredentials {
    TlsCredentials::from_dir(pki.server.path(), verify_peer).unwrap()
}

fn tls_server(mode: TlsMode, threads: usize) -> TestServer {
    TestServer::start(
        Export::memory("test", 64 << 20, false).unwrap(),
        Config {
            threads,
            tls: mode,
            ..Config::default()
        },
    )
}

// ---------------------------------------------------------------------------------------------
// A raw client that can switch to TLS

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn client_config(dir: &Path, with_cert: bool) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dir.join("ca-cert.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let cfg = if with_cert {
        let chain = CertificateDer::pem_file_iter(dir.join("client-cert.pem"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(dir.join("client-key.pem")).unwrap();
        b.with_client_auth_cert(chain, key).unwrap()
    } else {
        b.with_no_client_auth()
    };
    Arc::new(cfg)
}

fn send_option(s: &mut impl Write, option: u32, data: &[u8]) {
    let mut b = proto::IHAVEOPT.to_be_bytes().to_vec();
    b.extend_from_slice(&option.to_be_bytes());
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    s.write_all(&b).unwrap();
    s.flush().unwrap();
}

/// One option reply: (option, type, data).
fn opt_reply(s: &mut impl Read) -> (u32, u32, Vec<u8>) {
    let mut h = [0u8; 20];
    s.read_exact(&mut h).unwrap();
    assert_eq!(be64(&h[0..8]), proto::OPT_REPLY_MAGIC);
    let mut data = vec![0u8; be32(&h[16..20]) as usize];
    s.read_exact(&mut data).unwrap();
    (be32(&h[8..12]), be32(&h[12..16]), data)
}

/// Sends an option, reads its replies up to the last; their types.
fn option_types(s: &mut (impl Read + Write), option: u32, data: &[u8]) -> Vec<u32> {
    send_option(s, option, data);
    let mut out = Vec::new();
    loop {
        let (o, typ, _) = opt_reply(s);
        assert_eq!(o, option);
        out.push(typ);
        if typ == rep::ACK || typ & rep::ERR_BIT != 0 {
            return out;
        }
    }
}

/// A plaintext connection, greeted, ready for options.
fn plain(addr: SocketAddr) -> TcpStream {
    let c = Client::connect(addr);
    c.s
}

/// `STARTTLS` on a fresh connection, then the TLS handshake.
fn starttls(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>) -> std::io::Result<Tls> {
    let mut s = plain(addr);
    assert_eq!(option_types(&mut s, opt::STARTTLS, &[]), [rep::ACK]);
    tls_on(s, cfg)
}

fn tls_on(s: TcpStream, cfg: Arc<rustls::ClientConfig>) -> std::io::Result<Tls> {
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(cfg, name).unwrap();
    let mut t = rustls::StreamOwned::new(conn, s);
    while t.conn.is_handshaking() {
        t.conn.complete_io(&mut t.sock)?;
    }
    // TLS 1.3: a refused client certificate is only reported with the first records.
    send_option(&mut t, opt::LIST, &[]);
    let types = {
        let mut out = Vec::new();
        loop {
            let mut h = [0u8; 20];
            t.read_exact(&mut h)?;
            let mut data = vec![0u8; be32(&h[16..20]) as usize];
            t.read_exact(&mut data)?;
            let typ = be32(&h[12..16]);
            out.push(typ);
            if typ == rep::ACK || typ & rep::ERR_BIT != 0 {
                break out;
            }
        }
    };
    assert_eq!(types, [rep::SERVER, rep::ACK]);
    Ok(t)
}

/// `GO` on the export; the transmission flags.
fn go(s: &mut (impl Read + Write)) {
    let body = info_body("test", &[]);
    let types = option_types(s, opt::GO, &body);
    assert_eq!(types.last(), Some(&rep::ACK), "{types:?}");
}

/// A simple request; the simple reply's error (and data for a READ).
fn request(
    s: &mut (impl Read + Write),
    typ: u16,
    offset: u64,
    data: &[u8],
    len: u32,
) -> (u32, Vec<u8>) {
    let mut b = Vec::with_capacity(28 + data.len());
    b.extend_from_slice(&proto::REQUEST_MAGIC.to_be_bytes());
    b.extend_from_slice(&0u16.to_be_bytes());
    b.extend_from_slice(&typ.to_be_bytes());
    b.extend_from_slice(&7u64.to_be_bytes());
    b.extend_from_slice(&offset.to_be_bytes());
    b.extend_from_slice(&len.to_be_bytes());
    b.extend_from_slice(data);
    s.write_all(&b).unwrap();
    s.flush().unwrap();
    let mut h = [0u8; 16];
    s.read_exact(&mut h).unwrap();
    assert_eq!(be32(&h[0..4]), proto::SIMPLE_REPLY_MAGIC);
    assert_eq!(be64(&h[8..16]), 7);
    let err = be32(&h[4..8]);
    let mut out = Vec::new();
    if typ == cmd::READ && err == 0 {
        out = vec![0u8; len as usize];
        s.read_exact(&mut out).unwrap();
    }
    (err, out)
}

/// `NBD_CMD_DISC` (no reply).
fn disc_request() -> Vec<u8> {
    let mut b = Vec::with_capacity(28);
    b.extend_from_slice(&proto::REQUEST_MAGIC.to_be_bytes());
    b.extend_from_slice(&0u16.to_be_bytes());
    b.extend_from_slice(&cmd::DISC.to_be_bytes());
    b.extend_from_slice(&[0u8; 20]);
    b
}

/// Whether the peer closed `s` (end of file or an error) after at most 1 KiB more (a TLS
/// alert, say). The socket's read timeout (20 s) running out is no close: the peer is still
/// there.
fn closed(s: &mut impl Read) -> bool {
    let mut b = [0u8; 64];
    for _ in 0..16 {
        match s.read(&mut b) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Ok(0) | Err(_) => return true,
            Ok(_) => {}
        }
    }
    false
}

// ---------------------------------------------------------------------------------------------
// Raw protocol

#[test]
fn require_refuses_every_option_before_starttls() {
    let pki = pki();
    // No handshake deadline: the session must end because of EXPORT_NAME, not of a timer.
    let srv = TestServer::start(
        Export::memory("test", 64 << 20, false).unwrap(),
        Config {
            tls: TlsMode::Require(creds(&pki, false)),
            handshake_timeout: None,
            ..Config::default()
        },
    );
    let mut s = plain(srv.addr);
    let info = info_body("test", &[]);
    let meta = meta_body("test", &["base:allocation"]);
    for (o, data) in [
        (opt::LIST, &[][..]),
        (opt::INFO, &info[..]),
        (opt::GO, &info[..]),
        (opt::STRUCTURED_REPLY, &[][..]),
        (opt::LIST_META_CONTEXT, &meta[..]),
        (opt::SET_META_CONTEXT, &meta[..]),
        (opt::EXTENDED_HEADERS, &[][..]),
        (99, &b"unknown"[..]),
    ] {
        assert_eq!(
            option_types(&mut s, o, data),
            [rep::ERR_TLS_REQD],
            "option {o}"
        );
    }
    // Oversized data is read and refused the same way.
    assert_eq!(
        option_types(&mut s, opt::LIST, &vec![0u8; 100_000]),
        [rep::ERR_TLS_REQD]
    );
    // STARTTLS with data is malformed, TLS or not.
    assert_eq!(
        option_types(&mut s, opt::STARTTLS, b"x"),
        [rep::ERR_INVALID]
    );
    // EXPORT_NAME cannot be refused: the session ends.
    send_option(&mut s, opt::EXPORT_NAME, b"test");
    assert!(
        closed(&mut s),
        "EXPORT_NAME before TLS must end the session"
    );

    // ABORT is answered.
    let mut s = plain(srv.addr);
    assert_eq!(option_types(&mut s, opt::ABORT, &[]), [rep::ACK]);
}

#[test]
fn data_over_tls_reads_back_and_starttls_twice_is_invalid() {
    let pki = pki();
    let srv = tls_server(TlsMode::Require(creds(&pki, false)), 2);
    let mut t = starttls(srv.addr, client_config(pki.client.path(), false)).unwrap();
    assert_eq!(option_types(&mut t, opt::STARTTLS, &[]), [rep::ERR_INVALID]);
    go(&mut t);
    // Larger than rustls's 64 KiB of records per write and its 16 KiB records.
    let data = pattern(4 * MIB + 123, 9);
    assert_eq!(
        request(&mut t, cmd::WRITE, 4096, &data, data.len() as u32).0,
        0
    );
    let (err, back) = request(&mut t, cmd::READ, 4096, &[], data.len() as u32);
    assert_eq!(err, 0);
    assert!(back == data, "data read back over TLS differs");
    // Another TLS session sees it.
    let mut t2 = starttls(srv.addr, client_config(pki.client.path(), false)).unwrap();
    go(&mut t2);
    let (err, back) = request(&mut t2, cmd::READ, 4096, &[], 1000);
    assert_eq!((err, &back[..]), (0, &data[..1000]));
    // DISC: the server ends TLS cleanly (close_notify, so not UnexpectedEof) and closes.
    t.write_all(&disc_request()).unwrap();
    let mut b = [0u8; 1];
    assert_eq!(t.read(&mut b).unwrap(), 0);
    // A clean TLS close from the client ends the connection like end of file.
    t2.conn.send_close_notify();
    t2.conn.complete_io(&mut t2.sock).unwrap();
    assert!(closed(&mut t2.sock));
}

#[test]
fn starttls_forgets_state_and_on_mode_serves_plaintext() {
    let pki = pki();
    let srv = tls_server(TlsMode::On(creds(&pki, false)), 1);
    // Plaintext is served in "on" mode.
    let mut p = plain(srv.addr);
    go(&mut p);
    assert_eq!(request(&mut p, cmd::WRITE, 0, b"plain", 5).0, 0);
    // Structured replies before STARTTLS are forgotten after it.
    let mut s = plain(srv.addr);
    assert_eq!(option_types(&mut s, opt::STRUCTURED_REPLY, &[]), [rep::ACK]);
    assert_eq!(option_types(&mut s, opt::STARTTLS, &[]), [rep::ACK]);
    let mut t = tls_on(s, client_config(pki.client.path(), false)).unwrap();
    // Not "already negotiated": the state was forgotten.
    assert_eq!(option_types(&mut t, opt::STRUCTURED_REPLY, &[]), [rep::ACK]);
    assert_eq!(
        option_types(&mut t, opt::STRUCTURED_REPLY, &[]),
        [rep::ERR_INVALID]
    );
}

#[test]
fn stop_ends_idle_tls_connections_cleanly() {
    let pki = pki();
    let srv = tls_server(TlsMode::Require(creds(&pki, false)), 2);
    let mut clients: Vec<Tls> = (0..3)
        .map(|_| starttls(srv.addr, client_config(pki.client.path(), false)).unwrap())
        .collect();
    for c in &mut clients {
        go(c);
        assert_eq!(request(c, cmd::WRITE, 0, b"abc", 3).0, 0);
    }
    let t0 = Instant::now();
    srv.shutdown();
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    for c in &mut clients {
        // close_notify, then end of file: a clean end for the client's TLS.
        let mut b = [0u8; 1];
        assert_eq!(c.read(&mut b).unwrap(), 0);
    }
}

#[test]
fn off_mode_refuses_starttls() {
    let srv = TestServer::memory(1 << 20);
    let mut s = plain(srv.addr);
    assert_eq!(option_types(&mut s, opt::STARTTLS, &[]), [rep::ERR_UNSUP]);
    go(&mut s);
}

#[test]
fn garbage_after_starttls_ends_only_that_connection() {
    let pki = pki();
    let srv = tls_server(TlsMode::Require(creds(&pki, false)), 1);
    let mut good = starttls(srv.addr, client_config(pki.client.path(), false)).unwrap();
    let mut s = plain(srv.addr);
    assert_eq!(option_types(&mut s, opt::STARTTLS, &[]), [rep::ACK]);
    // A plaintext NBD option where a ClientHello should be.
    send_option(&mut s, opt::LIST, &[]);
    let t0 = Instant::now();
    assert!(closed(&mut s));
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    // The other connection goes on.
    go(&mut good);
    assert_eq!(request(&mut good, cmd::WRITE, 0, b"still here", 10).0, 0);
    assert_eq!(request(&mut good, cmd::READ, 0, &[], 10).1, b"still here");
}

#[test]
fn stalled_tls_handshake_does_not_block_others() {
    let pki = pki();
    // One loop: the stalled client and the good one share it.
    let srv = tls_server(TlsMode::Require(creds(&pki, false)), 1);
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let mut s = plain(srv.addr);
        assert_eq!(option_types(&mut s, opt::STARTTLS, &[]), [rep::ACK]);
        // Half a TLS record header, then nothing.
        s.write_all(&[0x16, 0x03]).unwrap();
        stalled.push(s);
    }
    let t0 = Instant::now();
    let mut t = starttls(srv.addr, client_config(pki.client.path(), false)).unwrap();
    go(&mut t);
    assert_eq!(request(&mut t, cmd::WRITE, 0, b"x", 1).0, 0);
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    drop(stalled);
}

#[test]
fn handshake_deadline_covers_the_tls_handshake_and_the_options_after_it() {
    let pki = pki();
    let d = Duration::from_secs(2);
    let srv = TestServer::start(
        Export::memory("test", 1 << 20, false).unwrap(),
        Config {
            tls: TlsMode::Require(creds(&pki, false)),
            handshake_timeout: Some(d),
            ..Config::default()
        },
    );
    // Stalled inside the TLS handshake: half a record header, then nothing.
    let t0 = Instant::now();
    let mut stalled = plain(srv.addr);
    assert_eq!(option_types(&mut stalled, opt::STARTTLS, &[]), [rep::ACK]);
    stalled.write_all(&[0x16, 0x03]).unwrap();
    // TLS up, then silent in the options: TLS does not start the deadline again.
    let t1 = Instant::now();
    let mut idle = starttls(srv.addr, client_config(pki.client.path(), false)).unwrap();
    assert!(closed(&mut stalled));
    let a = t0.elapsed();
    assert!(closed(&mut idle));
    let b = t1.elapsed();
    // Each at its own deadline, from its own accept: not before, and not much after.
    let late = d + Duration::from_secs(10);
    assert!(
        a >= d && a < late,
        "in the TLS handshake: closed after {a:?}"
    );
    assert!(b >= d && b < late, "after TLS: closed after {b:?}");
}

#[test]
fn a_session_the_server_ends_in_the_handshake_ends_tls_first() {
    // EXPORT_NAME of an unknown export cannot be refused: the server ends the session, a
    // hard disconnect, for which the spec says it SHOULD shut TLS down first (close_notify:
    // the client reads a clean end, not a truncated stream).
    let pki = pki();
    let srv = tls_server(TlsMode::Require(creds(&pki, false)), 1);
    let mut t = starttls(srv.addr, client_config(pki.client.path(), false)).unwrap();
    send_option(&mut t, opt::EXPORT_NAME, b"no-such-export");
    let mut b = [0u8; 1];
    assert_eq!(t.read(&mut b).unwrap(), 0);
}

#[test]
fn verify_peer_requires_a_client_certificate() {
    let pki = pki();
    let srv = tls_server(TlsMode::Require(creds(&pki, true)), 1);
    let mut t = starttls(srv.addr, client_config(pki.client.path(), true)).unwrap();
    go(&mut t);
    assert_eq!(request(&mut t, cmd::WRITE, 0, b"ok", 2).0, 0);
    // Without a certificate the TLS handshake (or its first records, with TLS 1.3) fails,
    // and the server ends the session.
    let r = starttls(srv.addr, client_config(pki.client.path(), false));
    assert!(r.is_err(), "a client without a certificate was served");
}

#[test]
fn bad_credentials_are_clear_errors() {
    let pki = pki();
    let empty = TempDir::new("tls-empty");
    let e = TlsCredentials::from_dir(empty.path(), false).unwrap_err();
    assert!(e.to_string().contains("server-cert.pem"), "{e}");
    // The client's directory: no server certificate.
    let e = TlsCredentials::from_dir(pki.client.path(), false).unwrap_err();
    assert!(e.to_string().contains("server-cert.pem"), "{e}");
    // A key that is not PEM.
    let d = TempDir::new("tls-badkey");
    std::fs::copy(
        pki.server.path().join("server-cert.pem"),
        d.path().join("server-cert.pem"),
    )
    .unwrap();
    std::fs::write(d.path().join("server-key.pem"), "not a key").unwrap();
    let e = TlsCredentials::from_dir(d.path(), false).unwrap_err();
    assert!(e.to_string().contains("server-key.pem"), "{e}");
    // Another key than the certificate's.
    std::fs::copy(
        pki.client.path().join("client-key.pem"),
        d.path().join("server-key.pem"),
    )
    .unwrap();
    let e = TlsCredentials::from_dir(d.path(), false).unwrap_err();
    assert!(e.to_string().contains("does not fit"), "{e}");
    // A certificate file that is not PEM.
    std::fs::write(d.path().join("server-cert.pem"), "garbage").unwrap();
    let e = TlsCredentials::from_dir(d.path(), false).unwrap_err();
    assert!(e.to_string().contains("server-cert.pem"), "{e}");
    // verify_peer without ca-cert.pem.
    std::fs::remove_file(pki.server.path().join("ca-cert.pem")).unwrap();
    let e = TlsCredentials::from_dir(pki.server.path(), true).unwrap_err();
    assert!(e.to_string().contains("ca-cert.pem"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Real clients

/// A tool's standard output; panics with its output if it failed.
fn run(tool: &str, args: &[&str]) -> String {
    String::from_utf8_lossy(&common::run(tool, args).stdout).into_owned()
}

fn qemu_tls_object(dir: &TempDir) -> String {
    format!("tls-creds-x509,id=tls0,endpoint=client,dir={}", dir.s())
}

fn qemu_tls_image(addr: SocketAddr) -> String {
    format!(
        "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port={},export=test,tls-creds=tls0",
        addr.port()
    )
}

#[test]
fn qemu_img_and_qemu_io_over_tls() {
    require!("qemu-img", "qemu-io");
    let pki = pki();
    let srv = tls_server(TlsMode::Require(creds(&pki, true)), 2);
    let obj = qemu_tls_object(&pki.client);
    let img = qemu_tls_image(srv.addr);
    let info = run(
        "qemu-img",
        &[
            "info",
            "--output=json",
            "--object",
            &obj,
            "--image-opts",
            &img,
        ],
    );
    assert!(
        info.contains(&format!("\"virtual-size\": {}", 64 << 20)),
        "{info}"
    );

    run(
        "qemu-io",
        &[
            "--object",
            &obj,
            "--image-opts",
            &img,
            "-c",
            "write -P 0xa5 1M 3M",
            "-c",
            "read -P 0xa5 1M 3M",
            "-c",
            "read -P 0 0 1M",
        ],
    );
    // Export → file over TLS: exactly what was written.
    let out = TempFile::new("tls-convert");
    run(
        "qemu-img",
        &[
            "convert",
            "--object",
            &obj,
            "--image-opts",
            &img,
            "-O",
            "raw",
            out.path().to_str().unwrap(),
        ],
    );
    let got = std::fs::read(out.path()).unwrap();
    assert_eq!(got.len(), 64 << 20);
    assert!(got[..MIB].iter().all(|&b| b == 0));
    assert!(got[MIB..4 * MIB].iter().all(|&b| b == 0xa5));
    assert!(got[4 * MIB..].iter().all(|&b| b == 0));

    // Without the client certificate the server refuses (verify-peer on).
    let obj_nocert = qemu_tls_object(&pki.client_ca_only);
    let out = run_unchecked(
        "qemu-img",
        &["info", "--object", &obj_nocert, "--image-opts", &img],
    );
    assert!(
        !out.status.success(),
        "a client without a certificate was served"
    );
    // Without TLS at all: refused too.
    let out = run_unchecked("qemu-img", &["info", &format!("nbd://{}/test", srv.addr)]);
    assert!(
        !out.status.success(),
        "a plaintext client was served in require mode"
    );
}

#[test]
fn nbdinfo_over_nbds_in_require_and_on_modes() {
    require!("nbdinfo");
    let pki = pki();
    for mode in [
        TlsMode::Require(creds(&pki, false)),
        TlsMode::On(creds(&pki, false)),
    ] {
        let on = matches!(mode, TlsMode::On(_));
        let srv = tls_server(mode, 1);
        let uri = format!(
            "nbds://127.0.0.1:{}/test?tls-certificates={}",
            srv.addr.port(),
            pki.client.s()
        );
        let out = run("nbdinfo", &["--json", &uri]);
        assert!(
            out.contains(&format!("\"export-size\": {}", 64 << 20)),
            "{out}"
        );
        assert!(out.contains("\"TLS\": true"), "{out}");
        // Plaintext: served only in "on" mode.
        let plain = run_unchecked(
            "nbdinfo",
            &[&format!("nbd://127.0.0.1:{}/test", srv.addr.port())],
        );
        assert_eq!(
            plain.status.success(),
            on,
            "plaintext nbdinfo in mode on={on}"
        );
    }
    // verify-peer: a client with a certificate is served, one without is refused.
    let srv = tls_server(TlsMode::Require(creds(&pki, true)), 1);
    let uri = |d: &TempDir| {
        format!(
            "nbds://127.0.0.1:{}/test?tls-certificates={}",
            srv.addr.port(),
            d.s()
        )
    };
    run("nbdinfo", &[&uri(&pki.client)]);
    let out = run_unchecked("nbdinfo", &[&uri(&pki.client_ca_only)]);
    assert!(
        !out.status.success(),
        "a client without a certificate was served"
    );
}

/// Many requests in flight on several TLS connections at once: each connection's reader and
/// its replies' writer interleave on the TLS stream.
#[test]
fn nbdcopy_round_trip_over_tls() {
    require!("nbdcopy");
    let pki = pki();
    let srv = tls_server(TlsMode::Require(creds(&pki, false)), 2);
    let uri = format!(
        "nbds://127.0.0.1:{}/test?tls-certificates={}",
        srv.addr.port(),
        pki.client.s()
    );
    let data = pattern(16 << 20, 77);
    let src = TempFile::with_data("tls-nbdcopy-src", &data);
    run(
        "nbdcopy",
        &[
            "--connections=4",
            "--requests=32",
            "--request-size=1048576",
            src.path().to_str().unwrap(),
            &uri,
        ],
    );
    let dst = TempFile::new("tls-nbdcopy-dst");
    run(
        "nbdcopy",
        &[
            "--connections=4",
            "--requests=32",
            &uri,
            dst.path().to_str().unwrap(),
        ],
    );
    let got = std::fs::read(dst.path()).unwrap();
    assert_eq!(got.len(), 64 << 20, "the whole export comes back");
    assert!(
        got[..data.len()] == data[..],
        "the copy back over TLS differs"
    );
    assert!(got[data.len()..].iter().all(|&b| b == 0));
}

// ---------------------------------------------------------------------------------------------
// The binary: TLS flags, Unix sockets, socket activation

const BIN: &str = env!("CARGO_BIN_EXE_costack-nbd");

/// The server binary, running until dropped (SIGTERM, then waited for).
struct Server(Option<Child>);

impl Server {
    /// Waits until its start line ("serving ...") is on stderr; panics if it exits first.
    fn spawn(mut cmd: Command) -> (Server, String) {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut all = Vec::new();
            let mut b = [0u8; 256];
            while let Ok(n) = err.read(&mut b) {
                if n == 0 {
                    break;
                }
                all.extend_from_slice(&b[..n]);
                let _ = tx.send(String::from_utf8_lossy(&all).into_owned());
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::new();
        while !last.contains("serving") || !last.ends_with('\n') {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(s) => last = s,
                Err(_) => {
                    let _ = child.kill();
                    panic!("the server did not start: {last}");
                }
            }
        }
        (Server(Some(child)), last)
    }

    fn stop(mut self) -> std::process::ExitStatus {
        let mut c = self.0.take().unwrap();
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "the server did not stop in 30 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs the binary to its end (it must fail fast); its status and stderr.
fn bin_fails(args: &[&str]) -> String {
    let out = run_unchecked(BIN, args);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn binary_tls_flags() {
    let pki = pki();
    let e = bin_fails(&["-p", "0", "--tls-certificates", "/nonexistent-dir"]);
    assert!(e.contains("/nonexistent-dir/server-cert.pem"), "{e}");
    let e = bin_fails(&["-p", "0", "--tls", "require"]);
    assert!(e.contains("--tls-certificates"), "{e}");
    let e = bin_fails(&["-p", "0", "--tls-certificates", pki.client.s()]);
    assert!(e.contains("server-cert.pem"), "{e}");
    let e = bin_fails(&[
        "-p",
        "0",
        "--tls",
        "off",
        "--tls-certificates",
        pki.server.s(),
        "--tls-verify-peer",
    ]);
    assert!(e.contains("--tls-verify-peer needs TLS"), "{e}");
    // Certificates alone: TLS required (qemu-nbd's default).
    let mut c = Command::new(BIN);
    c.args([
        "-p",
        "0",
        "--size",
        "1M",
        "--tls-certificates",
        pki.server.s(),
    ]);
    let (srv, line) = Server::spawn(c);
    assert!(line.contains("TLS required"), "{line}");
    assert!(srv.stop().success());
    let mut c = Command::new(BIN);
    c.args([
        "-p",
        "0",
        "--size",
        "1M",
        "--tls",
        "on",
        "--tls-certificates",
        pki.server.s(),
    ]);
    let (srv, line) = Server::spawn(c);
    assert!(line.contains("TLS offered"), "{line}");
    assert!(srv.stop().success());
}

#[test]
fn unix_socket_with_real_clients() {
    require!("qemu-img", "nbdinfo", "qemu-io");
    let sock = TempFile::new("unix.sock");
    let path = sock.path().to_str().unwrap().to_owned();
    // A stale socket file (its server gone) is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(Path::new(&path).exists());
    let mut c = Command::new(BIN);
    c.args(["-k", &path, "--size", "16M", "-x", "test"]);
    let (srv, line) = Server::spawn(c);
    assert!(line.contains(&format!("unix:{path}")), "{line}");
    // A second server on the same path is refused: this one answers.
    let e = bin_fails(&["-k", &path]);
    assert!(e.contains("listening on"), "{e}");
    let uri = format!("nbd+unix:///test?socket={path}");
    let info = run("qemu-img", &["info", "--output=json", &uri]);
    assert!(
        info.contains(&format!("\"virtual-size\": {}", 16 * MIB)),
        "{info}"
    );
    run(
        "qemu-io",
        &[
            "-f",
            "raw",
            &uri,
            "-c",
            "write -P 0x5a 0 1M",
            "-c",
            "read -P 0x5a 0 1M",
        ],
    );
    let out = run("nbdinfo", &["--json", &uri]);
    assert!(
        out.contains(&format!("\"export-size\": {}", 16 * MIB)),
        "{out}"
    );
    assert!(srv.stop().success());
    assert!(
        !Path::new(&path).exists(),
        "the socket file is removed at exit"
    );

    // Not a socket: refused, left alone.
    std::fs::write(&path, "data").unwrap();
    let e = bin_fails(&["-k", &path]);
    assert!(e.contains("not a socket"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), b"data");
    // -k and -p together are refused by the command line parser.
    let out = run_unchecked(BIN, &["-k", &path, "-p", "1"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn unix_socket_in_process_with_tls() {
    let pki = pki();
    let sock = TempFile::new("unix-tls.sock");
    let listener = Listener::unix(sock.path()).unwrap();
    let h = serve(
        Arc::new(Export::memory("test", 1 << 20, false).unwrap()),
        listener,
        Config {
            tls: TlsMode::Require(creds(&pki, false)),
            ..Config::default()
        },
    )
    .unwrap();
    let mut s = std::os::unix::net::UnixStream::connect(sock.path()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut g = [0u8; 18];
    s.read_exact(&mut g).unwrap();
    s.write_all(&(proto::FLAG_C_FIXED_NEWSTYLE | proto::FLAG_C_NO_ZEROES).to_be_bytes())
        .unwrap();
    assert_eq!(option_types(&mut s, opt::LIST, &[]), [rep::ERR_TLS_REQD]);
    assert_eq!(option_types(&mut s, opt::STARTTLS, &[]), [rep::ACK]);
    let conn = rustls::ClientConnection::new(
        client_config(pki.client.path(), false),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut t = rustls::StreamOwned::new(conn, s);
    go(&mut t);
    let data = pattern(200_000, 3);
    assert_eq!(
        request(&mut t, cmd::WRITE, 0, &data, data.len() as u32).0,
        0
    );
    assert_eq!(
        request(&mut t, cmd::READ, 0, &[], data.len() as u32).1,
        data
    );
    drop(t);
    h.shutdown().unwrap();
    assert!(!sock.path().exists(), "the socket file is removed at stop");
}

#[test]
fn tls_close_does_not_wait_for_a_client_that_does_not_read() {
    // A connection ends (the client sent end-of-file) while its socket is full: the client
    // reads nothing. `close` must not wait for room for its close_notify, or the connection's
    // task (and its descriptor) outlive the place it gave back, for as long as the client
    // likes.
    use costack_nbd::transport::Stream;
    let pki = pki();
    let creds = creds(&pki, false);
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    // The same socket as the server's end: fills its send buffer from outside TLS.
    let filler = a.try_clone().unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let cfg = client_config(pki.client.path(), false);
    let client = std::thread::spawn(move || {
        let name = ServerName::try_from("localhost").unwrap();
        let mut conn = rustls::ClientConnection::new(cfg, name).unwrap();
        let mut b = b;
        while conn.is_handshaking() {
            conn.complete_io(&mut b).unwrap();
        }
        // Not a byte read until the server is done closing.
        done_rx.recv().unwrap();
        b.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut all = Vec::new();
        // End of file (not a timeout): the server shut the socket down.
        b.read_to_end(&mut all).map(|_| ())
    });
    let elapsed = costack_aio::EventLoop::new().block_on(move || {
        let s = Stream::unix(a).unwrap(); // non-blocking, and so is `filler` (one socket)
        s.start_tls(&creds).unwrap();
        let chunk = [0u8; 4096];
        loop {
            match (&filler).write(&chunk) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        let t0 = Instant::now();
        let r = costack_aio::timeout(Duration::from_secs(5), || s.close());
        assert!(r.is_ok(), "close waited for a client that does not read");
        t0.elapsed()
    });
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    done_tx.send(()).unwrap();
    client.join().unwrap().unwrap();
}

#[test]
fn unix_listener_refuses_a_path_whose_server_has_a_full_backlog() {
    // A server is at the path, but does not accept (hung, or overloaded): its backlog is
    // full. Probing it must not wait for room in that backlog (for ever, here).
    use std::os::fd::AsRawFd;
    let sock = TempFile::new("unix-full.sock");
    let busy = std::os::unix::net::UnixListener::bind(sock.path()).unwrap();
    // SAFETY: listen(2) again on a listening socket only sets its backlog.
    assert_eq!(unsafe { libc::listen(busy.as_raw_fd(), 0) }, 0);
    let mut waiting = Vec::new();
    loop {
        match mio::net::UnixStream::connect(sock.path()) {
            Ok(c) => waiting.push(c),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
        assert!(waiting.len() < 100, "the backlog does not fill up");
    }
    let path = sock.path().to_owned();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(Listener::unix(&path).map(drop));
    });
    let r = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("Listener::unix waits for a server that does not accept");
    let e = r.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
    assert!(
        sock.path().exists(),
        "the live server's socket file is left alone"
    );
    drop((busy, waiting));
}

#[test]
fn listen_fds_without_listen_pid_is_not_activation() {
    // As sd_listen_fds(3): without LISTEN_PID the variables are not meant for this process
    // (a leftover of some parent's), and the server listens as its flags say.
    let mut c = Command::new(BIN);
    c.args(["-p", "0", "--size", "1M"])
        .env("LISTEN_FDS", "1")
        .env_remove("LISTEN_PID");
    let (srv, line) = Server::spawn(c);
    assert!(line.contains("127.0.0.1:"), "{line}");
    assert!(srv.stop().success());
}

/// Spawns the binary with `listener`'s fd as fd 3 and LISTEN_FDS=1, LISTEN_PID=its pid.
fn activated(fd: i32, extra: &[&str]) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\"")
        .arg(BIN)
        .args(extra);
    // SAFETY: only dup2 and fcntl (async-signal-safe) between fork and exec. dup2 clears
    // close-on-exec on the new fd 3; if the listener is fd 3 already, fcntl does.
    unsafe {
        c.pre_exec(move || {
            let r = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c
}

#[test]
fn socket_activation_tcp_and_unix() {
    require!("qemu-io", "nbdinfo");
    use std::os::fd::AsRawFd;
    // TCP.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (srv, line) = Server::spawn(activated(l.as_raw_fd(), &["--size", "8M", "-x", "test"]));
    assert!(line.contains(&addr.to_string()), "{line}");
    drop(l); // the server has its own copy
    let uri = format!("nbd://{addr}/test");
    run(
        "qemu-io",
        &[
            "-f",
            "raw",
            &uri,
            "-c",
            "write -P 0x3c 4k 1M",
            "-c",
            "read -P 0x3c 4k 1M",
        ],
    );
    // Raw client: the environment was consumed, the data is there.
    let mut s = plain(addr);
    go(&mut s);
    assert_eq!(request(&mut s, cmd::READ, 4096, &[], 4).1, [0x3c; 4]);
    drop(s);
    assert!(srv.stop().success());

    // Unix.
    let sock = TempFile::new("activated.sock");
    let l = std::os::unix::net::UnixListener::bind(sock.path()).unwrap();
    let (srv, _) = Server::spawn(activated(l.as_raw_fd(), &["--size", "8M", "-x", "test"]));
    drop(l);
    let out = run(
        "nbdinfo",
        &[
            "--json",
            &format!("nbd+unix:///test?socket={}", sock.s_path()),
        ],
    );
    assert!(
        out.contains(&format!("\"export-size\": {}", 8 * MIB)),
        "{out}"
    );
    assert!(srv.stop().success());
    // An inherited socket's file is not ours to remove.
    assert!(sock.path().exists());

    // -p with socket activation: refused clearly.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = activated(l.as_raw_fd(), &["-p", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("-p/--port cannot be used with socket activation"),
        "{e}"
    );
    // A datagram socket: refused clearly.
    let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let out = activated(u.as_raw_fd(), &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("fd 3 is not a stream socket"), "{e}");
    // fd 3 not a socket: refused clearly.
    let f = std::fs::File::open("/dev/null").unwrap();
    let out = activated(f.as_raw_fd(), &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("fd 3 is not a socket"), "{e}");
}

trait SPath {
    fn s_path(&self) -> &str;
}

impl SPath for TempFile {
    fn s_path(&self) -> &str {
        self.path().to_str().unwrap()
    }
}
