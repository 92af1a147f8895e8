//! Bad input: an fd closed under a waiter, a peer that resets mid-read. The waiting task gets
//! an `io::Error`; the loop keeps serving the others.

use costack_aio::io::AsyncFd;
use costack_aio::net::{TcpListener, TcpStream};
use costack_aio::{sleep, spawn, timeout, EventLoop};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

/// A task that echoes one line-free message stream, to show the loop still serves others.
fn echo_check(addr: std::net::SocketAddr, rounds: usize) {
    let mut c = TcpStream::connect(addr).unwrap();
    for i in 0..rounds {
        let msg = format!("message {i:04}");
        c.write_all(msg.as_bytes()).unwrap();
        let mut back = vec![0; msg.len()];
        c.read_exact(&mut back).unwrap();
        assert_eq!(back, msg.as_bytes());
    }
}

fn echo_server() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    spawn(move || loop {
        let (mut s, _) = l.accept().unwrap();
        spawn(move || {
            let mut buf = [0; 1024];
            while let Ok(n @ 1..) = s.read(&mut buf) {
                if s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    });
    addr
}

#[test]
fn a_socket_closed_while_a_task_waits_on_it_gives_that_task_an_error() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let addr = echo_server();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server_side, _) = l.accept().unwrap();
        let shared = Rc::new(server_side);
        let reader_side = shared.clone();
        let reader = spawn(move || {
            let mut buf = [0; 8];
            (&*reader_side).read(&mut buf)
        });
        let writer_side = shared.clone();
        let writer = spawn(move || -> io::Result<()> {
            // Fill the socket buffer until the write blocks, then wait.
            let chunk = vec![7u8; 64 * 1024];
            loop {
                (&*writer_side).write_all(&chunk)?;
            }
        });
        sleep(Duration::from_millis(10)); // both are waiting now
        let others = spawn(move || echo_check(addr, 50));
        shared.close();
        let r: io::Result<usize> = reader.join();
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::NotConnected);
        let w: io::Result<()> = writer.join();
        assert_eq!(w.unwrap_err().kind(), io::ErrorKind::NotConnected);
        // Later operations fail the same way, without touching the fd.
        let mut b = [0; 1];
        assert_eq!(
            (&*shared).read(&mut b).unwrap_err().kind(),
            io::ErrorKind::NotConnected
        );
        // The peer sees the connection shut down.
        let mut drained = 0usize;
        let mut client = client;
        let n = timeout(Duration::from_secs(5), || loop {
            match client.read(&mut [0; 65536]) {
                Ok(0) => break drained,
                Ok(n) => drained += n,
                Err(e) => panic!("{e}"),
            }
        })
        .unwrap();
        assert!(n > 0);
        others.join();
        echo_check(addr, 10);
    });
}

/// The last data and the FIN arrive before the loop looks at the socket: after reading the
/// data (a short read), the next read must see the end of file, though no new edge will come.
#[test]
fn data_and_fin_together_still_end_in_eof() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let addr = l.local_addr().unwrap();
        let peer = std::thread::spawn(move || {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            rx.recv().unwrap();
            c.write_all(b"last words").unwrap();
            drop(c); // FIN right behind the data
        });
        let (mut s, _) = l.accept().unwrap();
        let mut buf = [0u8; 4096];
        // Register the socket with the loop (a read that has to wait, abandoned).
        assert!(timeout(Duration::from_millis(1), || s.read(&mut buf)).is_err());
        tx.send(()).unwrap();
        // Keep the loop from looking while data and FIN arrive.
        std::thread::sleep(Duration::from_millis(50));
        let mut got = Vec::new();
        let r = timeout(Duration::from_secs(5), || loop {
            match s.read(&mut buf).unwrap() {
                0 => break,
                n => got.extend_from_slice(&buf[..n]),
            }
        });
        assert!(r.is_ok(), "no end of file after {got:?}");
        assert_eq!(got, b"last words");
        peer.join().unwrap();
    });
}

#[test]
fn an_async_fd_closed_under_a_waiter() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let fd = Rc::new(AsyncFd::new(a));
        let f2 = fd.clone();
        let waiter = spawn(move || f2.readable());
        let ticker = spawn(|| {
            for _ in 0..5 {
                sleep(Duration::from_millis(1));
            }
        });
        sleep(Duration::from_millis(2));
        fd.close();
        assert_eq!(
            waiter.join().unwrap_err().kind(),
            io::ErrorKind::NotConnected
        );
        assert!(fd.is_closed());
        assert!(fd.readable().is_err());
        ticker.join();
    });
}

/// Makes `close` send a reset instead of a FIN (`SO_LINGER` with a zero timeout).
fn set_linger_zero(s: &std::net::TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on an open socket with a pointer to a linger struct and its size.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0);
}

#[test]
fn a_peer_that_resets_the_connection_mid_read() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let addr = echo_server();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let laddr = l.local_addr().unwrap();
        let server = spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut header = [0u8; 16];
            // The peer sends 5 bytes of 16, then resets.
            s.read_exact(&mut header)
        });
        // Other connections are being served meanwhile.
        let others: Vec<_> = (0..4)
            .map(|_| spawn(move || echo_check(addr, 100)))
            .collect();
        let peer = std::thread::spawn(move || {
            let mut c = std::net::TcpStream::connect(laddr).unwrap();
            c.write_all(b"12345").unwrap();
            std::thread::sleep(Duration::from_millis(20));
            set_linger_zero(&c);
            drop(c); // RST
        });
        let e = server.join().unwrap_err();
        assert!(
            matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
            ),
            "{e:?}"
        );
        peer.join().unwrap();
        others.into_iter().for_each(|h| h.join());
        echo_check(addr, 10);
    });
}

#[test]
fn a_reset_under_a_blocked_writer() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let laddr = l.local_addr().unwrap();
        let writer = spawn(move || -> io::Result<()> {
            let (mut s, _) = l.accept().unwrap();
            let chunk = vec![1u8; 64 * 1024];
            loop {
                s.write_all(&chunk)?; // the peer never reads: this blocks, then fails
            }
        });
        let peer = std::thread::spawn(move || {
            let c = std::net::TcpStream::connect(laddr).unwrap();
            std::thread::sleep(Duration::from_millis(30));
            set_linger_zero(&c);
            drop(c);
        });
        let e = writer.join().unwrap_err();
        assert!(
            matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ),
            "{e:?}"
        );
        peer.join().unwrap();
    });
}

#[test]
fn connect_to_a_closed_port_fails_without_blocking_the_loop() {
    let lp = EventLoop::new();
    lp.block_on(|| {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let e = TcpStream::connect(port).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    });
}
